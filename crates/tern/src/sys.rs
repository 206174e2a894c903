//! The `$SYS` task: every `sys_interval_secs` it publishes the broker's counters as retained
//! messages under `$SYS/broker/…`, with the names Mosquitto uses where there is one.
//!
//! This module owns only the timing and the topic names. The counters come from the core and
//! the store thread; the core does the publishing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_broker::Stats;

use crate::persistence::StoreStats;
use crate::shared::SharedBroker;

/// Runs until its task is aborted.
pub(crate) async fn run(shared: Arc<SharedBroker>, every: Duration, store: Arc<StoreStats>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let uptime = started.elapsed().as_secs();
        let (commits, failures) = (
            store.commits.load(Ordering::Relaxed),
            store.failures.load(Ordering::Relaxed),
        );
        // The sum of every shard's figures, then published from shard 0 (and routed from
        // there to the others).
        let mut s = Stats::default();
        shared.each(|broker, _| s.add(&broker.stats()));
        shared.call(0, |broker, now| {
            let values: [(&str, String); 10] = [
                ("$SYS/broker/uptime", format!("{uptime} seconds")),
                (
                    "$SYS/broker/clients/connected",
                    s.clients_connected.to_string(),
                ),
                ("$SYS/broker/sessions/count", s.sessions.to_string()),
                (
                    "$SYS/broker/subscriptions/count",
                    s.subscriptions.to_string(),
                ),
                (
                    "$SYS/broker/retained messages/count",
                    s.retained.to_string(),
                ),
                (
                    "$SYS/broker/publish/messages/received",
                    s.publish_received.to_string(),
                ),
                (
                    "$SYS/broker/publish/messages/sent",
                    s.publish_sent.to_string(),
                ),
                (
                    "$SYS/broker/publish/messages/dropped",
                    s.dropped.to_string(),
                ),
                ("$SYS/broker/store/commits", commits.to_string()),
                ("$SYS/broker/store/commit failures", failures.to_string()),
            ];
            for (topic, value) in values {
                broker.publish_system(now, topic, Bytes::from(value));
            }
        });
    }
}
