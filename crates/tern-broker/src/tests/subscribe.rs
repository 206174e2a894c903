use std::sync::Arc;

use tern_codec::*;

use super::harness::*;
use crate::Global;

/// v5: [MQTT-2.2.1-6] [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.8.4-7]
/// [MQTT-3.9.3-1] [MQTT-3.9.3-2] [MQTT-4.7.1-1]
#[test]
fn suback_has_one_code_per_filter_in_order() {
    let mut h = Harness::new();
    let c = h.v5("c");
    let filters = vec![
        (
            "a".to_string(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..Default::default()
            },
        ),
        ("a/#/b".to_string(), SubscriptionOptions::default()),
        (
            "b/+".to_string(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        ),
    ];
    c.send(
        &mut h,
        Packet::Subscribe(Subscribe {
            packet_id: pid(3),
            properties: Default::default(),
            filters,
        }),
    );
    let Some(Out::Packet(Packet::SubAck(ack))) = c.next() else {
        panic!()
    };
    assert_eq!(ack.packet_id, pid(3));
    assert_eq!(
        ack.reasons,
        vec![
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_1
        ]
    );
    assert_eq!(ReasonCode::TOPIC_FILTER_INVALID.to_v3_suback(), 0x80);
}

/// v3.1.1: [MQTT-3.8.4-3] (the replacement only; re-sent retained messages are not checked)
#[test]
fn resubscribing_replaces_the_subscription() {
    let mut h = Harness::new();
    let c = h.v4("c");
    c.subscribe(&mut h, "t", QoS::ExactlyOnce);
    c.subscribe(&mut h, "t", QoS::AtMostOnce);
    let p = h.v4("p");
    p.publish(&mut h, publish("t", "x", QoS::ExactlyOnce, 1));
    let got = c.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
}

/// v5: [MQTT-2.2.1-6] [MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4] [MQTT-3.10.4-5]
/// [MQTT-3.10.4-6] [MQTT-3.11.3-1] [MQTT-3.11.3-2]
#[test]
fn unsubscribe_stops_delivery_and_reports_each_filter() {
    let mut h = Harness::new();
    let c = h.v5("c");
    c.subscribe(&mut h, "t", QoS::AtMostOnce);
    c.send(
        &mut h,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            properties: Default::default(),
            filters: vec!["t".into(), "nope".into()],
        }),
    );
    assert_eq!(
        c.packets(),
        vec![Packet::UnsubAck(UnsubAck {
            packet_id: pid(4),
            properties: Default::default(),
            reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
        })]
    );
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::AtMostOnce, 0));
    assert!(c.publishes().is_empty());
}

/// v5: no numbered statement (section 4.8.2: each message goes to one member of the group).
#[test]
fn shared_subscriptions_round_robin_among_members() {
    let mut h = Harness::new();
    let a = h.v5("a");
    let b = h.v4("b");
    a.subscribe(&mut h, "$share/g/job/+", QoS::AtLeastOnce);
    b.subscribe(&mut h, "$share/g/job/+", QoS::AtLeastOnce);
    let solo = h.v5("solo");
    solo.subscribe(&mut h, "job/#", QoS::AtMostOnce);
    let p = h.v5("p");
    for i in 1..=4 {
        p.publish(&mut h, publish("job/1", "x", QoS::AtLeastOnce, i));
    }
    assert_eq!(a.publishes().len(), 2);
    assert_eq!(b.publishes().len(), 2);
    assert_eq!(
        solo.publishes().len(),
        4,
        "non-shared subscriptions see every message"
    );
}

/// v5: no numbered statement (section 4.8.2 lets a QoS 1 message go to another member; the
/// QoS 2 case, [MQTT-4.8.2-4] [MQTT-4.8.2-5], is not implemented: see docs/conformance.md).
#[test]
fn shared_messages_of_a_member_that_leaves_go_to_another_member() {
    let mut h = Harness::new();
    let a = h.v5("a");
    let b = h.v5("b");
    a.subscribe(&mut h, "$share/g/t", QoS::AtLeastOnce);
    b.subscribe(&mut h, "$share/g/t", QoS::AtLeastOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "1", QoS::AtLeastOnce, 1));
    p.publish(&mut h, publish("t", "2", QoS::AtLeastOnce, 2));
    let to_a = a.publishes();
    let to_b = b.publishes();
    assert_eq!((to_a.len(), to_b.len()), (1, 1));
    // a goes away without acknowledging: its message is handed to b.
    h.broker.handle_closed(h.now, a.conn);
    let redelivered = b.publishes();
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].payload, to_a[0].payload);
}

/// v5: [MQTT-4.8.2-4] [MQTT-4.8.2-5]
#[test]
fn a_shared_qos2_message_already_sent_stays_with_its_member() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "a", true);
    c.properties.session_expiry_interval = Some(60);
    let (a, _) = h.connect(c);
    let b = h.v5("b");
    a.subscribe(&mut h, "$share/g/t", QoS::ExactlyOnce);
    b.subscribe(&mut h, "$share/g/t", QoS::ExactlyOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "1", QoS::ExactlyOnce, 1));
    let sent = a.publishes();
    assert_eq!(sent.len(), 1, "round robin starts with a");
    // a drops before PUBREC: b must not get the message; a gets it again on reconnect.
    h.broker.handle_closed(h.now, a.conn);
    assert!(b.publishes().is_empty());
    let (a, ack) = h.connect(connect(ProtocolVersion::V5, "a", false));
    assert!(ack.session_present);
    let again = a.publishes();
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    assert_eq!(again[0].packet_id, sent[0].packet_id);
    // This time a reconnected with Session Expiry 0: its session ends with the connection,
    // and nobody gets the message.
    h.broker.handle_closed(h.now, a.conn);
    assert!(!h.broker.by_client_id.contains_key("a"));
    assert!(b.publishes().is_empty());
}

/// v5: no numbered statement (retained messages are not sent to a Shared Subscription).
#[test]
fn shared_subscriptions_get_no_retained_messages() {
    let mut h = Harness::new();
    let p = h.v5("p");
    let mut m = publish("t", "x", QoS::AtMostOnce, 0);
    m.retain = true;
    p.publish(&mut h, m);
    let a = h.v5("a");
    a.subscribe(&mut h, "$share/g/t", QoS::AtMostOnce);
    assert!(a.publishes().is_empty());
}

/// v5: [MQTT-3.8.3-4]
#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut h = Harness::new();
    let a = h.v5("a");
    let filters = vec![(
        "$share/g/t".to_string(),
        SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
    )];
    a.send(
        &mut h,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters,
        }),
    );
    assert_eq!(a.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn shared_subscription_from_a_v311_client_is_accepted() {
    let mut h = Harness::new();
    let a = h.v4("a");
    let ack = a.subscribe(&mut h, "$share/g/t", QoS::AtMostOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::SUCCESS]);
    let p = h.v4("p");
    p.publish(&mut h, publish("t", "x", QoS::AtMostOnce, 0));
    assert_eq!(a.publishes().len(), 1);
}

/// v5: [MQTT-3.10.4-1] [MQTT-3.10.4-2]
#[test]
fn unsubscribing_removes_the_member_from_its_group() {
    let mut h = Harness::new();
    let a = h.v5("a");
    let b = h.v5("b");
    a.subscribe(&mut h, "$share/g/t", QoS::AtMostOnce);
    b.subscribe(&mut h, "$share/g/t", QoS::AtMostOnce);
    a.send(
        &mut h,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: Default::default(),
            filters: vec!["$share/g/t".into()],
        }),
    );
    a.take();
    let p = h.v5("p");
    for _ in 0..3 {
        p.publish(&mut h, publish("t", "x", QoS::AtMostOnce, 0));
    }
    assert!(a.publishes().is_empty());
    assert_eq!(b.publishes().len(), 3);
}

/// A group's members may live in different shards: whether a member is connected, which the
/// pick of the next member prefers, is what its own shard last recorded, seen by every shard.
#[test]
fn a_members_connection_is_seen_by_the_picks_of_every_shard() {
    let global = Arc::new(Global::with_shards(2));
    let (mut a, mut b) = (Harness::shard(&global, 0), Harness::shard(&global, 1));
    let in_a = a.v5("in-a");
    in_a.subscribe(&mut a, "$share/g/t", QoS::AtLeastOnce);
    let mut c = connect(ProtocolVersion::V5, "in-b", true);
    c.properties.session_expiry_interval = Some(60);
    let (in_b, _) = b.connect(c.clone());
    in_b.subscribe(&mut b, "$share/g/t", QoS::AtLeastOnce);
    let sid_a = *a.broker.sessions.keys().next().expect("one session");
    let sid_b = *b.broker.sessions.keys().next().expect("one session");
    let g = *global.shared_mut().groups.keys().next().expect("one group");
    let picks = |n| -> Vec<_> {
        let shared = global.shared_mut();
        (0..n)
            .map(|_| shared.pick(g, None).expect("a member").0)
            .collect()
    };
    let both = picks(4);
    assert_eq!(both.iter().filter(|&&s| s == sid_b).count(), 2, "{both:?}");

    // The member in b loses its connection; its session stays.
    b.broker.handle_closed(b.now, in_b.conn);
    assert_eq!(picks(3), vec![sid_a; 3]);
    // Back, and taken over by a new connection: connected all along.
    let (again, _) = b.connect(Connect {
        clean_start: false,
        ..c.clone()
    });
    let (_, _) = b.connect(Connect {
        clean_start: false,
        ..c
    });
    assert!(again.is_closed());
    assert_eq!(picks(4).iter().filter(|&&s| s == sid_b).count(), 2);
    // The member in a goes.
    a.broker.handle_closed(a.now, in_a.conn);
    assert_eq!(picks(2), vec![sid_b; 2]);
}
