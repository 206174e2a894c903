//! The store contract, for both stores: every operation round-trips through commit, drop, reopen
//! and load; session deletes are complete; times convert; bad files are errors, left untouched.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_broker::session::{Message, OutState, SubEntry, Will};
use tern_codec::SubscriptionOptions;
use tern_codec::{
    LastWill, PacketId, Properties, PropertySet, ProtocolVersion, QoS, RetainHandling,
};
use tern_store::{
    DiskStore, FILE_NAME, MemoryStore, SessionRecord, Snapshot, Store, StoreError, StoreOp,
    StoredDelivery,
};

type Raw = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

fn rich_properties() -> Properties {
    PropertySet {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(3600),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "again".into()),
        ],
        ..Default::default()
    }
    .into()
}

fn message(topic: &str, qos: QoS, expires_in: Option<Duration>) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from(vec![0u8, 1, 2, 255, b'x']),
        qos,
        retain: true,
        properties: if qos == QoS::AtMostOnce {
            Properties::default()
        } else {
            rich_properties()
        },
        expires_at: expires_in.map(|d| Instant::now() + d),
        publisher: None,
        shared_properties: Default::default(),
        pending_shards: Default::default(),
    })
}

fn record(id: &str, with_will: bool) -> SessionRecord {
    let options = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let mut will_props = rich_properties();
    will_props.will_delay_interval = Some(30);
    SessionRecord {
        client_id: Arc::from(id),
        version: ProtocolVersion::V5,
        expiry_interval: 600,
        expires_at: Some(Instant::now() + Duration::from_secs(600)),
        subscriptions: vec![
            (
                "a/+/c".into(),
                SubEntry {
                    options,
                    sub_id: Some(268_435_455),
                },
            ),
            (
                "$share/g/x/#".into(),
                SubEntry {
                    options: SubscriptionOptions::new(QoS::AtLeastOnce),
                    sub_id: None,
                },
            ),
        ],
        will: with_will.then(|| Will {
            will: LastWill {
                topic: format!("wills/{id}"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: will_props,
            },
            delay: 30,
        }),
        will_at: with_will.then(|| Instant::now() + Duration::from_secs(30)),
    }
}

fn delivery(topic: &str, inflight: Option<(u16, OutState)>) -> StoredDelivery {
    StoredDelivery {
        msg: message(topic, QoS::ExactlyOnce, Some(Duration::from_secs(100))),
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: vec![1, 7, 268_435_455],
        inflight: inflight.map(|(id, s)| (PacketId::new(id).unwrap(), s)),
    }
}

fn put_delivery(id: &str, seq: u64, d: StoredDelivery) -> StoreOp {
    StoreOp::PutDelivery {
        client_id: Arc::from(id),
        seq,
        delivery: d,
    }
}

fn put_inbound(id: &str, packet_id: u16) -> StoreOp {
    StoreOp::PutInbound {
        client_id: Arc::from(id),
        packet_id,
    }
}

/// Batches exercising every operation, with the expected survivors documented in the test.
fn batches() -> Vec<(Vec<StoreOp>, bool)> {
    vec![
        (
            vec![
                StoreOp::PutRetained(message("r/1", QoS::AtLeastOnce, None)),
                StoreOp::PutRetained(message("r/2", QoS::AtMostOnce, None)),
                StoreOp::PutRetained(message(
                    "r/3",
                    QoS::ExactlyOnce,
                    Some(Duration::from_secs(60)),
                )),
                StoreOp::PutSession(record("alice", true)),
                StoreOp::PutSession(record("bob", false)),
                StoreOp::PutSession(record("carol", true)),
            ],
            true,
        ),
        (
            vec![
                put_delivery("alice", 1, delivery("q/1", None)),
                put_delivery(
                    "alice",
                    2,
                    delivery("q/2", Some((1, OutState::AwaitPuback))),
                ),
                put_delivery(
                    "alice",
                    3,
                    delivery("q/3", Some((2, OutState::AwaitPubrec))),
                ),
                put_delivery(
                    "alice",
                    4,
                    delivery("q/4", Some((65535, OutState::AwaitPubcomp))),
                ),
                put_delivery("bob", 9, delivery("q/9", None)),
                put_delivery("carol", 1, delivery("q/c", None)),
                put_inbound("alice", 10),
                put_inbound("alice", 11),
                put_inbound("carol", 5),
            ],
            false,
        ),
        (
            vec![
                StoreOp::DeleteRetained("r/2".into()),
                StoreOp::DeleteDelivery {
                    client_id: Arc::from("alice"),
                    seq: 1,
                },
                StoreOp::DeleteInbound {
                    client_id: Arc::from("alice"),
                    packet_id: 10,
                },
                StoreOp::DeleteSession(Arc::from("carol")),
                // Replaced: the later put wins.
                StoreOp::PutSession(record("bob", true)),
                StoreOp::PutRetained(message("r/1", QoS::ExactlyOnce, None)),
            ],
            true,
        ),
    ]
}

/// A comparable rendering of a snapshot: everything but the `Instant`s as text, the `Instant`s
/// apart (they go through wall-clock time on disk and come back close, not equal).
fn norm(s: &Snapshot) -> (String, Vec<Option<Instant>>) {
    let mut text = String::new();
    let mut times = Vec::new();
    let mut msg = |m: &Message, text: &mut String| {
        text.push_str(&format!(
            "msg {:?} {:?} {:?} {} {:?} {:?}\n",
            m.topic, m.payload, m.qos, m.retain, m.properties, m.publisher
        ));
        times.push(m.expires_at);
    };
    for m in &s.retained {
        msg(m, &mut text);
    }
    let mut session_times = Vec::new();
    for st in &s.sessions {
        let r = &st.record;
        text.push_str(&format!(
            "session {:?} {:?} {} {:?} {:?}\n",
            r.client_id, r.version, r.expiry_interval, r.subscriptions, r.will
        ));
        session_times.push(r.expires_at);
        session_times.push(r.will_at);
        for (seq, d) in &st.deliveries {
            text.push_str(&format!(
                "delivery {seq} {:?} {} {:?} {:?}\n",
                d.qos, d.retain, d.sub_ids, d.inflight
            ));
            msg(&d.msg, &mut text);
        }
        text.push_str(&format!("inbound {:?}\n", st.inbound));
    }
    times.extend(session_times);
    (text, times)
}

fn assert_same(a: &Snapshot, b: &Snapshot) {
    let (ta, ia) = norm(a);
    let (tb, ib) = norm(b);
    assert_eq!(ta, tb);
    assert_eq!(ia.len(), ib.len());
    for (x, y) in ia.iter().zip(&ib) {
        match (x, y) {
            (None, None) => {}
            (Some(x), Some(y)) => {
                let d = if x > y { *x - *y } else { *y - *x };
                assert!(d < Duration::from_millis(250), "times differ by {d:?}");
            }
            _ => panic!("one time is set, the other not: {x:?} {y:?}"),
        }
    }
}

fn apply(store: &mut dyn Store, batches: &[(Vec<StoreOp>, bool)]) {
    for (ops, sync) in batches {
        store.commit(ops, *sync).unwrap();
    }
}

fn reopen(dir: &Path) -> Snapshot {
    DiskStore::open(dir).unwrap().load().unwrap()
}

#[test]
fn every_op_round_trips_through_both_stores() {
    let batches = batches();
    let mut mem = MemoryStore::new();
    apply(&mut mem, &batches);
    let expected = mem.load().unwrap();

    let topics: Vec<_> = expected.retained.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["r/1", "r/3"]);
    assert_eq!(expected.retained[0].qos, QoS::ExactlyOnce);
    let ids: Vec<_> = expected
        .sessions
        .iter()
        .map(|s| &*s.record.client_id)
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
    let alice = &expected.sessions[0];
    let seqs: Vec<_> = alice.deliveries.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(alice.inbound, [11]);
    assert!(expected.sessions[1].record.will.is_some());

    let dir = tempfile::tempdir().unwrap();
    {
        let mut disk = DiskStore::open(dir.path()).unwrap();
        assert_eq!(disk.path(), dir.path());
        assert_eq!(disk.file(), dir.path().join(FILE_NAME));
        apply(&mut disk, &batches);
        assert_same(&expected, &disk.load().unwrap());
    }
    let loaded = reopen(dir.path());
    assert_same(&expected, &loaded);
    // The publisher is not stored.
    assert!(loaded.retained.iter().all(|m| m.publisher.is_none()));
}

#[test]
fn empty_store_loads_empty_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path());
    assert!(s.retained.is_empty() && s.sessions.is_empty());
    let s = reopen(dir.path());
    assert!(s.retained.is_empty() && s.sessions.is_empty());
    assert!(MemoryStore::new().load().unwrap().sessions.is_empty());
}

#[test]
fn delete_session_removes_its_deliveries_and_inbound_ids_only() {
    let dir = tempfile::tempdir().unwrap();
    let ops = vec![
        StoreOp::PutSession(record("a", false)),
        StoreOp::PutSession(record("ab", false)),
        put_delivery("a", 1, delivery("t", None)),
        put_delivery("a", u64::MAX, delivery("t", None)),
        put_delivery("ab", 0, delivery("t", None)),
        put_inbound("a", 1),
        put_inbound("a", u16::MAX),
        put_inbound("ab", 2),
    ];
    let delete = vec![StoreOp::DeleteSession(Arc::from("a"))];
    let again = vec![StoreOp::PutSession(record("a", false))];
    let mut mem = MemoryStore::new();
    {
        let mut disk = DiskStore::open(dir.path()).unwrap();
        for s in [&mut mem as &mut dyn Store, &mut disk] {
            s.commit(&ops, true).unwrap();
            s.commit(&delete, true).unwrap();
            s.commit(&again, true).unwrap();
        }
    }
    let loaded = reopen(dir.path());
    assert_same(&mem.load().unwrap(), &loaded);
    let a = &loaded.sessions[0];
    assert_eq!(&*a.record.client_id, "a");
    assert!(a.deliveries.is_empty() && a.inbound.is_empty());
    let ab = &loaded.sessions[1];
    assert_eq!(ab.deliveries.len(), 1);
    assert_eq!(ab.inbound, [2]);
}

#[test]
fn deliveries_load_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let seqs = [300u64, 2, 256, 1, 70_000, 1 << 40, 255];
    let mut ops = vec![StoreOp::PutSession(record("c", false))];
    ops.extend(
        seqs.iter()
            .map(|&s| put_delivery("c", s, delivery("t", None))),
    );
    let mut mem = MemoryStore::new();
    mem.commit(&ops, true).unwrap();
    DiskStore::open(dir.path())
        .unwrap()
        .commit(&ops, true)
        .unwrap();
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    for s in [mem.load().unwrap(), reopen(dir.path())] {
        let got: Vec<_> = s.sessions[0].deliveries.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, sorted);
    }
}

#[test]
fn times_past_while_down_load_as_past() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = record("d", true);
    rec.expires_at = Some(Instant::now() + Duration::from_millis(20));
    rec.will_at = Some(Instant::now() + Duration::from_millis(20));
    let ops = vec![
        StoreOp::PutRetained(message(
            "soon",
            QoS::AtLeastOnce,
            Some(Duration::from_millis(20)),
        )),
        StoreOp::PutRetained(message(
            "later",
            QoS::AtLeastOnce,
            Some(Duration::from_secs(3600)),
        )),
        StoreOp::PutSession(rec),
    ];
    DiskStore::open(dir.path())
        .unwrap()
        .commit(&ops, true)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let s = reopen(dir.path());
    let now = Instant::now();
    let later = &s.retained[0];
    let soon = &s.retained[1];
    assert_eq!(
        (later.topic.as_str(), soon.topic.as_str()),
        ("later", "soon")
    );
    assert!(soon.expires_at.unwrap() <= now);
    assert!(soon.expired(now));
    assert!(later.expires_at.unwrap() > now + Duration::from_secs(3500));
    assert!(s.sessions[0].record.expires_at.unwrap() <= now);
    assert!(s.sessions[0].record.will_at.unwrap() <= now);
}

#[test]
fn commit_with_a_delivery_for_no_session_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ops = vec![
        StoreOp::PutRetained(message("r", QoS::AtLeastOnce, None)),
        put_delivery("nobody", 1, delivery("t", None)),
    ];
    let inbound = vec![put_inbound("nobody", 1)];
    let deleted_first = vec![
        StoreOp::PutSession(record("x", false)),
        StoreOp::DeleteSession(Arc::from("x")),
        put_inbound("x", 1),
    ];
    let mut mem = MemoryStore::new();
    let mut disk = DiskStore::open(dir.path()).unwrap();
    for s in [&mut mem as &mut dyn Store, &mut disk] {
        for bad in [&ops, &inbound, &deleted_first] {
            let err = s.commit(bad, true).unwrap_err();
            assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
        }
        let snap = s.load().unwrap();
        assert!(snap.retained.is_empty() && snap.sessions.is_empty());
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = DiskStore::open(dir.path()).unwrap();
    let err = DiskStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

/// Rewrites one raw entry of a closed store.
fn poke(dir: &Path, table: &'static str, key: &[u8], value: &[u8]) {
    let db = redb::Database::open(dir.join(FILE_NAME)).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(Raw::new(table)).unwrap();
        t.insert(key, value).unwrap();
    }
    tx.commit().unwrap();
}

fn assert_names_file(err: &StoreError, dir: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&dir.join(FILE_NAME).display().to_string()),
        "{text}"
    );
}

#[test]
fn another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    DiskStore::open(dir.path())
        .unwrap()
        .commit(&[StoreOp::PutSession(record("v", false))], true)
        .unwrap();
    poke(dir.path(), "meta", b"format", b"tern-store 99");
    let err = DiskStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Version { .. }), "{err}");
    assert!(err.to_string().contains("tern-store 99"));
    assert!(err.to_string().contains("move it aside"));
    assert_names_file(&err, dir.path());
}

#[test]
fn a_redb_file_that_is_not_a_tern_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(Raw::new("something_else"))
            .unwrap()
            .insert(&b"k"[..], &b"v"[..])
            .unwrap();
        tx.commit().unwrap();
    }
    let err = DiskStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Version { .. }), "{err}");
}

#[test]
fn a_bad_version_byte_in_a_value_is_an_error() {
    for (table, key) in [
        ("sessions", b"s".to_vec()),
        ("retained", b"r".to_vec()),
        (
            "deliveries",
            [&[0u8, 1, b's'][..], &1u64.to_be_bytes()].concat(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        DiskStore::open(dir.path())
            .unwrap()
            .commit(
                &[
                    StoreOp::PutRetained(message("r", QoS::AtLeastOnce, None)),
                    StoreOp::PutSession(record("s", true)),
                    put_delivery("s", 1, delivery("t", None)),
                ],
                true,
            )
            .unwrap();
        let value = {
            let db = redb::Database::open(dir.path().join(FILE_NAME)).unwrap();
            let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
            let t = tx.open_table(Raw::new(table)).unwrap();
            t.get(key.as_slice()).unwrap().unwrap().value().to_vec()
        };
        let mut bad = value.clone();
        bad[0] = 9;
        poke(dir.path(), table, &key, &bad);
        let err = DiskStore::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(table), "{err}");
        assert_names_file(&err, dir.path());
        // Truncated value: also an error.
        poke(dir.path(), table, &key, &value[..value.len() / 2]);
        let err = DiskStore::open(dir.path()).unwrap().load().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}

#[test]
fn a_bad_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    DiskStore::open(dir.path())
        .unwrap()
        .commit(&[StoreOp::PutSession(record("s", false))], true)
        .unwrap();
    poke(dir.path(), "inbound", b"\x00\x09short", b"");
    let err = DiskStore::open(dir.path()).unwrap().load().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn a_garbage_file_is_an_error_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(&file, &garbage).unwrap();
    let err = DiskStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("move it aside"), "{err}");
    assert_names_file(&err, dir.path());
    assert_eq!(std::fs::read(&file).unwrap(), garbage);
}

#[test]
fn an_empty_file_is_an_error_and_is_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, b"").unwrap();
    let err = DiskStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
    assert!(file.exists());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
}

#[test]
fn a_truncated_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut ops = vec![StoreOp::PutSession(record("t", true))];
    for seq in 0..2000 {
        ops.push(put_delivery("t", seq, delivery("big/topic", None)));
    }
    DiskStore::open(dir.path())
        .unwrap()
        .commit(&ops, true)
        .unwrap();
    let file = dir.path().join(FILE_NAME);
    let full = std::fs::read(&file).unwrap();
    for len in [1, 100, 512, 4096, full.len() / 4, full.len() / 2] {
        let cut = &full[..len];
        std::fs::write(&file, cut).unwrap();
        let result = DiskStore::open(dir.path()).and_then(|mut s| s.load());
        assert!(
            result.is_err(),
            "a file cut to {len} of {} bytes opened",
            full.len()
        );
    }
}
