//! Connecting, staying connected and leaving, checked on the raw bytes over loopback TCP.

mod raw;
mod support;

use std::time::{Duration, Instant};

use raw::{CLEAN, PINGREQ, Wire, connect, connect_with, string, subscribe};
use support::{RawClient, start_broker, start_with};
use tern::Config;
use tern::config::ListenerConfig;
use tern_broker::BrokerConfig;
use tern_codec::{Packet, ProtocolVersion, ReasonCode};

use ProtocolVersion::{V3_1, V3_1_1, V5};

/// Connect flags: Will Flag (Will QoS 0, Will Retain 0).
const WILL: u8 = 0x04;

/// The will part of a CONNECT payload: [v5: empty Will Properties], topic, payload.
fn will(version: ProtocolVersion, topic: &str, payload: &[u8]) -> Vec<u8> {
    let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
    [props, &string(topic.as_bytes()), &string(payload)].concat()
}

/// A client connected at `version` (CONNACK checked), subscribed at QoS 0 to `filter`.
async fn subscriber(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    filter: &str,
) -> RawClient {
    let mut sub = RawClient::connect(addr).await;
    sub.send(&connect(version, "subscriber")).await;
    match sub.recv_packet(version).await {
        Ok(Some(Packet::ConnAck(ack))) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("subscriber: expected CONNACK, got {other:?}"),
    }
    sub.send(&subscribe(version, 1, filter, 0)).await;
    match sub.recv_packet(version).await {
        Ok(Some(Packet::SubAck(_))) => {}
        other => panic!("subscriber: expected SUBACK, got {other:?}"),
    }
    sub
}

/// The next packet of `client` is a PUBLISH of `payload` to `topic`.
async fn expect_publish(
    client: &mut RawClient,
    version: ProtocolVersion,
    topic: &str,
    payload: &[u8],
) {
    match client.recv_packet(version).await {
        Ok(Some(Packet::Publish(p))) => {
            assert_eq!(p.topic, topic);
            assert_eq!(&p.payload[..], payload);
        }
        other => panic!("expected a PUBLISH to {topic}, got {other:?}"),
    }
}

/// A connection that sends nothing is closed after the connect timeout, without any packet.
/// v5: [MQTT-3.1.0-1] (section 4.8 non-normative: close a connection that sends no CONNECT)
/// v3.1.1: [MQTT-3.1.0-1]
#[tokio::test]
async fn silent_connection_closed_after_connect_timeout() {
    let mut config = Config {
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
        }],
        ..support::in_memory()
    };
    config.server.connect_timeout_secs = 1;
    let server = start_with(config).await;
    let mut wire = Wire::open(server.local_addr()).await;
    let started = Instant::now();
    wire.expect_eof().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed <= Duration::from_millis(2000),
        "closed after {elapsed:?}"
    );
    drop(wire);
    server.shutdown().await;
}

/// A 3.1.1 CONNECT is accepted with CONNACK `20 02 00 00`: no session present, return code 0.
/// v3.1.1: [MQTT-3.1.4-4] [MQTT-3.2.2-1] [MQTT-3.2.0-1]
#[tokio::test]
async fn v311_connack_is_byte_exact() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut wire = Wire::open(server.local_addr()).await;
    // 10 0E | 00 04 "MQTT" | 04 | flags 02 | keep alive 60 | 00 02 "c1"
    let bytes = [
        0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, b'c',
        b'1',
    ];
    assert_eq!(&bytes[..], &connect(V3_1_1, "c1")[..]);
    wire.send(&bytes).await;
    assert_eq!(wire.read(4).await, [0x20, 0x02, 0x00, 0x00]);
    drop(wire);
    server.shutdown().await;
}

/// A 3.1 CONNECT (protocol name "MQIsdp", level 3) is accepted with CONNACK `20 02 00 00`.
/// v3.1.1: [MQTT-3.1.4-4] (3.1 has no numbered statements)
#[tokio::test]
async fn v31_connack_is_byte_exact() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut wire = Wire::open(server.local_addr()).await;
    // 10 10 | 00 06 "MQIsdp" | 03 | flags 02 | keep alive 60 | 00 02 "c1"
    let bytes = [
        0x10, 0x10, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x02, b'c', b'1',
    ];
    assert_eq!(&bytes[..], &connect(V3_1, "c1")[..]);
    wire.send(&bytes).await;
    assert_eq!(wire.read(4).await, [0x20, 0x02, 0x00, 0x00]);
    drop(wire);
    server.shutdown().await;
}

/// Clean Session 0: the first CONNACK says no session (`20 02 00 00`), a reconnect after
/// DISCONNECT resumes it (`20 02 01 00`), and Clean Session 1 discards it (`20 02 00 00`).
/// v3.1.1: [MQTT-3.2.2-3] [MQTT-3.2.2-2] [MQTT-3.1.2-4] [MQTT-3.2.2-1] [MQTT-3.1.2-6]
#[tokio::test]
async fn v311_session_present_on_resume() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    let persistent = connect_with(V3_1_1, 0x00, 60, &[], "keeper", &[]);

    let mut first = Wire::open(addr).await;
    first.send(&persistent).await;
    assert_eq!(first.read(4).await, [0x20, 0x02, 0x00, 0x00], "new session");
    first.send(&[0xE0, 0x00]).await;
    first.expect_eof().await;

    let mut second = Wire::open(addr).await;
    second.send(&persistent).await;
    assert_eq!(
        second.read(4).await,
        [0x20, 0x02, 0x01, 0x00],
        "resumed session"
    );
    second.send(&[0xE0, 0x00]).await;
    second.expect_eof().await;

    let mut third = Wire::open(addr).await;
    third
        .send(&connect_with(V3_1_1, CLEAN, 60, &[], "keeper", &[]))
        .await;
    assert_eq!(
        third.read(4).await,
        [0x20, 0x02, 0x00, 0x00],
        "clean session"
    );
    drop((first, second, third));
    server.shutdown().await;
}

/// 3.1.1, empty client id with Clean Session 0: CONNACK `20 02 00 02` (identifier rejected), close.
/// v3.1.1: [MQTT-3.1.3-8] [MQTT-3.2.2-4] [MQTT-3.2.2-5]
#[tokio::test]
async fn v311_empty_client_id_without_clean_session_is_rejected() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut wire = Wire::open(server.local_addr()).await;
    wire.send(&connect_with(V3_1_1, 0x00, 60, &[], "", &[]))
        .await;
    assert_eq!(wire.read(4).await, [0x20, 0x02, 0x00, 0x02]);
    wire.expect_eof().await;
    drop(wire);
    server.shutdown().await;
}

/// v5, empty client id: accepted with a unique Assigned Client Identifier in the CONNACK.
/// v5: [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16]
#[tokio::test]
async fn v5_empty_client_id_gets_assigned_identifier() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = RawClient::connect(server.local_addr()).await;
        client.send(&connect(V5, "")).await;
        match client.recv_packet(V5).await {
            Ok(Some(Packet::ConnAck(ack))) => {
                assert_eq!(ack.reason, ReasonCode::SUCCESS);
                assert!(!ack.session_present);
                let id = ack
                    .properties
                    .assigned_client_identifier
                    .clone()
                    .expect("Assigned Client Identifier in CONNACK");
                assert!(!id.is_empty());
                ids.push(id);
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        clients.push(client);
    }
    assert_ne!(ids[0], ids[1], "assigned identifiers are unique");
    drop(clients);
    server.shutdown().await;
}

/// v5, Keep Alive 60 above the configured maximum 30: CONNACK carries Server Keep Alive 30.
/// v5: no numbered statement (Server Keep Alive, section 3.2.2.3.14).
#[tokio::test]
async fn v5_keep_alive_above_maximum_gets_server_keep_alive() {
    let server = start_broker(BrokerConfig {
        max_keepalive: 30,
        ..BrokerConfig::default()
    })
    .await;
    let mut client = RawClient::connect(server.local_addr()).await;
    client
        .send(&connect_with(V5, CLEAN, 60, &[], "ka", &[]))
        .await;
    match client.recv_packet(V5).await {
        Ok(Some(Packet::ConnAck(ack))) => {
            assert_eq!(ack.reason, ReasonCode::SUCCESS);
            assert_eq!(ack.properties.server_keep_alive, Some(30));
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    drop(client);
    server.shutdown().await;
}

/// Runs the keepalive case at `version`: a client with Keep Alive 1 and a will goes silent; it
/// is disconnected after about 1.5 s and its will reaches a subscriber.
async fn keep_alive_timeout(version: ProtocolVersion) {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    let mut sub = subscriber(addr, version, "will/#").await;

    let mut silent = RawClient::connect(addr).await;
    silent
        .send(&connect_with(
            version,
            CLEAN | WILL,
            1,
            &[],
            "silent",
            &will(version, "will/silent", b"gone"),
        ))
        .await;
    match silent.recv_packet(version).await {
        Ok(Some(Packet::ConnAck(ack))) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let started = Instant::now();
    if version.is_v5() {
        match silent.recv_packet(version).await {
            Ok(Some(Packet::Disconnect(d))) => assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT),
            other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
        }
    }
    silent
        .expect_closed()
        .await
        .expect("closed after the keepalive timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed <= Duration::from_millis(3000),
        "disconnected after {elapsed:?}, expected about 1.5 s"
    );
    expect_publish(&mut sub, version, "will/silent", b"gone").await;
    drop((sub, silent));
    server.shutdown().await;
}

/// v5: silent for 1.5 × Keep Alive → DISCONNECT 0x8D, close, will published.
/// v5: [MQTT-3.1.2-22] [MQTT-3.1.2-8] [MQTT-4.13.2-1]
#[tokio::test]
async fn v5_keep_alive_timeout_disconnects_and_publishes_will() {
    keep_alive_timeout(V5).await;
}

/// v3.1.1: silent for 1.5 × Keep Alive → closed without a packet, will published.
/// v3.1.1: [MQTT-3.1.2-24] [MQTT-3.1.2-8]
#[tokio::test]
async fn v311_keep_alive_timeout_closes_and_publishes_will() {
    keep_alive_timeout(V3_1_1).await;
}

/// PINGREQ `c0 00` is answered with PINGRESP `d0 00`, in both versions.
/// v5: [MQTT-3.12.4-1]
/// v3.1.1: [MQTT-3.12.4-1]
#[tokio::test]
async fn pingreq_gets_pingresp() {
    let server = start_broker(BrokerConfig::default()).await;
    for (version, connack) in [
        (V3_1_1, &[0x20, 0x02, 0x00, 0x00][..]),
        // v5 CONNACK: flags, reason, then properties whose length we read but do not judge.
        (V5, &[0x20][..]),
    ] {
        let mut wire = Wire::open(server.local_addr()).await;
        wire.send(&connect(version, "pinger")).await;
        let head = wire.read(connack.len()).await;
        assert_eq!(head, connack);
        if version.is_v5() {
            let len = wire.read(1).await[0];
            assert!(len < 0x80, "short CONNACK");
            let body = wire.read(usize::from(len)).await;
            assert_eq!(&body[..2], &[0x00, 0x00], "session present 0, success");
        }
        wire.send(&PINGREQ).await;
        assert_eq!(wire.read(2).await, [0xD0, 0x00], "{version:?}");
        wire.send(&PINGREQ).await;
        assert_eq!(wire.read(2).await, [0xD0, 0x00], "{version:?}");
    }
    server.shutdown().await;
}

/// v5 DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will; a normal
/// DISCONNECT (0x00) discards it.
/// v5: [MQTT-3.14.4-3] [MQTT-3.1.2-8] [MQTT-3.1.2-10]
#[tokio::test]
async fn v5_disconnect_with_will_publishes_the_will() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    let mut sub = subscriber(addr, V5, "will/#").await;

    for (client_id, reason, payload) in [
        ("normal", 0x00, b"discarded"),
        ("leaver", 0x04, b"published"),
    ] {
        let mut client = RawClient::connect(addr).await;
        client
            .send(&connect_with(
                V5,
                CLEAN | WILL,
                60,
                &[],
                client_id,
                &will(V5, "will/leaver", payload),
            ))
            .await;
        match client.recv_packet(V5).await {
            Ok(Some(Packet::ConnAck(ack))) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        // DISCONNECT, Remaining Length 1, the reason code.
        client.send(&[0xE0, 0x01, reason]).await;
        client
            .expect_closed()
            .await
            .expect("closed after DISCONNECT");
    }
    // Only the will of the 0x04 DISCONNECT arrives: it is the first PUBLISH the subscriber sees.
    expect_publish(&mut sub, V5, "will/leaver", b"published").await;
    drop(sub);
    server.shutdown().await;
}

/// v5 AUTH (`f0 00`) without an Authentication Method in CONNECT: DISCONNECT 0x82, close.
/// v5: [MQTT-4.12.0-7] [MQTT-4.13.1-1]
#[tokio::test]
async fn v5_auth_without_method_is_a_protocol_error() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut client = RawClient::connect(server.local_addr()).await;
    client.send(&connect(V5, "auth")).await;
    match client.recv_packet(V5).await {
        Ok(Some(Packet::ConnAck(ack))) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client.send(&[0xF0, 0x00]).await;
    match client.recv_packet(V5).await {
        Ok(Some(Packet::Disconnect(d))) => assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    client
        .expect_closed()
        .await
        .expect("closed after DISCONNECT");
    drop(client);
    server.shutdown().await;
}

/// v5 CONNECT with an Authentication Method the broker does not support: CONNACK `20 03 00 8C 00`
/// (Bad authentication method), then close.
/// v5: [MQTT-4.12.0-1] [MQTT-3.2.2-6] [MQTT-3.2.2-7]
#[tokio::test]
async fn v5_connect_with_authentication_method_is_refused() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut wire = Wire::open(server.local_addr()).await;
    // Properties: 15 (Authentication Method) 00 05 "SCRAM".
    let props = [&[0x15][..], &string(b"SCRAM")].concat();
    wire.send(&connect_with(V5, CLEAN, 60, &props, "auth", &[]))
        .await;
    assert_eq!(wire.read(5).await, [0x20, 0x03, 0x00, 0x8C, 0x00]);
    wire.expect_eof().await;
    drop(wire);
    server.shutdown().await;
}
