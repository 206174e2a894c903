//! The running server: binds the listeners, owns the shared broker core, the accept loops and
//! the timer task, and stops them all gracefully.
//!
//! This module owns the lifecycle only. It must not touch bytes or protocol rules.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::Config;
use crate::conn::ConnParams;
use crate::listener;
use crate::shared::SharedBroker;
use crate::shutdown::{Flag, Tracker};
use crate::timer;

/// How long [`Server::shutdown`] waits for connections to close before abandoning them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running broker: listeners bound, accept loops and timer spawned.
pub struct Server {
    addrs: Vec<SocketAddr>,
    shared: Arc<SharedBroker>,
    stop_accepting: Flag,
    abandon: Flag,
    accept_tasks: Vec<JoinHandle<()>>,
    timer_task: JoinHandle<()>,
    tracker: Tracker,
}

impl Server {
    /// Binds every listener of `config` (port 0 allowed), spawns the accept loops and the timer task.
    pub async fn start(config: Config) -> io::Result<Server> {
        if config.listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listeners configured",
            ));
        }
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut addrs = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = TcpListener::bind(l.bind).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.bind))
            })?;
            addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }

        let shared = Arc::new(SharedBroker::new(Broker::new(config.broker.clone())));
        let abandon = Flag::new();
        let stop_accepting = Flag::new();
        let tracker = Tracker::new();
        let params = Arc::new(ConnParams {
            shared: shared.clone(),
            connect_timeout: match config.server.connect_timeout_secs {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            max_packet_size: config.broker.max_packet_size,
            abandon: abandon.clone(),
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
        Ok(Server {
            addrs,
            shared,
            stop_accepting,
            abandon,
            accept_tasks,
            timer_task,
            tracker,
        })
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
        self.shared.call(|broker, now| broker.shutdown(now));
        if !self.tracker.wait(SHUTDOWN_WAIT).await {
            tracing::warn!("connections still open after {SHUTDOWN_WAIT:?}; dropping them");
            self.abandon.raise();
            let _ = self.tracker.wait(Duration::from_secs(1)).await;
        }
        self.timer_task.abort();
        let _ = (&mut self.timer_task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop the tasks rather than leave a broker running unseen.
        self.stop_accepting.raise();
        self.abandon.raise();
        self.timer_task.abort();
    }
}
