//! Interoperability with a third-party MQTT 3.1.1 client (rumqttc), end to end over loopback TCP.
//!
//! Each test starts its own broker on a free port, drives one or more rumqttc clients against it
//! and judges what the clients observe.

mod support;

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, LastWill,
    MqttOptions, Outgoing, Publish, QoS, SubscribeReasonCode,
};
use support::start_broker;
use tern::Server;
use tern_broker::BrokerConfig;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a client waits for something the broker should do promptly.
const WAIT: Duration = Duration::from_secs(5);
/// How long a client listens to be sure that something does not arrive.
const QUIET: Duration = Duration::from_millis(300);

/// What the event-loop task reports, apart from incoming PUBLISHes.
#[derive(Debug)]
enum Report {
    Event(Event),
    /// The event loop failed; the task stops polling (so rumqttc never reconnects on its own).
    Failed(ConnectionError),
}

/// A rumqttc client whose event loop runs in its own task.
struct Client {
    client: AsyncClient,
    publishes: UnboundedReceiver<Publish>,
    reports: UnboundedReceiver<Report>,
    task: JoinHandle<()>,
}

/// Options for client `id` talking to `server`.
fn options(server: &Server, id: &str) -> MqttOptions {
    let addr = server.local_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

async fn pump(
    mut eventloop: EventLoop,
    pubs: UnboundedSender<Publish>,
    rep: UnboundedSender<Report>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let _ = pubs.send(p);
            }
            Ok(event) => {
                let _ = rep.send(Report::Event(event));
            }
            Err(e) => {
                let _ = rep.send(Report::Failed(e));
                return;
            }
        }
    }
}

/// Connect with `options`, spawn the event loop and wait for the CONNACK.
async fn connect(options: MqttOptions) -> (Client, ConnAck) {
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (pub_tx, publishes) = unbounded_channel();
    let (rep_tx, reports) = unbounded_channel();
    let task = tokio::spawn(pump(eventloop, pub_tx, rep_tx));
    let mut c = Client {
        client,
        publishes,
        reports,
        task,
    };
    let connack = c
        .wait_for(|e| match e {
            Event::Incoming(Incoming::ConnAck(ack)) => Some(ack.clone()),
            _ => None,
        })
        .await;
    (c, connack)
}

/// Connect client `id` with default options and expect a successful CONNACK.
async fn connected(server: &Server, id: &str) -> Client {
    let (c, ack) = connect(options(server, id)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    c
}

impl Client {
    /// Skip reports until `pick` accepts one; panics on failure or timeout.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let found = timeout(WAIT, async {
            loop {
                match self.reports.recv().await {
                    Some(Report::Event(e)) => {
                        if let Some(t) = pick(&e) {
                            return t;
                        }
                    }
                    Some(Report::Failed(e)) => panic!("event loop failed: {e:?}"),
                    None => panic!("event loop ended"),
                }
            }
        })
        .await;
        found.expect("expected event within the timeout")
    }

    /// Wait until the event loop fails and return the error.
    async fn wait_failure(&mut self) -> ConnectionError {
        let found = timeout(WAIT, async {
            loop {
                match self.reports.recv().await {
                    Some(Report::Event(_)) => {}
                    Some(Report::Failed(e)) => return e,
                    None => panic!("event loop ended without an error"),
                }
            }
        })
        .await;
        found.expect("expected the connection to fail within the timeout")
    }

    /// Subscribe to `filter` and return the granted QoS from the SUBACK.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> QoS {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        let codes = self
            .wait_for(|e| match e {
                Event::Incoming(Incoming::SubAck(ack)) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await;
        match codes.as_slice() {
            [SubscribeReasonCode::Success(granted)] => *granted,
            other => panic!("subscription to {filter} refused: {other:?}"),
        }
    }

    /// Publish and wait for the end of the publisher-side flow (PUBACK / PUBCOMP for QoS 1 / 2).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        match qos {
            QoS::AtMostOnce => {
                self.wait_for(|e| matches!(e, Event::Outgoing(Outgoing::Publish(_))).then_some(()))
                    .await
            }
            QoS::AtLeastOnce => {
                self.wait_for(|e| matches!(e, Event::Incoming(Incoming::PubAck(_))).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.wait_for(|e| matches!(e, Event::Incoming(Incoming::PubComp(_))).then_some(()))
                    .await
            }
        }
    }

    /// The next PUBLISH delivered to this client.
    async fn next_publish(&mut self) -> Publish {
        timeout(WAIT, self.publishes.recv())
            .await
            .expect("expected a PUBLISH within the timeout")
            .expect("event loop ended")
    }

    /// The next `n` PUBLISHes delivered to this client, in order.
    async fn publishes(&mut self, n: usize) -> Vec<Publish> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_publish().await);
        }
        out
    }

    /// Panics if a PUBLISH arrives within [`QUIET`].
    async fn expect_no_publish(&mut self) {
        if let Ok(Some(p)) = timeout(QUIET, self.publishes.recv()).await {
            panic!("unexpected PUBLISH {p:?}");
        }
    }

    /// Clean DISCONNECT; waits until the packet is on the wire and the broker closed the socket.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.wait_for(|e| matches!(e, Event::Outgoing(Outgoing::Disconnect)).then_some(()))
            .await;
        let _ = timeout(WAIT, &mut self.task).await;
    }

    /// Drop the connection without DISCONNECT: the event loop (and with it the socket) is dropped.
    async fn drop_abruptly(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

fn payloads(publishes: &[Publish]) -> Vec<&[u8]> {
    publishes.iter().map(|p| &p.payload[..]).collect()
}

/// v3.1.1: [MQTT-3.1.4-4] [MQTT-3.8.4-5] [MQTT-3.3.4-1] [MQTT-4.3.1-1] [MQTT-4.3.2-1]
/// [MQTT-4.3.2-2] [MQTT-4.3.3-1] [MQTT-4.3.3-2] [MQTT-3.8.4-6]
/// Delivery at QoS 0, 1 and 2 to subscribers granted QoS 0, 1 and 2: each gets
/// min(publish QoS, granted QoS), and the publisher sees PUBACK / PUBCOMP.
#[tokio::test]
async fn qos_0_1_2_delivered_at_min_of_publish_and_subscription() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut subs = Vec::new();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let mut sub = connected(&server, &format!("sub{i}")).await;
        assert_eq!(sub.subscribe("qos/t", qos).await, qos);
        subs.push((qos, sub));
    }
    let mut publisher = connected(&server, "pub").await;
    let sent = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for qos in sent {
        publisher
            .publish("qos/t", qos, false, format!("q{}", qos as u8).as_bytes())
            .await;
    }
    for (granted, sub) in &mut subs {
        let got = sub.publishes(3).await;
        for (p, sent_qos) in got.iter().zip(sent) {
            assert_eq!(p.topic, "qos/t");
            assert_eq!(&p.payload[..], format!("q{}", sent_qos as u8).as_bytes());
            assert_eq!(p.qos, min_qos(sent_qos, *granted), "granted {granted:?}");
            assert!(!p.retain);
            assert!(!p.dup);
        }
        sub.expect_no_publish().await;
    }
    server.shutdown().await;
}

/// v3.1.1: [MQTT-4.7.1-2] [MQTT-4.7.1-3] [MQTT-3.3.2-3] [MQTT-4.7.2-1] [MQTT-3.3.1-6]
/// [MQTT-3.3.1-8]
/// `+` matches exactly one level, `#` matches the parent and any depth; the retained
/// `$SYS/broker/version` reaches `$SYS/#` but not `#`.
#[tokio::test]
async fn wildcards_and_sys_topics() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut plus = connected(&server, "plus").await;
    plus.subscribe("sport/+/score", QoS::AtLeastOnce).await;
    let mut hash = connected(&server, "hash").await;
    hash.subscribe("sport/#", QoS::AtLeastOnce).await;

    let mut publisher = connected(&server, "pub").await;
    for topic in [
        "sport/tennis/score",
        "sport/tennis/player/score",
        "sport",
        "other/x",
    ] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes())
            .await;
    }
    publisher
        .publish("sport/end", QoS::AtLeastOnce, false, b"end")
        .await;
    // `+` gets only the one-level match; the next thing it sees is nothing.
    let got = plus.next_publish().await;
    assert_eq!(got.topic, "sport/tennis/score");
    plus.expect_no_publish().await;
    // `#` gets every topic under (and including) `sport`, in publish order.
    let got = hash.publishes(4).await;
    let topics: Vec<_> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "sport/tennis/score",
            "sport/tennis/player/score",
            "sport",
            "sport/end"
        ]
    );

    // `#` does not match `$SYS/...`: the first thing it receives is a later marker.
    let mut all = connected(&server, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    publisher
        .publish("marker", QoS::AtLeastOnce, false, b"m")
        .await;
    let got = all.next_publish().await;
    assert_eq!(got.topic, "marker");

    // `$SYS/#` gets the retained version, flagged retained.
    let mut sys = connected(&server, "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // The retained $SYS messages arrive in no particular order: find the version among them.
    let got = loop {
        let got = sys.next_publish().await;
        if got.topic == "$SYS/broker/version" {
            break got;
        }
        assert!(got.topic.starts_with("$SYS/broker/"), "{}", got.topic);
    };
    assert!(got.retain);
    assert!(
        got.payload.starts_with(b"tern "),
        "{:?}",
        String::from_utf8_lossy(&got.payload)
    );
    server.shutdown().await;
}

/// v3.1.1: [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] [MQTT-3.3.1-9] [MQTT-3.3.1-10]
/// [MQTT-3.3.1-11] [MQTT-3.3.1-12]
/// A retained message is stored, replaced by a newer one, delivered with RETAIN=1 on subscribe
/// (RETAIN=0 to established subscribers) and deleted by an empty retained publish.
#[tokio::test]
async fn retained_set_replace_deliver_delete() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("r/t", QoS::AtLeastOnce, true, b"one")
        .await;

    let mut live = connected(&server, "live").await;
    live.subscribe("r/t", QoS::AtLeastOnce).await;
    let got = live.next_publish().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("r/t", &b"one"[..]));
    assert!(got.retain, "retained message on subscribe has RETAIN=1");

    publisher
        .publish("r/t", QoS::AtLeastOnce, true, b"two")
        .await;
    let got = live.next_publish().await;
    assert_eq!(&got.payload[..], b"two");
    assert!(!got.retain, "established subscription gets RETAIN=0");

    // A non-retained publish neither replaces nor removes the retained message.
    publisher
        .publish("r/t", QoS::AtLeastOnce, false, b"plain")
        .await;
    assert_eq!(&live.next_publish().await.payload[..], b"plain");

    let mut late = connected(&server, "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = late.next_publish().await;
    assert_eq!(&got.payload[..], b"two");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert!(got.retain);
    late.expect_no_publish().await;

    // An empty retained publish is forwarded and deletes the retained message.
    publisher.publish("r/t", QoS::AtLeastOnce, true, b"").await;
    let got = live.next_publish().await;
    assert!(got.payload.is_empty());

    let mut after = connected(&server, "after").await;
    after.subscribe("r/#", QoS::AtLeastOnce).await;
    publisher
        .publish("r/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    let got = after.next_publish().await;
    assert_eq!(got.topic, "r/marker", "no retained message after deletion");
    server.shutdown().await;
}

/// v3.1.1: [MQTT-3.1.2-8] [MQTT-3.1.2-10] [MQTT-3.1.2-16] [MQTT-3.14.4-3]
/// The will is published when the connection drops without DISCONNECT, and is discarded on a
/// clean DISCONNECT.
#[tokio::test]
async fn will_on_abrupt_close_not_on_disconnect() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut watcher = connected(&server, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    let mut opts = options(&server, "dies");
    opts.set_last_will(LastWill::new("will/dies", "gone", QoS::AtLeastOnce, false));
    let (dies, ack) = connect(opts).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    dies.drop_abruptly().await;
    let got = watcher.next_publish().await;
    assert_eq!(got.topic, "will/dies");
    assert_eq!(&got.payload[..], b"gone");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert!(!got.retain);

    let mut opts = options(&server, "polite");
    opts.set_last_will(LastWill::new(
        "will/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, ack) = connect(opts).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    polite.disconnect().await;
    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("will/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    let got = watcher.next_publish().await;
    assert_eq!(got.topic, "will/marker", "no will after a clean DISCONNECT");
    watcher.expect_no_publish().await;
    server.shutdown().await;
}

/// v3.1.1: [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-4.6.0-6]
/// A Clean Session = 0 subscriber gets the QoS 1 messages published while it was offline, in
/// order, on reconnect with Session Present = 1.
#[tokio::test]
async fn persistent_session_queues_while_offline() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut opts = options(&server, "durable");
    opts.set_clean_session(false);
    let (mut sub, ack) = connect(opts.clone()).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present, "no session stored yet");
    sub.subscribe("durable/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = connected(&server, "pub").await;
    for i in 0..5 {
        publisher
            .publish(
                "durable/t",
                QoS::AtLeastOnce,
                false,
                format!("m{i}").as_bytes(),
            )
            .await;
    }

    let (mut sub, ack) = connect(opts).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(ack.session_present);
    let got = sub.publishes(5).await;
    assert_eq!(payloads(&got), [b"m0", b"m1", b"m2", b"m3", b"m4"]);
    for p in &got {
        assert_eq!(p.topic, "durable/t");
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
    sub.expect_no_publish().await;

    // The subscription itself survived too: a live publish still arrives.
    publisher
        .publish("durable/t", QoS::AtLeastOnce, false, b"live")
        .await;
    assert_eq!(&sub.next_publish().await.payload[..], b"live");
    server.shutdown().await;
}

/// v3.1.1: [MQTT-3.1.4-2] [MQTT-3.1.3-2]
/// A second connection with the same client id disconnects the first; the second works.
#[tokio::test]
async fn same_client_id_takes_over() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut first = connected(&server, "twin").await;
    let mut second = connected(&server, "twin").await;
    let err = first.wait_failure().await;
    assert!(
        matches!(err, ConnectionError::MqttState(_) | ConnectionError::Io(_)),
        "{err:?}"
    );

    second.subscribe("twin/t", QoS::AtLeastOnce).await;
    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("twin/t", QoS::AtLeastOnce, false, b"hi")
        .await;
    assert_eq!(&second.next_publish().await.payload[..], b"hi");
    server.shutdown().await;
}

/// v3.1.1: [MQTT-3.12.4-1] [MQTT-3.1.2-24]
/// A client with Keep Alive 5 s idles for 8 s (past 1.5 x Keep Alive) yet stays connected
/// because its PINGREQs are answered.
#[tokio::test]
async fn keepalive_pings_keep_idle_client_connected() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut opts = options(&server, "idle");
    opts.set_keep_alive(Duration::from_secs(5));
    let (mut idle, ack) = connect(opts).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    idle.subscribe("idle/t", QoS::AtLeastOnce).await;

    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut pings = 0;
    while let Ok(report) = idle.reports.try_recv() {
        match report {
            Report::Event(Event::Incoming(Incoming::PingResp)) => pings += 1,
            Report::Event(_) => {}
            Report::Failed(e) => panic!("idle client lost its connection: {e:?}"),
        }
    }
    assert!(pings >= 1, "no PINGRESP during 8 s idle");

    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("idle/t", QoS::AtLeastOnce, false, b"still here")
        .await;
    assert_eq!(&idle.next_publish().await.payload[..], b"still here");
    server.shutdown().await;
}

/// v3.1.1: no normative statement (3.1.1 has no Maximum Packet Size; this is a broker limit).
/// A PUBLISH larger than the broker's maximum packet size closes that client's connection;
/// another client is unaffected.
#[tokio::test]
async fn oversized_publish_closes_only_that_connection() {
    let server = start_broker(BrokerConfig {
        max_packet_size: 1024,
        ..BrokerConfig::default()
    })
    .await;
    let mut bystander = connected(&server, "bystander").await;
    bystander.subscribe("big/#", QoS::AtLeastOnce).await;

    let mut big = connected(&server, "big").await;
    big.client
        .publish("big/t", QoS::AtLeastOnce, false, vec![b'x'; 2000])
        .await
        .expect("queue PUBLISH");
    let err = big.wait_failure().await;
    assert!(
        matches!(err, ConnectionError::MqttState(_) | ConnectionError::Io(_)),
        "{err:?}"
    );
    bystander.expect_no_publish().await;

    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("big/t", QoS::AtLeastOnce, false, &[b'y'; 500])
        .await;
    let got = bystander.next_publish().await;
    assert_eq!(got.payload.len(), 500);
    server.shutdown().await;
}

/// A burst of QoS 1 messages, written in one go, to 100 subscribers: 6,400 deliveries, more than
/// one batch of a connection's packets may make under one lock of the core, so the batch is
/// split across locks; every subscriber still gets every message once, in order, and the
/// publisher every PUBACK.
#[tokio::test]
async fn burst_to_many_subscribers_arrives_whole_and_in_order() {
    use bytes::BytesMut;
    use tern_codec::{Connect, Packet, PacketId, ProtocolVersion};

    const SUBSCRIBERS: usize = 100;
    const MESSAGES: u16 = 64;
    let v4 = ProtocolVersion::V3_1_1;
    let server = start_broker(BrokerConfig::default()).await;
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut sub = connected(&server, &format!("burst-sub-{i}")).await;
        assert_eq!(
            sub.subscribe("burst/t", QoS::AtLeastOnce).await,
            QoS::AtLeastOnce
        );
        subs.push(sub);
    }

    let mut publisher = support::RawClient::connect(server.local_addr()).await;
    publisher
        .send_packet(
            &Packet::Connect(Box::new(Connect::new(v4, "burst-pub"))),
            v4,
        )
        .await;
    assert!(matches!(
        publisher.recv_packet(v4).await,
        Ok(Some(Packet::ConnAck(_)))
    ));
    let mut out = BytesMut::new();
    for n in 1..=MESSAGES {
        let publish = tern_codec::Publish {
            qos: tern_codec::QoS::AtLeastOnce,
            topic: "burst/t".into(),
            packet_id: PacketId::new(n),
            payload: n.to_be_bytes().to_vec().into(),
            ..tern_codec::Publish::default()
        };
        Packet::Publish(publish).encode(v4, &mut out);
    }
    publisher.send(&out).await;
    for n in 1..=MESSAGES {
        match publisher.recv_packet(v4).await {
            Ok(Some(Packet::PubAck(ack))) => assert_eq!(ack.packet_id.get(), n),
            other => panic!("expected PUBACK {n}, got {other:?}"),
        }
    }

    let expected: Vec<Vec<u8>> = (1..=MESSAGES).map(|n| n.to_be_bytes().to_vec()).collect();
    for sub in &mut subs {
        let got: Vec<Vec<u8>> = sub
            .publishes(usize::from(MESSAGES))
            .await
            .iter()
            .map(|p| p.payload.to_vec())
            .collect();
        assert_eq!(got, expected);
    }
    subs[0].expect_no_publish().await;
    server.shutdown().await;
}
