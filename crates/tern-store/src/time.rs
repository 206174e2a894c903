//! Converting the core's `Instant`s to wall-clock milliseconds since the Unix epoch and back,
//! through an anchor taken when the store is opened, so that time spent down counts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One moment read from both clocks; converts between them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anchor {
    /// The monotonic clock at the anchor.
    instant: Instant,
    /// The wall clock at the same moment.
    wall: SystemTime,
}

impl Anchor {
    /// Reads both clocks now.
    pub(crate) fn now() -> Self {
        Anchor {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// An anchor from given readings (for tests).
    #[cfg(test)]
    pub(crate) fn at(instant: Instant, wall: SystemTime) -> Self {
        Anchor { instant, wall }
    }

    /// Wall-clock milliseconds since the Unix epoch of `t` (0 for times before the epoch,
    /// `u64::MAX` past the representable range).
    pub(crate) fn to_wall_ms(self, t: Instant) -> u64 {
        let wall = if t >= self.instant {
            self.wall.checked_add(t - self.instant)
        } else {
            self.wall.checked_sub(self.instant - t)
        };
        match wall {
            Some(w) => match w.duration_since(UNIX_EPOCH) {
                Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                Err(_) => 0,
            },
            None if t >= self.instant => u64::MAX,
            None => 0,
        }
    }

    /// The `Instant` of wall-clock `ms` since the Unix epoch. A time already past maps to the
    /// anchor or earlier (never later than now); a time too far ahead to represent maps to the
    /// latest representable time this side of it.
    pub(crate) fn to_instant(self, ms: u64) -> Instant {
        let target = UNIX_EPOCH.checked_add(Duration::from_millis(ms));
        match target.map(|t| t.duration_since(self.wall)) {
            Some(Ok(ahead)) => self
                .instant
                .checked_add(ahead)
                .or_else(|| {
                    self.instant
                        .checked_add(Duration::from_secs(u64::from(u32::MAX)))
                })
                .unwrap_or(self.instant),
            Some(Err(behind)) => self
                .instant
                .checked_sub(behind.duration())
                .unwrap_or(self.instant),
            // Unrepresentable as a SystemTime: far in the future.
            None => self
                .instant
                .checked_add(Duration::from_secs(u64::from(u32::MAX)))
                .unwrap_or(self.instant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_the_same_anchor() {
        let a = Anchor::now();
        let later = a.instant + Duration::from_secs(90);
        let back = a.to_instant(a.to_wall_ms(later));
        let diff = if back > later {
            back - later
        } else {
            later - back
        };
        assert!(diff < Duration::from_millis(1));
    }

    #[test]
    fn time_spent_down_counts() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let before = Anchor::at(now, wall);
        let ms = before.to_wall_ms(now + Duration::from_secs(60));
        // Restarted 10 minutes later: the expiry is 9 minutes in the past.
        let after = Anchor::at(now, wall + Duration::from_secs(600));
        assert!(after.to_instant(ms) <= now);
    }

    #[test]
    fn extremes_do_not_panic() {
        let a = Anchor::now();
        let _ = a.to_instant(0);
        let _ = a.to_instant(u64::MAX);
        let _ = a.to_wall_ms(a.instant + Duration::from_secs(u64::from(u32::MAX)));
        if let Some(early) = a.instant.checked_sub(Duration::from_secs(3600)) {
            let _ = a.to_wall_ms(early);
        }
    }
}
