//! SUBSCRIBE and its per-filter subscription options.

use crate::{PacketId, Properties, QoS};

/// A subscribe request [MQTT-3.8].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: PacketId,
    /// SUBSCRIBE properties (v5: Subscription Identifier, User Property).
    pub properties: Properties,
    /// Topic filters with their options; never empty on a valid packet [MQTT-3.8.3-3].
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// When retained messages are sent for a new subscription (v5 Retain Handling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send retained messages only if the subscription did not already exist.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

/// The options byte of one filter in SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants for this subscription.
    pub qos: QoS,
    /// v5 No Local: do not deliver the client's own publications.
    pub no_local: bool,
    /// v5 Retain As Published: keep the RETAIN flag on forwarded messages.
    pub retain_as_published: bool,
    /// v5 Retain Handling.
    pub retain_handling: RetainHandling,
}
