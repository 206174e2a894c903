//! QoS 1 / QoS 2 flows in both directions: error acknowledgments, duplicates, identifier
//! re-use, expiry in the middle of a flow, resending on resume, unsubscribing mid-flow.

use std::time::Duration;

use bytes::Bytes;
use tern_codec::*;

use super::harness::*;

/// A v5 client with a session that outlives its connection.
fn v5_persistent(h: &mut Harness, id: &str, clean_start: bool) -> (Client, ConnAck) {
    let mut c = connect(ProtocolVersion::V5, id, clean_start);
    c.properties.session_expiry_interval = Some(100);
    h.connect(c)
}

fn inflight_of(h: &Harness, client_id: &str) -> usize {
    let sid = h.broker.by_client_id[client_id];
    h.broker.sessions[&sid].inflight.len()
}

/// v5: [MQTT-4.4.0-2]
#[test]
fn a_publish_answered_with_an_error_ack_is_not_resent_on_resume() {
    let mut h = Harness::new();
    let (sub, _) = v5_persistent(&mut h, "sub", true);
    sub.subscribe(&mut h, "one", QoS::AtLeastOnce);
    sub.subscribe(&mut h, "two", QoS::ExactlyOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("one", "1", QoS::AtLeastOnce, 1));
    p.publish(&mut h, publish("two", "2", QoS::ExactlyOnce, 2));
    let got = sub.publishes();
    assert_eq!(got.len(), 2);
    sub.send(
        &mut h,
        Packet::PubAck(Ack::with_reason(
            got[0].packet_id.unwrap(),
            ReasonCode::UNSPECIFIED_ERROR,
        )),
    );
    sub.send(
        &mut h,
        Packet::PubRec(Ack::with_reason(
            got[1].packet_id.unwrap(),
            ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        )),
    );
    assert!(sub.packets().is_empty(), "no PUBREL after a failing PUBREC");
    assert_eq!(inflight_of(&h, "sub"), 0, "both flows ended");
    h.broker.handle_closed(h.now, sub.conn);
    let (sub, ack) = v5_persistent(&mut h, "sub", false);
    assert!(ack.session_present);
    assert!(sub.packets().is_empty(), "nothing retransmitted");
}

/// v5: [MQTT-4.8.2-6]
#[test]
fn a_shared_message_refused_by_its_member_goes_to_no_other_member() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut h = Harness::new();
        let a = h.v5("a");
        let b = h.v5("b");
        a.subscribe(&mut h, "$share/g/t", qos);
        b.subscribe(&mut h, "$share/g/t", qos);
        let p = h.v5("p");
        p.publish(&mut h, publish("t", "x", qos, 1));
        let got = a.publishes();
        assert_eq!(got.len(), 1, "round robin starts with a");
        let id = got[0].packet_id.unwrap();
        let refusal = Ack::with_reason(id, ReasonCode::UNSPECIFIED_ERROR);
        if qos == QoS::AtLeastOnce {
            a.send(&mut h, Packet::PubAck(refusal));
        } else {
            a.send(&mut h, Packet::PubRec(refusal));
        }
        assert!(b.publishes().is_empty(), "{qos:?}: not handed to b");
        // Not even when a goes away: the message was discarded.
        h.broker.handle_closed(h.now, a.conn);
        assert!(b.publishes().is_empty(), "{qos:?}: not handed to b later");
    }
}

/// v5: [MQTT-4.3.3-9] [MQTT-4.3.3-10] [MQTT-4.3.3-12]
#[test]
fn v5_inbound_qos2_duplicates_are_suppressed_and_ids_reused_after_pubcomp_or_refusal() {
    let mut h = Harness::new();
    let sub = h.v5("sub");
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v5("p");
    let msg = publish("t", "x", QoS::ExactlyOnce, 9);
    p.publish(&mut h, msg.clone());
    let mut dup = msg;
    dup.dup = true;
    p.publish(&mut h, dup.clone());
    p.publish(&mut h, dup);
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(9))); 3]);
    assert_eq!(sub.publishes().len(), 1, "duplicates are not delivered");
    p.send(&mut h, Packet::PubRel(Ack::new(pid(9))));
    assert_eq!(p.packets(), vec![Packet::PubComp(Ack::new(pid(9)))]);
    // After PUBCOMP the same identifier is a new message.
    p.publish(&mut h, publish("t", "y", QoS::ExactlyOnce, 9));
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(9)))]);
    let got = sub.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"y");
    p.send(&mut h, Packet::PubRel(Ack::new(pid(9))));
    p.take();

    // PUBREC 0x99 refuses the message; the same identifier then starts a new one.
    let mut bad = publish("t", "", QoS::ExactlyOnce, 5);
    bad.payload = Bytes::from_static(&[0xff]);
    bad.properties.payload_format_indicator = Some(1);
    p.publish(&mut h, bad);
    assert_eq!(
        p.packets(),
        vec![Packet::PubRec(Ack::with_reason(
            pid(5),
            ReasonCode::PAYLOAD_FORMAT_INVALID
        ))]
    );
    assert!(sub.publishes().is_empty());
    p.publish(&mut h, publish("t", "z", QoS::ExactlyOnce, 5));
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(5)))]);
    let got = sub.publishes();
    assert_eq!(got.len(), 1, "treated as a new message");
    assert_eq!(&got[0].payload[..], b"z");
}

/// v5: [MQTT-4.3.3-13]
#[test]
fn inbound_qos2_flow_completes_after_the_message_expired() {
    let mut h = Harness::new();
    let sub = h.v5("sub");
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v5("p");
    let mut m = publish("t", "x", QoS::ExactlyOnce, 3);
    m.properties.message_expiry_interval = Some(2);
    p.publish(&mut h, m.clone());
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(3)))]);
    assert_eq!(sub.publishes().len(), 1);
    h.advance(Duration::from_secs(10));
    // The message has expired; the acknowledgment sequence goes on regardless.
    m.dup = true;
    p.publish(&mut h, m);
    assert_eq!(p.packets(), vec![Packet::PubRec(Ack::new(pid(3)))]);
    assert!(sub.publishes().is_empty(), "still a duplicate");
    p.send(&mut h, Packet::PubRel(Ack::new(pid(3))));
    assert_eq!(p.packets(), vec![Packet::PubComp(Ack::new(pid(3)))]);
    assert!(!p.is_closed());
}

/// v5: [MQTT-4.3.3-7]
#[test]
fn outbound_qos2_flow_completes_after_the_message_expired() {
    let mut h = Harness::new();
    let (sub, _) = v5_persistent(&mut h, "sub", true);
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    sub.subscribe(&mut h, "u", QoS::ExactlyOnce);
    let p = h.v5("p");
    for (topic, id) in [("t", 1), ("u", 2)] {
        let mut m = publish(topic, "x", QoS::ExactlyOnce, id);
        m.properties.message_expiry_interval = Some(5);
        p.publish(&mut h, m);
    }
    let sent = sub.publishes();
    assert_eq!(sent.len(), 2);
    let (t_id, u_id) = (sent[0].packet_id.unwrap(), sent[1].packet_id.unwrap());
    // "t" gets as far as PUBREL; "u" is sent but never acknowledged.
    sub.send(&mut h, Packet::PubRec(Ack::new(t_id)));
    assert_eq!(sub.packets(), vec![Packet::PubRel(Ack::new(t_id))]);
    h.broker.handle_closed(h.now, sub.conn);
    h.advance(Duration::from_secs(30));
    // Both messages have expired, but their PUBLISH was sent: no expiry is applied.
    let (sub, ack) = v5_persistent(&mut h, "sub", false);
    assert!(ack.session_present);
    let again = sub.packets();
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[0], Packet::PubRel(Ack::new(t_id)));
    let Packet::Publish(u) = &again[1] else {
        panic!("{again:?}")
    };
    assert_eq!(u.packet_id, Some(u_id));
    assert!(u.dup);
    sub.send(&mut h, Packet::PubComp(Ack::new(t_id)));
    sub.send(&mut h, Packet::PubRec(Ack::new(u_id)));
    assert_eq!(sub.packets(), vec![Packet::PubRel(Ack::new(u_id))]);
    sub.send(&mut h, Packet::PubComp(Ack::new(u_id)));
    assert_eq!(inflight_of(&h, "sub"), 0);
    h.broker.handle_closed(h.now, sub.conn);
    let (sub, _) = v5_persistent(&mut h, "sub", false);
    assert!(sub.packets().is_empty(), "nothing re-sent once complete");
}

/// v3.1.1: [MQTT-2.3.1-4] [MQTT-3.3.1-1] [MQTT-4.4.0-1]
#[test]
fn v311_unacknowledged_publish_and_pubrel_are_resent_in_order_on_resume() {
    let mut h = Harness::new();
    let (sub, _) = h.connect(connect(ProtocolVersion::V3_1_1, "sub", false));
    sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
    let p = h.v4("p");
    p.publish(&mut h, publish("t", "1", QoS::ExactlyOnce, 1));
    p.publish(&mut h, publish("t", "2", QoS::AtLeastOnce, 2));
    p.publish(&mut h, publish("t", "3", QoS::ExactlyOnce, 3));
    let first = sub.publishes();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|p| !p.dup));
    sub.send(
        &mut h,
        Packet::PubRec(Ack::new(first[0].packet_id.unwrap())),
    );
    sub.take();
    h.broker.handle_closed(h.now, sub.conn);
    let (sub, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "sub", false));
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
    // Resent once more on a second resume, still with the same identifiers.
    h.broker.handle_closed(h.now, sub.conn);
    let (sub, _) = h.connect(connect(ProtocolVersion::V3_1_1, "sub", false));
    assert_eq!(sub.packets(), again);
    // Once acknowledged, nothing is resent.
    sub.send(
        &mut h,
        Packet::PubComp(Ack::new(first[0].packet_id.unwrap())),
    );
    sub.send(
        &mut h,
        Packet::PubAck(Ack::new(first[1].packet_id.unwrap())),
    );
    sub.send(
        &mut h,
        Packet::PubRec(Ack::new(first[2].packet_id.unwrap())),
    );
    sub.send(
        &mut h,
        Packet::PubComp(Ack::new(first[2].packet_id.unwrap())),
    );
    sub.take();
    h.broker.handle_closed(h.now, sub.conn);
    let (sub, _) = h.connect(connect(ProtocolVersion::V3_1_1, "sub", false));
    assert!(sub.packets().is_empty());
}

/// v5: [MQTT-3.10.4-3]
/// v3.1.1: [MQTT-3.10.4-3]
#[test]
fn unsubscribing_completes_the_deliveries_already_started() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut h = Harness::new();
        let mut c = connect(version, "sub", false);
        c.properties.session_expiry_interval = version.is_v5().then_some(100);
        let (sub, _) = h.connect(c);
        sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
        let p = h.connect(connect(version, "p", true)).0;
        p.publish(&mut h, publish("t", "1", QoS::AtLeastOnce, 1));
        p.publish(&mut h, publish("t", "2", QoS::ExactlyOnce, 2));
        let sent = sub.publishes();
        assert_eq!(sent.len(), 2);
        let (id1, id2) = (sent[0].packet_id.unwrap(), sent[1].packet_id.unwrap());
        sub.send(
            &mut h,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(7),
                properties: Default::default(),
                filters: vec!["t".into()],
            }),
        );
        assert!(matches!(&sub.packets()[..], [Packet::UnsubAck(_)]));
        p.publish(&mut h, publish("t", "3", QoS::AtLeastOnce, 3));
        assert!(sub.publishes().is_empty(), "{version:?}: no new messages");
        // The deliveries started before the UNSUBSCRIBE are still completed: resent on resume...
        h.broker.handle_closed(h.now, sub.conn);
        let (sub, ack) = h.connect(connect(version, "sub", false));
        assert!(ack.session_present);
        let again = sub.publishes();
        assert_eq!(again.len(), 2, "{version:?}");
        assert_eq!(
            (again[0].packet_id, again[1].packet_id),
            (Some(id1), Some(id2))
        );
        assert!(again.iter().all(|p| p.dup));
        // ...and their acknowledgment flows run to the end.
        sub.send(&mut h, Packet::PubAck(Ack::new(id1)));
        sub.send(&mut h, Packet::PubRec(Ack::new(id2)));
        assert_eq!(sub.packets(), vec![Packet::PubRel(Ack::new(id2))]);
        sub.send(&mut h, Packet::PubComp(Ack::new(id2)));
        assert_eq!(inflight_of(&h, "sub"), 0, "{version:?}");
        assert!(!sub.is_closed());
    }
}

/// v5: [MQTT-3.3.1-3]
/// v3.1.1: [MQTT-3.3.1-3]
#[test]
fn dup_of_the_incoming_publish_is_not_forwarded() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut h = Harness::new();
        let sub = h.connect(connect(version, "sub", true)).0;
        sub.subscribe(&mut h, "t", QoS::ExactlyOnce);
        let p = h.connect(connect(version, "p", true)).0;
        for (qos, id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
            let mut m = publish("t", "x", qos, id);
            m.dup = true;
            p.publish(&mut h, m);
        }
        let got = sub.publishes();
        assert_eq!(got.len(), 2, "{version:?}");
        assert!(
            got.iter().all(|g| !g.dup),
            "{version:?}: first delivery has DUP = 0"
        );
    }
}

/// v5: [MQTT-4.3.2-5]
#[test]
fn a_qos1_packet_id_reused_after_puback_is_a_new_message() {
    let mut h = Harness::new();
    let sub = h.v5("sub");
    sub.subscribe(&mut h, "t", QoS::AtLeastOnce);
    let p = h.v5("p");
    p.publish(&mut h, publish("t", "1", QoS::AtLeastOnce, 5));
    let mut again = publish("t", "2", QoS::AtLeastOnce, 5);
    again.dup = true;
    p.publish(&mut h, again);
    assert_eq!(p.packets(), vec![Packet::PubAck(Ack::new(pid(5))); 2]);
    let got = sub.publishes();
    assert_eq!(got.len(), 2, "DUP = 1 does not make it a duplicate");
    assert_eq!(
        (&got[0].payload[..], &got[1].payload[..]),
        (&b"1"[..], &b"2"[..])
    );
}
