use std::time::Duration;

use tern_codec::*;

use super::harness::*;

fn with_will(h: &mut Harness, id: &str, delay: Option<u32>, expiry: Option<u32>) -> Client {
    let mut c = connect(ProtocolVersion::V5, id, true);
    let mut w = will("will/t", "bye");
    w.properties.will_delay_interval = delay;
    c.will = Some(w);
    c.properties.session_expiry_interval = expiry;
    h.connect(c).0
}

fn watcher(h: &mut Harness) -> Client {
    let w = h.v5("watcher");
    w.subscribe(h, "will/#", QoS::AtLeastOnce);
    w
}

/// v5: [MQTT-3.1.2-7] [MQTT-3.1.2-8]
#[test]
fn will_is_published_on_abnormal_close() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", None, None);
    h.broker.handle_closed(h.now, c.conn);
    let got = w.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(&got[0].payload[..], b"bye");
}

/// v5: [MQTT-3.1.2-8] [MQTT-3.1.2-10] [MQTT-3.14.4-3]
#[test]
fn will_is_not_published_on_normal_disconnect() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", None, None);
    c.send(&mut h, Packet::Disconnect(Disconnect::default()));
    h.broker.handle_closed(h.now, c.conn);
    assert!(w.publishes().is_empty());
}

/// v5: [MQTT-3.1.2-8]
#[test]
fn disconnect_with_will_message_publishes_the_will() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", None, None);
    c.send(
        &mut h,
        Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL)),
    );
    assert_eq!(w.publishes().len(), 1);
}

/// v5: [MQTT-3.1.2-8]
#[test]
fn will_is_published_on_protocol_error() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", None, None);
    c.send(&mut h, Packet::PingResp);
    assert!(c.is_closed());
    assert_eq!(w.publishes().len(), 1);
}

/// v3.1.1: [MQTT-3.1.2-7] [MQTT-3.1.2-8] [MQTT-3.1.2-17]
#[test]
fn will_retain_is_honoured() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V3_1_1, "c", true);
    let mut wl = will("will/r", "x");
    wl.retain = true;
    c.will = Some(wl);
    let (c, _) = h.connect(c);
    h.broker.handle_closed(h.now, c.conn);
    let late = h.v4("late");
    late.subscribe(&mut h, "will/r", QoS::AtLeastOnce);
    let got = late.publishes();
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
}

/// v5: [MQTT-3.1.2-8] [MQTT-3.1.3-9]
#[test]
fn will_delay_waits_and_a_reconnect_cancels_it() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", Some(10), Some(100));
    h.broker.handle_closed(h.now, c.conn);
    h.advance(Duration::from_secs(5));
    assert!(w.publishes().is_empty());
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "c", false));
    assert!(ack.session_present);
    h.advance(Duration::from_secs(20));
    assert!(w.publishes().is_empty(), "cancelled by the reconnect");
}

/// v5: [MQTT-3.1.2-8]
#[test]
fn will_delay_publishes_after_the_delay() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", Some(10), Some(100));
    h.broker.handle_closed(h.now, c.conn);
    h.advance(Duration::from_secs(9));
    assert!(w.publishes().is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(w.publishes().len(), 1);
}

/// v5: [MQTT-3.1.2-8]
#[test]
fn will_is_published_at_session_end_when_that_comes_before_the_delay() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let c = with_will(&mut h, "c", Some(60), Some(5));
    h.broker.handle_closed(h.now, c.conn);
    h.advance(Duration::from_secs(4));
    assert!(w.publishes().is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(w.publishes().len(), 1);
    assert_eq!(h.broker.stats().sessions, 1, "only the watcher is left");
}

/// v5: [MQTT-3.1.3-9]
#[test]
fn takeover_resuming_the_session_cancels_a_delayed_will() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let _old = with_will(&mut h, "c", Some(10), Some(100));
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "c", false));
    assert!(ack.session_present);
    h.advance(Duration::from_secs(30));
    assert!(w.publishes().is_empty());
}

/// v3.1.1: [MQTT-3.1.2-12]
#[test]
fn v311_without_the_will_flag_nothing_is_published_when_the_connection_ends() {
    let mut h = Harness::new();
    let w = h.v4("watcher");
    w.subscribe(&mut h, "#", QoS::AtLeastOnce);
    // Three connections without a will end abnormally: the network drops, a protocol
    // violation, a Keep Alive timeout.
    let dropped = h.v4("dropped");
    h.broker.handle_closed(h.now, dropped.conn);
    let violator = h.v4("violator");
    violator.send(&mut h, Packet::PingResp);
    assert!(violator.is_closed());
    let mut c = connect(ProtocolVersion::V3_1_1, "silent", true);
    c.keep_alive = 1;
    let (silent, _) = h.connect(c);
    h.advance(Duration::from_secs(2));
    assert!(silent.is_closed());
    assert!(w.publishes().is_empty(), "no will, nothing published");
    // The watcher does see a will when there is one.
    let mut c = connect(ProtocolVersion::V3_1_1, "with-will", true);
    c.will = Some(will("will/t", "bye"));
    let (with_will, _) = h.connect(c);
    h.broker.handle_closed(h.now, with_will.conn);
    let got = w.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].topic.as_str(), &got[0].payload[..]),
        ("will/t", &b"bye"[..])
    );
}

/// v5: [MQTT-3.1.3-10]
#[test]
fn will_user_properties_keep_their_order_when_published() {
    let mut h = Harness::new();
    let w = watcher(&mut h);
    let pairs: Vec<(String, String)> = [("z", "1"), ("a", "2"), ("z", "0"), ("m", "3"), ("a", "2")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut c = connect(ProtocolVersion::V5, "c", true);
    let mut wl = will("will/t", "bye");
    wl.properties.user_properties = pairs.clone();
    c.will = Some(wl);
    let (c, _) = h.connect(c);
    h.broker.handle_closed(h.now, c.conn);
    let got = w.publishes();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.user_properties, pairs);
}
