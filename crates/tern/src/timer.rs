//! The timer task: fires the broker's deadlines (keepalive, will delay, expiries) on time.
//!
//! This module owns only when `handle_timeout` is called. It must not know what the deadlines
//! mean; the broker core decides that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shared::SharedBroker;

/// Longest the timer sleeps without checking in, in case a wake-up is missed.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Run forever, calling `handle_timeout` whenever the broker's earliest deadline passes.
/// Stopped by aborting its task.
pub(crate) async fn run(shared: Arc<SharedBroker>) {
    loop {
        let deadline = shared.arm_timer(Instant::now() + MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => shared.fire_timer(),
            // An earlier deadline appeared: re-arm. A stale wake-up only costs one extra loop.
            () = shared.timer_woken() => {}
        }
    }
}
