//! The one error type for everything a peer can get wrong on the wire.

use crate::ReasonCode;

/// A protocol violation by the peer: the spec rule it breaks and the v5 reason code to report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{rule}] {detail} ({reason})")]
pub struct Violation {
    /// The normative statement broken, e.g. `MQTT-3.3.1-4`.
    pub rule: &'static str,
    /// The reason code a v5 DISCONNECT (or CONNACK, during connect) carries for it.
    pub reason: ReasonCode,
    /// What exactly was wrong, for logs.
    pub detail: &'static str,
}

impl Violation {
    /// A violation of `rule`, reported with `reason`.
    pub const fn new(rule: &'static str, reason: ReasonCode, detail: &'static str) -> Self {
        Violation {
            rule,
            reason,
            detail,
        }
    }

    /// A malformed packet (reason 0x81) breaking `rule`.
    pub const fn malformed(rule: &'static str, detail: &'static str) -> Self {
        Violation::new(rule, ReasonCode::MALFORMED_PACKET, detail)
    }

    /// A protocol error (reason 0x82) breaking `rule`.
    pub const fn protocol(rule: &'static str, detail: &'static str) -> Self {
        Violation::new(rule, ReasonCode::PROTOCOL_ERROR, detail)
    }
}
