//! Small coordination primitives for stopping tasks: a one-way [`Flag`] and a [`Tracker`] that
//! waits for every task holding one of its tokens to finish.
//!
//! This module owns only task coordination; it knows nothing of connections or the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

/// A flag that is raised once and never lowered; any number of tasks can wait for it.
///
/// Every connection holds one and waits on it in several places at once, so it is kept small:
/// a bool and a `Notify` (a waiting future is about a third of a `watch` receiver's).
#[derive(Clone, Debug, Default)]
pub(crate) struct Flag(Arc<FlagInner>);

#[derive(Debug, Default)]
struct FlagInner {
    raised: AtomicBool,
    notify: Notify,
}

impl Flag {
    /// A flag not yet raised.
    pub(crate) fn new() -> Self {
        Flag::default()
    }

    /// Raise the flag, waking every waiter. Raising twice is harmless.
    pub(crate) fn raise(&self) {
        if !self.0.raised.swap(true, Ordering::AcqRel) {
            self.0.notify.notify_waiters();
        }
    }

    /// Whether the flag has been raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Completes once the flag is raised (at once if it already is).
    pub(crate) async fn raised(&self) {
        loop {
            // Created before the check: `notify_waiters` wakes every `Notified` that exists
            // when it is called, so a raise between the check and the await is not missed.
            let notified = self.0.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
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
