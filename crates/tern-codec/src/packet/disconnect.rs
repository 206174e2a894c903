//! DISCONNECT.

use crate::{Properties, ReasonCode};

/// Disconnect notification [MQTT-3.14]; v3 carries neither reason nor properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (v5).
    pub reason: ReasonCode,
    /// Properties (v5).
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with `reason` and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: Default::default(),
        }
    }
}
