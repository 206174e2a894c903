//! [`DiskStore`]: the embedded ACID store, one redb file `tern.redb` in the data directory.
//!
//! Each [`Store::commit`] is one redb write transaction: all of its operations or none, and with
//! `sync` it is fsync'd before `commit` returns. The tables (see `format.rs` for keys and
//! values): `meta` (the format string), `retained`, `sessions`, `deliveries`, `inbound`.
//!
//! Opening never rewrites an existing file it cannot read: an empty, damaged or foreign file, or
//! one of another format version, is an error that leaves the file as it was.

use std::fs;
use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use tern_broker::persist::{Snapshot, StoreOp, StoredSession};

use crate::format::{self, FORMAT, FORMAT_KEY};
use crate::time::Anchor;
use crate::{Store, StoreError};

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "tern.redb";

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

const META: Table = TableDefinition::new("meta");
const RETAINED: Table = TableDefinition::new("retained");
const SESSIONS: Table = TableDefinition::new("sessions");
const DELIVERIES: Table = TableDefinition::new("deliveries");
const INBOUND: Table = TableDefinition::new("inbound");

/// The durable store: a redb database in a data directory.
pub struct DiskStore {
    /// The data directory as given to [`DiskStore::open`].
    dir: PathBuf,
    /// The database file in it.
    file: PathBuf,
    /// The open database.
    db: Database,
    /// Converts between `Instant`s and wall-clock time; taken at open.
    anchor: Anchor,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("file", &self.file)
            .finish()
    }
}

impl DiskStore {
    /// Opens the store in `dir` (created if missing), or creates an empty one there.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let exists = match fs::metadata(&file) {
            Ok(m) if m.len() == 0 => {
                return Err(StoreError::Unreadable {
                    path: file,
                    reason: "the file is empty (0 bytes)".into(),
                });
            }
            Ok(m) if !m.is_file() => {
                return Err(StoreError::Unreadable {
                    path: file,
                    reason: "it is not a regular file".into(),
                });
            }
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(source) => return Err(StoreError::Io { path: file, source }),
        };
        let opened = catch_unwind(AssertUnwindSafe(|| {
            if exists {
                Database::open(&file)
            } else {
                Database::create(&file)
            }
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::Locked { path: file });
            }
            Ok(Err(e)) => {
                return Err(StoreError::Unreadable {
                    path: file,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(StoreError::Unreadable {
                    path: file,
                    reason: "the storage engine failed reading it".into(),
                });
            }
        };
        let store = DiskStore {
            dir: dir.to_path_buf(),
            file,
            db,
            anchor: Anchor::now(),
        };
        store.check_format()?;
        Ok(store)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The database file inside the data directory.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Checks the format string; writes it (with every table) into a database with no tables.
    fn check_format(&self) -> Result<(), StoreError> {
        let rtx = self.db.begin_read().map_err(self.engine("read"))?;
        let found = match rtx.open_table(META) {
            Ok(meta) => meta
                .get(FORMAT_KEY)
                .map_err(self.engine("read the format"))?
                .map(|v| format::decode_format(v.value())),
            Err(TableError::TableDoesNotExist(_)) => {
                let empty = rtx
                    .list_tables()
                    .map_err(self.engine("list tables"))?
                    .next()
                    .is_none();
                if empty {
                    drop(rtx);
                    return self.initialize();
                }
                return Err(self.version_error("no `meta` table: not a Tern store"));
            }
            Err(e) => return Err(self.version_error(&e.to_string())),
        };
        match found {
            Some(f) if f == FORMAT => Ok(()),
            Some(f) => Err(self.version_error(&f)),
            None => Err(self.version_error("no format entry")),
        }
    }

    /// Creates every table and writes the format string, durably.
    fn initialize(&self) -> Result<(), StoreError> {
        let op = "initialize";
        let mut tx = self.db.begin_write().map_err(self.engine(op))?;
        tx.set_durability(Durability::Immediate)
            .map_err(self.engine(op))?;
        {
            let mut meta = tx.open_table(META).map_err(self.engine(op))?;
            meta.insert(FORMAT_KEY, FORMAT.as_bytes())
                .map_err(self.engine(op))?;
            for t in [RETAINED, SESSIONS, DELIVERIES, INBOUND] {
                tx.open_table(t).map_err(self.engine(op))?;
            }
        }
        tx.commit().map_err(self.engine(op))
    }

    fn version_error(&self, found: &str) -> StoreError {
        StoreError::Version {
            path: self.file.clone(),
            found: found.to_owned(),
            expected: FORMAT,
        }
    }

    /// Maps an engine error during `op`.
    fn engine<E: Into<redb::Error>>(&self, op: &'static str) -> impl Fn(E) -> StoreError + '_ {
        move |e| StoreError::Engine {
            path: self.file.clone(),
            op,
            reason: e.into().to_string(),
        }
    }

    fn corrupt(&self, table: &'static str, key: &[u8], reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.file.clone(),
            table,
            key: show_key(key),
            reason,
        }
    }

    fn invalid(&self, reason: String) -> StoreError {
        StoreError::Invalid {
            path: self.file.clone(),
            reason,
        }
    }

    fn load_inner(&self) -> Result<Snapshot, StoreError> {
        let op = "load";
        let tx = self.db.begin_read().map_err(self.engine(op))?;
        let a = &self.anchor;

        let mut retained = Vec::new();
        let table = tx.open_table(RETAINED).map_err(self.engine(op))?;
        for kv in table.iter().map_err(self.engine(op))? {
            let (k, v) = kv.map_err(self.engine(op))?;
            let (k, v) = (k.value(), v.value());
            let msg = format::decode_message(v, a).map_err(|r| self.corrupt("retained", k, r))?;
            if msg.topic.as_bytes() != k {
                return Err(self.corrupt("retained", k, "key and topic differ".into()));
            }
            retained.push(Arc::new(msg));
        }

        let mut sessions: BTreeMap<Vec<u8>, StoredSession> = BTreeMap::new();
        let table = tx.open_table(SESSIONS).map_err(self.engine(op))?;
        for kv in table.iter().map_err(self.engine(op))? {
            let (k, v) = kv.map_err(self.engine(op))?;
            let (k, v) = (k.value(), v.value());
            let id = std::str::from_utf8(k)
                .map_err(|_| self.corrupt("sessions", k, "client id is not UTF-8".into()))?;
            let record =
                format::decode_session(id, v, a).map_err(|r| self.corrupt("sessions", k, r))?;
            let session = StoredSession {
                record,
                deliveries: Vec::new(),
                inbound: Vec::new(),
            };
            sessions.insert(k.to_vec(), session);
        }

        let table = tx.open_table(DELIVERIES).map_err(self.engine(op))?;
        for kv in table.iter().map_err(self.engine(op))? {
            let (k, v) = kv.map_err(self.engine(op))?;
            let (k, v) = (k.value(), v.value());
            let (id, seq) =
                format::split_client_key::<8>(k).map_err(|r| self.corrupt("deliveries", k, r))?;
            let d = format::decode_delivery(v, a).map_err(|r| self.corrupt("deliveries", k, r))?;
            let session = sessions
                .get_mut(id.as_bytes())
                .ok_or_else(|| self.corrupt("deliveries", k, "no session holds it".into()))?;
            session.deliveries.push((u64::from_be_bytes(seq), d));
        }

        let table = tx.open_table(INBOUND).map_err(self.engine(op))?;
        for kv in table.iter().map_err(self.engine(op))? {
            let (k, _) = kv.map_err(self.engine(op))?;
            let k = k.value();
            let (id, pid) =
                format::split_client_key::<2>(k).map_err(|r| self.corrupt("inbound", k, r))?;
            let session = sessions
                .get_mut(id.as_bytes())
                .ok_or_else(|| self.corrupt("inbound", k, "no session holds it".into()))?;
            session.inbound.push(u16::from_be_bytes(pid));
        }

        Ok(Snapshot {
            retained,
            sessions: sessions.into_values().collect(),
        })
    }

    fn commit_inner(&self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        let op = "commit";
        let mut tx = self.db.begin_write().map_err(self.engine(op))?;
        let durability = if sync {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).map_err(self.engine(op))?;
        let a = &self.anchor;
        {
            let mut retained = tx.open_table(RETAINED).map_err(self.engine(op))?;
            let mut sessions = tx.open_table(SESSIONS).map_err(self.engine(op))?;
            let mut deliveries = tx.open_table(DELIVERIES).map_err(self.engine(op))?;
            let mut inbound = tx.open_table(INBOUND).map_err(self.engine(op))?;
            // Every put of a delivery or inbound id needs its session in this transaction.
            let check = |sessions: &redb::Table<&[u8], &[u8]>, id: &str| {
                if !format::client_id_fits(id) {
                    return Err(self.invalid(format!("client id of {} bytes", id.len())));
                }
                match sessions.get(id.as_bytes()).map_err(self.engine(op))? {
                    Some(_) => Ok(()),
                    None => Err(self.invalid(crate::orphan_reason(id))),
                }
            };
            for o in ops {
                match o {
                    StoreOp::PutRetained(m) => {
                        let v = format::encode_message(m, a);
                        retained
                            .insert(m.topic.as_bytes(), v.as_slice())
                            .map_err(self.engine(op))?;
                    }
                    StoreOp::DeleteRetained(topic) => {
                        retained.remove(topic.as_bytes()).map_err(self.engine(op))?;
                    }
                    StoreOp::PutSession(r) => {
                        if !format::client_id_fits(&r.client_id) {
                            let n = r.client_id.len();
                            return Err(self.invalid(format!("client id of {n} bytes")));
                        }
                        let v = format::encode_session(r, a);
                        sessions
                            .insert(r.client_id.as_bytes(), v.as_slice())
                            .map_err(self.engine(op))?;
                    }
                    StoreOp::DeleteSession(id) => {
                        sessions.remove(id.as_bytes()).map_err(self.engine(op))?;
                        if format::client_id_fits(id) {
                            let prefix = format::client_prefix(id);
                            let (lo, hi) = prefix_range(&prefix, 8);
                            deliveries
                                .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)
                                .map_err(self.engine(op))?;
                            let (lo, hi) = prefix_range(&prefix, 2);
                            inbound
                                .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)
                                .map_err(self.engine(op))?;
                        }
                    }
                    StoreOp::PutDelivery {
                        client_id,
                        seq,
                        delivery,
                    } => {
                        check(&sessions, client_id)?;
                        let v = format::encode_delivery(delivery, a);
                        deliveries
                            .insert(
                                format::delivery_key(client_id, *seq).as_slice(),
                                v.as_slice(),
                            )
                            .map_err(self.engine(op))?;
                    }
                    StoreOp::DeleteDelivery { client_id, seq } => {
                        if format::client_id_fits(client_id) {
                            deliveries
                                .remove(format::delivery_key(client_id, *seq).as_slice())
                                .map_err(self.engine(op))?;
                        }
                    }
                    StoreOp::PutInbound {
                        client_id,
                        packet_id,
                    } => {
                        check(&sessions, client_id)?;
                        inbound
                            .insert(
                                format::inbound_key(client_id, *packet_id).as_slice(),
                                &[][..],
                            )
                            .map_err(self.engine(op))?;
                    }
                    StoreOp::DeleteInbound {
                        client_id,
                        packet_id,
                    } => {
                        if format::client_id_fits(client_id) {
                            inbound
                                .remove(format::inbound_key(client_id, *packet_id).as_slice())
                                .map_err(self.engine(op))?;
                        }
                    }
                }
            }
        }
        tx.commit().map_err(self.engine(op))
    }
}

impl Store for DiskStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        match catch_unwind(AssertUnwindSafe(|| self.load_inner())) {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unreadable {
                path: self.file.clone(),
                reason: "the storage engine failed reading it".into(),
            }),
        }
    }

    fn commit(&mut self, ops: &[StoreOp], sync: bool) -> Result<(), StoreError> {
        if ops.is_empty() && !sync {
            return Ok(());
        }
        self.commit_inner(ops, sync)
    }
}

/// The inclusive key range of `prefix` followed by exactly `tail` more bytes.
fn prefix_range(prefix: &[u8], tail: usize) -> (Vec<u8>, Vec<u8>) {
    let mut lo = prefix.to_vec();
    lo.resize(prefix.len() + tail, 0);
    let mut hi = prefix.to_vec();
    hi.resize(prefix.len() + tail, 0xFF);
    (lo, hi)
}

/// A key as printable text, shortened.
fn show_key(k: &[u8]) -> String {
    let s = format!("{:?}", String::from_utf8_lossy(k));
    if s.chars().count() > 80 {
        let short: String = s.chars().take(77).collect();
        format!("{short}...")
    } else {
        s
    }
}
