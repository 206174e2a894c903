//! UNSUBSCRIBE.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::{Reader, field_len, put_field};
use crate::{PacketId, Properties, ProtocolVersion, Violation};

/// An unsubscribe request [MQTT-3.10].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// Properties (v5 only: User Property).
    pub properties: Properties,
    /// Topic filters to remove; never empty on a valid packet [MQTT-3.10.3-2].
    pub filters: Vec<String>,
}

impl Unsubscribe {
    /// Parses an UNSUBSCRIBE body.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let packet_id = r.packet_id(version)?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, Allowed::UNSUBSCRIBE)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(Violation::protocol(
                "MQTT-3.10.3-2",
                "UNSUBSCRIBE without a topic filter",
            ));
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.wire_len()
        } else {
            0
        } + self
            .filters
            .iter()
            .map(|f| field_len(f.as_bytes()))
            .sum::<usize>()
    }

    /// Writes the body for `version`.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out);
        }
        for filter in &self.filters {
            put_field(out, filter.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*, ReasonCode};

    fn unsubscribe() -> Unsubscribe {
        Unsubscribe {
            packet_id: PacketId::new(11).unwrap(),
            properties: Properties::default(),
            filters: vec!["a/+".into(), "#".into()],
        }
    }

    #[test]
    fn unsubscribe_round_trips_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            assert_round_trip(&Packet::Unsubscribe(unsubscribe()), v);
        }
        let mut u = unsubscribe();
        u.properties.user_properties = vec![("k".into(), "v".into())];
        assert_round_trip(&Packet::Unsubscribe(u), V5);
    }

    #[test]
    fn unsubscribe_is_encoded_with_flags_0010() {
        assert_eq!(encode(&Packet::Unsubscribe(unsubscribe()), V5)[0], 0xA2);
    }

    #[test]
    fn unsubscribe_with_wrong_flags_is_malformed() {
        assert_violation(
            decode_all(&[0xA0, 5, 0, 1, 0, 1, b'a'], V3_1_1),
            "MQTT-3.10.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn unsubscribe_without_filters_is_protocol_error() {
        assert_violation(
            decode_all(&[0xA2, 2, 0, 1], V3_1_1),
            "MQTT-3.10.3-2",
            ReasonCode::PROTOCOL_ERROR,
        );
        assert_violation(
            decode_all(&[0xA2, 3, 0, 1, 0], V5),
            "MQTT-3.10.3-2",
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn unsubscribe_property_not_allowed_is_malformed() {
        // Subscription Identifier in UNSUBSCRIBE.
        assert_violation(
            decode_all(&[0xA2, 8, 0, 1, 2, 0x0B, 1, 0, 1, b'a'], V5),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    /// v5: [MQTT-3.10.3-1]
    /// v3.1.1: [MQTT-3.10.3-1]
    #[test]
    fn ill_formed_utf8_filter_is_malformed() {
        // Id 1, [v5: no properties], "a", then ED A0 80 (a UTF-16 surrogate).
        let filters: &[u8] = &[0, 1, b'a', 0, 3, 0xED, 0xA0, 0x80];
        for v in [V3_1_1, V5] {
            let props: &[u8] = if v == V5 { &[0] } else { &[] };
            let body = [&[0, 1][..], props, filters].concat();
            let bytes = [&[0xA2, body.len() as u8][..], &body].concat();
            assert_violation(
                decode_all(&bytes, v),
                crate::wire::RULE_UTF8,
                ReasonCode::MALFORMED_PACKET,
            );
        }
    }
}
