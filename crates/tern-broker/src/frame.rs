//! What the core hands a connection to send: a [`Frame`].
//!
//! A routed message goes out as an [`OutPublish`]: a reference to the shared [`Message`] plus the
//! few fields that differ per subscriber (packet id, flags, lifetime left, subscription
//! identifiers, topic alias). The connection's writer encodes it straight from the shared
//! message, so a delivery to one more subscriber copies no topic, no properties and no payload,
//! and the frame itself stays small to move through queues. The core's acknowledgments carry
//! no properties and are as small; any other packet is boxed.

use std::sync::Arc;

use bytes::BytesMut;
use tern_codec::{
    Ack, Packet, PacketId, PacketType, ProtocolVersion, Publish, PublishRef, QoS, ReasonCode,
};

use crate::session::Message;

/// One packet for a connection, as the core hands it to the [`crate::Outlet`].
#[derive(Debug, Clone)]
pub enum Frame {
    /// A PUBLISH of a routed message, encoded from the shared message.
    Publish(OutPublish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP (carrying no properties).
    Ack(AckKind, PacketId, ReasonCode),
    /// Any other packet (a `Packet` becomes one with `into()`).
    Packet(Box<Packet>),
}

/// Which acknowledgment a [`Frame::Ack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK.
    PubAck,
    /// PUBREC.
    PubRec,
    /// PUBREL.
    PubRel,
    /// PUBCOMP.
    PubComp,
}

/// A PUBLISH of a shared message to one subscriber: the message and what is particular to
/// this delivery.
#[derive(Debug, Clone)]
pub struct OutPublish {
    /// The routed message (topic, payload, properties).
    pub msg: Arc<Message>,
    /// DUP flag.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Packet identifier, present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// Message Expiry Interval to send (the lifetime left).
    pub expiry: Option<u32>,
    /// Subscription Identifiers of the matching subscriptions.
    pub sub_ids: Vec<u32>,
    /// Topic Alias to send.
    pub topic_alias: Option<u16>,
    /// False when the alias stands in for the topic name (sent empty).
    pub with_topic: bool,
}

impl OutPublish {
    /// The PUBLISH as borrowed parts for the codec, to be encoded for `version`: for v5 the
    /// message's shared properties come encoded once per message (see
    /// [`Message::shared_properties`]).
    pub fn view(&self, version: ProtocolVersion) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if self.with_topic { &self.msg.topic } else { "" },
            packet_id: self.packet_id,
            properties: &self.msg.properties,
            message_expiry_interval: self.expiry,
            subscription_identifiers: &self.sub_ids,
            topic_alias: self.topic_alias,
            shared_properties: version.is_v5().then(|| self.msg.shared_properties()),
            payload: &self.msg.payload,
        }
    }

    /// The same PUBLISH as an owned packet value (for tests and tools; copies everything).
    pub fn to_publish(&self) -> Publish {
        let mut properties = self.msg.properties.clone();
        properties.message_expiry_interval = self.expiry;
        properties.subscription_identifiers = self.sub_ids.clone();
        properties.topic_alias = self.topic_alias;
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if self.with_topic {
                self.msg.topic.clone()
            } else {
                String::new()
            },
            packet_id: self.packet_id,
            properties,
            payload: self.msg.payload.clone(),
        }
    }
}

impl AckKind {
    /// The packet type of this acknowledgment.
    pub fn packet_type(self) -> PacketType {
        match self {
            AckKind::PubAck => PacketType::PubAck,
            AckKind::PubRec => PacketType::PubRec,
            AckKind::PubRel => PacketType::PubRel,
            AckKind::PubComp => PacketType::PubComp,
        }
    }
}

impl Frame {
    /// Exact number of bytes [`Frame::encode`] writes for `version`.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Frame::Publish(p) => p.view(version).encoded_len(version),
            Frame::Ack(_, _, reason) => Ack::bare_len(*reason, version),
            Frame::Packet(p) => p.encoded_len(version),
        }
    }

    /// Appends the wire form for `version` to `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        match self {
            Frame::Publish(p) => p.view(version).encode(version, out),
            Frame::Ack(kind, id, reason) => {
                Ack::encode_bare(kind.packet_type(), *id, *reason, version, out)
            }
            Frame::Packet(p) => p.encode(version, out),
        }
    }

    /// The packet this frame stands for, as an owned value (for tests and tools).
    pub fn to_packet(&self) -> Packet {
        match self {
            Frame::Publish(p) => Packet::Publish(p.to_publish()),
            Frame::Ack(kind, id, reason) => {
                let a = Ack::with_reason(*id, *reason);
                match kind {
                    AckKind::PubAck => Packet::PubAck(a),
                    AckKind::PubRec => Packet::PubRec(a),
                    AckKind::PubRel => Packet::PubRel(a),
                    AckKind::PubComp => Packet::PubComp(a),
                }
            }
            Frame::Packet(p) => (**p).clone(),
        }
    }

    /// The reason code of a PUBACK or PUBREC (answers to a publisher), to change it.
    pub(crate) fn publisher_ack_reason(&mut self) -> Option<&mut ReasonCode> {
        match self {
            Frame::Ack(AckKind::PubAck | AckKind::PubRec, _, reason) => Some(reason),
            _ => None,
        }
    }
}

impl From<Packet> for Frame {
    fn from(packet: Packet) -> Frame {
        Frame::Packet(Box::new(packet))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tern_codec::PropertySet;

    use super::*;

    const VERSIONS: [ProtocolVersion; 3] = [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ];

    fn bytes(f: &Frame, v: ProtocolVersion) -> BytesMut {
        let mut out = BytesMut::new();
        f.encode(v, &mut out);
        assert_eq!(out.len(), f.encoded_len(v), "encoded_len of {f:?}");
        out
    }

    fn packet_bytes(p: &Packet, v: ProtocolVersion) -> BytesMut {
        let mut out = BytesMut::new();
        p.encode(v, &mut out);
        out
    }

    #[test]
    fn a_frame_is_small_to_move() {
        // Frames are moved through the core's held queue and the connection's mailbox.
        assert!(
            std::mem::size_of::<Frame>() <= 64,
            "{}",
            std::mem::size_of::<Frame>()
        );
    }

    #[test]
    fn packets_and_messages_without_properties_are_small() {
        // A decoded packet is moved from the decoder into a batch and into the core; a routed
        // message is held for as long as it is queued or retained. Properties are boxed only
        // when present, so neither carries the 344 bytes of an empty property set.
        let (packet, message) = (
            std::mem::size_of::<Packet>(),
            std::mem::size_of::<Message>(),
        );
        assert!(packet <= 72, "Packet is {packet} bytes");
        assert!(message <= 136, "Message is {message} bytes");
    }

    #[test]
    fn acks_encode_exactly_as_their_packets() {
        let id = PacketId::new(0x1234).unwrap();
        for reason in [ReasonCode::SUCCESS, ReasonCode::NO_MATCHING_SUBSCRIBERS] {
            for (kind, p) in [
                (
                    AckKind::PubAck,
                    Packet::PubAck(Ack::with_reason(id, reason)),
                ),
                (
                    AckKind::PubRec,
                    Packet::PubRec(Ack::with_reason(id, reason)),
                ),
                (
                    AckKind::PubRel,
                    Packet::PubRel(Ack::with_reason(id, reason)),
                ),
                (
                    AckKind::PubComp,
                    Packet::PubComp(Ack::with_reason(id, reason)),
                ),
            ] {
                let f = Frame::Ack(kind, id, reason);
                assert_eq!(f.to_packet(), p);
                for v in VERSIONS {
                    assert_eq!(bytes(&f, v), packet_bytes(&p, v), "{p:?} for {v:?}");
                }
            }
        }
    }

    #[test]
    fn other_packets_are_kept_whole() {
        let mut a = Ack::with_reason(PacketId::new(7).unwrap(), ReasonCode::QUOTA_EXCEEDED);
        a.properties.reason_string = Some("full".into());
        let p = Packet::PubAck(a);
        let f = Frame::from(p.clone());
        assert!(matches!(f, Frame::Packet(_)));
        assert_eq!(
            bytes(&f, ProtocolVersion::V5),
            packet_bytes(&p, ProtocolVersion::V5)
        );
        assert_eq!(Frame::from(Packet::PingResp).to_packet(), Packet::PingResp);
    }

    #[test]
    fn a_routed_publish_encodes_as_the_publish_it_stands_for() {
        let properties = PropertySet {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Default::default()
        }
        .into();
        let msg = Arc::new(Message {
            topic: "a/b/c".into(),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties,
            expires_at: None,
            publisher: None,
            shared_properties: Default::default(),
            pending_shards: Default::default(),
        });
        let cases = [
            (QoS::AtMostOnce, None, None, vec![], None, true),
            (
                QoS::AtLeastOnce,
                Some(9),
                Some(30),
                vec![1, 300],
                Some(2),
                true,
            ),
            (
                QoS::ExactlyOnce,
                Some(65535),
                None,
                vec![268_435_455],
                Some(1),
                false,
            ),
        ];
        for (qos, id, expiry, sub_ids, alias, with_topic) in cases {
            let f = Frame::Publish(OutPublish {
                msg: msg.clone(),
                dup: qos != QoS::AtMostOnce,
                qos,
                retain: true,
                packet_id: id.and_then(PacketId::new),
                expiry,
                sub_ids,
                topic_alias: alias,
                with_topic,
            });
            let p = f.to_packet();
            let Packet::Publish(publish) = &p else {
                panic!("{p:?}")
            };
            assert_eq!(publish.topic.is_empty(), !with_topic);
            assert_eq!(publish.properties.message_expiry_interval, expiry);
            assert_eq!(publish.properties.topic_alias, alias);
            for v in VERSIONS {
                assert_eq!(bytes(&f, v), packet_bytes(&p, v), "{p:?} for {v:?}");
            }
        }
    }
}
