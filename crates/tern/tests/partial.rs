//! Packets that do not arrive one per read: split into single bytes, coalesced into one write,
//! or large and spread over many writes. TCP is a byte stream; the broker must not care.

mod raw;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use raw::{PINGREQ, connect, packet, publish_qos0, string, subscribe, u16be};
use support::{RawClient, start_broker};
use tern_broker::BrokerConfig;
use tern_codec::{Packet, ProtocolVersion, ReasonCode};

use ProtocolVersion::{V3_1_1, V5};

/// A client connected at `version` (CONNACK checked) and subscribed at QoS 1 to `filter`.
async fn subscriber(addr: SocketAddr, version: ProtocolVersion, filter: &str) -> RawClient {
    let mut sub = connected(addr, version, "subscriber").await;
    sub.send(&subscribe(version, 1, filter, 1)).await;
    match sub.recv_packet(version).await {
        Ok(Some(Packet::SubAck(_))) => {}
        other => panic!("subscriber: expected SUBACK, got {other:?}"),
    }
    sub
}

/// A client connected at `version` with its CONNACK checked.
async fn connected(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> RawClient {
    let mut client = RawClient::connect(addr).await;
    client.send(&connect(version, client_id)).await;
    expect_connack(&mut client, version).await;
    client
}

async fn expect_connack(client: &mut RawClient, version: ProtocolVersion) {
    match client.recv_packet(version).await {
        Ok(Some(Packet::ConnAck(ack))) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
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
            assert_eq!(p.payload.len(), payload.len(), "payload length");
            assert!(&p.payload[..] == payload, "payload differs");
        }
        other => panic!("expected a PUBLISH to {topic}, got {other:?}"),
    }
}

/// A QoS 1 PUBLISH of `payload` to `topic` with packet id `id`.
fn publish_qos1(version: ProtocolVersion, topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
    packet(
        0x32,
        &[&string(topic.as_bytes()), &u16be(id), props, payload],
    )
}

/// A CONNECT and then a QoS 1 PUBLISH, each sent one byte per write with a pause between
/// bytes: the CONNECT is accepted, the PUBLISH acknowledged and delivered.
/// v5: [MQTT-4.2.0-1] [MQTT-3.3.4-1]
/// v3.1.1: [MQTT-7.1.1-1] [MQTT-3.3.4-1]
#[tokio::test]
async fn packets_sent_one_byte_at_a_time_are_handled() {
    for version in [V5, V3_1_1] {
        let server = start_broker(BrokerConfig::default()).await;
        let addr = server.local_addr();
        let mut sub = subscriber(addr, version, "partial/#").await;

        let mut publisher = RawClient::connect(addr).await;
        let bytes = [
            connect(version, "trickle"),
            publish_qos1(version, "partial/slow", 7, b"one byte at a time"),
        ];
        for byte in bytes.concat() {
            publisher.send(&[byte]).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        expect_connack(&mut publisher, version).await;
        match publisher.recv_packet(version).await {
            Ok(Some(Packet::PubAck(ack))) => {
                assert_eq!(ack.packet_id.get(), 7);
                assert_eq!(ack.reason, ReasonCode::SUCCESS);
            }
            other => panic!("{version:?}: expected PUBACK 7, got {other:?}"),
        }
        expect_publish(&mut sub, version, "partial/slow", b"one byte at a time").await;
        drop((sub, publisher));
        server.shutdown().await;
    }
}

/// Several packets in one write are all handled, in order: CONNECT + SUBSCRIBE + PINGREQ get
/// CONNACK, SUBACK, PINGRESP; two PUBLISHes in one write are both delivered, in order.
/// v5: [MQTT-4.2.0-1] [MQTT-4.6.0-5] [MQTT-3.8.4-1] [MQTT-3.12.4-1]
/// v3.1.1: [MQTT-7.1.1-1] [MQTT-4.6.0-6] [MQTT-3.8.4-1] [MQTT-3.12.4-1]
#[tokio::test]
async fn packets_coalesced_in_one_write_are_all_handled() {
    for version in [V5, V3_1_1] {
        let server = start_broker(BrokerConfig::default()).await;
        let addr = server.local_addr();

        let mut sub = RawClient::connect(addr).await;
        sub.send(
            &[
                connect(version, "subscriber"),
                subscribe(version, 3, "partial/#", 0),
                PINGREQ.to_vec(),
            ]
            .concat(),
        )
        .await;
        expect_connack(&mut sub, version).await;
        match sub.recv_packet(version).await {
            Ok(Some(Packet::SubAck(ack))) => assert_eq!(ack.packet_id.get(), 3),
            other => panic!("{version:?}: expected SUBACK 3, got {other:?}"),
        }
        match sub.recv_packet(version).await {
            Ok(Some(Packet::PingResp)) => {}
            other => panic!("{version:?}: expected PINGRESP, got {other:?}"),
        }

        let mut publisher = connected(addr, version, "publisher").await;
        publisher
            .send(
                &[
                    publish_qos0(version, "partial/one", b"first"),
                    publish_qos0(version, "partial/two", b"second"),
                ]
                .concat(),
            )
            .await;
        expect_publish(&mut sub, version, "partial/one", b"first").await;
        expect_publish(&mut sub, version, "partial/two", b"second").await;
        drop((sub, publisher));
        server.shutdown().await;
    }
}

/// A 64 KiB payload written in 1000-byte pieces, the first cut inside the Remaining Length, is
/// delivered intact.
/// v5: [MQTT-4.2.0-1] [MQTT-4.5.0-1]
/// v3.1.1: [MQTT-7.1.1-1] [MQTT-4.5.0-1]
#[tokio::test]
async fn large_payload_over_many_writes_is_delivered_intact() {
    for version in [V5, V3_1_1] {
        let server = start_broker(BrokerConfig::default()).await;
        let addr = server.local_addr();
        let mut sub = subscriber(addr, version, "partial/#").await;
        let mut publisher = connected(addr, version, "publisher").await;

        let payload: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let bytes = publish_qos1(version, "partial/big", 9, &payload);
        // 32 | Remaining Length in three bytes: cut after the first of them.
        assert_eq!(bytes[0], 0x32);
        assert!(bytes[1] & 0x80 != 0 && bytes[2] & 0x80 != 0 && bytes[3] & 0x80 == 0);
        publisher.send(&bytes[..2]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for piece in bytes[2..].chunks(1000) {
            publisher.send(piece).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match publisher.recv_packet(version).await {
            Ok(Some(Packet::PubAck(ack))) => assert_eq!(ack.packet_id.get(), 9),
            other => panic!("{version:?}: expected PUBACK 9, got {other:?}"),
        }
        expect_publish(&mut sub, version, "partial/big", &payload).await;
        drop((sub, publisher));
        server.shutdown().await;
    }
}
