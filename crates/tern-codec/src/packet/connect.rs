//! CONNECT: the first packet a client sends, and its Will.

use bytes::{BufMut, Bytes, BytesMut};

use crate::packet::publish::{validate_response_topic, validate_topic_name};
use crate::properties::Allowed;
use crate::wire::{Reader, field_len, put_field};
use crate::{Properties, ProtocolVersion, QoS, ReasonCode, Violation};

/// A client's request to connect [MQTT-3.1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level from the variable header (name and level validated together).
    pub protocol: ProtocolVersion,
    /// Clean Session (v3) / Clean Start (v5).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (v5; empty otherwise).
    pub properties: Properties,
    /// Client Identifier, possibly empty.
    pub client_id: String,
    /// The Will, when the Will Flag is set.
    pub will: Option<LastWill>,
    /// User Name, when its flag is set.
    pub username: Option<String>,
    /// Password, when its flag is set.
    pub password: Option<Bytes>,
}

impl Connect {
    /// The plainest CONNECT for `protocol`: Clean Start, no Keep Alive, no properties, will or
    /// credentials; set other fields with struct update syntax.
    pub fn new(protocol: ProtocolVersion, client_id: &str) -> Self {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }
}

/// A Will Message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic (a valid topic name, no wildcards).
    pub topic: String,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (v5; empty otherwise).
    pub properties: Properties,
}

/// The protocol version for a CONNECT's protocol name and level.
pub(crate) fn protocol_version(name: &[u8], level: u8) -> Result<ProtocolVersion, Violation> {
    match (name, level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQTT" | b"MQIsdp", _) => Err(Violation::new(
            "MQTT-3.1.2-2",
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            "unsupported protocol level",
        )),
        _ => Err(Violation::new(
            "MQTT-3.1.2-1",
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            "protocol name is neither MQTT nor MQIsdp",
        )),
    }
}

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

impl Connect {
    /// Parses a CONNECT body; its own protocol name and level decide the version.
    pub(crate) fn decode(mut r: Reader) -> Result<Self, Violation> {
        let name = r.binary()?;
        let protocol = protocol_version(&name, r.u8()?)?;
        let v5 = protocol.is_v5();
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            return Err(Violation::malformed(
                "MQTT-3.1.2-3",
                "reserved connect flag set",
            ));
        }
        let will_flag = flags & WILL != 0;
        let will_qos_bits = (flags >> 3) & 0x03;
        let will_retain = flags & WILL_RETAIN != 0;
        if !will_flag && will_qos_bits != 0 {
            let rule = if v5 { "MQTT-3.1.2-11" } else { "MQTT-3.1.2-13" };
            return Err(Violation::malformed(
                rule,
                "Will QoS set without the Will Flag",
            ));
        }
        if !will_flag && will_retain {
            let rule = if v5 { "MQTT-3.1.2-13" } else { "MQTT-3.1.2-15" };
            return Err(Violation::malformed(
                rule,
                "Will Retain set without the Will Flag",
            ));
        }
        let will_qos = QoS::from_u8(will_qos_bits).ok_or(Violation::malformed(
            if v5 { "MQTT-3.1.2-12" } else { "MQTT-3.1.2-14" },
            "Will QoS 3",
        ))?;
        if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(Violation::malformed(
                "MQTT-3.1.2-22",
                "Password Flag without User Name Flag",
            ));
        }
        let keep_alive = r.u16()?;
        let properties = if v5 {
            Properties::decode(&mut r, Allowed::CONNECT)?
        } else {
            Properties::default()
        };
        let client_id = r.string()?;
        let will = if will_flag {
            let properties = if v5 {
                let properties = Properties::decode(&mut r, Allowed::WILL)?;
                validate_response_topic(&properties)?;
                properties
            } else {
                Properties::default()
            };
            let topic = r.string()?;
            validate_topic_name(&topic)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish("bytes after the end of the CONNECT payload")?;
        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn name(&self) -> &'static [u8] {
        if self.protocol == ProtocolVersion::V3_1 {
            b"MQIsdp"
        } else {
            b"MQTT"
        }
    }

    /// Length of the body, encoded for the CONNECT's own protocol level.
    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let props = |p: &Properties| if v5 { p.wire_len() } else { 0 };
        field_len(self.name())
            + 4
            + props(&self.properties)
            + field_len(self.client_id.as_bytes())
            + self.will.as_ref().map_or(0, |w| {
                props(&w.properties) + field_len(w.topic.as_bytes()) + field_len(&w.payload)
            })
            + self
                .username
                .as_ref()
                .map_or(0, |u| field_len(u.as_bytes()))
            + self.password.as_ref().map_or(0, |p| field_len(p))
    }

    /// Writes the body for the CONNECT's own protocol level.
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        let v5 = self.protocol.is_v5();
        put_field(out, self.name());
        out.put_u8(self.protocol as u8);
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(w) = &self.will {
            flags |= WILL | ((w.qos as u8) << 3);
            if w.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        out.put_u8(flags);
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(out);
        }
        put_field(out, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(out);
            }
            put_field(out, w.topic.as_bytes());
            put_field(out, &w.payload);
        }
        if let Some(u) = &self.username {
            put_field(out, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_field(out, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PropertySet;
    use crate::packet::testutil::*;
    use crate::{Packet, ProtocolVersion::*, peek_connect_version};

    fn minimal(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::default(),
            client_id: "c1".into(),
            will: None,
            username: None,
            password: None,
        }
    }

    fn full(protocol: ProtocolVersion) -> Connect {
        let v5 = protocol.is_v5();
        let mut c = minimal(protocol);
        c.clean_start = false;
        c.username = Some("user".into());
        c.password = Some(Bytes::from_static(b"p\x00ss"));
        c.will = Some(LastWill {
            topic: "last/will".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: if v5 {
                PropertySet {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(100),
                    content_type: Some("text/plain".into()),
                    response_topic: Some("resp".into()),
                    correlation_data: Some(Bytes::from_static(b"corr")),
                    will_delay_interval: Some(5),
                    user_properties: vec![
                        ("w".into(), "1".into()),
                        ("b".into(), "2".into()),
                        ("w".into(), "0".into()),
                    ],
                    ..Default::default()
                }
                .into()
            } else {
                Properties::default()
            },
        });
        if v5 {
            c.properties = PropertySet {
                session_expiry_interval: Some(3600),
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some(Bytes::from_static(b"\x01\x02")),
                request_problem_information: Some(0),
                request_response_information: Some(1),
                receive_maximum: Some(10),
                topic_alias_maximum: Some(20),
                user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
                maximum_packet_size: Some(65536),
                ..Default::default()
            }
            .into();
        }
        c
    }

    /// A CONNECT with `name`, `level`, `flags`, keep alive 60 and then `rest`.
    fn raw(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        body.extend_from_slice(rest);
        let mut out = vec![0x10, body.len() as u8];
        out.extend(body);
        out
    }

    /// v5: [MQTT-3.1.3-10] (the Will's User Properties come back in their order)
    #[test]
    fn connect_round_trips_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            assert_round_trip(&Packet::Connect(Box::new(minimal(v))), v);
            assert_round_trip(&Packet::Connect(Box::new(full(v))), v);
        }
    }

    #[test]
    fn connect_is_parsed_by_its_own_level_not_the_argument() {
        let bytes = encode(&Packet::Connect(Box::new(full(V5))), V5);
        assert_eq!(
            decode_all(&bytes, V3_1_1),
            Ok(Packet::Connect(Box::new(full(V5))))
        );
        let bytes = encode(&Packet::Connect(Box::new(full(V3_1))), V5);
        assert_eq!(&bytes[2..10], b"\x00\x06MQIsdp");
        assert_eq!(
            decode_all(&bytes, V5),
            Ok(Packet::Connect(Box::new(full(V3_1))))
        );
    }

    #[test]
    fn v5_password_without_username_round_trips() {
        let mut c = minimal(V5);
        c.password = Some(Bytes::from_static(b"secret"));
        assert_round_trip(&Packet::Connect(Box::new(c)), V5);
    }

    #[test]
    fn v3_password_without_username_is_malformed() {
        let bytes = raw(b"MQTT", 4, 0x40, &[0, 1, b'c', 0, 1, b'p']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.1.2-22",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn unknown_protocol_name_is_refused() {
        let bytes = raw(b"MQTX", 4, 0x02, &[0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.1.2-1",
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        );
    }

    #[test]
    fn unsupported_protocol_level_is_0x84() {
        for (name, level) in [(&b"MQTT"[..], 3), (b"MQTT", 6), (b"MQIsdp", 4)] {
            let bytes = raw(name, level, 0x02, &[0, 1, b'c']);
            assert_violation(
                decode_all(&bytes, V5),
                "MQTT-3.1.2-2",
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            );
        }
    }

    #[test]
    fn reserved_connect_flag_is_malformed() {
        let bytes = raw(b"MQTT", 4, 0x03, &[0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.1.2-3",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn will_qos_without_will_flag_is_malformed() {
        let bytes = raw(b"MQTT", 4, 0x08, &[0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.1.2-13",
            ReasonCode::MALFORMED_PACKET,
        );
        let bytes = raw(b"MQTT", 5, 0x08, &[0, 0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V5),
            "MQTT-3.1.2-11",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn will_retain_without_will_flag_is_malformed() {
        let bytes = raw(b"MQTT", 4, 0x20, &[0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.1.2-15",
            ReasonCode::MALFORMED_PACKET,
        );
        let bytes = raw(b"MQTT", 5, 0x20, &[0, 0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V5),
            "MQTT-3.1.2-13",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn will_qos_3_is_malformed() {
        let rest = [0, 1, b'c', 0, 1, b't', 0, 0];
        let bytes = raw(b"MQTT", 4, 0x1C, &rest);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.1.2-14",
            ReasonCode::MALFORMED_PACKET,
        );
        let bytes = raw(b"MQTT", 5, 0x1C, &[0, 0, 1, b'c', 0, 0, 1, b't', 0, 0]);
        assert_violation(
            decode_all(&bytes, V5),
            "MQTT-3.1.2-12",
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn will_topic_with_wildcard_is_topic_name_invalid() {
        let bytes = raw(
            b"MQTT",
            4,
            0x04,
            &[0, 1, b'c', 0, 3, b'a', b'/', b'#', 0, 0],
        );
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-3.3.2-2",
            ReasonCode::TOPIC_NAME_INVALID,
        );
    }

    /// v5: [MQTT-3.3.2-14]
    #[test]
    fn will_response_topic_with_wildcard_is_protocol_error() {
        // Will properties: Response Topic (08) "r/#"; then will topic "w" and payload "x".
        let will = |response: &[u8]| {
            let mut rest = vec![0, 0, 1, b'c', 6, 0x08, 0, 3];
            rest.extend_from_slice(response);
            rest.extend_from_slice(&[0, 1, b'w', 0, 1, b'x']);
            raw(b"MQTT", 5, 0x06, &rest)
        };
        assert_violation(
            decode_all(&will(b"r/#"), V5),
            "MQTT-3.3.2-14",
            ReasonCode::PROTOCOL_ERROR,
        );
        assert_violation(
            decode_all(&will(b"+/r"), V5),
            "MQTT-3.3.2-14",
            ReasonCode::PROTOCOL_ERROR,
        );
        let Ok(Packet::Connect(c)) = decode_all(&will(b"r/x"), V5) else {
            panic!("a Response Topic without wildcards is accepted");
        };
        let w = c.will.expect("will");
        assert_eq!(w.properties.response_topic.as_deref(), Some("r/x"));
    }

    #[test]
    fn empty_will_topic_is_protocol_error() {
        let bytes = raw(b"MQTT", 4, 0x04, &[0, 1, b'c', 0, 0, 0, 0]);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            "MQTT-4.7.3-1",
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn bytes_after_connect_payload_are_malformed() {
        let bytes = raw(b"MQTT", 4, 0x02, &[0, 1, b'c', 0xFF]);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn truncated_connect_is_malformed() {
        // Username flag set but no username.
        let bytes = raw(b"MQTT", 4, 0x82, &[0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    /// v5: [MQTT-3.1.2-9]
    /// v3.1.1: [MQTT-3.1.2-9]
    #[test]
    fn will_flag_without_will_fields_is_malformed() {
        // Connect flags 06: Clean Start and Will Flag; the payload stops after the client id,
        // after the will properties (v5) or after the will topic.
        let cases: [(ProtocolVersion, u8, &[u8]); 5] = [
            (V3_1_1, 4, &[0, 1, b'c']),
            (V3_1_1, 4, &[0, 1, b'c', 0, 1, b'w']),
            (V5, 5, &[0, 0, 1, b'c']),
            (V5, 5, &[0, 0, 1, b'c', 0]),
            (V5, 5, &[0, 0, 1, b'c', 0, 0, 1, b'w']),
        ];
        for (v, level, rest) in cases {
            assert_violation(
                decode_all(&raw(b"MQTT", level, 0x06, rest), v),
                RULE_LENGTH,
                ReasonCode::MALFORMED_PACKET,
            );
        }
    }

    /// v5: [MQTT-3.1.2-17]
    #[test]
    fn v5_user_name_flag_without_user_name_is_malformed() {
        let bytes = raw(b"MQTT", 5, 0x82, &[0, 0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V5),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    /// v5: [MQTT-3.1.2-19]
    /// v3.1.1: [MQTT-3.1.2-21]
    #[test]
    fn password_flag_without_password_is_malformed() {
        // 3.1.1 needs the User Name Flag with the Password Flag (C2): the user name is there.
        let bytes = raw(b"MQTT", 4, 0xC2, &[0, 1, b'c', 0, 1, b'u']);
        assert_violation(
            decode_all(&bytes, V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
        // 5.0 allows a password alone (42), or with a user name (C2).
        for (flags, rest) in [
            (0x42, &[0, 0, 1, b'c'][..]),
            (0xC2, &[0, 0, 1, b'c', 0, 1, b'u']),
        ] {
            assert_violation(
                decode_all(&raw(b"MQTT", 5, flags, rest), V5),
                RULE_LENGTH,
                ReasonCode::MALFORMED_PACKET,
            );
        }
    }

    #[test]
    fn connect_property_not_allowed_is_malformed() {
        // Topic Alias in CONNECT properties.
        let bytes = raw(b"MQTT", 5, 0x02, &[3, 0x23, 0, 1, 0, 1, b'c']);
        assert_violation(
            decode_all(&bytes, V5),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn peek_finds_version_of_an_otherwise_malformed_connect() {
        let bytes = raw(b"MQTT", 5, 0x01, &[0, 0, 1, b'c']);
        assert_eq!(peek_connect_version(&bytes), Some(V5));
        assert_eq!(peek_connect_version(&bytes[..9]), Some(V5));
        assert_eq!(peek_connect_version(&bytes[..8]), None);
        assert_eq!(peek_connect_version(&raw(b"MQIsdp", 3, 2, &[])), Some(V3_1));
        assert_eq!(peek_connect_version(&raw(b"MQTT", 4, 2, &[])), Some(V3_1_1));
        assert_eq!(peek_connect_version(&raw(b"MQTT", 9, 2, &[])), None);
        assert_eq!(peek_connect_version(&[0x20, 2, 0, 0]), None);
        assert_eq!(peek_connect_version(&[]), None);
    }

    /// v5: [MQTT-3.1.3-4] [MQTT-3.1.3-11] [MQTT-3.1.3-12]
    /// v3.1.1: [MQTT-3.1.3-4] [MQTT-3.1.3-10] [MQTT-3.1.3-11]
    #[test]
    fn ill_formed_utf8_client_id_will_topic_or_user_name_is_malformed() {
        // A UTF-16 surrogate (U+D800 as ED A0 80) is not well-formed UTF-8.
        const BAD: [u8; 5] = [0, 3, 0xED, 0xA0, 0x80];
        for (v, level) in [(V3_1_1, 4), (V5, 5)] {
            let props: &[u8] = if v == V5 { &[0] } else { &[] };
            let cases: [(&str, u8, Vec<u8>); 3] = [
                ("client id", 0x02, [props, &BAD].concat()),
                (
                    "will topic",
                    0x06,
                    [props, &[0, 1, b'c'], props, &BAD, &[0, 0]].concat(),
                ),
                ("user name", 0x82, [props, &[0, 1, b'c'], &BAD].concat()),
            ];
            for (field, flags, rest) in cases {
                let err = decode_all(&raw(b"MQTT", level, flags, &rest), v).unwrap_err();
                assert_eq!(
                    (err.rule, err.reason),
                    (crate::wire::RULE_UTF8, ReasonCode::MALFORMED_PACKET),
                    "{v:?} {field}"
                );
            }
        }
    }
}
