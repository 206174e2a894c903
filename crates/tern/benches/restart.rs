//! Restart time of a durable broker: how long `Server::start` takes, from opening the store to
//! accepting connections, with many retained messages and persistent sessions on disk.
//!
//! `cargo bench -p tern --bench restart` (defaults: 1,000,000 retained messages and 100,000
//! persistent sessions, each with one subscription and one queued QoS 1 message). Sizes can be
//! changed with `TERN_RESTART_RETAINED` and `TERN_RESTART_SESSIONS`. The store is written
//! directly with `tern-store` (as a running broker would have left it), then the broker is
//! started on it and a client connects and resumes one of the sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern::config::ListenerConfig;
use tern::{Config, Server};
use tern_broker::persist::{SessionRecord, StoreOp, StoredDelivery};
use tern_broker::session::{Message, SubEntry};
use tern_client::{Client, ConnectOptions, ProtocolVersion};
use tern_codec::{QoS, SubscriptionOptions};
use tern_store::{DiskStore, Store};

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(topic: String, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message {
        topic,
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
        expires_at: None,
        publisher: None,
        shared_properties: Default::default(),
        pending_shards: Default::default(),
    })
}

/// Writes the store as a broker with that much state would have left it.
fn populate(dir: &std::path::Path, retained: usize, sessions: usize) -> Duration {
    let started = Instant::now();
    let mut store = DiskStore::open(dir).expect("open store");
    let mut ops = Vec::with_capacity(20_000);
    let flush = |ops: &mut Vec<StoreOp>, store: &mut DiskStore| {
        store.commit(ops, false).expect("commit");
        ops.clear();
    };
    for i in 0..retained {
        let topic = format!("site/{}/dev/{}/temp", i % 1000, i / 1000);
        ops.push(StoreOp::PutRetained(message(topic, b"21.5")));
        if ops.len() == 20_000 {
            flush(&mut ops, &mut store);
        }
    }
    for i in 0..sessions {
        let client_id: Arc<str> = format!("device-{i}").into();
        let entry = SubEntry {
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            sub_id: None,
        };
        ops.push(StoreOp::PutSession(SessionRecord {
            client_id: client_id.clone(),
            version: ProtocolVersion::V5,
            expiry_interval: 86_400,
            expires_at: Some(Instant::now() + Duration::from_secs(86_400)),
            subscriptions: vec![(format!("cmd/device-{i}/#"), entry)],
            will: None,
            will_at: None,
        }));
        let delivery = StoredDelivery {
            msg: message(format!("cmd/device-{i}/reboot"), b"now"),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: vec![],
            inflight: None,
        };
        ops.push(StoreOp::PutDelivery {
            client_id,
            seq: 1,
            delivery,
        });
        if ops.len() >= 20_000 {
            flush(&mut ops, &mut store);
        }
    }
    store.commit(&ops, true).expect("final commit");
    started.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let retained = env_count("TERN_RESTART_RETAINED", 1_000_000);
    let sessions = env_count("TERN_RESTART_SESSIONS", 100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("writing {retained} retained messages and {sessions} sessions ...");
    let written = populate(dir.path(), retained, sessions);
    let size: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();

    tracing_subscriber::fmt()
        .with_env_filter("tern=info")
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = Config {
            listeners: vec![ListenerConfig { bind: "127.0.0.1:0".parse().expect("addr") }],
            ..Config::default()
        };
        config.store.dir = dir.path().to_path_buf();
        let started = Instant::now();
        let server = Server::start(config).await.expect("broker starts");
        let accepting = started.elapsed();
        let mut options = ConnectOptions::new(ProtocolVersion::V5, "device-42");
        options.clean_start = false;
        options.session_expiry = Some(86_400);
        let (mut client, ack) = Client::connect(server.local_addr(), options).await.expect("connect");
        assert!(ack.session_present, "the session was restored");
        let queued = tokio::time::timeout(Duration::from_secs(10), client.recv()).await.expect("queued message").expect("message");
        assert_eq!(queued.topic, "cmd/device-42/reboot");
        let first_message = started.elapsed();
        println!("| retained | sessions | store size | write time | start to accepting | start to first queued message |");
        println!("| --- | --- | --- | --- | --- | --- |");
        println!(
            "| {retained} | {sessions} | {:.0} MiB | {:.1} s | {:.2} s | {:.2} s |",
            size as f64 / (1024.0 * 1024.0),
            written.as_secs_f64(),
            accepting.as_secs_f64(),
            first_message.as_secs_f64()
        );
        client.disconnect().await.ok();
        server.shutdown().await;
    });
}
