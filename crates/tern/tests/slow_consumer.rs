//! A subscriber that stops reading does not make the broker hold QoS 0 messages without
//! bound: once its backlog reaches the queue limit (in messages or in payload bytes), QoS 0
//! messages for it are dropped (and counted), and everyone else carries on.

mod support;

use std::time::Duration;

use bytes::Bytes;
use tern::config::ListenerConfig;
use tern_client::{Client, ConnectOptions, ProtocolVersion, QoS};
use tern_codec::{Connect, Packet, PacketId, Properties, Subscribe, SubscriptionOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_to_a_stalled_subscriber_is_dropped_not_hoarded() {
    flood_a_stalled_subscriber(50, 0).await;
}

/// The message limit is far above the flood's 30,000 messages: only the 64 KiB byte limit can
/// make the broker drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_backlog_is_bounded_in_bytes_too() {
    flood_a_stalled_subscriber(100_000, 64 * 1024).await;
}

/// Floods a subscriber that stopped reading with 30 MB of QoS 0 messages, with the given queue
/// limits, and checks that more than 1000 of them were dropped for it.
async fn flood_a_stalled_subscriber(max_queued_messages: usize, max_queued_bytes: usize) {
    let mut config = support::in_memory();
    config.listeners = vec![ListenerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
    }];
    config.broker.max_queued_messages = max_queued_messages;
    config.broker.max_queued_bytes = max_queued_bytes;
    config.server.sys_interval_secs = 1;
    let server = support::start_with(config).await;
    let addr = server.local_addr();

    // A subscriber that never reads again after SUBACK.
    let v5 = ProtocolVersion::V5;
    let mut stalled = support::RawClient::connect(addr).await;
    let connect = Connect::new(v5, "stalled");
    stalled
        .send_packet(&Packet::Connect(Box::new(connect)), v5)
        .await;
    stalled.recv_packet(v5).await.expect("CONNACK");
    let subscribe = Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        properties: Properties::default(),
        filters: vec![("flood".into(), SubscriptionOptions::default())],
    };
    stalled.send_packet(&Packet::Subscribe(subscribe), v5).await;
    stalled.recv_packet(v5).await.expect("SUBACK");

    // 30 MB of QoS 0 messages: far more than the socket buffers and either limit.
    let (publisher, _) = Client::connect(addr, ConnectOptions::new(v5, "flooder"))
        .await
        .expect("connect");
    let payload = Bytes::from(vec![b'x'; 1024]);
    for _ in 0..30_000 {
        publisher
            .publish("flood", payload.clone(), QoS::AtMostOnce, false)
            .await
            .expect("publish");
    }

    // The broker still serves others, and says it dropped messages for the stalled one.
    let (mut watch, _) = Client::connect(addr, ConnectOptions::new(v5, "watch"))
        .await
        .expect("connect");
    watch
        .subscribe("$SYS/broker/publish/messages/dropped", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = watch.recv().await.expect("message");
            let n: u64 = std::str::from_utf8(&m.payload)
                .expect("utf-8")
                .parse()
                .expect("number");
            // The flood is read over a second or so (the stalled subscriber pauses the
            // publisher once), so the count climbs over several updates.
            if n > 1_000 {
                return n;
            }
        }
    })
    .await
    .expect("a drop count above 1000 within 10 s");
    assert!(
        dropped > 1_000,
        "most of the flood was dropped for the stalled subscriber: {dropped}"
    );
    drop(stalled);
    server.shutdown().await;
}
