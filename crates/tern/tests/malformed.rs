//! Malformed and forbidden input over real TCP, one table row per case.
//!
//! Every row runs against its own broker on 127.0.0.1:0. An observer client connects and
//! subscribes first; then the offending client sends the row's bytes (after a valid CONNECT, or
//! in place of it for CONNECT cases) and must get exactly the row's outcome:
//! - v5 after CONNECT: DISCONNECT with the row's reason code, then the connection closes;
//! - v3.1.1 after CONNECT: the connection closes without any packet;
//! - CONNECT itself: v5 gets a CONNACK with the reason code, then close; v3.1.1 is closed without
//!   a CONNACK, except an unsupported protocol level which gets return code 0x01.
//!
//! Afterwards the observer must be unaffected: it still gets PINGRESP and still receives a
//! PUBLISH. Malformed input closes the offender's connection and nothing else.
//!
//! Rule ids are per protocol version: 3.1.1 and 5.0 number the same statement differently. Where
//! the specification states a requirement without a numbered statement, the row names the
//! general rule that applies (v5 [MQTT-4.13.1-1], v3.1.1 [MQTT-4.8.0-1]) and the section.

mod raw;
mod support;

use bytes::BytesMut;
use raw::{PINGREQ, connect, connect_with, packet, publish_qos0, string, subscribe};
use support::{RawClient, start_broker};
use tern_broker::BrokerConfig;
use tern_codec::{Packet, PacketType, ProtocolVersion, ReasonCode};

use ProtocolVersion::{V3_1_1, V5};

/// Broker limits a row runs under.
#[derive(Debug, Clone, Copy)]
enum Limits {
    Default,
    /// `max_packet_size: 256`.
    MaxPacket256,
    /// `receive_maximum: 2`.
    ReceiveMax2,
}

impl Limits {
    fn config(self) -> BrokerConfig {
        match self {
            Limits::Default => BrokerConfig::default(),
            Limits::MaxPacket256 => BrokerConfig {
                max_packet_size: 256,
                ..BrokerConfig::default()
            },
            Limits::ReceiveMax2 => BrokerConfig {
                receive_maximum: 2,
                ..BrokerConfig::default()
            },
        }
    }
}

/// What the offender must see.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// v5 DISCONNECT with this reason code, then close, nothing else.
    Disconnect(u8),
    /// Closed without any packet.
    Closed,
    /// Exactly this packet (compared in its wire form), then close.
    Reply(&'static [u8]),
}

/// One malformed-input case.
struct Row {
    /// What the row proves.
    label: &'static str,
    /// Protocol version of the offending connection (and of the observer).
    version: ProtocolVersion,
    /// True when `bytes` replace the CONNECT instead of following a valid one.
    first: bool,
    limits: Limits,
    /// Bytes sent by the offender.
    bytes: Vec<u8>,
    /// Packets the offender must get before the outcome (e.g. acks of earlier valid packets).
    replies: &'static [PacketType],
    outcome: Outcome,
    /// Rule id for `version`.
    rule: &'static str,
}

fn row(
    label: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    outcome: Outcome,
    rule: &'static str,
) -> Row {
    Row {
        label,
        version,
        first: false,
        limits: Limits::Default,
        bytes,
        replies: &[],
        outcome,
        rule,
    }
}

impl Row {
    /// The bytes are the connection's first packet (no CONNECT before them).
    fn first(mut self) -> Row {
        self.first = true;
        self
    }

    fn limits(mut self, limits: Limits) -> Row {
        self.limits = limits;
        self
    }

    fn replies(mut self, replies: &'static [PacketType]) -> Row {
        self.replies = replies;
        self
    }
}

use Outcome::{Closed, Disconnect, Reply};

/// The cases that end the offender's connection.
#[rustfmt::skip]
fn closing_rows() -> Vec<Row> {
    vec![
        // --- Fixed header: packet type and flags -------------------------------------------
        row("pubrel_with_flags_0000", V5, vec![0x60, 0x02, 0x00, 0x01], Disconnect(0x81), "MQTT-3.6.1-1"),
        row("pubrel_with_flags_0000", V3_1_1, vec![0x60, 0x02, 0x00, 0x01], Closed, "MQTT-3.6.1-1"),
        // SUBSCRIBE id 1, [v5: no properties], "a" QoS 0, with flags 0000 instead of 0010.
        row("subscribe_with_flags_0000", V5, vec![0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00], Disconnect(0x81), "MQTT-3.8.1-1"),
        row("subscribe_with_flags_0000", V3_1_1, vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], Closed, "MQTT-3.8.1-1"),
        row("unsubscribe_with_flags_0000", V5, vec![0xA0, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], Disconnect(0x81), "MQTT-3.10.1-1"),
        row("unsubscribe_with_flags_0000", V3_1_1, vec![0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], Closed, "MQTT-3.10.1-1"),
        row("pingreq_with_flags_set", V5, vec![0xC1, 0x00], Disconnect(0x81), "MQTT-2.1.3-1"),
        row("pingreq_with_flags_set", V3_1_1, vec![0xC1, 0x00], Closed, "MQTT-2.2.2-2"),
        row("disconnect_with_flags_set", V5, vec![0xE1, 0x00], Disconnect(0x81), "MQTT-3.14.1-1"),
        row("disconnect_with_flags_set", V3_1_1, vec![0xE1, 0x00], Closed, "MQTT-3.14.1-1"),
        // Packet type 0 is forbidden (section 2.1.2 / 2.2.1, no numbered statement).
        row("reserved_packet_type_0", V5, vec![0x00, 0x00], Disconnect(0x81), "MQTT-4.13.1-1"),
        row("reserved_packet_type_0", V3_1_1, vec![0x00, 0x00], Closed, "MQTT-4.8.0-1"),
        // Type 15 is AUTH in v5 but reserved in 3.1.1 (section 2.2.1).
        row("packet_type_15_before_v5", V3_1_1, vec![0xF0, 0x00], Closed, "MQTT-4.8.0-1"),
        // AUTH with reserved flag bits 0001: malformed before it is even a protocol error.
        row("auth_with_flags_set", V5, vec![0xF1, 0x00], Disconnect(0x81), "MQTT-3.15.1-1"),
        // --- Remaining Length ----------------------------------------------------------------
        // Only the fixed header of a 511-byte PUBLISH (FF 03): refused at once, never awaited.
        row("remaining_length_above_max_packet_size", V5, vec![0x30, 0xFF, 0x03], Disconnect(0x95), "MQTT-3.2.2-15")
            .limits(Limits::MaxPacket256),
        row("remaining_length_above_max_packet_size", V3_1_1, vec![0x30, 0xFF, 0x03], Closed, "MQTT-4.8.0-1")
            .limits(Limits::MaxPacket256),
        // The largest Remaining Length there is (268,435,455): refused from the header alone.
        row("remaining_length_268435455_header_only", V5, vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F], Disconnect(0x95), "MQTT-3.2.2-15"),
        row("remaining_length_of_5_bytes", V5, vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Disconnect(0x81), "MQTT-1.5.5-1"),
        row("remaining_length_of_5_bytes", V3_1_1, vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Closed, "MQTT-4.8.0-1"),
        // PINGREQ whose Remaining Length 0 is encoded in two bytes (80 00).
        row("remaining_length_not_minimal", V5, vec![0xC0, 0x80, 0x00], Disconnect(0x81), "MQTT-1.5.5-1"),
        row("remaining_length_not_minimal", V3_1_1, vec![0xC0, 0x80, 0x00], Closed, "MQTT-4.8.0-1"),
        // --- UTF-8 in the Topic Name ---------------------------------------------------------
        // Overlong encoding of U+0000: C0 80.
        row("topic_overlong_utf8_c0_80", V5, vec![0x30, 0x05, 0x00, 0x02, 0xC0, 0x80, 0x00], Disconnect(0x81), "MQTT-1.5.4-1"),
        row("topic_overlong_utf8_c0_80", V3_1_1, vec![0x30, 0x04, 0x00, 0x02, 0xC0, 0x80], Closed, "MQTT-1.5.3-1"),
        // U+D800, a surrogate: ED A0 80.
        row("topic_utf8_surrogate_ed_a0_80", V5, vec![0x30, 0x06, 0x00, 0x03, 0xED, 0xA0, 0x80, 0x00], Disconnect(0x81), "MQTT-1.5.4-1"),
        row("topic_utf8_surrogate_ed_a0_80", V3_1_1, vec![0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], Closed, "MQTT-1.5.3-1"),
        // "a\0b".
        row("topic_with_u0000", V5, vec![0x30, 0x06, 0x00, 0x03, b'a', 0x00, b'b', 0x00], Disconnect(0x81), "MQTT-1.5.4-2"),
        row("topic_with_u0000", V3_1_1, vec![0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'], Closed, "MQTT-1.5.3-2"),
        // --- Topic Name content --------------------------------------------------------------
        row("publish_topic_with_plus_wildcard", V5, vec![0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00], Disconnect(0x90), "MQTT-3.3.2-2"),
        row("publish_topic_with_plus_wildcard", V3_1_1, vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'], Closed, "MQTT-3.3.2-2"),
        row("publish_topic_with_hash_wildcard", V5, vec![0x30, 0x04, 0x00, 0x01, b'#', 0x00], Disconnect(0x90), "MQTT-3.3.2-2"),
        row("publish_empty_topic", V3_1_1, vec![0x30, 0x02, 0x00, 0x00], Closed, "MQTT-4.7.3-1"),
        // --- Topic Alias (properties: 03 = length, 23 = Topic Alias) -------------------------
        row("topic_alias_0", V5, vec![0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00], Disconnect(0x94), "MQTT-3.3.2-8"),
        // The broker's Topic Alias Maximum is 64 by default.
        row("topic_alias_above_maximum", V5, vec![0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x41], Disconnect(0x94), "MQTT-3.3.2-9"),
        // --- Packet Identifier ---------------------------------------------------------------
        row("publish_qos1_packet_id_0", V5, vec![0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00], Disconnect(0x81), "MQTT-2.2.1-3"),
        row("publish_qos1_packet_id_0", V3_1_1, vec![0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], Closed, "MQTT-2.3.1-1"),
        row("subscribe_packet_id_0", V5, vec![0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], Disconnect(0x81), "MQTT-2.2.1-3"),
        row("subscribe_packet_id_0", V3_1_1, vec![0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], Closed, "MQTT-2.3.1-1"),
        // --- PUBLISH flags -------------------------------------------------------------------
        row("publish_qos_3", V5, vec![0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00], Disconnect(0x81), "MQTT-3.3.1-4"),
        row("publish_qos_3", V3_1_1, vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], Closed, "MQTT-3.3.1-4"),
        row("publish_dup_with_qos_0", V5, vec![0x38, 0x04, 0x00, 0x01, b'a', 0x00], Disconnect(0x81), "MQTT-3.3.1-2"),
        row("publish_dup_with_qos_0", V3_1_1, vec![0x38, 0x03, 0x00, 0x01, b'a'], Closed, "MQTT-3.3.1-2"),
        // --- Properties ----------------------------------------------------------------------
        // Two Message Expiry Intervals (02 00 00 00 0A twice): a Protocol Error (3.3.2.3.3).
        row(
            "duplicate_message_expiry_interval",
            V5,
            vec![0x30, 0x0E, 0x00, 0x01, b'a', 0x0A, 0x02, 0x00, 0x00, 0x00, 0x0A, 0x02, 0x00, 0x00, 0x00, 0x0A],
            Disconnect(0x82),
            "MQTT-4.13.1-1",
        ),
        // Property id 0x05 is assigned to nothing: a Malformed Packet (2.2.2.2).
        row("unknown_property_id", V5, vec![0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x05, 0x00], Disconnect(0x81), "MQTT-4.13.1-1"),
        // Session Expiry Interval (0x11) exists, but not in PUBLISH: a Malformed Packet (2.2.2.2).
        row("property_not_allowed_in_publish", V5, vec![0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01], Disconnect(0x81), "MQTT-4.13.1-1"),
        // Subscription Identifier 1 (0B 01) sent by a client.
        row("client_publish_with_subscription_identifier", V5, vec![0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x0B, 0x01], Disconnect(0x82), "MQTT-3.3.4-6"),
        // Response Topic (08) "r/#": a wildcard where a topic name belongs, a Protocol Error.
        row("publish_response_topic_with_wildcard", V5, vec![0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x08, 0x00, 0x03, b'r', b'/', b'#'], Disconnect(0x82), "MQTT-3.3.2-14"),
        // --- Empty SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------
        row("subscribe_without_filters", V5, vec![0x82, 0x03, 0x00, 0x01, 0x00], Disconnect(0x82), "MQTT-3.8.3-2"),
        row("subscribe_without_filters", V3_1_1, vec![0x82, 0x02, 0x00, 0x01], Closed, "MQTT-3.8.3-3"),
        row("unsubscribe_without_filters", V5, vec![0xA2, 0x03, 0x00, 0x01, 0x00], Disconnect(0x82), "MQTT-3.10.3-2"),
        row("unsubscribe_without_filters", V3_1_1, vec![0xA2, 0x02, 0x00, 0x01], Closed, "MQTT-3.10.3-2"),
        // --- Lengths inside the packet -------------------------------------------------------
        // Topic length 10 with only "abc" in the packet.
        row("truncated_topic_length", V5, vec![0x30, 0x05, 0x00, 0x0A, b'a', b'b', b'c'], Disconnect(0x81), "MQTT-4.13.1-1"),
        row("truncated_topic_length", V3_1_1, vec![0x30, 0x05, 0x00, 0x0A, b'a', b'b', b'c'], Closed, "MQTT-4.8.0-1"),
        // Property Length 5 with only 2 property bytes in the packet.
        row("property_length_past_end", V5, vec![0x30, 0x06, 0x00, 0x01, b'a', 0x05, 0x01, 0x00], Disconnect(0x81), "MQTT-4.13.1-1"),
        // Remaining Length larger than the fields: PINGREQ with one byte of body.
        row("pingreq_with_trailing_byte", V5, vec![0xC0, 0x01, 0x00], Disconnect(0x81), "MQTT-4.13.1-1"),
        row("pingreq_with_trailing_byte", V3_1_1, vec![0xC0, 0x01, 0x00], Closed, "MQTT-4.8.0-1"),
        // PUBACK id 1, reason 0, no properties, then one stray byte.
        row("puback_with_trailing_byte", V5, vec![0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF], Disconnect(0x81), "MQTT-4.13.1-1"),
        row("puback_with_trailing_byte", V3_1_1, vec![0x40, 0x03, 0x00, 0x01, 0xFF], Closed, "MQTT-4.8.0-1"),
        // --- State -----------------------------------------------------------------------------
        row("second_connect", V5, connect(V5, "bad"), Disconnect(0x82), "MQTT-3.1.0-2"),
        row("second_connect", V3_1_1, connect(V3_1_1, "bad"), Closed, "MQTT-3.1.0-2"),
        // PUBLISH "a" "hi" as the first packet: closed, no CONNACK.
        row("publish_before_connect", V5, vec![0x30, 0x06, 0x00, 0x01, b'a', 0x00, b'h', b'i'], Closed, "MQTT-3.1.0-1").first(),
        row("publish_before_connect", V3_1_1, vec![0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'], Closed, "MQTT-3.1.0-1").first(),
        // Receive Maximum 2: the third QoS 2 PUBLISH without PUBREL exceeds it.
        row(
            "receive_maximum_exceeded",
            V5,
            [
                [0x34, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00],
                [0x34, 0x06, 0x00, 0x01, b'a', 0x00, 0x02, 0x00],
                [0x34, 0x06, 0x00, 0x01, b'a', 0x00, 0x03, 0x00],
            ]
            .concat(),
            Disconnect(0x93),
            "MQTT-3.3.4-7",
        )
        .limits(Limits::ReceiveMax2)
        .replies(&[PacketType::PubRec, PacketType::PubRec]),
        // --- Malformed CONNECT ---------------------------------------------------------------
        // Connect flags 03: Clean Start and the reserved bit.
        row("connect_reserved_flag_set", V5, connect_with(V5, 0x03, 60, &[], "bad", &[]), Reply(&[0x20, 0x03, 0x00, 0x81, 0x00]), "MQTT-3.1.2-3").first(),
        row("connect_reserved_flag_set", V3_1_1, connect_with(V3_1_1, 0x03, 60, &[], "bad", &[]), Closed, "MQTT-3.1.2-3").first(),
        // Connect flags 1E: Clean Start, Will Flag, Will QoS 3; then will properties (v5),
        // will topic "w" and will payload "x".
        row("connect_will_qos_3", V5, connect_with(V5, 0x1E, 60, &[], "bad", &[&[0x00][..], &string(b"w"), &string(b"x")].concat()), Reply(&[0x20, 0x03, 0x00, 0x81, 0x00]), "MQTT-3.1.2-12").first(),
        row("connect_will_qos_3", V3_1_1, connect_with(V3_1_1, 0x1E, 60, &[], "bad", &[string(b"w"), string(b"x")].concat()), Closed, "MQTT-3.1.2-14").first(),
        // Two Session Expiry Intervals in CONNECT: a Protocol Error (3.1.2.11.2).
        row(
            "connect_duplicate_session_expiry",
            V5,
            connect_with(V5, 0x02, 60, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1], "bad", &[]),
            Reply(&[0x20, 0x03, 0x00, 0x82, 0x00]),
            "MQTT-3.1.4-1",
        )
        .first(),
        // Connect flags 06: Clean Start and Will Flag; will properties hold Response Topic "r/#".
        row(
            "connect_will_response_topic_with_wildcard",
            V5,
            connect_with(V5, 0x06, 60, &[], "bad", &[&[0x06, 0x08, 0x00, 0x03, b'r', b'/', b'#'][..], &string(b"w"), &string(b"x")].concat()),
            Reply(&[0x20, 0x03, 0x00, 0x82, 0x00]),
            "MQTT-3.3.2-14",
        )
        .first(),
        // Connect flags 06: Clean Start and Will Flag, but the payload ends after the client id.
        row("connect_will_flag_without_will_fields", V5, connect_with(V5, 0x06, 60, &[], "bad", &[]), Reply(&[0x20, 0x03, 0x00, 0x81, 0x00]), "MQTT-3.1.2-9").first(),
        row("connect_will_flag_without_will_fields", V3_1_1, connect_with(V3_1_1, 0x06, 60, &[], "bad", &[]), Closed, "MQTT-3.1.2-9").first(),
        // Connect flags 82: Clean Start and User Name Flag, but no user name.
        row("connect_user_name_flag_without_user_name", V5, connect_with(V5, 0x82, 60, &[], "bad", &[]), Reply(&[0x20, 0x03, 0x00, 0x81, 0x00]), "MQTT-3.1.2-17").first(),
        row("connect_user_name_flag_without_user_name", V3_1_1, connect_with(V3_1_1, 0x82, 60, &[], "bad", &[]), Closed, "MQTT-3.1.2-19").first(),
        // Connect flags C2: Clean Start, User Name and Password Flags; user name "u", no password.
        row("connect_password_flag_without_password", V5, connect_with(V5, 0xC2, 60, &[], "bad", &string(b"u")), Reply(&[0x20, 0x03, 0x00, 0x81, 0x00]), "MQTT-3.1.2-19").first(),
        row("connect_password_flag_without_password", V3_1_1, connect_with(V3_1_1, 0xC2, 60, &[], "bad", &string(b"u")), Closed, "MQTT-3.1.2-21").first(),
        row("connect_with_trailing_byte", V5, connect_with(V5, 0x02, 60, &[], "bad", &[0xFF]), Reply(&[0x20, 0x03, 0x00, 0x81, 0x00]), "MQTT-3.1.4-1").first(),
        row("connect_with_trailing_byte", V3_1_1, connect_with(V3_1_1, 0x02, 60, &[], "bad", &[0xFF]), Closed, "MQTT-3.1.4-1").first(),
        // Protocol name "MQTX", level 4.
        row(
            "connect_unknown_protocol_name",
            V3_1_1,
            packet(0x10, &[&string(b"MQTX"), &[0x04, 0x02, 0x00, 0x3C], &string(b"bad")]),
            Reply(&[0x20, 0x02, 0x00, 0x01]),
            "MQTT-3.1.2-1",
        )
        .first(),
        // Protocol name "MQTT", level 6: the v3 CONNACK form, as the level is unknown.
        row(
            "connect_protocol_level_6",
            V3_1_1,
            packet(0x10, &[&string(b"MQTT"), &[0x06, 0x02, 0x00, 0x3C, 0x00], &string(b"bad")]),
            Reply(&[0x20, 0x02, 0x00, 0x01]),
            "MQTT-3.1.2-2",
        )
        .first(),
    ]
}

/// A client connected with `client_id` at `version`, its CONNACK checked.
async fn connected(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
) -> Result<RawClient, String> {
    let mut client = RawClient::connect(addr).await;
    client.send(&connect(version, client_id)).await;
    match client.recv_packet(version).await {
        Ok(Some(Packet::ConnAck(ack))) if ack.reason == ReasonCode::SUCCESS => Ok(client),
        other => Err(format!(
            "{client_id}: expected a successful CONNACK, got {other:?}"
        )),
    }
}

/// Wire form of `packet` at `version`.
fn wire(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(version, &mut out);
    out.to_vec()
}

/// The observer: connected and subscribed to `observer/#` before the offender arrives.
async fn observer(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
) -> Result<RawClient, String> {
    let mut obs = connected(addr, version, "observer").await?;
    obs.send(&subscribe(version, 1, "observer/#", 0)).await;
    match obs.recv_packet(version).await {
        Ok(Some(Packet::SubAck(_))) => Ok(obs),
        other => Err(format!("observer: expected SUBACK, got {other:?}")),
    }
}

/// The observer still works: PINGREQ gets PINGRESP, and a PUBLISH to its subscription arrives.
async fn observer_unaffected(obs: &mut RawClient, version: ProtocolVersion) -> Result<(), String> {
    obs.send(&PINGREQ).await;
    match obs.recv_packet(version).await {
        Ok(Some(Packet::PingResp)) => {}
        other => return Err(format!("observer: expected PINGRESP, got {other:?}")),
    }
    obs.send(&publish_qos0(version, "observer/after", b"still here"))
        .await;
    match obs.recv_packet(version).await {
        Ok(Some(Packet::Publish(p)))
            if p.topic == "observer/after" && p.payload == "still here" =>
        {
            Ok(())
        }
        other => Err(format!(
            "observer: expected its PUBLISH back, got {other:?}"
        )),
    }
}

/// Runs one row; `Err` says what differed.
async fn run(row: &Row) -> Result<(), String> {
    let server = start_broker(row.limits.config()).await;
    let addr = server.local_addr();
    let v = row.version;
    let mut obs = observer(addr, v).await?;

    let mut bad = if row.first {
        RawClient::connect(addr).await
    } else {
        connected(addr, v, "bad").await?
    };
    bad.send(&row.bytes).await;
    for expected in row.replies {
        match bad.recv_packet(v).await {
            Ok(Some(p)) if p.packet_type() == *expected => {}
            other => return Err(format!("expected {expected:?} first, got {other:?}")),
        }
    }
    match row.outcome {
        Outcome::Disconnect(reason) => match bad.recv_packet(v).await {
            Ok(Some(Packet::Disconnect(d))) if d.reason == ReasonCode(reason) => {}
            other => return Err(format!("expected DISCONNECT 0x{reason:02X}, got {other:?}")),
        },
        Outcome::Reply(bytes) => match bad.recv_packet(v).await {
            Ok(Some(p)) if wire(&p, v) == bytes => {}
            Ok(Some(p)) => {
                return Err(format!(
                    "expected {bytes:02X?}, got {:02X?} ({p:?})",
                    wire(&p, v)
                ));
            }
            other => return Err(format!("expected {bytes:02X?}, got {other:?}")),
        },
        Outcome::Closed => {}
    }
    bad.expect_closed()
        .await
        .map_err(|e| format!("expected the connection closed, got {e:?}"))?;
    drop(bad);

    observer_unaffected(&mut obs, v).await?;
    drop(obs);
    server.shutdown().await;
    Ok(())
}

/// Malformed input closes the offender with the exact reason (v5 DISCONNECT or CONNACK), or
/// silently (v3.1.1), and leaves other clients alone. Rule ids per row.
/// v5: [MQTT-4.13.1-1] [MQTT-4.13.2-1] [MQTT-3.14.4-1] [MQTT-3.14.4-2] [MQTT-3.2.2-7]
/// v3.1.1: [MQTT-4.8.0-1] [MQTT-3.1.4-1] [MQTT-3.2.2-6]
#[tokio::test]
async fn malformed_input_closes_only_the_offender() {
    let rows = closing_rows();
    let mut tasks = tokio::task::JoinSet::new();
    for row in rows {
        tasks.spawn(async move {
            let result = run(&row).await;
            (row, result)
        });
    }
    let mut failures = Vec::new();
    let mut count = 0;
    while let Some(joined) = tasks.join_next().await {
        let (row, result) = joined.expect("row task");
        count += 1;
        if let Err(e) = result {
            failures.push(format!(
                "{} ({:?}, [{}]): {e}",
                row.label, row.version, row.rule
            ));
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {count} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A protocol case answered without closing the connection.
struct OpenRow {
    label: &'static str,
    version: ProtocolVersion,
    /// Sent after a valid CONNECT.
    bytes: Vec<u8>,
    /// The exact answer, in wire form.
    answer: &'static [u8],
    rule: &'static str,
}

#[rustfmt::skip]
fn open_rows() -> Vec<OpenRow> {
    let r = |label, version, bytes, answer, rule| OpenRow {
        label,
        version,
        bytes,
        answer,
        rule,
    };
    vec![
        // PUBREL id 7 with no PUBLISH before it: PUBCOMP 7, reason 0x92 Packet Identifier not found.
        r("pubrel_unknown_id_gets_pubcomp_0x92", V5, vec![0x62, 0x02, 0x00, 0x07], &[0x70, 0x03, 0x00, 0x07, 0x92], "MQTT-4.3.3-11"),
        // 3.1.1 has no reason code: a plain PUBCOMP 7.
        r("pubrel_unknown_id_gets_pubcomp", V3_1_1, vec![0x62, 0x02, 0x00, 0x07], &[0x70, 0x02, 0x00, 0x07], "MQTT-4.3.3-2"),
        // QoS 1 PUBLISH "a" id 5, Payload Format Indicator 1 (02 01 01), payload FF FE.
        r(
            "qos1_payload_not_utf8_gets_puback_0x99",
            V5,
            vec![0x32, 0x0A, 0x00, 0x01, b'a', 0x00, 0x05, 0x02, 0x01, 0x01, 0xFF, 0xFE],
            &[0x40, 0x03, 0x00, 0x05, 0x99],
            "MQTT-3.3.4-1",
        ),
        r(
            "qos2_payload_not_utf8_gets_pubrec_0x99",
            V5,
            vec![0x34, 0x0A, 0x00, 0x01, b'a', 0x00, 0x06, 0x02, 0x01, 0x01, 0xFF, 0xFE],
            &[0x50, 0x03, 0x00, 0x06, 0x99],
            "MQTT-3.3.4-1",
        ),
    ]
}

async fn run_open(row: &OpenRow) -> Result<(), String> {
    let server = start_broker(BrokerConfig::default()).await;
    let v = row.version;
    let mut client = connected(server.local_addr(), v, "client").await?;
    client.send(&row.bytes).await;
    match client.recv_packet(v).await {
        Ok(Some(p)) if wire(&p, v) == row.answer => {}
        Ok(Some(p)) => {
            return Err(format!(
                "expected {:02X?}, got {:02X?} ({p:?})",
                row.answer,
                wire(&p, v)
            ));
        }
        other => return Err(format!("expected {:02X?}, got {other:?}", row.answer)),
    }
    // Still open and still served.
    client.send(&PINGREQ).await;
    match client.recv_packet(v).await {
        Ok(Some(Packet::PingResp)) => {}
        other => return Err(format!("expected PINGRESP after the answer, got {other:?}")),
    }
    drop(client);
    server.shutdown().await;
    Ok(())
}

/// Protocol cases that are answered with a reason code and keep the connection open.
/// v5: [MQTT-4.3.3-11] [MQTT-3.3.4-1]
/// v3.1.1: [MQTT-4.3.3-2]
#[tokio::test]
async fn refusals_that_keep_the_connection_open() {
    let mut failures = Vec::new();
    for row in open_rows() {
        if let Err(e) = run_open(&row).await {
            failures.push(format!(
                "{} ({:?}, [{}]): {e}",
                row.label, row.version, row.rule
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
