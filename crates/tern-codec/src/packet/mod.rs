//! The fifteen MQTT control packets as values, one file per packet type, and the entry points
//! [`decode`] and [`Packet::encode`] that dispatch on the fixed header.

mod ack;
mod auth;
mod codec;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

pub use ack::Ack;
pub use auth::Auth;
pub use codec::{RULE_PACKET_TYPE, RULE_TOO_LARGE, decode, peek_connect_version};
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::{Publish, PublishRef};
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

use std::num::NonZeroU16;

/// A packet identifier: never zero on the wire [MQTT-2.2.1-3].
pub type PacketId = NonZeroU16;

/// The protocol level a connection speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V3_1 = 3,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V3_1_1 = 4,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5 = 5,
}

impl ProtocolVersion {
    /// True for MQTT 5.0, the only level with properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for wire value `v`, or `None` for 3 and above.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The control packet type from the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client request to connect.
    Connect = 1,
    /// Connect acknowledgment.
    ConnAck = 2,
    /// Publish message.
    Publish = 3,
    /// QoS 1 publish acknowledgment.
    PubAck = 4,
    /// QoS 2 publish received.
    PubRec = 5,
    /// QoS 2 publish release.
    PubRel = 6,
    /// QoS 2 publish complete.
    PubComp = 7,
    /// Subscribe request.
    Subscribe = 8,
    /// Subscribe acknowledgment.
    SubAck = 9,
    /// Unsubscribe request.
    Unsubscribe = 10,
    /// Unsubscribe acknowledgment.
    UnsubAck = 11,
    /// Ping request.
    PingReq = 12,
    /// Ping response.
    PingResp = 13,
    /// Disconnect notification.
    Disconnect = 14,
    /// Authentication exchange (v5 only).
    Auth = 15,
}

impl PacketType {
    /// First byte of the fixed header: the type and the flags it requires (PUBREL, SUBSCRIBE
    /// and UNSUBSCRIBE carry 0b0010 [MQTT-2.2.2-1]; PUBLISH adds its own flags to this).
    pub(crate) fn first_byte(self) -> u8 {
        let flags = match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        };
        ((self as u8) << 4) | flags
    }
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH.
    Auth(Auth),
}

/// Helpers shared by the per-packet tests.
#[cfg(test)]
pub(crate) mod testutil {
    use bytes::BytesMut;

    pub(crate) use crate::properties::RULE_PROPERTY;
    pub(crate) use crate::wire::RULE_LENGTH;
    use crate::{Packet, ProtocolVersion, ReasonCode, Violation};

    /// Encodes `p` for `v`, checking `encoded_len` agrees.
    pub(crate) fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.encode(v, &mut out);
        assert_eq!(out.len(), p.encoded_len(v), "encoded_len of {p:?}");
        out.to_vec()
    }

    /// Decodes exactly one whole packet from `bytes`.
    pub(crate) fn decode_all(bytes: &[u8], v: ProtocolVersion) -> Result<Packet, Violation> {
        let mut buf = BytesMut::from(bytes);
        let p = crate::decode(&mut buf, v, u32::MAX)?.expect("a whole packet");
        assert!(buf.is_empty(), "decode left {} bytes", buf.len());
        Ok(p)
    }

    /// Encodes then decodes `p`, expecting the same value back.
    pub(crate) fn assert_round_trip(p: &Packet, v: ProtocolVersion) {
        let bytes = encode(p, v);
        assert_eq!(decode_all(&bytes, v).as_ref(), Ok(p), "{v:?} {bytes:02X?}");
    }

    /// Expects a violation of `rule` with `reason`.
    pub(crate) fn assert_violation(res: Result<Packet, Violation>, rule: &str, reason: ReasonCode) {
        match res {
            Err(e) => assert_eq!((e.rule, e.reason), (rule, reason), "{e}"),
            Ok(p) => panic!("expected [{rule}], decoded {p:?}"),
        }
    }
}
