//! AUTH: the v5 enhanced authentication exchange.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::Reader;
use crate::{Properties, ReasonCode, Violation};

/// Authentication exchange [MQTT-3.15] (v5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code: 0x00, 0x18 or 0x19.
    pub reason: ReasonCode,
    /// Properties (Authentication Method and Data, Reason String, User Property).
    pub properties: Properties,
}

impl Auth {
    /// Parses an AUTH body, accepting the forms without reason or properties.
    pub(crate) fn decode(mut r: Reader) -> Result<Self, Violation> {
        let mut a = Auth::default();
        if !r.is_empty() {
            a.reason = r.reason()?;
        }
        if !r.is_empty() {
            a.properties = Properties::decode(&mut r, Allowed::AUTH)?;
        }
        r.finish("bytes after the end of the AUTH")?;
        Ok(a)
    }

    /// Length of the body.
    pub(crate) fn body_len(&self) -> usize {
        if !self.properties.is_empty() {
            1 + self.properties.wire_len()
        } else {
            usize::from(self.reason != ReasonCode::SUCCESS)
        }
    }

    /// Writes the body, empty for SUCCESS without properties.
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        let has_props = !self.properties.is_empty();
        if has_props || self.reason != ReasonCode::SUCCESS {
            out.put_u8(self.reason.0);
        }
        if has_props {
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
    fn auth_round_trips() {
        assert_round_trip(&Packet::Auth(Auth::default()), V5);
        let mut a = Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            ..Default::default()
        };
        assert_round_trip(&Packet::Auth(a.clone()), V5);
        a.properties.authentication_method = Some("SCRAM-SHA-1".into());
        a.properties.authentication_data = Some(bytes::Bytes::from_static(b"nonce"));
        a.properties.reason_string = Some("more".into());
        a.properties.user_properties = vec![("x".into(), "y".into())];
        assert_round_trip(&Packet::Auth(a), V5);
    }

    #[test]
    fn success_auth_is_empty() {
        assert_eq!(encode(&Packet::Auth(Auth::default()), V5), [0xF0, 0]);
        assert_eq!(
            decode_all(&[0xF0, 1, 0x19], V5),
            Ok(Packet::Auth(Auth {
                reason: ReasonCode::REAUTHENTICATE,
                ..Default::default()
            }))
        );
    }

    #[test]
    fn auth_before_v5_is_a_forbidden_packet_type() {
        assert_violation(
            decode_all(&[0xF0, 0], V3_1_1),
            crate::RULE_PACKET_TYPE,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn auth_property_not_allowed_is_malformed() {
        assert_violation(
            decode_all(&[0xF0, 5, 0x18, 3, 0x21, 0, 1], V5),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
