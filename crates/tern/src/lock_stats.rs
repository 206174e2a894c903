//! How the broker core's lock is used, for builds with `--features lock-stats` only: once a
//! second the broker prints to stderr how many calls took the lock, how long each waited for it
//! and held it, and the share of the second it was held and waited for (summed over threads, so
//! waiting can pass 100% with many threads). See "The core's lock" in docs/performance.md.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

static CALLS: AtomicU64 = AtomicU64::new(0);
static WAITED_NS: AtomicU64 = AtomicU64::new(0);
static HELD_NS: AtomicU64 = AtomicU64::new(0);

/// One holding of the lock: counted when dropped, which must be before the lock's guard.
pub(crate) struct Held {
    asked: Instant,
    got: Instant,
}

impl Held {
    /// The lock, asked for at `asked`, is held from now.
    pub(crate) fn since(asked: Instant) -> Self {
        static REPORTER: Once = Once::new();
        REPORTER.call_once(|| {
            std::thread::spawn(report);
        });
        Held {
            asked,
            got: Instant::now(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        CALLS.fetch_add(1, Relaxed);
        WAITED_NS.fetch_add(nanos(self.got - self.asked), Relaxed);
        HELD_NS.fetch_add(nanos(self.got.elapsed()), Relaxed);
    }
}

/// Prints the last second's figures, every second, for the life of the process.
fn report() {
    let mut last = (0, 0, 0);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = (
            CALLS.load(Relaxed),
            WAITED_NS.load(Relaxed),
            HELD_NS.load(Relaxed),
        );
        let (calls, waited, held) = (now.0 - last.0, now.1 - last.1, now.2 - last.2);
        let per_call = |ns: u64| ns / calls.max(1);
        eprintln!(
            "lock-stats calls/s {calls} wait-ns/call {} hold-ns/call {} held% {:.1} waited% {:.1}",
            per_call(waited),
            per_call(held),
            held as f64 / 1e7,
            waited as f64 / 1e7,
        );
        last = now;
    }
}
