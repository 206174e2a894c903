//! The publish path, outbound side: from a [`Delivery`] for a session to a PUBLISH on its
//! connection. Owns the in-flight window (Receive Maximum), packet identifiers, the queue,
//! outbound topic aliases, the client's Maximum Packet Size, message expiry on the way out,
//! the acknowledgments PUBACK / PUBREC / PUBCOMP from the client, resending on resume, the
//! re-dispatch of shared-subscription messages when a member goes away, and the store records
//! of deliveries to persistent sessions.

use std::time::Instant;

use tern_codec::{Ack, PacketId, QoS, ReasonCode};

use crate::broker::{BackedUp, Broker, Conn, ConnId, Outlet};
use crate::durable::{Journal, send_after, stored};
use crate::frame::{AckKind, Frame, OutPublish};
use crate::persist::StoreOp;
use crate::session::{Delivery, Inflight, OutState, Session, SessionId};
use crate::{BrokerConfig, Stats};

/// One session and its connection, borrowed together with what the send path touches.
pub(crate) struct Lane<'a, O> {
    s: &'a mut Session,
    c: Option<(ConnId, &'a mut Conn<O>)>,
    config: &'a BrokerConfig,
    stats: &'a mut Stats,
    journal: &'a mut Journal,
    holding: &'a mut Vec<ConnId>,
    backpressure: &'a mut BackedUp,
}

impl<O: Outlet> Broker<O> {
    /// The send path of session `sid`.
    pub(crate) fn lane(&mut self, sid: SessionId) -> Option<Lane<'_, O>> {
        let Broker {
            sessions,
            conns,
            config,
            stats,
            journal,
            holding,
            backpressure,
            ..
        } = self;
        let s = sessions.get_mut(&sid)?;
        let c = s
            .conn
            .and_then(|id| conns.get_mut(&id).map(|c| (id, &mut **c)));
        Some(Lane {
            s,
            c,
            config,
            stats,
            journal,
            holding,
            backpressure,
        })
    }

    /// Hands `d` to session `sid`: sent now if the window allows, else queued (bounded).
    pub(crate) fn deliver(&mut self, now: Instant, sid: SessionId, d: Delivery) {
        if let Some(mut lane) = self.lane(sid) {
            lane.deliver(d, now);
        }
    }

    /// After CONNECT resumed or created session `sid`: resend what is in flight, then drain.
    pub(crate) fn resume_outbound(&mut self, now: Instant, sid: SessionId) {
        if let Some(mut lane) = self.lane(sid) {
            lane.resume(now);
        }
    }

    /// PUBACK from the client: a QoS 1 delivery is done.
    pub(crate) fn handle_puback(&mut self, now: Instant, _conn: ConnId, sid: SessionId, a: Ack) {
        if let Some(mut lane) = self.lane(sid) {
            lane.complete(a.packet_id, OutState::AwaitPuback, now);
        }
    }

    /// PUBREC from the client: answer PUBREL, or end the flow on an error reason.
    pub(crate) fn handle_pubrec(&mut self, now: Instant, _conn: ConnId, sid: SessionId, a: Ack) {
        if let Some(mut lane) = self.lane(sid) {
            lane.pubrec(a, now);
        }
    }

    /// PUBCOMP from the client: a QoS 2 delivery is done.
    pub(crate) fn handle_pubcomp(&mut self, now: Instant, _conn: ConnId, sid: SessionId, a: Ack) {
        if let Some(mut lane) = self.lane(sid) {
            lane.complete(a.packet_id, OutState::AwaitPubcomp, now);
        }
    }

    /// Session `sid` lost its connection: its shared-subscription messages not yet received by
    /// the client (queued, or sent at QoS 1 without PUBACK) go to other members of their group.
    pub(crate) fn redispatch_shared(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mut moved = Vec::new();
        let mut i = 0;
        while i < s.inflight.len() {
            let f = &s.inflight[i];
            // [MQTT-4.8.2-4] A QoS 2 message already sent stays with this member: its delivery
            // is completed when the member reconnects, never handed to another one.
            if f.delivery.group.is_some() && f.delivery.qos != QoS::ExactlyOnce {
                let id = f.id;
                moved.push(s.take_inflight(id).expect("entry just seen").delivery);
            } else {
                i += 1;
            }
        }
        for d in std::mem::take(&mut s.queue) {
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
        let client_id = from
            .and_then(|sid| self.sessions.get(&sid))
            .map(|s| s.client_id.clone());
        if !d.msg.expired(now) && self.deliver_to_group(now, g, d.msg.clone(), from, 0) {
            if let Some(client_id) = client_id.filter(|_| d.seq != 0) {
                self.journal.push(StoreOp::DeleteDelivery {
                    client_id,
                    seq: d.seq,
                });
            }
            return;
        }
        match from.and_then(|sid| self.lane(sid)) {
            Some(mut lane) if !d.msg.expired(now) => lane.enqueue(d, now),
            Some(mut lane) => lane.forget(&d),
            None => {}
        }
    }
}

impl<O: Outlet> Lane<'_, O> {
    /// See [`Broker::deliver`].
    fn deliver(&mut self, mut d: Delivery, now: Instant) {
        if self.s.persists() && d.qos != QoS::AtMostOnce {
            d.seq = self.s.next_seq;
            self.s.next_seq += 1;
        }
        let room = match &self.c {
            Some((_, c)) => {
                self.s.queue.is_empty() && self.s.inflight.len() < window(c, self.config)
            }
            None => false,
        };
        if self.c.is_some() && d.qos == QoS::AtMostOnce {
            // A slow consumer does not make the broker hold QoS 0 messages without bound.
            if let Some((id, c)) = &self.c
                && c.outlet.is_congested()
            {
                self.stats.dropped += 1;
                // Its publishers may wait for it too (see `Broker::take_backpressure`).
                if self.config.pause_publishers_at > 0 {
                    self.backpressure.note(*id, true);
                }
                return;
            }
            if let Some(p) = self.publish(&d, None, false, now) {
                self.send(p, false);
            }
        } else if room {
            self.start_flight(d, now);
        } else if self.c.is_none() && d.qos == QoS::AtMostOnce && !self.config.queue_qos0_offline {
            self.stats.dropped += 1;
        } else {
            self.enqueue(d, now);
        }
    }

    /// Queues `d` within the limits (purging expired messages first when full), recording it.
    fn enqueue(&mut self, d: Delivery, now: Instant) {
        let d = match self.s.enqueue(d, self.config) {
            Ok(()) => return self.record_queued(),
            Err(d) => d,
        };
        for seq in self.s.purge_expired(now) {
            self.delete_record(seq);
        }
        match self.s.enqueue(d, self.config) {
            Ok(()) => self.record_queued(),
            Err(d) => {
                self.stats.dropped += 1;
                tracing::debug!(client_id = %self.s.client_id, "queue full, message dropped");
                self.forget(&d);
                // A full queue is backed up whatever `pause_publishers_at` says: the clients
                // feeding it must wait too, or they keep it full and take the subscriber's turns.
                self.check_backpressure(true);
            }
        }
    }

    fn record_queued(&mut self) {
        self.check_backpressure(false);
        let d = self.s.queue.back().expect("just queued");
        if d.seq != 0 {
            let d = d.clone();
            self.record(&d, None);
        }
    }

    /// Writes the store record of `d` (a delivery to a persistent session), with its flow
    /// state once it is in flight.
    fn record(&mut self, d: &Delivery, inflight: Option<&Inflight>) {
        if d.seq != 0 {
            let delivery = stored(d, inflight);
            self.journal.push(StoreOp::PutDelivery {
                client_id: self.s.client_id.clone(),
                seq: d.seq,
                delivery,
            });
        }
    }

    /// Deletes the store record of a delivery that will not happen.
    fn forget(&mut self, d: &Delivery) {
        self.delete_record(d.seq);
    }

    fn delete_record(&mut self, seq: u64) {
        if seq != 0 {
            self.journal.push(StoreOp::DeleteDelivery {
                client_id: self.s.client_id.clone(),
                seq,
            });
        }
    }

    /// Starts the QoS 1/2 flow of `d`: takes an identifier, records it, sends.
    fn start_flight(&mut self, d: Delivery, now: Instant) {
        let Some(id) = self.s.allocate_id() else {
            // Every identifier is in use: wait in the queue.
            self.s.requeue_front(d);
            return;
        };
        let Some(packet) = self.publish(&d, Some(id), false, now) else {
            self.s.free_id(id);
            return self.forget(&d);
        };
        let state = if d.qos == QoS::AtLeastOnce {
            OutState::AwaitPuback
        } else {
            OutState::AwaitPubrec
        };
        let f = Inflight {
            id,
            delivery: d,
            state,
        };
        self.record(&f.delivery, Some(&f));
        let exactly_once = f.delivery.qos == QoS::ExactlyOnce;
        self.s.inflight.push_back(f);
        // Only QoS 2 waits for its record: were it sent first and the broker to crash before
        // the commit, the message could reach the client twice. QoS 1 allows that, and its
        // record is committed behind it (the publisher's acknowledgment still waits for it).
        self.send(packet, exactly_once);
    }

    /// Moves queued messages into flight while the window has room.
    fn drain(&mut self, now: Instant) {
        let Some((_, c)) = &self.c else { return };
        let w = window(c, self.config);
        while self.s.inflight.len() < w {
            let Some(d) = self.s.dequeue() else { break };
            if d.qos != QoS::AtMostOnce {
                self.start_flight(d, now);
            } else if let Some(p) = self.publish(&d, None, false, now) {
                self.send(p, false);
            }
        }
        self.check_backpressure(false);
    }

    /// Tells the connection's outlet when its queue crosses `pause_publishers_at` (up), or is
    /// `full` and drops messages, or drains to half of `pause_publishers_at` (down), and notes
    /// a backed-up queue for [`Broker::take_backpressure`]. Only a connected session counts:
    /// an offline one does not drain, so waiting for it would only stall its publishers.
    fn check_backpressure(&mut self, full: bool) {
        let at = self.config.pause_publishers_at;
        let Some((id, c)) = &mut self.c else { return };
        if at == 0 {
            return;
        }
        let len = self.s.queue.len();
        if full || len >= at {
            self.backpressure.note(*id, full);
            if !c.backpressure {
                c.backpressure = true;
                c.outlet.set_backpressure(true);
            }
        } else if c.backpressure && len <= at / 2 {
            c.backpressure = false;
            c.outlet.set_backpressure(false);
        }
    }

    /// Resends what is in flight (PUBLISH with DUP = 1, or PUBREL), in order, then drains.
    fn resume(&mut self, now: Instant) {
        let flights: Vec<Inflight> = self.s.inflight.iter().cloned().collect();
        for f in flights {
            match f.state {
                OutState::AwaitPuback | OutState::AwaitPubrec => {
                    match self.publish(&f.delivery, Some(f.id), true, now) {
                        // [MQTT-3.3.1-1] A resend carries DUP = 1 and the same identifier.
                        Some(p) => {
                            let exactly_once = f.delivery.qos == QoS::ExactlyOnce;
                            self.send(p, exactly_once)
                        }
                        None => {
                            self.s.take_inflight(f.id);
                            self.forget(&f.delivery);
                        }
                    }
                }
                OutState::AwaitPubcomp => {
                    self.send(Frame::Ack(AckKind::PubRel, f.id, ReasonCode::SUCCESS), true)
                }
            }
        }
        self.drain(now);
    }

    /// PUBACK or PUBCOMP: the flow of `id` is done if it was waiting for that.
    fn complete(&mut self, id: PacketId, expected: OutState, now: Instant) {
        if self.s.inflight_mut(id).is_some_and(|f| f.state == expected) {
            let f = self.s.take_inflight(id).expect("entry just seen");
            self.forget(&f.delivery);
            self.drain(now);
        }
    }

    /// PUBREC: PUBREL, or the end of the flow on an error reason [MQTT-4.3.3-4].
    fn pubrec(&mut self, a: Ack, now: Instant) {
        let Some(f) = self.s.inflight_mut(a.packet_id) else {
            let reply = Frame::Ack(
                AckKind::PubRel,
                a.packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            );
            return self.send(reply, false);
        };
        if a.reason.is_error() {
            let f = self.s.take_inflight(a.packet_id).expect("entry just seen");
            self.forget(&f.delivery);
            return self.drain(now);
        }
        f.state = OutState::AwaitPubcomp;
        let f = f.clone();
        self.record(&f.delivery, Some(&f));
        self.send(
            Frame::Ack(AckKind::PubRel, a.packet_id, ReasonCode::SUCCESS),
            true,
        );
    }

    /// Sends on the connection, if any; a `durable` packet to a persistent session waits for
    /// everything recorded so far to be committed.
    fn send(&mut self, frame: Frame, durable: bool) {
        let Some((id, c)) = &mut self.c else { return };
        let wait = if durable && self.s.persists() {
            self.journal.barrier()
        } else {
            None
        };
        if send_after(c, frame, wait) {
            self.holding.push(*id);
        }
    }

    /// Builds the PUBLISH for `d`; `None` when it is dropped instead (expired before its first
    /// send, or larger than the client's Maximum Packet Size [MQTT-3.1.2-25]).
    fn publish(
        &mut self,
        d: &Delivery,
        id: Option<PacketId>,
        dup: bool,
        now: Instant,
    ) -> Option<Frame> {
        let (_, c) = self.c.as_mut()?;
        let msg = &d.msg;
        let mut expiry = msg.properties.message_expiry_interval;
        if let Some(at) = msg.expires_at {
            // [MQTT-3.3.2-6] Forward the remaining lifetime; drop what has expired, unless this
            // is a resend: once its PUBLISH has been sent, onward delivery has started and the
            // flow is completed whatever the expiry [MQTT-3.3.2-5] [MQTT-4.3.3-7]. A resend of
            // an expired message carries the shortest lifetime, 1 second.
            let left = at.checked_duration_since(now).filter(|l| !l.is_zero());
            let secs = match left {
                Some(left) => left.as_secs_f64().ceil() as u32,
                None if dup => 1,
                None => {
                    self.stats.dropped += 1;
                    return None;
                }
            };
            expiry = Some(secs);
        }
        let mut p = OutPublish {
            msg: msg.clone(),
            dup,
            qos: d.qos,
            retain: d.retain,
            packet_id: id,
            expiry,
            sub_ids: d.sub_ids.clone(),
            topic_alias: msg.properties.topic_alias,
            with_topic: true,
        };
        let v5 = c.version.is_v5();
        let mut new_alias = None;
        if v5 && c.client_alias_max > 0 {
            let aliases = c.aliases.as_deref().map(|a| &a.outbound);
            match aliases.and_then(|m| m.get(&msg.topic)) {
                Some(&alias) => {
                    p.topic_alias = Some(alias);
                    p.with_topic = false;
                }
                None if aliases.map_or(0, |m| m.len()) < usize::from(c.client_alias_max) => {
                    let alias = aliases.map_or(0, |m| m.len()) as u16 + 1;
                    p.topic_alias = Some(alias);
                    new_alias = Some(alias);
                }
                None => {}
            }
        }
        let packet = Frame::Publish(p);
        if v5
            && c.client_max_packet != u32::MAX
            && packet.encoded_len(c.version) > c.client_max_packet as usize
        {
            tracing::debug!(
                topic = msg.topic,
                "message larger than the client's Maximum Packet Size dropped"
            );
            self.stats.dropped += 1;
            return None;
        }
        if let Some(alias) = new_alias {
            c.aliases
                .get_or_insert_with(Box::default)
                .outbound
                .insert(msg.topic.clone(), alias);
        }
        self.stats.publish_sent += 1;
        Some(packet)
    }
}

/// The outbound in-flight limit of a connection: the client's Receive Maximum [MQTT-3.3.4-7]
/// capped by our `max_inflight`.
fn window<O>(c: &Conn<O>, config: &BrokerConfig) -> usize {
    usize::from(c.client_receive_max.min(config.max_inflight).max(1))
}
