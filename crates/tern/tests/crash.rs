//! Durability of the real `tern` binary: `kill -9` in the middle of a publish stream and a
//! graceful SIGTERM restart lose nothing that was acknowledged.
//!
//! Each test runs the binary as a child process on its own port and data directory, drives it
//! with rumqttc's v5 client, kills and restarts it on the same directory, and checks what a
//! persistent subscriber receives afterwards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};
use tokio::time::timeout;

/// A broker child process.
struct Broker {
    child: Child,
}

impl Broker {
    /// Starts `tern serve` on `addr` with the store in `dir`, and waits until it accepts.
    fn start(addr: SocketAddr, dir: &Path) -> Broker {
        let shards = std::env::var("TERN_TEST_CORE_SHARDS").ok();
        Self::start_sharded(addr, dir, shards.and_then(|s| s.parse().ok()))
    }

    /// [`Broker::start`] with a core of `shards` shards, if given.
    fn start_sharded(addr: SocketAddr, dir: &Path, shards: Option<usize>) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
        command.args(["serve", "--listen", &addr.to_string(), "--data-dir"]);
        command.arg(dir);
        if let Some(shards) = shards {
            // Next to the data directory, not in it: the store owns what is inside.
            let config = dir.with_extension("toml");
            std::fs::write(&config, format!("[server]\ncore_shards = {shards}\n"))
                .expect("write config");
            command.arg("--config").arg(config);
        }
        let child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tern");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child }
    }

    /// SIGKILL: no chance to flush anything.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "tern exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "tern did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn options(addr: SocketAddr, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_start(clean);
    o.set_session_expiry_interval(Some(3600));
    o
}

/// Polls `el` until CONNACK; returns its session present flag.
async fn connack(el: &mut EventLoop) -> bool {
    timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::ConnAck(ack)) = el.poll().await.expect("connect") {
                return ack.session_present;
            }
        }
    })
    .await
    .expect("CONNACK in time")
}

/// Runs `el` until nothing arrives for `quiet`; returns the payloads of the PUBLISHes received.
async fn collect(el: &mut EventLoop, quiet: Duration, limit: Duration) -> Vec<(QoS, Bytes)> {
    let mut got = Vec::new();
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match timeout(quiet, el.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => got.push((p.qos, p.payload)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("subscriber failed: {e:?}"),
            Err(_) => break,
        }
    }
    got
}

/// Makes subscriber `id` a persistent session subscribed to `filter`, then takes it offline.
async fn park_subscriber(addr: SocketAddr, id: &str, filter: &str) {
    let (client, mut el) = AsyncClient::new(options(addr, id, true), 16);
    assert!(!connack(&mut el).await);
    client
        .subscribe(filter, QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.expect("suback") {
                return;
            }
        }
    })
    .await
    .expect("SUBACK");
    client.disconnect().await.expect("disconnect");
    let _ = timeout(Duration::from_secs(2), async {
        while el.poll().await.is_ok() {}
    })
    .await;
}

/// The sequence numbers the publisher saw acknowledged, by QoS (1 or 2).
type Acked = BTreeMap<u8, BTreeSet<u32>>;

/// Publishes `n` QoS 1 and `n` QoS 2 messages alternately, `payload = qos:seq`, recording the
/// acknowledged ones, until `n` of each are done or the broker goes away. Calls `midway` once
/// when `kill_after` acknowledgments have arrived.
async fn publish_stream(
    addr: SocketAddr,
    n: u32,
    kill_after: usize,
    midway: impl FnOnce(),
) -> Acked {
    let (client, mut el) = AsyncClient::new(options(addr, "crash-pub", true), 1000);
    connack(&mut el).await;
    let sender = client.clone();
    tokio::spawn(async move {
        for seq in 0..n {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let payload = format!("{}:{seq}", qos as u8);
                if sender
                    .publish("crash/stream", qos, false, payload)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    // rumqttc reports each PUBLISH as it goes out, in request order, with its packet id. It
    // reuses the id of a QoS 2 message as soon as PUBREC arrives, before PUBCOMP (it only
    // checks the ids awaiting PUBACK or PUBREC), so one id can stand for an older QoS 2 flow
    // awaiting PUBCOMP and a newer message: each id keeps its flows oldest first, and an
    // acknowledgment completes the oldest one of its kind.
    let mut by_pkid: BTreeMap<u16, VecDeque<(u8, u32)>> = BTreeMap::new();
    let mut sent = 0u32;
    let mut acked = Acked::new();
    let mut midway = Some(midway);
    let total = 2 * n as usize;
    loop {
        let event = match timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(e)) => e,
            Ok(Err(_)) | Err(_) => break,
        };
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let qos = if sent.is_multiple_of(2) { 1 } else { 2 };
                by_pkid.entry(pkid).or_default().push_back((qos, sent / 2));
                sent += 1;
            }
            Event::Incoming(Packet::PubAck(a)) => record(&mut acked, &mut by_pkid, a.pkid, 1),
            Event::Incoming(Packet::PubComp(c)) => record(&mut acked, &mut by_pkid, c.pkid, 2),
            _ => {}
        }
        let count: usize = acked.values().map(BTreeSet::len).sum();
        if count >= kill_after
            && let Some(f) = midway.take()
        {
            f();
        }
        if count == total {
            break;
        }
    }
    acked
}

/// Records the acknowledgment (PUBACK for `qos` 1, PUBCOMP for 2) of the oldest flow of that
/// QoS still open under `pkid`.
fn record(acked: &mut Acked, by_pkid: &mut BTreeMap<u16, VecDeque<(u8, u32)>>, pkid: u16, qos: u8) {
    let flows = by_pkid.get_mut(&pkid).expect("acknowledged id was sent");
    let i = flows
        .iter()
        .position(|&(q, _)| q == qos)
        .expect("an open flow of this QoS under the acknowledged id");
    let (_, seq) = flows.remove(i).expect("position just found");
    assert!(
        acked.entry(qos).or_default().insert(seq),
        "seq {seq} acknowledged twice"
    );
}

/// Publishes `count` retained messages `crash/retained/i` at QoS 1 and waits for their PUBACKs.
async fn publish_retained(addr: SocketAddr, count: usize) {
    let (client, mut el) = AsyncClient::new(options(addr, "crash-ret", true), 1000);
    connack(&mut el).await;
    for i in 0..count {
        let topic = format!("crash/retained/{i}");
        client
            .publish(topic, QoS::AtLeastOnce, true, format!("r{i}"))
            .await
            .expect("publish");
    }
    let mut acks = 0;
    timeout(Duration::from_secs(20), async {
        while acks < count {
            if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.expect("retained acks") {
                acks += 1;
            }
        }
    })
    .await
    .expect("retained acknowledged");
}

/// Subscribes a fresh client to `crash/retained/#` and returns how many retained messages came.
async fn count_retained(addr: SocketAddr) -> BTreeSet<Bytes> {
    let (client, mut el) = AsyncClient::new(options(addr, "crash-check", true), 100);
    connack(&mut el).await;
    client
        .subscribe("crash/retained/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    collect(&mut el, Duration::from_millis(700), Duration::from_secs(20))
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Checks what the resumed subscriber got against what the publisher saw acknowledged.
fn check(acked: &Acked, got: &[(QoS, Bytes)]) {
    let mut seen: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
    for (_, payload) in got {
        let text = std::str::from_utf8(payload).expect("utf-8 payload");
        let (qos, seq) = text.split_once(':').expect("qos:seq");
        seen.entry(qos.parse().expect("qos"))
            .or_default()
            .push(seq.parse().expect("seq"));
    }
    for qos in [1u8, 2] {
        let seen = seen.remove(&qos).unwrap_or_default();
        let distinct: BTreeSet<u32> = seen.iter().copied().collect();
        if let Some(acked) = acked.get(&qos) {
            let missing: Vec<_> = acked.difference(&distinct).collect();
            assert!(
                missing.is_empty(),
                "QoS {qos}: acknowledged but never delivered: {missing:?}"
            );
        }
        if qos == 2 {
            assert_eq!(
                distinct.len(),
                seen.len(),
                "QoS 2 delivered more than once: {seen:?}"
            );
        }
        // In order per publisher: the first deliveries of each message come in sequence order.
        let mut firsts = Vec::new();
        let mut once = BTreeSet::new();
        for s in &seen {
            if once.insert(*s) {
                firsts.push(*s);
            }
        }
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "QoS {qos} out of order: {firsts:?}"
        );
    }
}

/// Starts the broker with `shards` core shards, or the suite's count when `None`.
fn start(addr: SocketAddr, dir: &Path, shards: Option<usize>) -> Broker {
    match shards {
        Some(_) => Broker::start_sharded(addr, dir, shards),
        None => Broker::start(addr, dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_message() {
    kill_9_mid_stream_loses_no_acknowledged_message_with(None).await;
}

/// The same on a core of 8 shards: the subscriber's session and the publisher's most likely
/// live in different shards (the shard of a client id is a keyed hash, drawn per process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_message_sharded() {
    kill_9_mid_stream_loses_no_acknowledged_message_with(Some(8)).await;
}

async fn kill_9_mid_stream_loses_no_acknowledged_message_with(shards: Option<usize>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let broker = start(addr, dir.path(), shards);
    park_subscriber(addr, "crash-sub", "crash/stream").await;
    publish_retained(addr, 50).await;

    let mut victim = Some(broker);
    let acked = publish_stream(addr, 2000, 300, || victim.take().expect("running").kill9()).await;
    drop(victim);
    let acked_count: usize = acked.values().map(BTreeSet::len).sum();
    assert!(acked_count >= 300, "the kill happened mid-stream");

    let _broker = start(addr, dir.path(), shards);
    let (_client, mut el) = AsyncClient::new(options(addr, "crash-sub", false), 100);
    assert!(connack(&mut el).await, "the session survived the crash");
    let got = collect(
        &mut el,
        Duration::from_millis(1500),
        Duration::from_secs(60),
    )
    .await;
    eprintln!(
        "acknowledged before the kill: {acked_count}; delivered after the restart: {}",
        got.len()
    );
    check(&acked, &got);
    assert_eq!(
        count_retained(addr).await.len(),
        50,
        "every retained message survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_keeps_sessions_queues_and_retained() {
    sigterm_restart_keeps_sessions_queues_and_retained_with(None).await;
}

/// The same on a core of 8 shards: the subscriber's session and the publisher's most likely
/// live in different shards (the shard of a client id is a keyed hash, drawn per process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_keeps_sessions_queues_and_retained_sharded() {
    sigterm_restart_keeps_sessions_queues_and_retained_with(Some(8)).await;
}

async fn sigterm_restart_keeps_sessions_queues_and_retained_with(shards: Option<usize>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let broker = start(addr, dir.path(), shards);
    park_subscriber(addr, "term-sub", "crash/stream").await;
    publish_retained(addr, 10).await;
    let acked = publish_stream(addr, 100, usize::MAX, || {}).await;
    assert_eq!(acked.values().map(BTreeSet::len).sum::<usize>(), 200);
    broker.terminate();

    let _broker = start(addr, dir.path(), shards);
    let (_client, mut el) = AsyncClient::new(options(addr, "term-sub", false), 100);
    assert!(connack(&mut el).await);
    let got = collect(
        &mut el,
        Duration::from_millis(1500),
        Duration::from_secs(60),
    )
    .await;
    check(&acked, &got);
    assert_eq!(got.len(), 200, "nothing duplicated after a clean stop");
    assert_eq!(count_retained(addr).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_counts_time_spent_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let broker = Broker::start(addr, dir.path());
    let mut o = options(addr, "short", true);
    o.set_session_expiry_interval(Some(2));
    let (client, mut el) = AsyncClient::new(o, 16);
    connack(&mut el).await;
    client.disconnect().await.expect("disconnect");
    let _ = timeout(Duration::from_secs(2), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    broker.terminate();
    std::thread::sleep(Duration::from_secs(3));
    let _broker = Broker::start(addr, dir.path());
    let (_c, mut el) = AsyncClient::new(options(addr, "short", false), 16);
    assert!(!connack(&mut el).await, "expired while the broker was down");
}

#[test]
fn an_unreadable_store_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let broker = Broker::start(addr, dir.path());
    broker.terminate();
    // Overwrite every file in the data directory with garbage.
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::write(&path, b"this is not a database").expect("corrupt");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run tern");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "names the file: {stderr}"
    );
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            assert_eq!(
                std::fs::read(&path).expect("read"),
                b"this is not a database",
                "left untouched"
            );
        }
    }
}
