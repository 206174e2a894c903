//! Ack-after-durable and restore, with a model store that applies the core's operations.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tern_codec::*;

use super::harness::*;
use crate::persist::{SessionRecord, Snapshot, StoreOp, StoredDelivery, StoredSession};
use crate::{BrokerConfig, PersistMode};

/// What a store would hold after applying the operations in order.
#[derive(Default)]
struct Model {
    retained: BTreeMap<String, std::sync::Arc<crate::session::Message>>,
    sessions: HashMap<String, SessionRecord>,
    deliveries: BTreeMap<(String, u64), StoredDelivery>,
    inbound: BTreeMap<(String, u16), ()>,
}

impl Model {
    /// Takes every pending batch from the broker, applies it and reports it durable.
    fn commit(&mut self, h: &mut Harness) {
        let mut last = None;
        while let Some((t, ops)) = h.broker.poll_persist() {
            for op in ops {
                self.apply(op);
            }
            // A retained batch may carry a lower ticket than the shard's own.
            last = last.max(Some(t));
        }
        if let Some(t) = last {
            h.broker.handle_persisted(t);
        }
    }

    fn apply(&mut self, op: StoreOp) {
        match op {
            StoreOp::PutRetained(m) => {
                self.retained.insert(m.topic.clone(), m);
            }
            StoreOp::DeleteRetained(t) => {
                self.retained.remove(&t);
            }
            StoreOp::PutSession(r) => {
                self.sessions.insert(r.client_id.to_string(), r);
            }
            StoreOp::DeleteSession(c) => {
                self.sessions.remove(&*c);
                self.deliveries.retain(|k, _| k.0 != *c);
                self.inbound.retain(|k, _| k.0 != *c);
            }
            StoreOp::PutDelivery {
                client_id,
                seq,
                delivery,
            } => {
                self.deliveries
                    .insert((client_id.to_string(), seq), delivery);
            }
            StoreOp::DeleteDelivery { client_id, seq } => {
                self.deliveries.remove(&(client_id.to_string(), seq));
            }
            StoreOp::PutInbound {
                client_id,
                packet_id,
            } => {
                self.inbound.insert((client_id.to_string(), packet_id), ());
            }
            StoreOp::DeleteInbound {
                client_id,
                packet_id,
            } => {
                self.inbound.remove(&(client_id.to_string(), packet_id));
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            retained: self.retained.values().cloned().collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(c, r)| StoredSession {
                    record: r.clone(),
                    deliveries: self
                        .deliveries
                        .iter()
                        .filter(|(k, _)| k.0 == *c)
                        .map(|(k, d)| (k.1, d.clone()))
                        .collect(),
                    inbound: self
                        .inbound
                        .keys()
                        .filter(|k| k.0 == *c)
                        .map(|k| k.1)
                        .collect(),
                })
                .collect(),
        }
    }
}

fn durable_harness(mode: PersistMode) -> Harness {
    let mut h = Harness::with(BrokerConfig::default());
    h.broker.set_persistence(mode);
    h
}

/// A sync-mode broker where the persistent QoS 2 subscriber "sub" (its record committed) has
/// just been sent "x" on "t" at QoS 2 by the v5 client "p": returns them with the model store.
fn qos2_publish_to_persistent_subscriber() -> (Harness, Model, Client, Client) {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let sub = subscriber(&mut h, QoS::ExactlyOnce);
    model.commit(&mut h);
    sub.take();
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::ExactlyOnce, 1));
    (h, model, sub, p)
}

fn persistent(h: &mut Harness, id: &str, clean: bool) -> (Client, ConnAck) {
    let mut c = connect(ProtocolVersion::V5, id, clean);
    c.properties.session_expiry_interval = Some(3600);
    h.connect(c)
}

/// A persistent v5 session "sub", connected and subscribed to "t" at `qos`.
fn subscriber(h: &mut Harness, qos: QoS) -> Client {
    let (sub, _) = persistent(h, "sub", true);
    sub.subscribe(h, "t", qos);
    sub
}

#[test]
fn puback_waits_until_the_queued_message_is_durable() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let sub = subscriber(&mut h, QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, sub.conn);
    model.commit(&mut h);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    p.send(&mut h, Packet::PingReq);
    assert!(
        p.take().is_empty(),
        "neither the PUBACK nor the PINGRESP behind it yet"
    );
    model.commit(&mut h);
    assert_eq!(
        p.packets(),
        vec![Packet::PubAck(Ack::new(pid(1))), Packet::PingResp]
    );
    assert_eq!(model.deliveries.len(), 1);
}

#[test]
fn puback_is_immediate_when_routing_recorded_nothing() {
    let mut h = durable_harness(PersistMode::Sync);
    let s = h.v5("s");
    s.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    assert_eq!(p.packets(), vec![Packet::PubAck(Ack::new(pid(1)))]);
    assert_eq!(
        s.publishes().len(),
        1,
        "a clean session's delivery does not wait"
    );
}

#[test]
fn retained_publish_is_acknowledged_after_commit() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let p = h.v4("p");
    let mut m = publish("r", "x", QoS::ExactlyOnce, 4);
    m.retain = true;
    p.publish(&mut h, m);
    assert!(p.take().is_empty());
    model.commit(&mut h);
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(4)))]);
    assert!(model.retained.contains_key("r"));
}

#[test]
fn batch_mode_records_but_never_holds() {
    let mut h = durable_harness(PersistMode::Batch);
    let sub = subscriber(&mut h, QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, sub.conn);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    assert_eq!(p.packets(), vec![Packet::PubAck(Ack::new(pid(1)))]);
    assert!(h.broker.poll_persist().is_some());
}

#[test]
fn off_mode_records_nothing() {
    let mut h = durable_harness(PersistMode::Off);
    subscriber(&mut h, QoS::AtLeastOnce);
    assert!(h.broker.poll_persist().is_none());
}

#[test]
fn publish_to_a_persistent_session_waits_for_its_record() {
    let (mut h, mut model, sub, _p) = qos2_publish_to_persistent_subscriber();
    assert!(sub.take().is_empty());
    model.commit(&mut h);
    let got = sub.publishes();
    assert_eq!(got.len(), 1);
    let rec = model.deliveries.values().next().expect("delivery recorded");
    assert_eq!(
        rec.inflight.map(|f| f.0),
        got[0].packet_id,
        "its identifier is durable before it is sent"
    );
    sub.send(&mut h, Packet::PubRec(Ack::new(got[0].packet_id.unwrap())));
    model.commit(&mut h);
    assert_eq!(
        sub.packets(),
        vec![Packet::PubRel(Ack::new(got[0].packet_id.unwrap()))]
    );
    sub.send(&mut h, Packet::PubComp(Ack::new(got[0].packet_id.unwrap())));
    model.commit(&mut h);
    assert!(model.deliveries.is_empty(), "completed delivery deleted");
}

#[test]
fn restore_brings_back_sessions_queues_in_flight_inbound_and_retained() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let (sub, _) = persistent(&mut h, "sub", true);
    sub.subscribe_with(
        &mut h,
        "t/#",
        SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..Default::default()
        },
        Some(7),
    );
    let (p, _) = persistent(&mut h, "p", true);
    model.commit(&mut h);
    for i in 1..=3 {
        p.publish(
            &mut h,
            publish("t/a", ["1", "2", "3"][i as usize - 1], QoS::AtLeastOnce, i),
        );
    }
    // An inbound QoS 2 message not yet released, and a retained message.
    p.publish(&mut h, publish("t/q2", "q2", QoS::ExactlyOnce, 9));
    let mut r = publish("t/r", "kept", QoS::AtLeastOnce, 10);
    r.retain = true;
    p.publish(&mut h, r);
    model.commit(&mut h);
    let first = sub.publishes();
    assert!(first.len() >= 3);
    // The subscriber acknowledges the first; then the broker "crashes".
    sub.send(
        &mut h,
        Packet::PubAck(Ack::new(first[0].packet_id.unwrap())),
    );
    model.commit(&mut h);

    let mut h2 = durable_harness(PersistMode::Sync);
    h2.now = h.now + Duration::from_secs(5);
    h2.broker.restore(h2.now, model.snapshot());
    let (sub2, ack) = h2.connect(connect(ProtocolVersion::V5, "sub", false));
    assert!(ack.session_present);
    let again = sub2.publishes();
    let payloads: Vec<&[u8]> = again.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, vec![&b"2"[..], b"3", b"q2", b"kept"]);
    assert!(
        again[..3].iter().all(|p| p.dup),
        "in-flight messages resent with DUP"
    );
    assert_eq!(
        again[0].packet_id, first[1].packet_id,
        "with their original identifiers"
    );
    assert_eq!(again[0].properties.subscription_identifiers, vec![7]);
    // The publisher's unreleased QoS 2 id is remembered: a resend is not routed again.
    let (p2, ack) = h2.connect(connect(ProtocolVersion::V5, "p", false));
    assert!(ack.session_present);
    let mut dup = publish("t/q2", "q2", QoS::ExactlyOnce, 9);
    dup.dup = true;
    p2.publish(&mut h2, dup);
    assert_eq!(p2.packets(), vec![Packet::PubRec(Ack::new(pid(9)))]);
    assert!(sub2.publishes().is_empty());
    // Retained messages are back.
    let late = h2.v5("late");
    late.subscribe(&mut h2, "t/r", QoS::AtMostOnce);
    assert_eq!(&late.publishes()[0].payload[..], b"kept");
}

#[test]
fn restored_session_that_was_connected_sends_its_will_and_expires() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let mut c = connect(ProtocolVersion::V5, "w", true);
    c.properties.session_expiry_interval = Some(10);
    c.will = Some(will("will/w", "bye"));
    h.connect(c);
    model.commit(&mut h);
    let mut h2 = durable_harness(PersistMode::Sync);
    let (watcher, _) = persistent(&mut h2, "watch", true);
    watcher.subscribe(&mut h2, "will/#", QoS::AtLeastOnce);
    h2.broker.restore(h2.now, model.snapshot());
    let mut m2 = Model::default();
    m2.commit(&mut h2);
    assert_eq!(
        watcher.publishes().len(),
        1,
        "the will of the connection the crash cut"
    );
    h2.advance(Duration::from_secs(11));
    assert!(
        !h2.broker.by_client_id.contains_key("w"),
        "expired 10 s after restart"
    );
}

#[test]
fn expired_session_in_the_store_is_dropped_at_restore() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let (c, _) = persistent(&mut h, "gone", true);
    h.broker.handle_closed(h.now, c.conn);
    model.commit(&mut h);
    let mut rec = model.sessions.get_mut("gone").unwrap().clone();
    rec.expires_at = Some(h.now);
    model.sessions.insert("gone".into(), rec);
    let mut h2 = durable_harness(PersistMode::Sync);
    h2.now = h.now + Duration::from_secs(1);
    h2.broker.restore(h2.now, model.snapshot());
    assert!(!h2.broker.by_client_id.contains_key("gone"));
    let (_, ack) = h2.connect(connect(ProtocolVersion::V5, "gone", false));
    assert!(!ack.session_present);
}

#[test]
fn a_failed_commit_nacks_v5_disconnects_v3_and_refuses_new_work() {
    let mut h = durable_harness(PersistMode::Sync);
    let sub = subscriber(&mut h, QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, sub.conn);
    let p5 = h.v5("p5");
    let p3 = h.v4("p3");
    p5.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    p3.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 2));
    let (t, _) = h.broker.poll_persist().unwrap();
    h.broker.handle_persist_failed(h.now, t);
    assert_eq!(
        p5.packets(),
        vec![Packet::PubAck(Ack::with_reason(
            pid(1),
            ReasonCode::UNSPECIFIED_ERROR
        ))]
    );
    assert_eq!(p3.take(), vec![Out::Closed]);
    p5.publish(&mut h, publish("t", "y", QoS::AtLeastOnce, 3));
    assert_eq!(
        p5.packets(),
        vec![Packet::PubAck(Ack::with_reason(
            pid(3),
            ReasonCode::QUOTA_EXCEEDED
        ))]
    );
    h.broker.handle_persisted(t);
    p5.publish(&mut h, publish("t", "z", QoS::AtLeastOnce, 4));
    let mut model = Model::default();
    model.commit(&mut h);
    assert_eq!(p5.packets(), vec![Packet::PubAck(Ack::new(pid(4)))]);
}

/// [MQTT-4.3.3-9] A PUBREC of 0x80 ends the QoS 2 flow: the publisher may reuse the packet
/// identifier at once, and its next message with that identifier is a new message, routed and
/// acknowledged, not a duplicate of the refused one.
#[test]
fn a_qos2_id_refused_by_a_failed_commit_is_free_for_a_new_message() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let sub = subscriber(&mut h, QoS::ExactlyOnce);
    h.broker.handle_closed(h.now, sub.conn);
    model.commit(&mut h);
    let (p, _) = persistent(&mut h, "p", true);
    model.commit(&mut h);
    p.publish(&mut h, publish("t", "first", QoS::ExactlyOnce, 7));
    let (t, _) = h.broker.poll_persist().expect("a batch to commit");
    h.broker.handle_persist_failed(h.now, t);
    assert_eq!(
        p.packets(),
        vec![Packet::PubRec(Ack::with_reason(
            pid(7),
            ReasonCode::UNSPECIFIED_ERROR
        ))]
    );
    // The store recovers; the client sends a new message with the same identifier.
    h.broker.handle_persisted(t);
    model.commit(&mut h);
    p.publish(&mut h, publish("t", "second", QoS::ExactlyOnce, 7));
    model.commit(&mut h);
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(7)))]);
    let stored: Vec<_> = model
        .deliveries
        .values()
        .map(|d| d.msg.payload.clone())
        .collect();
    assert!(
        stored.iter().any(|payload| &payload[..] == b"second"),
        "the second message was routed to the offline session: {stored:?}"
    );
    assert_eq!(
        model.inbound.keys().collect::<Vec<_>>(),
        vec![&("p".to_string(), 7)],
        "one open inbound flow, the second message's"
    );
}

/// A QoS 2 PUBLISH to a persistent session is sent only once its record is durable, even
/// when the commit it waited for failed: were it sent and the broker to crash, the client
/// would hold a QoS 2 flow the restarted broker knows nothing of, and take a later message
/// with the same identifier for a duplicate. It stays held until the store, which keeps the
/// failed operations, commits them; a PINGRESP held behind it goes out at once.
#[test]
fn a_failed_commit_keeps_qos2_publishes_to_persistent_sessions_held_until_a_success() {
    let (mut h, mut model, sub, p) = qos2_publish_to_persistent_subscriber();
    sub.send(&mut h, Packet::PingReq);
    let (t, ops) = h.broker.poll_persist().expect("the delivery's record");
    h.broker.handle_persist_failed(h.now, t);
    assert_eq!(
        p.packets(),
        vec![Packet::PubRec(Ack::with_reason(
            pid(1),
            ReasonCode::UNSPECIFIED_ERROR
        ))]
    );
    assert_eq!(
        sub.packets(),
        vec![Packet::PingResp],
        "the PUBLISH waits for its record"
    );
    // The store retries the same operations and succeeds.
    for op in ops {
        model.apply(op);
    }
    h.broker.handle_persisted(t);
    let got = sub.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"x");
    assert_eq!(model.deliveries.len(), 1, "sent once its record is stored");
}

#[test]
fn held_packets_are_dropped_when_the_connection_closes() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    let sub = subscriber(&mut h, QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, sub.conn);
    model.commit(&mut h);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    h.broker.handle_closed(h.now, p.conn);
    model.commit(&mut h);
    assert_eq!(
        p.take(),
        vec![Out::Closed],
        "no acknowledgment after the close"
    );
}

/// v3.1.1: [MQTT-4.8.0-2] A store that cannot commit while an inbound PUBLISH is processed is a
/// transient error: the connection the PUBLISH came on is closed, and no other.
#[test]
fn v311_a_failing_store_closes_only_the_publishers_connection() {
    let mut h = durable_harness(PersistMode::Sync);
    let mut model = Model::default();
    // A persistent subscriber, offline: QoS 1 messages to "t" must be stored for it.
    let (sub, _) = h.connect(connect(ProtocolVersion::V3_1_1, "sub", false));
    sub.subscribe(&mut h, "t", QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, sub.conn);
    model.commit(&mut h);
    let bystander = h.v4("bystander");
    bystander.subscribe(&mut h, "b", QoS::AtMostOnce);

    // The commit the PUBACK waits for fails: no PUBACK, the publisher is closed.
    let p1 = h.v4("p1");
    p1.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    let (t, _) = h.broker.poll_persist().expect("a batch to commit");
    h.broker.handle_persist_failed(h.now, t);
    assert_eq!(p1.take(), vec![Out::Closed]);
    // While the store fails, a QoS 1 PUBLISH cannot be made durable: closed at once.
    let p2 = h.v4("p2");
    p2.publish(&mut h, publish("t", "y", QoS::AtLeastOnce, 2));
    assert_eq!(p2.take(), vec![Out::Closed]);

    // Every other connection is untouched and still served.
    assert!(!bystander.is_closed());
    bystander.publish(&mut h, publish("b", "still here", QoS::AtMostOnce, 0));
    let got = bystander.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"still here");
}
