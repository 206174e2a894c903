//! Framing: the fixed header, the incremental [`decode`] entry point and [`Packet::encode`].

use bytes::{BufMut, BytesMut};

use crate::wire::Reader;
use crate::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketType, ProtocolVersion, Publish,
    ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe, Violation, varint,
};

/// Rule reported when a packet exceeds the Maximum Packet Size.
pub const RULE_TOO_LARGE: &str = "MQTT-3.2.2-15";

/// Rule reported for the forbidden packet types 0 (and 15 before v5): the packet type table.
pub const RULE_PACKET_TYPE: &str = "MQTT-2.1.2";

/// Checks the packet type and the flag bits of the first byte against the fixed header table.
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<(), Violation> {
    let flags = first & 0x0F;
    let reserved = |expected: u8, rule: &'static str| {
        if flags == expected {
            Ok(())
        } else {
            Err(Violation::malformed(
                rule,
                "reserved fixed header flags have the wrong value",
            ))
        }
    };
    let generic = if version.is_v5() {
        "MQTT-2.1.3-1"
    } else {
        "MQTT-2.2.2-2"
    };
    match first >> 4 {
        0 => Err(Violation::malformed(
            RULE_PACKET_TYPE,
            "reserved packet type 0",
        )),
        15 if !version.is_v5() => Err(Violation::malformed(
            RULE_PACKET_TYPE,
            "packet type 15 before MQTT 5",
        )),
        3 => Ok(()),
        6 => reserved(0b0010, "MQTT-3.6.1-1"),
        8 => reserved(0b0010, "MQTT-3.8.1-1"),
        10 => reserved(0b0010, "MQTT-3.10.1-1"),
        _ => reserved(0, generic),
    }
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)`, consuming nothing, until a whole packet is buffered; then splits exactly
/// that packet off `buf` and parses it. Payloads are zero-copy slices of the split-off frame.
/// CONNECT is parsed per its own protocol level; every other packet per `version`. A packet
/// whose total size exceeds `max_packet_size` is refused as soon as its fixed header is readable.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, Violation> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((remaining, used)) = varint::decode(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header_len = 1 + used;
    let total = header_len as u64 + u64::from(remaining);
    if total > u64::from(max_packet_size) {
        return Err(Violation::new(
            RULE_TOO_LARGE,
            ReasonCode::PACKET_TOO_LARGE,
            "packet exceeds the Maximum Packet Size",
        ));
    }
    let Ok(total) = usize::try_from(total) else {
        return Err(Violation::new(
            RULE_TOO_LARGE,
            ReasonCode::PACKET_TOO_LARGE,
            "packet too large",
        ));
    };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let body = Reader::new(frame.split_off(header_len));
    let flags = first & 0x0F;
    let packet = match first >> 4 {
        1 => Packet::Connect(Box::new(Connect::decode(body)?)),
        2 => Packet::ConnAck(ConnAck::decode(body, version)?),
        3 => Packet::Publish(Publish::decode(flags, body, version)?),
        4 => Packet::PubAck(Ack::decode(body, version)?),
        5 => Packet::PubRec(Ack::decode(body, version)?),
        6 => Packet::PubRel(Ack::decode(body, version)?),
        7 => Packet::PubComp(Ack::decode(body, version)?),
        8 => Packet::Subscribe(Subscribe::decode(body, version)?),
        9 => Packet::SubAck(SubAck::decode(body, version)?),
        10 => Packet::Unsubscribe(Unsubscribe::decode(body, version)?),
        11 => Packet::UnsubAck(UnsubAck::decode(body, version)?),
        12 => {
            body.finish("PINGREQ with a body")?;
            Packet::PingReq
        }
        13 => {
            body.finish("PINGRESP with a body")?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(Disconnect::decode(body, version)?),
        15 => Packet::Auth(Auth::decode(body)?),
        _ => {
            return Err(Violation::malformed(
                RULE_PACKET_TYPE,
                "reserved packet type",
            ));
        }
    };
    Ok(Some(packet))
}

/// The protocol version named by the CONNECT at the start of `buf`, if its protocol name and
/// level are already buffered and valid; lets a server answer a bad CONNECT in the right version.
pub fn peek_connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let (_, used) = varint::decode(buf.get(1..)?).ok()??;
    let rest = buf.get(1 + used..)?;
    let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let name = rest.get(2..2 + len)?;
    let level = *rest.get(2 + len)?;
    crate::packet::connect::protocol_version(name, level).ok()
}

impl Packet {
    /// The control packet type of this packet.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// First byte of the fixed header: type and flags.
    fn first_byte(&self) -> u8 {
        match self {
            Packet::Publish(p) => p.view().first_byte(),
            _ => self.packet_type().first_byte(),
        }
    }

    /// Length of everything after the fixed header, encoded for `version`.
    fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.view().body_len(version),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.body_len(version)
            }
            Packet::Subscribe(s) => s.body_len(version),
            Packet::SubAck(s) => s.body_len(version),
            Packet::Unsubscribe(u) => u.body_len(version),
            Packet::UnsubAck(u) => u.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.body_len(version),
            Packet::Auth(a) => a.body_len(),
        }
    }

    /// Exact number of bytes [`Packet::encode`] writes for `version`, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        framed_len(self.body_len(version))
    }

    /// Appends the wire form of this packet for `version` to `out`.
    ///
    /// CONNECT is always encoded for its own `protocol`. For v3 versions, properties and
    /// v5-only fields are dropped. The value is trusted: encoding never fails.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        put_fixed_header(out, self.first_byte(), self.body_len(version));
        match self {
            Packet::Connect(c) => c.encode_body(out),
            Packet::ConnAck(c) => c.encode_body(version, out),
            Packet::Publish(p) => p.view().encode_body(version, out),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.encode_body(version, out)
            }
            Packet::Subscribe(s) => s.encode_body(version, out),
            Packet::SubAck(s) => s.encode_body(version, out),
            Packet::Unsubscribe(u) => u.encode_body(version, out),
            Packet::UnsubAck(u) => u.encode_body(version, out),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => d.encode_body(version, out),
            Packet::Auth(a) => a.encode_body(out),
        }
    }
}

/// Length of a packet whose body is `body` bytes, fixed header included.
pub(crate) fn framed_len(body: usize) -> usize {
    1 + varint::len(u32::try_from(body).unwrap_or(u32::MAX)) + body
}

/// Writes the fixed header (first byte and Remaining Length) of a packet whose body is `body`
/// bytes, with room reserved for the body.
pub(crate) fn put_fixed_header(out: &mut BytesMut, first: u8, body: usize) {
    out.reserve(1 + 4 + body);
    out.put_u8(first);
    varint::encode(u32::try_from(body).unwrap_or(u32::MAX), out);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::PropertySet;
    use crate::packet::testutil::*;
    use crate::{LastWill, PacketId, Properties, ProtocolVersion::*, QoS, SubscriptionOptions};

    const VERSIONS: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    /// One valid packet of every type that exists in `v`.
    fn samples(v: ProtocolVersion) -> Vec<Packet> {
        let v5 = v.is_v5();
        let props = |p: Properties| if v5 { p } else { Properties::default() };
        let mut publish_props: Properties = PropertySet {
            payload_format_indicator: Some(0),
            topic_alias: Some(2),
            user_properties: vec![("a".into(), "b".into())],
            subscription_identifiers: vec![7],
            ..Default::default()
        }
        .into();
        publish_props.correlation_data = Some(Bytes::from_static(b"c"));
        let mut out = vec![
            Packet::Connect(Box::new(Connect {
                protocol: v,
                clean_start: true,
                keep_alive: 30,
                properties: props(
                    PropertySet {
                        receive_maximum: Some(4),
                        ..Default::default()
                    }
                    .into(),
                ),
                client_id: "client".into(),
                will: Some(LastWill {
                    topic: "w/t".into(),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: props(
                        PropertySet {
                            will_delay_interval: Some(9),
                            ..Default::default()
                        }
                        .into(),
                    ),
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"p")),
            })),
            Packet::ConnAck(ConnAck {
                session_present: v != V3_1,
                ..Default::default()
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "t/1".into(),
                packet_id: Some(id(300)),
                properties: props(publish_props),
                payload: Bytes::from_static(b"payload bytes"),
            }),
            Packet::PubAck(Ack::new(id(1))),
            Packet::PubRec(Ack::new(id(2))),
            Packet::PubRel(Ack::new(id(3))),
            Packet::PubComp(Ack::new(id(4))),
            Packet::Subscribe(Subscribe {
                packet_id: id(5),
                properties: props(
                    PropertySet {
                        subscription_identifiers: vec![1],
                        ..Default::default()
                    }
                    .into(),
                ),
                filters: vec![("a/#".into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
            }),
            Packet::SubAck(SubAck {
                packet_id: id(5),
                properties: Properties::default(),
                reasons: vec![ReasonCode::GRANTED_QOS_1],
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(6),
                properties: Properties::default(),
                filters: vec!["a/#".into()],
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: id(6),
                properties: Properties::default(),
                reasons: if v5 {
                    vec![ReasonCode::SUCCESS]
                } else {
                    vec![]
                },
            }),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect::default()),
        ];
        if v5 {
            out.push(Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                ..Default::default()
            }));
            out.push(Packet::Disconnect(Disconnect::new(
                ReasonCode::SERVER_SHUTTING_DOWN,
            )));
            out.push(Packet::PubAck(Ack::with_reason(
                id(8),
                ReasonCode::UNSPECIFIED_ERROR,
            )));
        }
        out
    }

    #[test]
    fn every_packet_type_round_trips_in_every_version() {
        for v in VERSIONS {
            for p in samples(v) {
                assert_round_trip(&p, v);
            }
        }
    }

    #[test]
    fn packet_type_matches_the_first_byte() {
        for v in VERSIONS {
            for p in samples(v) {
                assert_eq!(encode(&p, v)[0] >> 4, p.packet_type() as u8, "{p:?}");
            }
        }
    }

    #[test]
    fn partial_input_yields_none_and_consumes_nothing() {
        for v in VERSIONS {
            for p in samples(v) {
                let bytes = encode(&p, v);
                let mut buf = BytesMut::new();
                for (i, &b) in bytes.iter().enumerate() {
                    buf.put_u8(b);
                    let got = decode(&mut buf, v, u32::MAX).unwrap();
                    if i + 1 < bytes.len() {
                        assert_eq!(got, None, "{p:?} after {} bytes", i + 1);
                        assert_eq!(buf.len(), i + 1);
                    } else {
                        assert_eq!(got.as_ref(), Some(&p));
                        assert!(buf.is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn consecutive_packets_decode_one_at_a_time() {
        let mut buf = BytesMut::new();
        for p in samples(V5) {
            p.encode(V5, &mut buf);
        }
        for p in samples(V5) {
            assert_eq!(decode(&mut buf, V5, u32::MAX), Ok(Some(p)));
        }
        assert_eq!(decode(&mut buf, V5, u32::MAX), Ok(None));
    }

    #[test]
    fn oversize_packet_is_refused_from_its_fixed_header_alone() {
        // PUBLISH declaring 2,097,151 bytes; only the fixed header is here.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
        let capacity = buf.capacity();
        let err = decode(&mut buf, V5, 1024).unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            (RULE_TOO_LARGE, ReasonCode::PACKET_TOO_LARGE)
        );
        assert_eq!(buf.len(), 4);
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn maximum_packet_size_counts_the_fixed_header() {
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from_static(b"12345"),
            ..Default::default()
        });
        let bytes = encode(&p, V3_1_1);
        let size = bytes.len() as u32;
        assert_eq!(
            decode(&mut BytesMut::from(&bytes[..]), V3_1_1, size),
            Ok(Some(p))
        );
        let err = decode(&mut BytesMut::from(&bytes[..]), V3_1_1, size - 1).unwrap_err();
        assert_eq!(err.reason, ReasonCode::PACKET_TOO_LARGE);
    }

    #[test]
    fn non_minimal_remaining_length_is_malformed() {
        assert_violation(
            decode_all(&[0xC0, 0x80, 0x00], V3_1_1),
            varint::RULE,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert_violation(
            decode_all(&bytes, V5),
            varint::RULE,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn packet_type_0_is_forbidden() {
        for v in VERSIONS {
            assert_violation(
                decode_all(&[0x00, 0], v),
                RULE_PACKET_TYPE,
                ReasonCode::MALFORMED_PACKET,
            );
        }
    }

    #[test]
    fn reserved_flags_are_checked_before_the_packet_is_complete() {
        let mut buf = BytesMut::from(&[0xC1][..]);
        let err = decode(&mut buf, V5, u32::MAX).unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            ("MQTT-2.1.3-1", ReasonCode::MALFORMED_PACKET)
        );
    }

    #[test]
    fn ping_with_a_body_is_malformed() {
        assert_violation(
            decode_all(&[0xC0, 1, 0], V3_1_1),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
        assert_violation(
            decode_all(&[0xD0, 1, 0], V5),
            RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn ping_encodes_to_two_bytes() {
        assert_eq!(encode(&Packet::PingReq, V5), [0xC0, 0]);
        assert_eq!(encode(&Packet::PingResp, V3_1), [0xD0, 0]);
    }

    /// Deterministic xorshift64 generator.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Decodes `bytes` repeatedly; any decoded packet must re-encode to something decodable.
    fn decode_without_panic(bytes: &[u8], v: ProtocolVersion) {
        let mut buf = BytesMut::from(bytes);
        while let Ok(Some(p)) = decode(&mut buf, v, 1 << 20) {
            let again = encode(&p, v);
            let redecoded = decode(&mut BytesMut::from(&again[..]), v, u32::MAX);
            assert!(
                matches!(redecoded, Ok(Some(_))),
                "{p:?} re-encoded to {again:02X?}: {redecoded:?}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        for v in VERSIONS {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ v as u64);
            for _ in 0..200_000 {
                let len = rng.below(48);
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                // Make many inputs look like real fixed headers so parsing goes deep.
                let shape_header = rng.below(4) != 0;
                if let (true, [first, rl, rest @ ..]) = (shape_header, bytes.as_mut_slice()) {
                    let t = 1 + rng.below(15) as u8;
                    let flags = match t {
                        3 => *first & 0x0F,
                        6 | 8 | 10 => 2,
                        _ => 0,
                    };
                    *first = (t << 4) | flags;
                    *rl = rest.len().min(127) as u8;
                }
                decode_without_panic(&bytes, v);
            }
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic() {
        for v in VERSIONS {
            let corpus: Vec<Vec<u8>> = samples(v).iter().map(|p| encode(p, v)).collect();
            let mut rng = XorShift(0xD1B5_4A32_D192_ED03 ^ v as u64);
            for _ in 0..100_000 {
                let mut bytes = corpus[rng.below(corpus.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bytes.len());
                    match rng.below(5) {
                        0 => bytes[at] = rng.next() as u8,
                        1 => bytes[at] ^= 1 << rng.below(8),
                        2 => bytes.truncate(at.max(1)),
                        3 => bytes.insert(at, rng.next() as u8),
                        _ => {
                            bytes.remove(at);
                            if bytes.is_empty() {
                                bytes.push(0);
                            }
                        }
                    }
                }
                decode_without_panic(&bytes, v);
            }
        }
    }
}
