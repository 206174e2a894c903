//! Connection options: what goes into CONNECT, and how the client behaves locally.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_codec::{ProtocolVersion, Publish};

/// A function that takes each received message on the connection's own task, instead of the
/// queue read by [`crate::Client::recv`]: no hand-off between tasks per message. It runs
/// between reads of the socket, so it must not block.
#[derive(Clone)]
pub struct MessageHandler(Arc<dyn Fn(Publish) + Send + Sync>);

impl MessageHandler {
    /// Wraps `f`.
    pub fn new(f: impl Fn(Publish) + Send + Sync + 'static) -> Self {
        MessageHandler(Arc::new(f))
    }

    /// Hands `message` to the function.
    pub(crate) fn call(&self, message: Publish) {
        (self.0)(message);
    }
}

impl fmt::Debug for MessageHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageHandler")
    }
}

/// How to connect: the CONNECT fields and the client's local limits.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Protocol level to speak.
    pub version: ProtocolVersion,
    /// Client Identifier; empty asks the broker to assign one (v5, or clean 3.1.1 sessions).
    pub client_id: String,
    /// Clean Start (v5) / Clean Session (v3).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns pings off.
    pub keep_alive: u16,
    /// v5 Session Expiry Interval in seconds; `None` leaves it out (0).
    pub session_expiry: Option<u32>,
    /// v5 Receive Maximum announced to the broker; `None` leaves it out (65,535).
    pub receive_maximum: Option<u16>,
    /// v5 Maximum Packet Size announced to the broker, and the largest packet accepted from it.
    pub max_packet_size: Option<u32>,
    /// User Name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<bytes::Bytes>,
    /// Local cap on QoS 1 and 2 publishes in flight; the broker's Receive Maximum also applies.
    pub max_in_flight: u16,
    /// Local address to bind before connecting (source address selection); port 0 picks one.
    pub local_addr: Option<SocketAddr>,
    /// How long TCP connect plus CONNECT/CONNACK may take.
    pub connect_timeout: Duration,
    /// Capacity of the queue of received messages not yet taken by [`crate::Client::recv`].
    pub incoming_capacity: usize,
    /// Takes every received message instead of the queue; [`crate::Client::recv`] then
    /// returns `None` once the connection closes.
    pub on_message: Option<MessageHandler>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            version: ProtocolVersion::V5,
            client_id: String::new(),
            clean_start: true,
            keep_alive: 60,
            session_expiry: None,
            receive_maximum: None,
            max_packet_size: None,
            username: None,
            password: None,
            max_in_flight: u16::MAX,
            local_addr: None,
            connect_timeout: Duration::from_secs(10),
            incoming_capacity: 256,
            on_message: None,
        }
    }
}

impl ConnectOptions {
    /// Default options with `client_id` at `version`.
    pub fn new(version: ProtocolVersion, client_id: impl Into<String>) -> Self {
        ConnectOptions {
            version,
            client_id: client_id.into(),
            ..ConnectOptions::default()
        }
    }
}
