//! The `tern` command: runs the broker (`tern serve`, the default), prints the reference
//! config (`tern config`) or loads a broker (`tern bench`).
//!
//! This file owns the CLI, logging setup, the runtime and signal handling. It must not touch
//! connections or protocol rules; those live in the library.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tern::bench::{BenchConfig, Scenario};
use tern::config::{ListenerConfig, reference_config};
use tern::{Config, Server};
use tracing_subscriber::EnvFilter;

/// Tern, an MQTT 3.1, 3.1.1 and 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "tern", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command, `tern` runs `tern serve` with these options.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default when no command is given).
    Serve(ServeArgs),
    /// Print the reference config file: every key, its default and what it does.
    Config,
    /// Load a broker with one benchmark scenario and report rates, latency and losses.
    Bench(BenchArgs),
}

/// The benchmark scenarios, in the shapes of the Open MQTT Benchmark Suite.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ScenarioArg {
    /// Open --connections connections, report the connect rate, hold them for --duration.
    Conn,
    /// --publishers publishers, no subscribers.
    Pub,
    /// --subscribers subscribers fed by --publishers publishers on the same topics.
    Sub,
    /// --publishers publishers to one subscriber of bench/fanin/+ (or --shared N members).
    Fanin,
    /// --publishers (default 1) publishers to --subscribers subscribers of one topic.
    Fanout,
    /// --pairs pairs: publisher i to subscriber i on its own topic.
    P2p,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    scenario: ScenarioArg,
    /// Broker host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Broker HOST:PORT; overrides --host and --port.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Local source addresses to spread connections over (comma separated).
    #[arg(long = "source", value_delimiter = ',', value_name = "IP,...")]
    sources: Vec<IpAddr>,
    /// conn: connections to open [default: 100].
    #[arg(long)]
    connections: Option<usize>,
    /// Publishers [default: 10; fanout 1].
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers for sub and fanout [default: 10].
    #[arg(long)]
    subscribers: Option<usize>,
    /// p2p: publisher/subscriber pairs [default: 10].
    #[arg(long)]
    pairs: Option<usize>,
    /// fanin: N subscribers sharing $share/bench/bench/fanin/+ instead of one plain subscriber.
    #[arg(long, value_name = "N")]
    shared: Option<usize>,
    /// Messages per second per publisher; 0 = as fast as the in-flight window allows.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Most QoS 1/2 messages in flight per publisher (the broker's Receive Maximum also applies).
    #[arg(long, default_value_t = 64)]
    inflight: u16,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload size in bytes (at least 20: publisher id, sequence number, send time).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// MQTT version: 3 (3.1), 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=5))]
    mqtt: u8,
    /// Measured seconds (conn: seconds to hold the connections).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds at most to wait for in-flight messages after publishing stops.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Connections opened at the same time during set-up.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Session Expiry Interval for every client (MQTT 5), seconds; above 0 the subscribers
    /// have persistent sessions.
    #[arg(long, default_value_t = 0)]
    session_expiry: u32,
    /// Print one JSON object (parameters and figures) instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (TOML); without it every option takes its default.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR:PORT for MQTT over TCP; may repeat, and replaces the config's listeners.
    #[arg(short, long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Keep everything in memory: no data directory, nothing survives a restart.
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// Data directory of the store (overrides `[store] dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` gives the error with its causes on one line, without a backtrace.
            eprintln!("tern: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Config) => {
            print!("{}", reference_config());
            Ok(())
        }
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Bench(args)) => bench(args),
        None => serve(cli.serve),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listeners = args
            .listen
            .iter()
            .map(|&bind| ListenerConfig { bind })
            .collect();
    }
    if args.in_memory {
        config.store.enabled = false;
    }
    if let Some(dir) = args.data_dir {
        config.store.dir = dir;
    }
    init_logging(&config.log.level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config_store = config.store.enabled.then(|| config.store.dir.clone());
    runtime.block_on(async {
        let server = Server::start(config).await?;
        let addrs: Vec<String> = server
            .local_addrs()
            .iter()
            .map(|a| format!("{a} (mqtt/tcp)"))
            .collect();
        let store = match config_store {
            Some(dir) => format!("state in {}", dir.display()),
            None => "in memory, nothing survives a restart".to_string(),
        };
        tracing::info!("listening on {}; {store}", addrs.join(", "));
        wait_for_signal().await?;
        tracing::info!("shutting down");
        server.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let target = args
        .addr
        .clone()
        .unwrap_or_else(|| format!("{}:{}", args.host, args.port));
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve `{target}`"))?
        .next()
        .with_context(|| format!("`{target}` resolves to no address"))?;
    let scenario = match args.scenario {
        ScenarioArg::Conn => Scenario::Conn,
        ScenarioArg::Pub => Scenario::Pub,
        ScenarioArg::Sub => Scenario::Sub,
        ScenarioArg::Fanin => Scenario::Fanin,
        ScenarioArg::Fanout => Scenario::Fanout,
        ScenarioArg::P2p => Scenario::P2p,
    };
    let mut config = BenchConfig::new(scenario, addr);
    config.sources = args.sources;
    config.connections = args.connections.unwrap_or(config.connections);
    config.publishers = args.publishers.unwrap_or(config.publishers);
    config.subscribers = args.subscribers.unwrap_or(config.subscribers);
    config.pairs = args.pairs.unwrap_or(config.pairs);
    config.shared = args.shared.unwrap_or(config.shared);
    config.rate = args.rate;
    config.inflight = args.inflight;
    config.qos = args.qos;
    config.size = args.size;
    config.mqtt = args.mqtt;
    config.duration_secs = args.duration;
    config.warmup_secs = args.warmup;
    config.drain_secs = args.drain;
    config.connect_concurrency = args.connect_concurrency;
    config.session_expiry = args.session_expiry;
    config.progress = !args.quiet;
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(tern::bench::run(config))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).with_context(|| format!("bad RUST_LOG `{env}`"))?
        }
        _ => EnvFilter::try_new(level)
            .with_context(|| format!("bad [log] level `{level}` in the config"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot watch SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch Ctrl-C")?;
    Ok(())
}
