//! `concurrency_limit`: requests in flight per key, counted from the request head until the
//! response body ends (or the client goes away). Over the cap, a request is refused at once
//! with 503 rather than queued, so a slow upstream cannot pile up work in the gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portico_config::ConcurrencyPolicy;

#[derive(Debug)]
pub struct InFlight {
    pub fingerprint: u64,
    max: u32,
    /// Keys with at least one request in flight; a key leaves when its count drops to 0, so
    /// memory follows the requests in flight.
    counts: Mutex<HashMap<String, u32>>,
}

/// One admitted request; dropping it releases its place.
#[derive(Debug)]
pub struct Guard {
    state: Arc<InFlight>,
    key: String,
}

impl InFlight {
    pub fn new(p: &ConcurrencyPolicy) -> Arc<InFlight> {
        Arc::new(InFlight {
            fingerprint: p.fingerprint,
            max: p.max_in_flight,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more request of `key`, or `None` when `max` are in flight.
    pub fn acquire(self: &Arc<Self>, key: &str) -> Option<Guard> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(key) {
            Some(n) if *n >= self.max => return None,
            Some(n) => *n += 1,
            None => {
                counts.insert(key.to_owned(), 1);
            }
        }
        Some(Guard {
            state: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Requests in flight for `key`.
    pub fn current(&self, key: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut counts = self.state.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
