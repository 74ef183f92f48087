//! The gateway's own sections as written: `listeners`, `admin`, `access_log`, `server`,
//! `redis`.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

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
    /// How often this node publishes its heartbeat (id, config hash, generation, last reload
    /// error) for `GET /cluster`; it expires after three. Default `5s`; `off` publishes none.
    #[serde(default)]
    pub heartbeat_interval: Option<String>,
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
    /// Digests of read-only tokens: when any is given, reads (`GET`, `POST /explain`) need one
    /// of them or the write token (`/healthz` and `/readyz` stay open for probes).
    #[serde(default)]
    pub read_token_hashes: Vec<String>,
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDebugConfig {
    /// SHA-256 digest of the secret (`sha256:<hex>`, from `portico hash api-key`): the
    /// secret itself is never stored.
    pub token_hash: String,
    /// The request header that carries the secret. Default `x-portico-debug`. Never sent
    /// upstream.
    #[serde(default)]
    pub header: Option<String>,
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
    /// This node's name in the fleet (`GET /cluster`, heartbeats). Default: the host name and
    /// the start time.
    #[serde(default)]
    pub node_id: Option<String>,
    /// On-demand request debugging: a request carrying the secret in `header` gets a
    /// `Server-Timing` answer header, its phase record logged, and its trace recorded.
    #[serde(default)]
    pub request_debug: Option<RequestDebugConfig>,
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
