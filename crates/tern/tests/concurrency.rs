//! Many clients at once: what must hold however the broker spreads its work over threads.
//!
//! These tests guard the ordering rules that a core split into independently locked parts
//! (see docs/design/core-concurrency.md) must keep. They run on a multi-threaded runtime, so
//! connections are served by both worker threads at the same time, and use the third-party
//! rumqttc client.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Publish, QoS};
use support::start_broker;
use tern::Server;
use tern_broker::BrokerConfig;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

/// Publishers sending at once.
const PUBLISHERS: u8 = 8;
/// Messages each publisher sends per QoS level.
const MESSAGES: u32 = 400;
/// How long the whole exchange of one QoS level may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Connects client `id` (clean session) and returns it with the receiver of the PUBLISHes it
/// gets; its event loop runs in a task of its own and waits for the CONNACK first.
async fn client(server: &Server, id: &str) -> (AsyncClient, UnboundedReceiver<Publish>) {
    let addr = server.local_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    match timeout(support::TIMEOUT, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {}
        other => panic!("{id}: no CONNACK: {other:?}"),
    }
    let (tx, rx) = unbounded_channel();
    tokio::spawn(drive(eventloop, tx));
    (client, rx)
}

/// Polls `eventloop` until it fails, passing on every PUBLISH it receives.
async fn drive(mut eventloop: EventLoop, publishes: tokio::sync::mpsc::UnboundedSender<Publish>) {
    while let Ok(event) = eventloop.poll().await {
        if let Event::Incoming(Incoming::Publish(p)) = event {
            let _ = publishes.send(p);
        }
    }
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

/// Eight publishers send at the same time to a wildcard subscriber and to one subscriber each:
/// every subscriber gets each publisher's messages in the order they were published
/// ([MQTT-4.6.0-6] of 3.1.1, the clients' level), and at QoS 1 and 2 it gets all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_per_publisher_order() {
    // Queues large enough that no QoS 1/2 message is dropped for a slow subscriber.
    let server = start_broker(BrokerConfig {
        max_queued_messages: 100_000,
        ..BrokerConfig::default()
    })
    .await;
    for (level, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let (all, mut all_rx) = client(&server, &format!("all-{level}")).await;
        all.subscribe(format!("order/{level}/#"), QoS::ExactlyOnce)
            .await
            .unwrap();
        let mut singles = Vec::new();
        for p in 0..PUBLISHERS {
            let (c, rx) = client(&server, &format!("single-{level}-{p}")).await;
            c.subscribe(format!("order/{level}/{p}"), QoS::ExactlyOnce)
                .await
                .unwrap();
            singles.push((c, rx));
        }
        // The SUBACKs are not awaited by rumqttc's subscribe; a round trip through every
        // subscriber's connection makes sure each subscription is in place.
        let (probe, _probe_rx) = client(&server, &format!("probe-{level}")).await;
        for p in 0..PUBLISHERS {
            probe
                .publish(
                    format!("order/{level}/{p}"),
                    QoS::AtLeastOnce,
                    false,
                    vec![],
                )
                .await
                .unwrap();
        }
        drain_probes(&mut all_rx, usize::from(PUBLISHERS)).await;
        for (_, rx) in &mut singles {
            drain_probes(rx, 1).await;
        }

        let mut tasks = Vec::new();
        for p in 0..PUBLISHERS {
            let (c, _rx) = client(&server, &format!("pub-{level}-{p}")).await;
            tasks.push(tokio::spawn(async move {
                for seq in 0..MESSAGES {
                    c.publish(format!("order/{level}/{p}"), qos, false, payload(p, seq))
                        .await
                        .unwrap();
                }
                // Keep the client (and its event loop's requests) alive until the end.
                c
            }));
        }
        let total = usize::from(PUBLISHERS) * MESSAGES as usize;
        let counts = receive_in_order("wildcard subscriber", &mut all_rx, total, qos).await;
        let mut single_counts = Vec::new();
        for (p, (_, rx)) in singles.iter_mut().enumerate() {
            let name = format!("subscriber of publisher {p}");
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

/// Takes the `n` empty probe messages each subscriber gets before the test traffic.
async fn drain_probes(rx: &mut UnboundedReceiver<Publish>, n: usize) {
    for _ in 0..n {
        let p = timeout(support::TIMEOUT, rx.recv())
            .await
            .expect("probe message within the timeout")
            .expect("event loop running");
        assert!(p.payload.is_empty(), "a probe, not test traffic");
    }
}
