//! The store thread: commits the core's batches of store operations, many batches per commit
//! (group commit), and reports back which batch is durable so held acknowledgments go out.
//!
//! This module owns the thread, the channel from the core and the commit loop. It must not
//! interpret operations (the store does) or decide what waits for what (the core does).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tern_broker::persist::{Snapshot, StoreOp, Ticket};
use tern_store::Store;

use crate::config::Durability;
use crate::shared::SharedBroker;

/// Operations taken in one commit at most, so a flood does not make one huge transaction.
const MAX_OPS_PER_COMMIT: usize = 50_000;
/// Pause after a failed commit before trying again, so a full disk is not hammered.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(200);

/// What the core hands the store thread.
pub(crate) enum StoreMsg {
    /// One numbered batch, to commit after every earlier one.
    Batch(Ticket, Vec<StoreOp>),
    /// Commit what is pending and stop.
    Stop,
}

/// The sending side, kept by the shared broker.
pub(crate) type StoreTx = mpsc::Sender<StoreMsg>;

/// Counters of the store thread, for logs and metrics.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    /// Commits done.
    pub commits: std::sync::atomic::AtomicU64,
    /// Commits that failed.
    pub failures: std::sync::atomic::AtomicU64,
}

/// Spawns the store thread; it runs until [`StoreMsg::Stop`] or until every sender is gone.
pub(crate) fn spawn(
    mut store: Box<dyn Store>,
    durability: Durability,
    shared: Arc<SharedBroker>,
    rx: mpsc::Receiver<StoreMsg>,
    stats: Arc<StoreStats>,
    mut written: Written,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tern-store".into())
        .spawn(move || {
            let mut pending: Vec<StoreOp> = Vec::new();
            // The last ticket whose operations are in `pending`.
            let mut last: Option<Ticket> = None;
            let mut order = InOrder::default();
            let mut stop = false;
            let mut last_commit = Instant::now();
            while !stop {
                // Wait for work, then take everything already queued: one commit for all of it.
                match rx.recv() {
                    Ok(StoreMsg::Batch(t, ops)) => {
                        last = order.accept(t, ops, &mut pending).or(last);
                    }
                    Ok(StoreMsg::Stop) | Err(_) => stop = true,
                }
                if let Durability::Batch { interval_ms } = durability {
                    let due = last_commit + Duration::from_millis(interval_ms);
                    if !stop && let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                while pending.len() < MAX_OPS_PER_COMMIT {
                    match rx.try_recv() {
                        Ok(StoreMsg::Batch(t, ops)) => {
                            last = order.accept(t, ops, &mut pending).or(last);
                        }
                        Ok(StoreMsg::Stop) => stop = true,
                        Err(_) => break,
                    }
                }
                if last.is_none() {
                    continue;
                }
                coalesce(&mut pending, &written);
                while let Some(ticket) = last {
                    // Nothing left to write (every delivery was completed within the window):
                    // no transaction and no fsync at all.
                    let result = match pending.is_empty() {
                        true => Ok(()),
                        false => store.commit(&pending, true),
                    };
                    match result {
                        Ok(()) => {
                            written.apply(&pending);
                            stats
                                .commits
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            shared.each(|broker, _| broker.handle_persisted(ticket));
                            last = None;
                        }
                        Err(e) => {
                            stats
                                .failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::error!("store commit failed: {e}");
                            shared.each(|broker, now| broker.handle_persist_failed(now, ticket));
                            if stop {
                                last = None;
                                break;
                            }
                            // The operations stay pending: the core's state still holds them, and
                            // the next commit must include them to keep the store in step.
                            std::thread::sleep(RETRY_AFTER_FAILURE);
                            while let Ok(msg) = rx.try_recv() {
                                match msg {
                                    StoreMsg::Batch(t, ops) => {
                                        last = order.accept(t, ops, &mut pending).or(last);
                                    }
                                    StoreMsg::Stop => stop = true,
                                }
                            }
                        }
                    }
                }
                pending.clear();
                last_commit = Instant::now();
            }
            if let Some(first) = order.early.keys().next() {
                // Only a shard that never handed its batch over leaves a gap: what came after
                // it was never acknowledged, and committing it out of order could undo it.
                tracing::warn!(
                    batches = order.early.len(),
                    first,
                    "store stopping with batches after a missing one; not committed"
                );
            }
        })
}

/// Puts batches back in ticket order. Shards reserve tickets from one counter but hand their
/// batches over each at the end of its own call, so a batch may arrive before one with a lower
/// ticket; it waits here until that one has come, and commits are always of a prefix of the
/// sequence. That is what lets "ticket `t` is durable" stand for every batch up to `t`.
#[derive(Debug)]
struct InOrder {
    /// The ticket the next batch to commit has.
    next: Ticket,
    /// Batches that arrived before a lower ticket.
    early: BTreeMap<Ticket, Vec<StoreOp>>,
}

impl Default for InOrder {
    fn default() -> Self {
        InOrder {
            next: 1,
            early: BTreeMap::new(),
        }
    }
}

impl InOrder {
    /// Takes batch `ticket`; appends it to `pending` if it is next in sequence, along with the
    /// batches that were waiting for it, and returns the last ticket appended. Returns `None`
    /// when nothing could be appended yet.
    fn accept(
        &mut self,
        ticket: Ticket,
        ops: Vec<StoreOp>,
        pending: &mut Vec<StoreOp>,
    ) -> Option<Ticket> {
        if ticket != self.next {
            self.early.insert(ticket, ops);
            return None;
        }
        pending.extend(ops);
        self.next += 1;
        while let Some(ops) = self.early.remove(&self.next) {
            pending.extend(ops);
            self.next += 1;
        }
        Some(self.next - 1)
    }
}

/// The delivery keys the store holds (written and not yet deleted), so that a delivery put
/// and deleted between two commits costs nothing at all.
#[derive(Debug, Default)]
pub(crate) struct Written {
    by_client: HashMap<Arc<str>, HashSet<u64>>,
}

impl Written {
    /// The deliveries of a snapshot just loaded.
    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Self {
        let mut w = Written::default();
        for s in &snapshot.sessions {
            let seqs = s.deliveries.iter().map(|(seq, _)| *seq).collect();
            w.by_client.insert(s.record.client_id.clone(), seqs);
        }
        w
    }

    fn contains(&self, client_id: &str, seq: u64) -> bool {
        self.by_client
            .get(client_id)
            .is_some_and(|s| s.contains(&seq))
    }

    /// Follows a successful commit of `ops`.
    fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::PutDelivery { client_id, seq, .. } => {
                    self.by_client
                        .entry(client_id.clone())
                        .or_default()
                        .insert(*seq);
                }
                StoreOp::DeleteDelivery { client_id, seq } => {
                    if let Some(s) = self.by_client.get_mut(&**client_id) {
                        s.remove(seq);
                        if s.is_empty() {
                            self.by_client.remove(&**client_id);
                        }
                    }
                }
                StoreOp::DeleteSession(client_id) => {
                    self.by_client.remove(&**client_id);
                }
                _ => {}
            }
        }
    }
}

/// Drops the delivery operations a commit does not need: a `PutDelivery` followed in the same
/// commit by a `DeleteDelivery` of the same key, and a `DeleteDelivery` of a key the store does
/// not hold. A QoS 1 message delivered and acknowledged within one group-commit window is
/// thus never written at all.
fn coalesce(ops: &mut Vec<StoreOp>, written: &Written) {
    let mut deleted: HashSet<(&str, u64)> = HashSet::new();
    let mut keep = vec![true; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        match op {
            StoreOp::DeleteDelivery { client_id, seq } => {
                // Any put before this delete is dropped (below), so the key is on disk at this
                // point only if an earlier commit wrote it.
                let fresh = deleted.insert((client_id, *seq));
                keep[i] = fresh && written.contains(client_id, *seq);
            }
            StoreOp::PutDelivery { client_id, seq, .. } => {
                keep[i] = !deleted.contains(&(&**client_id, *seq));
            }
            _ => {}
        }
    }
    let mut keep = keep.into_iter();
    ops.retain(|_| keep.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tern_broker::persist::{StoreOp, StoredDelivery};
    use tern_broker::session::Message;
    use tern_codec::QoS;

    use super::{InOrder, Written, coalesce};

    fn put(client: &str, seq: u64) -> StoreOp {
        let msg = Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
            shared_properties: Default::default(),
            pending_shards: Default::default(),
        };
        let delivery = StoredDelivery {
            msg: Arc::new(msg),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: vec![],
            inflight: None,
        };
        StoreOp::PutDelivery {
            client_id: client.into(),
            seq,
            delivery,
        }
    }

    fn del(client: &str, seq: u64) -> StoreOp {
        StoreOp::DeleteDelivery {
            client_id: client.into(),
            seq,
        }
    }

    fn shape(ops: &[StoreOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                StoreOp::PutDelivery { client_id, seq, .. } => format!("put {client_id}/{seq}"),
                StoreOp::DeleteDelivery { client_id, seq } => format!("del {client_id}/{seq}"),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn a_put_deleted_in_the_same_commit_is_never_written() {
        let mut written = Written::default();
        written.apply(&[put("b", 2)]);
        let mut ops = vec![
            put("a", 1),
            put("a", 2),
            put("b", 1),
            del("a", 1),
            put("a", 1),
            del("b", 2),
            del("c", 9),
        ];
        coalesce(&mut ops, &written);
        assert_eq!(shape(&ops), ["put a/2", "put b/1", "put a/1", "del b/2"]);
    }

    #[test]
    fn batches_are_committed_in_ticket_order_whatever_their_arrival() {
        let mut order = InOrder::default();
        let mut pending = Vec::new();
        assert_eq!(order.accept(2, vec![put("b", 2)], &mut pending), None);
        assert_eq!(order.accept(4, vec![put("d", 4)], &mut pending), None);
        assert!(pending.is_empty(), "nothing before ticket 1 arrives");
        assert_eq!(order.accept(1, vec![put("a", 1)], &mut pending), Some(2));
        assert_eq!(shape(&pending), ["put a/1", "put b/2"]);
        pending.clear();
        assert_eq!(order.accept(3, vec![del("a", 1)], &mut pending), Some(4));
        assert_eq!(shape(&pending), ["del a/1", "put d/4"]);
        assert_eq!(order.accept(5, vec![], &mut pending), Some(5));
        assert!(order.early.is_empty());
    }

    #[test]
    fn written_keys_follow_commits() {
        let mut written = Written::default();
        written.apply(&[put("a", 1), put("a", 2), del("a", 1)]);
        assert!(!written.contains("a", 1));
        assert!(written.contains("a", 2));
        written.apply(&[StoreOp::DeleteSession("a".into())]);
        assert!(!written.contains("a", 2));
    }
}
