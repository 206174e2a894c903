//! Routing across shards: what one shard's routing leaves for the others, and how they take it.
//!
//! A broker of several shards (see `global.rs`) keeps each session in the shard of its client
//! id. A message published in shard `s` is matched and delivered in `s` while `s`'s lock is
//! held, and left in `s`'s [`Outbox`] for the shards that hold a matching filter (a summary in
//! `Global` says which; a retained message goes to every shard); the edge then hands the
//! outbox to each of those shards in turn ([`Broker::route_remote`]), never holding two shard
//! locks at once. A shared group's member picked in `s` but living in another shard is left in
//! the outbox for that shard alone.
//!
//! An acknowledgment promises that the message is safe wherever it was routed, so in sync
//! durability the PUBACK or PUBREC of a message that went to the outbox is held (its wait is
//! [`REMOTE`](crate::durable::REMOTE)) until the edge reports, with [`Broker::settle`], the
//! store batch the other shards recorded it in. With one shard the outbox stays empty and
//! nothing changes.

use std::sync::Arc;
use std::time::Instant;

use crate::broker::{Broker, Conn, ConnId, Outlet};
use crate::global::all_but;
use crate::persist::Ticket;
use crate::session::{GroupId, Message, SessionId, SubEntry};

/// What one shard's calls left for the other shards to route, since the edge last took it.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The shard that filled it.
    from: usize,
    items: Vec<Remote>,
    /// The shards that have something to route in it, one bit each.
    targets: u32,
    /// Connections whose acknowledgments wait for this outbox to be routed.
    waiting: Vec<ConnId>,
}

/// One message or delivery for the other shards.
#[derive(Debug)]
enum Remote {
    /// A message for the own subscriptions of the shards in `shards`, one bit each (not their
    /// shared groups: the member was picked by the publisher's shard).
    Message { msg: Arc<Message>, shards: u32 },
    /// A message for one member of a shared group, for the shard that owns the member.
    Member {
        group: GroupId,
        sid: SessionId,
        entry: SubEntry,
        msg: Arc<Message>,
        /// The member was connected when it was picked (else it was picked for want of one).
        online: bool,
        /// How many members were picked for it before this one and found gone.
        repicks: u8,
    },
}

impl Outbox {
    /// True when there is nothing to route and no one to settle.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.waiting.is_empty()
    }

    /// True when `shard` has something to route in it.
    pub fn is_for(&self, shard: usize) -> bool {
        self.targets & (1 << shard) != 0
    }

    /// The shards that have something to route in it, one bit each.
    pub fn targets(&self) -> u32 {
        self.targets
    }

    /// The connections to [`Broker::settle`] in the shard the outbox came from, once every
    /// other shard has routed it.
    pub fn waiting(&self) -> &[ConnId] {
        &self.waiting
    }

    /// The shard the outbox came from.
    pub fn from(&self) -> usize {
        self.from
    }
}

/// A retained message a new subscription matched while the message was still on its way to
/// this shard: the routing on its way delivers it as the retained one (see
/// [`PendingShards`](crate::session::PendingShards)).
#[derive(Debug)]
pub(crate) struct EarlyRetained {
    pub sid: SessionId,
    /// The subscription that asked for it.
    pub entry: SubEntry,
    pub msg: Arc<Message>,
}

/// The result of [`Broker::route_remote`].
#[derive(Debug, Default)]
pub struct Routed {
    /// The store batch that holds what routing recorded, in sync mode.
    pub ticket: Option<Ticket>,
    /// What routing left for yet other shards: members picked again because the one picked
    /// first was gone. Route it like any outbox.
    pub outbox: Outbox,
    /// Where routing stopped for a backed-up connection, if it did: the first item not routed.
    pub stopped_at: Option<usize>,
}

impl<O: Outlet> Broker<O> {
    /// Takes what this shard's calls left for the other shards (see the module doc).
    pub fn take_outbox(&mut self) -> Outbox {
        let mut outbox = std::mem::take(&mut self.outbox);
        outbox.from = self.shard();
        outbox
    }

    /// Routes what shard `outbox.from()` left: its messages to this shard's subscriptions,
    /// and the shared-group deliveries picked for this shard's sessions.
    pub fn route_remote(&mut self, now: Instant, outbox: &Outbox) -> Routed {
        self.route_remote_from(now, outbox, 0, false)
    }

    /// [`Broker::route_remote`] from item `first` of the outbox on; with `stop`, it stops after
    /// an item made a drop for a backed-up connection ([`Broker::dropped_for_backpressure`])
    /// and reports in [`Routed::stopped_at`] where to go on once that connection has drained,
    /// as a connection's batch stops in its own shard.
    pub fn route_remote_from(
        &mut self,
        now: Instant,
        outbox: &Outbox,
        first: usize,
        stop: bool,
    ) -> Routed {
        let me = self.shard();
        let mark = self.journal.mark();
        // What this routing leaves is returned on its own, apart from anything this shard's
        // own calls left and the edge has yet to take.
        let own = std::mem::take(&mut self.outbox);
        let mut stopped_at = None;
        for (i, item) in outbox.items.iter().enumerate().skip(first) {
            if stop && self.dropped_for_backpressure() {
                stopped_at = Some(i);
                break;
            }
            match item {
                Remote::Message { msg, shards } if shards & (1 << me) != 0 => {
                    let as_retained = self.take_early_retained(msg);
                    self.route_subscriptions(now, msg, &as_retained);
                    msg.pending_shards.done(me);
                }
                Remote::Member {
                    group,
                    sid,
                    entry,
                    msg,
                    online,
                    repicks,
                } if sid.shard() == me => {
                    let here = self.sessions.get(sid).map(|s| s.conn.is_some());
                    // Gone, or gone offline since it was picked as a connected member: pick
                    // again, avoiding it, at most once per shard so that it cannot go round for
                    // ever. (A member picked offline, for want of a connected one, keeps it.)
                    let changed = here.is_none() || (*online && here == Some(false));
                    let repick = changed && usize::from(*repicks) < self.shards();
                    if repick
                        && self.deliver_to_group(now, *group, msg.clone(), Some(*sid), repicks + 1)
                    {
                        continue;
                    }
                    if here.is_some() {
                        self.deliver_member(now, *group, *sid, *entry, msg.clone());
                    } else {
                        self.stats.dropped += 1;
                    }
                }
                _ => {}
            }
        }
        let mut left = std::mem::replace(&mut self.outbox, own);
        left.from = me;
        Routed {
            ticket: self.journal.wait_since(mark),
            outbox: left,
            stopped_at,
        }
    }

    /// Marks retained message `msg`, about to enter the retained store, as still to be routed
    /// by every other shard.
    pub(crate) fn mark_pending_elsewhere(&self, msg: &Message) {
        if self.shards() > 1 {
            msg.pending_shards.set_all_but(self.shards(), self.shard());
        }
    }

    /// The sessions whose new subscription's retained message is `msg`, still on its way here
    /// when they subscribed; forgets them.
    fn take_early_retained(&mut self, msg: &Arc<Message>) -> Vec<SessionId> {
        if self.early_retained.is_empty() {
            return Vec::new();
        }
        let mut sessions = Vec::new();
        self.early_retained.retain(|early| {
            let this = Arc::ptr_eq(&early.msg, msg);
            if this {
                sessions.push(early.sid);
            }
            !this
        });
        sessions
    }

    /// Leaves `msg` for the other shards holding subscriptions that match it; a retained
    /// message goes to every other shard, each of which must clear its bit of the message's
    /// [`PendingShards`](crate::session::PendingShards).
    pub(crate) fn route_elsewhere(&mut self, msg: &Arc<Message>) {
        let (count, me) = (self.shards(), self.shard());
        if count == 1 {
            return;
        }
        let shards = match msg.pending_shards.is_pending_anywhere() {
            true => all_but(count, me),
            false => self.global.shards_matching(&msg.topic) & !(1 << me),
        };
        if shards != 0 {
            self.outbox.targets |= shards;
            let msg = msg.clone();
            self.outbox.items.push(Remote::Message { msg, shards });
        }
    }

    /// Leaves `msg` for member `sid` of `group`, which lives in another shard (`online`: it
    /// was connected when picked).
    pub(crate) fn send_to_member_elsewhere(
        &mut self,
        group: GroupId,
        sid: SessionId,
        entry: SubEntry,
        msg: Arc<Message>,
        online: bool,
        repicks: u8,
    ) {
        self.outbox.targets |= 1 << sid.shard();
        self.outbox.items.push(Remote::Member {
            group,
            sid,
            entry,
            msg,
            online,
            repicks,
        });
    }

    /// True when acknowledgments must wait for other shards' routing: sync durability with
    /// more than one shard.
    pub(crate) fn acks_wait_for_other_shards(&self) -> bool {
        self.shards() > 1 && self.journal.mode == crate::PersistMode::Sync
    }

    /// How many items the outbox holds, to see whether routing a message left any.
    pub(crate) fn outbox_len(&self) -> usize {
        self.outbox.items.len()
    }

    /// Notes that `conn` holds an acknowledgment waiting for this outbox.
    pub(crate) fn wait_for_outbox(&mut self, conn: ConnId) {
        if !self.outbox.waiting.contains(&conn) {
            self.outbox.waiting.push(conn);
        }
    }
}

/// A connection that has not sent CONNECT, taken out of one shard to be placed in another.
pub struct Unplaced<O> {
    id: ConnId,
    conn: Box<Conn<O>>,
}

impl<O: Outlet> Broker<O> {
    /// Takes connection `id` out of this shard, to be given to the shard of its client id with
    /// [`Broker::adopt_conn`] before its CONNECT is handed over. `None` when it is not open
    /// here, or already has a session (a connection moves only before CONNECT, when it holds
    /// nothing but its outlet: no session, no timer, nothing held).
    pub fn take_conn(&mut self, id: ConnId) -> Option<Unplaced<O>> {
        let c = self.conns.get(&id)?;
        if c.session.is_some() || !c.held.is_empty() {
            return None;
        }
        let conn = self.conns.remove(&id).expect("just found");
        Some(Unplaced { id, conn })
    }

    /// Gives this shard a connection taken from another with [`Broker::take_conn`]; it keeps its
    /// id.
    pub fn adopt_conn(&mut self, unplaced: Unplaced<O>) {
        self.conns.insert(unplaced.id, unplaced.conn);
    }
}
