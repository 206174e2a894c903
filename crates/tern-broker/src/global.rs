//! What every shard of one broker shares: the identifier counters, the store's tickets and the
//! retained messages.
//!
//! A broker may run as several [`Broker`](crate::Broker) values ("shards"), each owning the
//! sessions of its client ids behind its own lock (see `docs/design/core-concurrency.md`).
//! Whatever must be unique or single across them lives here, behind an `Arc` each shard holds.
//! Rules for what is added here: a shard never holds two of its locks at once, and nothing here
//! calls back into a shard, so no lock order can form a cycle. The counters are atomics; the
//! retained messages are behind a `RwLock`, which a shard takes while it holds its own lock,
//! never the other way round, and releases before it delivers anything.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::broker::ConnId;
use crate::durable::{Journal, PersistMode};
use crate::persist::Ticket;
use crate::retained::RetainedTree;
use crate::session::{GroupId, Message, SessionId};

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
    /// Where store batches get their tickets.
    tickets: Arc<Tickets>,
    /// The retained messages, and the journal of their store operations.
    retained: RwLock<Retained>,
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
        let tickets = Arc::new(Tickets(AtomicU64::new(1)));
        let global = Global {
            next_conn: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            next_group: AtomicU64::new(1),
            next_client: AtomicU64::new(1),
            tickets: Arc::clone(&tickets),
            retained: RwLock::new(Retained {
                tree: RetainedTree::new(),
                journal: Journal::new(PersistMode::Off, tickets),
            }),
            id_salt,
        };
        let version = Message {
            topic: "$SYS/broker/version".into(),
            payload: format!("tern {}", env!("CARGO_PKG_VERSION")).into(),
            qos: tern_codec::QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
            shared_properties: Default::default(),
        };
        global
            .retained_mut()
            .tree
            .insert("$SYS/broker/version", Arc::new(version));
        global
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

    /// The retained messages, to change them.
    pub(crate) fn retained_mut(&self) -> RwLockWriteGuard<'_, Retained> {
        // A panic while holding it poisons the lock; the tree is still whole (every change to
        // it is one call), so keep serving.
        self.retained
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The retained messages, to read them.
    pub(crate) fn retained(&self) -> RwLockReadGuard<'_, Retained> {
        self.retained.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where store batches get their tickets.
    pub(crate) fn tickets(&self) -> Arc<Tickets> {
        Arc::clone(&self.tickets)
    }
}

/// The retained messages of the whole broker, and their store operations.
///
/// Retained operations have a journal of their own, written under the write lock, so that the
/// store receives them in the order the tree changed whichever shard changed it.
pub(crate) struct Retained {
    pub tree: RetainedTree<Arc<Message>>,
    pub journal: Journal,
}

impl std::fmt::Debug for Retained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retained")
            .field("messages", &self.tree.len())
            .field("journal", &self.journal)
            .finish()
    }
}

/// The sequence store batches take their tickets from: one for every journal of one broker,
/// in which the store commits batches.
#[derive(Debug)]
pub(crate) struct Tickets(AtomicU64);

impl Tickets {
    /// Reserves the ticket of a new batch.
    pub(crate) fn reserve(&self) -> Ticket {
        self.0.fetch_add(1, Relaxed)
    }
}

impl SessionId {
    /// The shard that owns this session.
    pub fn shard(self) -> usize {
        (self.0.get() & ((1 << SHARD_BITS) - 1)) as usize
    }
}
