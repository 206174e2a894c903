//! Micro-benchmarks of the codec: [`tern_codec::decode`] and [`Packet::encode`] for each packet
//! type a broker handles on its hot paths.
//!
//! Each case is one packet value and its wire form. `decode/*` measures turning one whole frame,
//! already in the read buffer, into a [`Packet`] and dropping that packet again: the read buffer
//! is one `BytesMut` reused for the whole run and refilled with 256 frames at a time outside the
//! timed region, as a connection's read buffer is refilled by socket reads. `encode/*` measures
//! appending the packet to a reused, cleared `BytesMut`, as an outbound connection buffer is
//! reused. Throughput is reported in wire bytes per second; one iteration is one packet, so the
//! time per iteration is the time per packet.
//!
//! Run: `cargo bench -p tern-codec --bench codec` (add a filter such as `publish` to run a
//! subset).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tern_codec::{
    Ack, Connect, Disconnect, LastWill, Packet, PacketId, Properties, PropertySet, ProtocolVersion,
    Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, decode,
};

/// A packet, the version it is coded for, and a name for the report.
struct Case {
    name: String,
    version: ProtocolVersion,
    packet: Packet,
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

/// A v5 CONNECT as a real device sends it: credentials, a will with a delay, session expiry,
/// flow-control properties and a user property.
fn connect_v5() -> Packet {
    let properties = PropertySet {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(100),
        maximum_packet_size: Some(256 * 1024),
        topic_alias_maximum: Some(16),
        request_problem_information: Some(1),
        user_properties: vec![("region".into(), "eu-west".into())],
        ..Default::default()
    }
    .into();
    let will = LastWill {
        topic: "site/17/dev/4711/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: PropertySet {
            will_delay_interval: Some(10),
            ..Default::default()
        }
        .into(),
    };
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 60,
        properties,
        client_id: "sensor-0000004711".into(),
        will: Some(will),
        username: Some("device-4711".into()),
        password: Some(Bytes::from_static(b"s3cr3t-t0ken-0123456789")),
    }))
}

fn publish(qos: QoS, payload_len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "site/17/dev/4711/temp".into(),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(42)),
        properties: Properties::default(),
        payload: Bytes::from(vec![0x5a; payload_len]),
    })
}

fn subscribe_v5() -> Packet {
    let opts = |qos| SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    Packet::Subscribe(Subscribe {
        packet_id: pid(7),
        properties: PropertySet {
            subscription_identifiers: vec![12],
            ..Default::default()
        }
        .into(),
        filters: vec![
            ("site/17/dev/4711/cmd".into(), opts(QoS::AtLeastOnce)),
            ("site/17/+/4711/config".into(), opts(QoS::AtLeastOnce)),
            ("site/17/broadcast/#".into(), opts(QoS::AtMostOnce)),
        ],
    })
}

fn cases() -> Vec<Case> {
    use ProtocolVersion::{V3_1_1, V5};
    let mut cases = vec![Case {
        name: "connect/v5/props".into(),
        version: V5,
        packet: connect_v5(),
    }];
    for (vname, version) in [("v3.1.1", V3_1_1), ("v5", V5)] {
        for (qname, qos) in [("qos0", QoS::AtMostOnce), ("qos1", QoS::AtLeastOnce)] {
            for (sname, len) in [("16B", 16), ("1KiB", 1024)] {
                cases.push(Case {
                    name: format!("publish/{vname}/{qname}/{sname}"),
                    version,
                    packet: publish(qos, len),
                });
            }
        }
    }
    for (vname, version) in [("v3.1.1", V3_1_1), ("v5", V5)] {
        cases.push(Case {
            name: format!("puback/{vname}"),
            version,
            packet: Packet::PubAck(Ack {
                packet_id: pid(42),
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            }),
        });
    }
    cases.push(Case {
        name: "subscribe/v5/3filters".into(),
        version: V5,
        packet: subscribe_v5(),
    });
    cases.push(Case {
        name: "suback/v5/3filters".into(),
        version: V5,
        packet: Packet::SubAck(SubAck {
            packet_id: pid(7),
            properties: Properties::default(),
            reasons: vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::SUCCESS,
            ],
        }),
    });
    cases.push(Case {
        name: "pingreq".into(),
        version: V5,
        packet: Packet::PingReq,
    });
    cases.push(Case {
        name: "disconnect/v5".into(),
        version: V5,
        packet: Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    });
    cases
}

/// The wire form of `case`, checked to decode back to the same value.
fn frame(case: &Case) -> Vec<u8> {
    let mut out = BytesMut::new();
    case.packet.encode(case.version, &mut out);
    let mut buf = out.clone();
    let back = decode(&mut buf, case.version, u32::MAX)
        .expect("valid frame")
        .expect("whole frame");
    assert_eq!(back, case.packet, "{} does not round-trip", case.name);
    assert!(buf.is_empty());
    out.to_vec()
}

/// Frames decoded per timed stretch: enough to make the clock reads negligible, few enough for
/// the read buffer to stay in cache (256 KiB for 1 KiB frames).
const CHUNK: u64 = 256;

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for case in cases() {
        let bytes = frame(&case);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        // One read buffer for the whole run, refilled between timed stretches, as a connection's
        // read buffer is: once it has been split it is shared, and later splits do not allocate.
        let mut buf = BytesMut::with_capacity(CHUNK as usize * bytes.len());
        group.bench_function(&case.name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(CHUNK);
                    for _ in 0..k {
                        buf.extend_from_slice(&bytes);
                    }
                    let start = Instant::now();
                    for _ in 0..k {
                        let packet = decode(black_box(&mut buf), case.version, u32::MAX);
                        black_box(&packet);
                    }
                    total += start.elapsed();
                    left -= k;
                }
                total
            })
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for case in cases() {
        let len = frame(&case).len();
        group.throughput(Throughput::Bytes(len as u64));
        let mut out = BytesMut::with_capacity(4096);
        group.bench_function(&case.name, |b| {
            b.iter(|| {
                out.clear();
                black_box(&case.packet).encode(case.version, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
