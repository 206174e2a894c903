//! `tern bench` scenarios, each for about a second against an in-process broker with small
//! counts, through the library entry point `tern::bench::run`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::start_broker;
use tern::bench::{BenchConfig, BenchReport, Scenario, run};
use tern_broker::BrokerConfig;

/// Longest a single scenario may take, set-up and drain included.
const LIMIT: Duration = Duration::from_secs(20);

fn small(scenario: Scenario, addr: SocketAddr, qos: u8) -> BenchConfig {
    let mut c = BenchConfig::new(scenario, addr);
    c.publishers = if scenario == Scenario::Fanout { 1 } else { 5 };
    c.subscribers = 5;
    c.pairs = 5;
    c.connections = 20;
    c.qos = qos;
    c.rate = 200;
    c.size = 32;
    c.warmup_secs = 0.2;
    c.duration_secs = 0.8;
    c.drain_secs = 3.0;
    c
}

async fn bench(config: BenchConfig) -> BenchReport {
    let name = format!("{:?} qos {}", config.scenario, config.qos);
    tokio::time::timeout(LIMIT, run(config))
        .await
        .unwrap_or_else(|_| panic!("{name} finishes in time"))
        .unwrap_or_else(|e| panic!("{name} runs: {e}"))
}

fn check_json(report: &BenchReport) {
    let value: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON parses");
    assert_eq!(
        value["parameters"]["scenario"],
        report.parameters.scenario.name()
    );
    assert!(value["connections"]["opened"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_scenarios_deliver_everything_at_qos_1_and_2() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    for scenario in [
        Scenario::Sub,
        Scenario::Fanin,
        Scenario::Fanout,
        Scenario::P2p,
    ] {
        for qos in [1, 2] {
            let report = bench(small(scenario, addr, qos)).await;
            let m = report.messages.clone().expect("message figures");
            let name = format!("{scenario:?} qos {qos}: {report}");
            assert!(m.sent > 0, "{name}");
            assert!(m.received > 0, "{name}");
            assert_eq!(m.received, m.expected, "{name}");
            assert_eq!((m.lost, m.duplicated), (0, 0), "{name}");
            assert_eq!(m.latency_us.count, m.received, "{name}");
            check_json(&report);
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_and_older_protocols_run() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();
    for (scenario, mqtt) in [
        (Scenario::P2p, 3),
        (Scenario::Fanout, 4),
        (Scenario::Sub, 5),
    ] {
        let mut config = small(scenario, addr, 0);
        config.mqtt = mqtt;
        let report = bench(config).await;
        let m = report.messages.clone().expect("message figures");
        assert!(m.received > 0, "{report}");
        assert!(m.received <= m.expected, "{report}");
        check_json(&report);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_shared_fanin_at_full_speed() {
    let server = start_broker(BrokerConfig::default()).await;
    let addr = server.local_addr();

    let mut config = small(Scenario::Pub, addr, 1);
    config.rate = 0;
    let report = bench(config).await;
    let m = report.messages.clone().expect("message figures");
    assert!(m.sent > 0, "{report}");
    assert_eq!((m.expected, m.received, m.lost), (0, 0, 0), "{report}");
    assert_eq!(report.connections.opened, 5);

    let mut config = small(Scenario::Fanin, addr, 1);
    config.shared = 3;
    config.rate = 0;
    config.inflight = 8;
    // At full speed on a loaded machine the last messages can take a while to drain; the
    // drain ends as soon as everything has arrived.
    config.drain_secs = 15.0;
    let report = bench(config).await;
    let m = report.messages.clone().expect("message figures");
    assert!(m.received > 0, "{report}");
    assert_eq!((m.lost, m.duplicated), (0, 0), "{report}");
    assert_eq!(m.received, m.expected, "{report}");
    assert_eq!(report.connections.opened, 8);
    check_json(&report);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_opens_and_holds_connections() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut config = small(Scenario::Conn, server.local_addr(), 0);
    config.duration_secs = 0.5;
    config.sources = vec!["127.0.0.1".parse().expect("ip")];
    let report = bench(config).await;
    let c = &report.connections;
    assert_eq!(
        (c.attempted, c.opened, c.failed, c.open_at_end),
        (20, 20, 0, 20),
        "{report}"
    );
    assert!(c.connect_rate > 0.0);
    assert!(report.messages.is_none());
    check_json(&report);
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_broker_and_bad_config_are_errors() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unused.local_addr().expect("addr");
    drop(unused);
    let err = run(small(Scenario::P2p, addr, 1)).await.expect_err("fails");
    assert!(err.to_string().contains("subscriber 0"), "{err}");
    let mut config = small(Scenario::Fanin, addr, 1);
    config.size = 8;
    assert!(config.validate().is_err());
    config.size = 20;
    config.publishers = 0;
    assert!(config.validate().is_err());
}

/// The progress lines on stderr (which `bench/compare` reads for its delivered rate) give
/// rates per second of real time, in the format the script parses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_report_per_second_rates() {
    let server = start_broker(BrokerConfig::default()).await;
    let port = server.local_addr().port().to_string();
    // 5 publishers at 100 msg/s each into one subscriber: 500 msg/s sent and received.
    let args = [
        "bench".to_string(),
        "--port".into(),
        port,
        "--warmup".into(),
        "1".into(),
        "--duration".into(),
        "3".into(),
        "--drain".into(),
        "2".into(),
        "fanin".into(),
        "--publishers".into(),
        "5".into(),
        "--rate".into(),
        "100".into(),
        "--size".into(),
        "32".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .output()
    });
    let out = tokio::time::timeout(LIMIT, out)
        .await
        .expect("bench finishes in time")
        .expect("joined")
        .expect("bench runs");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let measured: Vec<(u64, u64)> = stderr
        .lines()
        .filter_map(progress_line)
        .filter(|(phase, _, _)| *phase == "measure")
        .map(|(_, sent, received)| (sent, received))
        .collect();
    assert!(measured.len() >= 2, "{stderr}");
    for (sent, received) in measured {
        assert!((400..=600).contains(&sent), "{stderr}");
        assert!((400..=600).contains(&received), "{stderr}");
    }
    server.shutdown().await;
}

/// The phase, sent/s and recv/s of a progress line such as
/// `[measure    2.0s] sent       500/s  recv       500/s  p99 812 us`.
fn progress_line(line: &str) -> Option<(&str, u64, u64)> {
    let (head, rest) = line.strip_prefix('[')?.split_once(']')?;
    let phase = head.split_whitespace().next()?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let rate = |i: usize| words.get(i)?.strip_suffix("/s")?.parse().ok();
    match (words.first(), words.get(2)) {
        (Some(&"sent"), Some(&"recv")) => Some((phase, rate(1)?, rate(3)?)),
        _ => None,
    }
}
