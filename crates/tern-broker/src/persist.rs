//! The vocabulary between the core and a store: the operations the core wants made durable, in
//! order, and the snapshot it is restored from at start.
//!
//! The core never writes anything itself. After each event it may have queued operations; the
//! edge takes them with [`crate::Broker::poll_persist`] as one numbered batch, has a store commit
//! them (many batches may share one commit and one fsync), and reports with
//! [`crate::Broker::handle_persisted`] the highest batch number that is durable. Packets whose
//! promise depends on a batch (the PUBACK/PUBREC of a message that was queued or retained, a
//! PUBLISH or PUBREL to a persistent session) wait in the core until then (see `hold.rs`).
//!
//! What is durable: retained messages; persistent sessions (Session Expiry Interval > 0) with
//! their subscriptions, expiry, will and will delay; each such session's undelivered QoS 1/2
//! messages with their in-flight state; and inbound QoS 2 identifiers not yet released.
//! Sessions that end with their connection write nothing.
//!
//! Times are `Instant`s here; a store converts them to wall-clock time when it writes and back
//! when it loads, so that time spent down counts towards expiry.

use std::sync::Arc;
use std::time::Instant;

use tern_codec::{PacketId, ProtocolVersion, QoS};

use crate::session::{Message, OutState, SubEntry, Will};

/// Numbers the batches of operations, in the order the core produced them.
pub type Ticket = u64;

/// One durable change.
// Session records are large but rare next to deliveries; boxing would not pay for itself.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Store (or replace) the retained message of `msg.topic`.
    PutRetained(Arc<Message>),
    /// Delete the retained message of this topic.
    DeleteRetained(String),
    /// Store (or replace) a persistent session's record.
    PutSession(SessionRecord),
    /// Delete a session with all its deliveries and inbound identifiers.
    DeleteSession(Arc<str>),
    /// Store (or replace) one message on its way to a session.
    PutDelivery {
        /// The session's client identifier.
        client_id: Arc<str>,
        /// Position in the session's outbound order.
        seq: u64,
        /// The message and where its flow stands.
        delivery: StoredDelivery,
    },
    /// A delivery is complete (or dropped).
    DeleteDelivery {
        /// The session's client identifier.
        client_id: Arc<str>,
        /// Position in the session's outbound order.
        seq: u64,
    },
    /// An inbound QoS 2 PUBLISH was received and not yet released.
    PutInbound {
        /// The session's client identifier.
        client_id: Arc<str>,
        /// The PUBLISH packet identifier.
        packet_id: u16,
    },
    /// An inbound QoS 2 identifier was released by PUBREL.
    DeleteInbound {
        /// The session's client identifier.
        client_id: Arc<str>,
        /// The PUBLISH packet identifier.
        packet_id: u16,
    },
}

/// The durable part of a session, rewritten whole when any of it changes.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Client identifier (the key).
    pub client_id: Arc<str>,
    /// Protocol level of the last connection.
    pub version: ProtocolVersion,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// When the session ends if it stays disconnected; `None` while connected or never.
    pub expires_at: Option<Instant>,
    /// Subscriptions by filter exactly as subscribed, in no particular order.
    pub subscriptions: Vec<(String, SubEntry)>,
    /// The will of the current or last connection.
    pub will: Option<Will>,
    /// When a delayed will is due, if the session is disconnected.
    pub will_at: Option<Instant>,
}

/// A message on its way to a session, as stored.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// The message (topic, payload, properties, expiry).
    pub msg: Arc<Message>,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription Identifiers to send.
    pub sub_ids: Vec<u32>,
    /// `None` while queued; the packet identifier and flow state once sent.
    pub inflight: Option<(PacketId, OutState)>,
}

/// Everything a store holds, loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Retained messages.
    pub retained: Vec<Arc<Message>>,
    /// Persistent sessions.
    pub sessions: Vec<StoredSession>,
}

/// One session as loaded.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// The session record.
    pub record: SessionRecord,
    /// Its deliveries, in `seq` order.
    pub deliveries: Vec<(u64, StoredDelivery)>,
    /// Inbound QoS 2 identifiers not yet released.
    pub inbound: Vec<u16>,
}
