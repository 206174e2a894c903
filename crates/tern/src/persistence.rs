//! The store thread: commits the core's batches of store operations, many batches per commit
//! (group commit), and reports back which batch is durable so held acknowledgments go out.
//!
//! This module owns the thread, the channel from the core and the commit loop. It must not
//! interpret operations (the store does) or decide what waits for what (the core does).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tern_broker::persist::{StoreOp, Ticket};
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
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tern-store".into())
        .spawn(move || {
            let mut pending: Vec<StoreOp> = Vec::new();
            let mut last: Option<Ticket> = None;
            let mut stop = false;
            let mut last_commit = Instant::now();
            while !stop {
                // Wait for work, then take everything already queued: one commit for all of it.
                match rx.recv() {
                    Ok(StoreMsg::Batch(t, ops)) => {
                        pending.extend(ops);
                        last = Some(t);
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
                            pending.extend(ops);
                            last = Some(t);
                        }
                        Ok(StoreMsg::Stop) => stop = true,
                        Err(_) => break,
                    }
                }
                if last.is_none() {
                    continue;
                }
                coalesce(&mut pending);
                while let Some(ticket) = last {
                    match store.commit(&pending, true) {
                        Ok(()) => {
                            stats
                                .commits
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            shared.call(|broker, _| broker.handle_persisted(ticket));
                            last = None;
                        }
                        Err(e) => {
                            stats
                                .failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::error!("store commit failed: {e}");
                            shared.call(|broker, now| broker.handle_persist_failed(now, ticket));
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
                                        pending.extend(ops);
                                        last = Some(t);
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
        })
}

/// Drops every `PutDelivery` that a later `DeleteDelivery` of the same key in the same commit
/// makes moot: a QoS 1 message delivered and acknowledged within one group-commit window is
/// never written at all. The delete stays (the key may exist from an earlier commit; deleting
/// a missing key is cheap).
fn coalesce(ops: &mut Vec<StoreOp>) {
    let mut deleted: HashSet<(&str, u64)> = HashSet::new();
    let mut keep = vec![true; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        match op {
            StoreOp::DeleteDelivery { client_id, seq } => {
                deleted.insert((client_id, *seq));
            }
            StoreOp::PutDelivery { client_id, seq, .. }
                if deleted.contains(&(&**client_id, *seq)) =>
            {
                keep[i] = false;
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

    use super::coalesce;

    fn put(client: &str, seq: u64) -> StoreOp {
        let msg = Message {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            publisher: None,
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
        let mut ops = vec![
            put("a", 1),
            put("a", 2),
            put("b", 1),
            del("a", 1),
            put("a", 1),
            del("b", 2),
        ];
        coalesce(&mut ops);
        assert_eq!(
            shape(&ops),
            ["put a/2", "put b/1", "del a/1", "put a/1", "del b/2"]
        );
    }
}
