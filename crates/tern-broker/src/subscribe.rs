//! SUBSCRIBE and UNSUBSCRIBE: filter checks, the subscription index and shared groups, and the
//! retained messages a new subscription receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

use tern_codec::topic::parse_filter;
use tern_codec::{
    Packet, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe, Violation,
};

use crate::broker::{Broker, ConnId, Outlet};
use crate::global::{Group, Member};
use crate::remote::EarlyRetained;
use crate::session::{Delivery, Message, SessionId, SubEntry};

impl<O: Outlet> Broker<O> {
    /// Handles SUBSCRIBE: one reason code per filter, SUBACK, then retained messages.
    pub(crate) fn handle_subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        sub: Subscribe,
    ) {
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        if sub_id.is_some() && !self.config.subscription_identifiers {
            return self.violation(
                now,
                conn,
                Violation::new(
                    "MQTT-3.8.2.1.2",
                    ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
                    "Subscription Identifiers are turned off",
                ),
            );
        }
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut retained_for: Vec<(String, SubEntry)> = Vec::new();
        for (filter, options) in &sub.filters {
            let Ok(parsed) = parse_filter(filter) else {
                reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            };
            if parsed.share_group.is_some() && options.no_local {
                // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
                return self.violation(
                    now,
                    conn,
                    Violation::protocol("MQTT-3.8.3-4", "No Local set on a shared subscription"),
                );
            }
            if parsed.share_group.is_some() && !self.config.shared_subscriptions {
                reasons.push(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
                continue;
            }
            if !self.config.wildcard_subscriptions && parsed.filter.contains(['+', '#']) {
                reasons.push(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
                continue;
            }
            let entry = SubEntry {
                options: *options,
                sub_id,
            };
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            // [MQTT-3.8.4-3] A subscription to an existing filter replaces it.
            let existed = s.subscriptions.insert(filter.clone(), entry).is_some();
            self.add_subscription(sid, filter, entry);
            match parsed.share_group {
                Some(_) => {}
                None => {
                    let send = match options.retain_handling {
                        RetainHandling::SendAtSubscribe => true,
                        RetainHandling::SendIfNew => !existed,
                        RetainHandling::DoNotSend => false,
                    };
                    if send {
                        retained_for.push((parsed.filter.to_string(), entry));
                    }
                }
            }
            // [MQTT-3.9.3-1] The granted QoS; we grant what was asked.
            reasons.push(ReasonCode(options.qos as u8));
        }
        self.persist_session(sid);
        self.send(
            conn,
            Packet::SubAck(SubAck {
                packet_id: sub.packet_id,
                properties: Default::default(),
                reasons,
            }),
        );
        // [MQTT-3.3.1-8] Retained messages go out with RETAIN = 1, after the SUBACK.
        for (filter, entry) in retained_for {
            self.send_retained(now, sid, &filter, entry);
        }
    }

    fn send_retained(&mut self, now: Instant, sid: SessionId, filter: &str, entry: SubEntry) {
        let mut found = Vec::new();
        // Read under the retained lock, delivered after it is released.
        self.global.retained().tree.for_each_match(filter, |_, m| {
            if !m.expired(now) {
                found.push(m.clone());
            }
        });
        let me = self.shard();
        for msg in found {
            if msg.pending_shards.is_pending(me) {
                // Still on its way here, where the subscription now is: that routing sends it,
                // as the retained message, so it arrives once and after what its publisher
                // sent before it.
                self.early_retained.push(EarlyRetained { sid, entry, msg });
            } else {
                self.deliver_retained(now, sid, entry, msg);
            }
        }
    }

    /// Sends retained message `msg` to session `sid` for its subscription `entry`.
    fn deliver_retained(
        &mut self,
        now: Instant,
        sid: SessionId,
        entry: SubEntry,
        msg: Arc<Message>,
    ) {
        let v5 = self.sessions.get(&sid).is_some_and(|s| s.version.is_v5());
        let d = Delivery::for_subscription(msg, entry, v5, true, None);
        self.deliver(now, sid, d);
    }

    /// Adds `sid`'s subscription `filter` (as subscribed) to the index or its shared group.
    pub(crate) fn add_subscription(&mut self, sid: SessionId, filter: &str, entry: SubEntry) {
        let Ok(parsed) = parse_filter(filter) else {
            return;
        };
        match parsed.share_group {
            Some(group) => self.join_group(sid, group, parsed.filter, entry),
            None => {
                if self.index.insert(parsed.filter, sid, entry).is_none() {
                    self.global.filter_added(parsed.filter, self.shard());
                }
            }
        }
    }

    fn join_group(&mut self, sid: SessionId, name: &str, filter: &str, entry: SubEntry) {
        let online = self.sessions.get(&sid).is_some_and(|s| s.conn.is_some());
        let key = (name.to_string(), filter.to_string());
        let mut shared = self.global.shared_mut();
        let g = match shared.group_ids.get(&key) {
            Some(&g) => g,
            None => {
                let g = self.global.group_id();
                shared.group_ids.insert(key, g);
                shared.groups.insert(
                    g,
                    Group {
                        members: Vec::new(),
                        cursor: AtomicUsize::new(0),
                    },
                );
                shared.index.insert(filter, g, ());
                g
            }
        };
        let group = shared.groups.get_mut(&g).expect("group just found or made");
        match group.members.iter_mut().find(|m| m.sid == sid) {
            Some(m) => m.entry = entry,
            None => group.members.push(Member {
                sid,
                entry,
                online: AtomicBool::new(online),
            }),
        }
    }

    /// Handles UNSUBSCRIBE: UNSUBACK with a code per filter.
    pub(crate) fn handle_unsubscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: SessionId,
        u: Unsubscribe,
    ) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let existed = self
                .sessions
                .get_mut(&sid)
                .is_some_and(|s| s.subscriptions.remove(filter).is_some());
            if existed {
                self.remove_subscription(sid, filter);
                self.flush_early_retained(now, sid);
                reasons.push(ReasonCode::SUCCESS);
            } else if parse_filter(filter).is_err() {
                reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
            } else {
                reasons.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        self.persist_session(sid);
        // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
        self.send(
            conn,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reasons,
            }),
        );
    }

    /// Sends now the retained messages that `sid`'s new subscriptions left to routing still on
    /// its way (see `remote.rs`), before a subscription goes that the routing would have
    /// needed.
    fn flush_early_retained(&mut self, now: Instant, sid: SessionId) {
        if !self.early_retained.iter().any(|e| e.sid == sid) {
            return;
        }
        let (mine, others) = std::mem::take(&mut self.early_retained)
            .into_iter()
            .partition(|e| e.sid == sid);
        self.early_retained = others;
        for e in mine {
            self.deliver_retained(now, sid, e.entry, e.msg);
        }
    }

    /// Removes `sid`'s subscription `filter` (as subscribed) from the index or its group.
    pub(crate) fn remove_subscription(&mut self, sid: SessionId, filter: &str) {
        let Ok(parsed) = parse_filter(filter) else {
            return;
        };
        match parsed.share_group {
            None => {
                if self.index.remove(parsed.filter, &sid).is_some() {
                    self.global.filter_removed(parsed.filter, self.shard());
                }
            }
            Some(name) => {
                let key = (name.to_string(), parsed.filter.to_string());
                let mut shared = self.global.shared_mut();
                let Some(&g) = shared.group_ids.get(&key) else {
                    return;
                };
                let Some(group) = shared.groups.get_mut(&g) else {
                    return;
                };
                group.members.retain(|m| m.sid != sid);
                if group.members.is_empty() {
                    shared.groups.remove(&g);
                    shared.group_ids.remove(&key);
                    shared.index.remove(parsed.filter, &g);
                } else {
                    let cursor = group.cursor.get_mut();
                    *cursor %= group.members.len();
                }
            }
        }
    }
}
