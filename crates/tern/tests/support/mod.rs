//! Helpers for end-to-end tests: an in-process broker on a free port and a raw-bytes client that
//! decodes what the broker sends with `tern-codec`.
//!
//! These helpers only move bytes; tests build packets themselves and judge the answers.

#![allow(dead_code)] // Each test file uses a different subset.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tern::config::ListenerConfig;
use tern::{Config, Server};
use tern_broker::BrokerConfig;
use tern_codec::{Packet, ProtocolVersion, Violation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a client waits for the broker before calling it a failure.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Start a broker with `broker` limits on a free port of 127.0.0.1.
pub async fn start_broker(broker: BrokerConfig) -> Server {
    let config = Config {
        listeners: vec![ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }],
        broker,
        ..in_memory()
    };
    start_with(config).await
}

/// The default config with the store off: tests that are not about durability keep nothing on
/// disk. The core runs as `TERN_TEST_CORE_SHARDS` shards when that is set (1 otherwise), so the
/// whole suite can be run against a sharded core.
pub fn in_memory() -> Config {
    let mut config = Config::default();
    config.store.enabled = false;
    config.server.core_shards = core_shards();
    config
}

/// The shard count the tests run the core with: `TERN_TEST_CORE_SHARDS`, or 1.
pub fn core_shards() -> usize {
    std::env::var("TERN_TEST_CORE_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Start a broker with a whole `config`.
pub async fn start_with(config: Config) -> Server {
    Server::start(config).await.expect("broker starts")
}

/// What went wrong talking to the broker.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing arrived within [`TIMEOUT`].
    Timeout,
    /// The socket failed.
    Io(std::io::Error),
    /// The broker sent bytes that do not decode.
    Undecodable(Violation),
    /// A packet arrived where the connection was expected to close.
    Unexpected(Box<Packet>),
}

/// A client that sends raw bytes and decodes the broker's packets.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Connect a TCP socket to `addr` (no MQTT CONNECT is sent).
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect within the timeout")
            .expect("connect to the broker");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawClient {
            stream,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Send `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("send to the broker");
    }

    /// Encode and send `packet` at `version`.
    pub async fn send_packet(&mut self, packet: &Packet, version: ProtocolVersion) {
        let mut out = BytesMut::new();
        packet.encode(version, &mut out);
        self.send(&out).await;
    }

    /// The next packet from the broker, decoded at `version`; `Ok(None)` once the broker closed
    /// the connection (EOF or reset).
    pub async fn recv_packet(
        &mut self,
        version: ProtocolVersion,
    ) -> Result<Option<Packet>, ClientError> {
        tokio::time::timeout(TIMEOUT, self.recv_inner(version))
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    async fn recv_inner(
        &mut self,
        version: ProtocolVersion,
    ) -> Result<Option<Packet>, ClientError> {
        loop {
            if let Some(packet) = tern_codec::decode(&mut self.buf, version, u32::MAX)
                .map_err(ClientError::Undecodable)?
            {
                return Ok(Some(packet));
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }

    /// Succeeds once the broker closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) -> Result<(), ClientError> {
        match self.recv_packet(ProtocolVersion::V5).await? {
            None => Ok(()),
            Some(packet) => Err(ClientError::Unexpected(Box::new(packet))),
        }
    }

    /// Close the client's sending side (the broker sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
