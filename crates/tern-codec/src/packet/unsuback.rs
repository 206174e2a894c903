//! UNSUBACK.

use crate::{PacketId, Properties, ReasonCode};

/// Unsubscribe acknowledgment [MQTT-3.11].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: Properties,
    /// One code per filter (v5 only; v3 UNSUBACK has no payload).
    pub reasons: Vec<ReasonCode>,
}
