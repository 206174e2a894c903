//! Durability inside the core: the journal of store operations waiting to be committed, the
//! packets held until the batch they depend on is durable, and the restore from a snapshot.
//!
//! Ack-after-durable (raft-rs's `Ready` idea): a packet whose promise depends on stored state —
//! the PUBACK/PUBREC of a message, a PUBLISH or PUBREL to a persistent session — is given the
//! number of the last batch emitted so far (the journal's *barrier*) and waits in its
//! connection's `held` queue until [`Broker::handle_persisted`] reports that batch durable.
//! Packets behind a held one wait too, so each connection keeps its order. In
//! [`PersistMode::Batch`] nothing waits (the loss window is the batch interval), and in
//! [`PersistMode::Off`] no operation is even recorded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tern_codec::ReasonCode;

use crate::broker::{Broker, Conn, ConnId, Outlet, Timer};
use crate::frame::{AckKind, Frame};
use crate::global::Tickets;
use crate::persist::{SessionRecord, Snapshot, StoreOp, StoredDelivery, Ticket};
use crate::session::{Delivery, Inflight, Session, SessionId};

/// How the core treats durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PersistMode {
    /// Nothing is recorded: an in-memory broker.
    #[default]
    Off,
    /// Operations are recorded and committed in the background; acknowledgments do not wait.
    Batch,
    /// Operations are recorded; acknowledgments wait until their batch is durable.
    Sync,
}

/// Store operations not yet handed to the edge, and the batch numbering.
///
/// A batch's ticket is reserved from the broker's [`Global`] counter when its first operation is
/// recorded, so the tickets of every shard's batches form one sequence, which the store commits
/// in order whatever order the batches reach it in. "Ticket `t` is durable" thus always means
/// every batch numbered up to `t`, of whichever shard, is.
#[derive(Debug)]
pub(crate) struct Journal {
    pub mode: PersistMode,
    ops: Vec<StoreOp>,
    /// The ticket reserved for the pending `ops` if there are any, else the last ticket this
    /// journal reserved (0 before the first).
    ticket: Ticket,
    /// The highest ticket known durable.
    persisted: Ticket,
    /// Set when a commit failed, cleared by the next success: new durable work is refused.
    pub failing: bool,
    /// Where tickets come from.
    tickets: Arc<Tickets>,
}

impl Journal {
    /// A journal drawing its tickets from `tickets`.
    pub fn new(mode: PersistMode, tickets: Arc<Tickets>) -> Self {
        Journal {
            mode,
            ops: Vec::new(),
            ticket: 0,
            persisted: 0,
            failing: false,
            tickets,
        }
    }

    /// True when operations are recorded at all.
    pub fn enabled(&self) -> bool {
        self.mode != PersistMode::Off
    }

    /// Records `op` (nothing when persistence is off).
    pub fn push(&mut self, op: StoreOp) {
        if self.enabled() {
            if self.ops.is_empty() {
                self.ticket = self.tickets.reserve();
            }
            self.ops.push(op);
        }
    }

    /// A position in the pending operations, to see later whether an event recorded any.
    pub fn mark(&self) -> usize {
        self.ops.len()
    }

    /// The batch to wait for when operations were recorded since `mark` (sync mode only).
    pub fn wait_since(&self, mark: usize) -> Option<Ticket> {
        (self.mode == PersistMode::Sync && self.ops.len() > mark).then_some(self.ticket)
    }

    /// The pending operations as one batch with its ticket, if there are any.
    pub fn take(&mut self) -> Option<(Ticket, Vec<StoreOp>)> {
        (!self.ops.is_empty()).then(|| (self.ticket, std::mem::take(&mut self.ops)))
    }

    /// The batch a durability-dependent packet must wait for, if any is outstanding: the
    /// pending one, or else the last one handed over, until it is durable.
    pub fn barrier(&self) -> Option<Ticket> {
        (self.mode == PersistMode::Sync && self.ticket > self.persisted).then_some(self.ticket)
    }
}

/// Marks the wait of an acknowledgment whose message is still to be routed in other shards
/// (the low bits keep its own shard's batch): it is held until [`Broker::settle`] gives it
/// the batch those shards recorded it in. A marked wait is above every ticket, so nothing
/// behind it is released before it either.
pub(crate) const REMOTE: Ticket = 1 << 63;

/// A packet a connection holds until a store batch is durable.
#[derive(Debug)]
pub(crate) struct Held {
    /// The batch it waits for: its own, or the one of the packet ahead of it.
    pub ticket: Ticket,
    /// The batch it waits for on its own account (0: none; marked [`REMOTE`]: not known yet).
    pub wait: Ticket,
    /// The packet.
    pub frame: Frame,
}

impl Held {
    /// It waits for a record of its own (an acknowledgment to a publisher, or a QoS 2
    /// PUBLISH or PUBREL to a persistent session), not only behind another packet. (Tickets
    /// count from 1, so a wait of 0 is none.)
    fn own(&self) -> bool {
        self.wait != 0
    }
}

/// Sends the packets at the front of `c`'s held queue whose batch is durable (`persisted`).
fn release_durable<O: Outlet>(c: &mut Conn<O>, persisted: Ticket) {
    while c.held.front().is_some_and(|h| h.ticket <= persisted) {
        let held = c.held.pop_front().expect("front checked");
        c.outlet.send(held.frame);
    }
}

/// Sends `frame` on `c`, or holds it behind `wait` (and behind anything already held).
/// Returns true when the connection just started holding.
pub(crate) fn send_after<O: Outlet>(c: &mut Conn<O>, frame: Frame, wait: Option<Ticket>) -> bool {
    match (wait, c.held.back()) {
        (None, None) => {
            c.outlet.send(frame);
            false
        }
        (wait, last) => {
            let was_empty = last.is_none();
            let ticket = wait.max(last.map(|l| l.ticket)).unwrap_or(0);
            c.held.push_back(Held {
                ticket,
                wait: wait.unwrap_or(0),
                frame,
            });
            was_empty
        }
    }
}

impl<O: Outlet> Broker<O> {
    /// Chooses how durable state is handled; call before the first event.
    pub fn set_persistence(&mut self, mode: PersistMode) {
        self.journal = Journal::new(mode, self.global.tickets());
        self.global.retained_mut().journal.mode = mode;
    }

    /// The store operations recorded since the last call, as one numbered batch to commit in
    /// order after every batch with a lower ticket (of this shard or another).
    /// The retained messages' operations come as batches of their own, after this shard's, when
    /// this shard changed a retained message since the last call (another shard may have
    /// handed them over already).
    pub fn poll_persist(&mut self) -> Option<(Ticket, Vec<StoreOp>)> {
        if let Some(batch) = self.journal.take() {
            return Some(batch);
        }
        if std::mem::take(&mut self.retained_changed) {
            return self.global.retained_mut().journal.take();
        }
        None
    }

    /// Every batch up to `ticket` is durable: release the packets that waited for it.
    pub fn handle_persisted(&mut self, ticket: Ticket) {
        if self.journal.failing {
            tracing::info!("store commits succeed again");
        }
        self.journal.failing = false;
        self.journal.persisted = self.journal.persisted.max(ticket);
        let persisted = self.journal.persisted;
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.holding) {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            release_durable(c, persisted);
            if !c.held.is_empty() {
                still.push(id);
            }
        }
        self.holding = still;
    }

    /// The other shards routed what connection `conn`'s last call published, recording it in
    /// store batches up to `ticket` (`None`: they recorded nothing): its acknowledgments that
    /// waited for that (marked [`REMOTE`]) now wait for `ticket` too, and go out if every batch
    /// they wait for is durable.
    pub fn settle(&mut self, conn: ConnId, ticket: Option<Ticket>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut running = 0;
        for held in &mut c.held {
            if held.wait & REMOTE != 0 {
                held.wait = (held.wait & !REMOTE).max(ticket.unwrap_or(0));
            }
            running = running.max(held.wait);
            held.ticket = running;
        }
        release_durable(c, self.journal.persisted);
    }

    /// Committing the batches up to `ticket` failed: what waited for them cannot be promised.
    /// v5 publishers get their acknowledgment with 0x80 (Unspecified error); v3 publishers,
    /// which have no negative acknowledgment, are disconnected so that they resend later.
    /// QoS 2 PUBLISH and PUBREL packets to persistent sessions stay held until a later commit
    /// makes their records durable; what was held only behind them is sent. Until a commit
    /// succeeds again, new QoS 1/2 messages are refused (0x97 Quota exceeded).
    pub fn handle_persist_failed(&mut self, now: Instant, ticket: Ticket) {
        tracing::error!(
            ticket,
            "store commit failed; refusing new durable work until it recovers"
        );
        self.journal.failing = true;
        let mut close = Vec::new();
        // Inbound QoS 2 flows refused below: their identifiers are free again.
        let mut refused = Vec::new();
        for &id in &self.holding {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let v5 = c.version.is_v5();
            let mut kept = VecDeque::new();
            for mut held in std::mem::take(&mut c.held) {
                if held.ticket > ticket {
                    kept.push_back(held);
                    continue;
                }
                if let Some(reason) = held.frame.publisher_ack_reason() {
                    if !v5 {
                        close.push(id);
                        break;
                    }
                    *reason = ReasonCode::UNSPECIFIED_ERROR;
                    if let (Frame::Ack(AckKind::PubRec, packet_id, _), Some(sid)) =
                        (&held.frame, c.session)
                    {
                        refused.push((sid, *packet_id));
                    }
                } else if held.own() {
                    // A QoS 2 PUBLISH or a PUBREL to a persistent session goes out only once
                    // its record is durable: the store keeps the failed operations and commits
                    // them with its next success, which releases these.
                    kept.push_back(held);
                    continue;
                }
                c.outlet.send(held.frame);
            }
            c.held = kept;
        }
        self.holding
            .retain(|id| self.conns.get(id).is_some_and(|c| !c.held.is_empty()));
        // [MQTT-4.3.3-9] A PUBREC of 0x80 or above ends the flow: the client may reuse the
        // identifier for a new message, which must not be taken for a duplicate of this one.
        for (sid, packet_id) in refused {
            self.end_inbound_qos2(sid, packet_id);
        }
        for id in close {
            self.close_conn(
                now,
                id,
                crate::broker::CloseHow {
                    disconnect: None,
                    will: true,
                    why: "store failure",
                },
            );
        }
    }

    /// Sends `frame` on `conn`, after batch `wait` is durable if given.
    pub(crate) fn send_durable(&mut self, conn: ConnId, frame: Frame, wait: Option<Ticket>) {
        if let Some(c) = self.conns.get_mut(&conn)
            && send_after(c, frame, wait)
        {
            self.holding.push(conn);
        }
    }

    /// Records the durable record of session `sid` if it persists; deletes it if it stopped.
    pub(crate) fn persist_session(&mut self, sid: SessionId) {
        if !self.journal.enabled() {
            return;
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.persists() {
            s.stored = true;
            let record = SessionRecord {
                client_id: s.client_id.clone(),
                version: s.version,
                expiry_interval: s.expiry_interval,
                expires_at: s.expires_at,
                subscriptions: s
                    .subscriptions
                    .iter()
                    .map(|(f, e)| (f.clone(), *e))
                    .collect(),
                will: s.will.as_deref().cloned(),
                will_at: s.will_at,
            };
            self.journal.push(StoreOp::PutSession(record));
        } else if s.stored {
            s.stored = false;
            self.journal
                .push(StoreOp::DeleteSession(s.client_id.clone()));
        }
    }

    /// Restores retained messages and persistent sessions from a store, as at start. Sessions
    /// that were connected when the store was written are disconnected now: their expiry and
    /// will start counting from `now`.
    pub fn restore(&mut self, now: Instant, snapshot: Snapshot) {
        let mut retained = self.global.retained_mut();
        for msg in snapshot.retained {
            if !msg.expired(now) {
                retained.tree.insert(&msg.topic.clone(), msg);
            }
        }
        drop(retained);
        for stored in snapshot.sessions {
            let r = stored.record;
            let sid = self.new_session_id();
            let mut s = Session::new(sid, r.client_id.clone(), r.version);
            s.expiry_interval = r.expiry_interval;
            s.stored = true;
            s.will = r.will.map(Box::new);
            for (seq, d) in stored.deliveries {
                s.next_seq = s.next_seq.max(seq + 1);
                let delivery = Delivery {
                    msg: d.msg,
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids,
                    group: None,
                    seq,
                };
                match d.inflight {
                    Some((id, state)) if s.hold_id(id) => s.inflight.push_back(Inflight {
                        id,
                        delivery,
                        state,
                    }),
                    _ => s.restore_queued(delivery),
                }
            }
            s.open_inbound_qos2(stored.inbound);
            let subscriptions = r.subscriptions;
            self.by_client_id.insert(r.client_id, sid);
            self.sessions.insert(sid, Box::new(s));
            for (filter, entry) in subscriptions {
                self.add_subscription(sid, &filter, entry);
            }
            match (r.expires_at, r.will_at) {
                // Disconnected before: keep its deadlines (they may have passed while down).
                (Some(expires_at), will_at) => {
                    let (expires_at, will_at) = (expires_at.max(now), will_at.map(|t| t.max(now)));
                    let s = self.sessions.get_mut(&sid).expect("inserted above");
                    s.expires_at = Some(expires_at);
                    s.will_at = will_at;
                    if let Some(at) = will_at {
                        self.timers.insert((at, Timer::WillDelay(sid)));
                    }
                    self.timers.insert((expires_at, Timer::SessionExpiry(sid)));
                }
                // Connected when the broker stopped: it is disconnected as of now.
                (None, _) => self.detached(now, sid),
            }
        }
        self.handle_timeout(now);
    }
}

/// A delivery record for the store.
pub(crate) fn stored(d: &Delivery, inflight: Option<&Inflight>) -> StoredDelivery {
    StoredDelivery {
        msg: d.msg.clone(),
        qos: d.qos,
        retain: d.retain,
        sub_ids: d.sub_ids.clone(),
        inflight: inflight.map(|f| (f.id, f.state)),
    }
}
