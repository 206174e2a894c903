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

/// The routing of one outbox still to do: the shards it has something for that have not
/// routed it yet (one bit each, lowest first), the first of them from item `item` on.
pub(crate) struct Routing {
    outbox: Outbox,
    left: u32,
    item: usize,
    /// The latest store batch the shards done so far recorded it in.
    ticket: Option<Ticket>,
}

impl Routing {
    fn of(outbox: Outbox) -> Self {
        Routing {
            left: outbox.targets(),
            outbox,
            item: 0,
            ticket: None,
        }
    }

    /// The next shard to route in, if any.
    fn next_shard(&self) -> Option<usize> {
        (self.left != 0).then(|| self.left.trailing_zeros() as usize)
    }
}

/// A connection's routing still to do after it stopped for a backed-up connection. The
/// connection pauses on [`Unrouted::run`], which goes on each time the backed-up connection has
/// drained; dropped before it is done (the connection ending), it routes the rest at once, so
/// that nothing accepted is left unrouted.
pub(crate) struct Unrouted {
    shared: Arc<SharedBroker>,
    work: Option<Routing>,
}

impl Unrouted {
    /// The routing `work` left by a call of `shared`.
    pub(crate) fn new(shared: Arc<SharedBroker>, work: Routing) -> Self {
        Unrouted {
            shared,
            work: Some(work),
        }
    }

    /// Waits for `backlog` to drain, routes on, and again until the routing is done.
    pub(crate) async fn run(mut self, mut backlog: Arc<Backpressure>) {
        loop {
            backlog.wait().await;
            let Some(work) = self.work.take() else { return };
            let (next, rest) = self.shared.route(work, true);
            self.work = rest;
            match next {
                Some(next) if self.work.is_some() => backlog = next,
                // Done, or (never, as `route` stops only for a backlog) nothing to wait for:
                // the drop routes whatever is left.
                _ => return,
            }
        }
    }
}

impl Drop for Unrouted {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            self.shared.route(work, false);
        }
    }
}

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
        let (result, routing) = self.call_local(shard, f);
        self.route(routing, false);
        result
    }

    /// [`SharedBroker::call`] for a connection's batch of packets: the routing in other shards
    /// stops, as the batch does in its own shard, once a message was dropped for a backed-up
    /// connection. Also returns that connection's backlog, and the routing still to do, which
    /// must be done (see [`Unrouted`]) before any later packet of the connection is handed over.
    pub(crate) fn call_routed<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Broker<ConnOutlet>, Instant) -> R,
    ) -> (R, Option<Arc<Backpressure>>, Option<Routing>) {
        let (result, routing) = self.call_local(shard, f);
        let (backed_up, rest) = self.route(routing, true);
        (result, backed_up, rest)
    }

    /// The first step of a call: `f` on `shard`, and what it left for the other shards.
    fn call_local<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Broker<ConnOutlet>, Instant) -> R,
    ) -> (R, Routing) {
        self.locked(shard, |state, now| {
            let result = f(&mut state.broker, now);
            (result, Routing::of(state.broker.take_outbox()))
        })
    }

    /// Runs `f` on every shard in turn, each a call of its own.
    pub(crate) fn each(&self, mut f: impl FnMut(&mut Broker<ConnOutlet>, Instant)) {
        for shard in 0..self.shards() {
            self.call(shard, &mut f);
        }
    }

    /// Runs `f` under `shard`'s lock with the clock read under it (so the core sees times in the
    /// order of its calls), hands over the store batches and wakes the timer if needed.
    fn locked<R>(&self, shard: usize, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        #[cfg(feature = "lock-stats")]
        let asked = Instant::now();
        let (result, wake) = {
            let mut state = self.lock(shard);
            #[cfg(feature = "lock-stats")]
            let _held = crate::lock_stats::CORE.held_since(asked);
            let now = Instant::now();
            let result = f(&mut state, now);
            state.hand_over_batches();
            (result, state.made_earlier_deadline())
        };
        if wake {
            self.timer_wake.notify_one();
        }
        result
    }

    /// Routes `work` through the shards it has left (and what that leaves in turn), then
    /// settles the acknowledgments that waited for it. With `stop`, it stops where a message was
    /// dropped for a backed-up connection, returning that connection's backlog and the rest.
    pub(crate) fn route(
        &self,
        mut work: Routing,
        mut stop: bool,
    ) -> (Option<Arc<Backpressure>>, Option<Routing>) {
        let mut backed_up = None;
        while let Some(shard) = work.next_shard() {
            let (routed, backlog) = self.locked(shard, |state, now| {
                let b = &mut state.broker;
                b.take_backpressure();
                let routed = b.route_remote_from(now, &work.outbox, work.item, stop);
                let backlog = b
                    .take_backpressure()
                    .and_then(|to| b.outlet(to))
                    .map(|outlet| outlet.backpressure.clone());
                (routed, backlog)
            });
            work.ticket = work.ticket.max(routed.ticket);
            if !routed.outbox.is_empty() {
                // Members picked again: routed in full, here and now.
                self.route(Routing::of(routed.outbox), false);
            }
            backed_up = backed_up.or(backlog);
            if let Some(item) = routed.stopped_at {
                work.item = item;
                if backed_up.is_some() {
                    return (backed_up, Some(work));
                }
                // Nobody left to wait for: go on in this shard without stopping.
                stop = false;
                continue;
            }
            work.left &= work.left - 1;
            work.item = 0;
        }
        if !work.outbox.waiting().is_empty() {
            let ticket = work.ticket;
            self.locked(work.outbox.from(), |state, _| {
                for &conn in work.outbox.waiting() {
                    state.broker.settle(conn, ticket);
                }
            });
        }
        (backed_up, None)
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
            let routing = self.locked(shard, |state, now| {
                state.armed = None;
                state.broker.handle_timeout(now);
                Routing::of(state.broker.take_outbox())
            });
            self.route(routing, false);
        }
    }

    /// Completes when a broker call made an earlier deadline than the armed one.
    pub(crate) async fn timer_woken(&self) {
        self.timer_wake.notified().await;
    }
}
