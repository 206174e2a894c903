//! AUTH: the v5 enhanced authentication exchange.

use crate::{Properties, ReasonCode};

/// Authentication exchange [MQTT-3.15] (v5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code: 0x00, 0x18 or 0x19.
    pub reason: ReasonCode,
    /// Properties (Authentication Method and Data, Reason String, User Property).
    pub properties: Properties,
}
