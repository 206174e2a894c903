//! `tern-client` against an in-process broker: connect, subscribe, publish at every QoS,
//! automatic acknowledgments and pipelined publishes.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{TIMEOUT, start_broker};
use tern_broker::BrokerConfig;
use tern_client::{
    Client, ClientError, ConnectOptions, MessageHandler, ProtocolVersion, Publish, QoS,
};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

async fn connect(addr: std::net::SocketAddr, version: ProtocolVersion, id: &str) -> Client {
    let (client, connack) = Client::connect(addr, ConnectOptions::new(version, id))
        .await
        .expect("connects");
    assert!(!connack.session_present);
    client
}

async fn recv(client: &mut Client) -> Publish {
    tokio::time::timeout(TIMEOUT, client.recv())
        .await
        .expect("a message within the timeout")
        .expect("connection still open")
}

#[tokio::test]
async fn round_trip_at_every_qos_and_version() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    for version in VERSIONS {
        let mut sub = connect(addr, version, "sub").await;
        let publisher = connect(addr, version, "pub").await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("t/{}/{}", version as u8, qos as u8);
            sub.subscribe(topic.clone(), qos).await.expect("subscribed");
            let payload = Bytes::from(format!("hello {qos:?}"));
            publisher
                .publish(topic.clone(), payload.clone(), qos, false)
                .await
                .expect("publish completes");
            let got = recv(&mut sub).await;
            assert_eq!((got.topic.as_str(), got.qos), (topic.as_str(), qos));
            assert_eq!(got.payload, payload);
        }
        publisher.disconnect().await.expect("clean disconnect");
        sub.disconnect().await.expect("clean disconnect");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_handler_takes_every_delivery_in_order_and_acknowledges_it() {
    // One message in flight per subscriber: the broker sends the next QoS 1 or 2 message only
    // once the previous one was acknowledged, so all arriving proves the handler path acks.
    let server = start_broker(BrokerConfig {
        max_inflight: 1,
        ..BrokerConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = ConnectOptions {
        on_message: Some(MessageHandler::new(move |p: Publish| {
            let _ = tx.send((p.qos, p.payload));
        })),
        ..ConnectOptions::new(ProtocolVersion::V5, "handled")
    };
    let (mut sub, _) = Client::connect(addr, options).await.expect("connects");
    sub.subscribe("h/#", QoS::ExactlyOnce)
        .await
        .expect("subscribed");
    let publisher = connect(addr, ProtocolVersion::V5, "pub").await;
    // Thirty messages, QoS 0, 1 and 2 in turn, numbered.
    let sent: Vec<(QoS, Bytes)> = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
        .map(|(i, qos)| (qos, Bytes::from(i.to_string())))
        .collect();
    for (qos, payload) in &sent {
        publisher
            .publish("h/t", payload.clone(), *qos, false)
            .await
            .expect("publish completes");
    }
    for expected in sent {
        let got = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("a message within the timeout")
            .expect("handler alive");
        assert_eq!(got, expected);
    }
    // The handler took them all: nothing waits in the queue `recv` reads.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sub.recv())
            .await
            .is_err()
    );
    publisher.disconnect().await.expect("clean disconnect");
    sub.disconnect().await.expect("clean disconnect");
    server.shutdown().await;
}

#[tokio::test]
async fn deliveries_are_acknowledged_automatically() {
    // With a window of one in flight per subscriber, the broker only sends the next QoS 1 or 2
    // message once the previous one was acknowledged: all arriving proves the acks flow.
    let broker = BrokerConfig {
        max_inflight: 1,
        ..BrokerConfig::default()
    };
    let server = start_broker(broker).await;
    let addr = server.local_addr();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut sub = connect(addr, ProtocolVersion::V5, "acks-sub").await;
        sub.subscribe("acks/#", qos).await.expect("subscribed");
        let publisher = connect(addr, ProtocolVersion::V5, "acks-pub").await;
        for i in 0..20u32 {
            publisher
                .publish("acks/x", Bytes::from(i.to_be_bytes().to_vec()), qos, false)
                .await
                .expect("publish completes");
        }
        for i in 0..20u32 {
            let got = recv(&mut sub).await;
            assert_eq!(got.payload.as_ref(), i.to_be_bytes(), "{qos:?} message {i}");
        }
        publisher.disconnect().await.expect("disconnect");
        sub.disconnect().await.expect("disconnect");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn pipelined_publishes_stay_within_the_window() {
    let broker = BrokerConfig {
        receive_maximum: 8,
        ..BrokerConfig::default()
    };
    let server = start_broker(broker).await;
    let addr = server.local_addr();
    let mut sub = connect(addr, ProtocolVersion::V5, "pipe-sub").await;
    sub.subscribe("pipe", QoS::ExactlyOnce)
        .await
        .expect("subscribed");
    let publisher = connect(addr, ProtocolVersion::V5, "pipe-pub").await;
    assert_eq!(
        publisher.window(),
        8,
        "the broker's Receive Maximum caps the window"
    );
    let count = 500u32;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < count as usize {
            got.push(recv(&mut sub).await);
        }
        (sub, got)
    });
    let mut tokens = Vec::new();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for i in 0..count / 2 {
            let payload = Bytes::from(format!("{}-{i}", qos as u8));
            let token = publisher
                .publish_pipelined("pipe", payload, qos, false)
                .await
                .expect("queued");
            assert!(publisher.in_flight() <= 8);
            tokens.push(token);
        }
    }
    for token in tokens {
        tokio::time::timeout(TIMEOUT, token)
            .await
            .expect("completes in time")
            .expect("completes");
    }
    tokio::time::timeout(TIMEOUT, publisher.wait_in_flight())
        .await
        .expect("drains in time")
        .expect("drains");
    assert_eq!(publisher.in_flight(), 0);
    let (sub, got) = reader.await.expect("reader task");
    for (n, p) in got.iter().enumerate() {
        let qos = if n < count as usize / 2 { 1 } else { 2 };
        let want = format!("{qos}-{}", n % (count as usize / 2));
        assert_eq!(p.payload.as_ref(), want.as_bytes(), "in order");
    }
    publisher.disconnect().await.expect("disconnect");
    sub.disconnect().await.expect("disconnect");
    server.shutdown().await;
}

#[tokio::test]
async fn keepalive_pings_keep_an_idle_connection_open() {
    let server = start_broker(BrokerConfig::default()).await;
    let options = ConnectOptions {
        keep_alive: 1,
        ..ConnectOptions::new(ProtocolVersion::V5, "idle")
    };
    let (client, _) = Client::connect(server.local_addr(), options)
        .await
        .expect("connects");
    // Idle for well over the 1.5 × keep alive after which the broker would drop a silent client.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!client.is_closed());
    client
        .publish("idle", Bytes::new(), QoS::AtLeastOnce, false)
        .await
        .expect("still usable");
    client.disconnect().await.expect("disconnect");
    server.shutdown().await;
}

#[tokio::test]
async fn requests_fail_with_closed_after_the_broker_goes_away() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut client = connect(server.local_addr(), ProtocolVersion::V5, "gone").await;
    server.shutdown().await;
    assert!(
        tokio::time::timeout(TIMEOUT, client.recv())
            .await
            .expect("closes")
            .is_none()
    );
    let err = client
        .publish("x", Bytes::new(), QoS::AtLeastOnce, false)
        .await
        .expect_err("closed");
    assert!(matches!(err, ClientError::Closed), "{err}");
}

#[tokio::test]
async fn refused_and_unreachable_connections_are_errors() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unused.local_addr().expect("addr");
    drop(unused);
    let err = Client::connect(addr, ConnectOptions::default())
        .await
        .err()
        .expect("nothing listens");
    assert!(matches!(err, ClientError::Io(_)), "{err}");
}
