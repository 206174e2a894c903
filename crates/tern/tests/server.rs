//! Server lifecycle and connection handling, end to end over loopback TCP.

mod support;

use std::time::{Duration, Instant};

use support::{RawClient, start_broker, start_with};
use tern::config::ListenerConfig;
use tern::{Config, Server};
use tern_broker::BrokerConfig;

#[tokio::test]
async fn start_refuses_no_listeners() {
    let config = Config {
        listeners: Vec::new(),
        ..support::in_memory()
    };
    let err = Server::start(config)
        .await
        .err()
        .expect("no listeners is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn start_names_an_address_it_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = Config {
        listeners: vec![ListenerConfig { bind: addr }],
        ..support::in_memory()
    };
    let err = Server::start(config)
        .await
        .err()
        .expect("address in use is an error");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn binds_every_listener_in_order() {
    let any = |_| ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
    };
    let server = start_with(Config {
        listeners: (0..2).map(any).collect(),
        ..support::in_memory()
    })
    .await;
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(server.local_addr(), addrs[0]);
    for addr in addrs {
        assert_ne!(addr.port(), 0);
        let mut client = RawClient::connect(addr).await;
        client.shutdown_write().await;
        client.expect_closed().await.expect("closed after EOF");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_connect_timeout() {
    let mut config = Config {
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
        }],
        ..support::in_memory()
    };
    config.server.connect_timeout_secs = 1;
    let server = start_with(config).await;
    let mut client = RawClient::connect(server.local_addr()).await;
    let started = Instant::now();
    client
        .expect_closed()
        .await
        .expect("closed by the connect timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_first_packet_closes_the_connection() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut client = RawClient::connect(server.local_addr()).await;
    // Reserved packet type 0 with a zero length: malformed whatever the protocol level.
    client.send(&[0x00, 0x00]).await;
    client
        .expect_closed()
        .await
        .expect("closed after a malformed packet");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_open_connections() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut client = RawClient::connect(server.local_addr()).await;
    let started = Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    client.expect_closed().await.expect("closed by shutdown");
}

/// On a core of several shards a connection opens in one shard and moves to its client id's
/// shard when its CONNECT is read, with whatever the client sent behind the CONNECT in the
/// same write; a second connection with the same id, opened wherever, lands in that shard too
/// and takes the session over.
#[tokio::test]
async fn a_connection_moves_to_its_client_ids_shard_with_its_pipelined_packets() {
    use tern_codec::{
        Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    };
    let v5 = ProtocolVersion::V5;
    let mut config = support::in_memory();
    config.listeners = vec![ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
    }];
    config.server.core_shards = 4;
    let server = start_with(config).await;
    let addr = server.local_addr();
    for n in 0..8u16 {
        let id = format!("placed-{n}");
        let topic = format!("placed/{n}");
        let mut bytes = bytes::BytesMut::new();
        Packet::Connect(Box::new(Connect::new(v5, &id))).encode(v5, &mut bytes);
        Packet::Subscribe(Subscribe {
            packet_id: tern_codec::PacketId::new(1).unwrap(),
            properties: Default::default(),
            filters: vec![(topic.clone(), SubscriptionOptions::new(QoS::AtLeastOnce))],
        })
        .encode(v5, &mut bytes);
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.clone(),
            packet_id: Some(tern_codec::PacketId::new(2).unwrap()),
            properties: Default::default(),
            payload: bytes::Bytes::from_static(b"echo"),
        })
        .encode(v5, &mut bytes);
        let mut first = RawClient::connect(addr).await;
        first.send(&bytes).await;
        let mut kinds = Vec::new();
        for _ in 0..4 {
            match first.recv_packet(v5).await.expect("answer").expect("open") {
                Packet::ConnAck(a) => {
                    assert_eq!(a.reason, ReasonCode::SUCCESS);
                    kinds.push("connack");
                }
                Packet::SubAck(_) => kinds.push("suback"),
                Packet::PubAck(_) => kinds.push("puback"),
                Packet::Publish(p) => {
                    assert_eq!(&p.payload[..], b"echo");
                    kinds.push("publish");
                }
                other => panic!("{id}: unexpected {other:?}"),
            }
        }
        kinds[2..].sort();
        assert_eq!(kinds, ["connack", "suback", "puback", "publish"], "{id}");

        let mut second = RawClient::connect(addr).await;
        second
            .send_packet(&Packet::Connect(Box::new(Connect::new(v5, &id))), v5)
            .await;
        match second.recv_packet(v5).await.expect("answer") {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason, ReasonCode::SUCCESS),
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
        match first.recv_packet(v5).await.expect("answer") {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
            other => panic!("{id}: expected DISCONNECT, got {other:?}"),
        }
    }
    server.shutdown().await;
}
