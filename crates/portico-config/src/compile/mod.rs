//! Validation and compilation: the file's sections, checked together, become [`Config`].
//! Every problem is collected with its location; nothing stops at the first.
//!
//! [`compile`] (this file) reads the document into nodes, deserializes each item of each
//! section on its own (the structural pass), then hands the sections in order to the files
//! below (the semantic pass) and assembles the [`Config`]. Each file compiles one part of the
//! file; they all lean on `ctx.rs` and none reaches back into this one:
//!
//! - `ctx.rs` — `Ctx`, the state of one compilation (the diagnostics sink, counters,
//!   the base folder), and the helpers every part uses: node look-ups and locations, bounded
//!   file reads.
//! - `values.rs` — small values several sections share: addresses, `off` switches, header value
//!   templates and header operations.
//! - `server.rs` — the `server` section (path options, identity headers) and `redis`.
//! - `listener.rs` — `listeners` and their TLS, `admin` and its access, `access_log`.
//! - `tracing.rs` — `tracing` (OpenTelemetry), with the `OTEL_*` variables, and a route's
//!   sampling ratio.
//! - `upstream.rs` — `upstreams`: targets, balancing, health checks, retries, TLS.
//! - `auth.rs` — `consumers` and the identity and access policies (`api_key`, `basic_auth`,
//!   `jwt`, `introspection`, `any_of`, `acl`, `ip_filter`, `cors`, `body_limit`).
//! - `policy.rs` — every policy (handing the identity ones to `auth.rs`) and the order of a chain.
//! - `soap.rs`, `transcode.rs`, `aggregate.rs` — the route kinds that need more than a proxy.
//! - `action.rs` — what a route does: proxy (rewrites, splits, mirrors), respond, redirect.
//! - `route.rs` — one route: its match, its action, its policies, and the kinds above.
//! - `openapi/` — `apis`: the operations of OpenAPI documents, each compiled as a route
//!   after those of `routes`.

mod action;
mod aggregate;
mod auth;
mod ctx;
mod listener;
mod openapi;
mod policy;
mod route;
mod server;
mod soap;
mod tracing;
mod transcode;
mod upstream;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::diag::Diagnostics;
use crate::file::*;
use crate::ir::*;
use crate::router::Router;
use crate::tree::{Env, Loc, NodeKind, from_node, parse_document, suggest};

pub(crate) use ctx::read_bounded;
pub use listener::DEFAULT_ADMIN;
#[cfg(test)]
pub(crate) use route::compile_path;
pub use upstream::parse_target_url;

use ctx::{Ctx, FNV_START, each_item, fnv, get, loc};
use listener::{compile_access_log, compile_admin, compile_admin_access, compile_listeners};
use policy::{check_chain, compile_policy, scope_rate_limit};
use route::compile_route;
use server::{compile_redis, compile_server};
use upstream::compile_upstreams;

const TOP_LEVEL: &[&str] = &[
    "version",
    "listeners",
    "admin",
    "access_log",
    "server",
    "upstreams",
    "routes",
    "apis",
    "policies",
    "consumers",
    "redis",
    "tracing",
    "redact",
    "audit",
];

/// Parses, validates and compiles a config text. `source` names it in diagnostics; relative
/// paths in it are resolved against `base_dir`.
pub fn compile(
    source: &str,
    text: &str,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<Config, Diagnostics> {
    let mut cx = Ctx::new(source, text, base_dir, env);
    let root = match parse_document(text) {
        Ok(n) => n,
        Err(e) => {
            cx.sink.de(e);
            return Err(cx.sink.finish());
        }
    };
    let NodeKind::Map(entries) = &root.kind else {
        cx.sink.at(
            root.loc,
            format!("the config must be a mapping, found {}", root.type_name()),
            "start with `listeners:`, `upstreams:` and `routes:`",
        );
        return Err(cx.sink.finish());
    };

    // Structural pass: each item on its own, so one bad route doesn't hide another.
    let mut file = FileConfig::default();
    let mut listener_nodes = Vec::new();
    let mut upstream_nodes = BTreeMap::new();
    let mut route_nodes = Vec::new();
    let mut policy_nodes = Vec::new();
    let mut consumer_nodes = Vec::new();
    let mut route_count = 0usize;
    let mut api_nodes = Vec::new();
    let mut api_count = 0usize;
    for (k, v) in entries {
        let key = k.key_text();
        match key.as_str() {
            "version" => match from_node::<Option<u32>>(v, cx.env) {
                Ok(Some(1) | None) => file.version = Some(1),
                Ok(Some(n)) => cx.sink.at(
                    v.loc,
                    format!("unsupported config version {n}"),
                    "this Portico reads `version: 1`",
                ),
                Err(e) => cx.sink.de(e),
            },
            "listeners" => each_item(&mut cx, v, |cx, n| {
                match from_node::<ListenerConfig>(n, cx.env) {
                    Ok(l) => {
                        file.listeners.push(l);
                        listener_nodes.push(n);
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "routes" => each_item(&mut cx, v, |cx, n| {
                route_count += 1;
                match from_node::<RouteConfig>(n, cx.env) {
                    Ok(r) => {
                        file.routes.push(r);
                        route_nodes.push((route_count, n));
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "apis" => each_item(&mut cx, v, |cx, n| {
                api_count += 1;
                match from_node::<ApiConfig>(n, cx.env) {
                    Ok(a) => {
                        file.apis.push(a);
                        api_nodes.push((api_count, n));
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "policies" => each_item(&mut cx, v, |cx, n| {
                match from_node::<PolicyConfig>(n, cx.env) {
                    Ok(p) => {
                        file.policies.push(p);
                        policy_nodes.push(n);
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "consumers" => each_item(&mut cx, v, |cx, n| {
                match from_node::<ConsumerConfig>(n, cx.env) {
                    Ok(c) => {
                        file.consumers.push(c);
                        consumer_nodes.push(n);
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "upstreams" => match &v.kind {
                NodeKind::Map(ups) => {
                    for (name, body) in ups {
                        match from_node::<UpstreamConfig>(body, cx.env) {
                            Ok(u) => {
                                file.upstreams.insert(name.key_text(), u);
                                upstream_nodes.insert(name.key_text(), (name, body));
                            }
                            Err(e) => cx.sink.de(e),
                        }
                    }
                }
                NodeKind::Null => {}
                _ => cx.sink.at(
                    v.loc,
                    format!(
                        "`upstreams` must be a mapping of names to upstreams, found {}",
                        v.type_name()
                    ),
                    "write `upstreams:` then `  users: { targets: [\"http://127.0.0.1:9000\"] }`",
                ),
            },
            "admin" => match from_node::<Option<AdminConfig>>(v, cx.env) {
                Ok(a) => file.admin = a,
                Err(e) => cx.sink.de(e),
            },
            "access_log" => match from_node::<Option<AccessLogConfig>>(v, cx.env) {
                Ok(a) => file.access_log = a,
                Err(e) => cx.sink.de(e),
            },
            "redis" => match from_node::<Option<RedisConfig>>(v, cx.env) {
                Ok(r) => file.redis = r,
                Err(e) => cx.sink.de(e),
            },
            "audit" => match from_node::<Option<AuditConfig>>(v, cx.env) {
                Ok(a) => file.audit = a,
                Err(e) => cx.sink.de(e),
            },
            "redact" => match from_node::<Option<RedactConfig>>(v, cx.env) {
                Ok(r) => file.redact = r,
                Err(e) => cx.sink.de(e),
            },
            "tracing" => match from_node::<Option<TracingConfig>>(v, cx.env) {
                Ok(t) => file.tracing = t,
                Err(e) => cx.sink.de(e),
            },
            "server" => match from_node::<Option<ServerConfig>>(v, cx.env) {
                Ok(s) => file.server = s,
                Err(e) => cx.sink.de(e),
            },
            other => cx.sink.at(
                k.loc,
                format!("unknown key `{other}`"),
                suggest(other, TOP_LEVEL),
            ),
        }
    }

    // Semantic pass.
    let mut server = compile_server(&mut cx, file.server.as_ref(), get(&root, "server"));
    let listeners = compile_listeners(&mut cx, &file.listeners, &listener_nodes, &server.paths);
    let admin = compile_admin(
        &mut cx,
        file.admin.as_ref(),
        get(&root, "admin"),
        &listeners,
    );
    let admin_access = compile_admin_access(&mut cx, file.admin.as_ref(), get(&root, "admin"));
    let access_log =
        compile_access_log(&mut cx, file.access_log.as_ref(), get(&root, "access_log"));
    let (upstreams, upstream_index) = compile_upstreams(&mut cx, &file.upstreams, &upstream_nodes);
    let redis = compile_redis(&mut cx, file.redis.as_ref(), get(&root, "redis"));
    let redact = tracing::compile_redact(&mut cx, file.redact.as_ref(), get(&root, "redact"));
    let audit = tracing::compile_audit(&mut cx, file.audit.as_ref(), get(&root, "audit"));
    let mut tracing =
        tracing::compile_tracing(&mut cx, file.tracing.as_ref(), get(&root, "tracing"));
    cx.have_redis = redis.is_some();
    let consumers = auth::compile_consumers(&mut cx, &file.consumers, &consumer_nodes, &server);
    cx.global_auth = check_chain(&mut cx, &file.policies, &policy_nodes, false);
    let mut nth = 0;
    let global_policies: Arc<[Policy]> = file
        .policies
        .iter()
        .zip(&policy_nodes)
        .filter_map(|(p, n)| {
            let mut p = compile_policy(&mut cx, p, n)?;
            scope_rate_limit(&mut p, None, &mut nth, &cx.shared_scopes);
            Some(p)
        })
        .collect();
    let mut routes = Vec::new();
    let mut names: HashMap<String, Loc> = HashMap::new();
    let mut route_locs: Vec<Loc> = Vec::new();
    for (cfg, (number, node)) in file.routes.iter().zip(&route_nodes) {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("route-{number}"));
        if let Some(first) = names.get(&name) {
            cx.sink.at(
                loc(node, "name"),
                format!("duplicate route name `{name}`"),
                format!(
                    "route names must be unique; the first `{name}` is on line {}",
                    first.line
                ),
            );
            continue;
        }
        names.insert(name.clone(), loc(node, "name"));
        if let Some(r) = compile_route(
            &mut cx,
            routes.len(),
            name,
            cfg,
            node,
            &upstream_index,
            &upstreams,
            &global_policies,
        ) {
            routes.push(Arc::new(r));
            route_locs.push(node.loc);
        }
    }
    openapi::compile_apis(
        &mut cx,
        &file.apis,
        &api_nodes,
        openapi::Earlier {
            names: &names,
            locs: &route_locs,
        },
        &mut routes,
        &upstream_index,
        &upstreams,
        &global_policies,
    );

    if !cx.sink.out.is_empty() {
        return Err(cx.sink.finish());
    }
    let router = Router::build(&routes);
    if let Some(t) = &mut tracing {
        t.route_ratios = routes.iter().any(|r| r.sample_ratio.is_some());
    }
    let mut identity = vec![server.consumer_header.clone(), server.groups_header.clone()];
    for h in std::mem::take(&mut cx.claim_headers) {
        if !identity.contains(&h) {
            identity.push(h);
        }
    }
    server.identity_headers = identity;
    let listener_paths = listeners
        .iter()
        .filter(|l| l.paths != server.paths)
        .map(|l| (l.name.clone(), l.paths))
        .collect();
    Ok(Config {
        source: source.to_owned(),
        hash: text_hash(text),
        listeners,
        admin,
        admin_access,
        access_log,
        server,
        upstreams,
        routes,
        router,
        global_policies,
        policy_slots: cx.state_slots,
        consumers: Arc::new(consumers),
        jwks: cx.jwks,
        redis,
        tracing,
        redact,
        audit,
        listener_paths,
        text: Arc::from(text),
        documents: cx.documents,
        apis: cx.apis,
    })
}

/// The hash of a config's text (see `crate::text_hash`).
pub(crate) fn text_hash(text: &str) -> String {
    format!("{:016x}", fnv(text.as_bytes(), FNV_START))
}
