//! Opening many connections with bounded concurrency, and the `conn` scenario: open N
//! connections, report the connect rate, hold them for the duration, close them.

use std::time::{Duration, Instant};

use tern_client::{Client, ClientError, ConnectOptions, MessageHandler};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::report::{BenchReport, ConnStats};
use super::stats::{Latency, new_histogram};
use super::{BenchConfig, BenchError};

/// One connection attempt: its index and either the client and its connect time in
/// microseconds, or the error.
pub(super) type Attempt = (usize, Result<(Client, u64), ClientError>);

/// Opens `count` connections named `{prefix}{index}`, at most `connect_concurrency` at a
/// time, on the runtime of `on` (their tasks live there); indexes start at `offset` (which
/// also picks the source address). Returns the attempts in index order and the seconds they
/// took.
pub(super) async fn connect_many(
    on: &Handle,
    config: &BenchConfig,
    prefix: &str,
    count: usize,
    offset: usize,
    on_message: impl Fn(usize) -> Option<MessageHandler>,
) -> (Vec<Attempt>, f64) {
    let started = Instant::now();
    let mut set = JoinSet::new();
    let mut done = Vec::with_capacity(count);
    for index in offset..offset + count {
        while set.len() >= config.connect_concurrency {
            if let Some(Ok(attempt)) = set.join_next().await {
                done.push(attempt);
            }
        }
        let options = ConnectOptions {
            on_message: on_message(index - offset),
            ..config.connect_options(index, format!("{prefix}{index}"))
        };
        let addr = config.addr;
        set.spawn_on(
            async move {
                let t = Instant::now();
                let result = Client::connect(addr, options).await;
                let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                (index, result.map(|(client, _)| (client, micros)))
            },
            on,
        );
    }
    while let Some(joined) = set.join_next().await {
        if let Ok(attempt) = joined {
            done.push(attempt);
        }
    }
    done.sort_by_key(|(index, _)| *index);
    (done, started.elapsed().as_secs_f64())
}

/// Connection figures for `attempts` that took `secs`; the clients are moved out.
pub(super) fn conn_stats(attempts: Vec<Attempt>, secs: f64) -> (ConnStats, Vec<Client>) {
    let mut stats = ConnStats {
        attempted: attempts.len(),
        connect_secs: secs,
        ..ConnStats::default()
    };
    let mut latency = new_histogram();
    let mut clients = Vec::with_capacity(attempts.len());
    for (index, attempt) in attempts {
        match attempt {
            Ok((client, micros)) => {
                let _ = latency.record(micros.max(1));
                clients.push(client);
            }
            Err(e) => {
                stats.failed += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| format!("connection {index}: {e}"));
            }
        }
    }
    stats.opened = clients.len();
    stats.open_at_end = clients.len();
    stats.connect_rate = if secs > 0.0 {
        clients.len() as f64 / secs
    } else {
        0.0
    };
    stats.connect_latency_us = Latency::of(&latency);
    (stats, clients)
}

/// Sends DISCONNECT on every client, all at once, and waits for them.
pub(super) async fn disconnect_all(clients: Vec<Client>) {
    let mut set = JoinSet::new();
    for client in clients {
        set.spawn(client.disconnect());
    }
    while set.join_next().await.is_some() {}
}

/// The `conn` scenario.
pub(super) async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let prefix = format!("tb{}c", std::process::id());
    let (attempts, secs) = connect_many(
        &Handle::current(),
        &config,
        &prefix,
        config.connections,
        0,
        |_| None,
    )
    .await;
    let (mut stats, clients) = conn_stats(attempts, secs);
    if config.progress {
        eprintln!(
            "[conn] {} opened, {} failed in {:.3} s ({:.0} conn/s); holding {} s",
            stats.opened,
            stats.failed,
            stats.connect_secs,
            stats.connect_rate,
            config.duration_secs
        );
    }
    let hold_end = Instant::now() + BenchConfig::duration(config.duration_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(hold_end.into()) => break,
            _ = tick.tick() => {
                if config.progress {
                    let open = clients.iter().filter(|c| !c.is_closed()).count();
                    eprintln!("[conn {:>6.1}s] {open} open", started.elapsed().as_secs_f64());
                }
            }
        }
    }
    stats.open_at_end = clients.iter().filter(|c| !c.is_closed()).count();
    disconnect_all(clients).await;
    Ok(BenchReport {
        parameters: config,
        connections: stats,
        messages: None,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}
