//! `$SYS` topics: the broker's own retained messages about itself (uptime, clients, message
//! counts). They are published by the broker, never persisted (they are rewritten after every
//! start), and clients cannot publish under `$SYS` (see `publish_in.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tern_codec::QoS;

use crate::broker::{Broker, Outlet};
use crate::session::Message;

impl<O: Outlet> Broker<O> {
    /// Publishes `payload` as the retained message of the `$SYS` topic `topic` (which must start
    /// with `$SYS/`) and routes it to current subscribers. Nothing is stored.
    pub fn publish_system(&mut self, now: Instant, topic: &str, payload: Bytes) {
        debug_assert!(topic.starts_with("$SYS/"));
        let msg = Arc::new(system_message(topic, payload));
        self.store_retained(&msg, false);
        self.route(now, msg);
    }
}

/// The retained message the broker publishes as `topic`, one of its own.
pub(crate) fn system_message(topic: &str, payload: Bytes) -> Message {
    Message {
        topic: topic.to_string(),
        payload,
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Default::default(),
        expires_at: None,
        publisher: None,
        shared_properties: Default::default(),
        pending_shards: Default::default(),
    }
}
