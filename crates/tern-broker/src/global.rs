//! What every shard of one broker shares: the identifier counters and the store's tickets.
//!
//! A broker may run as several [`Broker`](crate::Broker) values ("shards"), each owning the
//! sessions of its client ids behind its own lock (see `docs/design/core-concurrency.md`).
//! Whatever must be unique or single across them lives here, behind an `Arc` each shard holds.
//! Rules for what is added here: a shard never holds two of its locks at once, and nothing here
//! calls back into a shard, so no lock order can form a cycle. The counters are atomics.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::broker::ConnId;
use crate::persist::Ticket;
use crate::session::{GroupId, SessionId};

/// The low bits of a [`SessionId`] that name its shard.
const SHARD_BITS: u32 = 8;

/// The most shards one broker can have.
pub const MAX_SHARDS: usize = 1 << SHARD_BITS;

/// State shared by every shard of one broker.
#[derive(Debug)]
pub struct Global {
    next_conn: AtomicU64,
    next_session: AtomicU64,
    next_group: AtomicU64,
    next_client: AtomicU64,
    /// The next store batch's ticket (see `Journal`).
    next_ticket: AtomicU64,
    /// Salt for assigned client identifiers, from std's per-process random keys.
    id_salt: u64,
}

impl Default for Global {
    fn default() -> Self {
        Self::new()
    }
}

impl Global {
    /// Fresh counters, for the shards of one new broker.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let id_salt = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Global {
            next_conn: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            next_group: AtomicU64::new(1),
            next_client: AtomicU64::new(1),
            next_ticket: AtomicU64::new(1),
            id_salt,
        }
    }

    /// A connection id no shard has handed out.
    pub(crate) fn conn_id(&self) -> ConnId {
        let n = self.next_conn.fetch_add(1, Relaxed);
        ConnId(NonZeroU64::new(n).expect("counts up from 1"))
    }

    /// A session id no shard has handed out, naming `shard` in its low bits.
    pub(crate) fn session_id(&self, shard: u8) -> SessionId {
        let n = self.next_session.fetch_add(1, Relaxed);
        let id = (n << SHARD_BITS) | u64::from(shard);
        SessionId(NonZeroU64::new(id).expect("counts up from 1"))
    }

    /// A shared-group id no shard has handed out.
    pub(crate) fn group_id(&self) -> GroupId {
        GroupId(self.next_group.fetch_add(1, Relaxed))
    }

    /// A candidate client identifier for a client that sent none [MQTT-3.1.3-6]; the caller
    /// checks it is not in use. Not guessable from the ones handed out before it.
    pub(crate) fn client_id(&self) -> String {
        let n = self.next_client.fetch_add(1, Relaxed);
        let n = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.id_salt;
        format!("tern-{n:016x}")
    }
}

impl Global {
    /// Reserves the ticket of a new store batch: one sequence from 1 for every shard, in which
    /// the store commits batches.
    pub(crate) fn ticket(&self) -> Ticket {
        self.next_ticket.fetch_add(1, Relaxed)
    }
}

impl SessionId {
    /// The shard that owns this session.
    pub fn shard(self) -> usize {
        (self.0.get() & ((1 << SHARD_BITS) - 1)) as usize
    }
}
