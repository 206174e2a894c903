//! CONNECT: the first packet a client sends, and its Will.

use bytes::Bytes;

use crate::{Properties, ProtocolVersion, QoS};

/// A client's request to connect [MQTT-3.1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level from the variable header (name and level validated together).
    pub protocol: ProtocolVersion,
    /// Clean Session (v3) / Clean Start (v5).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (v5; empty otherwise).
    pub properties: Properties,
    /// Client Identifier, possibly empty.
    pub client_id: String,
    /// The Will, when the Will Flag is set.
    pub will: Option<LastWill>,
    /// User Name, when its flag is set.
    pub username: Option<String>,
    /// Password, when its flag is set.
    pub password: Option<Bytes>,
}

/// A Will Message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic (a valid topic name, no wildcards).
    pub topic: String,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (v5; empty otherwise).
    pub properties: Properties,
}
