//! JWKS key sets: fetched in the background at each issuer's refresh interval, and on demand
//! when a token names a `kid` the set lacks, at most once per `min_refresh` (so a flood of
//! tokens with made-up `kid`s costs the identity provider one request per interval, not one
//! per token).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::base::clock::Clock;
use portico_auth::jwt::KeySet;
use portico_config::JwksSource;

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct JwksCache {
    pub source: JwksSource,
    keys: ArcSwapOption<KeySet>,
    /// When the last on-demand fetch started.
    last_demand: Mutex<Option<Instant>>,
    clock: Arc<Clock>,
    /// One fetch at a time (background and on-demand fetches queue behind each other).
    fetching: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn start(source: JwksSource, clock: Arc<Clock>) -> Arc<JwksCache> {
        let cache = Arc::new(JwksCache {
            source,
            clock,
            keys: ArcSwapOption::empty(),
            last_demand: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&cache)));
        cache
    }

    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    async fn fetch(&self) -> bool {
        let result = crate::upstream::fetch::get(&self.source.url, FETCH_TIMEOUT, MAX_JWKS_BYTES)
            .await
            .and_then(|body| KeySet::from_jwks(&body));
        match result {
            Ok(set) => {
                metrics::counter!("portico_jwks_fetches_total", "url" => self.source.url.clone(), "result" => "ok").increment(1);
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Err(e) => {
                metrics::counter!("portico_jwks_fetches_total", "url" => self.source.url.clone(), "result" => "error").increment(1);
                // The previous keys stay in use: an identity provider outage must not lock
                // every client out while their tokens are still verifiable.
                tracing::warn!(url = %self.source.url, error = %e, "JWKS fetch failed; keeping the previous keys");
                false
            }
        }
    }

    /// Fetches the set again because a token named an unknown `kid` (or no set is loaded yet),
    /// unless that was done less than `min_refresh` ago. Returns whether a fetch succeeded.
    pub async fn refresh_on_demand(&self) -> bool {
        {
            let mut last = self.last_demand.lock().unwrap_or_else(|e| e.into_inner());
            let now = self.clock.instant();
            if last.is_some_and(|t| now.saturating_duration_since(t) < self.source.min_refresh) {
                return false;
            }
            *last = Some(now);
        }
        let _one = self.fetching.lock().await;
        self.fetch().await
    }
}

async fn refresh_loop(cache: Weak<JwksCache>) {
    let mut failures = 0u32;
    loop {
        let Some(c) = cache.upgrade() else { return };
        let ok = {
            let _one = c.fetching.lock().await;
            c.fetch().await
        };
        // After a failure, try again soon (1 s, doubling), but never later than the interval.
        let wait = if ok {
            failures = 0;
            c.source.refresh
        } else {
            failures = (failures + 1).min(8);
            Duration::from_secs(1 << (failures - 1)).min(c.source.refresh)
        };
        drop(c);
        tokio::time::sleep(wait).await;
    }
}
