//! PUBLISH: an application message in either direction.

use bytes::{BufMut, Bytes, BytesMut};

use crate::packet::codec::{framed_len, put_fixed_header};
use crate::properties::{Allowed, PerDelivery};
use crate::topic::{TopicError, validate_name};
use crate::wire::{RULE_NUL, Reader, field_len, put_field};
use crate::{PacketId, PacketType, Properties, ProtocolVersion, QoS, ReasonCode, Violation};

/// An application message [MQTT-3.3].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// DUP flag: a re-delivery. Always false at QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; empty only in v5 when a Topic Alias stands in for it.
    pub topic: String,
    /// Packet Identifier: present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (v5; empty otherwise).
    pub properties: Properties,
    /// Application payload, a zero-copy slice of the read buffer.
    pub payload: Bytes,
}

/// Checks a (non-empty, non-aliased) topic name from PUBLISH or a Will.
pub(crate) fn validate_topic_name(topic: &str) -> Result<(), Violation> {
    validate_name(topic).map_err(|e| match e {
        TopicError::Empty => Violation::protocol("MQTT-4.7.3-1", "empty Topic Name"),
        TopicError::NullCharacter => Violation::malformed(RULE_NUL, "U+0000 in Topic Name"),
        _ => Violation::new(
            "MQTT-3.3.2-2",
            ReasonCode::TOPIC_NAME_INVALID,
            "wildcard character in Topic Name",
        ),
    })
}

/// Checks the Response Topic of a PUBLISH or a Will, if any: it names the topic of a reply, so
/// it holds no wildcard characters [MQTT-3.3.2-14]. The packet parses; the value breaks the
/// specification, which makes it a Protocol Error (0x82).
pub(crate) fn validate_response_topic(properties: &Properties) -> Result<(), Violation> {
    match &properties.response_topic {
        Some(topic) if topic.contains(['+', '#']) => Err(Violation::protocol(
            "MQTT-3.3.2-14",
            "wildcard character in Response Topic",
        )),
        _ => Ok(()),
    }
}

impl Publish {
    /// Copies the payload and the Correlation Data out of the read buffer they are slices of,
    /// so a message kept for long does not pin that whole buffer.
    pub fn detach(&mut self) {
        self.payload = Bytes::copy_from_slice(&self.payload);
        if let Some(data) = self
            .properties
            .get_mut()
            .and_then(|p| p.correlation_data.as_mut())
        {
            *data = Bytes::copy_from_slice(data);
        }
    }

    /// Parses a PUBLISH from its fixed-header `flags` and body.
    pub(crate) fn decode(
        flags: u8,
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Self, Violation> {
        let qos = QoS::from_u8((flags >> 1) & 0x03)
            .ok_or(Violation::malformed("MQTT-3.3.1-4", "PUBLISH with QoS 3"))?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(Violation::malformed(
                "MQTT-3.3.1-2",
                "DUP set on a QoS 0 PUBLISH",
            ));
        }
        let topic = r.string()?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(r.packet_id(version)?)
        };
        let properties = if version.is_v5() {
            Properties::decode(&mut r, Allowed::PUBLISH)?
        } else {
            Properties::default()
        };
        if topic.is_empty() {
            if !version.is_v5() || properties.topic_alias.is_none() {
                return Err(Violation::protocol(
                    "MQTT-4.7.3-1",
                    "empty Topic Name without a Topic Alias",
                ));
            }
        } else {
            validate_topic_name(&topic)?;
        }
        validate_response_topic(&properties)?;
        Ok(Publish {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// This PUBLISH as borrowed parts, for encoding.
    pub fn view(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            properties: &self.properties,
            message_expiry_interval: self.properties.message_expiry_interval,
            subscription_identifiers: &self.properties.subscription_identifiers,
            topic_alias: self.properties.topic_alias,
            shared_properties: None,
            payload: &self.payload,
        }
    }
}

/// A PUBLISH to encode from borrowed parts: a message shared by many deliveries, with the
/// fields that differ per delivery alongside, so that nothing is cloned per subscriber.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; empty only in v5 when a Topic Alias stands in for it.
    pub topic: &'a str,
    /// Packet Identifier: present exactly when QoS > 0 (written as 0 if missing).
    pub packet_id: Option<PacketId>,
    /// The message's properties (v5); its Message Expiry Interval, Subscription Identifiers
    /// and Topic Alias are not used: the three fields below replace them.
    pub properties: &'a Properties,
    /// 0x02 Message Expiry Interval of this delivery.
    pub message_expiry_interval: Option<u32>,
    /// 0x0B Subscription Identifiers of this delivery.
    pub subscription_identifiers: &'a [u32],
    /// 0x23 Topic Alias of this delivery.
    pub topic_alias: Option<u16>,
    /// The message's other properties already encoded by
    /// [`crate::PropertySet::encode_shared_part`], written as they are instead of encoding
    /// `properties` again; `None` encodes `properties`.
    pub shared_properties: Option<&'a [u8]>,
    /// Application payload.
    pub payload: &'a [u8],
}

impl PublishRef<'_> {
    fn per_delivery(&self) -> PerDelivery<'_> {
        PerDelivery {
            message_expiry_interval: self.message_expiry_interval,
            subscription_identifiers: self.subscription_identifiers,
            topic_alias: self.topic_alias,
        }
    }

    /// First byte of the fixed header: the type and the DUP, QoS and RETAIN flags.
    pub(crate) fn first_byte(&self) -> u8 {
        PacketType::Publish.first_byte()
            | (u8::from(self.dup) << 3)
            | ((self.qos as u8) << 1)
            | u8::from(self.retain)
    }

    /// Length of the body encoded for `version`.
    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        field_len(self.topic.as_bytes())
            + if self.qos == QoS::AtMostOnce { 0 } else { 2 }
            + if version.is_v5() {
                self.properties
                    .wire_len_with(self.per_delivery(), self.shared_properties)
            } else {
                0
            }
            + self.payload.len()
    }

    /// Writes the body for `version`; a missing Packet Identifier at QoS > 0 is written as 0.
    pub(crate) fn encode_body(&self, version: ProtocolVersion, out: &mut BytesMut) {
        put_field(out, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.packet_id.map_or(0, PacketId::get));
        }
        if version.is_v5() {
            self.properties
                .encode_with(self.per_delivery(), self.shared_properties, out);
        }
        out.put_slice(self.payload);
    }

    /// Exact number of bytes [`Self::encode`] writes for `version`, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        framed_len(self.body_len(version))
    }

    /// Appends the wire form of this PUBLISH for `version` to `out`, exactly as
    /// [`crate::Packet::encode`] would write the equivalent [`Publish`].
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        put_fixed_header(out, self.first_byte(), self.body_len(version));
        self.encode_body(version, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PropertySet;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*};

    fn publish(qos: QoS) -> Publish {
        Publish {
            dup: qos != QoS::AtMostOnce,
            qos,
            retain: true,
            topic: "a/b".into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(9).unwrap()),
            properties: Properties::default(),
            payload: Bytes::from_static(b"hello"),
        }
    }

    fn every_property() -> Properties {
        PropertySet {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(120),
            content_type: Some("application/json".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            subscription_identifiers: vec![1, 200, 268_435_455],
            topic_alias: Some(3),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn publish_round_trips_at_every_qos_and_version() {
        for v in [V3_1, V3_1_1, V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                assert_round_trip(&Packet::Publish(publish(qos)), v);
            }
        }
    }

    #[test]
    fn v5_publish_with_every_property_round_trips() {
        let mut p = publish(QoS::AtLeastOnce);
        p.properties = every_property();
        assert_round_trip(&Packet::Publish(p), V5);
    }

    #[test]
    fn shared_properties_encoded_once_give_the_same_bytes() {
        let mut message = every_property();
        message.subscription_identifiers.clear();
        message.topic_alias = None;
        let shared = message.encode_shared_part();
        let sub_ids = [1, 300, 268_435_455];
        for props in [Properties::default(), message.clone()] {
            let shared_part = props.encode_shared_part();
            for (expiry, ids, alias) in [
                (None, &[][..], None),
                (Some(7), &sub_ids[..2], Some(3)),
                (Some(u32::MAX), &sub_ids[..], None),
            ] {
                let mut p = publish(QoS::AtLeastOnce);
                p.properties = props.clone();
                let direct = PublishRef {
                    message_expiry_interval: expiry,
                    subscription_identifiers: ids,
                    topic_alias: alias,
                    ..p.view()
                };
                let cached = PublishRef {
                    shared_properties: Some(&shared_part),
                    ..direct
                };
                for v in [V3_1_1, V5] {
                    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
                    direct.encode(v, &mut a);
                    cached.encode(v, &mut b);
                    assert_eq!(a, b, "{props:?} {expiry:?} {ids:?} {alias:?} {v:?}");
                    assert_eq!(b.len(), cached.encoded_len(v));
                    let Packet::Publish(back) = decode_all(&b, v).unwrap() else {
                        panic!("not a publish")
                    };
                    if v == V5 {
                        assert_eq!(back.properties.message_expiry_interval, expiry);
                        assert_eq!(back.properties.subscription_identifiers, ids);
                        assert_eq!(back.properties.user_properties, props.user_properties);
                    }
                }
            }
        }
        assert!(!shared.is_empty());
        assert!(Properties::default().encode_shared_part().is_empty());
    }

    #[test]
    fn v5_empty_topic_with_alias_round_trips() {
        let mut p = publish(QoS::AtMostOnce);
        p.topic = String::new();
        p.properties.topic_alias = Some(1);
        assert_round_trip(&Packet::Publish(p), V5);
    }

    #[test]
    fn v3_encoding_drops_properties() {
        let mut p = publish(QoS::AtMostOnce);
        p.properties = every_property();
        assert_eq!(
            encode(&Packet::Publish(p), V3_1_1),
            b"\x31\x0a\x00\x03a/bhello"
        );
    }

    #[test]
    fn payload_is_a_slice_of_the_read_buffer() {
        let bytes = encode(&Packet::Publish(publish(QoS::AtLeastOnce)), V5);
        let mut buf = BytesMut::from(&bytes[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let Some(Packet::Publish(p)) = crate::decode(&mut buf, V5, 1024).unwrap() else {
            panic!("not a publish");
        };
        assert!(range.contains(&(p.payload.as_ptr() as usize)));
    }

    #[test]
    fn detach_copies_payload_and_correlation_data_out_of_the_read_buffer() {
        let mut sent = publish(QoS::AtLeastOnce);
        sent.properties.correlation_data = Some(Bytes::from_static(b"corr"));
        let bytes = encode(&Packet::Publish(sent.clone()), V5);
        let mut buf = BytesMut::from(&bytes[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let Some(Packet::Publish(mut p)) = crate::decode(&mut buf, V5, 1024).unwrap() else {
            panic!("not a publish");
        };
        p.detach();
        assert!(!range.contains(&(p.payload.as_ptr() as usize)));
        let corr = p.properties.correlation_data.as_ref().unwrap();
        assert!(!range.contains(&(corr.as_ptr() as usize)));
        assert_eq!(p, sent);
    }

    #[test]
    fn publish_with_qos_3_is_malformed() {
        assert_violation(
            decode_all(b"\x36\x05\x00\x01a\x00\x01", V3_1_1),
            "MQTT-3.3.1-4",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn dup_on_qos_0_is_malformed() {
        assert_violation(
            decode_all(b"\x38\x03\x00\x01a", V3_1_1),
            "MQTT-3.3.1-2",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(b"\x38\x04\x00\x01a\x00", V5),
            "MQTT-3.3.1-2",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn wildcard_in_topic_name_is_topic_name_invalid() {
        for v in [V3_1_1, V5] {
            assert_violation(
                decode_all(b"\x30\x06\x00\x03a/+\x00", v),
                "MQTT-3.3.2-2",
                ReasonCode::TOPIC_NAME_INVALID,
            );
            assert_violation(
                decode_all(b"\x30\x06\x00\x03a/#\x00", v),
                "MQTT-3.3.2-2",
                ReasonCode::TOPIC_NAME_INVALID,
            );
        }
    }

    #[test]
    fn empty_topic_without_alias_is_protocol_error() {
        assert_violation(
            decode_all(b"\x30\x02\x00\x00", V3_1_1),
            "MQTT-4.7.3-1",
            ReasonCode::PROTOCOL_ERROR,
        );
        assert_violation(
            decode_all(b"\x30\x03\x00\x00\x00", V5),
            "MQTT-4.7.3-1",
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn publish_packet_id_zero_is_malformed() {
        assert_violation(
            decode_all(b"\x32\x05\x00\x01a\x00\x00", V3_1_1),
            "MQTT-2.3.1-1",
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(b"\x32\x06\x00\x01a\x00\x00\x00", V5),
            "MQTT-2.2.1-3",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn topic_alias_zero_is_topic_alias_invalid() {
        assert_violation(
            decode_all(b"\x30\x07\x00\x01a\x03\x23\x00\x00", V5),
            "MQTT-3.3.2-8",
            ReasonCode::TOPIC_ALIAS_INVALID,
        );
    }

    /// v5: [MQTT-3.3.2-14]
    #[test]
    fn response_topic_with_wildcard_is_protocol_error() {
        // QoS 0 PUBLISH "a", properties: Response Topic (08) "r/+" or "r/#".
        for wildcard in [b'+', b'#'] {
            let mut bytes = b"\x30\x0a\x00\x01a\x06\x08\x00\x03r/".to_vec();
            bytes.push(wildcard);
            assert_violation(
                decode_all(&bytes, V5),
                "MQTT-3.3.2-14",
                ReasonCode::PROTOCOL_ERROR,
            );
        }
        let Ok(Packet::Publish(p)) = decode_all(b"\x30\x0a\x00\x01a\x06\x08\x00\x03r/x", V5) else {
            panic!("a Response Topic without wildcards is accepted");
        };
        assert_eq!(p.properties.response_topic.as_deref(), Some("r/x"));
    }

    #[test]
    fn publish_property_not_allowed_is_malformed() {
        // Session Expiry Interval in PUBLISH.
        assert_violation(
            decode_all(b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01", V5),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn invalid_payload_format_indicator_is_protocol_error() {
        assert_violation(
            decode_all(b"\x30\x06\x00\x01a\x02\x01\x02", V5),
            RULE_PROPERTY,
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn topic_with_nul_is_malformed() {
        assert_violation(
            decode_all(b"\x30\x05\x00\x03a\x00b", V3_1_1),
            RULE_NUL,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn topic_with_surrogate_is_malformed() {
        // U+D800 encoded as ED A0 80.
        let bytes = b"\x30\x05\x00\x03\xED\xA0\x80";
        assert_violation(
            decode_all(bytes, V3_1_1),
            crate::wire::RULE_UTF8,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn topic_length_past_packet_end_is_malformed() {
        assert_violation(
            decode_all(b"\x30\x03\x00\x09a", V5),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}
