//! The bench payload: publisher id, sequence number and send time, padded to the chosen size.
//!
//! Layout (big-endian): `u32` publisher id, `u64` sequence number, `u64` send time in nanoseconds
//! since [`epoch`], then zero bytes up to the payload size.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes taken by the header; the smallest payload the bench sends.
pub const HEADER_LEN: usize = 4 + 8 + 8;

/// The process-wide start instant that send and receive times are measured from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `ns` nanoseconds after [`epoch`].
pub fn instant_at(ns: u64) -> Instant {
    epoch() + Duration::from_nanos(ns)
}

/// What a bench payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The publisher's index.
    pub publisher: u32,
    /// The publisher's sequence number, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since [`epoch`].
    pub sent_ns: u64,
}

impl Header {
    /// The payload for this header, zero-padded to `size` bytes (at least [`HEADER_LEN`]).
    pub fn encode(&self, size: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size.max(HEADER_LEN));
        out.put_u32(self.publisher);
        out.put_u64(self.seq);
        out.put_u64(self.sent_ns);
        out.resize(size.max(HEADER_LEN), 0);
        out.freeze()
    }

    /// The header at the start of `payload`, or `None` if it is too short to be a bench payload.
    pub fn decode(payload: &[u8]) -> Option<Header> {
        let publisher = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
        let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
        let sent_ns = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
        Some(Header {
            publisher,
            seq,
            sent_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let h = Header {
            publisher: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let bytes = h.encode(64);
        assert_eq!(bytes.len(), 64);
        assert_eq!(Header::decode(&bytes), Some(h));
        assert_eq!(h.encode(1).len(), HEADER_LEN);
        assert_eq!(Header::decode(&bytes[..HEADER_LEN - 1]), None);
    }
}
