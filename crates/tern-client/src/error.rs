//! The client's error type.

use tern_codec::{PacketType, ReasonCode, Violation};

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed (connect, read or write).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The broker did not answer in time.
    #[error("timed out waiting for the broker")]
    Timeout,
    /// The broker sent bytes that do not decode, or a packet that has no place here.
    #[error("protocol error from the broker: {0}")]
    Protocol(#[from] Violation),
    /// The broker sent a packet a client does not expect at this point.
    #[error("unexpected {0:?} from the broker")]
    Unexpected(PacketType),
    /// The broker refused the connection in its CONNACK.
    #[error("connection refused: {0}")]
    Refused(ReasonCode),
    /// The broker closed the connection with a DISCONNECT carrying this reason.
    #[error("disconnected by the broker: {0}")]
    Disconnected(ReasonCode),
    /// The broker rejected a publish (PUBACK or PUBREC reason code 0x80 or above).
    #[error("publish rejected: {0}")]
    PublishRejected(ReasonCode),
    /// The broker rejected a subscription (SUBACK reason code 0x80 or above).
    #[error("subscription rejected: {0}")]
    SubscribeRejected(ReasonCode),
    /// Every packet identifier is in use.
    #[error("no free packet identifier")]
    NoPacketId,
    /// The connection is closed; the request could not complete.
    #[error("connection closed")]
    Closed,
}
