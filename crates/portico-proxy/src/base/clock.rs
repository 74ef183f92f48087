//! The clock the gateway reads when it decides that something stored has expired (a cached
//! answer's freshness, a key set's refresh interval): the system's, plus an offset that only
//! moves forward. One clock per gateway, kept across reloads.
//!
//! The offset is there for tests: they move one gateway's clock past a TTL and check what
//! happens next, in order, instead of sleeping through the TTL and hoping the machine kept
//! up. It is zero in a running gateway, where reading the clock costs one relaxed atomic load
//! more than the system's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Default)]
pub struct Clock {
    /// How far ahead of the system's clock this one runs, in milliseconds.
    ahead_ms: AtomicU64,
}

impl Clock {
    fn ahead(&self) -> Duration {
        Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed))
    }

    /// Now, on the wall clock (for HTTP dates and freshness).
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.ahead()
    }

    /// Now, on the monotonic clock (for intervals).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// Moves the clock forward by `by` (tests: past a TTL without waiting for it).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_both_clocks_forward_and_only_forward() {
        let c = Clock::default();
        let (wall, mono) = (c.now(), c.instant());
        c.advance(Duration::from_secs(60));
        assert!(c.now().duration_since(wall).unwrap() >= Duration::from_secs(60));
        assert!(c.instant().duration_since(mono) >= Duration::from_secs(60));
    }
}
