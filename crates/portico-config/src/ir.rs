//! Runtime types: the config after validation. Nothing here is looked up by string per request;
//! header names and values are pre-built, references are indexes, patterns are compiled.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use crate::canon::PathOptions;
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
    /// Who may use the admin port, and how.
    pub admin_access: AdminAccess,
    pub access_log: AccessLog,
    pub server: Server,
    pub upstreams: Vec<Arc<Upstream>>,
    pub routes: Vec<Arc<Route>>,
    pub router: Router,
    pub global_policies: Arc<[Policy]>,
    /// How many `rate_limit` policies the config has (their `id`s are `0..n`).
    pub rate_limit_policies: usize,
    /// How many `concurrency_limit` policies the config has (their `id`s are `0..n`).
    pub concurrency_policies: usize,
    pub consumers: Arc<Consumers>,
    /// JWKS URLs the `jwt` policies read, by slot.
    pub jwks: Vec<JwksSource>,
    pub redis: Option<RedisSettings>,
    /// Listeners whose path options differ from `server.paths`, by name; usually empty, so a
    /// request finds its options without a search.
    pub listener_paths: Vec<(Arc<str>, PathOptions)>,
    /// The text the config was compiled from, for `redacted` (kept instead of the JSON: a
    /// 10,000-route file is ~1 MiB of text but several of JSON, and few loads are ever shown).
    pub text: Arc<str>,
}

impl Config {
    /// How paths are canonicalised on the listener named `listener`.
    pub fn path_options(&self, listener: &str) -> &PathOptions {
        if self.listener_paths.is_empty() {
            return &self.server.paths;
        }
        self.listener_paths
            .iter()
            .find(|(n, _)| &**n == listener)
            .map_or(&self.server.paths, |(_, o)| o)
    }

    /// The file as JSON, `${VAR}` references unexpanded and secret-named keys redacted, for
    /// the admin port. Made on demand from the text, which parsed when the config loaded.
    pub fn redacted(&self) -> serde_json::Value {
        crate::tree::parse_document(&self.text)
            .map_or(serde_json::Value::Null, |root| root.to_redacted_json())
    }
}

/// The admin port's checks beyond its address.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// Digest of the bearer token for state-changing requests.
    pub token: Option<[u8; 32]>,
    /// Lower-case names accepted in `Host`, besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// TLS (and client certificates) on the admin port; read at start.
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub http1: bool,
    pub http2: bool,
    pub tls: Option<ListenerTls>,
    /// How request paths are canonicalised (`server.paths` with this listener's keys over it).
    pub paths: PathOptions,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// In file order; the first is used when no name matches the client's SNI.
    pub certificates: Vec<TlsCertificate>,
    /// Identifies the certificate files' contents, so a reload can tell whether TLS changed.
    pub fingerprint: u64,
    /// Mutual TLS: the CA client certificates must chain to.
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub roots: Vec<CertificateDer<'static>>,
    /// Refuse handshakes without a valid certificate.
    pub required: bool,
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
    pub max_uri_bytes: usize,
    pub consumer_header: HeaderName,
    pub groups_header: HeaderName,
    /// Every header that carries identity upstream (consumer, groups, forwarded claims):
    /// removed from each client request before any policy runs.
    pub identity_headers: Vec<HeaderName>,
    /// How request paths are canonicalised on listeners that do not say otherwise.
    pub paths: PathOptions,
    /// How long a config file written in place must rest before the watcher applies it.
    pub reload_settle: Duration,
    /// A request body must average `request_body_min_rate` bytes a second after this grace
    /// period (zero: no floor).
    pub request_body_timeout: Duration,
    pub request_body_min_rate: u64,
    pub send_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// 0: no limit.
    pub max_connections_per_ip: u32,
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

#[derive(Debug)]
pub struct Route {
    pub index: usize,
    pub name: Arc<str>,
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// `match.case_sensitive: false`: the path's ASCII letters match in any case.
    pub path_any_case: bool,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCondition>,
    pub query: Vec<QueryCondition>,
    /// Same shape as query conditions: a cookie name and its test.
    pub cookies: Vec<QueryCondition>,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub policies: Arc<[Policy]>,
    /// Headers added to every response of this route (deprecation notices).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Shadow traffic: (upstream index, percent of requests).
    pub mirror: Option<(usize, u32)>,
    /// REST/JSON to gRPC transcoding for this route's requests.
    pub transcode: Option<Arc<GrpcTranscode>>,
    /// gRPC-Web requests are bridged to native gRPC.
    pub grpc_web: bool,
    /// The upstream's SOAP operations as JSON endpoints.
    pub soap: Option<Arc<SoapRoute>>,
    /// The body and response policies that apply, found when the config loads so requests do
    /// not search the chains.
    pub effective: Effective,
}

/// One of each kind of body and response policy a route's requests use: the route's own, else
/// a global one (CORS: the global one first, as the chain runs).
#[derive(Debug, Default)]
pub struct Effective {
    pub cors: Option<Arc<CorsPolicy>>,
    pub compression: Option<Arc<CompressionPolicy>>,
    pub json_transform: Option<Arc<JsonTransformPolicy>>,
    pub xml_json: Option<Arc<XmlJsonPolicy>>,
    pub cache: Option<Arc<CachePolicy>>,
    /// `request_decompression`: the largest decoded body.
    pub request_decompression: Option<u64>,
}

impl Effective {
    pub fn resolve(route: &[Policy], global: &[Policy]) -> Effective {
        let route_first = || route.iter().chain(global.iter());
        Effective {
            cors: global.iter().chain(route.iter()).find_map(|p| match p {
                Policy::Cors(c) => Some(c.clone()),
                _ => None,
            }),
            compression: route_first().find_map(|p| match p {
                Policy::Compression(c) => Some(c.clone()),
                _ => None,
            }),
            json_transform: route_first().find_map(|p| match p {
                Policy::JsonTransform(j) => Some(j.clone()),
                _ => None,
            }),
            xml_json: route_first().find_map(|p| match p {
                Policy::XmlJson(x) => Some(x.clone()),
                _ => None,
            }),
            cache: route_first().find_map(|p| match p {
                Policy::Cache(c) => Some(Arc::new(c.clone())),
                _ => None,
            }),
            request_decompression: route_first().find_map(|p| match p {
                Policy::RequestDecompression(max) => Some(*max),
                _ => None,
            }),
        }
    }
}

/// A route's SOAP service: the WSDL read and checked when the config loads.
#[derive(Debug)]
pub struct SoapRoute {
    pub wsdl: Arc<portico_translate::wsdl::Wsdl>,
    pub port: portico_translate::wsdl::Port,
    /// The route's path prefix; the operation's name follows it.
    pub prefix: String,
    /// The endpoint's path on the upstream.
    pub path: http::uri::PathAndQuery,
    pub token: Option<portico_translate::soap::UsernameToken>,
    pub max_bytes: u64,
    /// Configured methods and paths, tried before `POST {prefix}/{Operation}`.
    pub bindings: Vec<SoapBinding>,
}

/// `GET /people/{id}` for an operation.
#[derive(Debug)]
pub struct SoapBinding {
    /// Index into the port's operations.
    pub operation: usize,
    pub method: http::Method,
    /// Segments after the prefix: literal text, or `{name}` capturing one segment.
    pub segments: Vec<SoapSegment>,
    /// As written, for documents: `/people/{id}`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoapSegment {
    Literal(String),
    Param(String),
}

impl SoapBinding {
    /// The captured parameters when `method` and `rest` (the path after the prefix) match.
    pub fn matches<'a>(
        &'a self,
        method: &http::Method,
        rest: &'a str,
    ) -> Option<Vec<(&'a str, &'a str)>> {
        if *method != self.method {
            return None;
        }
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                SoapSegment::Literal(l) if l == part => {}
                SoapSegment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                _ => return None,
            }
        }
        Some(params)
    }
}

/// A route's gRPC transcoding: the methods and bindings, built when the config loads.
#[derive(Debug)]
pub struct GrpcTranscode {
    /// From `descriptor_set`; `None` with `reflection` (the runtime fetches it).
    pub transcoder: Option<Arc<portico_translate::Transcoder>>,
    pub options: portico_translate::Options,
    /// Request headers sent along as gRPC metadata.
    pub forward_headers: Vec<HeaderName>,
    /// Server streams as server-sent events unless `Accept` asks for NDJSON (else the reverse).
    pub sse_by_default: bool,
}

impl Route {
    /// Number of conditions besides host and path; more conditions rank a route higher.
    pub fn condition_count(&self) -> usize {
        usize::from(!self.methods.is_empty())
            + self.headers.len()
            + self.query.len()
            + self.cookies.len()
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
    MediaType(MediaType),
}

impl ValueTest {
    pub fn accepts(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueTest::Present(want), v) => *want == v.is_some(),
            (ValueTest::Exact(e), Some(v)) => e == v,
            (ValueTest::Regex(r), Some(v)) => r.is_match(v),
            (ValueTest::MediaType(m), Some(v)) => m.listed_in(v),
            (_, None) => false,
        }
    }
}

/// A media type to look for in a list such as `Accept`: `type/subtype` (lower-cased) and the
/// parameters it must carry (names lower-cased, values unquoted). `q` is not among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type/subtype; name=value; …`; `None` when it is not of that shape.
    pub fn parse(s: &str) -> Option<MediaType> {
        let mut parts = s.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/')?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
        };
        if !token(ty) || !token(sub) {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if !token(&k) {
                return None;
            }
            params.push((k, v.to_owned()));
        }
        Some(MediaType { essence, params })
    }

    /// Whether the comma-separated list `header` names this type with (at least) these
    /// parameters, in an entry not refused with `q=0`.
    pub fn listed_in(&self, header: &str) -> bool {
        header.split(',').any(|entry| {
            let Some(m) = MediaType::parse(entry) else {
                return false;
            };
            if !m.essence.eq_ignore_ascii_case(&self.essence) {
                return false;
            }
            let refused = m
                .params
                .iter()
                .any(|(k, v)| k == "q" && v.parse::<f32>().is_ok_and(|q| q == 0.0));
            !refused
                && self
                    .params
                    .iter()
                    .all(|want| m.params.iter().any(|have| have == want))
        })
    }
}

#[derive(Debug)]
pub enum Action {
    Proxy(ProxyAction),
    Respond(StaticResponse),
    Redirect(RedirectAction),
    Aggregate(Box<Aggregate>),
}

/// A composite route: backend calls made concurrently (or after the ones they depend on) and
/// merged into one JSON object.
#[derive(Debug)]
pub struct Aggregate {
    /// In the file's order, which is also the order of keys in the answer.
    pub backends: Vec<AggregateBackend>,
    pub partial_status: StatusCode,
    pub errors_key: String,
    pub pass_through_client_errors: bool,
    pub forward_headers: Vec<HeaderName>,
    pub sparse_fieldsets: bool,
}

/// How one backend's answer is reshaped before it is merged: extract, then keep, then drop,
/// then rename.
#[derive(Debug, Default)]
pub struct Shaping {
    pub extract: Option<String>,
    pub keep: Option<portico_translate::shape::Fields>,
    pub drop: Option<portico_translate::shape::Fields>,
    pub rename: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct AggregateBackend {
    pub name: Arc<str>,
    pub upstream: usize,
    pub method: Method,
    pub path: Vec<AggregatePart>,
    /// `None`: the upstream's `request_timeout`.
    pub timeout: Option<Duration>,
    pub required: bool,
    pub merge: bool,
    /// Backends whose answers this one's path uses.
    pub after: Vec<usize>,
    pub shaping: Shaping,
    /// Successful answers reused for this long, per rendered path.
    pub cache_ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregatePart {
    Literal(String),
    /// A parameter of the route's path template.
    Param(usize),
    /// A value in an earlier backend's answer: its index and the keys (or array indexes) to it.
    Answer(usize, Vec<String>),
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
    /// Query parameters removed (by name) before `query_set` is appended.
    pub query_remove: Vec<String>,
    /// `name=value` pairs, percent-encoded, appended to the query.
    pub query_set: Vec<(String, String)>,
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
    /// One authentication method, or several of which any one suffices.
    Auth(AuthPolicy),
    Acl(AclPolicy),
    IpFilter(IpFilterPolicy),
    Cors(Arc<CorsPolicy>),
    /// Largest request body, in bytes.
    BodyLimit(u64),
    ConcurrencyLimit(ConcurrencyPolicy),
    Compression(Arc<CompressionPolicy>),
    /// Decode compressed request bodies; the decoded body may be at most this many bytes.
    RequestDecompression(u64),
    JsonTransform(Arc<JsonTransformPolicy>),
    XmlJson(Arc<XmlJsonPolicy>),
    Cache(CachePolicy),
}

/// An in-memory response cache; the store lives in the runtime, found by `fingerprint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    pub max_entries: u64,
    pub max_object_bytes: u64,
    pub key_query: CacheKeyQuery,
    pub key_headers: Vec<HeaderName>,
    /// The same settings give the same fingerprint: the store (and its entries) survives a
    /// reload that keeps them, and policies with equal settings share one store.
    pub fingerprint: u64,
}

/// Which query parameters are part of a cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyQuery {
    All,
    None,
    /// Only these, sorted by name whatever their order in the request.
    Only(Vec<String>),
}

/// Conversion of bodies between XML and JSON.
#[derive(Debug)]
pub struct XmlJsonPolicy {
    pub request: XmlDirection,
    pub response: XmlDirection,
    pub root: String,
    pub namespaces: Vec<(String, String)>,
    pub max_bytes: u64,
    pub limits: portico_translate::xml::Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlDirection {
    JsonToXml,
    XmlToJson,
    None,
}

/// Reshaping of JSON responses.
#[derive(Debug)]
pub struct JsonTransformPolicy {
    pub sparse_fieldsets: bool,
    pub remove: Option<portico_translate::shape::Fields>,
    pub rename: Vec<(String, String)>,
    pub set: Vec<(String, serde_json::Value)>,
    pub status: Vec<(StatusCode, StatusCode)>,
    pub max_bytes: u64,
}

impl JsonTransformPolicy {
    /// Whether the body needs reading (as opposed to a status rewrite only).
    pub fn touches_body(&self) -> bool {
        self.sparse_fieldsets
            || self.remove.is_some()
            || !self.rename.is_empty()
            || !self.set.is_empty()
    }
}

/// Response compression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionPolicy {
    pub codings: Vec<Coding>,
    pub min_bytes: u64,
    /// Lower-cased; `text/*` entries end in `/*`.
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }
}

impl CompressionPolicy {
    /// Whether a response of this `Content-Type` is worth compressing.
    pub fn compresses(&self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if self.content_types.is_empty() {
            return essence.starts_with("text/")
                || matches!(
                    essence.as_str(),
                    "application/json"
                        | "application/javascript"
                        | "application/xml"
                        | "application/x-ndjson"
                        | "image/svg+xml"
                )
                || essence.ends_with("+json")
                || essence.ends_with("+xml");
        }
        self.content_types
            .iter()
            .any(|t| match t.strip_suffix("/*") {
                Some(prefix) => essence.split_once('/').is_some_and(|(ty, _)| ty == prefix),
                None => *t == essence,
            })
    }
}

#[derive(Debug)]
pub struct ConcurrencyPolicy {
    /// Index among the config's concurrency policies (its counters' slot).
    pub id: usize,
    pub max_in_flight: u32,
    pub key: LimitKey,
    /// (target latency, minimum cap) when the cap adapts to latency.
    pub adaptive: Option<(Duration, u32)>,
    /// Equal fingerprints: a reload keeps the in-flight counts.
    pub fingerprint: u64,
}

/// The configured API clients.
#[derive(Debug, Default)]
pub struct Consumers {
    pub list: Vec<Consumer>,
    pub api_keys: portico_auth::apikey::KeyStore,
    pub users: portico_auth::basic::Users,
    pub by_name: std::collections::HashMap<String, usize>,
    /// Client-certificate name (SAN URI, SAN DNS name or CN) → consumer.
    pub by_cert_name: std::collections::HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub groups: Vec<Arc<str>>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The name and groups as header values, built once.
    pub name_value: HeaderValue,
    pub groups_value: Option<HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub url: String,
    pub refresh: Duration,
    pub min_refresh: Duration,
}

#[derive(Debug)]
pub struct AuthPolicy {
    /// Tried in order; the first that accepts the request's credentials wins.
    pub methods: Vec<AuthMethod>,
    /// Query parameters any of the methods reads credentials from (kept out of the access log
    /// and the upstream request).
    pub query_params: Vec<String>,
}

impl AuthPolicy {
    pub fn new(methods: Vec<AuthMethod>) -> AuthPolicy {
        let mut query_params: Vec<String> = Vec::new();
        for m in &methods {
            let sources: &[TokenSource] = match m {
                AuthMethod::ApiKey(k) => {
                    query_params.extend(k.query.iter().cloned());
                    &[]
                }
                AuthMethod::Jwt(j) => &j.sources,
                AuthMethod::Introspection(i) => &i.sources,
                AuthMethod::Basic(_) | AuthMethod::ClientCert(_) => &[],
            };
            for s in sources {
                if let TokenSource::Query(q) = s {
                    query_params.push(q.clone());
                }
            }
        }
        query_params.dedup();
        AuthPolicy {
            methods,
            query_params,
        }
    }
}

#[derive(Debug)]
pub enum AuthMethod {
    ApiKey(ApiKeyMethod),
    Basic(BasicMethod),
    Jwt(Box<JwtMethod>),
    ClientCert(ClientCertMethod),
    Introspection(Box<IntrospectionMethod>),
}

#[derive(Debug)]
pub struct IntrospectionMethod {
    /// Index among the config's introspection policies (its cache's slot).
    pub id: usize,
    pub url: String,
    /// `Basic …` with the client id and secret.
    pub authorization: HeaderValue,
    pub sources: Vec<TokenSource>,
    pub timeout: Duration,
    pub cache_size: usize,
    pub cache_ttl: Duration,
    pub rules: Vec<portico_auth::jwt::ClaimRule>,
    pub consumer_claim: Option<String>,
    pub forward_claims: Vec<(String, HeaderName)>,
    /// `Bearer realm="…"`.
    pub challenge: HeaderValue,
}

#[derive(Debug)]
pub struct ClientCertMethod {
    pub forward_header: Option<HeaderName>,
}

impl AuthMethod {
    pub fn kind(&self) -> &'static str {
        match self {
            AuthMethod::ApiKey(_) => "api_key",
            AuthMethod::Basic(_) => "basic_auth",
            AuthMethod::Jwt(_) => "jwt",
            AuthMethod::ClientCert(_) => "client_cert",
            AuthMethod::Introspection(_) => "introspection",
        }
    }
}

#[derive(Debug)]
pub struct ApiKeyMethod {
    pub header: HeaderName,
    pub query: Option<String>,
}

#[derive(Debug)]
pub struct BasicMethod {
    /// `Basic realm="…"`.
    pub challenge: HeaderValue,
    pub cache_ttl: Duration,
    /// Index of this policy among the config's basic-auth policies (its cache's slot).
    pub id: usize,
}

#[derive(Debug)]
pub struct JwtMethod {
    /// Index of this policy among the config's JWT policies (its token cache's slot).
    pub id: usize,
    pub token_cache_size: usize,
    pub forward_token: bool,
    pub issuers: Vec<portico_auth::jwt::Issuer>,
    pub sources: Vec<TokenSource>,
    pub required_claims: Vec<String>,
    pub rules: Vec<portico_auth::jwt::ClaimRule>,
    pub consumer_claim: Option<String>,
    pub forward_claims: Vec<(String, HeaderName)>,
    /// `Bearer realm="…"`.
    pub challenge: HeaderValue,
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `Authorization: Bearer …`.
    Bearer,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

#[derive(Debug)]
pub struct AclPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub scopes: Vec<String>,
    /// Empty: every method.
    pub methods: Vec<Method>,
}

#[derive(Debug)]
pub struct IpFilterPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

#[derive(Debug)]
pub struct CorsPolicy {
    pub any_origin: bool,
    /// Lower-case exact origins.
    pub origins: Vec<String>,
    /// `*.example.com` patterns as `.example.com` suffixes (with scheme prefix, e.g.
    /// `https://` + suffix).
    pub origin_suffixes: Vec<(String, String)>,
    pub methods: HeaderValue,
    /// `None`: echo the preflight's `Access-Control-Request-Headers`.
    pub headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: HeaderValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The server, or (with `cluster`) the first of the seed nodes.
    pub url: String,
    /// Redis Cluster seed nodes; empty for a single server.
    pub cluster_nodes: Vec<String>,
    /// Sentinel URLs and the primary's name, when the primary is found through Sentinel.
    pub sentinel: Option<(Vec<String>, String)>,
    pub timeout: Duration,
    pub key_prefix: String,
}

/// Where a `rate_limit` policy keeps its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStore {
    Local,
    /// Shared through Redis; `fail_open` says what happens when Redis does not answer;
    /// `batch` units are taken per round trip.
    Redis {
        fail_open: bool,
        batch: u32,
    },
}

#[derive(Debug)]
pub struct RateLimitPolicy {
    /// Index of this policy among the config's rate-limit policies (its limiter's slot).
    pub id: usize,
    pub key: LimitKey,
    pub limits: Vec<Limit>,
    pub hide_headers: bool,
    pub store: LimitStore,
    /// Equal fingerprints mean equal limits: a reload keeps their counters.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    Route,
    Consumer,
    Header(HeaderName),
    Claim(String),
    Composite(Vec<LimitKey>),
}

#[derive(Debug, Clone)]
pub struct Limit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
    /// A sliding-window quota instead of a token bucket (`burst` is then `requests`).
    pub sliding: bool,
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
    /// Values with `%{variable}`s, rendered per request: (name, value, append).
    pub templated: Vec<(HeaderName, Vec<ValuePart>, bool)>,
}

/// A piece of a header value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuePart {
    Literal(String),
    ClientIp,
    RequestId,
    Route,
    Consumer,
    /// A claim of the request's accepted token (JWT or introspection); empty without one.
    Claim(String),
}

/// What header value templates can refer to.
pub struct HeaderVars<'a> {
    pub client_ip: std::net::IpAddr,
    pub request_id: &'a str,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
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

    /// `apply`, then the templated values rendered with `vars`.
    pub fn apply_with(&self, headers: &mut http::HeaderMap, vars: &HeaderVars<'_>) {
        self.apply(headers);
        for (name, parts, append) in &self.templated {
            let mut v = String::new();
            for p in parts {
                match p {
                    ValuePart::Literal(s) => v.push_str(s),
                    ValuePart::ClientIp => v.push_str(&vars.client_ip.to_string()),
                    ValuePart::RequestId => v.push_str(vars.request_id),
                    ValuePart::Route => v.push_str(vars.route),
                    ValuePart::Consumer => v.push_str(vars.consumer.unwrap_or("")),
                    ValuePart::Claim(c) => match vars.claims.and_then(|m| m.get(c)) {
                        Some(serde_json::Value::String(s)) => v.push_str(s),
                        Some(serde_json::Value::Null) | None => {}
                        Some(other) => v.push_str(&other.to_string()),
                    },
                }
            }
            if let Ok(v) = HeaderValue::try_from(v) {
                if *append {
                    headers.append(name.clone(), v);
                } else {
                    headers.insert(name.clone(), v);
                }
            }
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
