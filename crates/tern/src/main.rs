//! The `tern` command: runs the broker (`tern serve`, the default) or prints the reference
//! config (`tern config`).
//!
//! This file owns the CLI, logging setup, the runtime and signal handling. It must not touch
//! connections or protocol rules; those live in the library.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
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
        for addr in server.local_addrs() {
            tracing::info!("listening on {addr} (mqtt/tcp)");
        }
        match config_store {
            Some(dir) => tracing::info!("durable state in {}", dir.display()),
            None => tracing::info!("in memory: nothing survives a restart"),
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        server.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
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
