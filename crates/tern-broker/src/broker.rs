//! The broker: the connection table, the session table, the subscription index and the retained
//! store, and the dispatch of each event to its handler (`connect.rs`, `publish_in.rs`,
//! `publish_out.rs`, `subscribe.rs`). It owns no socket: packets leave through each connection's
//! [`Outlet`].

use std::collections::{BTreeSet, HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_codec::{Disconnect, Packet, ProtocolVersion, ReasonCode, Violation};

use crate::BrokerConfig;
use crate::durable::{Held, Journal, PersistMode, send_after};
use crate::frame::Frame;
use crate::global::Global;
use crate::persist::StoreOp;
use crate::remote::{EarlyRetained, Outbox};
use crate::session::{Session, SessionId, SubEntry};
use crate::topic_index::TopicIndex;

/// The edge's handle on one transport connection: where the core puts packets and closes.
pub trait Outlet {
    /// Queue `frame` for sending on this connection, in order.
    fn send(&mut self, frame: Frame);
    /// Send everything queued so far, then close the transport. Nothing is sent after this.
    fn close(&mut self);
    /// True while the connection cannot keep up (too much waiting to be written): QoS 0
    /// messages for it are then dropped instead of piling up in memory.
    fn is_congested(&self) -> bool {
        false
    }
    /// The session of this connection has `pause_publishers_at` messages queued (`true`), or
    /// has drained to half of that (`false`); see [`Broker::take_backpressure`].
    fn set_backpressure(&mut self, _on: bool) {}
}

/// Identifies one transport connection for the lifetime of the broker (never 0, so an
/// `Option<ConnId>` takes no more room than an id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub NonZeroU64);

/// Counters for monitoring.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Connections currently open (CONNECT done or not).
    pub connections: usize,
    /// Clients connected: connections whose CONNECT was accepted.
    pub clients_connected: usize,
    /// Sessions held, connected or not.
    pub sessions: usize,
    /// Retained messages held.
    pub retained: usize,
    /// Subscriptions held (shared ones count once per member).
    pub subscriptions: usize,
    /// PUBLISH packets received from clients.
    pub publish_received: u64,
    /// PUBLISH packets sent to clients.
    pub publish_sent: u64,
    /// Messages dropped (queue limits, expiry, oversize for the client, QoS 0 while offline).
    pub dropped: u64,
}

impl Stats {
    /// Adds another shard's counters to these.
    pub fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.clients_connected += other.clients_connected;
        self.sessions += other.sessions;
        self.retained += other.retained;
        self.subscriptions += other.subscriptions;
        self.publish_received += other.publish_received;
        self.publish_sent += other.publish_sent;
        self.dropped += other.dropped;
    }
}

/// A deadline kind; entries may be stale and are checked against the owner when they fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Keep Alive ×1.5 of a connection [MQTT-3.1.2-24].
    KeepAlive(ConnId),
    /// A delayed will of a disconnected session.
    WillDelay(SessionId),
    /// The end of a disconnected session.
    SessionExpiry(SessionId),
}

/// Per-connection state: what lives exactly as long as the network connection.
pub(crate) struct Conn<O> {
    pub outlet: O,
    /// The session once CONNECT succeeded; `None` before, and after a takeover detached it.
    pub session: Option<SessionId>,
    /// Protocol level, known after CONNECT.
    pub version: ProtocolVersion,
    /// The Keep Alive in force, seconds (0: off); see [`Conn::silence_limit`].
    pub keep_alive: u16,
    /// Last time a packet arrived.
    pub last_seen: Instant,
    /// Receive Maximum of the client (outbound in-flight limit).
    pub client_receive_max: u16,
    /// Maximum Packet Size of the client.
    pub client_max_packet: u32,
    /// Topic Alias Maximum of the client (outbound aliases).
    pub client_alias_max: u16,
    /// Whether reason strings and user properties may be sent on acks (Request Problem Information).
    pub problem_info: bool,
    /// Topic aliases in both directions, once there is one: most connections never use them,
    /// and an idle connection should not pay for two empty maps.
    pub aliases: Option<Box<TopicAliases>>,
    /// Packets waiting for a store batch to be durable, in sending order (see `durable.rs`).
    pub held: VecDeque<Held>,
    /// The outlet was told its session's queue is backed up (`Outlet::set_backpressure`).
    pub backpressure: bool,
}

impl<O> Conn<O> {
    /// How long the client may stay silent: 1.5 × its Keep Alive, or `None` when it is off.
    pub fn silence_limit(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }
}

/// A connection's topic aliases (MQTT 5).
#[derive(Debug, Default)]
pub(crate) struct TopicAliases {
    /// Inbound: alias → topic.
    pub inbound: FxHashMap<u16, String>,
    /// Outbound: topic → alias.
    pub outbound: HashMap<String, u16>,
}

/// The backed-up connection delivering last found, and whether it dropped a message for it.
#[derive(Debug, Default)]
pub(crate) struct BackedUp {
    /// The connection whose queue or outlet is backed up.
    pub conn: Option<ConnId>,
    /// A message was dropped for it.
    pub dropped: bool,
}

impl BackedUp {
    /// Notes `conn` as backed up; `dropped` if a message for it was just dropped.
    pub(crate) fn note(&mut self, conn: ConnId, dropped: bool) {
        self.conn = Some(conn);
        self.dropped |= dropped;
    }
}

/// How a connection ends, decided where the cause is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloseHow {
    /// Send a v5 DISCONNECT with this reason first.
    pub disconnect: Option<ReasonCode>,
    /// Publish (or schedule) the will.
    pub will: bool,
    /// For the log line.
    pub why: &'static str,
}

/// The broker core; see the crate doc for the calling protocol.
pub struct Broker<O: Outlet> {
    pub(crate) config: Arc<BrokerConfig>,
    pub(crate) conns: FxHashMap<ConnId, Box<Conn<O>>>,
    pub(crate) sessions: FxHashMap<SessionId, Box<Session>>,
    pub(crate) by_client_id: HashMap<Arc<str>, SessionId>,
    /// Non-shared subscriptions.
    pub(crate) index: TopicIndex<SessionId, SubEntry>,
    pub(crate) timers: BTreeSet<(Instant, Timer)>,
    pub(crate) stats: Stats,
    /// Store operations waiting to be handed to the edge.
    pub(crate) journal: Journal,
    /// Connections with held packets.
    pub(crate) holding: Vec<ConnId>,
    /// What delivering found backed up since [`Broker::take_backpressure`] last took it.
    pub(crate) backpressure: BackedUp,
    /// The matches of the message being routed, kept for their capacity (cleared after use).
    pub(crate) route_hits: Vec<crate::publish_in::RouteHit>,
    /// What this shard's calls left for the other shards (see `remote.rs`).
    pub(crate) outbox: Outbox,
    /// Retained messages that new subscriptions matched while the messages were still on
    /// their way to this shard (see `remote.rs`); almost always empty.
    pub(crate) early_retained: Vec<EarlyRetained>,
    /// What this broker shares with the other shards of the same broker, if any; the retained
    /// messages are there.
    pub(crate) global: Arc<Global>,
    /// This shard changed a retained message since [`Broker::poll_persist`] last looked.
    pub(crate) retained_changed: bool,
    /// This shard's number, carried in the low bits of its session ids.
    shard: u8,
}

impl<O: Outlet> Broker<O> {
    /// A broker with `config`, holding no sessions.
    pub fn new(config: BrokerConfig) -> Self {
        Self::with_global(config, Arc::new(Global::new()), 0)
    }

    /// Shard number `shard` of a broker whose shards share `global`; holds no sessions.
    pub fn with_global(config: BrokerConfig, global: Arc<Global>, shard: u8) -> Self {
        assert!(
            usize::from(shard) < global.shards(),
            "shard {shard} of {}",
            global.shards()
        );
        let journal = Journal::new(PersistMode::Off, global.tickets());
        Broker {
            config: Arc::new(config),
            conns: FxHashMap::default(),
            sessions: FxHashMap::default(),
            by_client_id: HashMap::new(),
            index: TopicIndex::new(),
            timers: BTreeSet::new(),
            stats: Stats::default(),
            journal,
            holding: Vec::new(),
            backpressure: BackedUp::default(),
            route_hits: Vec::new(),
            outbox: Outbox::default(),
            early_retained: Vec::new(),
            global,
            retained_changed: false,
            shard,
        }
    }

    /// The configuration this broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A transport connection was accepted; its first packet must be CONNECT.
    pub fn open(&mut self, now: Instant, outlet: O) -> ConnId {
        let id = self.global.conn_id();
        self.conns.insert(
            id,
            Box::new(Conn {
                outlet,
                session: None,
                version: ProtocolVersion::V3_1_1,
                keep_alive: 0,
                last_seen: now,
                client_receive_max: u16::MAX,
                client_max_packet: u32::MAX,
                client_alias_max: 0,
                problem_info: true,
                aliases: None,
                held: VecDeque::new(),
                backpressure: false,
            }),
        );
        id
    }

    /// A packet decoded from `conn`.
    ///
    /// A PUBLISH payload is kept as it is given, for as long as the message is retained or
    /// queued: a transport that decodes payloads as slices of its read buffer should detach
    /// them first ([`tern_codec::Publish::detach`]), or each message pins the whole buffer.
    /// Doing it before this call keeps the copy out of whatever lock guards the broker.
    pub fn handle_packet(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_seen = now;
        let Some(sid) = c.session else {
            match packet {
                Packet::Connect(connect) => self.handle_connect(now, conn, *connect),
                // [MQTT-3.1.0-1] The first packet must be CONNECT; close without a reply.
                _ => self.close_conn(
                    now,
                    conn,
                    CloseHow {
                        disconnect: None,
                        will: false,
                        why: "first packet was not CONNECT",
                    },
                ),
            }
            return;
        };
        match packet {
            Packet::Publish(p) => self.handle_publish(now, conn, sid, p),
            Packet::PubAck(a) => self.handle_puback(now, conn, sid, a),
            Packet::PubRec(a) => self.handle_pubrec(now, conn, sid, a),
            Packet::PubRel(a) => self.handle_pubrel(now, conn, sid, a),
            Packet::PubComp(a) => self.handle_pubcomp(now, conn, sid, a),
            Packet::Subscribe(s) => self.handle_subscribe(now, conn, sid, s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(now, conn, sid, u),
            Packet::PingReq => self.send(conn, Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(now, conn, sid, d),
            // [MQTT-3.1.0-2] A second CONNECT is a protocol violation.
            Packet::Connect(_) => self.violation(
                now,
                conn,
                Violation::protocol("MQTT-3.1.0-2", "second CONNECT on one connection"),
            ),
            // [MQTT-4.12.0-1] No authentication method was agreed, so AUTH is a protocol error.
            Packet::Auth(_) => self.violation(
                now,
                conn,
                Violation::protocol(
                    "MQTT-4.12.0-1",
                    "AUTH without an authentication method in CONNECT",
                ),
            ),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => self
                .violation(
                    now,
                    conn,
                    Violation::protocol("MQTT-4.8.0-1", "server-to-client packet sent by a client"),
                ),
        }
    }

    /// Decoding bytes from `conn` failed; `protocol` is the level the edge decodes with, if known.
    /// The core sends the right CONNACK or DISCONNECT, publishes the will, and closes.
    pub fn handle_violation(
        &mut self,
        now: Instant,
        conn: ConnId,
        violation: Violation,
        protocol: Option<ProtocolVersion>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.session.is_some() {
            self.violation(now, conn, violation);
            return;
        }
        tracing::info!(conn = conn.0, %violation, "refused CONNECT");
        // A CONNECT we could not parse: an unsupported level gets CONNACK 0x84 (0x01 in v3
        // form, [MQTT-3.1.2-2]); a v5 client gets the precise reason [MQTT-4.13.1-1]; a v3 one
        // is just closed, as 3.1.1 has no code for malformed packets.
        let reply = if violation.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
            c.version = protocol.unwrap_or(ProtocolVersion::V3_1_1);
            Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
        } else if protocol == Some(ProtocolVersion::V5) {
            c.version = ProtocolVersion::V5;
            Some(violation.reason)
        } else {
            None
        };
        match reply {
            Some(reason) => self.refuse(now, conn, reason, violation.detail),
            None => {
                let how = CloseHow {
                    disconnect: None,
                    will: false,
                    why: violation.detail,
                };
                self.close_conn(now, conn, how);
            }
        }
    }

    /// The transport of `conn` ended (peer closed, IO error, or after an `Outlet::close`).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.close_conn(
                now,
                conn,
                CloseHow {
                    disconnect: None,
                    will: true,
                    why: "connection lost",
                },
            );
        }
    }

    /// Fire every deadline at or before `now`: keepalive, will delay, session expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::KeepAlive(conn) => self.keepalive_fired(now, conn),
                Timer::WillDelay(sid) => {
                    let due = self
                        .sessions
                        .get(&sid)
                        .is_some_and(|s| s.will_at == Some(at));
                    if due {
                        self.publish_will(now, sid);
                    }
                }
                Timer::SessionExpiry(sid) => {
                    let due = self
                        .sessions
                        .get(&sid)
                        .is_some_and(|s| s.conn.is_none() && s.expires_at == Some(at));
                    if due {
                        tracing::info!(client_id = %self.sessions[&sid].client_id, "session expired");
                        self.end_session(now, sid);
                    }
                }
            }
        }
    }

    /// The connection whose session queue was past `pause_publishers_at` when a message was
    /// last queued for it (or whose outlet was congested when a QoS 0 message for it was
    /// dropped) since the previous call, if any, and forgets it. Never set when
    /// `pause_publishers_at` is 0. An edge takes it
    /// before and after handing over a client's packets: if the packets fed a backed-up queue,
    /// it may stop reading that client until the queue's outlet hears
    /// [`Outlet::set_backpressure`]`(false)`, so fast publishers slow down to what a slow
    /// subscriber takes instead of overflowing its queue.
    pub fn take_backpressure(&mut self) -> Option<ConnId> {
        self.backpressure.dropped = false;
        self.backpressure.conn.take()
    }

    /// True when, since [`Broker::take_backpressure`] was last called, a message was dropped
    /// for a backed-up connection (its queue full, or its outlet congested at QoS 0). An edge
    /// handing over a batch of one client's packets stops at once then, not at the end of the
    /// batch: the rest would only be dropped too.
    pub fn dropped_for_backpressure(&self) -> bool {
        self.backpressure.dropped
    }

    /// Messages sent or dropped for subscribers so far: the routing work done, for an edge that
    /// bounds how long one batch of packets holds the core.
    pub fn deliveries(&self) -> u64 {
        self.stats.publish_sent + self.stats.dropped
    }

    /// The outlet of connection `id`, if it is open.
    pub fn outlet(&self, id: ConnId) -> Option<&O> {
        self.conns.get(&id).map(|c| &c.outlet)
    }

    /// Every open connection's outlet, for an edge that must reach them all (to abandon them
    /// at shutdown, say).
    pub fn outlets(&self) -> impl Iterator<Item = &O> {
        self.conns.values().map(|c| &c.outlet)
    }

    /// The earliest pending deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Server shutdown: v5 clients get DISCONNECT 0x8B, every connection is closed. Sessions are
    /// kept and wills are not published: the clients are not at fault.
    pub fn shutdown(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            self.close_conn(
                now,
                conn,
                CloseHow {
                    disconnect: Some(ReasonCode::SERVER_SHUTTING_DOWN),
                    will: false,
                    why: "server shutting down",
                },
            );
        }
    }

    /// Current counters. With several shards each reports its own part, and shard 0 also the
    /// parts they share (retained messages, shared subscriptions): the broker's figures are the
    /// sum over the shards ([`Stats::add`]).
    pub fn stats(&self) -> Stats {
        let (mut retained, mut shared_members) = (0, 0);
        if self.shard() == 0 {
            // One of the shared locks at a time.
            retained = self.global.retained().tree.len();
            if let Some(shared) = self.global.shared() {
                shared_members = shared.groups.values().map(|g| g.members.len()).sum();
            }
        }
        Stats {
            connections: self.conns.len(),
            clients_connected: self.conns.values().filter(|c| c.session.is_some()).count(),
            sessions: self.sessions.len(),
            retained,
            subscriptions: self.index.len() + shared_members,
            ..self.stats.clone()
        }
    }

    fn keepalive_fired(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(ka) = c.silence_limit() else { return };
        let due = c.last_seen + ka;
        if now >= due {
            // [MQTT-3.1.2-24] Silence for 1.5 × Keep Alive: disconnect as a network failure.
            self.close_conn(
                now,
                conn,
                CloseHow {
                    disconnect: Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
                    will: true,
                    why: "keep alive timeout",
                },
            );
        } else {
            self.timers.insert((due, Timer::KeepAlive(conn)));
        }
    }

    /// A violation by an established connection: DISCONNECT with its reason (v5), will, close.
    pub(crate) fn violation(&mut self, now: Instant, conn: ConnId, v: Violation) {
        tracing::info!(conn = conn.0, %v, "protocol violation");
        self.close_conn(
            now,
            conn,
            CloseHow {
                disconnect: Some(v.reason),
                will: true,
                why: v.detail,
            },
        );
    }

    /// Sends `frame` on `conn` if it is open, honouring the client's Maximum Packet Size for
    /// non-PUBLISH packets by dropping optional properties [MQTT-3.1.2-25].
    pub(crate) fn send(&mut self, conn: ConnId, frame: impl Into<Frame>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            send_on(c, frame.into());
        }
    }

    /// Ends a connection: optional v5 DISCONNECT, close, detach the session (will, expiry).
    pub(crate) fn close_conn(&mut self, now: Instant, conn: ConnId, how: CloseHow) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        // Held packets promise what is not yet durable: they are never sent. The client
        // resends its unacknowledged messages, and ours stay in the session.
        c.held.clear();
        if let Some(reason) = how.disconnect
            && c.version.is_v5()
            && c.session.is_some()
        {
            let mut d = Disconnect::new(reason);
            if c.problem_info && reason.is_error() {
                d.properties.reason_string = Some(how.why.to_string());
            }
            send_on(&mut c, Packet::Disconnect(d).into());
        }
        c.outlet.close();
        let Some(sid) = c.session else { return };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        tracing::info!(client_id = %s.client_id, reason = how.why, "client disconnected");
        self.global.link(s, None);
        if !how.will {
            s.will = None;
        }
        self.detached(now, sid);
    }

    /// A session just lost its connection: schedule its will and its end.
    pub(crate) fn detached(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let expiry = s.expiry_interval;
        if expiry != u32::MAX {
            let at = now + Duration::from_secs(expiry.into());
            s.expires_at = Some(at);
            if expiry > 0 {
                self.timers.insert((at, Timer::SessionExpiry(sid)));
            }
        }
        if let Some(w) = &s.will {
            // The will waits for its delay or the end of the session, whichever comes first.
            let delay = w.delay.min(expiry);
            if delay == 0 {
                self.publish_will(now, sid);
            } else {
                let at = now + Duration::from_secs(delay.into());
                s.will_at = Some(at);
                self.timers.insert((at, Timer::WillDelay(sid)));
            }
        }
        self.redispatch_shared(now, sid);
        if expiry == 0 {
            self.end_session(now, sid);
        } else {
            self.persist_session(sid);
        }
    }

    /// Ends a session: publishes a pending will, drops its subscriptions, hands its shared
    /// messages to other members, forgets it.
    pub(crate) fn end_session(&mut self, now: Instant, sid: SessionId) {
        if self.sessions.get(&sid).is_some_and(|s| s.will.is_some()) {
            self.publish_will(now, sid);
        }
        let Some(mut s) = self.sessions.remove(&sid) else {
            return;
        };
        for (filter, _) in s.subscriptions.drain() {
            self.remove_subscription(sid, &filter);
        }
        if self.by_client_id.get(&s.client_id) == Some(&sid) {
            self.by_client_id.remove(&s.client_id);
        }
        if s.stored {
            self.journal
                .push(StoreOp::DeleteSession(s.client_id.clone()));
        }
        // [MQTT-4.8.2-5] QoS 2 shared messages already sent die with the session; the others
        // go to another member.
        let pending: Vec<_> = s
            .inflight
            .drain(..)
            .map(|f| f.delivery)
            .filter(|d| d.qos != tern_codec::QoS::ExactlyOnce)
            .chain(s.queue.drain(..))
            .filter(|d| d.group.is_some())
            .collect();
        for d in pending {
            self.redeliver_shared(now, d, Some(sid));
        }
    }

    /// A fresh session id, owned by this shard.
    pub(crate) fn new_session_id(&mut self) -> SessionId {
        self.global.session_id(self.shard)
    }

    /// A client identifier for a client that sent none [MQTT-3.1.3-6], one whose sessions
    /// belong to this shard.
    pub(crate) fn assign_client_id(&mut self) -> String {
        loop {
            let id = self.global.client_id();
            if self.global.shard_of(&id) == self.shard()
                && !self.by_client_id.contains_key(id.as_str())
            {
                return id;
            }
        }
    }

    /// This shard's number.
    pub fn shard(&self) -> usize {
        usize::from(self.shard)
    }

    /// What this shard shares with the other shards of its broker.
    pub fn global(&self) -> &Arc<Global> {
        &self.global
    }

    /// How many shards the broker has.
    pub fn shards(&self) -> usize {
        self.global.shards()
    }
}

/// Sends on one connection, fitting non-PUBLISH packets into the client's maximum size.
pub(crate) fn send_on<O: Outlet>(c: &mut Conn<O>, mut frame: Frame) {
    let too_big = |f: &Frame| {
        c.version.is_v5()
            && c.client_max_packet != u32::MAX
            && f.encoded_len(c.version) > c.client_max_packet as usize
    };
    if too_big(&frame) {
        // [MQTT-3.1.2-25] Reason String and User Properties may be dropped to fit.
        if let Frame::Packet(packet) = &mut frame {
            strip_optional_properties(packet);
        }
        if too_big(&frame) {
            return;
        }
    }
    // Never starts holding (no wait of its own), but queues behind held packets.
    send_after(c, frame, None);
}

/// Drops what [MQTT-3.1.2-25] allows to drop from a packet to fit the client's maximum size.
fn strip_optional_properties(packet: &mut Packet) {
    match packet {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            a.properties = Default::default()
        }
        Packet::SubAck(a) => a.properties = Default::default(),
        Packet::UnsubAck(a) => a.properties = Default::default(),
        Packet::Disconnect(d) => d.properties = Default::default(),
        Packet::ConnAck(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        _ => {}
    }
}
