//! Runtime types: the config after validation. Nothing here is looked up by string per request;
//! header names and values are pre-built, references are indexes, patterns are compiled.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use crate::router::Router;

/// A validated, compiled configuration. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// Where it came from (`<built-in demo>` for the demo).
    pub source: String,
    /// Fingerprint of the source text, shown on the admin port and in metrics.
    pub hash: String,
    pub listeners: Vec<Listener>,
    pub admin: Option<SocketAddr>,
    pub access_log: AccessLog,
    pub server: Server,
    pub upstreams: Vec<Arc<Upstream>>,
    pub routes: Vec<Arc<Route>>,
    pub router: Router,
    pub global_policies: Arc<[Policy]>,
    /// How many `rate_limit` policies the config has (their `id`s are `0..n`).
    pub rate_limit_policies: usize,
    /// The file as JSON, `${VAR}` references unexpanded and secret-named keys redacted.
    pub redacted: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub http1: bool,
    pub http2: bool,
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// In file order; the first is used when no name matches the client's SNI.
    pub certificates: Vec<TlsCertificate>,
    /// Identifies the certificate files' contents, so a reload can tell whether TLS changed.
    pub fingerprint: u64,
}

#[derive(Debug, Clone)]
pub struct TlsCertificate {
    pub key: Arc<CertifiedKey>,
    /// Lower-case names, `*.example.com` allowed.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout { buffer: usize },
    File { path: PathBuf, buffer: usize },
}

#[derive(Debug, Clone)]
pub struct Server {
    pub trusted_proxies: Vec<Cidr>,
    pub request_id_header: HeaderName,
    pub x_forwarded: bool,
    pub forwarded: bool,
    pub max_request_header_bytes: usize,
    pub max_request_headers: usize,
    pub drain_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub request_header_timeout: Duration,
}

/// An IPv4 or IPv6 network. IPv4-mapped IPv6 peers are compared as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:1.2.3.4` as `1.2.3.4`, so dual-stack listeners log and compare IPv4 clients as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Circuit breaker: most requests in flight at once (`usize::MAX`: no limit).
    pub max_requests: usize,
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
    /// `None`: a TCP connect check.
    pub path: Option<http::uri::PathAndQuery>,
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

#[derive(Debug, Default)]
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

#[derive(Debug)]
pub struct Route {
    pub index: usize,
    pub name: Arc<str>,
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCondition>,
    pub query: Vec<QueryCondition>,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub policies: Arc<[Policy]>,
    /// Headers added to every response of this route (deprecation notices).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Shadow traffic: (upstream index, percent of requests).
    pub mirror: Option<(usize, u32)>,
}

impl Route {
    /// Number of conditions besides host and path; more conditions rank a route higher.
    pub fn condition_count(&self) -> usize {
        usize::from(!self.methods.is_empty()) + self.headers.len() + self.query.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`; matches one or more labels in front.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathPattern {
    Any,
    Exact(String),
    /// No trailing slash, except the root prefix `/`.
    Prefix(String),
    Template(Template),
}

/// A compiled path template: `/users/{id}/files/{*rest}`.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub segments: Vec<Segment>,
    /// Parameter names in order of appearance.
    pub params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// A whole segment captured.
    Param,
    /// The rest of the path (zero or more segments), only last.
    CatchAll,
}

#[derive(Debug)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub test: ValueTest,
}

#[derive(Debug)]
pub struct QueryCondition {
    pub name: String,
    pub test: ValueTest,
}

#[derive(Debug)]
pub enum ValueTest {
    Exact(String),
    Regex(regex::Regex),
    Present(bool),
}

impl ValueTest {
    pub fn accepts(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueTest::Present(want), v) => *want == v.is_some(),
            (ValueTest::Exact(e), Some(v)) => e == v,
            (ValueTest::Regex(r), Some(v)) => r.is_match(v),
            (_, None) => false,
        }
    }
}

#[derive(Debug)]
pub enum Action {
    Proxy(ProxyAction),
    Respond(StaticResponse),
    Redirect(RedirectAction),
}

#[derive(Debug)]
pub struct ProxyAction {
    /// Indexes into [`Config::upstreams`] with their weights (one entry unless the route
    /// splits traffic).
    pub upstreams: Box<[(usize, u32)]>,
    pub total_weight: u32,
    pub strip_prefix: Option<usize>,
    pub path: Option<PathRewrite>,
    pub host: Option<HeaderValue>,
}

impl ProxyAction {
    /// The upstream for one request: the only one, or a weighted draw from `r` in
    /// `0..total_weight`.
    pub fn upstream(&self, r: impl FnOnce(u32) -> u32) -> usize {
        if self.upstreams.len() == 1 {
            return self.upstreams[0].0;
        }
        let mut x = r(self.total_weight);
        for (u, w) in self.upstreams.iter() {
            if x < *w {
                return *u;
            }
            x -= w;
        }
        self.upstreams[0].0
    }
}

/// Text with `{param}` placeholders, compiled to parts.
#[derive(Debug, Clone)]
pub struct PathRewrite {
    pub parts: Vec<RewritePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewritePart {
    Literal(String),
    /// Index into the route template's parameters.
    Param(usize),
}

impl PathRewrite {
    pub fn render(&self, params: &[&str], out: &mut String) {
        for p in &self.parts {
            match p {
                RewritePart::Literal(s) => out.push_str(s),
                RewritePart::Param(i) => out.push_str(params.get(*i).copied().unwrap_or("")),
            }
        }
    }
}

#[derive(Debug)]
pub struct StaticResponse {
    pub status: StatusCode,
    pub body: bytes::Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug)]
pub struct RedirectAction {
    pub status: StatusCode,
    pub to: PathRewrite,
}

/// A policy in the chain. Request phases run global policies first, then the route's, each in
/// declared order; response phases run in the reverse order.
#[derive(Debug)]
pub enum Policy {
    Headers(HeadersPolicy),
    RateLimit(RateLimitPolicy),
}

#[derive(Debug)]
pub struct RateLimitPolicy {
    /// Index of this policy among the config's rate-limit policies (its limiter's slot).
    pub id: usize,
    pub key: LimitKey,
    pub limits: Vec<Limit>,
    pub hide_headers: bool,
    /// Equal fingerprints mean equal limits: a reload keeps their counters.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    Route,
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct Limit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

#[derive(Debug, Default)]
pub struct HeadersPolicy {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let c6 = Cidr::parse("fd00::/8").unwrap();
        assert!(c6.contains("fd12::1".parse().unwrap()));
        assert!(!c6.contains("fe80::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(Cidr::parse("1.2.3.4").unwrap().prefix, 32);
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }
}
