use bytes::Bytes;
use tern_codec::*;

use super::harness::*;

/// v5: [MQTT-3.3.2-12]
#[test]
fn inbound_topic_alias_maps_and_resolves() {
    let mut h = Harness::new();
    let s = h.v5("s");
    s.subscribe(&mut h, "long/topic", QoS::AtMostOnce);
    let (p, ack) = h.connect(connect(ProtocolVersion::V5, "p", true));
    assert_eq!(ack.properties.topic_alias_maximum, Some(64));
    let mut m = publish("long/topic", "1", QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(3);
    p.publish(&mut h, m.clone());
    m.topic = String::new();
    m.payload = Bytes::from_static(b"2");
    p.publish(&mut h, m);
    let got = s.publishes();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|g| g.topic == "long/topic" && g.properties.topic_alias.is_none())
    );
}

/// v5: [MQTT-3.2.2-17] [MQTT-3.3.2-8] [MQTT-3.3.2-9]
#[test]
fn topic_alias_zero_or_above_maximum_is_disconnect_0x94() {
    for alias in [0, 65] {
        let mut h = Harness::new();
        let p = h.v5("p");
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

#[test]
fn an_unknown_topic_alias_with_empty_topic_is_a_protocol_error() {
    let mut h = Harness::new();
    let p = h.v5("p");
    let mut m = publish("", "1", QoS::AtMostOnce, 0);
    m.properties.topic_alias = Some(5);
    p.publish(&mut h, m);
    assert_eq!(p.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
}

/// v5: [MQTT-3.1.2-26] [MQTT-3.1.2-27] [MQTT-3.3.2-8] [MQTT-3.3.2-11]
#[test]
fn outbound_topic_aliases_are_used_when_the_client_allows_them() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "s", true);
    c.properties.topic_alias_maximum = Some(1);
    let (s, _) = h.connect(c);
    s.subscribe(&mut h, "#", QoS::AtMostOnce);
    let p = h.v5("p");
    for t in ["a", "a", "b"] {
        p.publish(&mut h, publish(t, "x", QoS::AtMostOnce, 0));
    }
    let got = s.publishes();
    assert_eq!(
        (got[0].topic.as_str(), got[0].properties.topic_alias),
        ("a", Some(1))
    );
    assert_eq!(
        (got[1].topic.as_str(), got[1].properties.topic_alias),
        ("", Some(1))
    );
    assert_eq!(
        (got[2].topic.as_str(), got[2].properties.topic_alias),
        ("b", None),
        "no alias left"
    );
    // Without Topic Alias Maximum no alias is ever sent.
    let plain = h.v5("plain");
    plain.subscribe(&mut h, "a", QoS::AtMostOnce);
    p.publish(&mut h, publish("a", "x", QoS::AtMostOnce, 0));
    assert_eq!(plain.publishes()[0].properties.topic_alias, None);
}

/// v5: [MQTT-3.1.2-28]
#[test]
fn response_information_is_given_when_requested() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "r", true);
    c.properties.request_response_information = Some(1);
    let (_, ack) = h.connect(c);
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("response/r")
    );
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "q", true));
    assert_eq!(ack.properties.response_information, None);
}

/// v5: [MQTT-3.2.2-15] [MQTT-3.2.2-17]
#[test]
fn connack_advertises_limits() {
    let mut h = Harness::new();
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "c", true));
    assert_eq!(ack.properties.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(ack.properties.receive_maximum, Some(1024));
    assert_eq!(ack.properties.topic_alias_maximum, Some(64));
}

/// v5: [MQTT-3.3.4-6]
#[test]
fn publisher_subscription_identifier_is_a_protocol_error() {
    let mut h = Harness::new();
    let p = h.v5("p");
    let mut m = publish("t", "x", QoS::AtMostOnce, 0);
    m.properties.subscription_identifiers = vec![3];
    p.publish(&mut h, m);
    assert_eq!(p.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
}
