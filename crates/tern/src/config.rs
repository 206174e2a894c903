//! The server's configuration: one TOML file, every option defaulted, and the reference file that
//! documents them.
//!
//! This module owns parsing, defaults and error reporting for the file. It must not interpret
//! protocol limits: the `[broker]` table is [`tern_broker::BrokerConfig`] as that crate defines it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_broker::BrokerConfig;

/// Everything `tern serve` can be told by its config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Network listeners, one `[[listener]]` table each. Default: MQTT over TCP on 127.0.0.1:1883.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Connection handling that is not protocol state.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Protocol limits and switches, handed to the broker core as they are.
    pub broker: BrokerConfig,
    /// Where and how durable state is kept.
    pub store: StoreConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: vec![ListenerConfig::default()],
            server: ServerConfig::default(),
            log: LogConfig::default(),
            broker: BrokerConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

/// The `[store]` table: the embedded store that keeps retained messages and persistent
/// sessions across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Keep durable state on disk. Default true; `--in-memory` turns it off (nothing survives
    /// a restart).
    pub enabled: bool,
    /// Data directory, created if missing. Default `tern-data` in the working directory.
    pub dir: PathBuf,
    /// `sync` (default): a QoS 1/2 message that must be kept is acknowledged only once it is
    /// on disk (fsync), many messages sharing one commit; nothing acknowledged is lost.
    /// `batch`: acknowledged at once and committed every `batch_interval_ms`; a crash or power
    /// loss can lose what was acknowledged in the last interval.
    pub durability: DurabilityKind,
    /// Commit interval of `batch` durability, milliseconds. Default 10.
    pub batch_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            dir: PathBuf::from("tern-data"),
            durability: DurabilityKind::Sync,
            batch_interval_ms: 10,
        }
    }
}

/// The `durability` setting of `[store]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityKind {
    /// Acknowledge after the commit that holds the message.
    Sync,
    /// Acknowledge at once; commit on an interval.
    Batch,
}

/// How the store thread commits, from [`StoreConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Commit whatever is pending as soon as possible; acknowledgments wait for it.
    Sync,
    /// Commit at most every `interval_ms`; acknowledgments do not wait.
    Batch {
        /// Milliseconds between commits.
        interval_ms: u64,
    },
}

impl StoreConfig {
    /// The commit policy this table describes.
    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityKind::Sync => Durability::Sync,
            DurabilityKind::Batch => Durability::Batch {
                interval_ms: self.batch_interval_ms,
            },
        }
    }
}

/// One `[[listener]]`: an address accepting MQTT over TCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to bind; port 0 picks a free port. Default 127.0.0.1:1883.
    pub bind: SocketAddr,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
        }
    }
}

/// The `[server]` table: connection handling outside the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a new connection may take to send its first complete packet before it is closed;
    /// 0 waits forever. Default 10.
    pub connect_timeout_secs: u64,
    /// Most connections open at once; further ones are accepted and closed at once. 0 means no
    /// limit other than the OS file limit. Default 0.
    pub max_connections: usize,
    /// Seconds between updates of the `$SYS/broker/…` counters; 0 turns them off. Default 10.
    pub sys_interval_secs: u64,
    /// Shards of the broker core, each behind its own lock, sessions spread over them by
    /// client id (see docs/design/core-concurrency.md); 1 to 32. Default 1.
    #[serde(deserialize_with = "core_shards")]
    pub core_shards: usize,
}

/// Reads `core_shards`, refusing values outside 1 to [`MAX_SHARDS`](tern_broker::global::MAX_SHARDS).
fn core_shards<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = u64::deserialize(d)?;
    match usize::try_from(n) {
        Ok(n) if (1..=tern_broker::global::MAX_SHARDS).contains(&n) => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "{n} shards: expected 1 to {}",
            tern_broker::global::MAX_SHARDS
        ))),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connect_timeout_secs: 10,
            max_connections: 0,
            sys_interval_secs: 10,
            core_shards: 1,
        }
    }
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log filter, e.g. `info` or `tern=debug,info`; the `RUST_LOG` variable overrides it.
    /// Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected keys and types.
    #[error("{}", render_parse(origin, *location, key.as_deref(), message))]
    Parse {
        /// The file name, or `<config>` for a string.
        origin: String,
        /// 1-based line and column of the offending text, when known.
        location: Option<(usize, usize)>,
        /// Dotted path of the offending key, e.g. `broker.max_packet_size`, when known.
        key: Option<String>,
        /// What is wrong, from the TOML parser.
        message: String,
    },
    /// The file parses but its values cannot be used together.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file name, or `<config>` for a string.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

fn render_parse(
    origin: &str,
    location: Option<(usize, usize)>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = String::from(origin);
    if let Some((line, column)) = location {
        let _ = write!(out, ":{line}:{column}");
    }
    out.push_str(": ");
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'));
    match (key, unknown) {
        // "unknown field `x` in [table], expected one of ..." reads better than a key prefix.
        (Some(key), Some((field, rest))) => {
            let _ = write!(out, "unknown field `{field}`");
            if let Some((table, _)) = key.rsplit_once('.') {
                let _ = write!(out, " in [{table}]");
            }
            out.push_str(rest);
        }
        (Some(key), None) => {
            let _ = write!(out, "`{key}`: {message}");
        }
        (None, _) => out.push_str(message),
    }
    out
}

impl Config {
    /// Parse a config from TOML text; errors are reported against the name `<config>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<config>")
    }

    /// Read and parse the config file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span();
            ConfigError::Parse {
                origin: origin.to_owned(),
                location: span.as_ref().map(|s| line_column(text, s.start)),
                key: span.as_ref().and_then(|s| key_at(text, s.start)),
                message: e.message().trim_end().to_owned(),
            }
        })?;
        if config.listeners.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                message: "at least one [[listener]] is required".into(),
            });
        }
        Ok(config)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Best-effort dotted key path for the text at byte `offset`: the `key = value` on that line,
/// prefixed by the nearest `[table]` or `[[table]]` header above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(text, offset);
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return header_name(line);
    }
    let (key, _) = line.split_once('=')?;
    let key = unquote(key.trim());
    if key.is_empty() {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    match table.and_then(header_name) {
        Some(table) => Some(format!("{table}.{key}")),
        None => Some(key),
    }
}

fn header_name(line: &str) -> Option<String> {
    let inner = line.trim_start_matches('[');
    let end = inner.find(']')?;
    let name = inner[..end].trim();
    (!name.is_empty()).then(|| unquote(name))
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_owned()
}

/// The reference config file: every key with its default value, documented by a comment.
pub fn reference_config() -> String {
    let d = Config::default();
    let b = &d.broker;
    let bind = d
        .listeners
        .first()
        .map(|l| l.bind)
        .unwrap_or_else(|| ListenerConfig::default().bind);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"# Tern reference configuration: every key with its default value.
# Any key may be left out; `tern serve --config FILE` reads a file like this one.

# One [[listener]] table per address. Without any, Tern listens on {bind} only:
# accepting clients beyond this host needs an explicit bind address.
[[listener]]
# Address and port to bind (MQTT over TCP); port 0 picks a free port.
bind = "{bind}"

[server]
# Seconds a new connection may take to send its first complete packet; 0 waits forever.
connect_timeout_secs = {connect_timeout_secs}
# Most connections open at once (further ones are closed at once); 0 means no limit.
max_connections = {max_connections}
# Seconds between updates of the $SYS/broker/... counters; 0 turns them off.
sys_interval_secs = {sys_interval_secs}
# Shards of the broker core, each behind its own lock, sessions spread over them by client id,
# so that clients on different threads route at once (1 to 32).
core_shards = {core_shards}

[log]
# Log filter, e.g. "info" or "tern=debug,info"; the RUST_LOG variable overrides it.
level = "{level}"

[broker]
# Largest packet accepted from a client, in bytes (advertised to v5 clients).
max_packet_size = {max_packet_size}
# QoS 1/2 PUBLISHes a client may have unacknowledged towards the broker (Receive Maximum).
receive_maximum = {receive_maximum}
# Cap on QoS 1/2 messages in flight to one client; further ones wait in the session queue.
max_inflight = {max_inflight}
# Topic Alias Maximum advertised to v5 clients; 0 turns inbound aliases off.
topic_alias_maximum = {topic_alias_maximum}
# Largest keepalive allowed, seconds (v5 clients are told Server Keep Alive, v3 are refused).
max_keepalive = {max_keepalive}
# Messages held per session while offline or beyond the in-flight window (also the most
# packets waiting for a connected client's socket before QoS 0 messages to it are dropped).
max_queued_messages = {max_queued_messages}
# Payload bytes held per session while offline or beyond the in-flight window, and waiting
# for a connected client's socket; 0 = no limit.
max_queued_bytes = {max_queued_bytes}
# Queue QoS 0 messages for offline persistent sessions.
queue_qos0_offline = {queue_qos0_offline}
# Queue length of a connected client at which the clients publishing to it are paused (not
# read, at most 1 s at a time) until it drains to half; 0 turns pausing off.
pause_publishers_at = {pause_publishers_at}
# Session expiry, seconds, for v3 clients with Clean Session = 0; unset means never.
# persistent_session_expiry = 86400
# Upper bound on a v5 client's Session Expiry Interval, seconds.
max_session_expiry = {max_session_expiry}
# Accept retained messages.
retain_available = {retain_available}
# Accept wildcard subscriptions.
wildcard_subscriptions = {wildcard_subscriptions}
# Accept $share/ subscriptions.
shared_subscriptions = {shared_subscriptions}
# Accept Subscription Identifiers.
subscription_identifiers = {subscription_identifiers}
# Response Information prefix for v5 clients that request it; empty turns it off.
response_information_prefix = "{response_information_prefix}"

[store]
# Keep retained messages and persistent sessions on disk; false (or --in-memory) keeps them in memory only.
enabled = {store_enabled}
# Data directory, created if missing.
dir = "{store_dir}"
# "sync": a QoS 1/2 message is acknowledged once it is on disk (no loss); "batch": acknowledged
# at once and committed every batch_interval_ms (a crash may lose the last interval).
durability = "{durability}"
# Commit interval of "batch" durability, milliseconds.
batch_interval_ms = {batch_interval_ms}
"#,
        connect_timeout_secs = d.server.connect_timeout_secs,
        max_connections = d.server.max_connections,
        sys_interval_secs = d.server.sys_interval_secs,
        core_shards = d.server.core_shards,
        level = d.log.level,
        max_packet_size = b.max_packet_size,
        receive_maximum = b.receive_maximum,
        max_inflight = b.max_inflight,
        topic_alias_maximum = b.topic_alias_maximum,
        max_keepalive = b.max_keepalive,
        max_queued_messages = b.max_queued_messages,
        max_queued_bytes = b.max_queued_bytes,
        queue_qos0_offline = b.queue_qos0_offline,
        pause_publishers_at = b.pause_publishers_at,
        max_session_expiry = b.max_session_expiry,
        retain_available = b.retain_available,
        wildcard_subscriptions = b.wildcard_subscriptions,
        shared_subscriptions = b.shared_subscriptions,
        subscription_identifiers = b.subscription_identifiers,
        response_information_prefix = b.response_information_prefix,
        store_enabled = d.store.enabled,
        store_dir = d.store.dir.display(),
        durability = match d.store.durability {
            DurabilityKind::Sync => "sync",
            DurabilityKind::Batch => "batch",
        },
        batch_interval_ms = d.store.batch_interval_ms,
    );
    out
}
