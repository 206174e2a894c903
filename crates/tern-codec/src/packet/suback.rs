//! SUBACK: one reason code per filter of the SUBSCRIBE.

use crate::{PacketId, Properties, ReasonCode};

/// Subscribe acknowledgment [MQTT-3.9].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: Properties,
    /// One code per filter, in order; v3 encodes via [`ReasonCode::to_v3_suback`].
    pub reasons: Vec<ReasonCode>,
}
