//! MQTT 5 properties: one struct holding every property, validated per packet on decode.

use bytes::{BufMut, Bytes};

use crate::wire::{Reader, field_len, put_field};
use crate::{ReasonCode, Violation, varint};

/// The properties of a v5 packet, boxed only when one is set: most packets carry none, and a
/// packet or a stored message without properties then pays one pointer for them instead of a
/// whole [`PropertySet`]. Reading goes through to the set (an empty one when none is boxed);
/// writing through `DerefMut` boxes an empty set first, so a hot path that may only clear a
/// field uses [`Properties::get_mut`] instead.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertySet>>);

/// The set every empty [`Properties`] reads as.
static EMPTY: PropertySet = PropertySet {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifier_available: None,
    shared_subscription_available: None,
};

impl Properties {
    /// True when no property is set (what v3 packets always carry).
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(PropertySet::is_empty)
    }

    /// The set, for changing it, if one is boxed: `None` means every property is absent.
    pub fn get_mut(&mut self) -> Option<&mut PropertySet> {
        self.0.as_deref_mut()
    }

    /// The set, taken out (an empty one when none is boxed).
    pub fn into_set(self) -> PropertySet {
        self.0.map_or_else(PropertySet::default, |b| *b)
    }

    /// Reads a Property Length and the properties behind it, allowing only `allowed`.
    pub(crate) fn decode(r: &mut Reader, allowed: Allowed) -> Result<Properties, Violation> {
        if r.peek() == Some(0) {
            // Property Length 0: nothing to box.
            r.varint()?;
            return Ok(Properties::default());
        }
        // A non-zero length holds at least one property (or is refused).
        PropertySet::decode(r, allowed).map(|set| Properties(Some(Box::new(set))))
    }
}

impl From<PropertySet> for Properties {
    fn from(set: PropertySet) -> Properties {
        if set.is_empty() {
            Properties(None)
        } else {
            Properties(Some(Box::new(set)))
        }
    }
}

impl std::ops::Deref for Properties {
    type Target = PropertySet;

    fn deref(&self) -> &PropertySet {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertySet {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Every property of MQTT 5, each absent or set. Each packet type allows a subset; decoding
/// rejects others and duplicates of single-valued properties (section 2.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropertySet {
    /// 0x01 Payload Format Indicator (0 bytes, 1 UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<String>,
    /// 0x08 Response Topic.
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier(s): at most one in SUBSCRIBE, several in PUBLISH to a client.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information (0 or 1).
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information (0 or 1).
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information.
    pub response_information: Option<String>,
    /// 0x1C Server Reference.
    pub server_reference: Option<String>,
    /// 0x1F Reason String.
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum (never 0).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (never 0).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS (0 or 1).
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available (0 or 1).
    pub retain_available: Option<u8>,
    /// 0x26 User Property pairs, in wire order (may repeat).
    pub user_properties: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size (never 0).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (0 or 1).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available (0 or 1).
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available (0 or 1).
    pub shared_subscription_available: Option<u8>,
}

/// The PUBLISH properties that differ between deliveries of one message: they replace the
/// message's own when it is encoded for one subscriber (see [`crate::PublishRef`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerDelivery<'a> {
    /// 0x02 Message Expiry Interval, the lifetime left.
    pub message_expiry_interval: Option<u32>,
    /// 0x0B Subscription Identifiers of the matching subscriptions.
    pub subscription_identifiers: &'a [u32],
    /// 0x23 Topic Alias.
    pub topic_alias: Option<u16>,
}

/// Rule reported for property problems the specification states without a numbered statement
/// (unknown or misplaced identifier, duplicate, out-of-range value): section 2.2.2.2.
pub const RULE_PROPERTY: &str = "MQTT-2.2.2.2";

/// Rule for a Topic Alias of 0.
pub const RULE_TOPIC_ALIAS_ZERO: &str = "MQTT-3.3.2-8";

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

/// Which property identifiers one packet type (or the Will) allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowed(u64);

impl Allowed {
    pub(crate) const CONNECT: Allowed = Allowed(mask(&[
        0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27,
    ]));
    pub(crate) const WILL: Allowed = Allowed(mask(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]));
    pub(crate) const CONNACK: Allowed = Allowed(mask(&[
        0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28,
        0x29, 0x2A,
    ]));
    pub(crate) const PUBLISH: Allowed =
        Allowed(mask(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]));
    pub(crate) const ACK: Allowed = Allowed(mask(&[0x1F, 0x26]));
    pub(crate) const SUBSCRIBE: Allowed = Allowed(mask(&[0x0B, 0x26]));
    pub(crate) const UNSUBSCRIBE: Allowed = Allowed(mask(&[0x26]));
    pub(crate) const DISCONNECT: Allowed = Allowed(mask(&[0x11, 0x1C, 0x1F, 0x26]));
    pub(crate) const AUTH: Allowed = Allowed(mask(&[0x15, 0x16, 0x1F, 0x26]));

    fn has(self, id: u32) -> bool {
        id < 64 && self.0 & (1u64 << id) != 0
    }
}

fn duplicate() -> Violation {
    Violation::protocol(
        RULE_PROPERTY,
        "single-valued property included more than once",
    )
}

fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), Violation> {
    if slot.is_some() {
        return Err(duplicate());
    }
    *slot = Some(value);
    Ok(())
}

fn flag(r: &mut Reader, detail: &'static str) -> Result<u8, Violation> {
    let v = r.u8()?;
    if v > 1 {
        return Err(Violation::protocol(RULE_PROPERTY, detail));
    }
    Ok(v)
}

fn nonzero_u16(r: &mut Reader, detail: &'static str) -> Result<u16, Violation> {
    match r.u16()? {
        0 => Err(Violation::protocol(RULE_PROPERTY, detail)),
        v => Ok(v),
    }
}

impl PropertySet {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == EMPTY
    }

    /// Reads a Property Length and the properties behind it, allowing only `allowed`.
    pub(crate) fn decode(r: &mut Reader, allowed: Allowed) -> Result<PropertySet, Violation> {
        let len = r.varint()? as usize;
        if len > r.remaining() {
            return Err(Violation::malformed(
                RULE_PROPERTY,
                "Property Length exceeds the packet",
            ));
        }
        let mut r = Reader::new(r.take(len)?);
        let mut p = PropertySet::default();
        while !r.is_empty() {
            let id = r.varint()?;
            if !allowed.has(id) {
                return Err(Violation::malformed(
                    RULE_PROPERTY,
                    "property identifier unknown or not allowed in this packet",
                ));
            }
            match id {
                0x01 => {
                    let v = flag(&mut r, "Payload Format Indicator not 0 or 1")?;
                    once(&mut p.payload_format_indicator, v)?
                }
                0x02 => once(&mut p.message_expiry_interval, r.u32()?)?,
                0x03 => once(&mut p.content_type, r.string()?)?,
                0x08 => once(&mut p.response_topic, r.string()?)?,
                0x09 => once(&mut p.correlation_data, r.binary()?)?,
                0x0B => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(Violation::protocol(
                            RULE_PROPERTY,
                            "Subscription Identifier 0",
                        ));
                    }
                    // Only PUBLISH (server to client) may carry several.
                    if allowed != Allowed::PUBLISH && !p.subscription_identifiers.is_empty() {
                        return Err(duplicate());
                    }
                    p.subscription_identifiers.push(v);
                }
                0x11 => once(&mut p.session_expiry_interval, r.u32()?)?,
                0x12 => once(&mut p.assigned_client_identifier, r.string()?)?,
                0x13 => once(&mut p.server_keep_alive, r.u16()?)?,
                0x15 => once(&mut p.authentication_method, r.string()?)?,
                0x16 => once(&mut p.authentication_data, r.binary()?)?,
                0x17 => {
                    let v = flag(&mut r, "Request Problem Information not 0 or 1")?;
                    once(&mut p.request_problem_information, v)?
                }
                0x18 => once(&mut p.will_delay_interval, r.u32()?)?,
                0x19 => {
                    let v = flag(&mut r, "Request Response Information not 0 or 1")?;
                    once(&mut p.request_response_information, v)?
                }
                0x1A => once(&mut p.response_information, r.string()?)?,
                0x1C => once(&mut p.server_reference, r.string()?)?,
                0x1F => once(&mut p.reason_string, r.string()?)?,
                0x21 => {
                    let v = nonzero_u16(&mut r, "Receive Maximum 0")?;
                    once(&mut p.receive_maximum, v)?
                }
                0x22 => once(&mut p.topic_alias_maximum, r.u16()?)?,
                0x23 => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(Violation::new(
                            RULE_TOPIC_ALIAS_ZERO,
                            ReasonCode::TOPIC_ALIAS_INVALID,
                            "Topic Alias 0",
                        ));
                    }
                    once(&mut p.topic_alias, v)?
                }
                0x24 => {
                    let v = flag(&mut r, "Maximum QoS not 0 or 1")?;
                    once(&mut p.maximum_qos, v)?
                }
                0x25 => {
                    let v = flag(&mut r, "Retain Available not 0 or 1")?;
                    once(&mut p.retain_available, v)?
                }
                0x26 => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                0x27 => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(Violation::protocol(RULE_PROPERTY, "Maximum Packet Size 0"));
                    }
                    once(&mut p.maximum_packet_size, v)?
                }
                0x28 => {
                    let v = flag(&mut r, "Wildcard Subscription Available not 0 or 1")?;
                    once(&mut p.wildcard_subscription_available, v)?
                }
                0x29 => {
                    let v = flag(&mut r, "Subscription Identifier Available not 0 or 1")?;
                    once(&mut p.subscription_identifier_available, v)?
                }
                0x2A => {
                    let v = flag(&mut r, "Shared Subscription Available not 0 or 1")?;
                    once(&mut p.shared_subscription_available, v)?
                }
                _ => {
                    return Err(Violation::malformed(
                        RULE_PROPERTY,
                        "unknown property identifier",
                    ));
                }
            }
        }
        Ok(p)
    }

    /// This value's own per-delivery PUBLISH properties.
    pub(crate) fn per_delivery(&self) -> PerDelivery<'_> {
        PerDelivery {
            message_expiry_interval: self.message_expiry_interval,
            subscription_identifiers: &self.subscription_identifiers,
            topic_alias: self.topic_alias,
        }
    }

    /// Length of the properties themselves, without the Property Length prefix: the
    /// per-delivery ones from `pd`, the others from `shared` when they come encoded already
    /// (see [`Self::encode_shared_part`]), else from this set.
    fn content_len_with(&self, pd: PerDelivery<'_>, shared: Option<&[u8]>) -> usize {
        pd.content_len() + shared.map_or_else(|| self.shared_len(), <[u8]>::len)
    }

    /// Length of every property but the per-delivery ones (see [`PerDelivery`]).
    fn shared_len(&self) -> usize {
        let b = |o: &Option<u8>| o.map_or(0, |_| 2);
        let w = |o: &Option<u16>| o.map_or(0, |_| 3);
        let d = |o: &Option<u32>| o.map_or(0, |_| 5);
        let s = |o: &Option<String>| o.as_ref().map_or(0, |v| 1 + field_len(v.as_bytes()));
        let bin = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 1 + field_len(v));
        b(&self.payload_format_indicator)
            + s(&self.content_type)
            + s(&self.response_topic)
            + bin(&self.correlation_data)
            + d(&self.session_expiry_interval)
            + s(&self.assigned_client_identifier)
            + w(&self.server_keep_alive)
            + s(&self.authentication_method)
            + bin(&self.authentication_data)
            + b(&self.request_problem_information)
            + d(&self.will_delay_interval)
            + b(&self.request_response_information)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + w(&self.receive_maximum)
            + w(&self.topic_alias_maximum)
            + b(&self.maximum_qos)
            + b(&self.retain_available)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + field_len(k.as_bytes()) + field_len(v.as_bytes()))
                .sum::<usize>()
            + d(&self.maximum_packet_size)
            + b(&self.wildcard_subscription_available)
            + b(&self.subscription_identifier_available)
            + b(&self.shared_subscription_available)
    }

    /// Length on the wire including the Property Length prefix.
    pub(crate) fn wire_len(&self) -> usize {
        self.wire_len_with(self.per_delivery(), None)
    }

    /// [`Self::wire_len`] with the per-delivery properties taken from `pd` and the others,
    /// if given, already encoded in `shared`.
    pub(crate) fn wire_len_with(&self, pd: PerDelivery<'_>, shared: Option<&[u8]>) -> usize {
        let n = self.content_len_with(pd, shared);
        varint::len(n as u32) + n
    }

    /// Writes the Property Length and the properties: the per-delivery ones first, then the
    /// others in identifier order (the specification sets no order).
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        self.encode_with(self.per_delivery(), None, out);
    }

    /// [`Self::encode`] with the per-delivery properties taken from `pd` and the others, if
    /// given, copied from `shared` instead of encoded again.
    pub(crate) fn encode_with(
        &self,
        pd: PerDelivery<'_>,
        shared: Option<&[u8]>,
        out: &mut impl BufMut,
    ) {
        varint::encode(self.content_len_with(pd, shared) as u32, out);
        pd.encode(out);
        match shared {
            Some(bytes) => out.put_slice(bytes),
            None => self.encode_shared(out),
        }
    }

    /// The properties every delivery of a PUBLISH shares (all but Message Expiry Interval,
    /// Subscription Identifiers and Topic Alias), encoded once for [`crate::PublishRef`]'s
    /// `shared_properties`, so that a message fanned out to many v5 subscribers does not
    /// encode them again for each.
    pub fn encode_shared_part(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.shared_len());
        self.encode_shared(&mut out);
        out.into()
    }

    /// Writes every property but the per-delivery ones, in identifier order.
    fn encode_shared(&self, out: &mut impl BufMut) {
        b(out, 0x01, self.payload_format_indicator);
        f(out, 0x03, self.content_type.as_deref().map(str::as_bytes));
        f(out, 0x08, self.response_topic.as_deref().map(str::as_bytes));
        f(out, 0x09, self.correlation_data.as_deref());
        d(out, 0x11, self.session_expiry_interval);
        f(
            out,
            0x12,
            self.assigned_client_identifier
                .as_deref()
                .map(str::as_bytes),
        );
        w(out, 0x13, self.server_keep_alive);
        f(
            out,
            0x15,
            self.authentication_method.as_deref().map(str::as_bytes),
        );
        f(out, 0x16, self.authentication_data.as_deref());
        b(out, 0x17, self.request_problem_information);
        d(out, 0x18, self.will_delay_interval);
        b(out, 0x19, self.request_response_information);
        f(
            out,
            0x1A,
            self.response_information.as_deref().map(str::as_bytes),
        );
        f(
            out,
            0x1C,
            self.server_reference.as_deref().map(str::as_bytes),
        );
        f(out, 0x1F, self.reason_string.as_deref().map(str::as_bytes));
        w(out, 0x21, self.receive_maximum);
        w(out, 0x22, self.topic_alias_maximum);
        b(out, 0x24, self.maximum_qos);
        b(out, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            out.put_u8(0x26);
            put_field(out, k.as_bytes());
            put_field(out, v.as_bytes());
        }
        d(out, 0x27, self.maximum_packet_size);
        b(out, 0x28, self.wildcard_subscription_available);
        b(out, 0x29, self.subscription_identifier_available);
        b(out, 0x2A, self.shared_subscription_available);
    }
}

impl PerDelivery<'_> {
    /// Length of these properties on the wire.
    pub(crate) fn content_len(&self) -> usize {
        self.message_expiry_interval.map_or(0, |_| 5)
            + self
                .subscription_identifiers
                .iter()
                .map(|&v| 1 + varint::len(v))
                .sum::<usize>()
            + self.topic_alias.map_or(0, |_| 3)
    }

    /// Writes these properties.
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        d(out, 0x02, self.message_expiry_interval);
        for &v in self.subscription_identifiers {
            out.put_u8(0x0B);
            varint::encode(v, out);
        }
        w(out, 0x23, self.topic_alias);
    }
}

/// Writes a one-byte property if present.
fn b(out: &mut impl BufMut, id: u8, o: Option<u8>) {
    if let Some(v) = o {
        out.put_u8(id);
        out.put_u8(v);
    }
}

/// Writes a two-byte property if present.
fn w(out: &mut impl BufMut, id: u8, o: Option<u16>) {
    if let Some(v) = o {
        out.put_u8(id);
        out.put_u16(v);
    }
}

/// Writes a four-byte property if present.
fn d(out: &mut impl BufMut, id: u8, o: Option<u32>) {
    if let Some(v) = o {
        out.put_u8(id);
        out.put_u32(v);
    }
}

/// Writes a string or binary property if present.
fn f(out: &mut impl BufMut, id: u8, o: Option<&[u8]>) {
    if let Some(v) = o {
        out.put_u8(id);
        put_field(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], allowed: Allowed) -> Result<Properties, Violation> {
        Properties::decode(&mut Reader::new(Bytes::copy_from_slice(bytes)), allowed)
    }

    fn assert_violation(res: Result<Properties, Violation>, rule: &str, reason: ReasonCode) {
        let err = res.unwrap_err();
        assert_eq!((err.rule, err.reason), (rule, reason), "{err}");
    }

    #[test]
    fn empty_properties_box_nothing_and_read_as_empty() {
        let mut r = Reader::new(Bytes::from_static(&[0]));
        let p = Properties::decode(&mut r, Allowed::PUBLISH).unwrap();
        assert!(p.is_empty() && p.0.is_none() && r.is_empty());
        assert_eq!(p.content_type, None);
        assert_eq!(p, Properties::from(PropertySet::default()));
        let mut q = p.clone();
        assert!(q.get_mut().is_none(), "get_mut boxes nothing");
        q.content_type = Some("text/plain".into());
        assert!(!q.is_empty() && q.0.is_some());
        assert_ne!(p, q);
        assert_eq!(
            q.clone().into_set().content_type.as_deref(),
            Some("text/plain")
        );
        q.content_type = None;
        assert!(q.is_empty(), "a boxed set with nothing in it is empty");
        assert_eq!(p, q);
    }

    #[test]
    fn connack_properties_round_trip() {
        let p = PropertySet {
            session_expiry_interval: Some(10),
            assigned_client_identifier: Some("id".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
            response_information: Some("ri".into()),
            server_reference: Some("sr".into()),
            reason_string: Some("why".into()),
            receive_maximum: Some(5),
            topic_alias_maximum: Some(7),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
            maximum_packet_size: Some(1024),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..Default::default()
        };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out.len(), p.wire_len());
        assert_eq!(decode(&out, Allowed::CONNACK), Ok(p.into()));
    }

    #[test]
    fn unknown_property_is_malformed() {
        assert_violation(
            decode(&[2, 0x7F, 0], Allowed::CONNECT),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn property_not_allowed_in_packet_is_malformed() {
        // Topic Alias in CONNECT.
        assert_violation(
            decode(&[3, 0x23, 0, 1], Allowed::CONNECT),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    #[test]
    fn duplicate_single_valued_property_is_protocol_error() {
        assert_violation(
            decode(&[6, 0x21, 0, 1, 0x21, 0, 2], Allowed::CONNECT),
            RULE_PROPERTY,
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn user_properties_repeat_in_wire_order() {
        let bytes = [
            14, 0x26, 0, 1, b'k', 0, 1, b'1', 0x26, 0, 1, b'k', 0, 1, b'2',
        ];
        let p = decode(&bytes, Allowed::ACK).unwrap();
        assert_eq!(
            p.user_properties,
            vec![("k".into(), "1".into()), ("k".into(), "2".into())]
        );
    }

    #[test]
    fn out_of_range_values_are_protocol_errors() {
        for bytes in [
            &[3, 0x21, 0, 0][..],   // Receive Maximum 0
            &[5, 0x27, 0, 0, 0, 0], // Maximum Packet Size 0
            &[2, 0x17, 2],          // Request Problem Information 2
            &[2, 0x19, 2],          // Request Response Information 2
        ] {
            assert_violation(
                decode(bytes, Allowed::CONNECT),
                RULE_PROPERTY,
                ReasonCode::PROTOCOL_ERROR,
            );
        }
        assert_violation(
            decode(&[2, 0x01, 2], Allowed::PUBLISH),
            RULE_PROPERTY,
            ReasonCode::PROTOCOL_ERROR,
        );
        assert_violation(
            decode(&[2, 0x0B, 0], Allowed::SUBSCRIBE),
            RULE_PROPERTY,
            ReasonCode::PROTOCOL_ERROR,
        );
    }

    #[test]
    fn topic_alias_zero_is_topic_alias_invalid() {
        assert_violation(
            decode(&[3, 0x23, 0, 0], Allowed::PUBLISH),
            RULE_TOPIC_ALIAS_ZERO,
            ReasonCode::TOPIC_ALIAS_INVALID,
        );
    }

    #[test]
    fn second_subscription_identifier_in_subscribe_is_protocol_error() {
        assert_violation(
            decode(&[4, 0x0B, 1, 0x0B, 2], Allowed::SUBSCRIBE),
            RULE_PROPERTY,
            ReasonCode::PROTOCOL_ERROR,
        );
        let p = decode(&[4, 0x0B, 1, 0x0B, 2], Allowed::PUBLISH).unwrap();
        assert_eq!(p.subscription_identifiers, vec![1, 2]);
    }

    #[test]
    fn property_length_past_packet_is_malformed() {
        assert_violation(
            decode(&[9, 0x21, 0, 1], Allowed::CONNECT),
            RULE_PROPERTY,
            ReasonCode::MALFORMED_PACKET,
        );
        // A value running past the Property Length is malformed too.
        assert_violation(
            decode(&[2, 0x21, 0, 1], Allowed::CONNECT),
            crate::wire::RULE_LENGTH,
            ReasonCode::MALFORMED_PACKET,
        );
    }

    /// v5: [MQTT-1.5.7-1] [MQTT-3.3.2-13] [MQTT-3.3.2-19]
    #[test]
    fn ill_formed_utf8_in_string_properties_and_user_property_pairs_is_malformed() {
        let good: &[u8] = &[0, 1, b'k'];
        // A UTF-16 surrogate (U+D800 as ED A0 80) is not well-formed UTF-8; U+0000 is forbidden.
        for (bad, rule) in [
            (&[0, 3, 0xED, 0xA0, 0x80][..], crate::wire::RULE_UTF8),
            (&[0, 3, b'a', 0, b'b'][..], crate::wire::RULE_NUL),
        ] {
            let cases: [(&str, Vec<u8>); 4] = [
                ("Response Topic", [&[0x08][..], bad].concat()),
                ("Content Type", [&[0x03][..], bad].concat()),
                ("User Property name", [&[0x26][..], bad, good].concat()),
                ("User Property value", [&[0x26][..], good, bad].concat()),
            ];
            for (what, body) in cases {
                let bytes = [&[body.len() as u8][..], &body].concat();
                let err = decode(&bytes, Allowed::PUBLISH).unwrap_err();
                assert_eq!(
                    (err.rule, err.reason),
                    (rule, ReasonCode::MALFORMED_PACKET),
                    "{what}"
                );
            }
        }
    }
}
