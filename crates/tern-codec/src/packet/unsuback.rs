//! UNSUBACK.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::Reader;
use crate::{PacketId, Properties, ProtocolVersion, ReasonCode, Violation};

/// Unsubscribe acknowledgment [MQTT-3.11].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (v5 only).
    pub properties: Properties,
    /// One code per filter (v5 only; v3 UNSUBACK has no payload).
    pub reasons: Vec<ReasonCode>,
}

impl UnsubAck {
    /// Parses an UNSUBACK body (v3: the Packet Identifier only).
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let packet_id = r.packet_id(version)?;
        let mut ack = UnsubAck {
            packet_id,
            properties: Properties::default(),
            reasons: Vec::new(),
        };
        if version.is_v5() {
            ack.properties = Properties::decode(&mut r, Allowed::ACK)?;
            ack.reasons = r.rest().iter().map(|&c| ReasonCode(c)).collect();
        }
        r.finish("bytes after the end of the UNSUBACK")?;
        Ok(ack)
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.wire_len() + self.reasons.len()
        } else {
            0
        }
    }

    /// Writes the body for `version`.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out);
            self.reasons.iter().for_each(|r| out.put_u8(r.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*};

    fn unsuback(reasons: Vec<ReasonCode>) -> UnsubAck {
        UnsubAck {
            packet_id: PacketId::new(11).unwrap(),
            properties: Properties::default(),
            reasons,
        }
    }

    #[test]
    fn unsuback_round_trips_in_every_version() {
        for v in [V3_1, V3_1_1] {
            assert_round_trip(&Packet::UnsubAck(unsuback(vec![])), v);
        }
        let mut u = unsuback(vec![
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
        ]);
        assert_round_trip(&Packet::UnsubAck(u.clone()), V5);
        u.properties.reason_string = Some("r".into());
        assert_round_trip(&Packet::UnsubAck(u), V5);
    }

    #[test]
    fn v3_unsuback_drops_payload() {
        let u = unsuback(vec![
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
        ]);
        assert_eq!(encode(&Packet::UnsubAck(u), V3_1_1), [0xB0, 2, 0, 11]);
    }

    #[test]
    fn v3_unsuback_with_payload_is_malformed() {
        assert_violation(
            decode_all(&[0xB0, 3, 0, 11, 0], V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
