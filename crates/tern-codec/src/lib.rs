//! MQTT 3.1, 3.1.1 and 5.0 packets as values, and their exact wire encoding.
//!
//! This crate holds the values (`packet`, `properties`, `reason`), the bytes (`varint`, the
//! `decode`/`encode` functions of each packet) and the per-packet validation rules of the
//! specifications. It never does IO, never spawns, never reads the clock, and never allocates
//! according to a length the peer declared before the bytes behind it have arrived.
//!
//! Decoding is incremental: [`decode`] looks at a buffer that may hold a partial packet and returns
//! `Ok(None)` until a whole packet is there. Payloads are zero-copy slices of the read buffer.

#![warn(missing_docs)]

pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
pub mod varint;
pub mod wire;

pub use error::Violation;
pub use packet::*;
pub use properties::{Properties, PropertySet};
pub use reason::ReasonCode;
