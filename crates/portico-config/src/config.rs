//! [`Config`], the validated and compiled configuration the proxy reads through an atomic
//! pointer. It holds the runtime types of [`crate::ir`] and the [`Router`] built over the
//! routes, so it stands above both: the router reads the route types, and the config holds the
//! router, without either reaching back.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::canon::PathOptions;
use crate::router::Router;

use crate::ir::auth::{Consumers, JwksSource};
use crate::ir::policy::Policy;
use crate::ir::route::Route;
use crate::ir::server::{AccessLog, AdminAccess, Listener, RedisSettings, Server};
use crate::ir::tracing::{Audit, Redact, Tracing};
use crate::ir::upstream::Upstream;

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
    /// How many policies keep state between requests (limiters, caches): their `slot`s are
    /// `0..n`, indexes into the runtime's one list of per-policy state.
    pub policy_slots: usize,
    pub consumers: Arc<Consumers>,
    /// JWKS URLs the `jwt` policies read, by slot.
    pub jwks: Vec<JwksSource>,
    pub redis: Option<RedisSettings>,
    /// OpenTelemetry traces; `None` when off.
    pub tracing: Option<Tracing>,
    /// What the access log and spans never show.
    pub redact: Redact,
    /// The audit trail, when configured.
    pub audit: Option<Audit>,
    /// Listeners whose path options differ from `server.paths`, by name; usually empty, so a
    /// request finds its options without a search.
    pub listener_paths: Vec<(Arc<str>, PathOptions)>,
    /// The text the config was compiled from, for `redacted` (kept instead of the JSON: a
    /// 10,000-route file is ~1 MiB of text but several of JSON, and few loads are ever shown).
    pub text: Arc<str>,
    /// Files read besides the config itself (OpenAPI documents): the file watcher follows
    /// them too, since a reload reads them again.
    pub documents: Vec<std::path::PathBuf>,
    /// The OpenAPI documents of `apis`, as read, for the gateway's own description
    /// (`crate::describe`).
    pub apis: Vec<ApiDocument>,
}

/// An `apis` entry's document.
#[derive(Debug)]
pub struct ApiDocument {
    /// The API's name (`api-N` when unnamed).
    pub name: String,
    pub root: Arc<serde_json::Value>,
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
