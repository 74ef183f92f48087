//! `routes` as written: the match, the action (proxy, respond, redirect), and the route kinds
//! (`soap`, `grpc_transcode`, `aggregate`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

use super::RouteTracingConfig;
use super::policy::PolicyConfig;

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
    /// This route's tracing settings (its sampling ratio).
    #[serde(default)]
    pub tracing: Option<RouteTracingConfig>,
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
