//! Subscribing again, unsubscribing and shared subscriptions, per protocol version.

use bytes::Bytes;
use tern_codec::*;

use super::harness::*;
use crate::BrokerConfig;

/// v3.1.1: [MQTT-2.3.1-7] [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4] [MQTT-3.10.4-5]
/// [MQTT-3.10.4-6]
#[test]
fn v311_unsubscribe_stops_delivery_and_answers_once() {
    let mut h = Harness::new();
    let c = h.v4("c");
    c.subscribe(&mut h, "t/+", QoS::AtMostOnce);
    c.subscribe(&mut h, "t/#", QoS::AtMostOnce);
    c.send(
        &mut h,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            properties: Default::default(),
            // "t/#" is removed (exact match); "T/+" and "t/" match no filter character by
            // character, and "nope" matches nothing: still one UNSUBACK.
            filters: vec!["T/+".into(), "t/#".into(), "t/".into(), "nope".into()],
        }),
    );
    let got = c.packets();
    assert_eq!(got.len(), 1, "{got:?}");
    let Packet::UnsubAck(ack) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(ack.packet_id, pid(4));
    let p = h.v4("p");
    p.publish(&mut h, publish("t/a/b", "x", QoS::AtMostOnce, 0));
    assert!(c.publishes().is_empty(), "t/# no longer delivers");
    p.publish(&mut h, publish("t/a", "x", QoS::AtMostOnce, 0));
    assert_eq!(c.publishes().len(), 1, "t/+ was kept");
    // Unsubscribing from nothing at all still gets its UNSUBACK.
    c.send(
        &mut h,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(5),
            properties: Default::default(),
            filters: vec!["none".into()],
        }),
    );
    assert!(matches!(&c.packets()[..], [Packet::UnsubAck(a)] if a.packet_id == pid(5)));
}

/// Subscribes to `t` again at QoS 0 while one QoS 1 message to `t` is in flight and two more
/// wait in the queue (`max_inflight` 1), and checks what follows.
fn resubscribe_mid_flow(version: ProtocolVersion) {
    let mut h = Harness::with(BrokerConfig {
        max_inflight: 1,
        ..Default::default()
    });
    let p = h.connect(connect(version, "p", true)).0;
    let mut r = publish("t", "retained", QoS::AtLeastOnce, 1);
    r.retain = true;
    p.publish(&mut h, r);
    let c = h.connect(connect(version, "c", true)).0;
    c.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let first = c.publishes();
    assert_eq!(first.len(), 1);
    assert!(first[0].retain);
    p.publish(&mut h, publish("t", "1", QoS::AtLeastOnce, 2));
    p.publish(&mut h, publish("t", "2", QoS::AtLeastOnce, 3));
    assert!(c.publishes().is_empty(), "window full: both wait");
    // Replace the subscription with a QoS 0 one.
    let ack = c.subscribe(&mut h, "t", QoS::AtMostOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::SUCCESS]);
    let again = c.publishes();
    assert_eq!(
        again.len(),
        1,
        "{version:?}: the retained message is re-sent"
    );
    assert!(again[0].retain);
    assert_eq!(&again[0].payload[..], b"retained");
    assert_eq!(again[0].qos, QoS::AtMostOnce, "at the new QoS");
    // The messages accepted under the old subscription are not lost.
    c.send(
        &mut h,
        Packet::PubAck(Ack::new(first[0].packet_id.unwrap())),
    );
    let next = c.publishes();
    assert_eq!(next.len(), 1);
    assert_eq!(&next[0].payload[..], b"1");
    c.send(&mut h, Packet::PubAck(Ack::new(next[0].packet_id.unwrap())));
    let next = c.publishes();
    assert_eq!(next.len(), 1);
    assert_eq!(&next[0].payload[..], b"2");
    c.send(&mut h, Packet::PubAck(Ack::new(next[0].packet_id.unwrap())));
    // New messages follow the new subscription: QoS 0, and a single copy.
    p.publish(&mut h, publish("t", "3", QoS::ExactlyOnce, 4));
    let last = c.publishes();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].qos, QoS::AtMostOnce);
}

/// v3.1.1: [MQTT-3.8.4-3]
#[test]
fn v311_resubscribing_replaces_resends_retained_and_loses_nothing() {
    resubscribe_mid_flow(ProtocolVersion::V3_1_1);
}

/// v5: [MQTT-3.8.4-3] [MQTT-3.8.4-4]
#[test]
fn v5_resubscribing_replaces_resends_retained_and_loses_nothing() {
    resubscribe_mid_flow(ProtocolVersion::V5);
}

/// v3.1.1: [MQTT-3.3.5-2]
#[test]
fn v311_publish_to_sys_gets_a_positive_ack_and_goes_nowhere() {
    let mut h = Harness::new();
    let s = h.v4("s");
    s.subscribe(&mut h, "$SYS/#", QoS::AtLeastOnce);
    s.take();
    let p = h.v4("p");
    p.publish(
        &mut h,
        publish("$SYS/broker/x", "fake", QoS::AtLeastOnce, 1),
    );
    p.publish(
        &mut h,
        publish("$SYS/broker/x", "fake", QoS::ExactlyOnce, 2),
    );
    let acks = p.packets();
    assert_eq!(
        acks,
        vec![
            Packet::PubAck(Ack::new(pid(1))),
            Packet::PubRec(Ack::new(pid(2)))
        ]
    );
    p.send(&mut h, Packet::PubRel(Ack::new(pid(2))));
    assert_eq!(p.packets(), vec![Packet::PubComp(Ack::new(pid(2)))]);
    assert!(!p.is_closed());
    assert!(s.publishes().is_empty(), "not delivered");
}

/// v5: [MQTT-4.8.2-3]
#[test]
fn shared_members_get_the_qos_each_was_granted() {
    let mut h = Harness::new();
    let a = h.v5("a");
    let b = h.v5("b");
    let c = h.v5("c");
    a.subscribe(&mut h, "$share/g/t", QoS::AtMostOnce);
    b.subscribe(&mut h, "$share/g/t", QoS::AtLeastOnce);
    c.subscribe(&mut h, "$share/g/t", QoS::ExactlyOnce);
    let p = h.v5("p");
    for i in 1..=3 {
        p.publish(&mut h, publish("t", "x", QoS::ExactlyOnce, i));
    }
    let (ga, gb, gc) = (a.publishes(), b.publishes(), c.publishes());
    assert_eq!((ga.len(), gb.len(), gc.len()), (1, 1, 1));
    assert_eq!(ga[0].qos, QoS::AtMostOnce);
    assert_eq!(ga[0].packet_id, None);
    assert_eq!(gb[0].qos, QoS::AtLeastOnce);
    assert_eq!(gc[0].qos, QoS::ExactlyOnce);
    // A QoS 0 message stays QoS 0 for every member.
    for _ in 0..3 {
        p.publish(&mut h, publish("t", "y", QoS::AtMostOnce, 0));
    }
    for m in [&a, &b, &c] {
        let got = m.publishes();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, QoS::AtMostOnce);
    }
}

/// v5: [MQTT-3.3.4-5]
#[test]
fn each_copy_carries_the_identifier_of_its_own_subscription() {
    let mut h = Harness::new();
    let c = h.v5("c");
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    // One non-shared and two shared subscriptions match "a/b", each with its own identifier:
    // the client gets one copy per subscription.
    c.subscribe_with(&mut h, "a/#", opts, Some(3));
    c.subscribe_with(&mut h, "$share/g1/a/+", opts, Some(7));
    c.subscribe_with(&mut h, "$share/g2/a/b", opts, Some(11));
    let p = h.v5("p");
    p.publish(&mut h, publish("a/b", "x", QoS::AtLeastOnce, 1));
    // The identifiers of each copy received, sorted.
    let ids = |c: &Client| {
        let mut ids: Vec<Vec<u32>> = c
            .publishes()
            .into_iter()
            .map(|m| m.properties.subscription_identifiers.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&c), vec![vec![3], vec![7], vec![11]]);
    // A copy for a subscription without an identifier carries none.
    let d = h.v5("d");
    d.subscribe_with(&mut h, "a/#", opts, None);
    d.subscribe_with(&mut h, "$share/g3/a/b", opts, Some(5));
    p.publish(&mut h, publish("a/b", "y", QoS::AtLeastOnce, 2));
    assert_eq!(ids(&d), vec![vec![], vec![5]]);
}

/// v5: [MQTT-3.1.2-4] [MQTT-3.1.4-4]
#[test]
fn v5_clean_start_discards_the_stored_session() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "c", true);
    c.properties.session_expiry_interval = Some(300);
    let (old, _) = h.connect(c.clone());
    old.subscribe(&mut h, "t", QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, old.conn);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "queued", QoS::AtLeastOnce, 1));
    // Clean Start = 1 over the stored session (which holds a subscription and a message).
    let (new, ack) = h.connect(c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    assert!(
        new.publishes().is_empty(),
        "the queued message went with it"
    );
    p.publish(&mut h, publish("t", "live", QoS::AtLeastOnce, 2));
    assert!(new.publishes().is_empty(), "the old subscription is gone");
    // And the new session is the one stored from now on.
    new.subscribe(&mut h, "u", QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, new.conn);
    let (again, ack) = h.connect(connect(ProtocolVersion::V5, "c", false));
    assert!(ack.session_present);
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 3));
    p.publish(&mut h, publish("u", "y", QoS::AtLeastOnce, 4));
    let got = again.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "u");
}

/// v5: [MQTT-3.1.2-15]
#[test]
fn v5_retained_will_reaches_a_later_subscriber_as_retained() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "c", true);
    let mut w = will("will/r", "gone");
    w.retain = true;
    c.will = Some(w);
    let (c, _) = h.connect(c);
    h.broker.handle_closed(h.now, c.conn);
    let late = h.v5("late");
    late.subscribe(&mut h, "will/r", QoS::AtLeastOnce);
    let got = late.publishes();
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(got[0].payload, Bytes::from_static(b"gone"));
}
