//! The publish path, inbound side, in the order a message travels:
//!
//! `handle_publish` (topic alias, reserved topics, payload format, receive quota, QoS 2
//! duplicate check) → `accept_message` (retained store) → `route` (match the index and the
//! shared groups, dedupe per session at the highest QoS, lower the QoS) → `deliver`
//! (`publish_out.rs`). Also PUBREL (end of inbound QoS 2) and will publication.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_codec::{Ack, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Violation};

use crate::broker::{Broker, CloseHow, ConnId, Outlet};
use crate::durable::REMOTE;
use crate::frame::{AckKind, Frame};
use crate::persist::{StoreOp, Ticket};
use crate::session::{Delivery, GroupId, Message, SessionId, SubEntry};

/// Topics under this prefix belong to the broker [MQTT-4.7.2-1]; clients cannot publish there.
const SYS_PREFIX: &str = "$SYS";

/// One subscription matched by a routed message: the session, the subscription's QoS, its
/// Retain As Published option and its Subscription Identifier.
pub(crate) type RouteHit = (SessionId, QoS, bool, Option<u32>);

impl<O: Outlet> Broker<O> {
    /// Handles PUBLISH from a connected client.
    pub(crate) fn handle_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        mut p: Publish,
    ) {
        self.stats.publish_received += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let version = c.version;

        // Topic alias [MQTT-3.3.2-7..12]: 0 and values above our maximum are invalid.
        // (Through `get_mut`: a PUBLISH without properties keeps none boxed.)
        if let Some(alias) = p.properties.get_mut().and_then(|p| p.topic_alias.take()) {
            if alias == 0 || alias > self.config.topic_alias_maximum {
                return self.violation(
                    now,
                    conn,
                    Violation::new(
                        "MQTT-3.3.2-9",
                        ReasonCode::TOPIC_ALIAS_INVALID,
                        "Topic Alias 0 or above Topic Alias Maximum",
                    ),
                );
            }
            if p.topic.is_empty() {
                match c.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(topic) => p.topic = topic.clone(),
                    None => {
                        return self.violation(
                            now,
                            conn,
                            Violation::protocol(
                                "MQTT-3.3.2.3.4",
                                "Topic Alias not yet mapped to a topic",
                            ),
                        );
                    }
                }
            } else {
                c.aliases
                    .get_or_insert_with(Box::default)
                    .inbound
                    .insert(alias, p.topic.clone());
            }
        }
        if p.topic.is_empty() {
            return self.violation(
                now,
                conn,
                Violation::protocol(
                    "MQTT-3.3.2-1",
                    "PUBLISH with empty topic and no Topic Alias",
                ),
            );
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6] Only the server sends Subscription Identifiers.
            return self.violation(
                now,
                conn,
                Violation::protocol(
                    "MQTT-3.3.4-6",
                    "PUBLISH from a client carries a Subscription Identifier",
                ),
            );
        }
        if p.retain && !self.config.retain_available {
            // [MQTT-3.3.1-14] Retain not supported.
            return self.violation(
                now,
                conn,
                Violation::new(
                    "MQTT-3.3.1-14",
                    ReasonCode::RETAIN_NOT_SUPPORTED,
                    "retained PUBLISH while Retain Available is 0",
                ),
            );
        }

        // Inbound QoS 2: a remembered id is a duplicate; count against our Receive Maximum.
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
            if s.has_inbound_qos2(id) {
                // [MQTT-4.3.3-10] Not routed again; acknowledge again.
                return self.send(conn, Frame::Ack(AckKind::PubRec, id, ReasonCode::SUCCESS));
            }
            if s.inbound_qos2_count() >= usize::from(self.config.receive_maximum) {
                // [MQTT-3.3.4-9] More unacknowledged QoS 2 PUBLISH than our Receive Maximum.
                return self.violation(
                    now,
                    conn,
                    Violation::new(
                        "MQTT-3.3.4-9",
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        "more QoS 2 PUBLISH in flight than Receive Maximum",
                    ),
                );
            }
        }

        if self.journal.failing && p.qos != QoS::AtMostOnce && !version.is_v5() {
            // The store cannot take new durable work and 3.1.1 has no negative acknowledgment:
            // disconnect so the client keeps the message and resends it later.
            let how = CloseHow {
                disconnect: None,
                will: true,
                why: "store failing",
            };
            return self.close_conn(now, conn, how);
        }
        let mark = self.journal.mark();
        let outbox = self.outbox_len();
        // The retained store's batch, when the message changed it.
        let mut retained_wait = None;
        let refusal = self.check_publish(&p, version);
        if refusal.is_none() {
            let msg = Message {
                expires_at: p
                    .properties
                    .message_expiry_interval
                    .map(|secs| now + Duration::from_secs(secs.into())),
                topic: std::mem::take(&mut p.topic),
                // Kept as given: the transport detaches it from its read buffer (see
                // `Broker::handle_packet`).
                payload: std::mem::take(&mut p.payload),
                qos: p.qos,
                retain: p.retain,
                properties: std::mem::take(&mut p.properties),
                publisher: Some(sid),
                shared_properties: Default::default(),
                pending_shards: Default::default(),
            };
            retained_wait = self.accept_message(now, Arc::new(msg));
        } else if p.qos == QoS::AtMostOnce
            && version.is_v5()
            && refusal == Some(ReasonCode::PAYLOAD_FORMAT_INVALID)
        {
            // QoS 0 has no acknowledgment to carry the reason.
            return self.violation(
                now,
                conn,
                Violation::new(
                    "MQTT-3.3.2-4",
                    ReasonCode::PAYLOAD_FORMAT_INVALID,
                    "payload is not UTF-8 although Payload Format Indicator is 1",
                ),
            );
        }

        // Acknowledge: a refusal's reason travels in the ack (v5); v3 has no code for it.
        let reason = refusal
            .filter(|_| version.is_v5())
            .unwrap_or(ReasonCode::SUCCESS);
        // Left for other shards too: the ack also waits for the batch they record it in.
        let remote = p.qos != QoS::AtMostOnce
            && self.outbox_len() > outbox
            && self.acks_wait_for_other_shards();
        if remote {
            self.wait_for_outbox(conn);
        }
        let marked = |wait: Option<Ticket>| match remote {
            true => Some(wait.unwrap_or(0) | REMOTE),
            false => wait,
        };
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                // The acknowledgment waits until what routing recorded is durable.
                let wait = marked(self.journal.wait_since(mark).max(retained_wait));
                self.send_durable(conn, Frame::Ack(AckKind::PubAck, id, reason), wait)
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if !reason.is_error()
                    && let Some(s) = self.sessions.get_mut(&sid)
                {
                    s.open_inbound_qos2([id.get()]);
                    if s.persists() {
                        let client_id = s.client_id.clone();
                        self.journal.push(StoreOp::PutInbound {
                            client_id,
                            packet_id: id.get(),
                        });
                    }
                }
                let wait = marked(self.journal.wait_since(mark).max(retained_wait));
                self.send_durable(conn, Frame::Ack(AckKind::PubRec, id, reason), wait)
            }
            _ => {}
        }
    }

    /// Why a valid PUBLISH is not routed, if it is not.
    fn check_publish(&self, p: &Publish, version: ProtocolVersion) -> Option<ReasonCode> {
        if self.journal.failing && p.qos != QoS::AtMostOnce {
            return Some(ReasonCode::QUOTA_EXCEEDED);
        }
        if p.topic.starts_with(SYS_PREFIX) {
            return Some(ReasonCode::NOT_AUTHORIZED);
        }
        // [MQTT-3.3.2-4] Payload Format Indicator 1 promises UTF-8.
        if version.is_v5()
            && p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            return Some(ReasonCode::PAYLOAD_FORMAT_INVALID);
        }
        None
    }

    /// Handles PUBREL: the end of an inbound QoS 2 flow.
    pub(crate) fn handle_pubrel(&mut self, _now: Instant, conn: ConnId, sid: SessionId, a: Ack) {
        let reason = if self.end_inbound_qos2(sid, a.packet_id) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(conn, Frame::Ack(AckKind::PubComp, a.packet_id, reason));
    }

    /// Ends the inbound QoS 2 flow `id` of session `sid` (PUBREL, or a PUBREC of 0x80 or
    /// above), in memory and in the store; false if no such flow was open.
    pub(crate) fn end_inbound_qos2(&mut self, sid: SessionId, id: PacketId) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let known = s.release_inbound_qos2(id);
        if known && s.persists() {
            let client_id = s.client_id.clone();
            self.journal.push(StoreOp::DeleteInbound {
                client_id,
                packet_id: id.get(),
            });
        }
        known
    }

    /// Stores a retained message if asked, then routes the message to subscribers. Returns the
    /// store batch an acknowledgment of the message must wait for, beyond this shard's own,
    /// when the retained store changed (sync mode only).
    pub(crate) fn accept_message(&mut self, now: Instant, msg: Arc<Message>) -> Option<Ticket> {
        let wait = match msg.retain {
            true => self.store_retained(&msg, true),
            false => None,
        };
        self.route(now, msg);
        wait
    }

    /// Makes `msg` the retained message of its topic, or deletes that one when the payload is
    /// empty [MQTT-3.3.1-5..7], recording the change for the store if `persist`; returns the
    /// batch that holds the record (sync mode only). With several shards the message is first
    /// marked as still to be routed by the others (see `remote.rs`), before any SUBSCRIBE can
    /// find it in the tree.
    pub(crate) fn store_retained(&mut self, msg: &Arc<Message>, persist: bool) -> Option<Ticket> {
        self.mark_pending_elsewhere(msg);
        let mut retained = self.global.retained_mut();
        let mark = retained.journal.mark();
        let op = if msg.payload.is_empty() {
            let removed = retained.tree.remove(&msg.topic).is_some();
            removed.then(|| StoreOp::DeleteRetained(msg.topic.clone()))
        } else {
            retained.tree.insert(&msg.topic, msg.clone());
            Some(StoreOp::PutRetained(msg.clone()))
        };
        if let Some(op) = op.filter(|_| persist) {
            retained.journal.push(op);
        }
        let wait = retained.journal.wait_since(mark);
        self.retained_changed |= retained.journal.mark() > mark;
        wait
    }

    /// Sends `msg` to every matching subscription: once per session at the highest matching QoS
    /// with all matching Subscription Identifiers [MQTT-3.3.4-2..5], and to one member of each
    /// matching shared group.
    pub(crate) fn route(&mut self, now: Instant, msg: Arc<Message>) {
        self.route_subscriptions(now, &msg, &[]);
        // Before the shared groups' picks, so that a session in another shard gets the message
        // through its own subscriptions first, then through a group, as in this shard.
        self.route_elsewhere(&msg);
        let mut groups: Vec<GroupId> = Vec::new();
        if let Some(shared) = self.global.shared() {
            shared
                .index
                .for_each_match(&msg.topic, |g, ()| groups.push(g));
        }
        for g in groups {
            self.deliver_to_group(now, g, msg.clone(), None, 0);
        }
    }

    /// Sends `msg` to the sessions of this shard whose subscriptions match it, once per session
    /// at the highest matching QoS with all matching Subscription Identifiers
    /// [MQTT-3.3.4-2..5]. Shared groups are not looked at. The sessions in `as_retained`
    /// subscribed while the message was on its way to this shard: their copy goes out as the
    /// retained message of their new subscription (RETAIN = 1).
    pub(crate) fn route_subscriptions(
        &mut self,
        now: Instant,
        msg: &Arc<Message>,
        as_retained: &[SessionId],
    ) {
        // The list of matches (left empty by the last call) is kept for its capacity: a
        // fan-out to a thousand sessions does not allocate it again for every message.
        let mut hits = std::mem::take(&mut self.route_hits);
        let publisher = msg.publisher;
        let filters = self.index.for_each_match(&msg.topic, |sid, e| {
            // [MQTT-3.8.3-3] No Local: not to the publisher's own session.
            if e.options.no_local && Some(sid) == publisher {
                return;
            }
            hits.push((sid, e.options.qos, e.options.retain_as_published, e.sub_id));
        });

        // A session's overlapping subscriptions are merged below, which needs its matches next
        // to each other; the matches of one filter name each session once.
        if filters > 1 {
            hits.sort_unstable_by_key(|h| h.0);
        }
        let mut i = 0;
        while i < hits.len() {
            let sid = hits[i].0;
            let (mut qos, mut rap, mut sub_ids) = (QoS::AtMostOnce, false, Vec::new());
            while i < hits.len() && hits[i].0 == sid {
                qos = qos.max(hits[i].1);
                rap |= hits[i].2;
                sub_ids.extend(hits[i].3);
                i += 1;
            }
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            // [MQTT-3.3.1-9] v3.1.1 clears RETAIN on forwarded messages; v5 keeps it with
            // Retain As Published [MQTT-3.3.1-12/13].
            let retain = (s.version.is_v5() && rap && msg.retain) || as_retained.contains(&sid);
            if !s.version.is_v5() {
                sub_ids.clear();
            }
            let d = Delivery {
                qos: msg.qos.min(qos),
                retain,
                sub_ids,
                group: None,
                seq: 0,
                msg: msg.clone(),
            };
            self.deliver(now, sid, d);
        }
        hits.clear();
        self.route_hits = hits;
    }

    /// Sends `msg` to one member of shared group `g`, round-robin, preferring connected members
    /// and never `avoid` (a member that just left); a member in another shard gets it through
    /// the outbox, `repicks` telling how many members were picked for it before. False when
    /// the group has no member to take it.
    pub(crate) fn deliver_to_group(
        &mut self,
        now: Instant,
        g: GroupId,
        msg: Arc<Message>,
        avoid: Option<SessionId>,
        repicks: u8,
    ) -> bool {
        // Picked under the shared groups' read lock, delivered after it is released.
        let pick = self
            .global
            .shared()
            .and_then(|shared| shared.pick(g, avoid));
        let Some((sid, entry, online)) = pick else {
            return false;
        };
        if sid.shard() != self.shard() {
            self.send_to_member_elsewhere(g, sid, entry, msg, online, repicks);
        } else {
            self.deliver_member(now, g, sid, entry, msg);
        }
        true
    }

    /// Sends `msg` to session `sid` of this shard as group `g`'s member with `entry`.
    pub(crate) fn deliver_member(
        &mut self,
        now: Instant,
        g: GroupId,
        sid: SessionId,
        entry: SubEntry,
        msg: Arc<Message>,
    ) {
        let v5 = self.sessions.get(&sid).is_some_and(|s| s.version.is_v5());
        let retain = v5 && entry.options.retain_as_published && msg.retain;
        let d = Delivery::for_subscription(msg, entry, v5, retain, Some(g));
        self.deliver(now, sid, d);
    }

    /// Publishes the will of session `sid` (taking it) as if its client had published it.
    pub(crate) fn publish_will(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.will_at = None;
        let Some(w) = s.will.take().map(|w| *w) else {
            return;
        };
        self.persist_session(sid);
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        tracing::debug!(client_id = %s.client_id, topic = w.will.topic, "publishing will");
        if w.will.topic.starts_with(SYS_PREFIX) {
            return;
        }
        let mut properties = w.will.properties;
        if let Some(p) = properties.get_mut() {
            p.will_delay_interval = None;
        }
        let msg = Message {
            expires_at: properties
                .message_expiry_interval
                .map(|secs| now + Duration::from_secs(secs.into())),
            topic: w.will.topic,
            payload: w.will.payload,
            qos: w.will.qos,
            retain: w.will.retain && self.config.retain_available,
            properties,
            publisher: Some(sid),
            shared_properties: Default::default(),
            pending_shards: Default::default(),
        };
        // Nothing acknowledges a will, so nothing waits for its retained record.
        self.accept_message(now, Arc::new(msg));
    }
}
