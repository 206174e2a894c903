//! CONNACK: the server's answer to CONNECT.

use crate::{Properties, ReasonCode};

/// Connect acknowledgment [MQTT-3.2].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// The v5 reason code; encoded for v3 through [`ReasonCode::to_v3_connack`].
    pub reason: ReasonCode,
    /// CONNACK properties (v5 only; dropped when encoding for v3).
    pub properties: Properties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::SUCCESS
    }
}
