//! `concurrency_limit`: requests in flight per key, counted from the request head until the
//! response body ends (or the client goes away). Over the cap, a request is refused at once
//! with 503 rather than queued, so a slow upstream cannot pile up work in the gateway.
//!
//! With `adaptive`, the cap moves between `min_in_flight` and `max_in_flight` by AIMD on request
//! duration: a request slower than the target shrinks it by a quarter (at most once per target
//! period, so one slow burst counts once), a faster one grows it by 1/cap (about one per round
//! of requests). When the upstream slows down, the gateway sheds the excess at once instead of
//! queueing it behind the slow requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portico_config::ConcurrencyPolicy;

#[derive(Debug)]
pub struct InFlight {
    pub fingerprint: u64,
    max: u32,
    /// Keys with at least one request in flight; a key leaves when its count drops to 0, so
    /// memory follows the requests in flight.
    counts: Mutex<HashMap<String, u32>>,
    adaptive: Option<Adaptive>,
}

#[derive(Debug)]
struct Adaptive {
    target: Duration,
    min: f64,
    max: f64,
    /// The current cap and when it last shrank.
    state: Mutex<(f64, Instant)>,
}

impl Adaptive {
    fn cap(&self) -> u32 {
        self.state
            .lock()
            .map(|s| s.0 as u32)
            .unwrap_or(self.min as u32)
    }

    fn record(&self, took: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if took > self.target {
            if s.1.elapsed() >= self.target {
                s.0 = (s.0 * 0.75).max(self.min);
                s.1 = Instant::now();
            }
        } else {
            s.0 = (s.0 + 1.0 / s.0).min(self.max);
        }
    }
}

/// One admitted request; dropping it releases its place.
#[derive(Debug)]
pub struct Guard {
    state: Arc<InFlight>,
    key: String,
    started: Instant,
}

impl InFlight {
    pub fn new(p: &ConcurrencyPolicy) -> Arc<InFlight> {
        Arc::new(InFlight {
            fingerprint: p.fingerprint,
            max: p.max_in_flight,
            counts: Mutex::new(HashMap::new()),
            adaptive: p.adaptive.map(|(target, min)| Adaptive {
                target,
                min: f64::from(min),
                max: f64::from(p.max_in_flight),
                // "Last shrank" one target ago, so the first slow request may shrink it.
                state: Mutex::new((
                    f64::from(p.max_in_flight),
                    Instant::now()
                        .checked_sub(target)
                        .unwrap_or_else(Instant::now),
                )),
            }),
        })
    }

    /// A place for one more request of `key`, or `None` when `max` are in flight.
    pub fn acquire(self: &Arc<Self>, key: &str) -> Option<Guard> {
        let cap = self.adaptive.as_ref().map_or(self.max, Adaptive::cap);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(key) {
            Some(n) if *n >= cap => return None,
            Some(n) => *n += 1,
            None => {
                counts.insert(key.to_owned(), 1);
            }
        }
        Some(Guard {
            state: self.clone(),
            key: key.to_owned(),
            started: Instant::now(),
        })
    }

    /// The cap in force now (moves when `adaptive`).
    pub fn cap(&self) -> u32 {
        self.adaptive.as_ref().map_or(self.max, Adaptive::cap)
    }

    /// Requests in flight for `key`.
    pub fn current(&self, key: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(a) = &self.state.adaptive {
            a.record(self.started.elapsed());
        }
        let mut counts = self.state.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
