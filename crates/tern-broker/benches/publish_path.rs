//! Micro-benchmark of the broker's publish path: from one decoded PUBLISH handed to
//! [`Broker::handle_packet`] to the encoded frames of every delivery.
//!
//! Set-up: a [`Broker`] with default configuration, one v5 publisher and `n` subscribers
//! (`n` = 1 or 1000), alternately v5 and v3.1.1, each subscribed at QoS 1 with one of three
//! filters in turn (`site/17/dev/4711/temp`, `site/17/+/4711/temp`, `site/17/#`), so the publish
//! topic `site/17/dev/4711/temp` matches every subscriber once. Every connection's [`Outlet`]
//! encodes each packet it is given, for that connection's protocol version, into one reused
//! `BytesMut`, so the figures include the encoding of every outgoing frame (the publisher's PUBACK
//! too) but no IO.
//!
//! One iteration is one PUBLISH (16-byte payload) from the publisher:
//! - `qos0/{n}`: routed and delivered at QoS 0.
//! - `qos0-one-filter/1000`: the same with every subscriber on the one filter
//!   `site/17/dev/4711/temp`, the shape of a fan-out to the subscribers of one topic (whose
//!   matches need no merging by session).
//! - `qos0-props/1000`: the same as `qos0/1000` with a message that carries the properties of
//!   a v5 request (Content Type, Response Topic, 16 bytes of Correlation Data and two User
//!   Properties), which the v5 subscribers receive.
//! - `qos1/{n}`: the publisher gets a PUBACK; each subscriber gets a QoS 1 PUBLISH, and its PUBACK
//!   is fed back to the broker within the same iteration, as a client would answer. This is the
//!   steady state of a QoS 1 stream: the in-flight windows never fill and nothing is queued. The
//!   time therefore covers the whole exchange, the `n` inbound PUBACKs included.
//!
//! Throughput is reported in delivered messages (`n` per iteration): the time per iteration is
//! the time per publish, and criterion's elements/s is the delivery rate. After measuring, the
//! benchmark checks that nothing was dropped or closed and that every publish was delivered `n`
//! times, so a window or queue filling up cannot go unnoticed.
//!
//! Run: `cargo bench -p tern-broker --bench publish_path` (add e.g. `qos1` as a filter).

use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_broker::{Broker, BrokerConfig, ConnId, Frame, Outlet};
use tern_codec::{
    Ack, Connect, Packet, PacketId, Properties, PropertySet, ProtocolVersion, Publish, QoS,
    Subscribe, SubscriptionOptions,
};

/// The topic every publish goes to.
const TOPIC: &str = "site/17/dev/4711/temp";

/// What all outlets of one broker share: the reused encode buffer, counters, and the packet
/// identifiers subscribers must acknowledge.
#[derive(Default)]
struct Sink {
    buf: BytesMut,
    frames: u64,
    bytes: u64,
    publishes: u64,
    /// `(subscriber slot, packet id)` of QoS 1 PUBLISHes sent and not yet acknowledged.
    to_ack: Vec<(usize, PacketId)>,
}

/// An outlet that encodes every packet for its connection's version and counts it.
struct EncodingOutlet {
    /// Index of the subscriber in the fixture, or `usize::MAX` for the publisher.
    slot: usize,
    version: ProtocolVersion,
    sink: Rc<RefCell<Sink>>,
}

impl Outlet for EncodingOutlet {
    fn send(&mut self, frame: Frame) {
        let mut sink = self.sink.borrow_mut();
        let sink = &mut *sink;
        sink.buf.clear();
        frame.encode(self.version, &mut sink.buf);
        sink.frames += 1;
        sink.bytes += sink.buf.len() as u64;
        if let Frame::Publish(p) = &frame {
            sink.publishes += 1;
            if let Some(id) = p.packet_id {
                sink.to_ack.push((self.slot, id));
            }
        }
    }

    fn close(&mut self) {
        panic!("the broker closed connection {}", self.slot);
    }
}

/// A broker with one publisher and `n` subscribers, all connected and subscribed.
struct Fixture {
    broker: Broker<EncodingOutlet>,
    now: Instant,
    publisher: ConnId,
    subscribers: Vec<ConnId>,
    sink: Rc<RefCell<Sink>>,
    /// Scratch for the acknowledgments of one iteration, reused.
    acks: Vec<(usize, PacketId)>,
    next_id: u16,
}

impl Fixture {
    /// A broker with `n` subscribers, subscriber `i` on `filters[i % filters.len()]`.
    fn new(n: usize, filters: &[&str]) -> Self {
        let mut broker = Broker::new(BrokerConfig::default());
        let now = Instant::now();
        let sink = Rc::new(RefCell::new(Sink {
            buf: BytesMut::with_capacity(4096),
            ..Sink::default()
        }));
        let connect = |broker: &mut Broker<EncodingOutlet>, slot, version, id: String| {
            let outlet = EncodingOutlet {
                slot,
                version,
                sink: sink.clone(),
            };
            let conn = broker.open(now, outlet);
            let packet = Connect {
                protocol: version,
                clean_start: true,
                keep_alive: 0,
                properties: Properties::default(),
                client_id: id,
                will: None,
                username: None,
                password: None,
            };
            broker.handle_packet(now, conn, Packet::Connect(Box::new(packet)));
            conn
        };
        let publisher = connect(&mut broker, usize::MAX, ProtocolVersion::V5, "pub".into());
        let mut subscribers = Vec::with_capacity(n);
        for i in 0..n {
            let version = if i % 2 == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V3_1_1
            };
            let conn = connect(&mut broker, i, version, format!("sub-{i}"));
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).expect("non-zero"),
                properties: Properties::default(),
                filters: vec![(
                    filters[i % filters.len()].into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                )],
            };
            broker.handle_packet(now, conn, Packet::Subscribe(subscribe));
            subscribers.push(conn);
        }
        assert_eq!(broker.stats().subscriptions, n);
        Fixture {
            broker,
            now,
            publisher,
            subscribers,
            sink,
            acks: Vec::with_capacity(n),
            next_id: 0,
        }
    }

    /// One PUBLISH from the publisher, then the subscribers' PUBACKs.
    fn publish(&mut self, qos: QoS, properties: &Properties, payload: &Bytes) {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: TOPIC.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(self.next_id).expect("> 0")),
            properties: properties.clone(),
            payload: payload.clone(),
        };
        self.broker
            .handle_packet(self.now, self.publisher, Packet::Publish(p));
        std::mem::swap(&mut self.acks, &mut self.sink.borrow_mut().to_ack);
        for (slot, id) in self.acks.drain(..) {
            let conn = self.subscribers[slot];
            self.broker
                .handle_packet(self.now, conn, Packet::PubAck(Ack::new(id)));
        }
    }
}

/// A case: its name, the QoS of the publish, the subscribers' filters (in turn), the
/// subscriber counts to run it with and the message's properties.
type Case<'a> = (&'a str, QoS, &'a [&'a str], &'a [usize], &'a Properties);

fn bench_publish(c: &mut Criterion) {
    let payload = Bytes::from_static(&[0x5a; 16]);
    let mut group = c.benchmark_group("publish_path");
    let mixed = [TOPIC, "site/17/+/4711/temp", "site/17/#"];
    let none = Properties::default();
    let request = PropertySet {
        content_type: Some("application/json".into()),
        response_topic: Some("site/17/dev/4711/reply".into()),
        correlation_data: Some(Bytes::from_static(&[0xc7; 16])),
        user_properties: vec![
            ("source".into(), "gateway-3".into()),
            ("schema".into(), "temp.v2".into()),
        ],
        ..Default::default()
    }
    .into();
    let cases: [Case; 4] = [
        ("qos0", QoS::AtMostOnce, &mixed, &[1, 1000], &none),
        ("qos1", QoS::AtLeastOnce, &mixed, &[1, 1000], &none),
        ("qos0-one-filter", QoS::AtMostOnce, &[TOPIC], &[1000], &none),
        ("qos0-props", QoS::AtMostOnce, &mixed, &[1000], &request),
    ];
    for (name, qos, filters, sizes, properties) in cases {
        for &n in sizes {
            let mut f = Fixture::new(n, filters);
            let before = f.sink.borrow().publishes;
            f.publish(qos, properties, &payload);
            assert_eq!(f.sink.borrow().publishes - before, n as u64);

            group.throughput(Throughput::Elements(n as u64));
            let mut published = 1u64;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    f.publish(qos, properties, black_box(&payload));
                    published += 1;
                })
            });

            let stats = f.broker.stats();
            let sink = f.sink.borrow();
            assert_eq!(stats.dropped, 0, "messages dropped: not a steady state");
            assert_eq!(stats.publish_received, published);
            assert_eq!(sink.publishes - before, published * n as u64);
            assert!(sink.to_ack.is_empty());
            eprintln!(
                "publish_path {name}/{n}: {published} publishes, {} frames, {:.1} bytes/frame",
                sink.frames,
                sink.bytes as f64 / sink.frames as f64
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_publish);
criterion_main!(benches);
