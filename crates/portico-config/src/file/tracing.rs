//! The `tracing` section as written (OpenTelemetry traces), and a route's `tracing` keys.
//! Every key may be left out and taken from the standard `OTEL_*` environment variable
//! instead; a key in the file wins over its variable.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// `false` turns tracing off while keeping the section. Default `true`
    /// (`OTEL_SDK_DISABLED=true` also turns it off).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// OTLP transport: `grpc` or `http/protobuf`. Default `grpc`
    /// (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Collector URL; `https://` for TLS. Default `http://localhost:4317` for gRPC,
    /// `http://localhost:4318/v1/traces` for HTTP (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` plus `/v1/traces` for HTTP).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Headers (gRPC metadata) sent with every export, such as a collector's API key
    /// (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for one export. Default `10s` (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds).
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// TLS towards an `https://` collector.
    #[serde(default)]
    pub tls: Option<TracingTlsConfig>,
    /// `service.name` of every span. Default `portico` (`OTEL_SERVICE_NAME`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// More resource attributes, such as `deployment.environment.name: prod`
    /// (`OTEL_RESOURCE_ATTRIBUTES`; the file's win on the same key).
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Share of new traces recorded, from 0 to 1. Default `1` (`OTEL_TRACES_SAMPLER_ARG` with
    /// a `traceidratio` sampler).
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// Follow the caller's sampling decision when a request carries one. Default `true`
    /// (`OTEL_TRACES_SAMPLER=parentbased_*`).
    #[serde(default)]
    pub parent_based: Option<bool>,
    /// Record the gateway's spans of every request answered with a 5xx (or not answered),
    /// even when it was not sampled. Default `false`.
    #[serde(default)]
    pub keep_errors: Option<bool>,
    /// Trace-context formats read from requests (the first present wins) and written to
    /// upstreams: `tracecontext` (W3C), `b3` (one header), `b3multi` (`X-B3-*`). Default
    /// `[tracecontext]` (`OTEL_PROPAGATORS`).
    #[serde(default)]
    pub propagators: Option<Vec<String>>,
    /// Spans waiting for export; beyond it new ones are dropped and counted. Default 2048
    /// (`OTEL_BSP_MAX_QUEUE_SIZE`).
    #[serde(default)]
    pub max_queue: Option<usize>,
    /// Most spans in one export. Default 512 (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Longest a span waits before its batch is sent. Default `5s` (`OTEL_BSP_SCHEDULE_DELAY`).
    #[serde(default)]
    pub interval: Option<DurationStr>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingTlsConfig {
    /// PEM CA bundle the collector's certificate must chain to. Default: the Mozilla roots
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`).
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate, for a collector that asks for one (with `key`)
    /// (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`).
    #[serde(default)]
    pub certificate: Option<String>,
    /// PEM private key of `certificate` (`OTEL_EXPORTER_OTLP_CLIENT_KEY`).
    #[serde(default)]
    pub key: Option<String>,
}

/// A route's own tracing keys.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTracingConfig {
    /// This route's share of new traces, over the section's `sample_ratio`.
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// Send every answer of this route a `Server-Timing` header with its phases' durations.
    /// Default `false`.
    #[serde(default)]
    pub server_timing: bool,
}

/// What the access log and spans never show, beyond what they never show anyway.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Query parameters whose values are shown as `REDACTED`, besides the built-in list.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// Request headers whose values are never recorded (`user-agent`, `host`).
    #[serde(default)]
    pub headers: Vec<String>,
}

/// The audit trail: a hash-chained JSON Lines file of every config change and state-changing
/// admin request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The file records are appended to (created if missing; an existing trail is continued).
    pub path: String,
    /// A file holding a secret key: each record then carries an HMAC-SHA256, so that a
    /// record rewritten by someone without the key is found.
    #[serde(default)]
    pub hmac_key_file: Option<String>,
    /// Rotate the file when it reaches this many bytes: it is renamed to `<path>.1` (older
    /// ones shift to `.2`, …) and a new file continues the chain. Default: never (rotate it
    /// from outside with copy-and-truncate).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// How many rotated files are kept (`<path>.1` … `<path>.N`).
    #[serde(default)]
    pub keep: Option<u32>,
    /// How often the security summary (refusals by consumer and reason, key-set changes) and
    /// a checkpoint are written; `0s` for never.
    #[serde(default)]
    pub summary_interval: Option<crate::duration::DurationStr>,
}
