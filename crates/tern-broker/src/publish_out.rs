//! The publish path, outbound side: from a [`Delivery`] for a session to a PUBLISH on its
//! connection. Owns the in-flight window (Receive Maximum), packet identifiers, the queue,
//! outbound topic aliases, the client's Maximum Packet Size, message expiry on the way out,
//! the acknowledgments PUBACK / PUBREC / PUBCOMP from the client, resending on resume and the
//! re-dispatch of shared-subscription messages when a member goes away.

use std::time::Instant;

use tern_codec::{Ack, Packet, PacketId, Publish, QoS, ReasonCode};

use crate::broker::{Broker, Conn, ConnId, Outlet};
use crate::session::{Delivery, Inflight, OutState, Session, SessionId};
use crate::{BrokerConfig, Stats};

impl<O: Outlet> Broker<O> {
    /// Hands `d` to session `sid`: sent now if the window allows, else queued (bounded).
    pub(crate) fn deliver(&mut self, now: Instant, sid: SessionId, d: Delivery) {
        let Broker {
            sessions,
            conns,
            config,
            stats,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&sid) else {
            return;
        };
        let conn = s.conn.and_then(|c| conns.get_mut(&c));
        match conn {
            Some(c) if d.qos == QoS::AtMostOnce => {
                send_delivery(c, d, None, false, now, stats);
            }
            Some(c) if s.queue.is_empty() && s.inflight.len() < window(c, config) => {
                start_flight(c, s, d, now, stats)
            }
            Some(_) => {
                if !s.enqueue(d, config, now) {
                    stats.dropped += 1;
                    tracing::debug!(client_id = %s.client_id, "queue full, message dropped");
                }
            }
            None => {
                let keep = d.qos != QoS::AtMostOnce || config.queue_qos0_offline;
                if !(keep && s.enqueue(d, config, now)) {
                    stats.dropped += 1;
                }
            }
        }
    }

    /// After CONNECT resumed or created session `sid`: resend what is in flight, then drain.
    pub(crate) fn resume_outbound(&mut self, now: Instant, sid: SessionId) {
        let Broker {
            sessions,
            conns,
            stats,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&sid) else {
            return;
        };
        let Some(c) = s.conn.and_then(|c| conns.get_mut(&c)) else {
            return;
        };
        for i in 0..s.inflight.len() {
            let f = s.inflight[i].clone();
            match f.state {
                OutState::AwaitPuback | OutState::AwaitPubrec => {
                    // [MQTT-3.3.1-1] A resend carries DUP = 1 and the same identifier.
                    if !send_delivery(c, f.delivery, Some(f.id), true, now, stats) {
                        s.take_inflight(f.id);
                    }
                }
                OutState::AwaitPubcomp => crate::broker::send_on(c, Packet::PubRel(Ack::new(f.id))),
            }
        }
        self.drain(now, sid);
    }

    /// Moves queued messages into flight while the window has room.
    pub(crate) fn drain(&mut self, now: Instant, sid: SessionId) {
        let Broker {
            sessions,
            conns,
            config,
            stats,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&sid) else {
            return;
        };
        let Some(c) = s.conn.and_then(|c| conns.get_mut(&c)) else {
            return;
        };
        while s.inflight.len() < window(c, config) {
            let Some(d) = s.dequeue() else { break };
            if d.qos == QoS::AtMostOnce {
                send_delivery(c, d, None, false, now, stats);
            } else {
                start_flight(c, s, d, now, stats);
            }
        }
    }

    /// PUBACK from the client: a QoS 1 delivery is done.
    pub(crate) fn handle_puback(&mut self, now: Instant, _conn: ConnId, sid: SessionId, a: Ack) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.inflight_mut(a.packet_id)
            .is_some_and(|f| f.state == OutState::AwaitPuback)
        {
            s.take_inflight(a.packet_id);
            self.drain(now, sid);
        }
    }

    /// PUBREC from the client: answer PUBREL, or end the flow on an error reason.
    pub(crate) fn handle_pubrec(&mut self, now: Instant, conn: ConnId, sid: SessionId, a: Ack) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(f) = s.inflight_mut(a.packet_id) else {
            return self.send(
                conn,
                Packet::PubRel(Ack::with_reason(
                    a.packet_id,
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                )),
            );
        };
        if a.reason.is_error() {
            // [MQTT-4.3.3-4] A failed PUBREC ends the flow; the identifier is free again.
            s.take_inflight(a.packet_id);
            return self.drain(now, sid);
        }
        f.state = OutState::AwaitPubcomp;
        self.send(conn, Packet::PubRel(Ack::new(a.packet_id)));
    }

    /// PUBCOMP from the client: a QoS 2 delivery is done.
    pub(crate) fn handle_pubcomp(&mut self, now: Instant, _conn: ConnId, sid: SessionId, a: Ack) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.inflight_mut(a.packet_id)
            .is_some_and(|f| f.state == OutState::AwaitPubcomp)
        {
            s.take_inflight(a.packet_id);
            self.drain(now, sid);
        }
    }

    /// Session `sid` lost its connection: its shared-subscription messages not yet received by
    /// the client (queued, or sent without PUBACK/PUBREC) go to other members of their group.
    pub(crate) fn redispatch_shared(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mut moved = Vec::new();
        let mut i = 0;
        while i < s.inflight.len() {
            let f = &s.inflight[i];
            if f.delivery.group.is_some() && f.state != OutState::AwaitPubcomp {
                let id = f.id;
                moved.push(s.take_inflight(id).expect("entry just seen").delivery);
            } else {
                i += 1;
            }
        }
        let queue = std::mem::take(&mut s.queue);
        for d in queue {
            if d.group.is_some() {
                s.queued_bytes -= d.msg.payload.len();
                moved.push(d);
            } else {
                s.queue.push_back(d);
            }
        }
        for d in moved {
            self.redeliver_shared(now, d, Some(sid));
        }
    }

    /// Gives a shared-subscription delivery to another member of its group; if there is none,
    /// back to `from` (kept, not lost).
    pub(crate) fn redeliver_shared(&mut self, now: Instant, d: Delivery, from: Option<SessionId>) {
        let Some(g) = d.group else { return };
        if d.msg.expired(now) {
            return;
        }
        if !self.deliver_to_group(now, g, d.msg.clone(), from)
            && let Some(s) = from.and_then(|sid| self.sessions.get_mut(&sid))
            && !s.enqueue(d, &self.config, now)
        {
            self.stats.dropped += 1;
        }
    }
}

/// The outbound in-flight limit of a connection: the client's Receive Maximum [MQTT-3.3.4-7]
/// capped by our `max_inflight`.
fn window<O>(c: &Conn<O>, config: &BrokerConfig) -> usize {
    usize::from(c.client_receive_max.min(config.max_inflight).max(1))
}

/// Starts the QoS 1/2 flow of `d`: takes an identifier and sends.
fn start_flight<O: Outlet>(
    c: &mut Conn<O>,
    s: &mut Session,
    d: Delivery,
    now: Instant,
    stats: &mut Stats,
) {
    let Some(id) = s.allocate_id() else {
        // Every identifier is in use: wait in the queue.
        s.queue.push_front(d);
        return;
    };
    let state = if d.qos == QoS::AtLeastOnce {
        OutState::AwaitPuback
    } else {
        OutState::AwaitPubrec
    };
    if send_delivery(c, d.clone(), Some(id), false, now, stats) {
        s.inflight.push_back(Inflight {
            id,
            delivery: d,
            state,
        });
    } else {
        s.ids_in_use.remove(&id.get());
    }
}

/// Builds and sends the PUBLISH for `d`; `false` when it was dropped instead (expired, or
/// larger than the client's Maximum Packet Size [MQTT-3.1.2-25]).
fn send_delivery<O: Outlet>(
    c: &mut Conn<O>,
    d: Delivery,
    id: Option<PacketId>,
    dup: bool,
    now: Instant,
    stats: &mut Stats,
) -> bool {
    let msg = &d.msg;
    let mut properties = msg.properties.clone();
    if let Some(at) = msg.expires_at {
        // [MQTT-3.3.2-6] Forward the remaining lifetime; drop what has expired.
        let Some(left) = at.checked_duration_since(now).filter(|l| !l.is_zero()) else {
            stats.dropped += 1;
            return false;
        };
        properties.message_expiry_interval = Some(left.as_secs_f64().ceil() as u32);
    }
    properties.subscription_identifiers = d.sub_ids;
    let mut p = Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: msg.topic.clone(),
        packet_id: id,
        properties,
        payload: msg.payload.clone(),
    };
    let v5 = c.version.is_v5();
    let mut new_alias = None;
    if v5 && c.client_alias_max > 0 {
        match c.aliases_out.get(&msg.topic) {
            Some(&alias) => {
                p.properties.topic_alias = Some(alias);
                p.topic.clear();
            }
            None if c.aliases_out.len() < usize::from(c.client_alias_max) => {
                let alias = c.aliases_out.len() as u16 + 1;
                p.properties.topic_alias = Some(alias);
                new_alias = Some(alias);
            }
            None => {}
        }
    }
    let packet = Packet::Publish(p);
    if v5
        && c.client_max_packet != u32::MAX
        && packet.encoded_len(c.version) > c.client_max_packet as usize
    {
        tracing::debug!(
            topic = msg.topic,
            "message larger than the client's Maximum Packet Size dropped"
        );
        stats.dropped += 1;
        return false;
    }
    if let Some(alias) = new_alias {
        c.aliases_out.insert(msg.topic.clone(), alias);
    }
    stats.publish_sent += 1;
    c.outlet.send(packet);
    true
}
