//! The running server: binds the listeners, owns the shared broker core, the accept loops and
//! the timer task, and stops them all gracefully.
//!
//! This module owns the lifecycle only. It must not touch bytes or protocol rules.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;
use std::time::Instant;

use tern_broker::{Broker, Global, PersistMode};
use tern_store::{DiskStore, Store};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::Config;
use crate::config::Durability;
use crate::conn::{CLOSE_GRACE, ConnOutlet, ConnParams};
use crate::listener;
use crate::persistence::{self, StoreMsg, StoreStats, StoreTx, Written};
use crate::shared::SharedBroker;
use crate::shutdown::{Flag, Tracker};
use crate::sys;
use crate::timer;

/// How long [`Server::shutdown`] waits for connections to close before abandoning them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running broker: listeners bound, accept loops and timer spawned.
pub struct Server {
    addrs: Vec<SocketAddr>,
    shared: Arc<SharedBroker>,
    stop_accepting: Flag,
    accept_tasks: Vec<JoinHandle<()>>,
    timer_task: JoinHandle<()>,
    sys_task: Option<JoinHandle<()>>,
    tracker: Tracker,
    store_tx: Option<StoreTx>,
    store_thread: Option<std::thread::JoinHandle<()>>,
}

/// Binds every configured listener.
async fn bind(config: &Config) -> io::Result<(Vec<TcpListener>, Vec<SocketAddr>)> {
    if config.listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listeners configured",
        ));
    }
    let mut listeners = Vec::with_capacity(config.listeners.len());
    let mut addrs = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.bind)))?;
        addrs.push(listener.local_addr()?);
        listeners.push(listener);
    }
    Ok((listeners, addrs))
}

/// Opens the disk store in `dir` (created if missing).
async fn open_store(dir: PathBuf) -> io::Result<Box<dyn Store>> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create data directory {}: {e}", dir.display()),
            )
        })?;
        DiskStore::open(&dir)
            .map(|s| Box::new(s) as Box<dyn Store>)
            .map_err(io::Error::other)
    })
    .await
    .map_err(io::Error::other)?
}

impl Server {
    /// Binds every listener of `config` (port 0 allowed), spawns the accept loops and the timer task.
    pub async fn start(config: Config) -> io::Result<Server> {
        // The store first: a store that cannot be opened stops the start before any port is bound.
        let store = match config.store.enabled {
            true => Some(open_store(config.store.dir.clone()).await?),
            false => None,
        };
        let (listeners, addrs) = bind(&config).await?;
        Self::start_inner(config, listeners, addrs, store).await
    }

    /// Like [`Server::start`], with `store` instead of the configured one (`None`: in memory).
    pub async fn start_with_store(
        config: Config,
        store: Option<Box<dyn Store>>,
    ) -> io::Result<Server> {
        let (listeners, addrs) = bind(&config).await?;
        Self::start_inner(config, listeners, addrs, store).await
    }

    async fn start_inner(
        config: Config,
        listeners: Vec<TcpListener>,
        addrs: Vec<SocketAddr>,
        store: Option<Box<dyn Store>>,
    ) -> io::Result<Server> {
        let shards = config.server.core_shards;
        let global = Arc::new(Global::with_shards(shards));
        let mut brokers: Vec<Broker<ConnOutlet>> = (0..shards)
            .map(|shard| {
                let shard = u8::try_from(shard).expect("at most MAX_SHARDS shards");
                Broker::with_global(config.broker.clone(), global.clone(), shard)
            })
            .collect();
        let mut store_parts = None;
        let mut written = Written::default();
        if let Some(mut store) = store {
            let started = Instant::now();
            let (store_back, snapshot) =
                tokio::task::spawn_blocking(move || store.load().map(|snap| (store, snap)))
                    .await
                    .map_err(io::Error::other)?
                    .map_err(io::Error::other)?;
            store = store_back;
            let loaded = started.elapsed();
            let (sessions, retained) = (snapshot.sessions.len(), snapshot.retained.len());
            let mode = match config.store.durability() {
                Durability::Sync => PersistMode::Sync,
                Durability::Batch { .. } => PersistMode::Batch,
            };
            written = Written::from_snapshot(&snapshot);
            let now = Instant::now();
            for (broker, part) in brokers.iter_mut().zip(global.split(snapshot)) {
                broker.set_persistence(mode);
                broker.restore(now, part);
            }
            if sessions > 0 || retained > 0 {
                tracing::info!(
                    sessions,
                    retained,
                    load_ms = loaded.as_millis() as u64,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "restored state from the store"
                );
            }
            store_parts = Some(store);
        }
        let (store_tx, store_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(SharedBroker::new(
            brokers,
            store_parts.is_some().then(|| store_tx.clone()),
        ));
        let store_stats = Arc::new(StoreStats::default());
        let store_thread = match store_parts {
            Some(store) => Some(persistence::spawn(
                store,
                config.store.durability(),
                shared.clone(),
                store_rx,
                store_stats.clone(),
                written,
            )?),
            None => None,
        };
        // Restoring may have recorded operations (sessions cut by the crash): hand them over.
        shared.each(|_, _| ());
        let stop_accepting = Flag::new();
        let tracker = Tracker::new();
        let params = Arc::new(ConnParams {
            shared: shared.clone(),
            connect_timeout: match config.server.connect_timeout_secs {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            max_packet_size: config.broker.max_packet_size,
            max_backlog: config.broker.max_queued_messages,
            max_backlog_bytes: config.broker.max_queued_bytes,
        });
        let limit = match config.server.max_connections {
            0 => None,
            n => Some(Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
        };
        let accept_tasks = listeners
            .into_iter()
            .filter_map(|listener| {
                let token = tracker.token()?;
                Some(tokio::spawn(listener::accept_loop(
                    listener,
                    params.clone(),
                    limit.clone(),
                    stop_accepting.clone(),
                    token,
                )))
            })
            .collect();
        let timer_task = tokio::spawn(timer::run(shared.clone()));
        let sys_task = match config.server.sys_interval_secs {
            0 => None,
            secs => Some(tokio::spawn(sys::run(
                shared.clone(),
                Duration::from_secs(secs),
                store_stats,
            ))),
        };
        Ok(Server {
            addrs,
            shared,
            store_tx: store_thread.as_ref().map(|_| store_tx),
            store_thread,
            stop_accepting,
            accept_tasks,
            timer_task,
            sys_task,
            tracker,
        })
    }

    /// End every connection still open, without waiting for the core's close.
    fn abandon(&self) {
        self.shared
            .each(|broker, _| broker.outlets().for_each(ConnOutlet::abandon));
    }

    /// Actual bound addresses, in listener order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The first bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // `start` refuses a config without listeners, so there is always a first one.
        self.addrs[0]
    }

    /// Graceful stop: broker.shutdown(now) (v5 clients get DISCONNECT 0x8B), stop accepting,
    /// wait for connection tasks (at most a few seconds).
    pub async fn shutdown(mut self) {
        // Stop accepting first, and wait for the accept loops, so no connection opens after the
        // core has been told to shut down.
        self.stop_accepting.raise();
        for task in self.accept_tasks.drain(..) {
            let _ = task.await;
        }
        self.shared.each(|broker, now| broker.shutdown(now));
        if !self.tracker.wait(SHUTDOWN_WAIT).await {
            tracing::warn!("connections still open after {SHUTDOWN_WAIT:?}; dropping them");
            self.abandon();
            let _ = self
                .tracker
                .wait(CLOSE_GRACE + Duration::from_secs(1))
                .await;
        }
        self.timer_task.abort();
        let _ = (&mut self.timer_task).await;
        if let Some(task) = self.sys_task.take() {
            task.abort();
        }
        // Everything the core recorded is committed before the store thread stops.
        if let Some(tx) = self.store_tx.take() {
            let _ = tx.send(StoreMsg::Stop);
        }
        if let Some(thread) = self.store_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop the tasks rather than leave a broker running unseen.
        self.stop_accepting.raise();
        self.abandon();
        self.timer_task.abort();
        if let Some(task) = &self.sys_task {
            task.abort();
        }
        if let Some(tx) = self.store_tx.take() {
            let _ = tx.send(StoreMsg::Stop);
        }
    }
}
