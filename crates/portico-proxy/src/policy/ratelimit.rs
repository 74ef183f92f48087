//! Rate limiting: GCRA per key, several limits per policy, counters kept across reloads for
//! limits that did not change. Local counters are governor's (idle keys forgotten); shared
//! counters live in Redis, updated by one Lua script per request (see `policy/redis_limit.rs`).

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use portico_config::{Limit, RateLimitPolicy};

/// A token bucket per key. The map is keyed by `key_hash` of the key's text, not the text:
/// an owned `String` per check and SipHash again inside the map were ~300 instructions per
/// request. The hash is already keyed SipHash, so the map's own hasher only has to spread it.
type Keyed = RateLimiter<
    u64,
    DashMapStateStore<u64, std::hash::BuildHasherDefault<crate::observe::metrics::KeyHasher>>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// A key's identity in the local token buckets: SipHash-1-3 under a key made once per process
/// (kept across reloads, like the buckets). Clients choose the text (an address, a header),
/// not the hash key, so they cannot make two keys share a bucket short of a 64-bit collision.
fn key_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    static HASHER: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    HASHER
        .get_or_init(std::hash::RandomState::new)
        .hash_one(key)
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("fingerprint", &self.fingerprint)
            .field("limits", &self.limits.len())
            .finish()
    }
}

/// The local state of one limit.
enum State {
    Bucket(Keyed),
    Window(crate::policy::sliding::SlidingWindow),
}

pub struct Limiters {
    pub fingerprint: u64,
    limits: Vec<(Limit, State)>,
    /// Requests refused (by any of its limits), and the keys refused most (for the admin
    /// API's `GET /rate-limits`). Kept across reloads with the counters.
    pub refusals: Refusals,
    /// Shared counters, when the policy has `store: redis`; the local ones then serve only
    /// while Redis is unreachable (fail-open).
    pub shared: Option<Shared>,
}

pub struct Shared {
    pub store: Arc<crate::policy::redis_limit::RedisStore>,
    pub fail_open: bool,
    /// Per limit, as the script takes them: (0, emission interval µs, burst) for a token
    /// bucket, (1, window µs, requests) for a sliding window.
    params: Vec<(u8, u64, u32)>,
    /// Units taken per round trip; above 1, the extra ones are leased to this instance.
    batch: u32,
    leases: std::sync::Mutex<std::collections::HashMap<String, Lease>>,
}

/// Units taken from Redis for one key and not spent yet.
struct Lease {
    units: u32,
    /// What Redis said remained per limit when the lease was taken.
    remaining: Vec<u32>,
    expires: std::time::Instant,
}

/// Refused requests of one policy: a count, and the keys refused most, kept by the
/// Space-Saving algorithm (Metwally et al.) in [`TOP_KEYS`] places: a new key takes the
/// place of the least counted one and starts from its count, so a key refused more than
/// `total / TOP_KEYS` times is always listed, and a count is at most that much too high.
/// Only refusals pay for it, and under contention the list skips an update rather than
/// wait (the count stays exact).
#[derive(Default)]
pub struct Refusals {
    pub total: std::sync::atomic::AtomicU64,
    top: std::sync::Mutex<Vec<(Box<str>, u64)>>,
}

/// Keys listed per policy.
pub const TOP_KEYS: usize = 16;

impl Refusals {
    pub fn record(&self, key: &str) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut top) = self.top.try_lock() else {
            return;
        };
        if let Some(e) = top.iter_mut().find(|(k, _)| &**k == key) {
            e.1 += 1;
        } else if top.len() < TOP_KEYS {
            top.push((key.into(), 1));
        } else if let Some(least) = top.iter_mut().min_by_key(|(_, n)| *n) {
            *least = (key.into(), least.1 + 1);
        }
    }

    /// The keys refused most, most first.
    pub fn top(&self) -> Vec<(Box<str>, u64)> {
        let mut top = self.top.lock().map(|t| t.clone()).unwrap_or_default();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top
    }
}

/// How long leased units may be spent: past it they are dropped (the fleet under-admits by them,
/// never over-admits).
const LEASE_TTL: Duration = Duration::from_secs(1);
/// Keys with a lease kept at most; past it, expired leases are swept (then all, if need be).
const MAX_LEASES: usize = 100_000;

/// The outcome of a shared check.
pub enum Decision {
    Allowed(Allowed),
    /// Refused by the limit at this index; retry after this long.
    Limited(Duration, usize),
    /// Redis did not answer and the policy fails closed.
    Unavailable,
}

/// What an allowed request is told about its limits: the one closest to exhaustion (none when
/// the headers are not wanted).
pub struct Allowed {
    pub tightest: Option<Tightest>,
}

/// A limit's state after a request took its unit.
#[derive(Clone, Copy, Debug)]
pub struct Tightest {
    /// The limit's index in its policy.
    pub limit: usize,
    /// Units left.
    pub remaining: u32,
    /// Seconds until the limit is full again.
    pub reset: u64,
}

impl Tightest {
    /// Closer to exhaustion than `other`: fewer units left, or as few and longer to refill.
    pub fn tighter_than(&self, other: &Tightest) -> bool {
        (self.remaining, std::cmp::Reverse(self.reset))
            < (other.remaining, std::cmp::Reverse(other.reset))
    }
}

/// A limit's name in the `RateLimit` headers and the metrics: `limit-N`, where N counts the
/// limits of every `rate_limit` policy in the route's chain (global policies first, then the
/// route's, each policy's limits in order). Distinct within a route, and the same for a
/// request after request.
pub fn limit_name(number: usize) -> String {
    format!("limit-{number}")
}

/// The `RateLimit-Policy` value for a chain of `rate_limit` policies: every limit of every
/// policy that shows its headers, named as by [`limit_name`]. Built once per route and
/// config; `None` when nothing is shown.
pub fn policy_header<'a>(
    chain: impl Iterator<Item = &'a portico_config::Policy>,
) -> Option<HeaderValue> {
    let mut items = Vec::new();
    let mut number = 0;
    for p in chain {
        if let portico_config::Policy::RateLimit(rl) = p {
            for l in &rl.limits {
                if !rl.hide_headers {
                    items.push(format!(
                        "\"{}\";q={};w={}",
                        limit_name(number),
                        l.requests,
                        l.per.as_secs().max(1)
                    ));
                }
                number += 1;
            }
        }
    }
    (!items.is_empty())
        .then(|| HeaderValue::try_from(items.join(", ")).ok())
        .flatten()
}

/// The `RateLimit-Policy` and `RateLimit` response headers of a request's rate-limit
/// decisions. Two fields, not a list: a `Vec` here was an allocation per request.
#[derive(Default)]
pub struct LimitHeaders {
    policy: Option<HeaderValue>,
    limit: Option<HeaderValue>,
}

impl LimitHeaders {
    /// `policy`: the route's `RateLimit-Policy`; `tightest`: the limit closest to exhaustion
    /// over all its policies, with its number (see [`limit_name`]).
    pub fn new(policy: Option<HeaderValue>, tightest: Option<(usize, Tightest)>) -> LimitHeaders {
        let limit = tightest.and_then(|(number, t)| {
            // Written by hand into a buffer on the stack: `format!` here was ~1k instructions
            // per request, and a `String` turned into a `HeaderValue` two allocations.
            let mut text = [0u8; 80];
            let mut n = 0;
            let mut put = |b: &[u8]| {
                text[n..n + b.len()].copy_from_slice(b);
                n += b.len();
            };
            let mut digits = [0u8; 20];
            put(b"\"limit-");
            put(crate::base::headers::decimal(number as u64, &mut digits));
            put(b"\";r=");
            put(crate::base::headers::decimal(
                u64::from(t.remaining),
                &mut digits,
            ));
            put(b";t=");
            put(crate::base::headers::decimal(t.reset, &mut digits));
            HeaderValue::from_bytes(&text[..n]).ok()
        });
        LimitHeaders { policy, limit }
    }

    /// Sets them on a response.
    pub fn apply(self, to: &mut http::HeaderMap) {
        if let Some(v) = self.policy {
            to.insert(RATELIMIT_POLICY.clone(), v);
        }
        if let Some(v) = self.limit {
            to.insert(RATELIMIT.clone(), v);
        }
    }
}

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl Limiters {
    pub fn new(
        p: &RateLimitPolicy,
        redis: Option<&Arc<crate::policy::redis_limit::RedisStore>>,
    ) -> Arc<Limiters> {
        let limits = p
            .limits
            .iter()
            .map(|l| {
                if l.sliding {
                    return (
                        l.clone(),
                        State::Window(crate::policy::sliding::SlidingWindow::new(
                            l.requests, l.per,
                        )),
                    );
                }
                let period = l.per / l.requests.max(1);
                let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                    .expect("period above zero")
                    .allow_burst(NonZeroU32::new(l.burst.max(1)).expect("burst above zero"));
                (
                    l.clone(),
                    State::Bucket(
                        RateLimiter::dashmap_with_clock_and_hasher(
                            quota,
                            DefaultClock::default(),
                            Default::default(),
                        )
                        .with_middleware::<StateInformationMiddleware>(),
                    ),
                )
            })
            .collect();
        let shared = match (p.store, redis) {
            (portico_config::LimitStore::Redis { fail_open, batch }, Some(store)) => Some(Shared {
                store: store.clone(),
                fail_open,
                batch,
                leases: std::sync::Mutex::new(std::collections::HashMap::new()),
                params: p
                    .limits
                    .iter()
                    .map(|l| {
                        if l.sliding {
                            let per = u64::try_from(l.per.as_micros()).unwrap_or(u64::MAX);
                            return (1, per.max(1), l.requests.max(1));
                        }
                        let t = (l.per.as_micros() / u128::from(l.requests.max(1))).max(1);
                        (0, u64::try_from(t).unwrap_or(u64::MAX), l.burst.max(1))
                    })
                    .collect(),
            }),
            _ => None,
        };
        let limiters = Arc::new(Limiters {
            fingerprint: p.fingerprint,
            limits,
            refusals: Refusals::default(),
            shared,
        });
        // Forget keys whose buckets are full again, so memory follows the active clients.
        let weak: Weak<Limiters> = Arc::downgrade(&limiters);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let Some(l) = weak.upgrade() else { return };
                    l.sweep();
                }
            });
        }
        limiters
    }

    /// Forgets keys whose buckets are full again (they would behave the same as new keys).
    pub fn sweep(&self) {
        for (_, state) in &self.limits {
            match state {
                State::Bucket(k) => {
                    k.retain_recent();
                    k.shrink_to_fit();
                }
                State::Window(w) => w.sweep(),
            }
        }
    }

    /// The limits, as configured.
    pub fn limits(&self) -> impl Iterator<Item = &Limit> {
        self.limits.iter().map(|(l, _)| l)
    }

    /// Keys with state, summed over the limits.
    pub fn keys(&self) -> usize {
        self.limits
            .iter()
            .map(|(_, state)| match state {
                State::Bucket(k) => k.len(),
                State::Window(w) => w.len(),
            })
            .sum()
    }

    /// Takes one request from every limit for `key`. `Err(wait)`: refused, retry after `wait`.
    /// `Err((wait, limit index))` when refused.
    pub fn check(&self, key: &str, want_headers: bool) -> Result<Allowed, (Duration, usize)> {
        let hashed = key_hash(key);
        let mut tightest: Option<(usize, u32)> = None;
        for (i, (_, state)) in self.limits.iter().enumerate() {
            let left = match state {
                State::Bucket(limiter) => match limiter.check_key(&hashed) {
                    Ok(snapshot) => snapshot.remaining_burst_capacity(),
                    Err(not_until) => {
                        return Err((not_until.wait_time_from(limiter.clock().now()), i));
                    }
                },
                State::Window(w) => w.check(key).map_err(|wait| (wait, i))?,
            };
            if tightest.is_none_or(|(_, r)| left < r) {
                tightest = Some((i, left));
            }
        }
        Ok(Allowed {
            tightest: self.tightest(tightest, want_headers),
        })
    }

    /// Takes one request from every limit for `key` in Redis (one round trip). When Redis does
    /// not answer in time: the local counters (fail-open) or `Unavailable` (fail-closed).
    pub async fn check_shared(
        &self,
        shared: &Shared,
        policy: &str,
        key: &str,
        want_headers: bool,
    ) -> Decision {
        if shared.batch > 1 {
            let mut leases = shared.leases.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(l) = leases.get_mut(key)
                && l.units > 0
                && l.expires > std::time::Instant::now()
            {
                l.units -= 1;
                let units = l.units;
                let tightest = l
                    .remaining
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| **r)
                    .map(|(i, r)| (i, *r + units));
                return Decision::Allowed(Allowed {
                    tightest: self.tightest(tightest, want_headers),
                });
            }
        }
        let taken = shared
            .store
            .take(policy, self.fingerprint, key, &shared.params, shared.batch)
            .await;
        match taken {
            Ok(crate::policy::redis_limit::Taken::Allowed { granted, remaining }) => {
                let leased = granted - 1;
                if leased > 0 {
                    let mut leases = shared.leases.lock().unwrap_or_else(|e| e.into_inner());
                    if leases.len() >= MAX_LEASES {
                        let now = std::time::Instant::now();
                        leases.retain(|_, l| l.expires > now && l.units > 0);
                        if leases.len() >= MAX_LEASES {
                            leases.clear();
                        }
                    }
                    leases.insert(
                        key.to_owned(),
                        Lease {
                            units: leased,
                            remaining: remaining.clone(),
                            expires: std::time::Instant::now() + LEASE_TTL,
                        },
                    );
                }
                let tightest = remaining
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| **r)
                    .map(|(i, r)| (i, *r + leased));
                Decision::Allowed(Allowed {
                    tightest: self.tightest(tightest, want_headers),
                })
            }
            Ok(crate::policy::redis_limit::Taken::Limited(wait, i)) => Decision::Limited(wait, i),
            Err(()) if shared.fail_open => match self.check(key, want_headers) {
                Ok(a) => Decision::Allowed(a),
                Err((wait, i)) => Decision::Limited(wait, i),
            },
            Err(()) => Decision::Unavailable,
        }
    }

    fn tightest(&self, tightest: Option<(usize, u32)>, want_headers: bool) -> Option<Tightest> {
        if !want_headers {
            return None;
        }
        let (i, left) = tightest?;
        let l = &self.limits[i].0;
        // Seconds until the bucket is full again, at the limit's rate.
        let used = l.burst.saturating_sub(left);
        let reset = (l.per.as_secs_f64() * f64::from(used) / f64::from(l.requests)).ceil() as u64;
        Some(Tightest {
            limit: i,
            remaining: left,
            reset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_testkit::rss_kib;

    /// One million distinct keys, in waves: each sweep forgets the keys whose buckets refilled,
    /// so memory stays at one wave's worth instead of growing with every client ever seen.
    /// The process's memory is what is measured, so the test runs alone in a process of its
    /// own: `cargo test` runs a crate's unit tests as threads of one process, and what the
    /// others allocate meanwhile would count against it.
    #[test]
    fn a_million_keys_stay_bounded() {
        const ALONE: &str = "PORTICO_TEST_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "policy::ratelimit::tests::a_million_keys_stay_bounded",
                    "--exact",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(ALONE, "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // It ran: the harness said so.
            assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
            return;
        }
        let policy = RateLimitPolicy {
            slot: 0,
            key: portico_config::LimitKey::ClientIp,
            limits: vec![Limit {
                requests: 1,
                per: Duration::from_millis(20),
                burst: 1,
                sliding: false,
            }],
            hide_headers: true,
            store: portico_config::LimitStore::Local,
            fingerprint: 0,
        };
        let l = Limiters::new(&policy, None);
        let wave = 100_000;
        let mut after_first = 0;
        let mut key = String::new();
        for w in 0..10 {
            for i in 0..wave {
                key.clear();
                use std::fmt::Write;
                let _ = write!(key, "client-{w}-{i}");
                assert!(l.check(&key, false).is_ok(), "a new key has its burst");
            }
            assert_eq!(l.keys(), wave, "wave {w}: every key has state");
            // Wait for the buckets to refill (20 ms at this rate), then sweep.
            for _ in 0..40 {
                #[allow(clippy::disallowed_methods)] // a plain #[test]: no runtime to block
                std::thread::sleep(Duration::from_millis(50));
                l.sweep();
                if l.keys() == 0 {
                    break;
                }
            }
            assert_eq!(l.keys(), 0, "wave {w}: refilled keys are forgotten");
            if w == 0 {
                after_first = rss_kib();
            }
        }
        let growth = rss_kib().saturating_sub(after_first);
        assert!(
            growth < 64 * 1024,
            "memory grew {growth} KiB over 900,000 more keys"
        );
    }
}
