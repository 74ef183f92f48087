//! The `server` section (timeouts, limits, path options, trusted proxies, identity headers)
//! and the `redis` section.

use std::time::Duration;

use http::HeaderName;

use crate::canon::{EscapedSlashes, PathOptions, PathParameters};
use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node, NodeKind};

use super::ctx::{Ctx, get, item_loc, loc};

pub(super) fn compile_server(
    cx: &mut Ctx<'_>,
    cfg: Option<&ServerConfig>,
    node: Option<&Node>,
) -> Server {
    let default = ServerConfig::default();
    let cfg = cfg.unwrap_or(&default);
    let fallback = Node {
        kind: NodeKind::Null,
        loc: Loc::default(),
    };
    let node = node.unwrap_or(&fallback);
    let mut trusted = Vec::new();
    for (i, t) in cfg.trusted_proxies.iter().enumerate() {
        match Cidr::parse(t) {
            Some(c) => trusted.push(c),
            None => cx.sink.at(
                item_loc(node, "trusted_proxies", i),
                format!("invalid address or CIDR `{t}`"),
                "write an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`)",
            ),
        }
    }
    let request_id_header =
        match HeaderName::try_from(cfg.request_id_header.as_deref().unwrap_or("x-request-id")) {
            Ok(h) => h,
            Err(_) => {
                cx.sink.at(
                    loc(node, "request_id_header"),
                    "invalid header name",
                    "use letters, digits and `-`, such as `x-request-id`",
                );
                HeaderName::from_static("x-request-id")
            }
        };
    let positive = |cx: &mut Ctx<'_>, v: Option<usize>, key: &str, default: usize| {
        super::ctx::positive(cx, node, key, v, default)
    };
    // Zero would close every connection the moment it waits (idle) or refuse every request
    // head (408); neither is a way to turn the timeout off.
    let nonzero = |cx: &mut Ctx<'_>,
                   v: Option<Duration>,
                   key: &str,
                   (d, default): (Duration, &str)| {
        match v {
            Some(v) if v.is_zero() => {
                cx.sink.at(
                    loc(node, key),
                    format!("`{key}` must be longer than 0s"),
                    format!(
                        "remove it for the default, {default}, or give a longer duration such as 1h"
                    ),
                );
                d
            }
            Some(v) => v,
            None => d,
        }
    };
    let client_idle_timeout = nonzero(
        cx,
        cfg.client_idle_timeout.as_ref().map(|d| d.0),
        "client_idle_timeout",
        (Duration::from_secs(60), "60s"),
    );
    let request_header_timeout = nonzero(
        cx,
        cfg.request_header_timeout.as_ref().map(|d| d.0),
        "request_header_timeout",
        (Duration::from_secs(10), "10s"),
    );
    Server {
        trusted_proxies: trusted,
        request_id_header,
        x_forwarded: cfg.x_forwarded.unwrap_or(true),
        forwarded: cfg.forwarded.unwrap_or(false),
        max_request_header_bytes: positive(
            cx,
            cfg.max_request_header_bytes,
            "max_request_header_bytes",
            65536,
        )
        .max(8192),
        max_request_headers: positive(cx, cfg.max_request_headers, "max_request_headers", 100),
        drain_timeout: cfg.drain_timeout.map_or(Duration::from_secs(30), |d| d.0),
        client_idle_timeout,
        request_header_timeout,
        max_uri_bytes: positive(cx, cfg.max_uri_bytes, "max_uri_bytes", 8192),
        consumer_header: identity_header(cx, node, "consumer", "x-consumer-name", cfg),
        groups_header: identity_header(cx, node, "groups", "x-consumer-groups", cfg),
        identity_headers: Vec::new(),
        paths: path_options(cfg.paths.as_ref(), PathOptions::default()),
        reload_settle: nonzero(
            cx,
            cfg.reload_settle.as_ref().map(|d| d.0),
            "reload_settle",
            (Duration::from_secs(1), "1s"),
        ),
        request_body_timeout: cfg
            .request_body_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        request_body_min_rate: cfg.request_body_min_rate.unwrap_or(1024),
        send_timeout: nonzero(
            cx,
            cfg.send_timeout.as_ref().map(|d| d.0),
            "send_timeout",
            (Duration::from_secs(60), "60s"),
        ),
        http2_max_concurrent_streams: positive(
            cx,
            cfg.http2_max_concurrent_streams.map(|n| n as usize),
            "http2_max_concurrent_streams",
            100,
        ) as u32,
        max_connections_per_ip: cfg.max_connections_per_ip.unwrap_or(0),
        node_id: match cfg.node_id.as_deref().map(str::trim) {
            Some("") => {
                cx.sink.at(
                    loc(node, "node_id"),
                    "empty `node_id`",
                    "remove it for the host name and start time, or name the node",
                );
                None
            }
            Some(id) if id.chars().any(|c| c.is_control() || c == ' ') => {
                cx.sink.at(
                    loc(node, "node_id"),
                    format!("`node_id` {id:?} has spaces or control characters"),
                    "use letters, digits, `-`, `.` and `_`",
                );
                None
            }
            other => other.map(str::to_owned),
        },
        request_debug: cfg.request_debug.as_ref().and_then(|d| {
            let dnode = super::ctx::get(node, "request_debug").unwrap_or(node);
            let name = d.header.as_deref().unwrap_or("x-portico-debug");
            let header = match HeaderName::try_from(name.to_ascii_lowercase()) {
                Ok(h) => Some(h),
                Err(_) => {
                    cx.sink.at(
                        loc(dnode, "header"),
                        format!("invalid header name `{name}`"),
                        "use letters, digits and `-`, such as `x-portico-debug`",
                    );
                    None
                }
            };
            let digest = match portico_auth::apikey::parse_digest(&d.token_hash) {
                Ok(dg) => Some(dg),
                Err(e) => {
                    cx.sink.at(
                        loc(dnode, "token_hash"),
                        e,
                        "store the digest of the secret, never the secret: `portico hash api-key`",
                    );
                    None
                }
            };
            Some((header?, digest?))
        }),
    }
}

/// `paths:` keys over `base` (the defaults for `server.paths`, the server's for a listener).
pub(super) fn path_options(cfg: Option<&PathsConfig>, base: PathOptions) -> PathOptions {
    let Some(cfg) = cfg else {
        return base;
    };
    PathOptions {
        escaped_slashes: match cfg.escaped_slashes {
            None => base.escaped_slashes,
            Some(EscapedSlashesConfig::Reject) => EscapedSlashes::Reject,
            Some(EscapedSlashesConfig::Decode) => EscapedSlashes::Decode,
            Some(EscapedSlashesConfig::Keep) => EscapedSlashes::Keep,
        },
        merge_slashes: cfg.merge_slashes.unwrap_or(base.merge_slashes),
        path_parameters: match cfg.path_parameters {
            None => base.path_parameters,
            Some(PathParametersConfig::Reject) => PathParameters::Reject,
            Some(PathParametersConfig::Strip) => PathParameters::Strip,
            Some(PathParametersConfig::Keep) => PathParameters::Keep,
        },
    }
}

pub(super) fn compile_redis(
    cx: &mut Ctx<'_>,
    cfg: Option<&RedisConfig>,
    node: Option<&Node>,
) -> Option<RedisSettings> {
    let cfg = cfg?;
    let node = node?;
    let urls: Vec<(String, Loc)> = match (&cfg.url, cfg.cluster_nodes.is_empty(), &cfg.sentinel) {
        (Some(u), true, None) => vec![(u.clone(), loc(node, "url"))],
        (None, false, None) => cfg
            .cluster_nodes
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), item_loc(node, "cluster_nodes", i)))
            .collect(),
        (None, true, Some(s)) if !s.nodes.is_empty() && !s.master.is_empty() => {
            let snode = get(node, "sentinel").unwrap_or(node);
            s.nodes
                .iter()
                .enumerate()
                .map(|(i, u)| (u.clone(), item_loc(snode, "nodes", i)))
                .collect()
        }
        (None, true, Some(_)) => {
            cx.sink.at(
                loc(node, "sentinel"),
                "`sentinel` needs `nodes` and `master`",
                "e.g. `sentinel: { nodes: [\"redis://10.0.0.5:26379\"], master: mymaster }`",
            );
            return None;
        }
        _ => {
            cx.sink.at(
                node.loc,
                "`redis` needs exactly one of `url`, `cluster_nodes` and `sentinel`",
                "give `url: redis://host:6379` for one server, `cluster_nodes: [...]` for a Redis Cluster, or `sentinel: { nodes: [...], master: NAME }`",
            );
            return None;
        }
    };
    for (u, at) in &urls {
        let ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|p| u.starts_with(p));
        if !ok {
            cx.sink.at(
                *at,
                format!("`{u}` is not a Redis URL"),
                "write `redis://host:port` (or `rediss://` for TLS), e.g. `redis://127.0.0.1:6379/0`",
            );
            return None;
        }
    }
    let timeout = cfg.timeout.map_or(Duration::from_millis(50), |d| d.0);
    if timeout.is_zero() {
        cx.sink.at(
            loc(node, "timeout"),
            "`timeout` must be greater than 0",
            "remove it for the default, 50ms",
        );
        return None;
    }
    Some(RedisSettings {
        url: urls[0].0.clone(),
        cluster_nodes: cfg.cluster_nodes.clone(),
        sentinel: cfg
            .sentinel
            .as_ref()
            .map(|s| (s.nodes.clone(), s.master.clone())),
        timeout,
        key_prefix: cfg.key_prefix.clone().unwrap_or_else(|| "portico:".into()),
        heartbeat_interval: match cfg.heartbeat_interval.as_deref() {
            None => Some(Duration::from_secs(5)),
            Some("off" | "false" | "no") => None,
            Some(t) => match crate::duration::parse_duration(t) {
                Ok(d) if d >= Duration::from_millis(100) => Some(d),
                _ => {
                    cx.sink.at(
                        loc(node, "heartbeat_interval"),
                        format!("`heartbeat_interval` is `{t}`"),
                        "write a duration of at least 100ms, such as `5s`, or `off`",
                    );
                    None
                }
            },
        },
    })
}

fn identity_header(
    cx: &mut Ctx<'_>,
    node: &Node,
    key: &str,
    default: &'static str,
    cfg: &ServerConfig,
) -> HeaderName {
    let set = cfg.identity_headers.as_ref();
    let name = match key {
        "consumer" => set.and_then(|s| s.consumer.as_deref()),
        _ => set.and_then(|s| s.groups.as_deref()),
    };
    match name.map(HeaderName::try_from) {
        None => HeaderName::from_static(default),
        Some(Ok(h)) => h,
        Some(Err(_)) => {
            let at = get(node, "identity_headers").map_or(node.loc, |n| loc(n, key));
            cx.sink
                .at(at, "invalid header name", "use letters, digits and `-`");
            HeaderName::from_static(default)
        }
    }
}
