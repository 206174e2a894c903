use std::time::Duration;

use bytes::Bytes;
use tern_codec::*;

use super::harness::*;

/// v5: [MQTT-2.2.1-5] [MQTT-3.3.4-1] [MQTT-4.3.2-2] [MQTT-4.3.2-4]
#[test]
fn qos1_is_acknowledged_and_delivered_with_a_packet_id() {
    let mut h = Harness::new();
    let sub = h.v5("sub");
    sub.subscribe(&mut h, "a/b", QoS::AtLeastOnce);
    let p = h.v5("pub");
    p.publish(&mut h, publish("a/b", "hello", QoS::AtLeastOnce, 7));
    assert_eq!(p.packets(), vec![Packet::PubAck(Ack::new(pid(7)))]);
    let got = sub.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(&got[0].payload[..], b"hello");
    assert!(got[0].packet_id.is_some());
    assert!(!got[0].dup);
}

/// v3.1.1: [MQTT-3.8.4-6]
#[test]
fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
    let mut h = Harness::new();
    let s0 = h.v4("s0");
    s0.subscribe(&mut h, "t", QoS::AtMostOnce);
    let s2 = h.v4("s2");
    s2.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v4("p");
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    let got = s0.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert_eq!(s2.publishes()[0].qos, QoS::AtLeastOnce);
}

/// v3.1.1: [MQTT-2.3.1-6] [MQTT-3.3.4-1] [MQTT-4.3.3-2]
#[test]
fn qos2_inbound_is_routed_exactly_once_despite_duplicates() {
    let mut h = Harness::new();
    let sub = h.v4("sub");
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v4("p");
    let msg = publish("t", "x", QoS::ExactlyOnce, 9);
    p.publish(&mut h, msg.clone());
    let mut dup = msg;
    dup.dup = true;
    p.publish(&mut h, dup);
    assert_eq!(
        p.packets(),
        vec![
            Packet::PubRec(Ack::new(pid(9))),
            Packet::PubRec(Ack::new(pid(9)))
        ]
    );
    assert_eq!(sub.publishes().len(), 1);
    p.send(&mut h, Packet::PubRel(Ack::new(pid(9))));
    assert_eq!(p.packets(), vec![Packet::PubComp(Ack::new(pid(9)))]);
    // After PUBREL the id is free: the same id is a new message.
    p.publish(&mut h, publish("t", "y", QoS::ExactlyOnce, 9));
    assert_eq!(sub.publishes().len(), 1);
}

/// v5: [MQTT-3.7.2-1] [MQTT-4.3.3-11]
#[test]
fn pubrel_for_an_unknown_id_gets_pubcomp_0x92() {
    let mut h = Harness::new();
    let p = h.v5("p");
    p.send(&mut h, Packet::PubRel(Ack::new(pid(5))));
    assert_eq!(
        p.packets(),
        vec![Packet::PubComp(Ack::with_reason(
            pid(5),
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        ))]
    );
}

/// v5: [MQTT-2.2.1-5] [MQTT-3.6.2-1] [MQTT-4.3.3-4] [MQTT-4.3.3-5]
#[test]
fn qos2_outbound_runs_pubrec_pubrel_pubcomp() {
    let mut h = Harness::new();
    let sub = h.v5("sub");
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "x", QoS::ExactlyOnce, 1));
    let got = sub.publishes();
    let id = got[0].packet_id.unwrap();
    sub.send(&mut h, Packet::PubRec(Ack::new(id)));
    assert_eq!(sub.packets(), vec![Packet::PubRel(Ack::new(id))]);
    sub.send(&mut h, Packet::PubComp(Ack::new(id)));
    assert!(h.broker.sessions.values().all(|s| s.inflight.is_empty()));
}

/// v5: [MQTT-3.1.2-5] [MQTT-3.3.1-1] [MQTT-3.6.2-1] [MQTT-4.3.2-3] [MQTT-4.3.3-3] [MQTT-4.3.3-5]
/// [MQTT-4.3.3-6] [MQTT-4.4.0-1]
#[test]
fn unacknowledged_publish_and_pubrel_are_resent_in_order_on_resume() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "sub", true);
    c.properties.session_expiry_interval = Some(100);
    let (sub, _) = h.connect(c);
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "1", QoS::ExactlyOnce, 1));
    p.publish(&mut h, publish("t", "2", QoS::AtLeastOnce, 2));
    p.publish(&mut h, publish("t", "3", QoS::ExactlyOnce, 3));
    let first = sub.publishes();
    assert_eq!(first.len(), 3);
    // PUBREC the first: it moves to AwaitPubcomp.
    sub.send(
        &mut h,
        Packet::PubRec(Ack::new(first[0].packet_id.unwrap())),
    );
    sub.take();
    h.broker.handle_closed(h.now, sub.conn);
    let (sub, ack) = h.connect(connect(ProtocolVersion::V5, "sub", false));
    assert!(ack.session_present);
    let again = sub.packets();
    assert_eq!(again.len(), 3);
    assert_eq!(
        again[0],
        Packet::PubRel(Ack::new(first[0].packet_id.unwrap()))
    );
    for (i, n) in [(1, "2"), (2, "3")] {
        let Packet::Publish(p) = &again[i] else {
            panic!("{again:?}")
        };
        assert!(p.dup, "resent with DUP");
        assert_eq!(p.packet_id, first[i].packet_id, "same identifier");
        assert_eq!(&p.payload[..], n.as_bytes());
    }
}

/// v5: [MQTT-2.2.1-4] [MQTT-3.3.4-9] [MQTT-4.3.2-1] [MQTT-4.3.2-3] [MQTT-4.9.0-1] [MQTT-4.9.0-2]
#[test]
fn outbound_in_flight_respects_the_client_receive_maximum() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "sub", true);
    c.properties.receive_maximum = Some(2);
    let (sub, _) = h.connect(c);
    sub.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    for i in 1..=5 {
        p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, i));
    }
    let got = sub.publishes();
    assert_eq!(got.len(), 2);
    sub.send(&mut h, Packet::PubAck(Ack::new(got[0].packet_id.unwrap())));
    let more = sub.publishes();
    assert_eq!(more.len(), 1, "one slot freed, one more sent");
    assert_ne!(
        more[0].packet_id, got[1].packet_id,
        "never reuses an id in flight"
    );
}

/// v5: [MQTT-3.3.4-7]
#[test]
fn exceeding_our_receive_maximum_is_disconnect_0x93() {
    let mut h = Harness::with(crate::BrokerConfig {
        receive_maximum: 2,
        ..Default::default()
    });
    let (p, ack) = h.connect(connect(ProtocolVersion::V5, "p", true));
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for i in 1..=3 {
        p.publish(&mut h, publish("t", "x", QoS::ExactlyOnce, i));
    }
    assert_eq!(
        p.disconnect_reason(),
        Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

/// v3.1.1: [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] [MQTT-3.3.1-9] [MQTT-3.3.1-10]
/// [MQTT-3.3.1-11]
#[test]
fn retained_messages_are_stored_replaced_deleted_and_sent_on_subscribe() {
    let mut h = Harness::new();
    let p = h.v4("p");
    let mut m = publish("r/1", "one", QoS::AtLeastOnce, 1);
    m.retain = true;
    p.publish(&mut h, m.clone());
    m.payload = Bytes::from_static(b"two");
    p.publish(&mut h, m.clone());
    let s = h.v4("s");
    s.subscribe(&mut h, "r/+", QoS::AtLeastOnce);
    let got = s.publishes();
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    assert_eq!(&got[0].payload[..], b"two");
    // Live messages to an existing subscription have RETAIN = 0 in 3.1.1 [MQTT-3.3.1-9].
    p.publish(&mut h, m.clone());
    assert!(!s.publishes()[0].retain);
    m.payload = Bytes::new();
    p.publish(&mut h, m);
    s.take();
    let s2 = h.v4("s2");
    s2.subscribe(&mut h, "r/#", QoS::AtLeastOnce);
    assert!(
        s2.publishes().is_empty(),
        "empty payload deleted the retained message"
    );
}

/// v3.1.1: [MQTT-3.3.1-7]
#[test]
fn v311_qos0_retained_publish_replaces_the_retained_message() {
    let mut h = Harness::new();
    let p = h.v4("p");
    let mut m = publish("r/1", "qos 1", QoS::AtLeastOnce, 1);
    m.retain = true;
    p.publish(&mut h, m);
    let mut m = publish("r/1", "qos 0", QoS::AtMostOnce, 0);
    m.retain = true;
    p.publish(&mut h, m);
    let s = h.v4("s");
    s.subscribe(&mut h, "r/#", QoS::AtLeastOnce);
    let got = s.publishes();
    assert_eq!(got.len(), 1, "the QoS 1 message was discarded: {got:?}");
    assert_eq!(&got[0].payload[..], b"qos 0");
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert!(got[0].retain);
}

/// v5: [MQTT-3.3.1-12] [MQTT-3.3.1-13]
#[test]
fn retain_as_published_keeps_the_flag() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe_with(
        &mut h,
        "t",
        SubscriptionOptions {
            retain_as_published: true,
            ..Default::default()
        },
        None,
    );
    let s2 = h.v5("s2");
    s2.subscribe(&mut h, "t", QoS::AtMostOnce);
    let p = h.v5("p");
    let mut m = publish("t", "x", QoS::AtMostOnce, 0);
    m.retain = true;
    p.publish(&mut h, m);
    assert!(s.publishes()[0].retain);
    assert!(!s2.publishes()[0].retain);
}

/// v5: [MQTT-3.3.1-5] [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]
#[test]
fn retain_handling_controls_retained_delivery_on_subscribe() {
    let mut h = Harness::new();
    let p = h.v5("p");
    let mut m = publish("t", "x", QoS::AtMostOnce, 0);
    m.retain = true;
    p.publish(&mut h, m);
    let s = h.v5("s");
    let opts = |rh| SubscriptionOptions {
        retain_handling: rh,
        ..Default::default()
    };
    s.subscribe_with(&mut h, "t", opts(RetainHandling::SendIfNew), None);
    assert_eq!(s.publishes().len(), 1, "new subscription");
    s.subscribe_with(&mut h, "t", opts(RetainHandling::SendIfNew), None);
    assert_eq!(s.publishes().len(), 0, "subscription existed");
    s.subscribe_with(&mut h, "t", opts(RetainHandling::SendAtSubscribe), None);
    assert_eq!(s.publishes().len(), 1, "always");
    s.subscribe_with(&mut h, "t", opts(RetainHandling::DoNotSend), None);
    assert_eq!(s.publishes().len(), 0, "never");
}

/// v3.1.1: [MQTT-3.3.2-3] [MQTT-4.7.2-1]
#[test]
fn wildcards_match_levels_and_skip_dollar_topics() {
    let mut h = Harness::new();
    let s = h.v4("s");
    s.subscribe(&mut h, "#", QoS::AtMostOnce);
    let sys = h.v4("sys");
    sys.subscribe(&mut h, "$SYS/#", QoS::AtMostOnce);
    let retained_version = sys.publishes();
    assert_eq!(retained_version[0].topic, "$SYS/broker/version");
    let p = h.v4("p");
    p.publish(&mut h, publish("$internal/x", "x", QoS::AtMostOnce, 0));
    p.publish(&mut h, publish("a/b/c", "x", QoS::AtMostOnce, 0));
    let got = s.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "a/b/c");
}

/// Topic Names and Topic Filters are compared as they are: "é" as U+00E9 (NFC) and as "e"
/// followed by U+0301 (NFD) are different topics, and characters Unicode leaves unassigned
/// (U+0378) or private (U+E000) reach the subscriber unchanged.
fn topics_match_without_normalisation(version: ProtocolVersion) {
    const NFC: &str = "caf\u{e9}";
    const NFD: &str = "cafe\u{301}";
    let mut h = Harness::new();
    let nfc = h.connect(connect(version, "nfc", true)).0;
    nfc.subscribe(&mut h, &format!("{NFC}/#"), QoS::AtMostOnce);
    let nfd = h.connect(connect(version, "nfd", true)).0;
    nfd.subscribe(&mut h, &format!("{NFD}/#"), QoS::AtMostOnce);
    let odd = h.connect(connect(version, "odd", true)).0;
    odd.subscribe(&mut h, "t/+", QoS::AtMostOnce);
    let p = h.connect(connect(version, "p", true)).0;

    // Each form reaches only the subscriber of the same form, byte for byte.
    for (form, same, other) in [(NFC, &nfc, &nfd), (NFD, &nfd, &nfc)] {
        let topic = format!("{form}/x");
        p.publish(&mut h, publish(&topic, "x", QoS::AtMostOnce, 0));
        let got = same.publishes();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].topic.as_bytes(), topic.as_bytes());
        assert!(
            other.publishes().is_empty(),
            "{topic:?} matched the other form"
        );
    }

    p.publish(&mut h, publish("t/\u{378}", "odd", QoS::AtMostOnce, 0));
    p.publish(&mut h, publish("t/\u{e000}", "private", QoS::AtMostOnce, 0));
    let topics: Vec<Vec<u8>> = odd
        .publishes()
        .into_iter()
        .map(|p| p.topic.into_bytes())
        .collect();
    assert_eq!(
        topics,
        vec![
            "t/\u{378}".as_bytes().to_vec(),
            "t/\u{e000}".as_bytes().to_vec()
        ]
    );
}

/// v3.1.1: [MQTT-4.7.3-4]
#[test]
fn v311_topics_match_without_normalisation() {
    topics_match_without_normalisation(ProtocolVersion::V3_1_1);
}

/// v5: [MQTT-4.7.3-4]
#[test]
fn v5_topics_match_without_normalisation() {
    topics_match_without_normalisation(ProtocolVersion::V5);
}

/// v5: [MQTT-3.3.4-2] [MQTT-3.3.4-3] [MQTT-3.3.4-4]
/// v3.1.1: [MQTT-3.3.5-1]
#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos_with_every_identifier() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe_with(
        &mut h,
        "a/+",
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            ..Default::default()
        },
        Some(1),
    );
    s.subscribe_with(
        &mut h,
        "a/#",
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
        Some(2),
    );
    s.subscribe_with(
        &mut h,
        "a/b",
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            ..Default::default()
        },
        None,
    );
    let p = h.v5("p");
    p.publish(&mut h, publish("a/b", "x", QoS::ExactlyOnce, 1));
    let got = s.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
    let s4 = h.v4("s4");
    s4.subscribe(&mut h, "a/+", QoS::AtMostOnce);
    s4.subscribe(&mut h, "a/#", QoS::ExactlyOnce);
    p.publish(&mut h, publish("a/b", "x", QoS::ExactlyOnce, 2));
    let got = s4.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
}

/// v5: [MQTT-3.8.3-3]
#[test]
fn no_local_skips_the_publishers_own_subscription() {
    let mut h = Harness::new();
    let c = h.v5("c");
    c.subscribe_with(
        &mut h,
        "t",
        SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
        None,
    );
    c.publish(&mut h, publish("t", "x", QoS::AtMostOnce, 0));
    assert!(c.publishes().is_empty());
    let other = h.v5("o");
    other.publish(&mut h, publish("t", "x", QoS::AtMostOnce, 0));
    assert_eq!(c.publishes().len(), 1);
}

/// v5: [MQTT-3.4.2-1]
#[test]
fn clients_cannot_publish_to_sys_topics() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe(&mut h, "$SYS/#", QoS::AtMostOnce);
    s.take();
    let p = h.v5("p");
    p.publish(
        &mut h,
        publish("$SYS/broker/version", "fake", QoS::AtLeastOnce, 1),
    );
    assert_eq!(
        p.packets(),
        vec![Packet::PubAck(Ack::with_reason(
            pid(1),
            ReasonCode::NOT_AUTHORIZED
        ))]
    );
    assert!(s.publishes().is_empty());
}

/// v3.1.1: [MQTT-3.1.2-5] [MQTT-4.5.0-1]
#[test]
fn offline_persistent_sessions_queue_qos1_and_drop_qos0_by_default() {
    let mut h = Harness::with(crate::BrokerConfig {
        max_queued_messages: 3,
        ..Default::default()
    });
    let (s, _) = h.connect(connect(ProtocolVersion::V3_1_1, "s", false));
    s.subscribe(&mut h, "t", QoS::AtLeastOnce);
    s.send(&mut h, Packet::Disconnect(Disconnect::default()));
    let p = h.v4("p");
    p.publish(&mut h, publish("t", "q0", QoS::AtMostOnce, 0));
    for i in 1..=5 {
        p.publish(&mut h, publish("t", "q1", QoS::AtLeastOnce, i));
    }
    let (s, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "s", false));
    assert!(ack.session_present);
    let got = s.publishes();
    assert_eq!(got.len(), 3, "limit of 3, newest dropped, QoS 0 dropped");
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce));
    assert_eq!(h.broker.stats().dropped, 3);
}

/// v5: [MQTT-3.3.2-5] [MQTT-3.3.2-6]
#[test]
fn message_expiry_is_decremented_and_expired_messages_are_dropped() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "s", true);
    c.properties.session_expiry_interval = Some(1000);
    let (s, _) = h.connect(c);
    s.subscribe(&mut h, "t", QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, s.conn);
    let p = h.v5("p");
    let mut short = publish("t", "short", QoS::AtLeastOnce, 1);
    short.properties.message_expiry_interval = Some(5);
    let mut long = publish("t", "long", QoS::AtLeastOnce, 2);
    long.properties.message_expiry_interval = Some(60);
    p.publish(&mut h, short);
    p.publish(&mut h, long);
    h.advance(Duration::from_secs(10));
    let (s, _) = h.connect(connect(ProtocolVersion::V5, "s", false));
    let got = s.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"long");
    assert_eq!(got[0].properties.message_expiry_interval, Some(50));
}

/// v5: [MQTT-3.4.2-1]
#[test]
fn payload_format_indicator_with_invalid_utf8_is_refused_with_0x99() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    let mut m = publish("t", "", QoS::AtLeastOnce, 1);
    m.payload = Bytes::from_static(&[0xff, 0xfe]);
    m.properties.payload_format_indicator = Some(1);
    p.publish(&mut h, m.clone());
    assert_eq!(
        p.packets(),
        vec![Packet::PubAck(Ack::with_reason(
            pid(1),
            ReasonCode::PAYLOAD_FORMAT_INVALID
        ))]
    );
    assert!(s.publishes().is_empty());
    m.qos = QoS::AtMostOnce;
    m.packet_id = None;
    p.publish(&mut h, m);
    assert_eq!(
        p.disconnect_reason(),
        Some(ReasonCode::PAYLOAD_FORMAT_INVALID)
    );
}

/// v5: [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
/// [MQTT-3.3.2-20]
#[test]
fn response_topic_correlation_data_and_user_properties_pass_through_in_order() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe(&mut h, "req", QoS::AtMostOnce);
    let p = h.v5("p");
    let mut m = publish("req", "x", QoS::AtMostOnce, 0);
    m.properties.response_topic = Some("resp/p".into());
    m.properties.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
    m.properties.content_type = Some("text/plain".into());
    m.properties.payload_format_indicator = Some(1);
    m.properties.user_properties = vec![
        ("b".into(), "1".into()),
        ("a".into(), "2".into()),
        ("b".into(), "3".into()),
    ];
    p.publish(&mut h, m.clone());
    let got = s.publishes();
    assert_eq!(got[0].properties, m.properties);
}

#[test]
fn system_topics_are_retained_routed_and_never_stored() {
    let mut h = Harness::new();
    h.broker.set_persistence(crate::PersistMode::Sync);
    let s = h.v5("s");
    s.subscribe(&mut h, "$SYS/broker/clients/+", QoS::AtMostOnce);
    h.broker.publish_system(
        h.now,
        "$SYS/broker/clients/connected",
        Bytes::from_static(b"1"),
    );
    assert_eq!(&s.publishes()[0].payload[..], b"1");
    assert!(h.broker.poll_persist().is_none());
    let late = h.v5("late");
    late.subscribe(&mut h, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    assert!(late.publishes()[0].retain);
}
