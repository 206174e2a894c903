//! What the client and the configuration limit: Maximum Packet Size, Receive Maximum, Request
//! Problem Information, Topic Alias Maximum, Retain Available, wildcard subscriptions, and the
//! properties of the broker's DISCONNECT.

use bytes::Bytes;
use tern_codec::*;

use super::harness::*;
use crate::BrokerConfig;

fn disconnect_of(c: &Client) -> Disconnect {
    c.take()
        .into_iter()
        .find_map(|o| match o {
            Out::Packet(Packet::Disconnect(d)) => Some(d),
            _ => None,
        })
        .expect("a DISCONNECT")
}

/// v5: [MQTT-3.1.2-24] [MQTT-3.1.2-25]
#[test]
fn a_message_above_the_client_maximum_packet_size_is_dropped_as_if_sent() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "sub", true);
    c.properties.maximum_packet_size = Some(64);
    let (sub, _) = h.connect(c);
    for (filter, qos) in [("big/0", QoS::AtMostOnce), ("big/1", QoS::AtLeastOnce)] {
        sub.subscribe(&mut h, filter, qos);
    }
    sub.subscribe(&mut h, "small", QoS::AtLeastOnce);
    let p = h.v5("p");
    let big = Bytes::from(vec![b'x'; 200]);
    let dropped = h.broker.stats().dropped;
    for (topic, qos, id) in [
        ("big/0", QoS::AtMostOnce, 0),
        ("big/1", QoS::AtLeastOnce, 1),
    ] {
        let mut m = publish(topic, "", qos, id);
        m.payload = big.clone();
        p.publish(&mut h, m);
    }
    assert!(sub.packets().is_empty(), "nothing sent");
    assert_eq!(h.broker.stats().dropped, dropped + 2, "counted as dropped");
    let sid = h.broker.by_client_id["sub"];
    assert!(
        h.broker.sessions[&sid].inflight.is_empty(),
        "nothing in flight"
    );
    assert!(h.broker.sessions[&sid].queue.is_empty(), "nothing queued");
    p.publish(&mut h, publish("small", "ok", QoS::AtLeastOnce, 2));
    let got = sub.publishes();
    assert_eq!(got.len(), 1, "the next message is delivered");
    assert_eq!(&got[0].payload[..], b"ok");
    assert!(Packet::Publish(got[0].clone()).encoded_len(ProtocolVersion::V5) <= 64);
}

/// v5: [MQTT-3.3.4-10] [MQTT-4.9.0-3]
#[test]
fn other_packets_flow_while_the_client_receive_maximum_is_used_up() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "sub", true);
    c.properties.receive_maximum = Some(1);
    let (sub, _) = h.connect(c);
    sub.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "1", QoS::AtLeastOnce, 1));
    p.publish(&mut h, publish("t", "2", QoS::AtLeastOnce, 2));
    let first = sub.publishes();
    assert_eq!(first.len(), 1, "send quota is now zero");
    sub.send(&mut h, Packet::PingReq);
    assert_eq!(sub.packets(), vec![Packet::PingResp]);
    let ack = sub.subscribe(&mut h, "other", QoS::AtMostOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::SUCCESS]);
    sub.send(
        &mut h,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: Default::default(),
            filters: vec!["other".into()],
        }),
    );
    assert!(matches!(&sub.packets()[..], [Packet::UnsubAck(a)] if a.packet_id == pid(2)));
    // Its own QoS 2 PUBLISH towards the broker is acknowledged too.
    sub.publish(&mut h, publish("x", "y", QoS::ExactlyOnce, 4));
    assert_eq!(sub.packets(), vec![Packet::PubRec(Ack::new(pid(4)))]);
    sub.send(&mut h, Packet::PubRel(Ack::new(pid(4))));
    assert_eq!(sub.packets(), vec![Packet::PubComp(Ack::new(pid(4)))]);
    // Only the next PUBLISH waited.
    sub.send(
        &mut h,
        Packet::PubAck(Ack::new(first[0].packet_id.unwrap())),
    );
    let next = sub.publishes();
    assert_eq!(next.len(), 1);
    assert_eq!(&next[0].payload[..], b"2");
}

/// v5: [MQTT-3.14.2-2] [MQTT-3.14.2-3]
#[test]
fn server_disconnect_has_no_session_expiry_and_drops_a_reason_string_that_does_not_fit() {
    let mut h = Harness::new();
    // A client with room for the Reason String gets it, and no Session Expiry Interval.
    let mut c = connect(ProtocolVersion::V5, "roomy", true);
    c.properties.session_expiry_interval = Some(60);
    let (roomy, _) = h.connect(c);
    roomy.send(&mut h, Packet::PingResp);
    let d = disconnect_of(&roomy);
    assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
    assert!(d.properties.reason_string.is_some());
    assert_eq!(d.properties.session_expiry_interval, None);
    let with_reason_string = Packet::Disconnect(d).encoded_len(ProtocolVersion::V5);
    // A client whose Maximum Packet Size leaves no room for it gets the bare reason code.
    let mut c = connect(ProtocolVersion::V5, "tight", true);
    c.properties.session_expiry_interval = Some(60);
    let tight_max = 40;
    assert!(with_reason_string > tight_max);
    c.properties.maximum_packet_size = Some(tight_max as u32);
    let (tight, _) = h.connect(c);
    tight.send(&mut h, Packet::PingResp);
    let d = disconnect_of(&tight);
    assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
    assert_eq!(d.properties, Properties::default());
    assert!(Packet::Disconnect(d).encoded_len(ProtocolVersion::V5) <= tight_max);
    // Takeover and shutdown DISCONNECTs carry no Session Expiry either.
    let mut c = connect(ProtocolVersion::V5, "old", true);
    c.properties.session_expiry_interval = Some(60);
    let (old, _) = h.connect(c);
    h.connect(connect(ProtocolVersion::V5, "old", false));
    let d = disconnect_of(&old);
    assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
    assert_eq!(d.properties.session_expiry_interval, None);
    let mut c = connect(ProtocolVersion::V5, "last", true);
    c.properties.session_expiry_interval = Some(60);
    let (last, _) = h.connect(c);
    h.broker.shutdown(h.now);
    let d = disconnect_of(&last);
    assert_eq!(d.reason, ReasonCode::SERVER_SHUTTING_DOWN);
    assert_eq!(d.properties.session_expiry_interval, None);
}

/// v5: [MQTT-3.1.2-29]
#[test]
fn request_problem_information_0_keeps_reason_strings_off_acknowledgments() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "quiet", true);
    c.properties.request_problem_information = Some(0);
    let (q, _) = h.connect(c);
    q.publish(&mut h, publish("$SYS/x", "fake", QoS::AtLeastOnce, 1));
    q.publish(&mut h, publish("$SYS/x", "fake", QoS::ExactlyOnce, 2));
    q.send(&mut h, Packet::PubRel(Ack::new(pid(9))));
    let filters = vec![("a/#/b".to_string(), SubscriptionOptions::default())];
    q.send(
        &mut h,
        Packet::Subscribe(Subscribe {
            packet_id: pid(3),
            properties: Default::default(),
            filters,
        }),
    );
    q.send(
        &mut h,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            properties: Default::default(),
            filters: vec!["nope".into()],
        }),
    );
    let got = q.packets();
    assert_eq!(
        got[..3],
        [
            Packet::PubAck(Ack::with_reason(pid(1), ReasonCode::NOT_AUTHORIZED)),
            Packet::PubRec(Ack::with_reason(pid(2), ReasonCode::NOT_AUTHORIZED)),
            Packet::PubComp(Ack::with_reason(
                pid(9),
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            )),
        ]
    );
    let Packet::SubAck(s) = &got[3] else {
        panic!("{got:?}")
    };
    assert_eq!(s.reasons, vec![ReasonCode::TOPIC_FILTER_INVALID]);
    assert_eq!(s.properties, Properties::default());
    let Packet::UnsubAck(u) = &got[4] else {
        panic!("{got:?}")
    };
    assert_eq!(u.reasons, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
    assert_eq!(u.properties, Properties::default());
    // DISCONNECT may carry a Reason String even then; Tern leaves it out as well.
    q.send(&mut h, Packet::PingResp);
    let d = disconnect_of(&q);
    assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
    assert_eq!(d.properties, Properties::default());
}

/// v5: [MQTT-3.2.2-14]
#[test]
fn retained_publish_when_retain_is_unavailable_is_disconnect_0x9a() {
    let mut h = Harness::with(BrokerConfig {
        retain_available: false,
        ..Default::default()
    });
    let s = h.v5("s");
    s.subscribe(&mut h, "t", QoS::AtMostOnce);
    let (p, ack) = h.connect(connect(ProtocolVersion::V5, "p", true));
    assert_eq!(ack.properties.retain_available, Some(0));
    let mut m = publish("t", "x", QoS::AtLeastOnce, 1);
    m.retain = true;
    p.publish(&mut h, m);
    assert_eq!(
        p.disconnect_reason(),
        Some(ReasonCode::RETAIN_NOT_SUPPORTED)
    );
    assert!(p.is_closed());
    assert!(s.publishes().is_empty(), "not routed");
    let late = h.v5("late");
    late.subscribe(&mut h, "t", QoS::AtMostOnce);
    assert!(late.publishes().is_empty(), "not retained");
}

/// v5: [MQTT-3.2.2-18]
#[test]
fn topic_alias_maximum_0_refuses_every_alias() {
    let config = BrokerConfig {
        topic_alias_maximum: 0,
        ..Default::default()
    };
    for alias in [1, 2, 64] {
        let mut h = Harness::with(config.clone());
        let (p, ack) = h.connect(connect(ProtocolVersion::V5, "p", true));
        assert!(
            matches!(ack.properties.topic_alias_maximum, None | Some(0)),
            "no aliases advertised"
        );
        let mut m = publish("t", "1", QoS::AtMostOnce, 0);
        m.properties.topic_alias = Some(alias);
        p.publish(&mut h, m);
        assert_eq!(
            p.disconnect_reason(),
            Some(ReasonCode::TOPIC_ALIAS_INVALID),
            "alias {alias}"
        );
    }
}

/// v5: [MQTT-3.3.2-7]
#[test]
fn topic_aliases_do_not_carry_over_to_a_new_connection() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe(&mut h, "long/topic", QoS::AtMostOnce);
    let mut c = connect(ProtocolVersion::V5, "p", true);
    c.properties.session_expiry_interval = Some(60);
    let (p, _) = h.connect(c);
    let mut m = publish("long/topic", "1", QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(3);
    p.publish(&mut h, m.clone());
    assert_eq!(s.publishes().len(), 1);
    h.broker.handle_closed(h.now, p.conn);
    // Same client, same session: the alias mapping is gone with the connection.
    let (p, ack) = h.connect(connect(ProtocolVersion::V5, "p", false));
    assert!(ack.session_present);
    m.topic = String::new();
    p.publish(&mut h, m);
    assert_eq!(p.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(s.publishes().is_empty());
}

/// v3.1.1: [MQTT-3.8.3-2]
#[test]
fn wildcard_filters_are_refused_when_wildcards_are_off() {
    let mut h = Harness::with(BrokerConfig {
        wildcard_subscriptions: false,
        ..Default::default()
    });
    let c = h.v4("c");
    let filters = ["a/+", "a/#", "#", "a/b"]
        .into_iter()
        .map(|f| {
            (
                f.to_string(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )
        })
        .collect();
    c.send(
        &mut h,
        Packet::Subscribe(Subscribe {
            packet_id: pid(5),
            properties: Default::default(),
            filters,
        }),
    );
    let Some(Out::Packet(Packet::SubAck(ack))) = c.next() else {
        panic!()
    };
    let codes: Vec<u8> = ack.reasons.iter().map(|r| r.to_v3_suback()).collect();
    assert_eq!(codes, vec![0x80, 0x80, 0x80, 0x01]);
    let p = h.v4("p");
    p.publish(&mut h, publish("a/c", "x", QoS::AtMostOnce, 0));
    assert!(c.publishes().is_empty(), "no wildcard subscription exists");
    p.publish(&mut h, publish("a/b", "x", QoS::AtMostOnce, 0));
    assert_eq!(c.publishes().len(), 1);
}

/// A connected subscriber's queue at `pause_publishers_at` is reported for the publisher's
/// edge to pause on, and its outlet is told when it has drained to half; an offline session's
/// queue never is.
#[test]
fn a_backed_up_queue_is_reported_until_it_drains_to_half() {
    let mut h = Harness::with(BrokerConfig {
        max_inflight: 2,
        pause_publishers_at: 4,
        ..BrokerConfig::default()
    });
    let (sub, _) = h.connect(connect(ProtocolVersion::V5, "sub", true));
    sub.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    h.broker.take_backpressure();
    // 2 in flight, then the queue grows to 3: below the threshold.
    for id in 1..=5 {
        p.publish(&mut h, publish("t", "m", QoS::AtLeastOnce, id));
    }
    assert_eq!(h.broker.take_backpressure(), None, "3 queued");
    p.publish(&mut h, publish("t", "m", QoS::AtLeastOnce, 6));
    assert_eq!(h.broker.take_backpressure(), Some(sub.conn), "4 queued");
    assert!(h.broker.conns[&sub.conn].backpressure);
    assert_eq!(h.broker.take_backpressure(), None, "taken once");

    let ids: Vec<PacketId> = sub.publishes().iter().filter_map(|m| m.packet_id).collect();
    assert_eq!(ids.len(), 2);
    sub.send(&mut h, Packet::PubAck(Ack::new(ids[0])));
    assert!(
        h.broker.conns[&sub.conn].backpressure,
        "3 queued: above half"
    );
    sub.send(&mut h, Packet::PubAck(Ack::new(ids[1])));
    assert!(!h.broker.conns[&sub.conn].backpressure, "2 queued: half");

    // An offline session does not drain: its queue never pauses anyone.
    let mut c = connect(ProtocolVersion::V5, "away", false);
    c.properties.session_expiry_interval = Some(3600);
    let (away, _) = h.connect(c);
    away.subscribe(&mut h, "u", QoS::AtLeastOnce);
    away.send(&mut h, Packet::Disconnect(Disconnect::default()));
    for id in 10..30 {
        p.publish(&mut h, publish("u", "m", QoS::AtLeastOnce, id));
    }
    assert_eq!(h.broker.take_backpressure(), None);
}

/// A connected subscriber's full queue is reported as backed up even below
/// `pause_publishers_at`, with the drop flagged so that the edge stops handing over the
/// publisher's batch at once.
#[test]
fn a_full_queue_is_reported_with_its_drop() {
    let mut h = Harness::with(BrokerConfig {
        max_inflight: 1,
        max_queued_messages: 2,
        pause_publishers_at: 100,
        ..BrokerConfig::default()
    });
    let (sub, _) = h.connect(connect(ProtocolVersion::V5, "sub", true));
    sub.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    h.broker.take_backpressure();
    // 1 in flight, 2 queued: full, nothing dropped yet.
    for id in 1..=3 {
        p.publish(&mut h, publish("t", "m", QoS::AtLeastOnce, id));
    }
    assert!(!h.broker.dropped_for_backpressure());
    assert_eq!(
        h.broker.take_backpressure(),
        None,
        "2 queued, threshold 100"
    );
    p.publish(&mut h, publish("t", "m", QoS::AtLeastOnce, 4));
    assert!(
        h.broker.dropped_for_backpressure(),
        "the fourth was dropped"
    );
    assert_eq!(h.broker.take_backpressure(), Some(sub.conn));
    assert!(
        !h.broker.dropped_for_backpressure(),
        "taken with the connection"
    );
}
