//! [`MemoryStore`]: the same contract as the disk store, kept in maps, for tests and for
//! running without persistence (`--in-memory`). Nothing survives the process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use tern_broker::persist::SessionRecord;
use tern_broker::persist::{Snapshot, StoreOp, StoredDelivery, StoredSession};
use tern_broker::session::Message;

use crate::{Store, StoreError};

/// A store in memory: `load` returns what was committed.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Retained messages by topic.
    retained: BTreeMap<String, Arc<Message>>,
    /// Session records by client id.
    sessions: BTreeMap<Arc<str>, SessionRecord>,
    /// Deliveries by (client id, seq).
    deliveries: BTreeMap<(Arc<str>, u64), StoredDelivery>,
    /// Inbound QoS 2 identifiers by (client id, packet id).
    inbound: BTreeSet<(Arc<str>, u16)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// Refuses a batch that puts a delivery or inbound id for a session it does not hold.
    fn check(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut overlay: HashMap<&str, bool> = HashMap::new();
        let exists = |overlay: &HashMap<&str, bool>, id: &str| {
            overlay
                .get(id)
                .copied()
                .unwrap_or_else(|| self.sessions.contains_key(id))
        };
        for op in ops {
            match op {
                StoreOp::PutSession(r) => {
                    overlay.insert(&r.client_id, true);
                }
                StoreOp::DeleteSession(id) => {
                    overlay.insert(id, false);
                }
                StoreOp::PutDelivery { client_id, .. } | StoreOp::PutInbound { client_id, .. }
                    if !exists(&overlay, client_id) =>
                {
                    return Err(StoreError::Invalid {
                        path: PathBuf::from("(memory)"),
                        reason: crate::orphan_reason(client_id),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut sessions: BTreeMap<Arc<str>, StoredSession> = self
            .sessions
            .iter()
            .map(|(id, r)| {
                let s = StoredSession {
                    record: r.clone(),
                    deliveries: Vec::new(),
                    inbound: Vec::new(),
                };
                (id.clone(), s)
            })
            .collect();
        for ((id, seq), d) in &self.deliveries {
            if let Some(s) = sessions.get_mut(id) {
                s.deliveries.push((*seq, d.clone()));
            }
        }
        for (id, packet_id) in &self.inbound {
            if let Some(s) = sessions.get_mut(id) {
                s.inbound.push(*packet_id);
            }
        }
        Ok(Snapshot {
            retained: self.retained.values().cloned().collect(),
            sessions: sessions.into_values().collect(),
        })
    }

    fn commit(&mut self, ops: &[StoreOp], _sync: bool) -> Result<(), StoreError> {
        self.check(ops)?;
        for op in ops {
            match op {
                StoreOp::PutRetained(m) => {
                    self.retained.insert(m.topic.clone(), m.clone());
                }
                StoreOp::DeleteRetained(topic) => {
                    self.retained.remove(topic);
                }
                StoreOp::PutSession(r) => {
                    self.sessions.insert(r.client_id.clone(), r.clone());
                }
                StoreOp::DeleteSession(id) => {
                    self.sessions.remove(id);
                    let from = (id.clone(), 0);
                    let to = (id.clone(), u64::MAX);
                    let keys: Vec<_> = self
                        .deliveries
                        .range(from..=to)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in keys {
                        self.deliveries.remove(&k);
                    }
                    let from = (id.clone(), 0);
                    let to = (id.clone(), u16::MAX);
                    let keys: Vec<_> = self.inbound.range(from..=to).cloned().collect();
                    for k in keys {
                        self.inbound.remove(&k);
                    }
                }
                StoreOp::PutDelivery {
                    client_id,
                    seq,
                    delivery,
                } => {
                    self.deliveries
                        .insert((client_id.clone(), *seq), delivery.clone());
                }
                StoreOp::DeleteDelivery { client_id, seq } => {
                    self.deliveries.remove(&(client_id.clone(), *seq));
                }
                StoreOp::PutInbound {
                    client_id,
                    packet_id,
                } => {
                    self.inbound.insert((client_id.clone(), *packet_id));
                }
                StoreOp::DeleteInbound {
                    client_id,
                    packet_id,
                } => {
                    self.inbound.remove(&(client_id.clone(), *packet_id));
                }
            }
        }
        Ok(())
    }
}
