//! What policies keep between requests, in one list: a slot per policy that keeps anything
//! (`Config::policy_slots`; each such policy's `slot` is its index). Built with each runtime;
//! a reload keeps the state of every policy whose settings did not change, so counters,
//! in-flight counts and cached answers survive it.
//!
//! A policy kind that keeps state adds a variant here, its line in `PolicyStates::build`, and
//! an accessor; nothing else in the runtime changes.

use std::sync::Arc;

use portico_auth::basic::VerifiedCache;
use portico_config::{AuthMethod, Config, Policy};

use crate::base::clock::Clock;
use crate::policy::cache::ResponseCache;
use crate::policy::concurrency::InFlight;
use crate::policy::ratelimit::Limiters;
use crate::policy::redis_limit::RedisStore;
use crate::policy::token_cache::TokenCache;

/// Verified Basic credentials remembered per `basic_auth` policy.
const BASIC_CACHE_ENTRIES: usize = 10_000;

/// One policy's state.
#[derive(Debug)]
pub enum PolicyState {
    /// The slot of a policy that keeps nothing here (never read).
    Empty,
    /// `rate_limit`: its limiters (local, or leases of the shared Redis budget).
    RateLimit(Arc<Limiters>),
    /// `concurrency_limit`: its in-flight counts.
    Concurrency(Arc<InFlight>),
    /// `cache`: its store, shared by the `cache` policies with the same settings.
    Cache(Arc<ResponseCache>),
    /// `basic_auth`: credentials verified lately (a keyed digest of them).
    Basic(Arc<VerifiedCache>),
    /// `jwt`: tokens verified lately.
    Jwt(Arc<TokenCache>),
    /// `introspection`: tokens the authorization server answered for lately.
    Introspection(Arc<TokenCache>),
}

/// Every policy's state, by slot. Cheap to clone (one reference count).
#[derive(Debug, Clone)]
pub struct PolicyStates(Arc<[PolicyState]>);

/// Every policy of `config`: the global chain, then each route's.
fn policies(config: &Config) -> impl Iterator<Item = &Policy> {
    config
        .global_policies
        .iter()
        .chain(config.routes.iter().flat_map(|r| r.policies.iter()))
}

impl PolicyStates {
    /// The state of `config`'s policies: the previous runtime's for a rate limit, concurrency
    /// limit or cache whose settings are unchanged (same fingerprint), new otherwise. Token
    /// and credential caches start empty: a reload may have changed what they vouch for.
    pub fn build(
        config: &Config,
        previous: Option<&PolicyStates>,
        redis: Option<&Arc<RedisStore>>,
        clock: &Arc<Clock>,
    ) -> Result<PolicyStates, rustls::Error> {
        let prev: &[PolicyState] = previous.map_or(&[], |p| &p.0);
        let mut slots: Vec<PolicyState> = (0..config.policy_slots)
            .map(|_| PolicyState::Empty)
            .collect();
        // One secret for the Basic caches of this runtime: a digest kept by one is no use to
        // another runtime's.
        let mut secret = [0u8; 32];
        rustls::crypto::aws_lc_rs::default_provider()
            .secure_random
            .fill(&mut secret)
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        for p in policies(config) {
            match p {
                Policy::RateLimit(rl) => {
                    let kept = prev.iter().find_map(|s| match s {
                        PolicyState::RateLimit(l) if l.fingerprint == rl.fingerprint => {
                            Some(l.clone())
                        }
                        _ => None,
                    });
                    slots[rl.slot] =
                        PolicyState::RateLimit(kept.unwrap_or_else(|| Limiters::new(rl, redis)));
                }
                // In-flight counts carry over, so a reload does not briefly double the cap.
                Policy::ConcurrencyLimit(c) => {
                    let kept = prev.iter().find_map(|s| match s {
                        PolicyState::Concurrency(f) if f.fingerprint == c.fingerprint => {
                            Some(f.clone())
                        }
                        _ => None,
                    });
                    slots[c.slot] =
                        PolicyState::Concurrency(kept.unwrap_or_else(|| InFlight::new(c)));
                }
                Policy::Cache(c) => {
                    let same = |s: &PolicyState| match s {
                        PolicyState::Cache(store) if store.fingerprint == c.fingerprint => {
                            Some(store.clone())
                        }
                        _ => None,
                    };
                    let store = slots
                        .iter()
                        .find_map(same)
                        .or_else(|| prev.iter().find_map(same))
                        .unwrap_or_else(|| Arc::new(ResponseCache::new(c, clock.clone())));
                    slots[c.slot] = PolicyState::Cache(store);
                }
                Policy::Auth(a) => {
                    for m in &a.methods {
                        match m {
                            AuthMethod::Basic(b) => {
                                slots[b.slot] = PolicyState::Basic(Arc::new(VerifiedCache::new(
                                    secret,
                                    b.cache_ttl,
                                    BASIC_CACHE_ENTRIES,
                                )));
                            }
                            AuthMethod::Jwt(j) => {
                                slots[j.slot] =
                                    PolicyState::Jwt(Arc::new(TokenCache::new(j.token_cache_size)));
                            }
                            AuthMethod::Introspection(i) => {
                                slots[i.slot] = PolicyState::Introspection(Arc::new(
                                    TokenCache::new(i.cache_size),
                                ));
                            }
                            AuthMethod::ApiKey(_) | AuthMethod::ClientCert(_) => {}
                        }
                    }
                }
                Policy::Headers(_)
                | Policy::Acl(_)
                | Policy::IpFilter(_)
                | Policy::Cors(_)
                | Policy::BodyLimit(_)
                | Policy::Compression(_)
                | Policy::RequestDecompression(_)
                | Policy::JsonTransform(_)
                | Policy::XmlJson(_) => {}
            }
        }
        Ok(PolicyStates(slots.into()))
    }

    /// A `rate_limit` policy's limiters.
    pub fn rate_limit(&self, slot: usize) -> &Limiters {
        match &self.0[slot] {
            PolicyState::RateLimit(l) => l,
            other => mismatch(slot, "rate_limit", other),
        }
    }

    /// A `concurrency_limit` policy's in-flight counts.
    pub fn concurrency(&self, slot: usize) -> &Arc<InFlight> {
        match &self.0[slot] {
            PolicyState::Concurrency(f) => f,
            other => mismatch(slot, "concurrency_limit", other),
        }
    }

    /// A `cache` policy's store.
    pub fn cache(&self, slot: usize) -> &Arc<ResponseCache> {
        match &self.0[slot] {
            PolicyState::Cache(c) => c,
            other => mismatch(slot, "cache", other),
        }
    }

    /// A `basic_auth` policy's cache of verified credentials.
    pub fn basic(&self, slot: usize) -> &VerifiedCache {
        match &self.0[slot] {
            PolicyState::Basic(c) => c,
            other => mismatch(slot, "basic_auth", other),
        }
    }

    /// A `jwt` policy's token cache.
    pub fn jwt(&self, slot: usize) -> &Arc<TokenCache> {
        match &self.0[slot] {
            PolicyState::Jwt(c) => c,
            other => mismatch(slot, "jwt", other),
        }
    }

    /// An `introspection` policy's token cache.
    pub fn introspection(&self, slot: usize) -> &Arc<TokenCache> {
        match &self.0[slot] {
            PolicyState::Introspection(c) => c,
            other => mismatch(slot, "introspection", other),
        }
    }

    /// The response stores, each once (policies with equal settings share one).
    pub fn caches(&self) -> Vec<&Arc<ResponseCache>> {
        let mut out: Vec<&Arc<ResponseCache>> = Vec::new();
        for s in self.0.iter() {
            if let PolicyState::Cache(c) = s
                && !out.iter().any(|o| Arc::ptr_eq(o, c))
            {
                out.push(c);
            }
        }
        out
    }
}

/// A slot read as another kind than it holds: the config and its runtime were built apart,
/// which `Runtime::build` never does.
#[cold]
fn mismatch(slot: usize, wanted: &str, found: &PolicyState) -> ! {
    panic!("policy slot {slot} read as `{wanted}` holds {found:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        portico_config::load_str("test.yaml", text, std::path::Path::new("."), &|_| None)
            .unwrap_or_else(|d| panic!("{d}"))
    }

    fn limiter(s: &PolicyStates, slot: usize) -> *const Limiters {
        s.rate_limit(slot)
    }

    fn rate_limit_slot(c: &Config) -> usize {
        policies(c)
            .find_map(|p| match p {
                Policy::RateLimit(rl) => Some(rl.slot),
                _ => None,
            })
            .unwrap()
    }

    const BEFORE: &str = "routes:
  - name: api
    match: { path: { prefix: / } }
    respond: { body: x }
    policies:
      - type: rate_limit
        limits: [{ requests: 3, per: 1m }]
      - type: cache
";

    /// State policies added in front move the rate limit to another slot; its limiters and
    /// the cache's store follow it, and a new policy gets new state.
    #[test]
    fn state_follows_its_policy_across_slots() {
        let before = load(BEFORE);
        let first = PolicyStates::build(&before, None, None, &Default::default()).unwrap();
        assert_eq!(first.0.len(), before.policy_slots);
        let after = load(&BEFORE.replace(
            "routes:\n",
            "policies:
  - type: concurrency_limit
    max_in_flight: 10
routes:
  - name: cached
    match: { path: { exact: /c } }
    respond: { body: c }
    policies:
      - type: cache
",
        ));
        assert_ne!(rate_limit_slot(&before), rate_limit_slot(&after));
        let second = PolicyStates::build(&after, Some(&first), None, &Default::default()).unwrap();
        assert_eq!(
            limiter(&first, rate_limit_slot(&before)),
            limiter(&second, rate_limit_slot(&after)),
            "the unchanged rate limit keeps its limiters"
        );
        // One store for the three cache policies with equal settings, the first runtime's.
        let stores = second.caches();
        assert_eq!(stores.len(), 1);
        assert!(Arc::ptr_eq(stores[0], first.caches()[0]));
        // A changed limit starts afresh.
        let changed = load(&BEFORE.replace("requests: 3", "requests: 4"));
        let third =
            PolicyStates::build(&changed, Some(&second), None, &Default::default()).unwrap();
        assert_ne!(
            limiter(&second, rate_limit_slot(&after)),
            limiter(&third, rate_limit_slot(&changed))
        );
    }

    #[test]
    #[should_panic(expected = "read as `jwt`")]
    fn a_slot_read_as_another_kind_is_a_bug_and_says_so() {
        let c = load(BEFORE);
        let s = PolicyStates::build(&c, None, None, &Default::default()).unwrap();
        let _ = s.jwt(rate_limit_slot(&c));
    }
}
