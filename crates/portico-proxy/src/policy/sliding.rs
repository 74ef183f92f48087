//! Sliding-window quotas on one instance: at most `limit` requests in any span of `per`,
//! estimated from two fixed windows (the previous window's count, weighted by how much of it
//! the sliding span still covers, plus the current window's). Keys are spread over shards so
//! workers rarely wait on each other; keys two windows old are swept.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Window {
    index: u64,
    previous: u32,
    current: u32,
}

#[derive(Debug)]
pub struct SlidingWindow {
    per_us: u64,
    limit: u32,
    origin: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, Window>>>,
}

impl SlidingWindow {
    pub fn new(limit: u32, per: Duration) -> SlidingWindow {
        SlidingWindow {
            per_us: u64::try_from(per.as_micros()).unwrap_or(u64::MAX).max(1),
            limit,
            origin: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Window>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Counts one request for `key`: `Ok(remaining)`, or `Err(wait)` when the window is full.
    pub fn check(&self, key: &str) -> Result<u32, Duration> {
        self.check_at(key, self.now_us())
    }

    /// `check` at a given time (µs since `origin`).
    fn check_at(&self, key: &str, now: u64) -> Result<u32, Duration> {
        let index = now / self.per_us;
        let elapsed = now % self.per_us;
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let w = match shard.get_mut(key) {
            Some(w) => w,
            None => shard.entry(key.to_owned()).or_insert(Window {
                index,
                previous: 0,
                current: 0,
            }),
        };
        if w.index + 1 == index {
            w.previous = w.current;
            w.current = 0;
        } else if w.index != index {
            w.previous = 0;
            w.current = 0;
        }
        w.index = index;
        let per = self.per_us as f64;
        let limit = f64::from(self.limit);
        let previous = f64::from(w.previous);
        let current = f64::from(w.current);
        let estimate = previous * (1.0 - elapsed as f64 / per) + current;
        if estimate + 1.0 > limit {
            let wait_us = if current + 1.0 > limit {
                // Not before the next window, and then until this window's weight has faded
                // enough.
                (per - elapsed as f64) + (per * (1.0 - (limit - 1.0) / current)).max(0.0)
            } else {
                (per * (1.0 - (limit - 1.0 - current) / previous) - elapsed as f64).max(1000.0)
            };
            return Err(Duration::from_micros(wait_us.ceil() as u64));
        }
        w.current += 1;
        Ok((limit - estimate - 1.0).floor().max(0.0) as u32)
    }

    /// Forgets keys whose windows are both over.
    pub fn sweep(&self) {
        self.sweep_at(self.now_us());
    }

    fn sweep_at(&self, now: u64) {
        let index = now / self.per_us;
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|_, w| w.index + 1 >= index);
            s.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_limit_in_a_window_and_previous_window_weighs_in() {
        // Times are given, not slept: windows of 1 s (1,000,000 µs).
        let w = SlidingWindow::new(10, Duration::from_secs(1));
        let ok = (0..30).filter(|_| w.check_at("k", 100_000).is_ok()).count();
        assert_eq!(ok, 10, "at most the limit within one window");
        assert!(w.check_at("other", 100_000).is_ok(), "keys are independent");
        let wait = w.check_at("k", 100_000).unwrap_err();
        assert!(
            wait > Duration::from_millis(900),
            "until the window turns: {wait:?}"
        );
        // 10 % into the next window, the previous 10 still weigh 9: one more fits.
        assert!(w.check_at("k", 1_100_000).is_ok());
        assert!(w.check_at("k", 1_100_000).is_err());
        // 60 % in, they weigh 4, plus the 1 counted: 5 more fit.
        let ok = (0..10)
            .filter(|_| w.check_at("k", 1_600_000).is_ok())
            .count();
        assert_eq!(ok, 5);
        // A window skipped: everything has faded.
        let ok = (0..20)
            .filter(|_| w.check_at("k", 3_500_000).is_ok())
            .count();
        assert_eq!(ok, 10);
        w.sweep_at(5_500_000);
        assert!(w.is_empty(), "keys two windows old are swept");
    }
}
