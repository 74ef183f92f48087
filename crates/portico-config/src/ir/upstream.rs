//! Upstreams at run time: targets, balancing, health checks, retries, TLS.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Connections opened per target when the upstream is loaded.
    pub preconnect: usize,
    /// Circuit breaker: most requests in flight at once (`usize::MAX`: no limit).
    pub max_requests: usize,
    /// Most connections open per target (`usize::MAX`: no limit).
    pub max_connections: usize,
    /// Requests that may wait for a connection per target when `max_connections` are open.
    pub max_pending: usize,
    /// Cut off a body that sends nothing for this long.
    pub stream_idle_timeout: Option<Duration>,
    /// How often DNS names among the targets are resolved again.
    pub dns_refresh: Duration,
    /// Consecutive failures that eject a target (0: never).
    pub eject_after_failures: u32,
    pub ejection_time: Duration,
    pub health_check: Option<HealthCheck>,
    pub retry: Option<RetryPolicy>,
    pub tls: UpstreamTls,
    /// Equal fingerprints mean equal settings: a reload keeps that upstream's pools.
    pub fingerprint: u64,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries per request, the first included (at least 2).
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub on_statuses: Vec<u16>,
    pub budget_percent: u32,
    pub backoff: Duration,
    pub attempt_timeout: Option<Duration>,
    pub non_idempotent: bool,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// `None` (and no `grpc_service`): a TCP connect check.
    pub path: Option<http::uri::PathAndQuery>,
    /// gRPC health protocol check of this service instead of `path`.
    pub grpc_service: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Empty: 200–399.
    pub expected_statuses: Vec<u16>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    pub fn is_expected(&self, status: u16) -> bool {
        if self.expected_statuses.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expected_statuses.contains(&status)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastRequest,
    Hash(HashOn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
    ClientIp,
    Path,
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    pub roots: Option<Vec<CertificateDer<'static>>>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    /// HTTP/2 with prior knowledge, no TLS.
    H2c,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    /// Relative share of requests, at least 1.
    pub weight: u32,
    /// `host:port`, as written to the upstream request URI.
    pub authority: http::uri::Authority,
    /// The target as written in the file, for logs.
    pub display: Arc<str>,
}

impl Target {
    /// The absolute URI of `path_and_query` on this target.
    pub fn uri<T>(&self, path_and_query: T) -> Result<http::Uri, http::Error>
    where
        http::uri::PathAndQuery: TryFrom<T>,
        <http::uri::PathAndQuery as TryFrom<T>>::Error: Into<http::Error>,
    {
        http::Uri::builder()
            .scheme(if self.scheme == Scheme::Https {
                "https"
            } else {
                "http"
            })
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}
