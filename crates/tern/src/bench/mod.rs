//! `tern bench`: load scenarios in the shapes of the Open MQTT Benchmark Suite, built on
//! `tern-client` (never on the broker's internals), against any MQTT broker.
//!
//! [`run`] takes a [`BenchConfig`], opens the connections, drives the scenario for its warm-up
//! and duration, lets in-flight messages drain, and returns a [`BenchReport`].

mod conn;
mod payload;
mod report;
mod run;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use tern_client::{ClientError, ConnectOptions, ProtocolVersion, QoS};

pub use payload::{HEADER_LEN, Header};
pub use report::{BenchReport, ConnStats, MessageStats};
pub use stats::Latency;

/// The shape of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Open connections and hold them.
    Conn,
    /// Publishers only, no subscribers.
    Pub,
    /// Subscribers fed by publishers on the same topics.
    Sub,
    /// Many publishers, one subscriber (or one shared subscription).
    Fanin,
    /// One publisher, many subscribers of its topic.
    Fanout,
    /// Pairs: publisher i to subscriber i on its own topic.
    P2p,
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Conn => "conn",
            Scenario::Pub => "pub",
            Scenario::Sub => "sub",
            Scenario::Fanin => "fanin",
            Scenario::Fanout => "fanout",
            Scenario::P2p => "p2p",
        }
    }
}

/// Everything a bench run needs; [`BenchConfig::new`] gives each scenario's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// The broker.
    pub addr: SocketAddr,
    /// Local source addresses, used in turn for each connection; empty lets the OS choose.
    pub sources: Vec<IpAddr>,
    /// `conn`: connections to open.
    pub connections: usize,
    /// Publishers (`pub`, `sub`, `fanin`, `fanout`).
    pub publishers: usize,
    /// Subscribers (`sub`, `fanout`).
    pub subscribers: usize,
    /// `p2p`: publisher/subscriber pairs.
    pub pairs: usize,
    /// `fanin`: members of the shared subscription `$share/bench/bench/fanin/+`; 0 for one plain
    /// subscriber.
    pub shared: usize,
    /// Messages per second per publisher; 0 sends as fast as the in-flight window allows.
    pub rate: u32,
    /// Most QoS 1 and 2 messages each publisher keeps in flight (the broker's Receive Maximum
    /// also applies).
    pub inflight: u16,
    /// QoS of publishes and subscriptions (0, 1 or 2).
    pub qos: u8,
    /// Payload size in bytes (at least [`HEADER_LEN`]).
    pub size: usize,
    /// MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5.
    pub mqtt: u8,
    /// Measured seconds after the warm-up.
    pub duration_secs: f64,
    /// Seconds of load before measuring starts.
    pub warmup_secs: f64,
    /// Seconds at most to wait for in-flight messages after publishing stops.
    pub drain_secs: f64,
    /// Connections opened at the same time while setting up.
    pub connect_concurrency: usize,
    /// Session Expiry Interval every client asks for (MQTT 5), seconds; 0 for sessions that
    /// end with their connection. Above 0, subscribers have persistent sessions, which is what
    /// a durable broker must store.
    pub session_expiry: u32,
    /// Print a progress line on stderr every second.
    #[serde(skip)]
    pub progress: bool,
}

/// Largest number of connections one run may open.
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// Longest warm-up plus duration, in seconds.
pub const MAX_SECS: f64 = 24.0 * 3600.0;

impl BenchConfig {
    /// The defaults for `scenario` against `addr`: 10 clients per role (1 for the single side of
    /// `fanin` and `fanout`), 100 connections for `conn`, QoS 0, 64-byte payloads, MQTT 5,
    /// as fast as possible, 10 s measured after 2 s of warm-up.
    pub fn new(scenario: Scenario, addr: SocketAddr) -> Self {
        let (publishers, subscribers) = match scenario {
            Scenario::Conn | Scenario::P2p => (0, 0),
            Scenario::Pub => (10, 0),
            Scenario::Sub => (10, 10),
            Scenario::Fanin => (10, 1),
            Scenario::Fanout => (1, 10),
        };
        BenchConfig {
            scenario,
            addr,
            sources: Vec::new(),
            connections: 100,
            publishers,
            subscribers,
            pairs: 10,
            shared: 0,
            rate: 0,
            inflight: 64,
            qos: 0,
            size: 64,
            mqtt: 5,
            duration_secs: 10.0,
            warmup_secs: 2.0,
            drain_secs: 2.0,
            connect_concurrency: 100,
            session_expiry: 0,
            progress: false,
        }
    }

    /// Checks the values are in range and consistent with the scenario.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |what: String| Err(BenchError::Config(what));
        if self.size < HEADER_LEN {
            return bad(format!("--size must be at least {HEADER_LEN} bytes"));
        }
        if self.size > 256 * 1024 * 1024 {
            return bad("--size must be at most 256 MiB".into());
        }
        if self.qos > 2 {
            return bad("--qos must be 0, 1 or 2".into());
        }
        if !(3..=5).contains(&self.mqtt) {
            return bad("--mqtt must be 3, 4 or 5".into());
        }
        let secs_ok = |s: f64| s.is_finite() && s >= 0.0;
        if !secs_ok(self.duration_secs) || !secs_ok(self.warmup_secs) || !secs_ok(self.drain_secs) {
            return bad("durations must be finite and not negative".into());
        }
        if self.duration_secs <= 0.0 {
            return bad("--duration must be positive".into());
        }
        if self.duration_secs + self.warmup_secs > MAX_SECS {
            return bad("--warmup plus --duration must be at most 24 hours".into());
        }
        if self.inflight == 0 || self.connect_concurrency == 0 {
            return bad("--inflight and --connect-concurrency must be at least 1".into());
        }
        let (p, s) = self.roles();
        let total = match self.scenario {
            Scenario::Conn => self.connections,
            _ => p.saturating_add(s),
        };
        if total == 0 {
            return bad(format!(
                "{} needs at least one connection",
                self.scenario.name()
            ));
        }
        if total > MAX_CONNECTIONS {
            return bad(format!("at most {MAX_CONNECTIONS} connections per run"));
        }
        if self.scenario != Scenario::Conn && p == 0 {
            return bad(format!(
                "{} needs at least one publisher",
                self.scenario.name()
            ));
        }
        Ok(())
    }

    /// Publisher and subscriber connections this configuration opens.
    pub fn roles(&self) -> (usize, usize) {
        match self.scenario {
            Scenario::Conn => (0, 0),
            Scenario::Pub => (self.publishers, 0),
            Scenario::Sub | Scenario::Fanout => (self.publishers, self.subscribers),
            Scenario::Fanin => (self.publishers, self.shared.max(1)),
            Scenario::P2p => (self.pairs, self.pairs),
        }
    }

    /// The QoS value.
    fn qos(&self) -> QoS {
        QoS::from_u8(self.qos).unwrap_or_default()
    }

    /// The protocol level.
    fn version(&self) -> ProtocolVersion {
        match self.mqtt {
            3 => ProtocolVersion::V3_1,
            4 => ProtocolVersion::V3_1_1,
            _ => ProtocolVersion::V5,
        }
    }

    /// Connect options for the `index`-th connection of this run, named `client_id`.
    fn connect_options(&self, index: usize, client_id: String) -> ConnectOptions {
        ConnectOptions {
            max_in_flight: self.inflight,
            local_addr: match self.sources.len() {
                0 => None,
                n => Some(SocketAddr::new(self.sources[index % n], 0)),
            },
            keep_alive: 30,
            incoming_capacity: 1024,
            session_expiry: (self.session_expiry > 0).then_some(self.session_expiry),
            ..ConnectOptions::new(self.version(), client_id)
        }
    }

    fn duration(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }
}

/// Why a bench run could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration is out of range.
    #[error("invalid bench configuration: {0}")]
    Config(String),
    /// A connection the scenario needs could not be set up.
    #[error("{role} {index}: {source}")]
    Setup {
        /// `publisher` or `subscriber`.
        role: &'static str,
        /// Its index.
        index: usize,
        /// What failed.
        source: ClientError,
    },
    /// The runtime for the subscribers' connections could not be started.
    #[error("cannot start the subscribers' runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the scenario of `config` to the end and reports what it measured.
pub async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    config.validate()?;
    // Start the clock before any message exists.
    let _ = payload::epoch();
    match config.scenario {
        Scenario::Conn => conn::run(config).await,
        _ => run::run(config).await,
    }
}
