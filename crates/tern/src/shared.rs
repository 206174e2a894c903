//! The broker core shared by every connection task, the timer, the store thread and `$SYS`.
//!
//! The core runs as one or more shards (`[server] core_shards`), each a [`Broker`] behind its
//! own lock, a session living in the shard of its client id (see
//! `docs/design/core-concurrency.md`). This module owns those locks and the call protocol:
//! one call on a shard, then what the call left for the other shards ([`Outbox`]) routed by
//! each of them in turn, then the acknowledgments that waited for that settled in the first
//! shard. A thread never holds two shard locks at once. It also owns the bookkeeping that wakes
//! the timer when a call made an earlier deadline. It must not interpret packets or make
//! protocol decisions.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tern_broker::persist::Ticket;
use tern_broker::{Broker, ConnId, Global, Outbox};
use tokio::sync::Notify;

use crate::conn::{Backpressure, ConnOutlet};
use crate::persistence::{StoreMsg, StoreTx};

/// The broker core's shards behind their locks, plus the timer's wake-up.
pub(crate) struct SharedBroker {
    // Std mutexes, not tokio's: the core never awaits and its calls are short, so a lock is
    // never held across an `.await` or any IO.
    shards: Box<[Mutex<State>]>,
    /// What the shards share; here for placing connections.
    global: Arc<Global>,
    /// Where the next connection opens before its CONNECT places it (round robin).
    next_open: AtomicUsize,
    /// Notified when a broker call produced a deadline earlier than the one the timer sleeps on.
    timer_wake: Notify,
}

struct State {
    broker: Broker<ConnOutlet>,
    /// Where batches of store operations go; `None` for an in-memory broker.
    store: Option<StoreTx>,
    /// The deadline the timer task is sleeping until, as this shard knows it, if it sleeps.
    armed: Option<Instant>,
}

impl State {
    /// Passes the store operations the last call recorded to the store thread. Done under the
    /// lock, so this shard's batches reach the thread in the order the core numbered them (the
    /// thread puts every shard's batches in ticket order).
    fn hand_over_batches(&mut self) {
        let Some(tx) = &self.store else { return };
        while let Some((ticket, ops)) = self.broker.poll_persist() {
            // A send error means the store thread is gone (shutdown): nothing more to commit.
            let _ = tx.send(StoreMsg::Batch(ticket, ops));
        }
    }

    /// True when the last call made a deadline earlier than the one the timer sleeps on.
    fn made_earlier_deadline(&self) -> bool {
        let next = self.broker.poll_timeout();
        matches!((next, self.armed), (Some(next), Some(armed)) if next < armed)
    }
}

impl SharedBroker {
    /// Share `shards`, the shards of one broker in order, each handing its store batches to
    /// `store` if given.
    pub(crate) fn new(shards: Vec<Broker<ConnOutlet>>, store: Option<StoreTx>) -> Self {
        let global = shards.first().expect("at least one shard").global().clone();
        let shards = shards
            .into_iter()
            .map(|broker| {
                Mutex::new(State {
                    broker,
                    store: store.clone(),
                    armed: None,
                })
            })
            .collect();
        SharedBroker {
            shards,
            global,
            next_open: AtomicUsize::new(0),
            timer_wake: Notify::new(),
        }
    }

    /// How many shards the core has.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, State> {
        let lock = &self.shards[shard];
        // A panic inside the core poisons the lock; keep serving the other connections rather
        // than failing every one of them from now on.
        lock.lock().unwrap_or_else(|poisoned| {
            tracing::error!(
                shard,
                "broker core panicked earlier; continuing with its state as it is"
            );
            lock.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Opens a connection on a shard chosen round robin; returns the shard and the id.
    pub(crate) fn open(&self, outlet: ConnOutlet) -> (usize, ConnId) {
        let shard = match self.shards() {
            1 => 0,
            n => self.next_open.fetch_add(1, Relaxed) % n,
        };
        (shard, self.call(shard, |b, now| b.open(now, outlet)))
    }

    /// Where connection `id`, open on shard `from` and about to hand over a CONNECT for
    /// `client_id`, must live: the shard of its client id (the one it is on for an empty id,
    /// which the core assigns in that shard). Moves it there and returns the shard.
    pub(crate) fn place(&self, id: ConnId, from: usize, client_id: &str) -> usize {
        let to = match client_id {
            "" => from,
            id => self.global.shard_of(id),
        };
        if to == from {
            return from;
        }
        let Some(conn) = self.lock(from).broker.take_conn(id) else {
            return from;
        };
        self.lock(to).broker.adopt_conn(conn);
        to
    }

    /// Run one broker call on `shard` with the current time, then route what it left for the
    /// other shards.
    pub(crate) fn call<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Broker<ConnOutlet>, Instant) -> R,
    ) -> R {
        self.call_routed(shard, f).0
    }

    /// [`SharedBroker::call`], also returning the backlog of a connection that the routing in
    /// other shards found backed up, for a connection task that pauses its reading then.
    pub(crate) fn call_routed<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Broker<ConnOutlet>, Instant) -> R,
    ) -> (R, Option<Arc<Backpressure>>) {
        let (result, outbox) = self.locked(shard, |b, now| {
            let result = f(b, now);
            (result, b.take_outbox())
        });
        let backed_up = self.route(outbox);
        (result, backed_up)
    }

    /// Runs `f` on every shard in turn, each a call of its own.
    pub(crate) fn each(&self, mut f: impl FnMut(&mut Broker<ConnOutlet>, Instant)) {
        for shard in 0..self.shards() {
            self.call(shard, &mut f);
        }
    }

    /// Runs `f` under `shard`'s lock with the clock read under it (so the core sees times in the
    /// order of its calls), hands over the store batches and wakes the timer if needed.
    fn locked<R>(&self, shard: usize, f: impl FnOnce(&mut Broker<ConnOutlet>, Instant) -> R) -> R {
        #[cfg(feature = "lock-stats")]
        let asked = Instant::now();
        let (result, wake) = {
            let mut state = self.lock(shard);
            #[cfg(feature = "lock-stats")]
            let _held = crate::lock_stats::CORE.held_since(asked);
            let now = Instant::now();
            let result = f(&mut state.broker, now);
            state.hand_over_batches();
            (result, state.made_earlier_deadline())
        };
        if wake {
            self.timer_wake.notify_one();
        }
        result
    }

    /// Routes `outbox` through the shards it has something for (and what that leaves in turn),
    /// then settles the acknowledgments that waited for it. Returns the backlog of a
    /// connection found backed up on the way.
    fn route(&self, outbox: Outbox) -> Option<Arc<Backpressure>> {
        if outbox.is_empty() {
            return None;
        }
        let (from, waiting) = (outbox.from(), outbox.waiting().to_vec());
        let mut pending = vec![outbox];
        let mut ticket: Option<Ticket> = None;
        let mut backed_up = None;
        while let Some(outbox) = pending.pop() {
            for shard in (0..self.shards()).filter(|&s| outbox.is_for(s)) {
                let (routed, backlog) = self.locked(shard, |b, now| {
                    b.take_backpressure();
                    let routed = b.route_remote(now, &outbox);
                    let backlog = b
                        .take_backpressure()
                        .and_then(|to| b.outlet(to))
                        .map(|outlet| outlet.backpressure.clone());
                    (routed, backlog)
                });
                ticket = ticket.max(routed.ticket);
                backed_up = backed_up.or(backlog);
                if !routed.outbox.is_empty() {
                    pending.push(routed.outbox);
                }
            }
        }
        if !waiting.is_empty() {
            self.locked(from, |b, _| {
                for conn in waiting {
                    b.settle(conn, ticket);
                }
            });
        }
        backed_up
    }

    /// For the timer task: the broker's next deadline over every shard, capped at `cap`,
    /// recorded as armed.
    pub(crate) fn arm_timer(&self, cap: Instant) -> Instant {
        let mut deadline = cap;
        // Armed at `cap` while the others are read: a call that makes an earlier deadline on a
        // shard already read wakes the timer, which then arms again.
        for shard in 0..self.shards() {
            let mut state = self.lock(shard);
            state.armed = Some(cap);
            if let Some(next) = state.broker.poll_timeout() {
                deadline = deadline.min(next);
            }
        }
        for shard in 0..self.shards() {
            let mut state = self.lock(shard);
            state.armed = state.armed.map(|armed| armed.min(deadline));
        }
        deadline
    }

    /// For the timer task: fire due deadlines on every shard; the timer is not armed until it
    /// re-arms.
    pub(crate) fn fire_timer(&self) {
        for shard in 0..self.shards() {
            let outbox = {
                #[cfg(feature = "lock-stats")]
                let asked = Instant::now();
                let mut state = self.lock(shard);
                #[cfg(feature = "lock-stats")]
                let _held = crate::lock_stats::CORE.held_since(asked);
                state.armed = None;
                state.broker.handle_timeout(Instant::now());
                state.hand_over_batches();
                state.broker.take_outbox()
            };
            self.route(outbox);
        }
    }

    /// Completes when a broker call made an earlier deadline than the armed one.
    pub(crate) async fn timer_woken(&self) {
        self.timer_wake.notified().await;
    }
}
