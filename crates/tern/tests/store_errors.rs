//! A store that fails its commits (a full disk, an I/O error): what waited for the commit is
//! not acknowledged as a success, new durable work is refused, and the broker recovers by
//! itself once commits succeed again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tern::config::ListenerConfig;
use tern::{Config, Server};
use tern_client::{Client, ClientError, ConnectOptions, ProtocolVersion, QoS, ReasonCode};
use tern_store::{MemoryStore, Snapshot, Store, StoreError, StoreOp};

/// A memory store whose commits fail while `failing` is set.
struct FlakyStore {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
}

impl Store for FlakyStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: "/flaky/tern.redb".into(),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.inner.commit(ops, sync)
    }
}

async fn start(failing: Arc<AtomicBool>) -> Server {
    let config = Config {
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
        }],
        ..support::in_memory()
    };
    let store = FlakyStore {
        inner: MemoryStore::new(),
        failing,
    };
    Server::start_with_store(config, Some(Box::new(store)))
        .await
        .expect("broker starts")
}

fn options(version: ProtocolVersion, id: &str, expiry: Option<u32>) -> ConnectOptions {
    let mut o = ConnectOptions::new(version, id);
    o.session_expiry = expiry;
    o
}

/// Parks a persistent v5 subscriber to `t`, so that QoS 1 messages to `t` must be stored.
async fn park_subscriber(server: &Server) {
    let (sub, _) = Client::connect(
        server.local_addr(),
        options(ProtocolVersion::V5, "sub", Some(600)),
    )
    .await
    .expect("connect");
    sub.subscribe("t", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    sub.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn a_failing_store_refuses_durable_work_and_recovers() {
    let failing = Arc::new(AtomicBool::new(false));
    let server = start(failing.clone()).await;
    park_subscriber(&server).await;
    let (publisher, _) = Client::connect(
        server.local_addr(),
        options(ProtocolVersion::V5, "pub", None),
    )
    .await
    .expect("connect");
    publisher
        .publish("t", Bytes::from_static(b"ok"), QoS::AtLeastOnce, false)
        .await
        .expect("stored and acknowledged");

    failing.store(true, Ordering::SeqCst);
    let refused = publisher
        .publish("t", Bytes::from_static(b"lost?"), QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(refused, Err(ClientError::PublishRejected(r)) if r == ReasonCode::UNSPECIFIED_ERROR || r == ReasonCode::QUOTA_EXCEEDED),
        "not acknowledged as a success: {refused:?}"
    );
    let refused = publisher
        .publish("t", Bytes::from_static(b"new"), QoS::AtLeastOnce, false)
        .await;
    assert!(
        matches!(
            refused,
            Err(ClientError::PublishRejected(ReasonCode::QUOTA_EXCEEDED))
        ),
        "new work refused: {refused:?}"
    );
    // QoS 0 needs no store and still flows.
    publisher
        .publish("q0", Bytes::from_static(b"fine"), QoS::AtMostOnce, false)
        .await
        .expect("qos 0");

    failing.store(false, Ordering::SeqCst);
    let recovered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match publisher
                .publish("t", Bytes::from_static(b"again"), QoS::AtLeastOnce, false)
                .await
            {
                Ok(()) => return,
                Err(ClientError::PublishRejected(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(
        recovered.is_ok(),
        "the broker recovers once commits succeed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_v311_publisher_is_disconnected_rather_than_falsely_acknowledged() {
    let failing = Arc::new(AtomicBool::new(false));
    let server = start(failing.clone()).await;
    park_subscriber(&server).await;
    let (publisher, _) = Client::connect(
        server.local_addr(),
        options(ProtocolVersion::V3_1_1, "pub3", None),
    )
    .await
    .expect("connect");
    failing.store(true, Ordering::SeqCst);
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        publisher.publish("t", Bytes::from_static(b"x"), QoS::AtLeastOnce, false),
    )
    .await
    .expect("answered in time");
    assert!(
        result.is_err(),
        "no PUBACK while the store fails: {result:?}"
    );
    assert!(publisher.is_closed());
    server.shutdown().await;
}
