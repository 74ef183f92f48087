//! `upstreams`: targets and their URLs, load balancing, health checks, retries, upstream TLS.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node};

use super::ctx::{Ctx, FNV_START, fnv, get, item_loc, loc, read_file};

pub(super) fn compile_upstreams(
    cx: &mut Ctx<'_>,
    cfgs: &BTreeMap<String, UpstreamConfig>,
    nodes: &BTreeMap<String, (&Node, &Node)>,
) -> (Vec<Arc<Upstream>>, HashMap<String, usize>) {
    let mut out = Vec::new();
    let mut index = HashMap::new();
    // Keep file order so upstream indexes are stable across identical reloads.
    let mut ordered: Vec<(&String, &UpstreamConfig)> = cfgs.iter().collect();
    ordered.sort_by_key(|(name, _)| nodes.get(*name).map(|(k, _)| (k.loc.line, k.loc.column)));
    for (name, cfg) in ordered {
        let (name_node, node) = nodes[name];
        // Declared names resolve even when the upstream itself is invalid (reported here), so
        // routes that use it don't get a second, misleading "unknown upstream" error.
        index.insert(name.clone(), usize::MAX);
        if name.is_empty() {
            cx.sink.at(
                name_node.loc,
                "empty upstream name",
                "name it, as in `users:`",
            );
            continue;
        }
        if cfg.targets.is_empty() {
            cx.sink.at(
                loc(node, "targets"),
                format!("upstream `{name}` has no targets"),
                "add one, such as `targets: [\"http://127.0.0.1:9000\"]`",
            );
            continue;
        }
        let mut targets = Vec::new();
        let mut fp = fnv(format!("{cfg:?}").as_bytes(), FNV_START);
        for (i, t) in cfg.targets.iter().enumerate() {
            let at = item_loc(node, "targets", i);
            if t.weight == Some(0) {
                cx.sink.at(
                    at,
                    "a target's weight must be at least 1",
                    "remove the target, or give it `weight: 1` or more",
                );
                continue;
            }
            if let Some(mut target) = parse_target(cx, &t.url, at) {
                target.weight = t.weight.unwrap_or(1);
                targets.push(target);
            }
        }
        if targets.len() != cfg.targets.len() {
            continue;
        }
        let mut tls = UpstreamTls::default();
        if let Some(t) = &cfg.tls {
            let tnode = get(node, "tls").unwrap_or(node);
            if let Some(ca) = &t.ca {
                let Some(pem) = read_file(cx, ca, loc(tnode, "ca")) else {
                    continue;
                };
                fp = fnv(&pem, fp);
                let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect();
                if roots.is_empty() {
                    cx.sink.at(
                        loc(tnode, "ca"),
                        format!("no PEM certificate found in `{ca}`"),
                        "the CA bundle must hold `-----BEGIN CERTIFICATE-----` blocks",
                    );
                    continue;
                }
                tls.roots = Some(roots);
            }
            if let Some(sn) = &t.server_name {
                if rustls_pki_types::ServerName::try_from(sn.as_str()).is_err() {
                    cx.sink.at(
                        loc(tnode, "server_name"),
                        format!("invalid server name `{sn}`"),
                        "use a DNS name such as `api.internal`",
                    );
                    continue;
                }
                tls.server_name = Some(sn.clone());
            }
        }
        let health_check = match &cfg.health_check {
            None => None,
            Some(h) => {
                let hnode = get(node, "health_check").unwrap_or(node);
                let path = match &h.path {
                    None => None,
                    Some(p) if p.starts_with('/') => {
                        match http::uri::PathAndQuery::try_from(p.as_str()) {
                            Ok(pq) => Some(pq),
                            Err(_) => {
                                cx.sink.at(
                                    loc(hnode, "path"),
                                    format!("invalid path `{p}`"),
                                    "write a path such as `/healthz`",
                                );
                                continue;
                            }
                        }
                    }
                    Some(p) => {
                        cx.sink.at(
                            loc(hnode, "path"),
                            format!("path `{p}` must start with `/`"),
                            format!("write `/{p}`"),
                        );
                        continue;
                    }
                };
                if h.grpc_service.is_some() {
                    if h.path.is_some() {
                        cx.sink.at(
                            loc(hnode, "grpc_service"),
                            "`grpc_service` and `path` cannot be combined",
                            "a gRPC health check asks `grpc.health.v1.Health/Check`; remove `path`",
                        );
                        continue;
                    }
                    if targets.iter().any(|t: &Target| t.scheme == Scheme::Http) {
                        cx.sink.at(
                            loc(hnode, "grpc_service"),
                            "gRPC health checks need HTTP/2 targets",
                            "write the targets as `h2c://host:port` (or `https://` with HTTP/2)",
                        );
                        continue;
                    }
                }
                if let Some(bad) = h
                    .expected_statuses
                    .iter()
                    .find(|s| !(100..600).contains(*s))
                {
                    cx.sink.at(
                        loc(hnode, "expected_statuses"),
                        format!("{bad} is not an HTTP status"),
                        "use codes from 100 to 599",
                    );
                    continue;
                }
                if h.healthy_threshold == Some(0) || h.unhealthy_threshold == Some(0) {
                    cx.sink.at(
                        hnode.loc,
                        "health-check thresholds must be at least 1",
                        "the defaults are 2 (healthy) and 3 (unhealthy)",
                    );
                    continue;
                }
                let interval = h.interval.map_or(Duration::from_secs(5), |d| d.0);
                if interval.is_zero() {
                    cx.sink.at(
                        loc(hnode, "interval"),
                        "`interval` must be more than 0",
                        "for example `5s`",
                    );
                    continue;
                }
                Some(HealthCheck {
                    path,
                    grpc_service: h.grpc_service.clone(),
                    interval,
                    timeout: h.timeout.map_or(Duration::from_secs(2), |d| d.0),
                    expected_statuses: h.expected_statuses.clone(),
                    healthy_threshold: h.healthy_threshold.unwrap_or(2),
                    unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3),
                })
            }
        };
        let retry = match &cfg.retries {
            None => None,
            Some(r) => {
                let rnode = get(node, "retries").unwrap_or(node);
                let attempts = r.attempts.unwrap_or(2);
                if !(2..=10).contains(&attempts) {
                    cx.sink.at(
                        loc(rnode, "attempts"),
                        format!("`attempts` is {attempts}; it must be from 2 to 10"),
                        "it counts the first try: 2 means one retry; remove `retries` for none",
                    );
                    continue;
                }
                let budget = r.budget_percent.unwrap_or(20);
                if budget == 0 || budget > 100 {
                    cx.sink.at(
                        loc(rnode, "budget_percent"),
                        format!("`budget_percent` is {budget}; it must be from 1 to 100"),
                        "20 lets retries add at most a fifth more load",
                    );
                    continue;
                }
                let on = if r.retry_on.is_empty() {
                    vec![
                        RetryOn::Named(RetryCondition::ConnectFailure),
                        RetryOn::Named(RetryCondition::Reset),
                        RetryOn::Status(502),
                        RetryOn::Status(503),
                        RetryOn::Status(504),
                    ]
                } else {
                    r.retry_on.clone()
                };
                if let Some(RetryOn::Status(bad)) = on
                    .iter()
                    .find(|o| matches!(o, RetryOn::Status(s) if !(100..600).contains(s)))
                {
                    cx.sink.at(
                        loc(rnode, "retry_on"),
                        format!("{bad} is not an HTTP status"),
                        "use codes from 100 to 599, or connect_failure, reset, timeout",
                    );
                    continue;
                }
                Some(RetryPolicy {
                    attempts,
                    on_connect_failure: on
                        .contains(&RetryOn::Named(RetryCondition::ConnectFailure)),
                    on_reset: on.contains(&RetryOn::Named(RetryCondition::Reset)),
                    on_timeout: on.contains(&RetryOn::Named(RetryCondition::Timeout)),
                    on_statuses: on
                        .iter()
                        .filter_map(|o| {
                            if let RetryOn::Status(s) = o {
                                Some(*s)
                            } else {
                                None
                            }
                        })
                        .collect(),
                    budget_percent: budget,
                    backoff: r.backoff.map_or(Duration::from_millis(25), |d| d.0),
                    attempt_timeout: r.attempt_timeout.map(|d| d.0),
                    non_idempotent: r.non_idempotent,
                })
            }
        };
        if cfg.max_requests == Some(0) {
            cx.sink.at(
                loc(node, "max_requests"),
                "`max_requests` must be at least 1",
                "remove it for no limit",
            );
            continue;
        }
        if cfg.max_connections == Some(0) {
            cx.sink.at(
                loc(node, "max_connections"),
                "`max_connections` must be at least 1",
                "remove it for no limit",
            );
            continue;
        }
        if cfg.max_pending.is_some() && cfg.max_connections.is_none() {
            cx.sink.at(
                loc(node, "max_pending"),
                "`max_pending` needs `max_connections`",
                "requests wait for a connection only when `max_connections` caps them; add it or remove `max_pending`",
            );
            continue;
        }
        if cfg
            .dns_refresh
            .is_some_and(|d| d.0 < Duration::from_millis(100))
        {
            cx.sink.at(
                loc(node, "dns_refresh"),
                "`dns_refresh` must be at least 100ms",
                "names are resolved again this often; `10s` is the default",
            );
            continue;
        }
        let Some(balance) =
            compile_balance(cx, cfg.load_balancing.as_ref(), get(node, "load_balancing"))
        else {
            continue;
        };
        let d = |v: Option<crate::duration::DurationStr>, default: u64| {
            v.map_or(Duration::from_millis(default), |d| d.0)
        };
        // No count by default: idle connections are those that were in use at once, reused
        // newest first, so what a quieter time leaves unused reaches `idle_timeout` and
        // closes. A fixed count below the peak closes and reopens connections under load
        // (at 1,000 client connections, 128 cost 2.2 times nginx's CPU per request).
        let pool_max_idle = cfg.pool_max_idle.unwrap_or(usize::MAX);
        let preconnect = cfg.preconnect.unwrap_or(0);
        if preconnect > pool_max_idle || preconnect > cfg.max_connections.unwrap_or(usize::MAX) {
            cx.sink.at(
                loc(node, "preconnect"),
                format!("`preconnect: {preconnect}` is more than the pool keeps"),
                "keep it at most `pool_max_idle` and `max_connections`",
            );
            continue;
        }
        index.insert(name.clone(), out.len());
        out.push(Arc::new(Upstream {
            name: name.as_str().into(),
            targets,
            balance,
            connect_timeout: d(cfg.connect_timeout, 5_000),
            request_timeout: d(cfg.request_timeout, 60_000),
            idle_timeout: d(cfg.idle_timeout, 30_000),
            pool_max_idle,
            preconnect,
            max_requests: cfg.max_requests.unwrap_or(usize::MAX),
            max_connections: cfg.max_connections.unwrap_or(usize::MAX),
            max_pending: cfg.max_pending.unwrap_or(1024),
            stream_idle_timeout: Some(d(cfg.stream_idle_timeout, 300_000)).filter(|t| !t.is_zero()),
            dns_refresh: d(cfg.dns_refresh, 10_000),
            health_check,
            retry,
            eject_after_failures: cfg
                .passive_health
                .as_ref()
                .and_then(|p| p.consecutive_failures)
                .unwrap_or(5),
            ejection_time: cfg
                .passive_health
                .as_ref()
                .and_then(|p| p.ejection_time)
                .map_or(Duration::from_secs(10), |d| d.0),
            tls,
            fingerprint: fp,
        }));
    }
    (out, index)
}

fn compile_balance(
    cx: &mut Ctx<'_>,
    cfg: Option<&LoadBalancingConfig>,
    node: Option<&Node>,
) -> Option<Balance> {
    let Some(cfg) = cfg else {
        return Some(Balance::RoundRobin);
    };
    let at = node.map_or(Loc::default(), |n| loc(n, "hash_on"));
    match (cfg.algorithm, &cfg.hash_on) {
        (Algorithm::RoundRobin, None) => Some(Balance::RoundRobin),
        (Algorithm::Random, None) => Some(Balance::Random),
        (Algorithm::LeastRequest, None) => Some(Balance::LeastRequest),
        (Algorithm::Hash, None) => {
            cx.sink.at(node.map_or(Loc::default(), |n| n.loc), "`algorithm: hash` needs `hash_on`", "for example `hash_on: { header: x-user-id }`, `{ cookie: session }` or `{ client_ip: true }`");
            None
        }
        (Algorithm::Hash, Some(h)) => {
            let on = match h {
                HashOnConfig::Header(name) => match http::HeaderName::try_from(name.as_str()) {
                    Ok(n) => HashOn::Header(n),
                    Err(_) => {
                        cx.sink.at(
                            at,
                            format!("invalid header name `{name}`"),
                            "use letters, digits and `-`",
                        );
                        return None;
                    }
                },
                HashOnConfig::Cookie(c) if !c.is_empty() => HashOn::Cookie(c.clone()),
                HashOnConfig::Query(q) if !q.is_empty() => HashOn::Query(q.clone()),
                HashOnConfig::ClientIp(true) => HashOn::ClientIp,
                HashOnConfig::Path(true) => HashOn::Path,
                _ => {
                    cx.sink.at(at, "`hash_on` names nothing to hash", "write `{ header: NAME }`, `{ cookie: NAME }`, `{ query: NAME }`, `{ client_ip: true }` or `{ path: true }`");
                    return None;
                }
            };
            Some(Balance::Hash(on))
        }
        (_, Some(_)) => {
            cx.sink.at(
                at,
                "`hash_on` applies only to `algorithm: hash`",
                "remove `hash_on`, or use `algorithm: hash`",
            );
            None
        }
    }
}

fn parse_target(cx: &mut Ctx<'_>, t: &str, at: Loc) -> Option<Target> {
    match target_from_str(t) {
        Ok(target) => Some(target),
        Err((msg, hint)) => {
            cx.sink.at(at, msg, hint);
            None
        }
    }
}

/// A target from its URL (weight 1), as in the file: `http://host:port`, `https://host:port`
/// or `h2c://host:port`. The error is a message and a hint. Also used by the admin API.
pub fn parse_target_url(t: &str) -> Result<Target, String> {
    target_from_str(t).map_err(|(msg, hint)| format!("{msg}; {hint}"))
}

fn target_from_str(t: &str) -> Result<Target, (String, String)> {
    let hint = || "write `http://host:port`, `https://host:port` or `h2c://host:port`".to_owned();
    let Some((scheme, rest)) = t.split_once("://") else {
        return Err((format!("target `{t}` has no scheme"), hint()));
    };
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (Scheme::Http, 80),
        "https" => (Scheme::Https, 443),
        "h2c" => (Scheme::H2c, 80),
        other => {
            return Err((format!("unsupported target scheme `{other}`"), hint()));
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err((
            format!("target `{t}` must not have a path, query or user info"),
            "use a route `rewrite` to change paths; targets are `scheme://host:port`".to_owned(),
        ));
    }
    let with_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty())
        && !rest.ends_with(']')
    {
        rest.to_owned()
    } else {
        format!("{rest}:{default_port}")
    };
    match with_port.parse::<http::uri::Authority>() {
        Ok(a) if !a.host().is_empty() => Ok(Target {
            scheme,
            weight: 1,
            authority: a,
            display: t.into(),
        }),
        _ => Err((format!("invalid target `{t}`"), hint())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ctx::testing::{ctx, only_diagnostic};

    #[test]
    fn an_unknown_scheme_is_located_with_a_hint() {
        let mut cx = ctx("upstreams:\n  a: { targets: [\"ftp://x:21\"] }\n");
        let at = Loc {
            line: 2,
            column: 18,
        };
        assert!(parse_target(&mut cx, "ftp://x:21", at).is_none());
        let d = only_diagnostic(cx);
        assert_eq!(d.message, "unsupported target scheme `ftp`");
        assert_eq!(d.loc, Some(at));
        assert_eq!(
            d.hint.as_deref(),
            Some("write `http://host:port`, `https://host:port` or `h2c://host:port`")
        );
    }

    #[test]
    fn a_target_has_no_path() {
        let (msg, hint) = target_from_str("http://x:80/api").unwrap_err();
        assert_eq!(
            msg,
            "target `http://x:80/api` must not have a path, query or user info"
        );
        assert!(hint.contains("rewrite"));
    }

    #[test]
    fn the_port_defaults_by_scheme() {
        assert_eq!(
            parse_target_url("https://x").unwrap().authority.port_u16(),
            Some(443)
        );
        assert_eq!(
            parse_target_url("h2c://x/").unwrap().authority.port_u16(),
            Some(80)
        );
    }
}
