//! Small coordination primitives for stopping tasks: a one-way [`Flag`] and a [`Tracker`] that
//! waits for every task holding one of its tokens to finish.
//!
//! This module owns only task coordination; it knows nothing of connections or the broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// A flag that is raised once and never lowered; any number of tasks can wait for it.
#[derive(Clone, Debug)]
pub(crate) struct Flag(Arc<watch::Sender<bool>>);

impl Flag {
    /// A flag not yet raised.
    pub(crate) fn new() -> Self {
        Flag(Arc::new(watch::Sender::new(false)))
    }

    /// Raise the flag, waking every waiter. Raising twice is harmless.
    pub(crate) fn raise(&self) {
        self.0.send_replace(true);
    }

    /// Whether the flag has been raised.
    pub(crate) fn is_raised(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the flag is raised (at once if it already is).
    pub(crate) async fn raised(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail with a closed channel.
        let _ = rx.wait_for(|raised| *raised).await;
    }
}

/// Held by a tracked task for as long as it runs.
#[derive(Clone, Debug)]
pub(crate) struct TaskToken(#[allow(dead_code)] mpsc::Sender<()>);

/// Counts live [`TaskToken`]s so shutdown can wait for the tasks holding them.
#[derive(Debug)]
pub(crate) struct Tracker {
    token: Option<TaskToken>,
    done: mpsc::Receiver<()>,
}

impl Tracker {
    /// A tracker with no tasks.
    pub(crate) fn new() -> Self {
        let (tx, done) = mpsc::channel(1);
        Tracker {
            token: Some(TaskToken(tx)),
            done,
        }
    }

    /// A token for a new task; the task is tracked until the token (and its clones) drop.
    pub(crate) fn token(&self) -> Option<TaskToken> {
        self.token.clone()
    }

    /// Stop handing out tokens and wait up to `limit` for every token to drop; true if they did.
    pub(crate) async fn wait(&mut self, limit: Duration) -> bool {
        self.token = None;
        // Nothing is ever sent: `recv` returns `None` once every sender (token) is gone.
        tokio::time::timeout(limit, self.done.recv()).await.is_ok()
    }
}
