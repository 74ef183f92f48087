//! The config file as written: one struct per section, unknown keys rejected.
//!
//! These types only describe the file. [`crate::compile`] turns them into runtime types after
//! checking everything that serde cannot (references, conflicts, value ranges).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

/// A Portico configuration file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Schema version of this file. Only `1` exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Addresses where clients connect.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (health, metrics, active config). Omit for the default, `127.0.0.1:9901`.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Where access-log lines go.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Settings that apply to every request.
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// Named groups of backend targets.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched by specificity then declared order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Policies applied to every route, before the route's own.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// API clients and their credentials, for the authentication policies.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// The Redis server that `rate_limit` policies with `store: redis` share across instances.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// Sentinel URLs, `redis://host:26379`.
    pub nodes: Vec<String>,
    /// The primary's name in the sentinels' `sentinel monitor` line.
    pub master: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). Exactly one of `url`
    /// and `cluster_nodes`.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis Cluster: URLs of some of its nodes; the rest are discovered.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
    /// Redis Sentinel: the sentinels and the name of the primary they watch.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// Time allowed for one rate-limit decision (one script call); past it the policy's
    /// `on_store_failure` applies. Default `50ms`.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// Prefix of every key Portico writes. Default `portico:`.
    #[serde(default)]
    pub key_prefix: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Unique name; sent upstream in the consumer header and usable as a rate-limit key.
    pub name: String,
    /// Groups, for `acl` policies.
    #[serde(default)]
    pub groups: Vec<String>,
    /// API keys as SHA-256 digests, `sha256:<hex>` (`portico hash api-key KEY` prints one).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Basic-auth credentials.
    #[serde(default)]
    pub basic_auth: Option<BasicCredentialConfig>,
    /// Client-certificate names that identify this consumer: a SAN URI (such as a SPIFFE ID),
    /// a SAN DNS name, or the subject common name.
    #[serde(default)]
    pub client_cert_names: Vec<String>,
    /// Free-form labels, shown on the admin port; not sent anywhere.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredentialConfig {
    /// User name. Default: the consumer's name.
    #[serde(default)]
    pub username: Option<String>,
    /// An argon2 (`$argon2id$…`) or bcrypt (`$2b$…`) hash (`portico hash password` prints one).
    pub password_hash: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs and metrics; defaults to the address.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` to bind, e.g. `0.0.0.0:8080` or `[::]:8443`.
    pub address: String,
    /// HTTP versions served. Default: both. On plain listeners HTTP/2 is h2c with prior knowledge.
    #[serde(default)]
    pub protocols: Option<Vec<Protocol>>,
    /// Serve TLS on this listener.
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
    /// How request paths are canonicalised on this listener; each key absent takes the value
    /// of `server.paths`.
    #[serde(default)]
    pub paths: Option<PathsConfig>,
}

/// How request paths are put into their one canonical form before routing.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// An encoded slash (`%2F`), a backslash or `%5C`: `reject` (400), `decode` (to `/`) or
    /// `keep` (as `%2F`/`%5C`, inside the segment). Default `reject`.
    #[serde(default)]
    pub escaped_slashes: Option<EscapedSlashesConfig>,
    /// Merge empty segments (`/a//b` is `/a/b`). Default `true`.
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    /// A `;` path parameter (`/admin;x`): `reject` (400), `strip` (drop `;…` from each
    /// segment, as Tomcat and Spring do) or `keep`. Default `reject`.
    #[serde(default)]
    pub path_parameters: Option<PathParametersConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashesConfig {
    Reject,
    Decode,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PathParametersConfig {
    Reject,
    Strip,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// One or more certificates. With several, the one whose `server_names` (or, if absent, whose
    /// certificate names) match the client's SNI is chosen; the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// Ask clients for certificates (mutual TLS).
    #[serde(default)]
    pub client_certificates: Option<ClientCertificatesConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificatesConfig {
    /// PEM file with the CA certificates client certificates must chain to.
    pub ca: String,
    /// `true`: the handshake fails without a valid client certificate. `false`: a certificate
    /// is asked for but optional, and `client_cert` policies decide. Default `true`.
    #[serde(default)]
    pub required: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// SNI names this certificate serves (`*.example.com` allowed). Default: names in the certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` of the admin listener, or `off`.
    pub address: String,
    /// SHA-256 digest (`sha256:<hex>`, from `portico hash api-key`) of the bearer token that
    /// state-changing admin requests (`POST`, `PUT`, `DELETE`) must carry. Absent: none asked.
    #[serde(default)]
    pub token_hash: Option<String>,
    /// Names admin requests may give in `Host`, besides IP addresses and `localhost` (a
    /// defence against DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Serve the admin port over TLS, with client certificates (mutual TLS) when
    /// `client_certificates` is given. Same keys as a listener's `tls`.
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `stdout`, `off`, or a file path (appended to).
    pub target: String,
    /// Lines buffered before new ones are dropped (and counted) instead of slowing requests.
    #[serde(default)]
    pub buffer: Option<usize>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For`/`Forwarded` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Request-id header, read from the client when present and always sent upstream and back.
    #[serde(default)]
    pub request_id_header: Option<String>,
    /// Add `X-Forwarded-For`, `-Proto` and `-Host` upstream. Default `true`.
    #[serde(default)]
    pub x_forwarded: Option<bool>,
    /// Add an RFC 7239 `Forwarded` header upstream. Default `false`.
    #[serde(default)]
    pub forwarded: Option<bool>,
    /// Largest request head accepted, in bytes: over HTTP/1.1 the request line, the header
    /// lines and the empty line ending the head; over HTTP/2 the header list size (RFC 9113
    /// §6.5.2). Default 65536.
    #[serde(default)]
    pub max_request_header_bytes: Option<usize>,
    /// Most header fields accepted in a request. Default 100.
    #[serde(default)]
    pub max_request_headers: Option<usize>,
    /// How long shutdown waits for in-flight requests. Default `30s`.
    #[serde(default)]
    pub drain_timeout: Option<DurationStr>,
    /// Close client connections idle this long between requests. Default `60s`.
    #[serde(default)]
    pub client_idle_timeout: Option<DurationStr>,
    /// Time allowed for a client to send its request head. Default `10s`.
    #[serde(default)]
    pub request_header_timeout: Option<DurationStr>,
    /// Longest request target (path and query) accepted, in bytes; longer gets 414. Default 8192.
    #[serde(default)]
    pub max_uri_bytes: Option<usize>,
    /// Headers that carry the authenticated identity upstream. Client-sent copies are removed
    /// from every request.
    #[serde(default)]
    pub identity_headers: Option<IdentityHeadersConfig>,
    /// How request paths are canonicalised on every listener (a listener may override it).
    #[serde(default)]
    pub paths: Option<PathsConfig>,
    /// A config file written in place is applied only after it has been closed and left
    /// unchanged this long. Default `1s`.
    #[serde(default)]
    pub reload_settle: Option<DurationStr>,
    /// Grace period for a request body before `request_body_min_rate` applies. Default `30s`;
    /// `0s` turns the floor off.
    #[serde(default)]
    pub request_body_timeout: Option<DurationStr>,
    /// Slowest average rate, in bytes per second, at which a request body may arrive after
    /// `request_body_timeout`. Default 1024; `0` turns the floor off.
    #[serde(default)]
    pub request_body_min_rate: Option<u64>,
    /// A client connection whose answers wait to be sent, with nothing written to it for this
    /// long (a client that does not read, or never opens its HTTP/2 window), is closed.
    /// Default `60s`.
    #[serde(default)]
    pub send_timeout: Option<DurationStr>,
    /// Streams an HTTP/2 client may have open at once on one connection. Default 100.
    #[serde(default)]
    pub http2_max_concurrent_streams: Option<u32>,
    /// Connections one client IP address may have open at once, over all listeners; more are
    /// closed at accept. Default 0: no limit.
    #[serde(default)]
    pub max_connections_per_ip: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersConfig {
    /// The consumer's name. Default `X-Consumer-Name`.
    #[serde(default)]
    pub consumer: Option<String>,
    /// The consumer's groups, comma-separated. Default `X-Consumer-Groups`.
    #[serde(default)]
    pub groups: Option<String>,
}

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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in logs and metrics. Default `route-N` (N counts from 1).
    #[serde(default)]
    pub name: Option<String>,
    /// What requests this route takes. An empty match takes everything.
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    /// The upstream that serves this route. Exactly one of `upstream`, `split`, `respond`,
    /// `redirect`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Spread requests over several upstreams by weight (canary releases, migrations).
    #[serde(default)]
    pub split: Vec<SplitConfig>,
    /// Answer directly with a fixed response.
    #[serde(default)]
    pub respond: Option<RespondConfig>,
    /// Answer with a redirect.
    #[serde(default)]
    pub redirect: Option<RedirectConfig>,
    /// How the request is changed before it goes upstream.
    #[serde(default)]
    pub rewrite: Option<RewriteConfig>,
    /// Overrides the upstream's `request_timeout` for this route.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// Mark the route deprecated: `Deprecation`, `Sunset` and `Link` response headers.
    #[serde(default)]
    pub deprecation: Option<DeprecationConfig>,
    /// Send a copy of requests to another upstream and ignore its answers (shadow traffic).
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
    /// Policies for this route, run after the global ones.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Answer REST/JSON requests by calling the upstream's gRPC methods.
    #[serde(default)]
    pub grpc_transcode: Option<GrpcTranscodeConfig>,
    /// Bridge gRPC-Web requests (browsers) to the upstream's native gRPC. Default `false`.
    #[serde(default)]
    pub grpc_web: bool,
    /// Answer with one JSON object composed from several backend calls made concurrently.
    #[serde(default)]
    pub aggregate: Option<AggregateConfig>,
    /// Expose the upstream's SOAP operations, described by its WSDL, as JSON endpoints.
    #[serde(default)]
    pub soap: Option<SoapConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoapConfig {
    /// The WSDL 1.1 file (relative to the config file); its imports and includes are read
    /// relative to it.
    pub wsdl: String,
    /// The WSDL service to use, when it has several.
    #[serde(default)]
    pub service: Option<String>,
    /// The port (SOAP 1.1 or 1.2 endpoint) to use, when the service has several.
    #[serde(default)]
    pub port: Option<String>,
    /// The SOAP endpoint's path on the upstream. Default: the path of the port's address.
    #[serde(default)]
    pub path: Option<String>,
    /// A WS-Security UsernameToken (password as text) sent in every request's header.
    #[serde(default)]
    pub ws_security: Option<WsSecurityConfig>,
    /// Largest JSON request and SOAP response read, in bytes. Default 4194304.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Other methods and paths for operations, e.g. `{ GetPerson: { method: GET, path:
    /// "/people/{id}" } }`; `{name}` segments and query parameters become input fields.
    #[serde(default)]
    pub operations: BTreeMap<String, SoapOperationConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoapOperationConfig {
    /// Default `POST`.
    #[serde(default)]
    pub method: Option<String>,
    /// After the route's prefix, e.g. `/people/{id}`.
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsSecurityConfig {
    pub username: String,
    /// Write `${ENV_NAME}` to keep the secret out of the file.
    pub password: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The backend calls, at least one.
    pub backends: Vec<AggregateBackendConfig>,
    /// Status when an optional backend failed: 200, 206 or 207. Default 206.
    #[serde(default)]
    pub partial_status: Option<u16>,
    /// Key of the list of problems of failed optional backends. Default `_errors`.
    #[serde(default)]
    pub errors_key: Option<String>,
    /// When a required backend answers 4xx, answer with its status and body. Default `false`
    /// (502).
    #[serde(default)]
    pub pass_through_client_errors: bool,
    /// Client request headers sent along to every backend (the request id always goes).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Let clients ask for only some fields of the answer with `?fields=a,b.c`. Default `true`.
    #[serde(default)]
    pub sparse_fieldsets: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateBackendConfig {
    /// Unique name: the key of its result, and how other backends refer to it.
    pub name: String,
    pub upstream: String,
    /// Default GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Path and query, with `{param}` from the route's path and `{backend.field}` from an
    /// earlier backend's answer (which makes this call wait for it).
    pub path: String,
    /// Default: the upstream's `request_timeout`.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// A failed required backend fails the whole answer. Default `true`.
    #[serde(default)]
    pub required: Option<bool>,
    /// Merge the answer's fields into the top level instead of under `name`. Default `false`.
    #[serde(default)]
    pub merge: bool,
    /// Use only this part of the answer (a dotted path, e.g. `data.user`).
    #[serde(default)]
    pub extract: Option<String>,
    /// Keep only these fields (dotted paths; through arrays they apply to each element).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Remove these fields (dotted paths).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Rename top-level fields of the answer: `{ old: new }`.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Reuse this backend's successful answer for the same path for this long. Default: not
    /// cached.
    #[serde(default)]
    pub cache_ttl: Option<DurationStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcTranscodeConfig {
    /// A `FileDescriptorSet` (`protoc --include_imports --descriptor_set_out=FILE`). Exactly
    /// one of `descriptor_set` and `reflection`.
    #[serde(default)]
    pub descriptor_set: Option<String>,
    /// Ask the upstream for its service definitions (gRPC server reflection, v1 or v1alpha)
    /// at start and on every reload.
    #[serde(default)]
    pub reflection: bool,
    /// Only these services (full names, `package.Service`). Default: all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Also answer `POST /package.Service/Method` with the message as JSON. Default `true`.
    #[serde(default)]
    pub call_by_name: Option<bool>,
    /// Write fields that hold their default value. Default `false`.
    #[serde(default)]
    pub emit_defaults: bool,
    /// Ignore query parameters that name no field, instead of answering 400. Default `false`.
    #[serde(default)]
    pub ignore_unknown_query: bool,
    /// Request headers passed to the gRPC call as metadata. Default: none (the request id
    /// always goes).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// How server-streaming answers are written when `Accept` does not choose: `ndjson`
    /// (one JSON message per line) or `sse` (server-sent events). Default `ndjson`.
    #[serde(default)]
    pub stream_format: Option<StreamFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    Ndjson,
    Sse,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host names (`api.example.com`, `*.example.com`). Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The path condition. Absent: any path.
    #[serde(default)]
    pub path: Option<PathMatchConfig>,
    /// Methods accepted. Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions; all must hold.
    #[serde(default)]
    pub headers: Vec<ValueMatchConfig>,
    /// Query-parameter conditions; all must hold.
    #[serde(default)]
    pub query: Vec<ValueMatchConfig>,
    /// Cookie conditions; all must hold.
    #[serde(default)]
    pub cookies: Vec<ValueMatchConfig>,
    /// `false`: the path's letters match in any case (`/Admin` is `/admin`). For backends that
    /// route without regard to case (IIS, some Spring set-ups). Default `true`.
    #[serde(default)]
    pub case_sensitive: Option<bool>,
}

/// One of `exact`, `prefix` or `template`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PathMatchConfig {
    /// The whole path, e.g. `/healthz`.
    Exact(String),
    /// A path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    Prefix(String),
    /// Segments with `{param}` captures and an optional final `{*rest}`, e.g. `/users/{id}/orders`.
    Template(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchConfig {
    /// Header or query-parameter name.
    pub name: String,
    /// The value must equal this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The value must match this regular expression (anchor it with `^…$` for a full match).
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: must be present; `false`: must be absent.
    #[serde(default)]
    pub present: Option<bool>,
    /// Headers only: the header is a list of media types (`Accept`, `Content-Type`) and one
    /// of them is this type, with these parameters, e.g. `application/vnd.acme.v2+json` or
    /// `application/json; version=2`.
    #[serde(default)]
    pub media_type: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream that receives the copies.
    pub upstream: String,
    /// Share of requests copied, 1–100. Default 100.
    #[serde(default)]
    pub percent: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecationConfig {
    /// When the route was (or will be) deprecated: `2026-06-30` or `2026-06-30T12:00:00Z`.
    pub since: String,
    /// When it stops working, same format (RFC 8594 `Sunset`).
    #[serde(default)]
    pub sunset: Option<String>,
    /// A page that explains the deprecation and the way forward.
    #[serde(default)]
    pub link: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// An upstream name.
    pub upstream: String,
    /// Relative share of requests (0 stops sending to it). The weights must not all be 0.
    pub weight: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code. Default 200.
    #[serde(default)]
    pub status: Option<u16>,
    /// Body text.
    #[serde(default)]
    pub body: Option<String>,
    /// Content type of the body. Default `text/plain; charset=utf-8`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Target URL. `{param}` placeholders take captured path parameters.
    pub to: String,
    /// 301, 302, 303, 307 or 308. Default 302.
    #[serde(default)]
    pub status: Option<u16>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Remove the matched prefix (prefix routes only); `/api/users` on prefix `/api` goes up as `/users`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace the path; `{param}` placeholders take captured parameters, e.g. `/v2/users/{id}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Host header sent upstream. Default: the client's Host.
    #[serde(default)]
    pub host: Option<String>,
    /// Query parameters to set or remove before the request goes upstream.
    #[serde(default)]
    pub query: Option<QueryRewriteConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRewriteConfig {
    /// Parameters set to these values (replacing any the client sent).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Parameters removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `Deserialize` for [`PolicyConfig`]: the `type` entry is read first (the config tree hands
/// it over first when asked for [`crate::tree::TYPE_FIRST`]), then the rest of the mapping is
/// read straight into the variant's struct, so an error in it is reported at its key.
macro_rules! policy_types {
    ($($tag:literal => $variant:ident($ty:ty),)*) => {
        /// Every policy `type`.
        pub const POLICY_TYPES: &[&str] = &[$($tag),*];

        impl<'de> Deserialize<'de> for PolicyConfig {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

                /// The `type` value, refused at its own position when it names no policy.
                struct Tag;
                impl<'de> DeserializeSeed<'de> for Tag {
                    type Value = String;
                    fn deserialize<D: serde::Deserializer<'de>>(
                        self,
                        d: D,
                    ) -> Result<String, D::Error> {
                        let t = String::deserialize(d)?;
                        if POLICY_TYPES.contains(&t.as_str()) {
                            Ok(t)
                        } else {
                            Err(de::Error::unknown_variant(&t, POLICY_TYPES))
                        }
                    }
                }

                struct Policy;
                impl<'de> Visitor<'de> for Policy {
                    type Value = PolicyConfig;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a policy: a mapping with `type`")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PolicyConfig, A::Error> {
                        match map.next_key::<String>()? {
                            Some(k) if k == "type" => {}
                            _ => return Err(de::Error::missing_field("type")),
                        }
                        let tag = map.next_value_seed(Tag)?;
                        let rest = de::value::MapAccessDeserializer::new(map);
                        match tag.as_str() {
                            $($tag => <$ty>::deserialize(rest).map(PolicyConfig::$variant),)*
                            other => Err(de::Error::unknown_variant(other, POLICY_TYPES)),
                        }
                    }
                }

                d.deserialize_struct(crate::tree::TYPE_FIRST, &["type"], Policy)
            }
        }
    };
}

/// A policy in the chain, selected by `type`. Read by hand (below), not with serde's
/// internally tagged enums, which buffer the mapping and so lose where each key was written.
#[derive(Debug, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Add, set or remove headers on the request and the response.
    Headers(HeadersPolicyConfig),
    /// Limit request rates per key, on this gateway instance.
    RateLimit(RateLimitPolicyConfig),
    /// Require an API key of a consumer.
    ApiKey(ApiKeyPolicyConfig),
    /// Require HTTP Basic credentials of a consumer.
    BasicAuth(BasicAuthPolicyConfig),
    /// Require a valid JWT from a trusted issuer.
    Jwt(JwtPolicyConfig),
    /// Require a verified TLS client certificate (mutual TLS).
    ClientCert(ClientCertPolicyConfig),
    /// Check opaque tokens at the issuer's OAuth2 introspection endpoint (RFC 7662).
    Introspection(IntrospectionPolicyConfig),
    /// Require any one of several authentication methods (the first that succeeds wins).
    AnyOf(AnyOfPolicyConfig),
    /// Allow or deny by consumer group and required token scopes.
    Acl(AclPolicyConfig),
    /// Allow or deny by client address (after `trusted_proxies`).
    IpFilter(IpFilterPolicyConfig),
    /// Cross-origin resource sharing: answer preflights, add CORS response headers.
    Cors(CorsPolicyConfig),
    /// Refuse request bodies larger than a limit with 413.
    BodyLimit(BodyLimitPolicyConfig),
    /// Cap requests in flight per key; more get 503 at once instead of queueing.
    ConcurrencyLimit(ConcurrencyLimitPolicyConfig),
    /// Compress responses (gzip, brotli, zstd) as the client's `Accept-Encoding` allows.
    Compression(CompressionPolicyConfig),
    /// Decode compressed request bodies (gzip, deflate, brotli, zstd) before they go upstream.
    RequestDecompression(RequestDecompressionPolicyConfig),
    /// Reshape JSON responses: client sparse fieldsets, removed, renamed and added fields,
    /// status rewrites.
    JsonTransform(JsonTransformPolicyConfig),
    /// Convert bodies between XML and JSON (the generic mapping), in either direction.
    XmlJson(XmlJsonPolicyConfig),
    /// Keep cacheable responses in memory and answer from there while they are fresh.
    Cache(CachePolicyConfig),
}

policy_types! {
    "headers" => Headers(HeadersPolicyConfig),
    "rate_limit" => RateLimit(RateLimitPolicyConfig),
    "api_key" => ApiKey(ApiKeyPolicyConfig),
    "basic_auth" => BasicAuth(BasicAuthPolicyConfig),
    "jwt" => Jwt(JwtPolicyConfig),
    "client_cert" => ClientCert(ClientCertPolicyConfig),
    "introspection" => Introspection(IntrospectionPolicyConfig),
    "any_of" => AnyOf(AnyOfPolicyConfig),
    "acl" => Acl(AclPolicyConfig),
    "ip_filter" => IpFilter(IpFilterPolicyConfig),
    "cors" => Cors(CorsPolicyConfig),
    "body_limit" => BodyLimit(BodyLimitPolicyConfig),
    "concurrency_limit" => ConcurrencyLimit(ConcurrencyLimitPolicyConfig),
    "compression" => Compression(CompressionPolicyConfig),
    "request_decompression" => RequestDecompression(RequestDecompressionPolicyConfig),
    "json_transform" => JsonTransform(JsonTransformPolicyConfig),
    "xml_json" => XmlJson(XmlJsonPolicyConfig),
    "cache" => Cache(CachePolicyConfig),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicyConfig {
    /// Most responses kept. Default 10000.
    #[serde(default)]
    pub max_entries: Option<u64>,
    /// Largest response body kept, in bytes. Default 1048576.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// What tells two requests' answers apart besides method, host and path.
    #[serde(default)]
    pub key: Option<CacheKeyConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheKeyConfig {
    /// Query parameters in the key: `all` (default), `none`, or a list of names (their order
    /// in the request then does not matter).
    #[serde(default)]
    pub query: Option<CacheKeyQueryConfig>,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CacheKeyQueryConfig {
    Word(String),
    Names(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonTransformPolicyConfig {
    /// Let clients keep only some fields with `?fields=a,b.c`. Default `false`.
    #[serde(default)]
    pub sparse_fieldsets: bool,
    /// Remove these fields (dotted paths; through arrays they apply to each element).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Rename top-level fields: `{ old: new }`.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Set top-level fields to these JSON values.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, serde_json::Value>,
    /// Answer with another status: `{ 201: 200 }`.
    #[serde(default)]
    pub status: std::collections::BTreeMap<u16, u16>,
    /// Largest body reshaped (bytes); larger ones, and bodies without a length, pass as they
    /// are. Default 1048576.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressionPolicyConfig {
    /// Codings offered, in order of preference when the client likes several equally.
    /// Default `[br, zstd, gzip]`.
    #[serde(default)]
    pub algorithms: Vec<CodingConfig>,
    /// Bodies whose `Content-Length` is below this many bytes are sent as they are. Default
    /// 1024.
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// Media types compressed (`text/*` covers every `text/` type). Default: text types,
    /// JSON, JavaScript, XML, SVG, and `+json`/`+xml` types.
    #[serde(default)]
    pub content_types: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlJsonPolicyConfig {
    /// What happens to request bodies: `json_to_xml` (default), `xml_to_json` or `none`.
    #[serde(default)]
    pub request: Option<XmlDirectionConfig>,
    /// What happens to response bodies: `xml_to_json` (default), `json_to_xml` or `none`.
    #[serde(default)]
    pub response: Option<XmlDirectionConfig>,
    /// Root element for JSON that is not an object with a single key. Default `root`.
    #[serde(default)]
    pub root: Option<String>,
    /// Namespace prefixes declared on the root of XML written from JSON, e.g.
    /// `{ inv: "urn:inventory" }` (`""` for the default namespace).
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Largest body converted, in bytes. Default 1048576.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Deepest XML nesting read. Default 64.
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Most attributes on one XML element (namespace declarations included), and most
    /// namespace declarations in scope at once. Default 256.
    #[serde(default)]
    pub max_attributes: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum XmlDirectionConfig {
    JsonToXml,
    XmlToJson,
    None,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDecompressionPolicyConfig {
    /// Largest decoded body, in bytes; past it the request fails with 413. Default 8388608.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CodingConfig {
    Br,
    Zstd,
    Gzip,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitPolicyConfig {
    /// Requests allowed in flight at once for one key (from the request head until the
    /// response body ends).
    pub max_in_flight: u32,
    /// Who shares the cap: `route`, `client_ip`, `consumer` or `{ header: NAME }`. Default
    /// `route`.
    #[serde(default)]
    pub key: Option<LimitKeyConfig>,
    /// Lower the cap while requests take longer than a target, and raise it back when they
    /// are fast again (load shedding). Key `route` only.
    #[serde(default)]
    pub adaptive: Option<AdaptiveConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Request duration (head to end of response) above which the cap shrinks.
    pub target_latency: DurationStr,
    /// The cap never goes below this. Default 1.
    #[serde(default)]
    pub min_in_flight: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyPolicyConfig {
    /// Header that carries the key. Default `X-API-Key`.
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter that may carry the key instead; removed before the request goes upstream.
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthPolicyConfig {
    /// Realm in the `WWW-Authenticate` challenge. Default `portico`.
    #[serde(default)]
    pub realm: Option<String>,
    /// How long a verified user/password pair is remembered, so a busy client is not
    /// re-hashed per request. Default `5m`; `0s` turns the cache off.
    #[serde(default)]
    pub cache_ttl: Option<DurationStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicyConfig {
    /// Trusted issuers; a token is checked against the one named by its `iss`.
    pub issuers: Vec<JwtIssuerConfig>,
    /// Where the token is read, tried in order. Default: `Authorization: Bearer`.
    #[serde(default)]
    pub from: Vec<TokenSourceConfig>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default `30s`.
    #[serde(default)]
    pub leeway: Option<DurationStr>,
    /// Refuse tokens without `exp`. Default `true`.
    #[serde(default)]
    pub require_exp: Option<bool>,
    /// Claims that must be present.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim rules: the claim's value (or one of its elements or space-separated words) must be
    /// one of the listed values, e.g. `{ role: [admin, ops] }`.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
    /// A claim whose value names a consumer (e.g. `sub`); that consumer is then identified.
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Send the token upstream in the header it came in. Default `false`: the header is
    /// removed once the token is accepted.
    #[serde(default)]
    pub forward_token: bool,
    /// How many verified tokens are remembered, so a client reusing its token is not
    /// re-verified per request. An entry lasts until the token's `exp` or 5 minutes, whichever
    /// comes first. Default 10000; 0 turns the cache off.
    #[serde(default)]
    pub token_cache_size: Option<usize>,
    /// Claims sent upstream as headers, e.g. `{ sub: X-User-Id }`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Realm in the `WWW-Authenticate` challenge. Default `portico`.
    #[serde(default)]
    pub realm: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// The `iss` value. Required when the policy has more than one issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Algorithms this issuer signs with; tokens with any other `alg` are refused.
    pub algorithms: Vec<String>,
    /// Accepted `aud` values; when set, the token's `aud` must contain one.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Keys given in the config. Exactly one of `keys` and `jwks_url`.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// URL of the issuer's JWKS, fetched in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again. Default `5m`.
    #[serde(default)]
    pub jwks_refresh: Option<DurationStr>,
    /// Least time between fetches caused by tokens with an unknown `kid`. Default `30s`.
    #[serde(default)]
    pub jwks_min_refresh: Option<DurationStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id, matched against the token's `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// PEM file with a public key (RS/PS, ES, EdDSA algorithms).
    #[serde(default)]
    pub pem_file: Option<String>,
    /// A shared secret (HS algorithms); use `${VAR}` to keep it out of the file.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the shared secret (HS algorithms), read at load, relative to the config
    /// file; one trailing newline is ignored.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// One place a token may be.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSourceConfig {
    /// A header; for `Authorization` the `Bearer` scheme is required and stripped.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter; removed before the request goes upstream.
    Query(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionPolicyConfig {
    /// The introspection endpoint, `https://…` (or `http://` to a local address).
    pub url: String,
    /// The gateway's client id at the authorization server (sent with HTTP Basic).
    pub client_id: String,
    /// The gateway's client secret; use `${VAR}` to keep it out of the file.
    pub client_secret: String,
    /// Where the token is read, tried in order. Default: `Authorization: Bearer`.
    #[serde(default)]
    pub from: Vec<TokenSourceConfig>,
    /// Time allowed for the endpoint to answer. Default `2s`.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// How many answers are remembered. Default 10000; 0 asks the endpoint for every request.
    #[serde(default)]
    pub cache_size: Option<usize>,
    /// Longest an answer is remembered; an active token's entry also ends at its `exp`.
    /// Default `60s`.
    #[serde(default)]
    pub cache_ttl: Option<DurationStr>,
    /// Claim rules on the introspection response, as for `jwt` (`scope` is read word by word).
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
    /// A response field whose value names a consumer (e.g. `client_id` or `username`).
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Response fields sent upstream as headers, e.g. `{ username: X-User }`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Realm in the `WWW-Authenticate` challenge. Default `portico`.
    #[serde(default)]
    pub realm: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertPolicyConfig {
    /// Send the certificate's hash, subject and names upstream in this header.
    #[serde(default)]
    pub forward_header: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnyOfPolicyConfig {
    /// Two or more of `api_key`, `basic_auth`, `jwt`, `client_cert`, `introspection`.
    pub policies: Vec<PolicyConfig>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AclPolicyConfig {
    /// The consumer must be in one of these groups.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The consumer must be in none of these groups.
    #[serde(default)]
    pub deny: Vec<String>,
    /// The token must carry all these scopes (`scope` or `scp` claim).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Apply only to these methods. Default: all.
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpFilterPolicyConfig {
    /// Only these networks may pass (CIDRs or addresses). Empty: all not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    /// These networks are refused, even when also allowed.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicyConfig {
    /// Allowed origins (`https://app.example.com`), `*.example.com` style wildcards, or `*`.
    pub origins: Vec<String>,
    /// Allowed methods. Default `GET, HEAD, POST`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed request headers. Default: those the preflight asks for.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers the browser may expose to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials. Not allowed with origin `*`. Default `false`.
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight answer. Default `10m`.
    #[serde(default)]
    pub max_age: Option<DurationStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyLimitPolicyConfig {
    /// Largest request body accepted, in bytes.
    pub max_bytes: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicyConfig {
    /// Who is limited: `client_ip`, `route`, or `{ header: NAME }`. Default `client_ip`.
    #[serde(default)]
    pub key: Option<LimitKeyConfig>,
    /// One or more limits, all enforced (e.g. a per-second burst and a daily quota).
    pub limits: Vec<LimitConfig>,
    /// Leave out the `RateLimit` and `RateLimit-Policy` response headers. Default `false`.
    #[serde(default)]
    pub hide_headers: bool,
    /// Where counters live: `local` (this instance) or `redis` (shared by every instance using
    /// the top-level `redis`). Default `local`.
    #[serde(default)]
    pub store: Option<LimitStoreConfig>,
    /// With `store: redis`, what happens when Redis cannot answer in time: `fail_open` (serve,
    /// limiting on this instance's own counters) or `fail_closed` (503). Default `fail_open`.
    #[serde(default)]
    pub on_store_failure: Option<StoreFailureConfig>,
    /// With `store: redis`, units taken from Redis at a time per key (a lease spent locally for
    /// up to 1 s): fewer round trips, at the cost of a key's units sitting with one instance.
    /// Never admits more than the limit. Default 1 (a round trip per request).
    #[serde(default)]
    pub batch: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitStoreConfig {
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailureConfig {
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitKeyConfig {
    ClientIp,
    Route,
    /// The authenticated consumer (requests without one share one anonymous bucket).
    Consumer,
    Header(String),
    /// A claim of the token a `jwt` or `introspection` policy accepted earlier in the chain
    /// (requests without one share the empty key).
    Claim(String),
    /// Several keys together, e.g. `{ composite: [consumer, route] }`.
    Composite(Vec<LimitKeyConfig>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The window, e.g. `1s`, `1m`, `24h`.
    pub per: DurationStr,
    /// Requests allowed at once before the rate applies. Default: `requests`. Token-bucket
    /// limits only.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `token_bucket` (GCRA: refills continuously, allows `burst` at once) or `sliding_window`
    /// (at most `requests` in any span of `per`, for quotas). Default `token_bucket`.
    #[serde(default)]
    pub algorithm: Option<LimitAlgorithmConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitAlgorithmConfig {
    TokenBucket,
    SlidingWindow,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersPolicyConfig {
    /// Changes to the request sent upstream.
    #[serde(default)]
    pub request: HeaderOpsConfig,
    /// Changes to the response sent to the client.
    #[serde(default)]
    pub response: HeaderOpsConfig,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsConfig {
    /// Replace these headers (or add them when absent).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}
