//! The message scenarios (`pub`, `sub`, `fanin`, `fanout`, `p2p`): who publishes where, who
//! subscribes to what, and the timeline: set up, warm up, measure, drain, report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tern_client::{Client, MessageHandler, Publish, QoS};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinSet;

use super::conn::{conn_stats, connect_many, disconnect_all};
use super::payload::{Header, instant_at, now_ns};
use super::report::{BenchReport, ConnStats, MessageStats};
use super::stats::{Counted, Latency, Recorder, new_histogram};
use super::{BenchConfig, BenchError, Scenario};

/// Who publishes where and who receives what.
struct Topology {
    /// Topic of each publisher (its index is its id).
    publishers: Vec<String>,
    /// Each subscriber's filter and the recorder it reports to.
    subscribers: Vec<(String, usize)>,
    /// For each recorder, the publishers whose every message it should receive.
    expected: Vec<Vec<u32>>,
}

impl Topology {
    fn of(config: &BenchConfig) -> Topology {
        let (p, s) = config.roles();
        let ids = |n: usize| (0..n).map(|i| u32::try_from(i).unwrap_or(u32::MAX));
        let topics = |name: &str| (0..p).map(|i| format!("bench/{name}/{i}")).collect();
        match config.scenario {
            Scenario::Conn | Scenario::Pub => Topology {
                publishers: topics("pub"),
                subscribers: Vec::new(),
                expected: Vec::new(),
            },
            Scenario::Sub => Topology {
                publishers: topics("sub"),
                subscribers: (0..s)
                    .map(|j| (format!("bench/sub/{}", j % p), j))
                    .collect(),
                expected: ids(s).map(|j| vec![j % p as u32]).collect(),
            },
            Scenario::Fanin => {
                let filter = if config.shared > 0 {
                    "$share/bench/bench/fanin/+"
                } else {
                    "bench/fanin/+"
                };
                Topology {
                    publishers: topics("fanin"),
                    subscribers: (0..s).map(|_| (filter.to_string(), 0)).collect(),
                    expected: vec![ids(p).collect()],
                }
            }
            Scenario::Fanout => Topology {
                publishers: (0..p).map(|_| "bench/fanout".to_string()).collect(),
                subscribers: (0..s).map(|j| ("bench/fanout".to_string(), j)).collect(),
                expected: (0..s).map(|_| ids(p).collect()).collect(),
            },
            Scenario::P2p => Topology {
                publishers: topics("p2p"),
                subscribers: (0..s).map(|i| (format!("bench/p2p/{i}"), i)).collect(),
                expected: ids(s).map(|i| vec![i]).collect(),
            },
        }
    }
}

/// Counters every task adds to, read by the progress line and the drain.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    /// Measured deliveries that were not duplicates.
    distinct: AtomicU64,
    /// The run is over: deliveries are no longer recorded.
    stopped: AtomicBool,
}

/// The timeline, in nanoseconds since the epoch.
#[derive(Clone, Copy)]
struct Timeline {
    start: u64,
    warmup_end: u64,
    stop: u64,
}

/// What a publisher did.
struct Published {
    client: Client,
    /// Messages sent; the last sequence number is `total - 1`.
    total: u64,
    /// Sequence number of the first message sent after the warm-up.
    first_measured: Option<u64>,
    errors: u64,
}

impl Published {
    /// Messages sent after the warm-up.
    fn measured(&self) -> u64 {
        self.first_measured.map_or(0, |f| self.total - f)
    }
}

fn lock(r: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a message scenario.
pub(super) async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let topo = Topology::of(&config);
    let qos = config.qos();
    let prefix = format!("tb{}", std::process::id());

    let counters = Arc::new(Counters::default());
    // The recorders exist before the subscribers connect: each subscriber's connection records
    // what it receives on its own task (see `recording`). Their warm-up end is set once the
    // timeline is known; nothing is published before that.
    let recorders: Vec<Arc<Mutex<Recorder>>> = topo
        .expected
        .iter()
        .map(|_| Arc::new(Mutex::new(Recorder::new(u64::MAX))))
        .collect();
    let sub_runtime = SubscriberRuntime::start()?;
    let (sub_attempts, sub_secs) = connect_many(
        sub_runtime.handle(),
        &config,
        &format!("{prefix}s"),
        topo.subscribers.len(),
        0,
        |index| {
            let recorder = recorders[topo.subscribers[index].1].clone();
            Some(recording(recorder, counters.clone()))
        },
    )
    .await;
    let subscribers = setup(sub_attempts, "subscriber")?;
    for (index, ((client, _), (filter, _))) in subscribers.iter().zip(&topo.subscribers).enumerate()
    {
        client
            .subscribe(filter.clone(), qos)
            .await
            .map_err(|source| BenchError::Setup {
                role: "subscriber",
                index,
                source,
            })?;
    }
    let (pub_attempts, pub_secs) = connect_many(
        &Handle::current(),
        &config,
        &format!("{prefix}p"),
        topo.publishers.len(),
        topo.subscribers.len(),
        |_| None,
    )
    .await;
    let publishers = setup(pub_attempts, "publisher")?;
    let conns = merge_conn_stats(&subscribers, &publishers, sub_secs + pub_secs);

    let start = now_ns() + 10_000_000;
    let warmup_end = start + BenchConfig::duration(config.warmup_secs).as_nanos() as u64;
    let time = Timeline {
        start,
        warmup_end,
        stop: warmup_end + BenchConfig::duration(config.duration_secs).as_nanos() as u64,
    };
    let drain = BenchConfig::duration(config.drain_secs);
    for recorder in &recorders {
        lock(recorder).set_warmup_end(warmup_end);
    }

    // The subscribers' connections record on their own tasks: nothing to spawn for them.
    let mut clients: Vec<Client> = subscribers.into_iter().map(|(client, _)| client).collect();
    let mut pub_tasks = JoinSet::new();
    for (id, ((client, _), topic)) in publishers.into_iter().zip(topo.publishers).enumerate() {
        pub_tasks.spawn(publisher(
            client,
            u32::try_from(id).unwrap_or(u32::MAX),
            topic,
            config.clone(),
            time,
            counters.clone(),
        ));
    }
    let progress = config.progress.then(|| {
        let (counters, recorders) = (counters.clone(), recorders.clone());
        tokio::task::spawn_blocking(move || progress(&counters, &recorders, time))
    });

    let mut published: Vec<(u32, Published)> = Vec::new();
    while let Some(joined) = pub_tasks.join_next().await {
        if let Ok(p) = joined {
            published.push(p);
        }
    }
    published.sort_by_key(|(id, _)| *id);
    // Look publishers up by id: a publisher task that failed leaves no entry.
    let by_id = |id: u32| {
        published
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .and_then(|at| published.get(at))
            .map(|(_, p)| p)
    };
    let measured_of = |id: u32| by_id(id).map_or(0, Published::measured);
    let expected: u64 = topo
        .expected
        .iter()
        .flatten()
        .map(|&id| measured_of(id))
        .sum();

    // Drain: wait for the deliveries still on their way, within the drain period.
    let drain_end = instant_at(time.stop).max(std::time::Instant::now()) + drain;
    while counters.distinct.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counters.stopped.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.await;
    }

    let mut latency = new_histogram();
    let mut stats = MessageStats {
        sent: published.iter().map(|(_, p)| p.measured()).sum(),
        sent_total: published.iter().map(|(_, p)| p.total).sum(),
        expected,
        publish_errors: published.iter().map(|(_, p)| p.errors).sum(),
        ..MessageStats::default()
    };
    let mut gaps = 0;
    for (recorder, expected) in recorders.iter().zip(&topo.expected) {
        let r = lock(recorder);
        let _ = latency.add(&r.latency);
        stats.received += r.received;
        stats.duplicated += r.duplicated;
        stats.out_of_order += r.out_of_order;
        for &id in expected {
            let Some(p) = by_id(id) else {
                continue;
            };
            let Some(first) = p.first_measured else {
                continue;
            };
            let last = p.total - 1;
            gaps += r
                .streams
                .get(&id)
                .map_or(last - first + 1, |s| s.missing(first, last));
        }
    }
    stats.lost = if qos == QoS::AtMostOnce {
        expected.saturating_sub(stats.received - stats.duplicated)
    } else {
        gaps
    };
    stats.latency_us = Latency::of(&latency);
    let secs = config.duration_secs;
    stats.send_rate = stats.sent as f64 / secs;
    stats.recv_rate = stats.received as f64 / secs;

    let mut conns = conns;
    clients.extend(published.into_iter().map(|(_, p)| p.client));
    conns.open_at_end = clients.iter().filter(|c| !c.is_closed()).count();
    disconnect_all(clients).await;
    Ok(BenchReport {
        parameters: config,
        connections: conns,
        messages: Some(stats),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// The runtime the subscribers' connections run on, apart from the publishers'.
///
/// A subscriber's connection task shares no scheduler with the publishers' tasks: in one
/// runtime, one fan-in subscriber gets one turn in a thousand among a thousand unpaced
/// publishers, and what the bench measures is then its own scheduling, not the broker. Its
/// threads compete with the publishers' as the operating system shares the cores, as separate
/// client processes would. Shut down without blocking when dropped (it is dropped inside the
/// publishers' runtime), after the clients are disconnected.
struct SubscriberRuntime(Option<Runtime>);

impl SubscriberRuntime {
    /// Starts it with one worker thread per core.
    fn start() -> Result<Self, BenchError> {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("bench-subscribers")
            .enable_all()
            .build()
            .map(|rt| SubscriberRuntime(Some(rt)))
            .map_err(BenchError::Runtime)
    }

    /// Where to spawn the subscribers' connections.
    fn handle(&self) -> &Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for SubscriberRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The clients of `attempts`, or the first failure.
fn setup(
    attempts: Vec<super::conn::Attempt>,
    role: &'static str,
) -> Result<Vec<(Client, u64)>, BenchError> {
    attempts
        .into_iter()
        .map(|(index, a)| {
            a.map_err(|source| BenchError::Setup {
                role,
                index,
                source,
            })
        })
        .collect()
}

/// Connection figures over both roles.
fn merge_conn_stats(subs: &[(Client, u64)], pubs: &[(Client, u64)], secs: f64) -> ConnStats {
    let mut latency = new_histogram();
    for (_, micros) in subs.iter().chain(pubs) {
        let _ = latency.record((*micros).max(1));
    }
    let n = subs.len() + pubs.len();
    let (mut stats, _) = conn_stats(Vec::new(), secs);
    stats.attempted = n;
    stats.opened = n;
    stats.connect_rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    stats.connect_latency_us = Latency::of(&latency);
    stats
}

/// A subscriber's message handler: records every delivery into `recorder`, on the
/// subscriber's connection task, until the run stops. Handing each message to another task
/// first made the bench's own receiving cost more than a broker's routing.
fn recording(recorder: Arc<Mutex<Recorder>>, counters: Arc<Counters>) -> MessageHandler {
    // Highest sequence number this subscriber saw per publisher, for its order checks.
    let seen = Mutex::new(HashMap::new());
    MessageHandler::new(move |message: Publish| {
        if counters.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let counted = lock(&recorder).record(&message.payload, now_ns(), &mut seen);
        counters.received.fetch_add(1, Ordering::Relaxed);
        if counted == Counted::New {
            counters.distinct.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Publishes from `time.start` to `time.stop` at the configured rate, then waits (at most the
/// drain period) for its QoS 1 and 2 messages in flight.
async fn publisher(
    client: Client,
    id: u32,
    topic: String,
    config: BenchConfig,
    time: Timeline,
    counters: Arc<Counters>,
) -> (u32, Published) {
    let qos = config.qos();
    let mut seq: u64 = 0;
    let mut first_measured = None;
    let mut errors = 0;
    tokio::time::sleep_until(instant_at(time.start).into()).await;
    loop {
        let now = now_ns();
        if now >= time.stop {
            break;
        }
        if config.rate > 0 {
            let due = time.start
                + u64::try_from(u128::from(seq) * 1_000_000_000 / u128::from(config.rate))
                    .unwrap_or(u64::MAX);
            if due > now {
                tokio::time::sleep_until(instant_at(due.min(time.stop)).into()).await;
                continue;
            }
        }
        let payload = Header {
            publisher: id,
            seq,
            sent_ns: now,
        }
        .encode(config.size);
        // A broker that stops reading blocks the publish (TCP backpressure): give up at the
        // end of the measured window rather than wait for it, so every run ends on time.
        let stop = tokio::time::Instant::from_std(instant_at(time.stop));
        match tokio::time::timeout_at(
            stop,
            client.publish_pipelined(topic.as_str(), payload, qos, false),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                errors += 1;
                break;
            }
            Err(_) => break,
        }
        if now >= time.warmup_end && first_measured.is_none() {
            first_measured = Some(seq);
        }
        seq += 1;
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
    let drain = BenchConfig::duration(config.drain_secs);
    let _ = tokio::time::timeout(drain, client.wait_in_flight()).await;
    let published = Published {
        client,
        total: seq,
        first_measured,
        errors,
    };
    (id, published)
}

/// Prints sent/s, received/s and the p99 so far on stderr every second, until the run stops.
///
/// It runs on a thread of its own (see `run`): as a task among a thousand unpaced publishers it
/// was polled late, and its "per second" figures then counted whatever time had passed. Each
/// rate is divided by the time that really passed since the previous line.
fn progress(counters: &Counters, recorders: &[Arc<Mutex<Recorder>>], time: Timeline) {
    const EVERY: Duration = Duration::from_secs(1);
    let (mut last_at, mut last_sent, mut last_received) = (Instant::now(), 0, 0);
    let mut next = last_at + EVERY;
    while !counters.stopped.load(Ordering::Relaxed) {
        let at = Instant::now();
        if at < next {
            // Short naps, so the end of the run is noticed quickly.
            std::thread::sleep((next - at).min(Duration::from_millis(50)));
            continue;
        }
        next += EVERY;
        let sent = counters.sent.load(Ordering::Relaxed);
        let received = counters.received.load(Ordering::Relaxed);
        let mut latency = new_histogram();
        for r in recorders {
            let _ = latency.add(&lock(r).latency);
        }
        let now = now_ns();
        let phase = if now < time.warmup_end {
            "warm-up"
        } else if now < time.stop {
            "measure"
        } else {
            "drain"
        };
        let p99 = if latency.is_empty() {
            "-".to_string()
        } else {
            format!("{} us", latency.value_at_quantile(0.99))
        };
        let secs = at.duration_since(last_at).as_secs_f64();
        let per_sec = |n: u64| (n as f64 / secs).round() as u64;
        eprintln!(
            "[{phase:>7} {:>6.1}s] sent {:>9}/s  recv {:>9}/s  p99 {p99}",
            now.saturating_sub(time.start) as f64 / 1e9,
            per_sec(sent - last_sent),
            per_sec(received - last_received),
        );
        (last_at, last_sent, last_received) = (at, sent, received);
    }
}
