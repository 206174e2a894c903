//! Tern's server edge: configuration, listeners, connection tasks and the timer that drive the
//! sans-IO broker core of `tern-broker`.
//!
//! The edge only moves bytes and events: it decodes packets with `tern-codec`, hands them to
//! the core, and writes what the core sends. It never implements a protocol rule itself.
//!
//! [`bench`] is the load tool behind `tern bench`; it talks to a broker only through
//! `tern-client`.

#![warn(missing_docs)]

pub mod bench;
pub mod config;
pub mod server;

mod conn;
mod listener;
#[cfg(feature = "lock-stats")]
mod lock_stats;
mod mailbox;
mod persistence;
mod shared;
mod shutdown;
mod sys;
mod timer;

pub use config::Config;
pub use server::Server;
