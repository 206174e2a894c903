//! Many clients at once: what must hold however the broker spreads its work over threads.
//!
//! These tests guard the ordering rules that a core split into independently locked parts
//! (see docs/design/core-concurrency.md) must keep. They run on a multi-threaded runtime, so
//! connections are served by both worker threads at the same time, and use the third-party
//! rumqttc client.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS};
use std::net::SocketAddr;

use tern::config::ListenerConfig;
use tern::{Config, Server};
use tern_broker::BrokerConfig;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Publishers sending at once.
const PUBLISHERS: u8 = 8;
/// Messages each publisher sends per QoS level.
const MESSAGES: u32 = 400;
/// How long the whole exchange of one QoS level may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// The core's shard count of the second run of each test: the first runs with the suite's
/// (`TERN_TEST_CORE_SHARDS`, 1 by default), so every rule here is checked on a sharded core too.
const SHARDS: usize = 4;

/// A broker of `shards` core shards (0: the suite's count), whose queues are large enough
/// that no QoS 1/2 message is dropped for a slow subscriber during these tests.
async fn lossless_broker(shards: usize) -> Server {
    broker(
        shards,
        BrokerConfig {
            max_queued_messages: 100_000,
            ..BrokerConfig::default()
        },
    )
    .await
}

/// A broker with `config` and `shards` core shards (0: the suite's count).
async fn broker(shards: usize, config: BrokerConfig) -> Server {
    let mut config = Config {
        listeners: vec![ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }],
        broker: config,
        ..support::in_memory()
    };
    if shards > 0 {
        config.server.core_shards = shards;
    }
    support::start_with(config).await
}

/// Options for client `id` of `server`: clean session, 30 s Keep Alive.
fn options(server: &Server, id: &str) -> MqttOptions {
    let addr = server.local_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// A connected rumqttc client whose event loop runs in a task of its own, until the
/// connection fails (it does not reconnect).
struct Peer {
    client: AsyncClient,
    /// The PUBLISHes it received, in order.
    publishes: UnboundedReceiver<Publish>,
    /// One item per SUBACK it received.
    subacks: UnboundedReceiver<()>,
    /// The event loop's task.
    task: JoinHandle<()>,
}

impl Peer {
    /// Connects with `options` and waits for the CONNACK.
    async fn connect(options: MqttOptions) -> Peer {
        let id = options.client_id();
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        match timeout(support::TIMEOUT, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {}
            other => panic!("{id}: no CONNACK: {other:?}"),
        }
        let (pub_tx, publishes) = unbounded_channel();
        let (ack_tx, subacks) = unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Incoming::Publish(p)) => {
                        let _ = pub_tx.send(p);
                    }
                    Event::Incoming(Incoming::SubAck(_)) => {
                        let _ = ack_tx.send(());
                    }
                    _ => {}
                }
            }
        });
        Peer {
            client,
            publishes,
            subacks,
            task,
        }
    }

    /// Subscribes to `filter` and waits for the SUBACK, after which the subscription is in
    /// place.
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        timeout(support::TIMEOUT, self.subacks.recv())
            .await
            .expect("SUBACK within the timeout")
            .expect("event loop running");
    }
}

/// Connects client `id` of `server` with a clean session.
async fn peer(server: &Server, id: &str) -> Peer {
    Peer::connect(options(server, id)).await
}

/// Spawns a client that publishes `MESSAGES` numbered messages as `publisher` to `topic`
/// (retained if `retain`), then stays connected until the returned task is awaited.
async fn publisher(
    server: &Server,
    id: &str,
    publisher: u8,
    topic: &str,
    qos: QoS,
    retain: bool,
) -> JoinHandle<Peer> {
    let p = peer(server, id).await;
    let topic = topic.to_string();
    tokio::spawn(async move {
        for seq in 0..MESSAGES {
            p.client
                .publish(&topic, qos, retain, payload(publisher, seq))
                .await
                .unwrap();
        }
        p
    })
}

/// A payload naming its publisher and its sequence number.
fn payload(publisher: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![publisher];
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

/// The publisher and sequence number a payload names.
fn parse(p: &Publish) -> (u8, u32) {
    let seq = u32::from_be_bytes(p.payload[1..5].try_into().expect("5-byte payload"));
    (p.payload[0], seq)
}

/// Adds what `rx` receives to `seen` until it holds `want` messages or `within` has passed;
/// false if time ran out first.
async fn gather(
    rx: &mut UnboundedReceiver<Publish>,
    seen: &mut HashSet<(u8, u32)>,
    want: usize,
    within: Duration,
) -> bool {
    timeout(within, async {
        while seen.len() < want {
            let Some(p) = rx.recv().await else { break };
            seen.insert(parse(&p));
        }
    })
    .await
    .is_ok()
}

/// Fails unless every message of publishers `0..publishers` is in `seen`.
fn assert_none_lost(seen: &HashSet<(u8, u32)>, publishers: u8) {
    for p in 0..publishers {
        for seq in 0..MESSAGES {
            assert!(
                seen.contains(&(p, seq)),
                "message {seq} of publisher {p} lost ({} of {} arrived)",
                seen.len(),
                usize::from(publishers) * MESSAGES as usize
            );
        }
    }
}

/// Takes `expected` PUBLISHes from `rx` (or as many as arrive before the deadline) and checks
/// that each publisher's sequence numbers arrive in increasing order; returns how many arrived
/// per publisher.
async fn receive_in_order(
    name: &str,
    rx: &mut UnboundedReceiver<Publish>,
    expected: usize,
    qos: QoS,
) -> HashMap<u8, u32> {
    let mut last: HashMap<u8, u32> = HashMap::new();
    let mut counts: HashMap<u8, u32> = HashMap::new();
    let mut got = 0;
    let _ = timeout(DEADLINE, async {
        while got < expected {
            let Some(p) = rx.recv().await else { break };
            let (publisher, seq) = parse(&p);
            if let Some(&before) = last.get(&publisher) {
                assert!(
                    seq > before,
                    "{name} at {qos:?}: publisher {publisher}'s message {seq} arrived after {before}"
                );
            }
            last.insert(publisher, seq);
            *counts.entry(publisher).or_default() += 1;
            got += 1;
        }
    })
    .await;
    counts
}

/// Eight publishers send at the same time to a subscriber with two overlapping wildcard
/// filters and to one subscriber each: every subscriber gets each message once, and each
/// publisher's messages in the order they were published
/// ([MQTT-4.6.0-6] of 3.1.1, the clients' level), and at QoS 1 and 2 it gets all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_per_publisher_order() {
    concurrent_publishers_keep_per_publisher_order_with(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_per_publisher_order_sharded() {
    concurrent_publishers_keep_per_publisher_order_with(SHARDS).await;
}

async fn concurrent_publishers_keep_per_publisher_order_with(shards: usize) {
    let server = lossless_broker(shards).await;
    for (level, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        // Two overlapping filters: each message must still arrive once.
        let mut all = peer(&server, &format!("all-{level}")).await;
        for filter in [format!("order/{level}/#"), format!("order/{level}/+")] {
            all.subscribe(&filter, QoS::ExactlyOnce).await;
        }
        let mut singles = Vec::new();
        for p in 0..PUBLISHERS {
            let mut single = peer(&server, &format!("single-{level}-{p}")).await;
            single
                .subscribe(&format!("order/{level}/{p}"), QoS::ExactlyOnce)
                .await;
            singles.push(single);
        }

        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let (id, topic) = (format!("pub-{level}-{p}"), format!("order/{level}/{p}"));
            tasks.push(publisher(&server, &id, p, &topic, qos, false).await);
        }
        let total = usize::from(PUBLISHERS) * MESSAGES as usize;
        let counts = receive_in_order("wildcard subscriber", &mut all.publishes, total, qos).await;
        let mut single_counts = Vec::new();
        for (p, single) in singles.iter_mut().enumerate() {
            let name = format!("subscriber of publisher {p}");
            let rx = &mut single.publishes;
            single_counts.push(receive_in_order(&name, rx, MESSAGES as usize, qos).await);
        }
        for t in tasks {
            t.await.unwrap();
        }
        if qos != QoS::AtMostOnce {
            for p in 0..PUBLISHERS {
                assert_eq!(
                    counts.get(&p),
                    Some(&MESSAGES),
                    "{qos:?}: wildcard, publisher {p}"
                );
                assert_eq!(
                    single_counts[usize::from(p)].get(&p),
                    Some(&MESSAGES),
                    "{qos:?}: single subscriber of publisher {p}"
                );
            }
        } else {
            let delivered: u32 = counts.values().sum();
            assert!(delivered > 0, "QoS 0: nothing delivered");
        }
    }
}

/// Four members share `$share/g/shared/#` while four publishers send at QoS 1; halfway
/// through, one member leaves (its clean session ends) and a new one joins. No message is
/// lost: what the leaving member had not acknowledged goes to another member (MQTT 5.0
/// section 4.8.2: the server SHOULD send it to another member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_loses_nothing_while_members_come_and_go() {
    shared_group_loses_nothing_while_members_come_and_go_with(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_group_loses_nothing_while_members_come_and_go_sharded() {
    shared_group_loses_nothing_while_members_come_and_go_with(SHARDS).await;
}

async fn shared_group_loses_nothing_while_members_come_and_go_with(shards: usize) {
    const SHARED_PUBLISHERS: u8 = 4;
    let server = lossless_broker(shards).await;
    // Every member's deliveries are forwarded to one channel.
    let (tx, mut rx) = unbounded_channel();
    let join = |id: String, tx: UnboundedSender<Publish>| {
        let server = &server;
        async move {
            let mut member = peer(server, &id).await;
            member
                .subscribe("$share/g/shared/#", QoS::AtLeastOnce)
                .await;
            let mut publishes = std::mem::replace(&mut member.publishes, unbounded_channel().1);
            let forward = tokio::spawn(async move {
                while let Some(p) = publishes.recv().await {
                    let _ = tx.send(p);
                }
            });
            (member, forward)
        }
    };
    let mut members = Vec::new();
    for m in 0..4 {
        members.push(join(format!("member-{m}"), tx.clone()).await);
    }

    let mut tasks = Vec::new();
    for p in 0..SHARED_PUBLISHERS {
        let topic = format!("shared/{p}");
        let id = format!("spub-{p}");
        tasks.push(publisher(&server, &id, p, &topic, QoS::AtLeastOnce, false).await);
    }
    let total = usize::from(SHARED_PUBLISHERS) * MESSAGES as usize;
    let mut seen = HashSet::new();
    let mut changed = false;
    let _ = timeout(DEADLINE, async {
        while seen.len() < total {
            let Some(p) = rx.recv().await else { break };
            seen.insert(parse(&p));
            if !changed && seen.len() >= total / 2 {
                changed = true;
                let (leaving, forward) = members.remove(0);
                leaving.client.disconnect().await.unwrap();
                let _ = timeout(support::TIMEOUT, leaving.task).await;
                // What it received before leaving was forwarded already or is lost with it:
                // either way it acknowledged only what it received.
                let _ = timeout(support::TIMEOUT, forward).await;
                members.push(join("member-new".into(), tx.clone()).await);
            }
        }
    })
    .await;
    assert!(changed, "the membership changed during the run");
    for t in tasks {
        t.await.unwrap();
    }
    assert_none_lost(&seen, SHARED_PUBLISHERS);
}

/// A client id is taken over while its persistent session receives a QoS 1 stream: the old
/// connection is closed [MQTT-3.1.4-2], and the old and new connections together receive
/// every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_under_load_loses_no_qos1_message() {
    takeover_under_load_loses_no_qos1_message_with(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_under_load_loses_no_qos1_message_sharded() {
    takeover_under_load_loses_no_qos1_message_with(SHARDS).await;
}

async fn takeover_under_load_loses_no_qos1_message_with(shards: usize) {
    let server = lossless_broker(shards).await;
    let mut persistent = options(&server, "taken-over");
    persistent.set_clean_session(false);
    let mut first = Peer::connect(persistent.clone()).await;
    first.subscribe("takeover/t", QoS::AtLeastOnce).await;

    let sender = publisher(&server, "tpub", 0, "takeover/t", QoS::AtLeastOnce, false).await;
    let mut seen = HashSet::new();
    // Let the stream get going, then connect a second client with the same id.
    let want = MESSAGES as usize;
    let started = gather(&mut first.publishes, &mut seen, want / 4, support::TIMEOUT).await;
    assert!(started, "the stream started");
    let mut second = Peer::connect(persistent).await;
    timeout(support::TIMEOUT, first.task)
        .await
        .expect("the first connection is closed by the takeover")
        .unwrap();
    // What the first connection received before it closed (its task has ended, so its
    // channel ends after that), then the rest from the second.
    gather(&mut first.publishes, &mut seen, want, support::TIMEOUT).await;
    gather(&mut second.publishes, &mut seen, want, DEADLINE).await;
    sender.await.unwrap();
    assert_none_lost(&seen, 1);
}

/// A retained value is republished over and over while clients subscribe: every subscriber
/// ends with the last value, and the values it sees never go backwards (3.1.1's
/// [MQTT-3.3.1-6]: the last retained message is sent on a new subscription).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_publishes_racing_subscribes_are_never_lost() {
    retained_publishes_racing_subscribes_are_never_lost_with(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_publishes_racing_subscribes_are_never_lost_sharded() {
    retained_publishes_racing_subscribes_are_never_lost_with(SHARDS).await;
}

async fn retained_publishes_racing_subscribes_are_never_lost_with(shards: usize) {
    const SUBSCRIBERS: usize = 8;
    let server = broker(shards, BrokerConfig::default()).await;
    let writer = publisher(&server, "rpub", 0, "retained/value", QoS::AtLeastOnce, true).await;
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let mut subscriber = peer(&server, &format!("rsub-{s}")).await;
        subscriber
            .subscribe("retained/value", QoS::AtLeastOnce)
            .await;
        subscribers.push(subscriber);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    for (s, subscriber) in subscribers.iter_mut().enumerate() {
        let mut last = None;
        let reached = timeout(DEADLINE, async {
            while let Some(p) = subscriber.publishes.recv().await {
                let seq = parse(&p).1;
                if let Some(before) = last {
                    assert!(seq >= before, "subscriber {s}: value {seq} after {before}");
                }
                last = Some(seq);
                if seq == MESSAGES - 1 {
                    return;
                }
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "subscriber {s} never got the last value; last seen {last:?}"
        );
    }
}
