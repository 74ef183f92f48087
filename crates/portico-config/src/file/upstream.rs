//! `upstreams` as written: targets, balancing, health checks, retries, TLS.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Targets: a URL (`http://host:port`, `https://host:port`, `h2c://host:port` for HTTP/2
    /// without TLS), or `{ url: URL, weight: N }`.
    pub targets: Vec<TargetConfig>,
    /// How a target is chosen for each request. Default `round_robin`.
    #[serde(default)]
    pub load_balancing: Option<LoadBalancingConfig>,
    /// Time allowed to open a TCP (and TLS) connection. Default `5s`.
    #[serde(default)]
    pub connect_timeout: Option<DurationStr>,
    /// Time allowed from sending the request to receiving the response head. Default `60s`.
    #[serde(default)]
    pub request_timeout: Option<DurationStr>,
    /// Close pooled connections idle this long; keep it below the upstream's own keep-alive
    /// timeout. Default `30s`.
    #[serde(default)]
    pub idle_timeout: Option<DurationStr>,
    /// Most idle connections kept per target. Default 128.
    #[serde(default)]
    pub pool_max_idle: Option<usize>,
    /// Connections opened to each target as soon as the upstream is loaded, before any
    /// request needs them. Default 0.
    #[serde(default)]
    pub preconnect: Option<usize>,
    /// Circuit breaker: most requests in flight to this upstream at once. Requests over the
    /// limit get 503 with `Retry-After` immediately instead of queueing. Default: no limit.
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// Most connections open to each target at once (HTTP/1.1 and HTTP/2). A request that
    /// finds none free waits for one (see `max_pending`). Default: no limit.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// With `max_connections`: most requests waiting for a connection per target; more get 503
    /// at once. A request waits at most `connect_timeout`. Default 1024.
    #[serde(default)]
    pub max_pending: Option<usize>,
    /// A streaming response (or request body) that sends nothing for this long is cut off.
    /// `0s` turns it off. Default `5m`.
    #[serde(default)]
    pub stream_idle_timeout: Option<DurationStr>,
    /// How often targets named by DNS are resolved again. Default `10s`.
    #[serde(default)]
    pub dns_refresh: Option<DurationStr>,
    /// Passive health checking: targets that keep failing are taken out of rotation for a while.
    #[serde(default)]
    pub passive_health: Option<PassiveHealthConfig>,
    /// Active health checking: probe every target in the background.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Retrying failed requests, on another target, within a retry budget.
    #[serde(default)]
    pub retries: Option<RetriesConfig>,
    /// TLS settings for `https://` targets.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    /// Tries per request, the first included. Default 2.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// What is retried: `connect_failure`, `reset` (connection lost after sending),
    /// `timeout` (per-attempt), or status codes. Default `[connect_failure, reset, 502, 503, 504]`.
    #[serde(default)]
    pub retry_on: Vec<RetryOn>,
    /// Retries may add at most this share of the upstream's requests. Default 20.
    #[serde(default)]
    pub budget_percent: Option<u32>,
    /// Base back-off before a retry: exponential with full jitter, at most 10 × base. Default `25ms`.
    #[serde(default)]
    pub backoff: Option<DurationStr>,
    /// Time allowed for each attempt (the route's timeout still bounds the whole). Default: none.
    #[serde(default)]
    pub attempt_timeout: Option<DurationStr>,
    /// Also retry methods that are not idempotent (POST, PATCH). Default `false`.
    #[serde(default)]
    pub non_idempotent: bool,
}

/// A condition that triggers a retry: a name or an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    Status(u16),
    Named(RetryCondition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryCondition {
    ConnectFailure,
    Reset,
    Timeout,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET; omit (with `grpc_service`) for a TCP connect check.
    #[serde(default)]
    pub path: Option<String>,
    /// Use the gRPC health protocol (`grpc.health.v1.Health/Check`) for this service name
    /// (`""` for the server as a whole) instead of `path`. Targets must speak HTTP/2
    /// (`h2c://` or `https://`).
    #[serde(default)]
    pub grpc_service: Option<String>,
    /// Time between checks of each target. Default `5s`.
    #[serde(default)]
    pub interval: Option<DurationStr>,
    /// Time allowed for one check (connect and response head). Default `2s`.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// Statuses that count as healthy. Default: 200–399.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    /// Consecutive successes that bring an unhealthy target back. Default 2.
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that take a target out. Default 3.
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Consecutive failures (connect errors, timeouts, broken responses, 502/503/504) that eject
    /// a target. Default 5; 0 turns passive checking off.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// How long a first ejection lasts; repeated ejections last longer (× 2, × 3, … up to × 10).
    /// Default `10s`.
    #[serde(default)]
    pub ejection_time: Option<DurationStr>,
}

/// A target: a URL, or a URL with a weight.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub url: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedTarget {
    url: String,
    #[serde(default)]
    weight: Option<u32>,
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a target URL or `{ url: URL, weight: N }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig {
                    url: v.to_owned(),
                    weight: None,
                })
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<TargetConfig, E> {
                Ok(TargetConfig {
                    url: v,
                    weight: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TargetConfig, A::Error> {
                let w =
                    WeightedTarget::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetConfig {
                    url: w.url,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for TargetConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A target URL, or a URL with a weight.",
            "oneOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": { "url": { "type": "string" }, "weight": { "type": "integer", "minimum": 1 } },
                    "required": ["url"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingConfig {
    /// `round_robin` (weighted, smooth), `random` (weighted), `least_request` (power of two
    /// choices over in-flight requests and a peak-EWMA of latency), or `hash` (consistent hashing
    /// on `hash_on`).
    pub algorithm: Algorithm,
    /// For `hash`: what to hash. Requests without it are spread round robin.
    #[serde(default)]
    pub hash_on: Option<HashOnConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    Random,
    LeastRequest,
    Hash,
}

/// One of `header: NAME`, `cookie: NAME`, `query: NAME`, `client_ip: true`, `path: true`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashOnConfig {
    Header(String),
    Cookie(String),
    Query(String),
    ClientIp(bool),
    Path(bool),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM bundle of CAs to trust instead of the built-in web roots.
    #[serde(default)]
    pub ca: Option<String>,
    /// Name to verify and send as SNI, when it differs from the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
}
