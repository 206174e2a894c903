//! Shared wire primitives: a bounds-checked reader over one frame and the matching writers.
//!
//! Every read checks the bytes are there first; running past the end of the packet is a
//! malformed packet, never a panic.

use bytes::{Buf, BufMut, Bytes};

use crate::{PacketId, ProtocolVersion, ReasonCode, Violation, varint};

/// Rule reported when a length points past the end of the packet or bytes are left over
/// (the Remaining Length section; the specification gives it no numbered statement).
pub const RULE_LENGTH: &str = "MQTT-2.1.4";

/// Rule for ill-formed UTF-8 (including surrogates) in a UTF-8 Encoded String.
pub const RULE_UTF8: &str = "MQTT-1.5.4-1";

/// Rule for U+0000 in a UTF-8 Encoded String.
pub const RULE_NUL: &str = "MQTT-1.5.4-2";

/// The rule requiring a non-zero Packet Identifier, numbered per protocol version.
pub fn packet_id_rule(version: ProtocolVersion) -> &'static str {
    if version.is_v5() {
        "MQTT-2.2.1-3"
    } else {
        "MQTT-2.3.1-1"
    }
}

fn truncated() -> Violation {
    Violation::malformed(RULE_LENGTH, "field runs past the end of the packet")
}

/// A cursor over the bytes of one packet body.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    /// A reader over `buf`.
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next byte, without reading it.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Fails with a malformed packet if anything is left unread.
    pub(crate) fn finish(&self, detail: &'static str) -> Result<(), Violation> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Violation::malformed(RULE_LENGTH, detail))
        }
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, Violation> {
        if self.buf.is_empty() {
            return Err(truncated());
        }
        Ok(self.buf.get_u8())
    }

    /// A big-endian Two Byte Integer.
    pub(crate) fn u16(&mut self) -> Result<u16, Violation> {
        if self.buf.len() < 2 {
            return Err(truncated());
        }
        Ok(self.buf.get_u16())
    }

    /// A big-endian Four Byte Integer.
    pub(crate) fn u32(&mut self) -> Result<u32, Violation> {
        if self.buf.len() < 4 {
            return Err(truncated());
        }
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer.
    pub(crate) fn varint(&mut self) -> Result<u32, Violation> {
        match varint::decode(&self.buf)? {
            Some((value, used)) => {
                self.buf.advance(used);
                Ok(value)
            }
            None => Err(truncated()),
        }
    }

    /// The next `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, Violation> {
        if self.buf.len() < n {
            return Err(truncated());
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything left, as a zero-copy slice.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: a Two Byte length then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, Violation> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 Encoded String: well-formed UTF-8 without U+0000.
    pub(crate) fn string(&mut self) -> Result<String, Violation> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw)
            .map_err(|_| Violation::malformed(RULE_UTF8, "ill-formed UTF-8 string"))?;
        if s.contains('\0') {
            return Err(Violation::malformed(RULE_NUL, "U+0000 in a UTF-8 string"));
        }
        Ok(s.to_owned())
    }

    /// A non-zero Packet Identifier.
    pub(crate) fn packet_id(&mut self, version: ProtocolVersion) -> Result<PacketId, Violation> {
        PacketId::new(self.u16()?).ok_or(Violation::malformed(
            packet_id_rule(version),
            "Packet Identifier is zero",
        ))
    }

    /// A reason code byte.
    pub(crate) fn reason(&mut self) -> Result<ReasonCode, Violation> {
        Ok(ReasonCode(self.u8()?))
    }
}

/// Length on the wire of a string or binary field (clamped to 65,535 content bytes).
pub(crate) fn field_len(data: &[u8]) -> usize {
    2 + data.len().min(usize::from(u16::MAX))
}

/// Writes a length-prefixed string or binary field; content past 65,535 bytes is dropped.
pub(crate) fn put_field(out: &mut impl BufMut, data: &[u8]) {
    let n = data.len().min(usize::from(u16::MAX));
    out.put_u16(n as u16);
    out.put_slice(data.get(..n).unwrap_or(data));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(b: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(b))
    }

    #[test]
    fn truncated_string_is_malformed() {
        let err = reader(&[0, 5, b'a', b'b']).string().unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            (RULE_LENGTH, ReasonCode::MALFORMED_PACKET)
        );
        let err = reader(&[0]).string().unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            (RULE_LENGTH, ReasonCode::MALFORMED_PACKET)
        );
    }

    #[test]
    fn string_with_surrogate_is_malformed() {
        // U+D800 encoded as ED A0 80.
        let err = reader(&[0, 3, 0xED, 0xA0, 0x80]).string().unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            (RULE_UTF8, ReasonCode::MALFORMED_PACKET)
        );
    }

    #[test]
    fn string_with_overlong_encoding_is_malformed() {
        // '/' encoded overlong as C0 AF.
        let err = reader(&[0, 2, 0xC0, 0xAF]).string().unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            (RULE_UTF8, ReasonCode::MALFORMED_PACKET)
        );
    }

    #[test]
    fn string_with_nul_is_malformed() {
        let err = reader(&[0, 3, b'a', 0, b'b']).string().unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            (RULE_NUL, ReasonCode::MALFORMED_PACKET)
        );
    }

    #[test]
    fn string_keeps_byte_order_mark() {
        // [MQTT-1.5.4-3]: U+FEFF is not stripped.
        assert_eq!(
            reader(&[0, 4, 0xEF, 0xBB, 0xBF, b'a']).string().unwrap(),
            "\u{FEFF}a"
        );
    }

    #[test]
    fn zero_packet_id_is_malformed_with_version_rule() {
        let err = reader(&[0, 0]).packet_id(ProtocolVersion::V5).unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            ("MQTT-2.2.1-3", ReasonCode::MALFORMED_PACKET)
        );
        let err = reader(&[0, 0])
            .packet_id(ProtocolVersion::V3_1_1)
            .unwrap_err();
        assert_eq!(
            (err.rule, err.reason),
            ("MQTT-2.3.1-1", ReasonCode::MALFORMED_PACKET)
        );
    }
}
