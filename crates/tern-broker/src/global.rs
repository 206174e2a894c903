//! What every shard of one broker shares: the identifier counters, the store's tickets, the
//! retained messages and the shared subscriptions.
//!
//! A broker may run as several [`Broker`](crate::Broker) values ("shards"), each owning the
//! sessions of its client ids behind its own lock (see `docs/design/core-concurrency.md`).
//! Whatever must be unique or single across them lives here, behind an `Arc` each shard holds.
//! Rules for what is added here: a shard never holds two of its locks at once, and nothing here
//! calls back into a shard, so no lock order can form a cycle. The counters are atomics; the
//! retained messages, the shared subscriptions and the summary of which shards hold which
//! filters are each behind a `RwLock`, which a shard takes while it holds its own lock, never
//! the other way round, never two at once, and releases before it delivers anything.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::broker::ConnId;
use crate::durable::{Journal, PersistMode};
use crate::keyed::ProcessKeyed;
use crate::persist::{Snapshot, Ticket};
use crate::retained::RetainedTree;
use crate::session::{GroupId, Message, Session, SessionId, SubEntry};
use crate::topic_index::TopicIndex;

use rustc_hash::FxHashMap;
use tern_codec::topic::parse_filter;

/// The low bits of a [`SessionId`] that name its shard.
const SHARD_BITS: u32 = 8;

/// The most shards one broker can have: one bit each in a message's
/// [`PendingShards`](crate::session::PendingShards).
pub const MAX_SHARDS: usize = 32;

/// Every shard of `shards` but `me`, one bit each.
pub(crate) fn all_but(shards: usize, me: usize) -> u32 {
    (u32::MAX >> (32 - shards)) & !(1 << me)
}

/// State shared by every shard of one broker.
pub struct Global {
    next_conn: AtomicU64,
    next_session: AtomicU64,
    next_group: AtomicU64,
    next_client: AtomicU64,
    /// Where store batches get their tickets.
    tickets: Arc<Tickets>,
    /// The retained messages, and the journal of their store operations.
    retained: RwLock<Retained>,
    /// The shared subscriptions.
    shared: RwLock<SharedRoutes>,
    /// Which shards hold (non-shared) subscriptions to which filters, a count per shard, so that
    /// a message is routed only in the shards where it can match; kept only with several
    /// shards.
    filters: RwLock<TopicIndex<u8, u32>>,
    /// How many shared groups exist, so that routing looks at them only when there are some.
    groups: AtomicUsize,
    /// How many shards the broker has.
    shards: usize,
    /// Salt for assigned client identifiers, from std's per-process random keys.
    id_salt: u64,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Global")
            .field("next_conn", &self.next_conn)
            .field("next_session", &self.next_session)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl Default for Global {
    fn default() -> Self {
        Self::new()
    }
}

impl Global {
    /// Fresh counters, for a broker of one shard.
    pub fn new() -> Self {
        Self::with_shards(1)
    }

    /// Fresh counters, for a broker of `shards` shards (1 to [`MAX_SHARDS`]).
    pub fn with_shards(shards: usize) -> Self {
        assert!(
            (1..=MAX_SHARDS).contains(&shards),
            "1 to {MAX_SHARDS} shards"
        );
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
            shared: RwLock::new(SharedRoutes::default()),
            filters: RwLock::new(TopicIndex::new()),
            groups: AtomicUsize::new(0),
            shards,
            id_salt,
        };
        let topic = "$SYS/broker/version";
        let version = format!("tern {}", env!("CARGO_PKG_VERSION"));
        let version = crate::sys::system_message(topic, version.into());
        global.retained_mut().tree.insert(topic, Arc::new(version));
        global
    }

    /// How many shards the broker has.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard that owns the session of `client_id`: a keyed hash (see
    /// [`ProcessKeyed`]), so clients cannot choose ids that all land in one shard.
    pub fn shard_of(&self, client_id: &str) -> usize {
        if self.shards == 1 {
            return 0;
        }
        (ProcessKeyed.hash_one(client_id) % self.shards as u64) as usize
    }

    /// `snapshot` split into one part per shard, to [`Broker::restore`](crate::Broker::restore)
    /// each: the sessions of the shard's client ids, and with shard 0's part the retained
    /// messages, which the shards share.
    pub fn split(&self, snapshot: Snapshot) -> Vec<Snapshot> {
        let mut parts: Vec<Snapshot> = (0..self.shards).map(|_| Snapshot::default()).collect();
        parts[0].retained = snapshot.retained;
        for session in snapshot.sessions {
            let shard = self.shard_of(&session.record.client_id);
            parts[shard].sessions.push(session);
        }
        parts
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

    /// The shared subscriptions, to change them.
    pub(crate) fn shared_mut(&self) -> SharedGuard<'_> {
        SharedGuard {
            routes: self.shared.write().unwrap_or_else(PoisonError::into_inner),
            count: &self.groups,
        }
    }

    /// The shared subscriptions, to route through them; `None` when there are none.
    pub(crate) fn shared(&self) -> Option<RwLockReadGuard<'_, SharedRoutes>> {
        (self.groups.load(Relaxed) > 0)
            .then(|| self.shared.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A session of `shard` subscribed to `filter` (not shared).
    pub(crate) fn filter_added(&self, filter: &str, shard: usize) {
        if self.shards == 1 {
            return;
        }
        let shard = u8::try_from(shard).expect("fewer than MAX_SHARDS");
        let mut filters = self.filters.write().unwrap_or_else(PoisonError::into_inner);
        let count = filters.get(filter, &shard).copied().unwrap_or(0);
        filters.insert(filter, shard, count + 1);
    }

    /// A session of `shard` dropped its subscription to `filter` (not shared).
    pub(crate) fn filter_removed(&self, filter: &str, shard: usize) {
        if self.shards == 1 {
            return;
        }
        let shard = u8::try_from(shard).expect("fewer than MAX_SHARDS");
        let mut filters = self.filters.write().unwrap_or_else(PoisonError::into_inner);
        match filters.get(filter, &shard).copied() {
            Some(1) | None => {
                filters.remove(filter, &shard);
            }
            Some(n) => {
                filters.insert(filter, shard, n - 1);
            }
        }
    }

    /// The shards holding a subscription that matches `topic`, one bit each.
    pub(crate) fn shards_matching(&self, topic: &str) -> u32 {
        let mut shards = 0;
        let filters = self.filters.read().unwrap_or_else(PoisonError::into_inner);
        filters.for_each_match(topic, |shard, _| shards |= 1 << shard);
        shards
    }

    /// Links session `s` to connection `conn` (or unlinks it), and records in its shared
    /// groups whether it is connected, which every shard's picks read: the one place a
    /// session's connection changes.
    pub(crate) fn link(&self, s: &mut Session, conn: Option<ConnId>) {
        s.conn = conn;
        let mut shared = s.subscriptions.keys().filter(|f| f.starts_with("$share/"));
        if shared.clone().next().is_none() {
            return;
        }
        if let Some(routes) = self.shared() {
            routes.set_online(s.id, &mut shared, conn.is_some());
        }
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

/// The shared subscriptions `$share/{name}/{filter}` of the whole broker.
#[derive(Default)]
pub(crate) struct SharedRoutes {
    /// One entry per group, under its filter.
    pub index: TopicIndex<GroupId, ()>,
    pub groups: FxHashMap<GroupId, Group>,
    /// (share name, filter) → group.
    pub group_ids: HashMap<(String, String), GroupId>,
}

impl SharedRoutes {
    /// Picks the member of group `g` to get the next message: round-robin, connected members
    /// first, never `avoid` (a member that just left). Also says whether it was connected.
    pub(crate) fn pick(
        &self,
        g: GroupId,
        avoid: Option<SessionId>,
    ) -> Option<(SessionId, SubEntry, bool)> {
        let group = self.groups.get(&g)?;
        let n = group.members.len();
        let cursor = group.cursor.load(Relaxed);
        let order = || (0..n).map(move |k| (cursor + k) % n);
        let eligible = |k: &usize| Some(group.members[*k].sid) != avoid;
        let k = order()
            .filter(eligible)
            .find(|&k| group.members[k].online.load(Relaxed))
            .or_else(|| order().find(eligible))?;
        // Shards picking at once may give one member two messages in a row: round-robin is
        // kept on the whole, not to the message.
        group.cursor.store((k + 1) % n, Relaxed);
        let m = &group.members[k];
        Some((m.sid, m.entry, m.online.load(Relaxed)))
    }

    /// Records whether session `sid`, a member of the groups of `filters` (its subscriptions,
    /// as subscribed), has a connection.
    pub(crate) fn set_online<'a>(
        &self,
        sid: SessionId,
        filters: impl Iterator<Item = &'a String>,
        online: bool,
    ) {
        for filter in filters {
            let Ok(parsed) = parse_filter(filter) else {
                continue;
            };
            let Some(name) = parsed.share_group else {
                continue;
            };
            let key = (name.to_string(), parsed.filter.to_string());
            let group = self.group_ids.get(&key).and_then(|g| self.groups.get(g));
            if let Some(m) = group.and_then(|g| g.members.iter().find(|m| m.sid == sid)) {
                m.online.store(online, Relaxed);
            }
        }
    }
}

/// The write guard of [`SharedRoutes`], keeping the count of groups that routing checks.
pub(crate) struct SharedGuard<'a> {
    routes: RwLockWriteGuard<'a, SharedRoutes>,
    count: &'a AtomicUsize,
}

impl std::ops::Deref for SharedGuard<'_> {
    type Target = SharedRoutes;
    fn deref(&self) -> &SharedRoutes {
        &self.routes
    }
}

impl std::ops::DerefMut for SharedGuard<'_> {
    fn deref_mut(&mut self) -> &mut SharedRoutes {
        &mut self.routes
    }
}

impl Drop for SharedGuard<'_> {
    fn drop(&mut self) {
        self.count.store(self.routes.groups.len(), Relaxed);
    }
}

/// A shared subscription `$share/{name}/{filter}` and its members.
#[derive(Debug)]
pub(crate) struct Group {
    pub members: Vec<Member>,
    /// Round-robin position.
    pub cursor: AtomicUsize,
}

/// One session's membership of a shared group.
#[derive(Debug)]
pub(crate) struct Member {
    pub sid: SessionId,
    /// The member's subscription options and identifier.
    pub entry: SubEntry,
    /// The session has a connection, as its shard last recorded.
    pub online: AtomicBool,
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
