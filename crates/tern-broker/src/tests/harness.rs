//! A deterministic broker with fake connections on a simulated clock: packets in, recorded
//! packets and closes out, time advanced by hand.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_codec::*;

use crate::{Broker, BrokerConfig, ConnId, Frame, Global, Outlet};

/// What the broker did to a connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Packet(Packet),
    Closed,
}

pub struct TestOutlet(Rc<RefCell<VecDeque<Out>>>);

impl Outlet for TestOutlet {
    fn send(&mut self, frame: Frame) {
        let packet = frame.to_packet();
        let mut log = self.0.borrow_mut();
        assert!(
            !log.contains(&Out::Closed),
            "packet sent after close: {packet:?}"
        );
        log.push_back(Out::Packet(packet));
    }
    fn close(&mut self) {
        self.0.borrow_mut().push_back(Out::Closed);
    }
}

pub struct Harness {
    pub broker: Broker<TestOutlet>,
    pub now: Instant,
}

pub struct Client {
    pub conn: ConnId,
    log: Rc<RefCell<VecDeque<Out>>>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(BrokerConfig::default())
    }

    pub fn with(config: BrokerConfig) -> Self {
        Harness {
            broker: Broker::new(config),
            now: Instant::now(),
        }
    }

    /// Shard `shard` of a broker whose shards share `global`.
    pub fn shard(global: &Arc<Global>, shard: u8) -> Self {
        Harness {
            broker: Broker::with_global(BrokerConfig::default(), global.clone(), shard),
            now: Instant::now(),
        }
    }

    /// Opens a connection without sending anything.
    pub fn open(&mut self) -> Client {
        let log = Rc::new(RefCell::new(VecDeque::new()));
        let conn = self.broker.open(self.now, TestOutlet(log.clone()));
        Client { conn, log }
    }

    /// Opens a connection and sends `connect`; returns the client and its CONNACK.
    pub fn connect(&mut self, connect: Connect) -> (Client, ConnAck) {
        let c = self.open();
        c.send(self, Packet::Connect(Box::new(connect)));
        match c.next() {
            Some(Out::Packet(Packet::ConnAck(ack))) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects a v5 client with a clean start and asserts success.
    pub fn v5(&mut self, id: &str) -> Client {
        let (c, ack) = self.connect(connect(ProtocolVersion::V5, id, true));
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        c
    }

    /// Connects a v3.1.1 client with a clean session and asserts success.
    pub fn v4(&mut self, id: &str) -> Client {
        let (c, ack) = self.connect(connect(ProtocolVersion::V3_1_1, id, true));
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        c
    }

    /// Moves the clock and fires due deadlines.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.broker.handle_timeout(self.now);
    }
}

impl Client {
    /// Opens a connection on `broker` without sending anything.
    pub fn open_on(broker: &mut Broker<TestOutlet>, now: Instant) -> Client {
        let log = Rc::new(RefCell::new(VecDeque::new()));
        let conn = broker.open(now, TestOutlet(log.clone()));
        Client { conn, log }
    }

    pub fn send(&self, h: &mut Harness, p: Packet) {
        h.broker.handle_packet(h.now, self.conn, p);
    }

    pub fn next(&self) -> Option<Out> {
        self.log.borrow_mut().pop_front()
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Vec<Out> {
        self.log.borrow_mut().drain(..).collect()
    }

    /// The packets recorded so far (panics on a close).
    pub fn packets(&self) -> Vec<Packet> {
        self.take()
            .into_iter()
            .map(|o| match o {
                Out::Packet(p) => p,
                Out::Closed => panic!("connection was closed"),
            })
            .collect()
    }

    /// The PUBLISH packets recorded so far, ignoring other packets.
    pub fn publishes(&self) -> Vec<Publish> {
        self.packets()
            .into_iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        self.log.borrow().contains(&Out::Closed)
    }

    /// The reason of the DISCONNECT sent before the close, if any.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        self.log.borrow().iter().find_map(|o| match o {
            Out::Packet(Packet::Disconnect(d)) => Some(d.reason),
            _ => None,
        })
    }

    pub fn subscribe(&self, h: &mut Harness, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_with(
            h,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        )
    }

    pub fn subscribe_with(
        &self,
        h: &mut Harness,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> SubAck {
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(sub_id);
        self.send(
            h,
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                properties,
                filters: vec![(filter.into(), options)],
            }),
        );
        match self.next() {
            Some(Out::Packet(Packet::SubAck(a))) => a,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish(&self, h: &mut Harness, p: Publish) {
        self.send(h, Packet::Publish(p));
    }
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub fn connect(protocol: ProtocolVersion, id: &str, clean_start: bool) -> Connect {
    Connect {
        clean_start,
        ..Connect::new(protocol, id)
    }
}

pub fn publish(topic: &str, payload: &'static str, qos: QoS, id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties: Properties::default(),
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

pub fn will(topic: &str, payload: &'static str) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    }
}
