//! Tern's durable state: retained messages, persistent sessions (subscriptions, expiry, will),
//! each such session's undelivered QoS 1/2 messages with their in-flight state, and inbound
//! QoS 2 identifiers not yet released.
//!
//! The broker core emits ordered batches of [`StoreOp`]; a [`Store`] applies each commit as one
//! atomic transaction and, when asked, makes it durable (fsync'd) before returning. At start the
//! core is restored from the [`Snapshot`] of [`Store::load`]. [`DiskStore`] keeps everything in
//! one embedded redb database file in a data directory; [`MemoryStore`] keeps it in maps.
//!
//! What this crate never does: delete, rewrite or skip data it cannot read (a damaged, foreign or
//! differently versioned file is an error naming the file, left as it was); panic on any bytes
//! read from disk; spawn threads or use an async runtime (the caller runs it on its own thread).

#![warn(missing_docs)]

mod disk;
mod error;
mod format;
mod memory;
mod time;

pub use disk::{DiskStore, FILE_NAME};
pub use error::StoreError;
pub use memory::MemoryStore;
pub use tern_broker::persist::{
    SessionRecord, Snapshot, StoreOp, StoredDelivery, StoredSession, Ticket,
};

/// A place where the core's durable state lives.
pub trait Store: Send {
    /// Everything stored, for the core to restore from. Called once at start.
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Applies `ops` in order as ONE atomic transaction; durable (fsync'd) before returning when
    /// `sync` is true.
    ///
    /// A commit that puts a delivery or an inbound identifier for a client with no session
    /// record (stored earlier or put earlier in `ops`) is refused whole with
    /// [`StoreError::Invalid`].
    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError>;
}

/// The reason given when a delivery or inbound id has no session to belong to.
pub(crate) fn orphan_reason(client_id: &str) -> String {
    format!(
        "a delivery or inbound identifier for client {client_id:?}, which has no session record"
    )
}
