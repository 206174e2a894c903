//! A small async MQTT 3.1, 3.1.1 and 5.0 client on tokio and `tern-codec`, for Tern's command
//! line tools and benchmarks.
//!
//! One [`Client`] is one TCP connection driven by one spawned task that both reads and writes:
//! it coalesces queued packets into one write per batch, answers QoS 1 and QoS 2 deliveries by
//! itself (PUBACK; PUBREC, then PUBCOMP on PUBREL), completes the caller's publishes on PUBACK or
//! PUBCOMP, and sends PINGREQ when the connection has been idle for the keep alive. The per-client
//! cost is that task, two small channels and a map of the packet identifiers in flight, so
//! thousands of clients fit in one process.

#![warn(missing_docs)]

mod client;
mod conn;
mod error;
mod options;

pub use client::{Client, PublishToken};
pub use error::ClientError;
pub use options::{ConnectOptions, MessageHandler};
pub use tern_codec::{ConnAck, ProtocolVersion, Publish, QoS, ReasonCode, SubAck, UnsubAck};
