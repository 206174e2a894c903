//! A tiny builder for MQTT packets as raw bytes, so tests spell out the wire form themselves
//! instead of trusting the codec under test to produce it.

#![allow(dead_code)] // Each test file uses a different subset.

use tern_codec::ProtocolVersion;

/// A Variable Byte Integer, minimally encoded.
pub fn varint(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            out.push(byte | 0x80);
        } else {
            out.push(byte);
            return out;
        }
    }
}

/// A big-endian Two Byte Integer.
pub fn u16be(n: u16) -> [u8; 2] {
    n.to_be_bytes()
}

/// A length-prefixed string or binary field (no validation: tests put bad bytes in on purpose).
pub fn string(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("field fits in 65,535 bytes");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A whole packet: `first` byte (type and flags), the Remaining Length of `parts`, then `parts`.
pub fn packet(first: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let mut out = vec![first];
    out.extend(varint(u32::try_from(body.len()).expect("body length fits")));
    out.extend(body);
    out
}

/// Connect flags: Clean Session / Clean Start.
pub const CLEAN: u8 = 0x02;

/// A CONNECT for `version` with `flags`, `keep_alive` seconds, v5 `properties` (ignored below
/// v5) and `client_id`; anything after the client id (will, user name, ...) goes in `tail`.
pub fn connect_with(
    version: ProtocolVersion,
    flags: u8,
    keep_alive: u16,
    properties: &[u8],
    client_id: &str,
    tail: &[u8],
) -> Vec<u8> {
    let (name, level): (&[u8], u8) = match version {
        ProtocolVersion::V3_1 => (b"MQIsdp", 3),
        ProtocolVersion::V3_1_1 => (b"MQTT", 4),
        ProtocolVersion::V5 => (b"MQTT", 5),
    };
    let props = if version.is_v5() {
        [varint(properties.len() as u32), properties.to_vec()].concat()
    } else {
        Vec::new()
    };
    packet(
        0x10,
        &[
            &string(name),
            &[level, flags],
            &u16be(keep_alive),
            &props,
            &string(client_id.as_bytes()),
            tail,
        ],
    )
}

/// A clean-session CONNECT for `version` with keep alive 60 and no properties.
pub fn connect(version: ProtocolVersion, client_id: &str) -> Vec<u8> {
    connect_with(version, CLEAN, 60, &[], client_id, &[])
}

/// An empty property block for v5 (Property Length 0), nothing before v5.
pub fn no_props(version: ProtocolVersion) -> &'static [u8] {
    if version.is_v5() { &[0x00] } else { &[] }
}

/// SUBSCRIBE (flags 0010) to `filter` at `qos` with packet id `id`.
pub fn subscribe(version: ProtocolVersion, id: u16, filter: &str, qos: u8) -> Vec<u8> {
    packet(
        0x82,
        &[
            &u16be(id),
            no_props(version),
            &string(filter.as_bytes()),
            &[qos],
        ],
    )
}

/// A QoS 0 PUBLISH of `payload` to `topic`.
pub fn publish_qos0(version: ProtocolVersion, topic: &str, payload: &[u8]) -> Vec<u8> {
    packet(
        0x30,
        &[&string(topic.as_bytes()), no_props(version), payload],
    )
}

/// PINGREQ.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// A bare TCP client for byte-exact checks of what the broker writes.
pub struct Wire {
    stream: tokio::net::TcpStream,
}

/// How long a [`Wire`] waits for the broker.
pub const WIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Wire {
    /// Connect to `addr` (no MQTT CONNECT is sent).
    pub async fn open(addr: std::net::SocketAddr) -> Wire {
        let stream = tokio::time::timeout(WIRE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect within the timeout")
            .expect("connect to the broker");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Wire { stream }
    }

    /// Send `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(bytes)
            .await
            .expect("send to the broker");
    }

    /// Exactly the next `n` bytes from the broker.
    pub async fn read(&mut self, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; n];
        tokio::time::timeout(WIRE_TIMEOUT, self.stream.read_exact(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{n} bytes within {WIRE_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{n} bytes before the connection ended: {e}"));
        buf
    }

    /// Succeeds once the broker closes the connection without sending anything more.
    pub async fn expect_eof(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(WIRE_TIMEOUT, self.stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {WIRE_TIMEOUT:?}"),
            Ok(Ok(0)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(Ok(n)) => panic!("expected the connection closed, got {:02X?}", &buf[..n]),
            Ok(Err(e)) => panic!("read failed: {e}"),
        }
    }
}
