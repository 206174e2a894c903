//! The broker core shared by every connection task and the timer task.
//!
//! This module owns the lock around [`Broker`] and the bookkeeping that wakes the timer when a
//! call made an earlier deadline. It must not interpret packets or make protocol decisions.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tern_broker::Broker;
use tokio::sync::Notify;

use crate::conn::ConnOutlet;
use crate::persistence::{StoreMsg, StoreTx};

/// The broker core behind a lock, plus the timer's wake-up.
pub(crate) struct SharedBroker {
    // A std mutex, not tokio's: the core never awaits and its calls are short, so the lock is
    // never held across an `.await` or any IO.
    state: Mutex<State>,
    /// Notified when a broker call produced a deadline earlier than the one the timer sleeps on.
    timer_wake: Notify,
}

struct State {
    broker: Broker<ConnOutlet>,
    /// Where batches of store operations go, in order; `None` for an in-memory broker.
    store: Option<StoreTx>,
    /// The deadline the timer task is sleeping until, if it is sleeping.
    armed: Option<Instant>,
}

impl State {
    /// Passes the store operations the last call recorded to the store thread. Done under the
    /// lock, so batches reach the thread in the order the core numbered them.
    fn hand_over_batches(&mut self) {
        let Some(tx) = &self.store else { return };
        while let Some((ticket, ops)) = self.broker.poll_persist() {
            // A send error means the store thread is gone (shutdown): nothing more to commit.
            let _ = tx.send(StoreMsg::Batch(ticket, ops));
        }
    }
}

impl SharedBroker {
    /// Share `broker`.
    pub(crate) fn new(broker: Broker<ConnOutlet>, store: Option<StoreTx>) -> Self {
        SharedBroker {
            state: Mutex::new(State {
                broker,
                store,
                armed: None,
            }),
            timer_wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside the core poisons the lock; keep serving the other connections rather
        // than failing every one of them from now on.
        self.state.lock().unwrap_or_else(|poisoned| {
            tracing::error!("broker core panicked earlier; continuing with its state as it is");
            self.state.clear_poison();
            poisoned.into_inner()
        })
    }

    /// Run one broker call with the current time, then wake the timer if the call made an
    /// earlier deadline than the one it sleeps on.
    pub(crate) fn call<R>(&self, f: impl FnOnce(&mut Broker<ConnOutlet>, Instant) -> R) -> R {
        #[cfg(feature = "lock-stats")]
        let asked = Instant::now();
        let (result, wake) = {
            let mut state = self.lock();
            #[cfg(feature = "lock-stats")]
            let _held = crate::lock_stats::CORE.held_since(asked);
            // Read the clock under the lock so the core sees times in the order of its calls.
            let now = Instant::now();
            let result = f(&mut state.broker, now);
            state.hand_over_batches();
            let next = state.broker.poll_timeout();
            let wake = matches!((next, state.armed), (Some(next), Some(armed)) if next < armed);
            (result, wake)
        };
        if wake {
            self.timer_wake.notify_one();
        }
        result
    }

    /// For the timer task: the broker's next deadline, capped at `cap`, recorded as armed.
    pub(crate) fn arm_timer(&self, cap: Instant) -> Instant {
        let mut state = self.lock();
        let deadline = state.broker.poll_timeout().map_or(cap, |d| d.min(cap));
        state.armed = Some(deadline);
        deadline
    }

    /// For the timer task: fire due deadlines; the timer is not armed until it re-arms.
    pub(crate) fn fire_timer(&self) {
        #[cfg(feature = "lock-stats")]
        let asked = Instant::now();
        let mut state = self.lock();
        #[cfg(feature = "lock-stats")]
        let _held = crate::lock_stats::CORE.held_since(asked);
        state.armed = None;
        let now = Instant::now();
        state.broker.handle_timeout(now);
        state.hand_over_batches();
    }

    /// Completes when a broker call made an earlier deadline than the armed one.
    pub(crate) async fn timer_woken(&self) {
        self.timer_wake.notified().await;
    }
}
