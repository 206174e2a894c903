//! SUBSCRIBE and its per-filter subscription options.

use bytes::{BufMut, BytesMut};

use crate::properties::Allowed;
use crate::wire::{Reader, field_len, put_field};
use crate::{PacketId, Properties, ProtocolVersion, QoS, Violation};

/// A subscribe request [MQTT-3.8].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (v5: Subscription Identifier, User Property).
    pub properties: Properties,
    /// Topic filters with their options; never empty on a valid packet [MQTT-3.8.3-3].
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// When retained messages are sent for a new subscription (v5 Retain Handling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send retained messages only if the subscription did not already exist.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

/// The options byte of one filter in SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants for this subscription.
    pub qos: QoS,
    /// v5 No Local: do not deliver the client's own publications.
    pub no_local: bool,
    /// v5 Retain As Published: keep the RETAIN flag on forwarded messages.
    pub retain_as_published: bool,
    /// v5 Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options carrying only a maximum QoS.
    pub fn new(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    /// Parses one options byte for `version`.
    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, Violation> {
        if !version.is_v5() {
            // The 3.1.1 text spells this id with a dash.
            let bad =
                || Violation::malformed("MQTT-3.8.3-4", "reserved bits or QoS 3 in requested QoS");
            if byte & 0xFC != 0 {
                return Err(bad());
            }
            return Ok(SubscriptionOptions::new(
                QoS::from_u8(byte).ok_or_else(bad)?,
            ));
        }
        if byte & 0xC0 != 0 {
            return Err(Violation::malformed(
                "MQTT-3.8.3-5",
                "reserved subscription option bits set",
            ));
        }
        let qos = QoS::from_u8(byte & 0x03).ok_or(Violation::protocol(
            "MQTT-3.8.3.1",
            "Maximum QoS 3 in subscription options",
        ))?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(Violation::protocol("MQTT-3.8.3.1", "Retain Handling 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    /// The options byte for `version` (v3 carries only the QoS).
    fn to_byte(self, version: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        if !version.is_v5() {
            return qos;
        }
        qos | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }
}

impl Subscribe {
    /// Parses a SUBSCRIBE body. Filters are only checked to be UTF-8 strings; the broker judges
    /// them one by one.
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, Violation> {
        let packet_id = r.packet_id(version)?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, Allowed::SUBSCRIBE)?
        } else {
            Properties::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            let rule = if version.is_v5() {
                "MQTT-3.8.3-2"
            } else {
                "MQTT-3.8.3-3"
            };
            return Err(Violation::protocol(
                rule,
                "SUBSCRIBE without a topic filter",
            ));
        }
        Ok(Subscribe {
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
            .map(|(f, _)| field_len(f.as_bytes()) + 1)
            .sum::<usize>()
    }

    /// Writes the body for `version`.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out);
        }
        for (filter, options) in &self.filters {
            put_field(out, filter.as_bytes());
            out.put_u8(options.to_byte(version));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*, ReasonCode};

    fn subscribe() -> Subscribe {
        Subscribe {
            packet_id: PacketId::new(3).unwrap(),
            properties: Properties::default(),
            filters: vec![
                ("a/+".into(), SubscriptionOptions::new(QoS::AtMostOnce)),
                ("b/#".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
                (
                    "bad/#/filter".into(),
                    SubscriptionOptions::new(QoS::AtLeastOnce),
                ),
            ],
        }
    }

    #[test]
    fn subscribe_round_trips_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            assert_round_trip(&Packet::Subscribe(subscribe()), v);
        }
        let mut s = subscribe();
        s.properties.subscription_identifiers = vec![42];
        s.properties.user_properties = vec![("k".into(), "v".into())];
        s.filters.push((
            "$share/g/x".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        ));
        assert_round_trip(&Packet::Subscribe(s), V5);
    }

    #[test]
    fn subscribe_is_encoded_with_flags_0010() {
        assert_eq!(encode(&Packet::Subscribe(subscribe()), V3_1_1)[0], 0x82);
    }

    #[test]
    fn subscribe_with_wrong_flags_is_malformed() {
        assert_violation(
            decode_all(&[0x80, 6, 0, 1, 0, 1, b'a', 0], V3_1_1),
            "MQTT-3.8.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn subscribe_without_filters_is_protocol_error() {
        assert_violation(
            decode_all(&[0x82, 2, 0, 1], V3_1_1),
            "MQTT-3.8.3-3",
            ReasonCode::PROTOCOL_ERROR,
        );
        assert_violation(
            decode_all(&[0x82, 3, 0, 1, 0], V5),
            "MQTT-3.8.3-2",
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn v3_options_upper_bits_are_malformed() {
        assert_violation(
            decode_all(&[0x82, 6, 0, 1, 0, 1, b'a', 0x04], V3_1_1),
            "MQTT-3.8.3-4",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(&[0x82, 6, 0, 1, 0, 1, b'a', 0x03], V3_1_1),
            "MQTT-3.8.3-4",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn v5_reserved_option_bits_are_malformed() {
        assert_violation(
            decode_all(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x40], V5),
            "MQTT-3.8.3-5",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn v5_option_qos_3_is_protocol_error() {
        assert_violation(
            decode_all(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x03], V5),
            "MQTT-3.8.3.1",
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn v5_retain_handling_3_is_protocol_error() {
        assert_violation(
            decode_all(&[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30], V5),
            "MQTT-3.8.3.1",
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn subscribe_packet_id_zero_is_malformed() {
        assert_violation(
            decode_all(&[0x82, 6, 0, 0, 0, 1, b'a', 0], V3_1_1),
            "MQTT-2.3.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn filter_without_options_byte_is_malformed() {
        assert_violation(
            decode_all(&[0x82, 5, 0, 1, 0, 1, b'a'], V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn filter_with_nul_is_malformed() {
        assert_violation(
            decode_all(&[0x82, 6, 0, 1, 0, 1, 0, 0], V3_1_1),
            crate::wire::RULE_NUL,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    /// v5: [MQTT-3.8.3-1]
    #[test]
    fn v5_ill_formed_utf8_filter_is_malformed() {
        // Id 1, no properties, ED A0 80 (a UTF-16 surrogate), options QoS 0.
        let bytes = [0x82, 9, 0, 1, 0, 0, 3, 0xED, 0xA0, 0x80, 0];
        assert_violation(
            decode_all(&bytes, V5),
            crate::wire::RULE_UTF8,
            ReasonCode::MALFORMED_PACKET,
        );
        let nul = [0x82, 9, 0, 1, 0, 0, 3, b'a', 0, b'b', 0];
        assert_violation(
            decode_all(&nul, V5),
            crate::wire::RULE_NUL,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
