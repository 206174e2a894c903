//! PUBACK, PUBREC, PUBREL and PUBCOMP: the QoS 1 and QoS 2 acknowledgments share one shape.

use bytes::{BufMut, BytesMut};

use crate::packet::codec::{framed_len, put_fixed_header};
use crate::properties::Allowed;
use crate::wire::Reader;
use crate::{PacketId, PacketType, Properties, ProtocolVersion, ReasonCode, Violation};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP [MQTT-3.4 to 3.7].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet Identifier of the PUBLISH (or PUBREL) acknowledged.
    pub packet_id: PacketId,
    /// Reason code (v5; SUCCESS otherwise). Encoded compactly when SUCCESS with no properties.
    pub reason: ReasonCode,
    /// Properties (v5; empty otherwise).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgment of `packet_id` with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }
    }

    /// An acknowledgment of `packet_id` carrying `reason`.
    pub fn with_reason(packet_id: PacketId, reason: ReasonCode) -> Self {
        Ack {
            packet_id,
            reason,
            properties: Default::default(),
        }
    }
}

impl Ack {
    /// Parses the body of an acknowledgment; v5 accepts the short forms without reason or
    /// properties.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let packet_id = r.packet_id(version)?;
        let mut ack = Ack::new(packet_id);
        if version.is_v5() {
            if !r.is_empty() {
                ack.reason = r.reason()?;
            }
            if !r.is_empty() {
                ack.properties = Properties::decode(&mut r, Allowed::ACK)?;
            }
        }
        r.finish("bytes after the end of the acknowledgment")?;
        Ok(ack)
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() && !self.properties.is_empty() {
            3 + self.properties.wire_len()
        } else {
            bare_body_len(self.reason, version)
        }
    }

    /// Writes the body for `version`, compactly when nothing but the id is needed.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        if version.is_v5() && !self.properties.is_empty() {
            out.put_u16(self.packet_id.get());
            out.put_u8(self.reason.0);
            self.properties.encode(out);
        } else {
            put_bare_body(self.packet_id, self.reason, version, out);
        }
    }

    /// Exact number of bytes [`Ack::encode_bare`] writes.
    pub fn bare_len(reason: ReasonCode, version: ProtocolVersion) -> usize {
        framed_len(bare_body_len(reason, version))
    }

    /// Appends a `kind` acknowledgment (PUBACK, PUBREC, PUBREL or PUBCOMP) of `packet_id`
    /// with `reason` and no properties, exactly as [`crate::Packet::encode`] writes such an
    /// [`Ack`], for senders that keep no `Ack` value.
    pub fn encode_bare(
        kind: PacketType,
        packet_id: PacketId,
        reason: ReasonCode,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) {
        debug_assert!(matches!(
            kind,
            PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp
        ));
        put_fixed_header(out, kind.first_byte(), bare_body_len(reason, version));
        put_bare_body(packet_id, reason, version, out);
    }
}

/// Body length of an acknowledgment without properties: the reason code is left out for v3
/// and for SUCCESS (MQTT 5.0 section 3.4.2.1).
fn bare_body_len(reason: ReasonCode, version: ProtocolVersion) -> usize {
    if version.is_v5() && reason != ReasonCode::SUCCESS {
        3
    } else {
        2
    }
}

/// Writes the body of an acknowledgment without properties.
fn put_bare_body(
    packet_id: PacketId,
    reason: ReasonCode,
    version: ProtocolVersion,
    out: &mut BytesMut,
) {
    out.put_u16(packet_id.get());
    if bare_body_len(reason, version) == 3 {
        out.put_u8(reason.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PropertySet;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*};

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn all_kinds(ack: Ack) -> [Packet; 4] {
        [
            Packet::PubAck(ack.clone()),
            Packet::PubRec(ack.clone()),
            Packet::PubRel(ack.clone()),
            Packet::PubComp(ack),
        ]
    }

    #[test]
    fn acks_round_trip_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            for p in all_kinds(Ack::new(id(7))) {
                assert_round_trip(&p, v);
            }
        }
        let full = Ack {
            packet_id: id(65535),
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            properties: PropertySet {
                reason_string: Some("none".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            }
            .into(),
        };
        for p in all_kinds(full)
            .into_iter()
            .chain(all_kinds(Ack::with_reason(
                id(1),
                ReasonCode::UNSPECIFIED_ERROR,
            )))
        {
            assert_round_trip(&p, V5);
        }
    }

    #[test]
    fn v5_success_ack_without_properties_is_two_bytes() {
        assert_eq!(
            encode(&Packet::PubAck(Ack::new(id(1))), V5),
            [0x40, 2, 0, 1]
        );
        assert_eq!(
            encode(&Packet::PubRel(Ack::new(id(1))), V5),
            [0x62, 2, 0, 1]
        );
    }

    #[test]
    fn v5_ack_with_reason_only_is_three_bytes() {
        let p = Packet::PubRec(Ack::with_reason(id(1), ReasonCode::QUOTA_EXCEEDED));
        assert_eq!(encode(&p, V5), [0x50, 3, 0, 1, 0x97]);
    }

    #[test]
    fn v3_ack_drops_reason_and_properties() {
        let mut ack = Ack::with_reason(id(2), ReasonCode::QUOTA_EXCEEDED);
        ack.properties.reason_string = Some("x".into());
        assert_eq!(encode(&Packet::PubComp(ack), V3_1_1), [0x70, 2, 0, 2]);
    }

    #[test]
    fn v5_short_forms_decode() {
        assert_eq!(
            decode_all(&[0x40, 2, 0, 1], V5),
            Ok(Packet::PubAck(Ack::new(id(1))))
        );
        assert_eq!(
            decode_all(&[0x40, 3, 0, 1, 0x10], V5),
            Ok(Packet::PubAck(Ack::with_reason(
                id(1),
                ReasonCode::NO_MATCHING_SUBSCRIBERS
            )))
        );
    }

    #[test]
    fn ack_with_packet_id_zero_is_malformed() {
        assert_violation(
            decode_all(&[0x40, 2, 0, 0], V5),
            "MQTT-2.2.1-3",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(&[0x40, 2, 0, 0], V3_1_1),
            "MQTT-2.3.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn v3_ack_with_trailing_bytes_is_malformed() {
        assert_violation(
            decode_all(&[0x40, 3, 0, 1, 0], V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn pubrel_with_wrong_flags_is_malformed() {
        assert_violation(
            decode_all(&[0x60, 2, 0, 1], V5),
            "MQTT-3.6.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(&[0x60, 2, 0, 1], V3_1_1),
            "MQTT-3.6.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn puback_with_reserved_flags_is_malformed() {
        assert_violation(
            decode_all(&[0x41, 2, 0, 1], V5),
            "MQTT-2.1.3-1",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(&[0x42, 2, 0, 1], V3_1_1),
            "MQTT-2.2.2-2",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn ack_property_not_allowed_is_malformed() {
        // Content Type in a PUBACK.
        let bytes = [0x40, 7, 0, 1, 0, 3, 0x03, 0, 0];
        assert_violation(
            decode_all(&bytes, V5),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
