//! DISCONNECT.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::Reader;
use crate::{Properties, ProtocolVersion, ReasonCode, Violation};

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

impl Disconnect {
    /// Parses a DISCONNECT body; v5 accepts the forms without reason or properties.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let mut d = Disconnect::default();
        if version.is_v5() {
            if !r.is_empty() {
                d.reason = r.reason()?;
            }
            if !r.is_empty() {
                d.properties = Properties::decode(&mut r, Allowed::DISCONNECT)?;
            }
        }
        r.finish("bytes after the end of the DISCONNECT")?;
        Ok(d)
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            0
        } else if self.reason != ReasonCode::SUCCESS || !self.properties.is_empty() {
            1 + self.properties.wire_len()
        } else {
            0
        }
    }

    /// Writes the body for `version`: nothing for a SUCCESS without properties, otherwise the
    /// reason and the property length (even when 0: the short form without it is valid, but
    /// some clients, rumqttc 0.25 among them, wait for the property length that is not coming).
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        if !version.is_v5() {
            return;
        }
        if self.reason != ReasonCode::SUCCESS || !self.properties.is_empty() {
            out.put_u8(self.reason.0);
            self.properties.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*};

    #[test]
    fn disconnect_round_trips_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            assert_round_trip(&Packet::Disconnect(Disconnect::default()), v);
        }
        assert_round_trip(
            &Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL)),
            V5,
        );
        let mut d = Disconnect::new(ReasonCode::SERVER_MOVED);
        d.properties.server_reference = Some("other:1883".into());
        d.properties.session_expiry_interval = Some(0);
        d.properties.reason_string = Some("moved".into());
        assert_round_trip(&Packet::Disconnect(d), V5);
    }

    #[test]
    fn v5_success_disconnect_is_empty_and_a_reason_carries_a_property_length() {
        assert_eq!(
            encode(&Packet::Disconnect(Disconnect::default()), V5),
            [0xE0, 0]
        );
        assert_eq!(
            encode(
                &Packet::Disconnect(Disconnect::new(ReasonCode::UNSPECIFIED_ERROR)),
                V5
            ),
            [0xE0, 2, 0x80, 0]
        );
    }

    #[test]
    fn v3_disconnect_drops_reason() {
        assert_eq!(
            encode(
                &Packet::Disconnect(Disconnect::new(ReasonCode::UNSPECIFIED_ERROR)),
                V3_1_1
            ),
            [0xE0, 0]
        );
    }

    #[test]
    fn v5_disconnect_with_reason_only_decodes() {
        assert_eq!(
            decode_all(&[0xE0, 1, 0x04], V5),
            Ok(Packet::Disconnect(Disconnect::new(
                ReasonCode::DISCONNECT_WITH_WILL
            )))
        );
    }

    #[test]
    fn v3_disconnect_with_body_is_malformed() {
        assert_violation(
            decode_all(&[0xE0, 1, 0], V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn disconnect_with_reserved_flags_is_malformed() {
        assert_violation(
            decode_all(&[0xE1, 0], V5),
            "MQTT-2.1.3-1",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(&[0xE1, 0], V3_1_1),
            "MQTT-2.2.2-2",
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
