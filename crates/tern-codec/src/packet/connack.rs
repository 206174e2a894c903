//! CONNACK: the server's answer to CONNECT.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::Reader;
use crate::{Properties, ProtocolVersion, ReasonCode, Violation};

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

/// The v5 reason code carried by a v3 CONNACK return code.
fn from_v3_connack(code: u8) -> ReasonCode {
    match code {
        0x00 => ReasonCode::SUCCESS,
        0x01 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        0x02 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        0x03 => ReasonCode::SERVER_UNAVAILABLE,
        0x04 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        0x05 => ReasonCode::NOT_AUTHORIZED,
        other => ReasonCode(other),
    }
}

impl ConnAck {
    /// Parses a CONNACK body.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(Violation::malformed(
                "MQTT-3.2.2-1",
                "reserved CONNACK flags set",
            ));
        }
        let code = r.u8()?;
        let (reason, properties) = if version.is_v5() {
            (
                ReasonCode(code),
                Properties::decode(&mut r, Allowed::CONNACK)?,
            )
        } else {
            (from_v3_connack(code), Properties::default())
        };
        r.finish("bytes after the end of the CONNACK")?;
        Ok(ConnAck {
            session_present: flags & 0x01 != 0,
            reason,
            properties,
        })
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.wire_len()
        } else {
            0
        }
    }

    /// Writes the body for `version` (v3.1 has no Session Present flag).
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u8(u8::from(
            self.session_present && version != ProtocolVersion::V3_1,
        ));
        if version.is_v5() {
            out.put_u8(self.reason.0);
            self.properties.encode(out);
        } else {
            out.put_u8(self.reason.to_v3_connack());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*};

    #[test]
    fn connack_round_trips_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            for reason in [
                ReasonCode::SUCCESS,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ] {
                assert_round_trip(
                    &Packet::ConnAck(ConnAck {
                        reason,
                        ..Default::default()
                    }),
                    v,
                );
            }
        }
        let p = ConnAck {
            session_present: true,
            ..Default::default()
        };
        assert_round_trip(&Packet::ConnAck(p.clone()), V3_1_1);
        let mut p = p;
        p.reason = ReasonCode::QUOTA_EXCEEDED;
        p.properties.assigned_client_identifier = Some("auto-1".into());
        p.properties.maximum_qos = Some(1);
        p.properties.topic_alias_maximum = Some(10);
        assert_round_trip(&Packet::ConnAck(p), V5);
    }

    #[test]
    fn v3_connack_uses_v3_return_codes_and_drops_properties() {
        let mut p = ConnAck {
            reason: ReasonCode::SERVER_BUSY,
            ..Default::default()
        };
        p.properties.reason_string = Some("busy".into());
        assert_eq!(encode(&Packet::ConnAck(p.clone()), V3_1_1), [0x20, 2, 0, 3]);
        assert_eq!(encode(&Packet::ConnAck(p), V5)[..4], [0x20, 10, 0, 0x89]);
    }

    #[test]
    fn v31_connack_has_no_session_present() {
        let p = ConnAck {
            session_present: true,
            ..Default::default()
        };
        assert_eq!(encode(&Packet::ConnAck(p), V3_1), [0x20, 2, 0, 0]);
    }

    #[test]
    fn connack_reserved_flags_are_malformed() {
        assert_violation(
            decode_all(&[0x20, 2, 2, 0], V3_1_1),
            "MQTT-3.2.2-1",
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
