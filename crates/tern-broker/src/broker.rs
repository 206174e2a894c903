//! The broker: connection table, session table and the dispatch of each event.
use std::time::Instant;
use tern_codec::{Packet, Violation, ProtocolVersion};
use crate::BrokerConfig;

/// The edge's handle on one transport connection: where the core puts packets and closes.
pub trait Outlet {
    /// Queue `packet` for sending on this connection, in order.
    fn send(&mut self, packet: Packet);
    /// Send everything queued so far, then close the transport. Nothing is sent after this.
    fn close(&mut self);
}

/// Identifies one transport connection for the lifetime of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Counters for monitoring.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Connections currently open (CONNECT done or not).
    pub connections: usize,
    /// Sessions held, connected or not.
    pub sessions: usize,
    /// Retained messages held.
    pub retained: usize,
    /// PUBLISH packets received from clients.
    pub publish_received: u64,
    /// PUBLISH packets sent to clients.
    pub publish_sent: u64,
    /// Messages dropped (queue limits, expiry, oversize).
    pub dropped: u64,
}

/// The broker core; see the crate doc for the calling protocol.
pub struct Broker<O: Outlet> {
    _o: std::marker::PhantomData<O>,
}

impl<O: Outlet> Broker<O> {
    /// A broker with `config`, holding no sessions.
    pub fn new(config: BrokerConfig) -> Self { let _ = config; todo!() }
    /// A transport connection was accepted; its first packet must be CONNECT.
    pub fn open(&mut self, now: Instant, outlet: O) -> ConnId { let _ = (now, outlet); todo!() }
    /// A packet decoded from `conn`.
    pub fn handle_packet(&mut self, now: Instant, conn: ConnId, packet: Packet) { let _ = (now, conn, packet); todo!() }
    /// Decoding bytes from `conn` failed; `protocol` is the level the edge decodes with, if known.
    /// The core sends the right CONNACK or DISCONNECT, publishes the will, and closes.
    pub fn handle_violation(&mut self, now: Instant, conn: ConnId, violation: Violation, protocol: Option<ProtocolVersion>) { let _ = (now, conn, violation, protocol); todo!() }
    /// The transport of `conn` ended (peer closed, IO error, or after an `Outlet::close`).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) { let _ = (now, conn); todo!() }
    /// Fire every deadline at or before `now`: keepalive, will delay, session and message expiry.
    pub fn handle_timeout(&mut self, now: Instant) { let _ = now; todo!() }
    /// The earliest pending deadline.
    pub fn poll_timeout(&self) -> Option<Instant> { todo!() }
    /// Server shutdown: v5 clients get DISCONNECT 0x8B, every connection is closed.
    pub fn shutdown(&mut self, now: Instant) { let _ = now; todo!() }
    /// Current counters.
    pub fn stats(&self) -> Stats { todo!() }
}
