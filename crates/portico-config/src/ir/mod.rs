//! Runtime types: the config after validation. Nothing here is looked up by string per request;
//! header names and values are pre-built, references are indexes, patterns are compiled.
//!
//! One file per part of the config, each using only those listed before it:
//!
//! - `server.rs` — listeners and their TLS, the admin port, the access log, `server`, Redis,
//!   CIDR ranges.
//! - `tracing.rs` — OpenTelemetry export, sampling and propagation.
//! - `upstream.rs` — upstreams, targets, balancing, health checks, retries.
//! - `auth.rs` — consumers and the identity and access policies.
//! - `action.rs` — what a route does: proxy, respond, redirect, SOAP, gRPC transcoding,
//!   aggregation.
//! - `policy.rs` — the [`Policy`] chain and the policies other than identity and access.
//! - `route.rs` — [`Route`]: its match, its action and the policies in effect.
//!
//! [`Config`](crate::Config), which holds all of these and the [`Router`](crate::router::Router) built over the
//! routes, lives in `config.rs` so that the router can read the route types without a
//! circle, and is re-exported at the crate root.

pub(crate) mod action;
pub(crate) mod auth;
pub(crate) mod policy;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod tracing;
pub(crate) mod upstream;

pub use action::*;
pub use auth::*;
pub use policy::*;
pub use route::*;
pub use server::*;
pub use tracing::*;
pub use upstream::*;
