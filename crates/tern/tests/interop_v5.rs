//! Interoperability with a third-party MQTT 5 client (rumqttc's v5 client), end to end over
//! loopback TCP.
//!
//! Each test starts its own broker on a free port, drives one or more rumqttc clients against it
//! and judges what the clients observe.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, Publish, PublishProperties,
    RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, StateError,
};
use support::{RawClient, start_broker};
use tern::Server;
use tern_broker::BrokerConfig;
use tern_codec::{Connect, Packet, Properties, ProtocolVersion, ReasonCode};
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
    Event(Box<Event>),
    /// The event loop failed; the task stops polling (so rumqttc never reconnects on its own).
    Failed(ConnectionError),
}

/// A rumqttc v5 client whose event loop runs in its own task.
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

/// Options for a persistent session: Clean Start = 0 and Session Expiry Interval 60 s.
fn persistent(server: &Server, id: &str) -> MqttOptions {
    let mut options = options(server, id);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));
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
                let _ = rep.send(Report::Event(Box::new(event)));
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
    assert_eq!(connack.code, ConnectReturnCode::Success);
    (c, connack)
}

/// Connect client `id` with default options.
async fn connected(server: &Server, id: &str) -> Client {
    connect(options(server, id)).await.0
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

    /// Subscribe with `filters` (and subscription identifier `id`); return the SUBACK codes.
    async fn subscribe_with(
        &mut self,
        filters: Vec<Filter>,
        id: Option<usize>,
    ) -> Vec<SubscribeReasonCode> {
        let properties = SubscribeProperties {
            id,
            user_properties: Vec::new(),
        };
        self.client
            .subscribe_many_with_properties(filters, properties)
            .await
            .expect("queue SUBSCRIBE");
        self.wait_for(|e| match e {
            Event::Incoming(Incoming::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribe to `filter` and return the granted QoS from the SUBACK.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> QoS {
        let codes = self
            .subscribe_with(vec![Filter::new(filter, qos)], None)
            .await;
        match codes.as_slice() {
            [SubscribeReasonCode::Success(granted)] => *granted,
            other => panic!("subscription to {filter} refused: {other:?}"),
        }
    }

    /// Wait for the end of the publisher-side flow for one PUBLISH at `qos`.
    async fn wait_published(&mut self, qos: QoS) {
        match qos {
            QoS::AtMostOnce => {
                self.wait_for(|e| matches!(e, Event::Outgoing(Outgoing::Publish(_))).then_some(()))
                    .await
            }
            QoS::AtLeastOnce => {
                self.wait_for(|e| match e {
                    Event::Incoming(Incoming::PubAck(ack)) => Some(ack.reason),
                    _ => None,
                })
                .await;
            }
            QoS::ExactlyOnce => {
                self.wait_for(|e| matches!(e, Event::Incoming(Incoming::PubComp(_))).then_some(()))
                    .await
            }
        }
    }

    /// Publish and wait for PUBACK / PUBCOMP (or the write, at QoS 0).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        self.wait_published(qos).await;
    }

    /// Publish with `properties` and wait for the end of the flow.
    async fn publish_props(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
        properties: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos, retain, payload.to_vec(), properties)
            .await
            .expect("queue PUBLISH");
        self.wait_published(qos).await;
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

/// A raw v5 connection (tern-codec on the wire) that has sent CONNECT for `id` and got CONNACK.
async fn raw_connect_v5(server: &Server, id: &str) -> RawClient {
    let mut raw = RawClient::connect(server.local_addr()).await;
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::default(),
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
    };
    raw.send_packet(&Packet::Connect(Box::new(connect)), ProtocolVersion::V5)
        .await;
    match raw.recv_packet(ProtocolVersion::V5).await.expect("CONNACK") {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, ReasonCode(0)),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    raw
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

fn topic(p: &Publish) -> &str {
    std::str::from_utf8(&p.topic).expect("UTF-8 topic")
}

fn payloads(publishes: &[Publish]) -> Vec<&[u8]> {
    publishes.iter().map(|p| &p.payload[..]).collect()
}

fn props(p: &Publish) -> PublishProperties {
    p.properties.clone().unwrap_or_default()
}

/// v5: [MQTT-3.1.4-5] [MQTT-3.8.4-7] [MQTT-3.3.4-1] [MQTT-4.3.1-1] [MQTT-4.3.2-2]
/// [MQTT-4.3.2-4] [MQTT-4.3.3-2] [MQTT-4.3.3-8] [MQTT-4.3.3-11] [MQTT-3.8.4-8]
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
            assert_eq!(topic(p), "qos/t");
            assert_eq!(&p.payload[..], format!("q{}", sent_qos as u8).as_bytes());
            assert_eq!(p.qos, min_qos(sent_qos, *granted), "granted {granted:?}");
            assert!(!p.retain);
            assert!(!p.dup);
        }
        sub.expect_no_publish().await;
    }
    server.shutdown().await;
}

/// v5: [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-3.3.2-3] [MQTT-4.7.2-1] [MQTT-3.3.1-9]
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
    for t in [
        "sport/tennis/score",
        "sport/tennis/player/score",
        "sport",
        "other/x",
    ] {
        publisher
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    publisher
        .publish("sport/end", QoS::AtLeastOnce, false, b"end")
        .await;
    let got = plus.next_publish().await;
    assert_eq!(topic(&got), "sport/tennis/score");
    plus.expect_no_publish().await;
    let got = hash.publishes(4).await;
    let topics: Vec<_> = got.iter().map(topic).collect();
    assert_eq!(
        topics,
        [
            "sport/tennis/score",
            "sport/tennis/player/score",
            "sport",
            "sport/end"
        ]
    );

    let mut all = connected(&server, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    publisher
        .publish("marker", QoS::AtLeastOnce, false, b"m")
        .await;
    let got = all.next_publish().await;
    assert_eq!(topic(&got), "marker", "`#` must not match $SYS topics");

    let mut sys = connected(&server, "sys").await;
    sys.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // The retained $SYS messages arrive in no particular order: find the version among them.
    let got = loop {
        let got = sys.next_publish().await;
        if topic(&got) == "$SYS/broker/version" {
            break got;
        }
        assert!(topic(&got).starts_with("$SYS/broker/"), "{}", topic(&got));
    };
    assert!(got.retain);
    assert!(got.payload.starts_with(b"tern "));
    server.shutdown().await;
}

/// v5: [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7] [MQTT-3.3.1-8] [MQTT-3.3.1-9]
/// [MQTT-3.3.1-12]
/// A retained message is stored, replaced by a newer one, delivered with RETAIN=1 on subscribe
/// (RETAIN=0 to established subscribers without Retain As Published) and deleted by an empty
/// retained publish.
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
    assert_eq!((topic(&got), &got.payload[..]), ("r/t", &b"one"[..]));
    assert!(got.retain);

    publisher
        .publish("r/t", QoS::AtLeastOnce, true, b"two")
        .await;
    let got = live.next_publish().await;
    assert_eq!(&got.payload[..], b"two");
    assert!(!got.retain);

    publisher
        .publish("r/t", QoS::AtLeastOnce, false, b"plain")
        .await;
    assert_eq!(&live.next_publish().await.payload[..], b"plain");

    let mut late = connected(&server, "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = late.next_publish().await;
    assert_eq!(&got.payload[..], b"two");
    assert!(got.retain);
    late.expect_no_publish().await;

    publisher.publish("r/t", QoS::AtLeastOnce, true, b"").await;
    assert!(live.next_publish().await.payload.is_empty());

    let mut after = connected(&server, "after").await;
    after.subscribe("r/#", QoS::AtLeastOnce).await;
    publisher
        .publish("r/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    assert_eq!(topic(&after.next_publish().await), "r/marker");
    server.shutdown().await;
}

/// v5: [MQTT-3.1.2-7] [MQTT-3.1.2-8] [MQTT-3.1.2-10] [MQTT-3.1.2-14] [MQTT-3.14.4-3]
/// The will is published when the connection drops without DISCONNECT, and is discarded on a
/// DISCONNECT with reason 0x00.
#[tokio::test]
async fn will_on_abrupt_close_not_on_disconnect() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut watcher = connected(&server, "watcher").await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;

    let mut opts = options(&server, "dies");
    opts.set_last_will(LastWill::new(
        "will/dies",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (dies, _) = connect(opts).await;
    dies.drop_abruptly().await;
    let got = watcher.next_publish().await;
    assert_eq!(topic(&got), "will/dies");
    assert_eq!(&got.payload[..], b"gone");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert!(!got.retain);

    let mut opts = options(&server, "polite");
    opts.set_last_will(LastWill::new(
        "will/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (polite, _) = connect(opts).await;
    polite.disconnect().await;
    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("will/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    assert_eq!(topic(&watcher.next_publish().await), "will/marker");
    watcher.expect_no_publish().await;
    server.shutdown().await;
}

/// v5: [MQTT-3.1.2-5] [MQTT-3.1.2-6] [MQTT-3.1.2-23] [MQTT-3.2.2-3] [MQTT-4.5.0-1]
/// [MQTT-4.6.0-6]
/// A Clean Start = 0 subscriber with a Session Expiry Interval gets the QoS 1 messages published
/// while it was offline, in order, on reconnect with Session Present = 1.
#[tokio::test]
async fn persistent_session_queues_while_offline() {
    let server = start_broker(BrokerConfig::default()).await;
    let (mut sub, ack) = connect(persistent(&server, "durable")).await;
    assert!(!ack.session_present);
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

    let (mut sub, ack) = connect(persistent(&server, "durable")).await;
    assert!(ack.session_present);
    let got = sub.publishes(5).await;
    assert_eq!(payloads(&got), [b"m0", b"m1", b"m2", b"m3", b"m4"]);
    for p in &got {
        assert_eq!(topic(p), "durable/t");
        assert_eq!(p.qos, QoS::AtLeastOnce);
    }
    sub.expect_no_publish().await;
    publisher
        .publish("durable/t", QoS::AtLeastOnce, false, b"live")
        .await;
    assert_eq!(&sub.next_publish().await.payload[..], b"live");
    server.shutdown().await;
}

/// v5: [MQTT-3.1.4-3] [MQTT-3.14.2-1] [MQTT-3.14.4-2] [MQTT-3.1.3-2]
/// A second connection with the same client id closes the first with DISCONNECT 0x8E
/// (Session taken over); the second works. The 0x8E is also checked on a raw v5 connection.
#[tokio::test]
async fn same_client_id_takes_over_with_0x8e() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut first = connected(&server, "twin").await;
    let mut second = connected(&server, "twin").await;
    let err = first.wait_failure().await;
    assert!(
        matches!(
            err,
            ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code: DisconnectReasonCode::SessionTakenOver,
                ..
            })
        ),
        "{err:?}"
    );

    second.subscribe("twin/t", QoS::AtLeastOnce).await;
    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("twin/t", QoS::AtLeastOnce, false, b"hi")
        .await;
    assert_eq!(&second.next_publish().await.payload[..], b"hi");

    // What the broker actually sends the old connection.
    let mut raw = raw_connect_v5(&server, "rawtwin").await;
    let _rumqttc_twin = connected(&server, "rawtwin").await;
    match raw
        .recv_packet(ProtocolVersion::V5)
        .await
        .expect("DISCONNECT")
    {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode(0x8E)),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    raw.expect_closed().await.expect("closed after DISCONNECT");
    server.shutdown().await;
}

/// v5: [MQTT-3.12.4-1] [MQTT-3.1.2-22]
/// A client with Keep Alive 5 s idles for 8 s (past 1.5 x Keep Alive) yet stays connected
/// because its PINGREQs are answered.
#[tokio::test]
async fn keepalive_pings_keep_idle_client_connected() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut opts = options(&server, "idle");
    opts.set_keep_alive(Duration::from_secs(5));
    let (mut idle, ack) = connect(opts).await;
    let server_keep_alive = ack.properties.as_ref().and_then(|p| p.server_keep_alive);
    assert!(
        server_keep_alive.is_none() || server_keep_alive == Some(5),
        "{server_keep_alive:?}"
    );
    idle.subscribe("idle/t", QoS::AtLeastOnce).await;

    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut pings = 0;
    while let Ok(report) = idle.reports.try_recv() {
        match report {
            Report::Event(e) if matches!(*e, Event::Incoming(Incoming::PingResp(_))) => pings += 1,
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

/// v5: [MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-2]
/// Two overlapping subscriptions with identifiers 1 and 2: one delivery carrying both ids, at
/// the higher of the two granted QoS.
#[tokio::test]
async fn subscription_identifiers_on_overlapping_subscriptions() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut sub = connected(&server, "sub").await;
    let codes = sub
        .subscribe_with(vec![Filter::new("sid/+", QoS::AtMostOnce)], Some(1))
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    let codes = sub
        .subscribe_with(vec![Filter::new("sid/#", QoS::AtLeastOnce)], Some(2))
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    sub.subscribe("other/t", QoS::AtLeastOnce).await;

    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("sid/a", QoS::AtLeastOnce, false, b"both")
        .await;
    publisher
        .publish("sid/a/b", QoS::AtLeastOnce, false, b"hash")
        .await;
    publisher
        .publish("other/t", QoS::AtLeastOnce, false, b"none")
        .await;

    let got = sub.publishes(3).await;
    assert_eq!(
        payloads(&got),
        [&b"both"[..], b"hash", b"none"],
        "one copy each"
    );
    let ids: BTreeSet<usize> = props(&got[0])
        .subscription_identifiers
        .into_iter()
        .collect();
    assert_eq!(ids, BTreeSet::from([1, 2]));
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_eq!(props(&got[1]).subscription_identifiers, [2]);
    assert!(props(&got[2]).subscription_identifiers.is_empty());
    sub.expect_no_publish().await;
    server.shutdown().await;
}

/// v5: [MQTT-3.8.3-3]
/// No Local: a client does not get its own publications back on a No Local subscription, but
/// does get other clients' publications.
#[tokio::test]
async fn no_local_suppresses_own_publications() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut me = connected(&server, "me").await;
    let filter = Filter {
        nolocal: true,
        ..Filter::new("nl/t", QoS::AtLeastOnce)
    };
    let codes = me.subscribe_with(vec![filter], None).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let mut other = connected(&server, "other").await;

    me.publish("nl/t", QoS::AtLeastOnce, false, b"mine").await;
    other
        .publish("nl/t", QoS::AtLeastOnce, false, b"theirs")
        .await;
    let got = me.next_publish().await;
    assert_eq!(&got.payload[..], b"theirs");
    me.expect_no_publish().await;
    server.shutdown().await;
}

/// v5: [MQTT-3.3.1-12] [MQTT-3.3.1-13]
/// Retain As Published: a subscriber with RAP=1 sees RETAIN=1 on a live retained publication,
/// one with RAP=0 sees RETAIN=0.
#[tokio::test]
async fn retain_as_published() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut rap = connected(&server, "rap").await;
    let filter = Filter {
        preserve_retain: true,
        ..Filter::new("rap/t", QoS::AtLeastOnce)
    };
    rap.subscribe_with(vec![filter], None).await;
    let mut plain = connected(&server, "plain").await;
    plain.subscribe("rap/t", QoS::AtLeastOnce).await;

    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("rap/t", QoS::AtLeastOnce, true, b"kept")
        .await;
    publisher
        .publish("rap/t", QoS::AtLeastOnce, false, b"not kept")
        .await;
    let got = rap.publishes(2).await;
    assert_eq!(payloads(&got), [&b"kept"[..], b"not kept"]);
    assert!(got[0].retain, "RAP=1 forwards RETAIN as published");
    assert!(!got[1].retain);
    let got = plain.publishes(2).await;
    assert!(!got[0].retain, "RAP=0 clears RETAIN");
    assert!(!got[1].retain);
    server.shutdown().await;
}

/// v5: [MQTT-3.3.1-11] [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.8.4-3] [MQTT-3.8.4-4]
/// Retain Handling 2 sends no retained messages on subscribe; Retain Handling 0 does, and
/// Retain Handling 1 only when the subscription is new.
#[tokio::test]
async fn retain_handling() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("rh/t", QoS::AtLeastOnce, true, b"kept")
        .await;

    let mut never = connected(&server, "never").await;
    let filter = Filter {
        retain_forward_rule: RetainForwardRule::Never,
        ..Filter::new("rh/#", QoS::AtLeastOnce)
    };
    never.subscribe_with(vec![filter], None).await;
    publisher
        .publish("rh/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    assert_eq!(topic(&never.next_publish().await), "rh/marker");

    let mut every = connected(&server, "every").await;
    every.subscribe("rh/t", QoS::AtLeastOnce).await;
    assert_eq!(&every.next_publish().await.payload[..], b"kept");
    every.subscribe("rh/t", QoS::AtLeastOnce).await;
    assert_eq!(
        &every.next_publish().await.payload[..],
        b"kept",
        "re-sent on a repeated subscription with Retain Handling 0"
    );

    let mut new_only = connected(&server, "new_only").await;
    let filter = Filter {
        retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        ..Filter::new("rh/t", QoS::AtLeastOnce)
    };
    new_only.subscribe_with(vec![filter.clone()], None).await;
    assert_eq!(&new_only.next_publish().await.payload[..], b"kept");
    new_only.subscribe_with(vec![filter], None).await;
    new_only.expect_no_publish().await;
    server.shutdown().await;
}

/// v5: [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
/// [MQTT-3.3.2-20]
/// User properties (with a repeated key), content type, payload format indicator, response topic
/// and correlation data reach the subscriber unchanged and in order.
#[tokio::test]
async fn publish_properties_pass_through() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut sub = connected(&server, "sub").await;
    sub.subscribe("props/t", QoS::AtLeastOnce).await;
    let mut publisher = connected(&server, "pub").await;
    let user_properties = vec![
        ("b".to_string(), "1".to_string()),
        ("a".to_string(), "2".to_string()),
        ("b".to_string(), "3".to_string()),
        ("ключ".to_string(), "значение".to_string()),
    ];
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xff])),
        user_properties: user_properties.clone(),
        ..Default::default()
    };
    publisher
        .publish_props("props/t", QoS::AtLeastOnce, false, b"{}", sent)
        .await;
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"{}");
    let p = props(&got);
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.response_topic.as_deref(), Some("props/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&[0, 1, 2, 0xff][..]));
    assert_eq!(p.user_properties, user_properties);
    assert_eq!(p.message_expiry_interval, None);
    assert_eq!(p.topic_alias, None);
    server.shutdown().await;
}

/// v5: [MQTT-3.3.2-5] [MQTT-3.3.2-6]
/// A message with Message Expiry 1 s queued for an offline session is dropped once expired; one
/// with 60 s is delivered with the remaining interval, lowered by the time it waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_expiry_while_offline() {
    let server = start_broker(BrokerConfig::default()).await;
    let (mut sub, _) = connect(persistent(&server, "sleeper")).await;
    sub.subscribe("exp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = connected(&server, "pub").await;
    for (payload, expiry) in [("short", 1), ("long", 60)] {
        let properties = PublishProperties {
            message_expiry_interval: Some(expiry),
            ..Default::default()
        };
        publisher
            .publish_props(
                "exp/t",
                QoS::AtLeastOnce,
                false,
                payload.as_bytes(),
                properties,
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut sub, ack) = connect(persistent(&server, "sleeper")).await;
    assert!(ack.session_present);
    let got = sub.next_publish().await;
    assert_eq!(
        &got.payload[..],
        b"long",
        "the expired message is not delivered"
    );
    let remaining = props(&got)
        .message_expiry_interval
        .expect("Message Expiry Interval forwarded");
    assert!(
        (1..=58).contains(&remaining),
        "remaining interval {remaining} after waiting > 2 s"
    );
    sub.expect_no_publish().await;
    server.shutdown().await;
}

/// v5: [MQTT-4.8.2-3] [MQTT-4.5.0-1]
/// Two members of `$share/g/...` split 10 messages between them: each gets some, together all
/// 10, none twice.
#[tokio::test]
async fn shared_subscription_splits_messages() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut a = connected(&server, "a").await;
    assert_eq!(
        a.subscribe("$share/g/sh/t", QoS::AtLeastOnce).await,
        QoS::AtLeastOnce
    );
    let mut b = connected(&server, "b").await;
    assert_eq!(
        b.subscribe("$share/g/sh/t", QoS::AtLeastOnce).await,
        QoS::AtLeastOnce
    );

    let mut publisher = connected(&server, "pub").await;
    for i in 0..10 {
        publisher
            .publish("sh/t", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    timeout(WAIT, async {
        while got_a.len() + got_b.len() < 10 {
            tokio::select! {
                Some(p) = a.publishes.recv() => got_a.push(p),
                Some(p) = b.publishes.recv() => got_b.push(p),
            }
        }
    })
    .await
    .expect("10 deliveries within the timeout");
    a.expect_no_publish().await;
    b.expect_no_publish().await;

    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "{} / {}",
        got_a.len(),
        got_b.len()
    );
    let mut all: Vec<u32> = got_a
        .iter()
        .chain(&got_b)
        .map(|p| {
            assert_eq!(topic(p), "sh/t");
            std::str::from_utf8(&p.payload).unwrap().parse().unwrap()
        })
        .collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    server.shutdown().await;
}

/// v5: [MQTT-3.3.2-12] [MQTT-3.3.2-3] [MQTT-3.1.2-27]
/// A publisher setting Topic Alias 1 with the topic, then publishing with an empty topic and
/// alias 1: both messages arrive with the full topic (and no alias towards a client that
/// allowed none).
#[tokio::test]
async fn inbound_topic_alias_resolved() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut sub = connected(&server, "sub").await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await;
    let (mut publisher, ack) = connect(options(&server, "pub")).await;
    let max = ack.properties.as_ref().and_then(|p| p.topic_alias_max);
    assert!(
        max.unwrap_or(0) >= 1,
        "broker offers topic aliases: {max:?}"
    );

    let alias = PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    publisher
        .publish_props(
            "alias/long/topic",
            QoS::AtLeastOnce,
            false,
            b"first",
            alias.clone(),
        )
        .await;
    publisher
        .publish_props("", QoS::AtLeastOnce, false, b"second", alias.clone())
        .await;
    publisher
        .publish_props("", QoS::AtMostOnce, false, b"third", alias)
        .await;
    let got = sub.publishes(3).await;
    assert_eq!(payloads(&got), [&b"first"[..], b"second", b"third"]);
    for p in &got {
        assert_eq!(topic(p), "alias/long/topic");
        assert_eq!(props(p).topic_alias, None);
    }
    server.shutdown().await;
}

/// v5: [MQTT-3.1.2-28]
/// Request Response Information = 1 gets Response Information in the CONNACK; without the
/// request there is none.
#[tokio::test]
async fn response_information_on_request() {
    let server = start_broker(BrokerConfig::default()).await;
    let mut opts = options(&server, "asker");
    opts.set_request_response_info(Some(1));
    let (_asker, ack) = connect(opts).await;
    let info = ack.properties.and_then(|p| p.response_information);
    assert_eq!(info.as_deref(), Some("response/asker"));

    let (_quiet, ack) = connect(options(&server, "quiet")).await;
    let info = ack.properties.and_then(|p| p.response_information);
    assert_eq!(info, None);
    server.shutdown().await;
}

/// v5: [MQTT-3.2.2-15] [MQTT-4.13.1-1] [MQTT-4.13.2-1]
/// With a broker Maximum Packet Size of 1024: the CONNACK advertises it and rumqttc refuses to
/// send a bigger PUBLISH; a bigger PUBLISH sent anyway gets DISCONNECT 0x95 and the connection
/// closed, while another client carries on.
#[tokio::test]
async fn oversized_publish_gets_0x95_and_only_that_connection_closes() {
    let server = start_broker(BrokerConfig {
        max_packet_size: 1024,
        ..BrokerConfig::default()
    })
    .await;
    let mut bystander = connected(&server, "bystander").await;
    bystander.subscribe("big/#", QoS::AtLeastOnce).await;

    // rumqttc honours the advertised limit on its side.
    let (mut big, ack) = connect(options(&server, "big")).await;
    assert_eq!(ack.properties.and_then(|p| p.max_packet_size), Some(1024));
    big.client
        .publish("big/t", QoS::AtLeastOnce, false, vec![b'x'; 2000])
        .await
        .expect("queue PUBLISH");
    let err = big.wait_failure().await;
    assert!(
        matches!(
            err,
            ConnectionError::MqttState(StateError::Deserialization(
                rumqttc::v5::mqttbytes::Error::OutgoingPacketTooLarge { max: 1024, .. }
            ))
        ),
        "{err:?}"
    );

    // A client that ignores the limit: DISCONNECT 0x95, then the broker closes.
    let mut raw = raw_connect_v5(&server, "raw").await;
    let publish = tern_codec::Publish {
        topic: "big/t".into(),
        payload: Bytes::from(vec![b'x'; 2000]),
        ..Default::default()
    };
    raw.send_packet(&Packet::Publish(publish), ProtocolVersion::V5)
        .await;
    match raw
        .recv_packet(ProtocolVersion::V5)
        .await
        .expect("DISCONNECT")
    {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode(0x95)),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    raw.expect_closed().await.expect("closed after DISCONNECT");
    bystander.expect_no_publish().await;

    let mut publisher = connected(&server, "pub").await;
    publisher
        .publish("big/t", QoS::AtLeastOnce, false, &[b'y'; 500])
        .await;
    assert_eq!(bystander.next_publish().await.payload.len(), 500);
    server.shutdown().await;
}
