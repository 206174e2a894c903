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
        let flags = match self {
            Packet::Publish(p) => p.flags(),
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        ((self.packet_type() as u8) << 4) | flags
    }

    /// Length of everything after the fixed header, encoded for `version`.
    fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.body_len(version),
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
        let body = self.body_len(version);
        1 + varint::len(u32::try_from(body).unwrap_or(u32::MAX)) + body
    }

    /// Appends the wire form of this packet for `version` to `out`.
    ///
    /// CONNECT is always encoded for its own `protocol`. For v3 versions, properties and
    /// v5-only fields are dropped. The value is trusted: encoding never fails.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        let body = self.body_len(version);
        out.reserve(1 + 4 + body);
        out.put_u8(self.first_byte());
        varint::encode(u32::try_from(body).unwrap_or(u32::MAX), out);
        match self {
            Packet::Connect(c) => c.encode_body(out),
            Packet::ConnAck(c) => c.encode_body(version, out),
            Packet::Publish(p) => p.encode_body(version, out),
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
