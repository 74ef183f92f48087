//! The state a request reads: the compiled config plus what was built from it (upstream pools,
//! the access-log sink). Swapped whole on reload; a request keeps the one it started with.

use std::sync::Arc;
use std::time::SystemTime;

use portico_config::Config;

use crate::observe::access_log::Sink;
use crate::observe::metrics::RouteMetrics;
use crate::observe::otel::Exporter;
use crate::policy::auth::AuthState;
use crate::policy::jwks::JwksCache;
use crate::policy::state::PolicyStates;
use crate::upstream::pool::UpstreamPool;

/// Targets set through the admin API, by upstream name; they replace the file's targets until
/// removed.
pub type TargetOverrides = std::collections::BTreeMap<String, Vec<portico_config::Target>>;

/// Why a runtime could not be built from a config (the config itself was valid): what it
/// opens or connects to at build time failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The access log's file could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(#[source] std::io::Error),
    /// The audit trail could not be opened.
    #[error("cannot open the audit trail: {0}")]
    Audit(#[source] std::io::Error),
    /// The trace exporter's thread could not be started.
    #[error("cannot start the trace exporter: {0}")]
    Tracing(#[source] std::io::Error),
    /// The shared rate-limit store (Redis) could not be set up.
    #[error(transparent)]
    Redis(#[from] crate::policy::redis_limit::RedisSetupError),
    /// An upstream's pool could not be made (its TLS settings).
    #[error(transparent)]
    Upstream(#[from] crate::upstream::pool::PoolError),
    /// The policies' state could not be made (no secure random numbers for the Basic cache).
    #[error("the policies' state: {0}")]
    Policies(#[source] rustls::Error),
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// Same order as `config.upstreams`.
    pub pools: Vec<Arc<UpstreamPool>>,
    pub access_log: Option<Sink>,
    /// The OpenTelemetry exporter, when `tracing` is on.
    pub tracer: Option<Exporter>,
    /// The audit trail, when `audit` is configured.
    pub audit: Option<Arc<crate::observe::audit::AuditLog>>,
    /// Same order as `config.routes`.
    pub route_metrics: Arc<[RouteMetrics]>,
    /// What each policy keeps between requests (limiters, caches), by its `slot`.
    pub policies: PolicyStates,
    /// Per route (by index): its `RateLimit-Policy` value, listing the limits of every
    /// `rate_limit` policy in its chain.
    pub rate_limit_policy: Arc<[Option<http::HeaderValue>]>,
    /// The shared rate-limit store, when the config has `redis`.
    pub redis: Option<Arc<crate::policy::redis_limit::RedisStore>>,
    /// Consumers, key sets and credential caches of the identity policies.
    pub auth: AuthState,
    /// By route index: service definitions fetched by gRPC reflection (`grpc_transcode` with
    /// `reflection: true`), filled in by a background task.
    pub reflected: Arc<[arc_swap::ArcSwapOption<portico_translate::Transcoder>]>,
    /// 1 for the config loaded at start, +1 per applied reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// The gateway's clock, for expiry decisions (the same across reloads).
    pub clock: Arc<crate::base::clock::Clock>,
    /// The live view's counters for requests no route took.
    pub live_unrouted: Arc<crate::observe::live::LiveCounters>,
    /// The last answers that broke their contract (kept across reloads).
    pub violations: Arc<crate::observe::violations::Recent>,
}

impl Runtime {
    /// Builds the runtime for `config`, reusing pools of upstreams whose settings did not change
    /// (their open connections and health state survive the reload); a changed upstream's new
    /// pool keeps the health state of the targets it still has.
    pub fn build(
        config: Config,
        previous: Option<&Runtime>,
        generation: u64,
        overrides: &TargetOverrides,
    ) -> Result<Runtime, RuntimeError> {
        let pools = build_pools(&config, previous, overrides).map_err(RuntimeError::Upstream)?;
        let access_log = match previous.and_then(|p| p.access_log.as_ref()) {
            Some(s) if s.target == config.access_log && s.redact == config.redact => {
                Some(s.clone())
            }
            _ => {
                Sink::start(&config.access_log, &config.redact).map_err(RuntimeError::AccessLog)?
            }
        };
        // The exporter (its queue, its connection) is kept while its settings are; spans of
        // requests that started before a change still go out through the old one.
        let tracer = match (&config.tracing, previous.and_then(|p| p.tracer.as_ref())) {
            (None, _) => None,
            (Some(t), Some(e)) if e.export == t.export => Some(e.clone()),
            (Some(t), _) => Some(Exporter::start(&t.export).map_err(RuntimeError::Tracing)?),
        };
        // The trail is kept while its file and key are: its chain goes on in one writer.
        let audit = match (&config.audit, previous.and_then(|p| p.audit.as_ref())) {
            (None, _) => None,
            (Some(a), Some(log)) if log.is(a) => {
                log.update(a);
                Some(log.clone())
            }
            (Some(a), _) => Some(Arc::new(
                crate::observe::audit::AuditLog::open(a).map_err(RuntimeError::Audit)?,
            )),
        };
        // The Redis connection survives a reload that does not change its settings.
        let redis = match &config.redis {
            None => None,
            Some(s) => Some(
                match previous
                    .and_then(|p| p.redis.as_ref())
                    .filter(|r| r.settings == *s)
                {
                    Some(r) => r.clone(),
                    None => crate::policy::redis_limit::RedisStore::new(s.clone())
                        .map_err(RuntimeError::Redis)?,
                },
            ),
        };
        let clock = previous.map_or_else(Default::default, |p| p.clock.clone());
        let policies = PolicyStates::build(
            &config,
            previous.map(|p| &p.policies),
            redis.as_ref(),
            &clock,
        )
        .map_err(RuntimeError::Policies)?;
        let rate_limit_policy = config
            .routes
            .iter()
            .map(|r| {
                crate::policy::ratelimit::policy_header(
                    config.global_policies.iter().chain(r.policies.iter()),
                )
            })
            .collect();
        // Key sets whose URL and timing did not change are kept, with their keys.
        let jwks = config
            .jwks
            .iter()
            .map(|src| {
                previous
                    .and_then(|p| p.auth.jwks.iter().find(|c| c.source == *src).cloned())
                    .unwrap_or_else(|| JwksCache::start(src.clone(), clock.clone()))
            })
            .collect();
        // Reflected definitions: the previous ones of a route with the same name serve until the
        // new fetch (started below) succeeds.
        let reflected: Arc<[arc_swap::ArcSwapOption<portico_translate::Transcoder>]> = config
            .routes
            .iter()
            .map(|r| {
                let carried = r
                    .transcode
                    .as_ref()
                    .filter(|t| t.transcoder.is_none())
                    .and(previous)
                    .and_then(|p| {
                        let i = p.config.routes.iter().position(|o| o.name == r.name)?;
                        p.reflected.get(i)?.load_full()
                    });
                arc_swap::ArcSwapOption::new(carried)
            })
            .collect();
        let route_metrics = config
            .routes
            .iter()
            .map(|r| {
                // A route's live counters outlive the reload: requests in flight on the old
                // runtime, and the second in progress, are still drained.
                let live = previous
                    .and_then(|p| p.route_metrics.iter().find(|m| m.name == r.name))
                    .map(|m| m.live.clone());
                RouteMetrics::new(r.name.clone(), live)
            })
            .collect::<Vec<_>>()
            .into();
        let consumers = config.consumers.clone();
        Ok(Runtime {
            config: Arc::new(config),
            pools,
            access_log,
            tracer,
            audit,
            route_metrics,
            policies: policies.clone(),
            rate_limit_policy,
            redis,
            auth: AuthState {
                consumers,
                jwks,
                states: policies,
            },
            reflected,
            generation,
            loaded_at: SystemTime::now(),
            clock,
            live_unrouted: previous.map_or_else(Default::default, |p| p.live_unrouted.clone()),
            violations: previous.map_or_else(Default::default, |p| p.violations.clone()),
        })
    }

    /// This runtime with its pools rebuilt for new target overrides (an admin-API change):
    /// the same config, limiters and caches; unchanged upstreams keep their pools.
    pub fn with_overrides(&self, overrides: &TargetOverrides) -> Result<Runtime, RuntimeError> {
        let mut rt = self.clone();
        rt.pools =
            build_pools(&self.config, Some(self), overrides).map_err(RuntimeError::Upstream)?;
        rt.generation += 1;
        rt.loaded_at = SystemTime::now();
        Ok(rt)
    }
}

/// One pool per upstream: the previous runtime's pool when the upstream (with its effective
/// targets) is unchanged, else a new one that keeps the health of the targets it shares with
/// the old pool.
fn build_pools(
    config: &Config,
    previous: Option<&Runtime>,
    overrides: &TargetOverrides,
) -> Result<Vec<Arc<UpstreamPool>>, crate::upstream::pool::PoolError> {
    let mut pools = Vec::with_capacity(config.upstreams.len());
    for up in &config.upstreams {
        let up = match overrides.get(&*up.name) {
            None => up.clone(),
            Some(targets) => {
                let mut spec = (**up).clone();
                spec.targets = targets.clone();
                // Differs from the file's fingerprint and from other target lists'.
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&up.fingerprint, &mut h);
                for t in targets {
                    std::hash::Hash::hash(&*t.display, &mut h);
                    std::hash::Hash::hash(&t.weight, &mut h);
                }
                spec.fingerprint = std::hash::Hasher::finish(&h);
                Arc::new(spec)
            }
        };
        let reused = previous.and_then(|p| {
            p.pools
                .iter()
                .find(|pool| pool.spec.name == up.name && pool.spec.fingerprint == up.fingerprint)
                .cloned()
        });
        pools.push(match reused {
            Some(p) => p,
            None => {
                let old =
                    previous.and_then(|p| p.pools.iter().find(|pool| pool.spec.name == up.name));
                let pool = Arc::new(UpstreamPool::new(up, old.map(|p| &**p))?);
                pool.start_health_checks();
                pool.preconnect();
                pool
            }
        });
    }
    Ok(pools)
}
