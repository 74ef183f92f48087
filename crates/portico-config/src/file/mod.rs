//! The config file as written: one struct per section, unknown keys rejected.
//!
//! These types only describe the file. [`crate::compile`] turns them into runtime types after
//! checking everything that serde cannot (references, conflicts, value ranges).
//!
//! [`FileConfig`] (this file) is the whole document; each section has a file, each using only
//! those listed before it:
//!
//! - `server.rs` — `listeners`, `admin`, `access_log`, `server`, `redis`.
//! - `upstream.rs` — `upstreams`.
//! - `auth.rs` — `consumers` and the identity and access policies.
//! - `policy.rs` — [`PolicyConfig`] and the other policies.
//! - `tracing.rs` — `tracing` (OpenTelemetry) and a route's `tracing`.
//! - `route.rs` — `routes`.
//! - `api.rs` — `apis` (routes from OpenAPI documents).

mod api;
mod auth;
mod policy;
mod route;
mod server;
mod tracing;
mod upstream;

pub use api::*;
pub use auth::*;
pub use policy::*;
pub use route::*;
pub use server::*;
pub use tracing::*;
pub use upstream::*;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

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
    /// OpenAPI documents whose operations become routes, after those of `routes`.
    #[serde(default)]
    pub apis: Vec<ApiConfig>,
    /// Policies applied to every route, before the route's own.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// API clients and their credentials, for the authentication policies.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// The Redis server that `rate_limit` policies with `store: redis` share across instances.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// OpenTelemetry traces: where spans go and which requests are recorded.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Values the access log and spans never show.
    #[serde(default)]
    pub redact: Option<RedactConfig>,
    /// The audit trail of config changes and admin writes.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
}
