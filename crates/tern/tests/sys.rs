//! `$SYS/broker/…` counters over a real connection.

mod support;

use std::time::Duration;

use tern::config::ListenerConfig;
use tern_client::{Client, ConnectOptions, ProtocolVersion, QoS};

#[tokio::test]
async fn sys_counters_are_published_and_retained() {
    let mut config = support::in_memory();
    config.listeners = vec![ListenerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
    }];
    config.server.sys_interval_secs = 1;
    let server = support::start_with(config).await;
    // Two connections that never send CONNECT: open, but no client.
    let _silent = [
        support::RawClient::connect(server.local_addr()).await,
        support::RawClient::connect(server.local_addr()).await,
    ];
    let (mut c, _) = Client::connect(
        server.local_addr(),
        ConnectOptions::new(ProtocolVersion::V5, "watcher"),
    )
    .await
    .expect("connect");
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    // The retained value may predate the watcher; the next update counts it.
    let mut n = 0;
    for _ in 0..2 {
        let got = tokio::time::timeout(Duration::from_secs(5), c.recv())
            .await
            .expect("a $SYS update within 5 s")
            .expect("message");
        assert_eq!(got.topic, "$SYS/broker/clients/connected");
        n = std::str::from_utf8(&got.payload)
            .expect("utf-8")
            .parse()
            .expect("a number");
        if !got.retain {
            break;
        }
    }
    assert_eq!(n, 1, "the watcher, and not the connections without CONNECT");
    let (mut late, _) = Client::connect(
        server.local_addr(),
        ConnectOptions::new(ProtocolVersion::V3_1_1, "late"),
    )
    .await
    .expect("connect");
    late.subscribe("$SYS/broker/uptime", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let up = tokio::time::timeout(Duration::from_secs(5), late.recv())
        .await
        .expect("retained uptime")
        .expect("message");
    assert!(
        std::str::from_utf8(&up.payload)
            .expect("utf-8")
            .ends_with(" seconds")
    );
    server.shutdown().await;
}
