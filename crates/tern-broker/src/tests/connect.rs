use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tern_codec::*;

use super::harness::*;
use crate::Global;

/// v5: [MQTT-3.1.0-1] [MQTT-3.14.0-1]
/// v3.1.1: [MQTT-3.1.0-1]
#[test]
fn a_first_packet_other_than_connect_closes_the_connection() {
    let mut h = Harness::new();
    let c = h.open();
    c.send(&mut h, Packet::PingReq);
    assert_eq!(c.take(), vec![Out::Closed]);
}

/// v5: [MQTT-3.1.0-2]
/// v3.1.1: [MQTT-3.1.0-2]
#[test]
fn a_second_connect_is_a_protocol_error() {
    let mut h = Harness::new();
    let c = h.v5("c");
    c.send(
        &mut h,
        Packet::Connect(Box::new(connect(ProtocolVersion::V5, "c", true))),
    );
    assert_eq!(c.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(c.is_closed());
    let c4 = h.v4("d");
    c4.send(
        &mut h,
        Packet::Connect(Box::new(connect(ProtocolVersion::V3_1_1, "d", true))),
    );
    assert_eq!(
        c4.take(),
        vec![Out::Closed],
        "v3.1.1 is closed without DISCONNECT"
    );
}

/// v5: [MQTT-3.1.4-5] [MQTT-3.2.0-1] [MQTT-3.2.2-2]
/// v3.1.1: [MQTT-3.2.0-1] [MQTT-3.2.2-1]
#[test]
fn connack_is_the_first_packet_sent_and_clean_start_has_no_session() {
    let mut h = Harness::new();
    for v in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let (_, ack) = h.connect(connect(v, "c", true));
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        assert!(!ack.session_present);
    }
}

/// v5: [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16]
#[test]
fn empty_client_id_is_assigned_for_v5() {
    let mut h = Harness::new();
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "", false));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    let id = ack
        .properties
        .assigned_client_identifier
        .clone()
        .expect("assigned id");
    assert!(id.starts_with("tern-"));
    let (_, ack2) = h.connect(connect(ProtocolVersion::V5, "", true));
    assert_ne!(ack2.properties.assigned_client_identifier, Some(id));
}

/// The shards of one broker draw connection and session ids and assigned client ids from one
/// source: none is handed out twice, and a session id names its shard; shared groups are one
/// set for every shard.
#[test]
fn two_brokers_sharing_ids_never_hand_out_the_same_id() {
    let global = Arc::new(Global::with_shards(2));
    let mut shards = [Harness::shard(&global, 0), Harness::shard(&global, 1)];
    let (mut conns, mut assigned) = (HashSet::new(), HashSet::new());
    for i in 0..50 {
        for h in &mut shards {
            let (c, ack) = h.connect(connect(ProtocolVersion::V5, "", true));
            assert!(conns.insert(c.conn));
            let id = ack.properties.assigned_client_identifier.clone();
            let id = id.expect("assigned");
            assert!(assigned.insert(id));
            let named = h.v4(&format!("c{i}"));
            assert!(conns.insert(named.conn));
            named.subscribe(h, &format!("$share/g{i}/t"), QoS::AtMostOnce);
        }
    }
    let mut sessions = HashSet::new();
    for (shard, h) in shards.iter().enumerate() {
        assert_eq!(h.broker.sessions.len(), 100);
        for &sid in h.broker.sessions.keys() {
            assert_eq!(sid.shard(), shard);
            assert!(sessions.insert(sid));
        }
    }
    // A share name and filter make one group whichever shards its members live in.
    let shared = global.shared_mut();
    assert_eq!(shared.groups.len(), 50);
    for group in shared.groups.values() {
        let shards: HashSet<_> = group.members.iter().map(|m| m.sid.shard()).collect();
        assert_eq!(shards.len(), 2);
    }
}

/// v3.1.1: [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.1.3-8]
#[test]
fn empty_client_id_needs_clean_session_in_v311() {
    let mut h = Harness::new();
    let (c, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "", false));
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert_eq!(ack.reason.to_v3_connack(), 0x02);
    assert!(c.is_closed());
    let (_, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "", true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.assigned_client_identifier, None,
        "v3 has no properties"
    );
}

/// v3.1.1: [MQTT-3.1.2-4] [MQTT-3.1.2-6] [MQTT-3.1.3-2] [MQTT-3.1.4-3] [MQTT-3.2.2-2]
/// [MQTT-3.2.2-3] [MQTT-4.1.0-1] [MQTT-4.1.0-2]
#[test]
fn session_present_reflects_the_stored_session() {
    let mut h = Harness::new();
    // No session yet: present = 0 even with clean start 0.
    let (c, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "p", false));
    assert!(!ack.session_present);
    c.subscribe(&mut h, "t", QoS::AtLeastOnce);
    c.send(&mut h, Packet::Disconnect(Disconnect::default()));
    // Resumed: present = 1 and the subscription still routes.
    let (c, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "p", false));
    assert!(ack.session_present);
    let p = h.v4("pub");
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 1));
    assert_eq!(c.publishes().len(), 1);
    c.send(&mut h, Packet::Disconnect(Disconnect::default()));
    // Clean start discards it: present = 0 and nothing routes.
    let (c, ack) = h.connect(connect(ProtocolVersion::V3_1_1, "p", true));
    assert!(!ack.session_present);
    p.publish(&mut h, publish("t", "x", QoS::AtLeastOnce, 2));
    assert!(c.publishes().is_empty());
}

/// v5: [MQTT-3.1.2-8] [MQTT-3.1.4-3]
#[test]
fn a_new_connection_with_the_same_id_takes_over_and_the_old_will_is_sent() {
    let mut h = Harness::new();
    let watcher = h.v5("w");
    watcher.subscribe(&mut h, "will/#", QoS::AtMostOnce);
    let mut first = connect(ProtocolVersion::V5, "dup", true);
    first.will = Some(will("will/dup", "gone"));
    let (old, _) = h.connect(first);
    let (new, ack) = h.connect(connect(ProtocolVersion::V5, "dup", true));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        old.disconnect_reason(),
        Some(ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(old.is_closed());
    assert_eq!(watcher.publishes()[0].topic, "will/dup");
    // The old connection's later close does not disturb the new one.
    h.broker.handle_closed(h.now, old.conn);
    new.send(&mut h, Packet::PingReq);
    assert_eq!(new.packets(), vec![Packet::PingResp]);
}

/// v5: [MQTT-3.1.2-22] [MQTT-3.2.2-22] [MQTT-3.12.4-1] [MQTT-3.14.2-1]
#[test]
fn keepalive_closes_after_one_and_a_half_periods_of_silence() {
    let mut h = Harness::new();
    let watcher = h.v5("w");
    watcher.subscribe(&mut h, "will", QoS::AtMostOnce);
    let mut c = connect(ProtocolVersion::V5, "ka", true);
    c.keep_alive = 10;
    c.will = Some(will("will", "timeout"));
    let (c, _) = h.connect(c);
    h.advance(Duration::from_secs(14));
    c.send(&mut h, Packet::PingReq);
    assert_eq!(c.packets(), vec![Packet::PingResp]);
    // 14 s after that ping is still inside 15 s.
    h.advance(Duration::from_secs(14));
    assert!(!c.is_closed());
    h.advance(Duration::from_millis(1001));
    assert_eq!(c.disconnect_reason(), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    assert!(c.is_closed());
    assert_eq!(
        watcher.publishes().len(),
        1,
        "will sent on keepalive timeout"
    );
}

/// v5: no numbered statement (Server Keep Alive, section 3.2.2.3.14).
/// v3.1.1: no numbered statement; return code 0x02 for a refused Keep Alive is at odds with
/// [MQTT-3.2.2-6] (see docs/conformance.md).
#[test]
fn server_keep_alive_caps_a_v5_client_and_refuses_a_v3_one() {
    let mut h = Harness::with(crate::BrokerConfig {
        max_keepalive: 60,
        ..Default::default()
    });
    let mut c = connect(ProtocolVersion::V5, "a", true);
    c.keep_alive = 600;
    let (_, ack) = h.connect(c);
    assert_eq!(ack.properties.server_keep_alive, Some(60));
    let mut c = connect(ProtocolVersion::V3_1_1, "b", true);
    c.keep_alive = 600;
    let (c, ack) = h.connect(c);
    assert_eq!(ack.reason.to_v3_connack(), 0x02);
    assert!(c.is_closed());
}

/// v5: [MQTT-3.1.4-2] [MQTT-3.2.2-7] [MQTT-4.12.0-1] [MQTT-4.12.0-4]
#[test]
fn an_auth_method_is_refused_with_bad_authentication_method() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "a", true);
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (c, ack) = h.connect(c);
    assert_eq!(ack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(c.is_closed());
}

/// v5: [MQTT-4.12.0-7]
#[test]
fn auth_without_a_method_is_a_protocol_error() {
    let mut h = Harness::new();
    let c = h.v5("a");
    c.send(&mut h, Packet::Auth(Auth::default()));
    assert_eq!(c.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
}

/// v3.1.1: [MQTT-3.1.2-2] [MQTT-3.2.2-4]
#[test]
fn an_unsupported_protocol_level_gets_connack_0x01_and_close() {
    let mut h = Harness::new();
    let c = h.open();
    let v = Violation::new(
        "MQTT-3.1.2-2",
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        "level 6",
    );
    h.broker.handle_violation(h.now, c.conn, v, None);
    match c.take().as_slice() {
        [Out::Packet(Packet::ConnAck(a)), Out::Closed] => {
            assert_eq!(a.reason.to_v3_connack(), 0x01);
            assert!(!a.session_present);
        }
        other => panic!("{other:?}"),
    }
}

/// v5: [MQTT-3.1.2-3] [MQTT-3.14.0-1] [MQTT-4.13.1-1]
/// v3.1.1: [MQTT-3.1.4-1]
#[test]
fn a_malformed_v5_connect_gets_a_connack_with_the_reason() {
    let mut h = Harness::new();
    let c = h.open();
    let v = Violation::malformed("MQTT-3.1.2-3", "reserved flag");
    h.broker
        .handle_violation(h.now, c.conn, v.clone(), Some(ProtocolVersion::V5));
    assert!(
        matches!(c.take().as_slice(), [Out::Packet(Packet::ConnAck(a)), Out::Closed] if a.reason == ReasonCode::MALFORMED_PACKET)
    );
    let c = h.open();
    h.broker
        .handle_violation(h.now, c.conn, v, Some(ProtocolVersion::V3_1_1));
    assert_eq!(c.take(), vec![Out::Closed], "3.1.1 closes without CONNACK");
}

/// v5: no numbered statement (section 3.14.2.2.2: a Session Expiry Interval on DISCONNECT when
/// CONNECT had 0 is a Protocol Error).
#[test]
fn disconnect_cannot_turn_on_session_expiry() {
    let mut h = Harness::new();
    let c = h.v5("a");
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(100);
    c.send(&mut h, Packet::Disconnect(d));
    assert_eq!(c.disconnect_reason(), Some(ReasonCode::PROTOCOL_ERROR));
}

/// v5: [MQTT-3.1.2-5] [MQTT-3.1.2-6] [MQTT-3.1.2-23] [MQTT-3.2.2-3] [MQTT-4.1.0-1] [MQTT-4.1.0-2]
#[test]
fn a_session_ends_when_its_expiry_interval_passes() {
    let mut h = Harness::new();
    let mut c = connect(ProtocolVersion::V5, "s", true);
    c.properties.session_expiry_interval = Some(30);
    let (c, _) = h.connect(c);
    c.subscribe(&mut h, "t", QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, c.conn);
    h.advance(Duration::from_secs(29));
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "s", false));
    assert!(ack.session_present, "still there after 29 s");
    let s = h.broker.by_client_id["s"];
    let conn = h.broker.sessions[&s].conn.unwrap();
    h.broker.handle_closed(h.now, conn);
    h.advance(Duration::from_secs(31));
    assert_eq!(h.broker.stats().sessions, 0);
    let (_, ack) = h.connect(connect(ProtocolVersion::V5, "s", false));
    assert!(!ack.session_present);
}

/// v5: [MQTT-3.14.2-1]
#[test]
fn server_shutdown_tells_v5_clients_and_closes_all() {
    let mut h = Harness::new();
    let a = h.v5("a");
    let b = h.v4("b");
    h.broker.shutdown(h.now);
    assert_eq!(
        a.disconnect_reason(),
        Some(ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert!(a.is_closed());
    assert_eq!(b.take(), vec![Out::Closed]);
}

/// v5: [MQTT-3.2.2-13]
#[test]
fn a_retained_will_is_refused_when_retain_is_not_available() {
    let mut h = Harness::with(crate::BrokerConfig {
        retain_available: false,
        ..Default::default()
    });
    let mut c = connect(ProtocolVersion::V5, "w", true);
    let mut w = will("will/t", "x");
    w.retain = true;
    c.will = Some(w);
    let (c, ack) = h.connect(c);
    assert_eq!(ack.reason, ReasonCode::RETAIN_NOT_SUPPORTED);
    assert!(c.is_closed());
}
