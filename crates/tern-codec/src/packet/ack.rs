//! PUBACK, PUBREC, PUBREL and PUBCOMP: the QoS 1 and QoS 2 acknowledgments share one shape.

use crate::{PacketId, Properties, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP [MQTT-3.4 to 3.7].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet Identifier of the PUBLISH (or PUBREL) acknowledged.
    pub packet_id: PacketId,
    /// Reason code (v5; SUCCESS otherwise). Encoded compactly when SUCCESS with no properties.
    pub reason: ReasonCode,
    /// Properties (v5; empty otherwise).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgment of `packet_id` with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }
    }

    /// An acknowledgment of `packet_id` carrying `reason`.
    pub fn with_reason(packet_id: PacketId, reason: ReasonCode) -> Self {
        Ack {
            packet_id,
            reason,
            properties: Default::default(),
        }
    }
}
