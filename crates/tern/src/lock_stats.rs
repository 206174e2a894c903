//! How the broker's locks are used, for builds with `--features lock-stats` only: once a second
//! the broker prints to stderr, for each lock kind that was taken, how many calls took it, how
//! long each waited for it and held it, and the share of the second it was held and waited for
//! (summed over threads and over every lock of the kind, so waiting can pass 100% with many
//! threads). See "The core's lock" in docs/performance.md.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// The counters of one kind of lock, e.g. every lock around a part of the core.
pub(crate) struct LockStats {
    /// The name printed on its line.
    label: &'static str,
    calls: AtomicU64,
    waited_ns: AtomicU64,
    held_ns: AtomicU64,
    registered: Once,
}

/// The broker core's lock.
pub(crate) static CORE: LockStats = LockStats::new("core");

/// The lock kinds taken so far, in the order of their first use.
static KINDS: Mutex<Vec<&'static LockStats>> = Mutex::new(Vec::new());

impl LockStats {
    /// Counters for the locks printed as `label`.
    pub(crate) const fn new(label: &'static str) -> Self {
        LockStats {
            label,
            calls: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            held_ns: AtomicU64::new(0),
            registered: Once::new(),
        }
    }

    /// A lock of this kind, asked for at `asked`, is held from now; counted when the returned
    /// value is dropped, which must be before the lock's guard.
    pub(crate) fn held_since(&'static self, asked: Instant) -> Held {
        static REPORTER: Once = Once::new();
        REPORTER.call_once(|| {
            std::thread::spawn(report);
        });
        self.registered.call_once(|| {
            KINDS.lock().unwrap_or_else(|p| p.into_inner()).push(self);
        });
        Held {
            kind: self,
            asked,
            got: Instant::now(),
        }
    }

    fn totals(&self) -> (u64, u64, u64) {
        (
            self.calls.load(Relaxed),
            self.waited_ns.load(Relaxed),
            self.held_ns.load(Relaxed),
        )
    }
}

/// One holding of a lock.
pub(crate) struct Held {
    kind: &'static LockStats,
    asked: Instant,
    got: Instant,
}

impl Drop for Held {
    fn drop(&mut self) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.kind.calls.fetch_add(1, Relaxed);
        self.kind
            .waited_ns
            .fetch_add(nanos(self.got - self.asked), Relaxed);
        self.kind
            .held_ns
            .fetch_add(nanos(self.got.elapsed()), Relaxed);
    }
}

/// Prints the last second's figures of every lock kind, every second, for the life of the
/// process: one line per kind.
fn report() {
    let mut last: Vec<(u64, u64, u64)> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let kinds = KINDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        last.resize(kinds.len(), (0, 0, 0));
        for (kind, last) in kinds.iter().zip(&mut last) {
            let now = kind.totals();
            let (calls, waited, held) = (now.0 - last.0, now.1 - last.1, now.2 - last.2);
            let per_call = |ns: u64| ns / calls.max(1);
            eprintln!(
                "lock-stats {} calls/s {calls} wait-ns/call {} hold-ns/call {} held% {:.1} waited% {:.1}",
                kind.label,
                per_call(waited),
                per_call(held),
                held as f64 / 1e7,
                waited as f64 / 1e7,
            );
            *last = now;
        }
    }
}
