//! OpenTelemetry traces at run time: the exporter's settings (kept by a reload when equal, so
//! spans in flight carry over) and the sampling and propagation every request reads.

use std::time::Duration;

/// The `tracing` section, with the `OTEL_*` environment variables folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub export: TraceExport,
    /// Share of new traces recorded (0 to 1).
    pub sample_ratio: f64,
    /// Follow the sampled flag of a trace context the request carries.
    pub parent_based: bool,
    /// Record requests answered with a 5xx (or not answered) even when not sampled.
    pub keep_errors: bool,
    pub propagators: Propagators,
    /// Whether any route has its own `sample_ratio` (else a request's decision is made as it
    /// arrives, before its route is known).
    pub route_ratios: bool,
}

/// Where spans go and how they are batched. A reload that keeps these keeps the exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    pub protocol: OtlpProtocol,
    /// The full URL spans are sent to (for HTTP, with its `/v1/traces` path).
    pub endpoint: String,
    /// Lower-case names and their values, checked as HTTP header (gRPC metadata) text.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// For an `https://` endpoint.
    pub tls: Option<TraceTls>,
    pub service_name: String,
    /// Resource attributes besides `service.name`, in key order.
    pub resource: Vec<(String, String)>,
    pub max_queue: usize,
    pub max_batch: usize,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// TLS towards the collector: PEM bytes, read when the config loads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceTls {
    /// CA bundle; `None` trusts the Mozilla roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Which trace-context formats are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Propagators {
    /// W3C `traceparent` / `tracestate`.
    pub tracecontext: bool,
    /// Zipkin's single `b3` header.
    pub b3: bool,
    /// Zipkin's `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`.
    pub b3multi: bool,
}

/// What the access log and spans never show. Headers other than these are never recorded at
/// all, nor are bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redact {
    /// Query parameter names (matched without regard to ASCII case) whose values are replaced
    /// by `REDACTED`: the built-in list and the file's.
    pub query_params: std::sync::Arc<[String]>,
    /// `User-Agent` is not recorded.
    pub user_agent: bool,
    /// `Host` is not recorded.
    pub host: bool,
}

/// Query parameters that carry credentials in common APIs (OAuth 2.0, OpenID Connect, cloud
/// storage signatures, API keys): always redacted.
pub const REDACTED_QUERY_PARAMS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "client_secret",
    "code",
    "id_token",
    "key",
    "password",
    "refresh_token",
    "secret",
    "sig",
    "signature",
    "token",
    "x-amz-credential",
    "x-amz-security-token",
    "x-amz-signature",
    "x-goog-credential",
    "x-goog-signature",
];

impl Default for Redact {
    fn default() -> Self {
        Redact {
            query_params: REDACTED_QUERY_PARAMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            user_agent: false,
            host: false,
        }
    }
}

/// The audit trail's file and HMAC key (read when the config loads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub path: std::path::PathBuf,
    pub hmac_key: Option<Vec<u8>>,
    /// Rotate at this size; `None`: never (rotated from outside).
    pub max_bytes: Option<u64>,
    /// Rotated files kept.
    pub keep: u32,
    /// Security summary and checkpoint interval; `None`: never.
    pub summary_interval: Option<std::time::Duration>,
}
