//! Tern's broker core: sessions, QoS flows, wills, keepalive, routing and retained messages.
//!
//! This crate is sans-IO: it never touches a socket, never spawns, never reads the clock. The edge
//! (the `tern` crate) feeds it events — a connection opened, a decoded packet, a decode violation,
//! a connection closed, a deadline reached — each with the current `Instant`, and the core answers
//! by handing frames (packets to send, see [`Frame`]) and close requests to each connection's
//! [`Outlet`].
//!
//! Calling protocol for the edge:
//! 1. [`Broker::open`] when a transport connection is accepted; keep the returned [`ConnId`].
//! 2. [`Broker::handle_packet`] for every decoded packet, in order; [`Broker::handle_violation`]
//!    when decoding fails; [`Broker::handle_closed`] when the transport ends for any reason.
//! 3. After any call, [`Broker::poll_timeout`] gives the earliest deadline; call
//!    [`Broker::handle_timeout`] once it has passed (spurious calls are harmless).
//!
//! Layout: `broker.rs` (tables and dispatch), `connect.rs` (CONNECT, takeover, DISCONNECT),
//! `publish_in.rs` (inbound PUBLISH, routing, wills), `publish_out.rs` (delivery, in-flight
//! window, acks), `subscribe.rs` (SUBSCRIBE, UNSUBSCRIBE, shared groups), `session.rs` (per-client
//! state), `frame.rs` (what goes to a connection), `topic_index.rs` and `retained.rs` (the two
//! tries).

#![warn(missing_docs)]

pub mod broker;
pub mod config;
mod connect;
mod durable;
pub mod frame;
pub mod global;
pub mod keyed;
pub mod persist;
mod publish_in;
mod publish_out;
mod remote;
pub mod retained;
pub mod session;
mod subscribe;
mod sys;
#[cfg(test)]
mod test_rng;
pub mod topic_index;

pub use broker::{Broker, ConnId, Outlet, Stats};
pub use config::BrokerConfig;
pub use durable::PersistMode;
pub use frame::{AckKind, Frame, OutPublish};
pub use global::Global;
pub use remote::{Outbox, Routed, Unplaced};
#[cfg(test)]
mod tests;
