//! The on-disk encoding of keys and values: compact, big-endian, each value led by a version
//! byte. Message bodies are MQTT 5 PUBLISH packets from the codec, so every property (user
//! properties in order) round-trips exactly as the broker forwards it.
//!
//! ```text
//! key  retained    topic (UTF-8)
//! key  sessions    client id (UTF-8)
//! key  deliveries  u16 len, client id, u64 seq        (one client's keys are one range, by seq)
//! key  inbound     u16 len, client id, u16 packet id  (one client's keys are one range)
//!
//! message     u8 VERSION, u8 flags (bit 0: has expiry), [u64 expiry ms], publish
//! publish     u32 len, a v5 PUBLISH packet (topic, payload, qos, retain, properties)
//! delivery    u8 VERSION, u8 qos, u8 retain, u8 state (0 queued, 1 puback, 2 pubrec,
//!             3 pubcomp), u16 packet id (0 when queued), u16 n, n × u32 sub id,
//!             message without its version byte
//! session     u8 VERSION, u8 protocol level, u32 expiry interval, time expires_at,
//!             time will_at, u32 n, n × subscription, u8 has will, [will]
//! time        u8 0 | u8 1, u64 ms since the Unix epoch
//! subscription u16 len, filter, u8 options (v5 byte), u8 has id, [u32 id]
//! will        u32 delay, u8 has Will Delay property, [u32], publish (without that property)
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use tern_broker::persist::{SessionRecord, StoredDelivery};
use tern_broker::session::{Message, OutState, SubEntry, Will};
use tern_codec::{
    LastWill, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, RetainHandling,
    SubscriptionOptions,
};

use crate::time::Anchor;

/// The version byte leading every value this build writes and the only one it reads.
pub(crate) const VERSION: u8 = 1;

/// The format string kept in the `meta` table under [`FORMAT_KEY`].
pub(crate) const FORMAT: &str = "tern-store 1";

/// The `meta` key of the format string.
pub(crate) const FORMAT_KEY: &[u8] = b"format";

/// Why a value does not decode.
pub(crate) type DecodeError = String;

// ---- keys ----------------------------------------------------------------------------------

/// The key prefix shared by every delivery and inbound key of `client_id`.
pub(crate) fn client_prefix(client_id: &str) -> Vec<u8> {
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(2 + client_id.len() + 8);
    k.put_u16(len);
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// The `deliveries` key of (client id, seq).
pub(crate) fn delivery_key(client_id: &str, seq: u64) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.put_u64(seq);
    k
}

/// The `inbound` key of (client id, packet id).
pub(crate) fn inbound_key(client_id: &str, packet_id: u16) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.put_u16(packet_id);
    k
}

/// Splits a `deliveries` or `inbound` key into its client id and the `tail` bytes after it.
pub(crate) fn split_client_key<const N: usize>(key: &[u8]) -> Result<(&str, [u8; N]), DecodeError> {
    let mut r = Reader::new(key);
    let len = usize::from(r.u16()?);
    let id = r.take(len)?;
    let id = std::str::from_utf8(id).map_err(|_| "client id is not UTF-8".to_string())?;
    let tail: [u8; N] = r
        .take(N)?
        .try_into()
        .map_err(|_| "key too short".to_string())?;
    r.end()?;
    Ok((id, tail))
}

/// Length limit of a client id in keys (its length is a u16).
pub(crate) fn client_id_fits(client_id: &str) -> bool {
    client_id.len() <= usize::from(u16::MAX)
}

// ---- values --------------------------------------------------------------------------------

/// Encodes a retained message.
pub(crate) fn encode_message(msg: &Message, anchor: &Anchor) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + msg.payload.len());
    out.put_u8(VERSION);
    put_message_body(&mut out, msg, anchor);
    out
}

/// Decodes a retained message.
pub(crate) fn decode_message(value: &[u8], anchor: &Anchor) -> Result<Message, DecodeError> {
    let mut r = Reader::new(value);
    r.version()?;
    let msg = read_message_body(&mut r, anchor)?;
    r.end()?;
    Ok(msg)
}

/// Encodes a delivery.
pub(crate) fn encode_delivery(d: &StoredDelivery, anchor: &Anchor) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + d.msg.payload.len());
    out.put_u8(VERSION);
    out.put_u8(d.qos as u8);
    out.put_u8(u8::from(d.retain));
    match d.inflight {
        None => {
            out.put_u8(0);
            out.put_u16(0);
        }
        Some((id, state)) => {
            out.put_u8(match state {
                OutState::AwaitPuback => 1,
                OutState::AwaitPubrec => 2,
                OutState::AwaitPubcomp => 3,
            });
            out.put_u16(id.get());
        }
    }
    // A PUBLISH carries at most 65535 identifiers in practice; more are not representable.
    let n = d.sub_ids.len().min(usize::from(u16::MAX));
    out.put_u16(n as u16);
    for id in &d.sub_ids[..n] {
        out.put_u32(*id);
    }
    put_message_body(&mut out, &d.msg, anchor);
    out
}

/// Decodes a delivery.
pub(crate) fn decode_delivery(
    value: &[u8],
    anchor: &Anchor,
) -> Result<StoredDelivery, DecodeError> {
    let mut r = Reader::new(value);
    r.version()?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let state = r.u8()?;
    let id = r.u16()?;
    let inflight = match state {
        0 => None,
        1..=3 => {
            let id = PacketId::new(id).ok_or("packet identifier 0 in flight".to_string())?;
            let state = match state {
                1 => OutState::AwaitPuback,
                2 => OutState::AwaitPubrec,
                _ => OutState::AwaitPubcomp,
            };
            Some((id, state))
        }
        s => return Err(format!("unknown delivery state {s}")),
    };
    let n = r.u16()?;
    let mut sub_ids = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        sub_ids.push(r.u32()?);
    }
    let msg = read_message_body(&mut r, anchor)?;
    r.end()?;
    Ok(StoredDelivery {
        msg: Arc::new(msg),
        qos,
        retain,
        sub_ids,
        inflight,
    })
}

/// Encodes a session record (the client id is the key and is not repeated).
pub(crate) fn encode_session(s: &SessionRecord, anchor: &Anchor) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.put_u8(VERSION);
    out.put_u8(s.version as u8);
    out.put_u32(s.expiry_interval);
    put_time(&mut out, s.expires_at, anchor);
    put_time(&mut out, s.will_at, anchor);
    out.put_u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for (filter, entry) in s.subscriptions.iter().take(u32::MAX as usize) {
        put_str16(&mut out, filter);
        out.put_u8(options_byte(entry.options));
        match entry.sub_id {
            None => out.put_u8(0),
            Some(id) => {
                out.put_u8(1);
                out.put_u32(id);
            }
        }
    }
    match &s.will {
        None => out.put_u8(0),
        Some(w) => {
            out.put_u8(1);
            out.put_u32(w.delay);
            let mut props = w.will.properties.clone();
            match props.will_delay_interval.take() {
                None => out.put_u8(0),
                Some(d) => {
                    out.put_u8(1);
                    out.put_u32(d);
                }
            }
            put_publish(
                &mut out,
                &w.will.topic,
                &w.will.payload,
                w.will.qos,
                w.will.retain,
                props,
            );
        }
    }
    out
}

/// Decodes the session record of `client_id`.
pub(crate) fn decode_session(
    client_id: &str,
    value: &[u8],
    anchor: &Anchor,
) -> Result<SessionRecord, DecodeError> {
    let mut r = Reader::new(value);
    r.version()?;
    let version = match r.u8()? {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        v => return Err(format!("unknown protocol level {v}")),
    };
    let expiry_interval = r.u32()?;
    let expires_at = r.time(anchor)?;
    let will_at = r.time(anchor)?;
    let n = r.u32()?;
    let mut subscriptions = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1024));
    for _ in 0..n {
        let filter = r.str16()?;
        let options = parse_options(r.u8()?)?;
        let sub_id = if r.bool()? { Some(r.u32()?) } else { None };
        subscriptions.push((filter, SubEntry { options, sub_id }));
    }
    let will = if r.bool()? {
        let delay = r.u32()?;
        let will_delay = if r.bool()? { Some(r.u32()?) } else { None };
        let mut p = read_publish(&mut r)?;
        p.properties.will_delay_interval = will_delay;
        Some(Will {
            will: LastWill {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: p.properties,
            },
            delay,
        })
    } else {
        None
    };
    r.end()?;
    Ok(SessionRecord {
        client_id: Arc::from(client_id),
        version,
        expiry_interval,
        expires_at,
        subscriptions,
        will,
        will_at,
    })
}

/// Decodes the `meta` format value.
pub(crate) fn decode_format(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

// ---- pieces --------------------------------------------------------------------------------

/// flags, expiry, publish.
fn put_message_body(out: &mut Vec<u8>, msg: &Message, anchor: &Anchor) {
    match msg.expires_at {
        None => out.put_u8(0),
        Some(t) => {
            out.put_u8(1);
            out.put_u64(anchor.to_wall_ms(t));
        }
    }
    put_publish(
        out,
        &msg.topic,
        &msg.payload,
        msg.qos,
        msg.retain,
        msg.properties.clone(),
    );
}

fn read_message_body(r: &mut Reader<'_>, anchor: &Anchor) -> Result<Message, DecodeError> {
    let flags = r.u8()?;
    if flags & !1 != 0 {
        return Err(format!("unknown message flags {flags:#04x}"));
    }
    let expires_at = if flags & 1 != 0 {
        Some(anchor.to_instant(r.u64()?))
    } else {
        None
    };
    let p = read_publish(r)?;
    Ok(Message {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        expires_at,
        publisher: None,
        shared_properties: Default::default(),
        pending_shards: Default::default(),
    })
}

/// u32 length, then a v5 PUBLISH packet.
fn put_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &bytes::Bytes,
    qos: QoS,
    retain: bool,
    properties: Properties,
) {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_owned(),
        packet_id: if qos == QoS::AtMostOnce {
            None
        } else {
            PacketId::new(1)
        },
        properties,
        payload: payload.clone(),
    });
    let mut buf = BytesMut::with_capacity(packet.encoded_len(ProtocolVersion::V5));
    packet.encode(ProtocolVersion::V5, &mut buf);
    out.put_u32(u32::try_from(buf.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&buf);
}

fn read_publish(r: &mut Reader<'_>) -> Result<Publish, DecodeError> {
    let len = r.u32()?;
    let bytes = r.take(usize::try_from(len).map_err(|_| "length overflow".to_string())?)?;
    let mut buf = BytesMut::from(bytes);
    match tern_codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Some(Packet::Publish(p))) if buf.is_empty() => Ok(p),
        Ok(Some(_)) => Err("stored packet is not a single PUBLISH".to_string()),
        Ok(None) => Err("stored PUBLISH is truncated".to_string()),
        Err(v) => Err(format!("stored PUBLISH does not decode: {v}")),
    }
}

fn put_time(out: &mut Vec<u8>, t: Option<Instant>, anchor: &Anchor) {
    match t {
        None => out.put_u8(0),
        Some(t) => {
            out.put_u8(1);
            out.put_u64(anchor.to_wall_ms(t));
        }
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Topic filters are MQTT strings: at most 65535 bytes.
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.put_u16(b.len() as u16);
    out.extend_from_slice(b);
}

/// The v5 SUBSCRIBE options byte.
fn options_byte(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn parse_options(b: u8) -> Result<SubscriptionOptions, DecodeError> {
    let bad = || format!("invalid subscription options byte {b:#04x}");
    if b & 0xC0 != 0 {
        return Err(bad());
    }
    let qos = QoS::from_u8(b & 0x03).ok_or_else(bad)?;
    let retain_handling = match (b >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(bad()),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: b & 0x04 != 0,
        retain_as_published: b & 0x08 != 0,
        retain_handling,
    })
}

/// Reads big-endian fields from a value, failing (never panicking) on short input.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err("value is truncated".to_string());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        b.try_into().map_err(|_| "value is truncated".to_string())
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("invalid flag byte {b}")),
        }
    }

    fn qos(&mut self) -> Result<QoS, DecodeError> {
        let b = self.u8()?;
        QoS::from_u8(b).ok_or_else(|| format!("invalid QoS {b}"))
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            VERSION => Ok(()),
            v => Err(format!(
                "value format version {v}, this build reads version {VERSION}"
            )),
        }
    }

    fn time(&mut self, anchor: &Anchor) -> Result<Option<Instant>, DecodeError> {
        Ok(if self.bool()? {
            Some(anchor.to_instant(self.u64()?))
        } else {
            None
        })
    }

    fn str16(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_byte_round_trips() {
        for b in 0u8..=255 {
            if let Ok(o) = parse_options(b) {
                assert_eq!(options_byte(o), b);
            }
        }
    }

    #[test]
    fn client_keys_are_ranges_ordered_by_seq() {
        let a1 = delivery_key("a", 1);
        let a256 = delivery_key("a", 256);
        let ab0 = delivery_key("ab", 0);
        assert!(a1 < a256);
        assert!(a1.starts_with(&client_prefix("a")));
        assert!(!ab0.starts_with(&client_prefix("a")));
        let (id, tail) = split_client_key::<8>(&a256).unwrap();
        assert_eq!((id, u64::from_be_bytes(tail)), ("a", 256));
        assert!(split_client_key::<8>(&a256[..5]).is_err());
        assert!(split_client_key::<2>(&a256).is_err());
    }

    #[test]
    fn any_bytes_fail_cleanly() {
        let anchor = Anchor::now();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400usize {
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            if let Some(b) = v.first_mut() {
                *b = VERSION;
            }
            let _ = decode_message(&v, &anchor);
            let _ = decode_delivery(&v, &anchor);
            let _ = decode_session("c", &v, &anchor);
        }
    }
}
