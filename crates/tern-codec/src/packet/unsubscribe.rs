//! UNSUBSCRIBE.

use crate::{PacketId, Properties};

/// An unsubscribe request [MQTT-3.10].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (v5 only: User Property).
    pub properties: Properties,
    /// Topic filters to remove; never empty on a valid packet [MQTT-3.10.3-2].
    pub filters: Vec<String>,
}
