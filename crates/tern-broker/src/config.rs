//! Limits and switches that govern protocol state. `Default` is the only source of defaults; the
//! edge reads the `[broker]` table of the TOML config into [`BrokerConfig`] (missing keys take
//! these defaults) and a session gets the config at creation, never from a global.

use serde::{Deserialize, Serialize};

/// Everything the broker core can be told by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, in bytes (advertised to v5 clients as Maximum
    /// Packet Size). Default 1 MiB: bigger packets get DISCONNECT 0x95 and are never buffered.
    pub max_packet_size: u32,
    /// Receive Maximum advertised to clients: QoS 1/2 PUBLISHes a client may have unacknowledged
    /// towards the broker; exceeding it is DISCONNECT 0x93. Default 1024.
    pub receive_maximum: u16,
    /// Cap on QoS 1/2 messages in flight to one client, on top of the client's Receive Maximum.
    /// Default 256; further messages wait in the session queue.
    pub max_inflight: u16,
    /// Topic Alias Maximum advertised to v5 clients (0 turns inbound aliases off). Default 64.
    pub topic_alias_maximum: u16,
    /// Largest keepalive allowed, seconds. A v5 client asking for more (or 0) is told Server Keep
    /// Alive; a v3 client asking for more is refused (CONNACK 0x02). Default 65535 (no limit).
    pub max_keepalive: u16,
    /// Messages held per session while offline or beyond the in-flight window. Default 1000.
    pub max_queued_messages: usize,
    /// Payload bytes held per session while offline or beyond the in-flight window; 0 means no
    /// byte limit. Default 64 MiB. When either limit is hit the newest message is dropped.
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions. Default false (drop them).
    pub queue_qos0_offline: bool,
    /// Queue length of a connected session at which the clients publishing to it are paused
    /// (not read) until it drains to half, so a slow subscriber slows its publishers down
    /// instead of losing messages to the queue limits; 0 turns pausing off. Default 500.
    pub pause_publishers_at: usize,
    /// Session expiry, seconds, for v3 clients with Clean Session = 0; `None` means never.
    pub persistent_session_expiry: Option<u32>,
    /// Upper bound on a v5 client's Session Expiry Interval, seconds. Default: no bound.
    pub max_session_expiry: u32,
    /// Accept retained messages. Default true; when false v5 publishers get 0x9A.
    pub retain_available: bool,
    /// Accept wildcard subscriptions. Default true.
    pub wildcard_subscriptions: bool,
    /// Accept `$share/` subscriptions. Default true.
    pub shared_subscriptions: bool,
    /// Accept Subscription Identifiers. Default true.
    pub subscription_identifiers: bool,
    /// Response Information given to v5 clients that request it: this prefix followed by the
    /// client id. Default "response/"; empty turns the feature off.
    pub response_information_prefix: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 256,
            topic_alias_maximum: 64,
            max_keepalive: 65535,
            max_queued_messages: 1000,
            max_queued_bytes: 64 * 1024 * 1024,
            queue_qos0_offline: false,
            pause_publishers_at: 500,
            persistent_session_expiry: None,
            max_session_expiry: u32::MAX,
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            response_information_prefix: "response/".into(),
        }
    }
}
