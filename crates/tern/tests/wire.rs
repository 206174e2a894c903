//! Byte-exact checks over loopback TCP of answers that bundle several things: a multi-filter
//! SUBSCRIBE and UNSUBSCRIBE, data sent behind a refused CONNECT, a 23-byte Client Identifier.

mod raw;
mod support;

use raw::{CLEAN, PINGREQ, Wire, connect, connect_with, packet, publish_qos0, string, u16be};
use support::start_broker;
use tern_broker::BrokerConfig;
use tern_codec::ProtocolVersion;

use ProtocolVersion::{V3_1_1, V5};

/// A CONNECTed [`Wire`] at `version` whose CONNACK was read and checked.
async fn connected(addr: std::net::SocketAddr, version: ProtocolVersion, id: &str) -> Wire {
    let mut w = Wire::open(addr).await;
    w.send(&connect(version, id)).await;
    // 20 | Remaining Length (below 128) | flags 00 | return / reason code 00 | [v5: properties]
    let head = w.read(2).await;
    assert_eq!(head[0], 0x20, "{id}: CONNACK");
    let rest = w.read(usize::from(head[1])).await;
    assert_eq!(rest[..2], [0x00, 0x00], "{id}: CONNACK success");
    w
}

/// 3.1.1 SUBSCRIBE id 0x1234 with three filters ("a" QoS 2, the invalid "a/#/b" QoS 0, "b/+"
/// QoS 1): one SUBACK `90 05 12 34 02 80 01`, with the same id and the codes in filter order;
/// each valid filter then works as if subscribed alone. UNSUBSCRIBE id 0x4321 with two filters:
/// one UNSUBACK `B0 02 43 21`.
/// v3.1.1: [MQTT-2.3.1-7] [MQTT-3.8.4-2] [MQTT-3.8.4-4] [MQTT-3.9.3-1] [MQTT-3.10.4-4]
/// [MQTT-3.10.4-6]
#[tokio::test]
async fn v311_multi_filter_subscribe_gets_one_suback_in_order() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    let mut sub = connected(addr, V3_1_1, "sub").await;
    let subscribe = packet(
        0x82,
        &[
            &u16be(0x1234),
            &string(b"a"),
            &[0x02],
            &string(b"a/#/b"),
            &[0x00],
            &string(b"b/+"),
            &[0x01],
        ],
    );
    sub.send(&subscribe).await;
    assert_eq!(
        sub.read(7).await,
        [0x90, 0x05, 0x12, 0x34, 0x02, 0x80, 0x01]
    );
    let mut publisher = connected(addr, V3_1_1, "pub").await;
    publisher.send(&publish_qos0(V3_1_1, "b/x", b"p")).await;
    // 30 06 | 00 03 "b/x" | "p"
    assert_eq!(
        sub.read(8).await,
        [0x30, 0x06, 0x00, 0x03, b'b', b'/', b'x', b'p']
    );
    publisher.send(&publish_qos0(V3_1_1, "a", b"q")).await;
    assert_eq!(sub.read(6).await, [0x30, 0x04, 0x00, 0x01, b'a', b'q']);
    let unsubscribe = packet(0xA2, &[&u16be(0x4321), &string(b"a"), &string(b"b/+")]);
    sub.send(&unsubscribe).await;
    assert_eq!(sub.read(4).await, [0xB0, 0x02, 0x43, 0x21]);
    // Both filters are gone: the next thing the subscriber gets is its PINGRESP.
    publisher.send(&publish_qos0(V3_1_1, "b/x", b"p")).await;
    publisher.send(&publish_qos0(V3_1_1, "a", b"q")).await;
    publisher.send(&PINGREQ).await;
    assert_eq!(publisher.read(2).await, [0xD0, 0x00]);
    sub.send(&PINGREQ).await;
    assert_eq!(sub.read(2).await, [0xD0, 0x00]);
    drop((sub, publisher));
    server.shutdown().await;
}

/// A refused CONNECT followed, in the same write, by a PUBLISH: the CONNACK refuses, the
/// connection closes, and the PUBLISH reaches nobody.
/// v5: [MQTT-3.1.4-6]
/// v3.1.1: [MQTT-3.1.4-5]
#[tokio::test]
async fn data_after_a_refused_connect_is_not_processed() {
    for version in [V3_1_1, V5] {
        let server = start_broker(BrokerConfig::default()).await;
        let addr = server.local_addr();
        let mut observer = connected(addr, version, "observer").await;
        observer.send(&raw::subscribe(version, 1, "t", 0)).await;
        let suback_len = if version.is_v5() { 6 } else { 5 };
        let suback = observer.read(suback_len).await;
        assert_eq!(suback[0], 0x90);
        let (refused, connack): (Vec<u8>, &[u8]) = if version.is_v5() {
            // Authentication Method "SCRAM" is not supported: CONNACK 0x8C.
            let props = [&[0x15][..], &string(b"SCRAM")].concat();
            (
                connect_with(V5, CLEAN, 60, &props, "bad", &[]),
                &[0x20, 0x03, 0x00, 0x8C, 0x00],
            )
        } else {
            // Empty Client Identifier with Clean Session 0: return code 0x02.
            (
                connect_with(V3_1_1, 0x00, 60, &[], "", &[]),
                &[0x20, 0x02, 0x00, 0x02],
            )
        };
        let mut offender = Wire::open(addr).await;
        let bytes = [refused, publish_qos0(version, "t", b"sneaky")].concat();
        offender.send(&bytes).await;
        assert_eq!(offender.read(connack.len()).await, connack, "{version:?}");
        offender.expect_eof().await;
        // The observer's next packet is the answer to its PINGREQ, not the PUBLISH.
        observer.send(&PINGREQ).await;
        assert_eq!(observer.read(2).await, [0xD0, 0x00], "{version:?}");
        drop((observer, offender));
        server.shutdown().await;
    }
}

/// A Client Identifier of 23 bytes of 0-9, a-z, A-Z is accepted.
/// v5: [MQTT-3.1.3-5]
/// v3.1.1: [MQTT-3.1.3-5]
#[tokio::test]
async fn a_23_byte_client_identifier_is_accepted() {
    let server = start_broker(BrokerConfig::default()).await;
    let id = "0123456789abcdefXYZwxyz";
    assert_eq!(id.len(), 23);
    for version in [V3_1_1, V5] {
        let mut w = connected(server.local_addr(), version, id).await;
        w.send(&PINGREQ).await;
        assert_eq!(w.read(2).await, [0xD0, 0x00], "{version:?}");
    }
    server.shutdown().await;
}
