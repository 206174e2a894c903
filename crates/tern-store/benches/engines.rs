//! Compares the two candidate engines, redb and fjall, on the store's workload: small atomic
//! commits, each fsync'd, of puts and deletes keyed by (client id, seq); then the time to open
//! and read back a store of many small records.
//!
//! Run with `cargo bench -p tern-store --bench engines` (set `TERN_BENCH_SECS` to change the
//! seconds spent per row, `TERN_BENCH_RECORDS` the size of the load test, `TERN_BENCH_DIR` where
//! the databases go; by default under the target directory). Prints a table. Under `cargo test
//! --benches` it makes one quick pass so that it keeps compiling and running.

use std::path::Path;
use std::time::{Duration, Instant};

const CLIENTS: u64 = 16;

/// Key of (client id, seq): the client id bytes, a 0 separator, the seq big-endian.
fn key(client: u64, seq: u64) -> Vec<u8> {
    let mut k = format!("client-{client:04}").into_bytes();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The workload as a stream of operations: even steps put a fresh key (alternately a 100-byte and
/// a 1 KiB value), odd steps delete the oldest key still present.
struct Workload {
    step: u64,
    put: u64,
    deleted: u64,
    small: Vec<u8>,
    large: Vec<u8>,
    puts_only: bool,
}

enum Op<'a> {
    Put(Vec<u8>, &'a [u8]),
    Delete(Vec<u8>),
}

impl Workload {
    fn new() -> Self {
        Workload {
            step: 0,
            put: 0,
            deleted: 0,
            small: vec![0xA5; 100],
            large: vec![0x5A; 1024],
            puts_only: false,
        }
    }

    fn next(&mut self) -> Op<'_> {
        self.step += 1;
        if self.puts_only || self.step % 2 == 1 || self.deleted >= self.put {
            let n = self.put;
            self.put += 1;
            let value = if n.is_multiple_of(2) {
                &self.small
            } else {
                &self.large
            };
            Op::Put(key(n % CLIENTS, n / CLIENTS), value)
        } else {
            let n = self.deleted;
            self.deleted += 1;
            Op::Delete(key(n % CLIENTS, n / CLIENTS))
        }
    }
}

trait Engine {
    fn name() -> &'static str;
    fn open(dir: &Path) -> Self;
    /// One atomic commit of `n` workload operations, fsync'd when `sync`.
    fn commit(&mut self, w: &mut Workload, n: usize, sync: bool);
    /// Reads every record; returns the count.
    fn scan(&mut self) -> usize;
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("deliveries");

struct Redb(redb::Database);

impl Engine for Redb {
    fn name() -> &'static str {
        "redb 4"
    }

    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("tern.redb")).expect("open redb");
        let tx = db.begin_write().expect("begin");
        tx.open_table(TABLE).expect("table");
        tx.commit().expect("commit");
        Redb(db)
    }

    fn commit(&mut self, w: &mut Workload, n: usize, sync: bool) {
        let mut tx = self.0.begin_write().expect("begin");
        let durability = if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        tx.set_durability(durability).expect("durability");
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for _ in 0..n {
                match w.next() {
                    Op::Put(k, v) => {
                        t.insert(k.as_slice(), v).expect("insert");
                    }
                    Op::Delete(k) => {
                        t.remove(k.as_slice()).expect("remove");
                    }
                }
            }
        }
        tx.commit().expect("commit");
    }

    fn scan(&mut self) -> usize {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.0.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        let mut count = 0;
        for kv in t.iter().expect("iter") {
            let (k, v) = kv.expect("kv");
            std::hint::black_box((k.value().len(), v.value().len()));
            count += 1;
        }
        count
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    fn name() -> &'static str {
        "fjall 3"
    }

    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("fjall"))
            .open()
            .expect("open fjall");
        let ks = db
            .keyspace("deliveries", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        Fjall { db, ks }
    }

    fn commit(&mut self, w: &mut Workload, n: usize, sync: bool) {
        let mode = if sync {
            Some(fjall::PersistMode::SyncAll)
        } else {
            None
        };
        let mut b = self.db.batch().durability(mode);
        for _ in 0..n {
            match w.next() {
                Op::Put(k, v) => b.insert(&self.ks, k, v),
                Op::Delete(k) => b.remove(&self.ks, k),
            }
        }
        b.commit().expect("commit");
    }

    fn scan(&mut self) -> usize {
        let mut count = 0;
        for kv in self.ks.iter() {
            let (k, v) = kv.into_inner().expect("kv");
            std::hint::black_box((k.len(), v.len()));
            count += 1;
        }
        count
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Commits batches of `batch` ops with fsync for `secs`; returns (commits/s, ops/s).
fn commits<E: Engine>(batch: usize, secs: u64) -> (f64, f64) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let mut e = E::open(dir.path());
    let mut w = Workload::new();
    // Warm up with some data so deletes hit real keys.
    for _ in 0..20 {
        e.commit(&mut w, 100, false);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        e.commit(&mut w, batch, true);
        n += 1;
    }
    let s = start.elapsed().as_secs_f64();
    (n as f64 / s, (n as f64 * batch as f64) / s)
}

/// Writes `records` small records, closes, then times open and a full read.
fn load<E: Engine>(records: u64) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let start = Instant::now();
    {
        let mut e = E::open(dir.path());
        let mut w = Workload::new();
        w.large = vec![0x5A; 100];
        w.puts_only = true;
        let mut done = 0;
        while done < records {
            let n = 1000.min(records - done);
            e.commit(&mut w, n as usize, false);
            done += n;
        }
        e.commit(&mut w, 1, true);
    }
    let write = start.elapsed();
    let t = Instant::now();
    let mut e = E::open(dir.path());
    let open = t.elapsed();
    let t = Instant::now();
    let count = e.scan();
    let scan = t.elapsed();
    assert_eq!(count as u64, records + 1);
    (write, open, scan)
}

fn bench_dir() -> std::path::PathBuf {
    // Under the target dir by default: on a real disk, not a tmpfs.
    let dir: std::path::PathBuf = std::env::var_os("TERN_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("engines"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

fn run<E: Engine>(secs: u64, records: u64) {
    for batch in [1usize, 10, 100] {
        let (c, o) = commits::<E>(batch, secs);
        println!(
            "| {:<8} | commit, batch {:>3}, fsync | {:>10.0} commits/s | {:>10.0} ops/s |",
            E::name(),
            batch,
            c,
            o
        );
    }
    if records > 0 {
        let (write, open, scan) = load::<E>(records);
        println!(
            "| {:<8} | {} records: write {:.2?} (no fsync) | open {:.2?} | full read {:.2?} |",
            E::name(),
            records,
            write,
            open,
            scan
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run a token pass then.
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = env_u64("TERN_BENCH_SECS", if benching { 5 } else { 0 });
    let records = env_u64(
        "TERN_BENCH_RECORDS",
        if benching { 1_000_000 } else { 1000 },
    );
    println!("| engine   | what | rate | rate |");
    println!("|---|---|---|---|");
    run::<Redb>(secs, records);
    run::<Fjall>(secs, records);
}
