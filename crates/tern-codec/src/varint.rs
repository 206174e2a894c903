//! Variable Byte Integers [MQTT-1.5.5]: 1 to 4 bytes, 7 bits each, at most 268,435,455.

use bytes::BufMut;

use crate::Violation;

/// The largest value a Variable Byte Integer can carry.
pub const MAX: u32 = 268_435_455;

/// The rule broken by an over-long or non-minimal encoding.
pub const RULE: &str = "MQTT-1.5.5-1";

/// Number of bytes `encode` writes for `value` (values above [`MAX`] are clamped to it).
pub fn len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (clamped to [`MAX`]) as a Variable Byte Integer.
pub fn encode(value: u32, out: &mut impl BufMut) {
    let mut v = value.min(MAX);
    loop {
        let byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            out.put_u8(byte | 0x80);
        } else {
            out.put_u8(byte);
            return;
        }
    }
}

/// Reads a Variable Byte Integer from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` ends before the integer does, and `Ok(Some((value, bytes_used)))`
/// otherwise. More than four bytes, or a non-minimal encoding, is a malformed packet.
pub fn decode(buf: &[u8]) -> Result<Option<(u32, usize)>, Violation> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(Violation::malformed(
                    RULE,
                    "non-minimal Variable Byte Integer",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(Violation::malformed(
        RULE,
        "Variable Byte Integer longer than four bytes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_round_trip_with_their_length() {
        for v in [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX] {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(out.len(), len(v), "{v}");
            assert_eq!(decode(&out), Ok(Some((v, out.len()))), "{v}");
        }
    }

    #[test]
    fn incomplete_integer_asks_for_more() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0x80]), Ok(None));
        assert_eq!(decode(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn five_byte_integer_is_malformed() {
        let err = decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).unwrap_err();
        assert_eq!(err.rule, RULE);
        assert_eq!(err.reason, crate::ReasonCode::MALFORMED_PACKET);
    }

    #[test]
    fn non_minimal_integer_is_malformed() {
        for bad in [&[0x80, 0x00][..], &[0x81, 0x00], &[0xFF, 0x80, 0x00]] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.rule, RULE, "{bad:?}");
            assert_eq!(err.reason, crate::ReasonCode::MALFORMED_PACKET);
        }
    }
}
