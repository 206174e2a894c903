//! PUBLISH: an application message in either direction.

use bytes::Bytes;

use crate::{PacketId, Properties, QoS};

/// An application message [MQTT-3.3].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// DUP flag: a re-delivery. Always false at QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; empty only in v5 when a Topic Alias stands in for it.
    pub topic: String,
    /// Packet Identifier: present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (v5; empty otherwise).
    pub properties: Properties,
    /// Application payload, a zero-copy slice of the read buffer.
    pub payload: Bytes,
}
