//! SUBACK: one reason code per filter of the SUBSCRIBE.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::Reader;
use crate::{PacketId, Properties, ProtocolVersion, ReasonCode, Violation};

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

impl SubAck {
    /// Parses a SUBACK body.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let packet_id = r.packet_id(version)?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, Allowed::ACK)?
        } else {
            Properties::default()
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8()?;
            if !version.is_v5() && !matches!(code, 0x00..=0x02 | 0x80) {
                return Err(Violation::malformed(
                    "MQTT-3.9.3-2",
                    "reserved SUBACK return code",
                ));
            }
            reasons.push(ReasonCode(code));
        }
        Ok(SubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.wire_len()
        } else {
            0
        } + self.reasons.len()
    }

    /// Writes the body for `version`, mapping codes through `to_v3_suback` before v5.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out);
            self.reasons.iter().for_each(|r| out.put_u8(r.0));
        } else {
            self.reasons
                .iter()
                .for_each(|r| out.put_u8(r.to_v3_suback()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*};

    fn suback(reasons: Vec<ReasonCode>) -> SubAck {
        SubAck {
            packet_id: PacketId::new(5).unwrap(),
            properties: Properties::default(),
            reasons,
        }
    }

    #[test]
    fn suback_round_trips_in_every_version() {
        let codes = vec![
            ReasonCode::SUCCESS,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::UNSPECIFIED_ERROR,
        ];
        for v in [V3_1, V3_1_1, V5] {
            assert_round_trip(&Packet::SubAck(suback(codes.clone())), v);
        }
        let mut s = suback(vec![
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_1,
        ]);
        s.properties.reason_string = Some("bad filter".into());
        assert_round_trip(&Packet::SubAck(s), V5);
    }

    #[test]
    fn v3_suback_maps_failures_to_0x80() {
        let s = suback(vec![ReasonCode::NOT_AUTHORIZED, ReasonCode::GRANTED_QOS_2]);
        assert_eq!(
            encode(&Packet::SubAck(s), V3_1_1),
            [0x90, 4, 0, 5, 0x80, 0x02]
        );
    }

    #[test]
    fn v3_suback_reserved_return_code_is_malformed() {
        assert_violation(
            decode_all(&[0x90, 3, 0, 5, 0x03], V3_1_1),
            "MQTT-3.9.3-2",
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
