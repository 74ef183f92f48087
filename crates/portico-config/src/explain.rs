//! `portico explain`: what the gateway would do with one request under a config, and why,
//! without calling anything. The route comes from the router itself (`Router::find`), the
//! canonical path from `canon`, and the upstream path from `ProxyAction::rewrite`, so what is
//! explained is what is done.

use http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use crate::config::Config;
use crate::ir::action::{Action, ProxyAction};
use crate::ir::auth::AuthMethod;
use crate::ir::policy::{LimitKey, Policy};
use crate::ir::route::{HostPattern, PathPattern, Route};
use crate::ir::upstream::{Balance, HashOn, Upstream};
use crate::router::{RequestView, Unmet, match_path_in};

/// The request to explain.
pub struct Request<'a> {
    /// The listener it arrives on (its `paths` settings apply); the first one when `None`.
    pub listener: Option<&'a str>,
    pub method: Method,
    /// Absolute (`http://host/path?q`) or origin form (`/path?q`, with a `Host` header).
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// The explanation, as JSON (`portico explain --json`; [`text`] writes it for people).
pub fn explain(cfg: &Config, req: &Request<'_>) -> Value {
    let listener = req
        .listener
        .map(str::to_owned)
        .or_else(|| cfg.listeners.first().map(|l| l.name.to_string()))
        .unwrap_or_default();
    let host = req
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_owned())
        })
        .map(|h| h.to_ascii_lowercase());
    let raw_path = req.uri.path();
    let canonical = match crate::canon::canonicalize(raw_path, cfg.path_options(&listener)) {
        Ok(p) => p.into_owned(),
        Err(e) => {
            return json!({
                "request": request_json(req, host.as_deref()),
                "path": { "as_sent": raw_path, "refused": e.code(), "detail": e.detail() },
                "answer": "400 bad_path: the path has no canonical form under this listener's `paths` settings",
            });
        }
    };
    let query = req.uri.query();
    let view = RequestView {
        host: host.as_deref(),
        path: &canonical,
        method: &req.method,
        headers: &req.headers,
        query,
    };
    let found = cfg.router.find(&view);
    let chosen = found.as_ref().map(|m| m.route.index);
    // In the order the router considers them for this request: the tables of its host (exact
    // name, then wildcard suffixes, longest first), then the routes without hosts; within
    // each, the most specific path first, then the most conditions, then declared order.
    let mut order: Vec<&std::sync::Arc<Route>> = cfg.routes.iter().collect();
    order.sort_by_key(|r| (host_tier(r, host.as_deref()), crate::router::precedence(r)));
    let routes: Vec<Value> = order
        .iter()
        .map(|r| json!({ "route": &*r.name, "verdict": verdict(r, &view, chosen, cfg) }))
        .collect();
    let mut out = json!({
        "request": request_json(req, host.as_deref()),
        "listener": listener,
        "path": { "as_sent": raw_path, "canonical": canonical },
        "routes": routes,
    });
    let Some(m) = found else {
        out["answer"] = json!("404 no_route: no route matches this request");
        return out;
    };
    let route = m.route;
    let params: Vec<String> = m.params.iter().map(|p| (*p).to_owned()).collect();
    out["route"] = json!({
        "name": &*route.name,
        "params": params,
        "timeout_ms": route.timeout.map(|t| t.as_millis() as u64),
    });
    out["policies"] = cfg
        .global_policies
        .iter()
        .map(|p| policy_json(p, "global"))
        .chain(route.policies.iter().map(|p| policy_json(p, "route")))
        .collect();
    out["action"] = action_json(cfg, route, &canonical, query, &params);
    if route.contract.is_some() || route.operation.is_some() {
        out["contract"] = contract_json(cfg, route, &params, query, &req.headers);
    }
    let e = &route.effective;
    out["response"] = json!({
        "xml_json": e.xml_json.is_some(),
        "json_transform": e.json_transform.is_some(),
        "compression": e.compression.is_some(),
        "cors": e.cors.is_some(),
        "cache": e.cache.is_some(),
        "set_headers": route.response_headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
    });
    out
}

/// The operation a route serves and how its contract is held: the checks of requests, with
/// what this request's head (parameters, media type) gets from them, and of answers.
fn contract_json(
    cfg: &Config,
    route: &Route,
    params: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
) -> Value {
    let operation = route.operation.as_ref().map(|(api, pointer)| {
        json!({
            "api": cfg.apis.get(*api).map(|a| a.name.as_str()),
            "pointer": format!("#{pointer}"),
        })
    });
    let c = route.contract.as_deref();
    let requests = match c.and_then(|c| c.request.as_ref().map(|r| (c, r))) {
        None => json!(false),
        Some((c, rc)) => {
            let path = c.path_params(params);
            let parts = portico_contract::RequestParts {
                path: &path,
                query,
                headers,
            };
            // The body is not known here: a body is taken to be there when the request
            // says it has one.
            let has_body = headers.contains_key(http::header::CONTENT_TYPE)
                || headers.contains_key(http::header::CONTENT_LENGTH);
            let mut failures = Vec::new();
            let mut scratch = portico_contract::Scratch::default();
            let head = match rc.check_head(&parts, has_body, &mut scratch, &mut failures) {
                Ok(portico_contract::BodyPlan::Pass) => json!("passes; no body is checked"),
                Ok(portico_contract::BodyPlan::Check(b)) => json!(match b.kind {
                    portico_contract::BodyKind::Json => {
                        "passes; the JSON body is checked against its schema"
                    }
                    portico_contract::BodyKind::Form { .. } => {
                        "passes; the form body is checked against its schema"
                    }
                    portico_contract::BodyKind::Multipart { .. } => {
                        "passes; the multipart body's parts are checked against its schema"
                    }
                }),
                Err(status) => json!({
                    "refused": status,
                    "failures": failures.iter().map(|f| json!({
                        "in": f.location,
                        "name": f.name.as_deref(),
                        "pointer": &f.pointer,
                        "keyword": f.keyword,
                        "detail": &f.message,
                    })).collect::<Vec<_>>(),
                }),
            };
            json!({
                "max_body_bytes": rc.limits.max_body,
                "max_depth": rc.limits.max_depth,
                "max_errors": rc.limits.max_errors,
                "this_request": head,
            })
        }
    };
    let answers = match c.and_then(|c| c.response.as_ref()) {
        None => json!(false),
        Some(r) => json!({ "sample": r.sample, "enforce": r.enforce }),
    };
    json!({
        "operation": operation,
        "validate_requests": requests,
        "check_responses": answers,
    })
}

/// Every route, in declared order, as the admin API's `GET /routes` shows it: its match
/// rules as written (secrets redacted), the policy chain that applies to it (the global
/// policies first) with what each needs, its action, and its timeout.
pub fn routes(cfg: &Config) -> Value {
    let redacted = cfg.redacted();
    let written = redacted["routes"].as_array();
    let list: Vec<Value> = cfg
        .routes
        .iter()
        .map(|r| {
            let rules = match &r.operation {
                // An operation of an `apis` document has no `match` written: its method and
                // path, as the route takes them.
                Some(_) => {
                    let path = match &r.path {
                        PathPattern::Any => json!({ "prefix": "/" }),
                        PathPattern::Exact(e) => json!({ "exact": e }),
                        PathPattern::Prefix(p) => json!({ "prefix": p }),
                        PathPattern::Template(t) => json!({ "template": t.source }),
                    };
                    let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
                    json!({ "path": path, "methods": methods })
                }
                None => written
                    .and_then(|w| w.get(r.index))
                    .map_or(Value::Null, |w| w["match"].clone()),
            };
            let action = match &r.action {
                Action::Proxy(p) => json!({
                    "proxy": p.upstreams.iter().map(|(u, w)| json!({
                        "upstream": &*cfg.upstreams[*u].name, "weight": w })).collect::<Vec<_>>(),
                    "rewrites_path": p.path.is_some() || p.strip_prefix.is_some(),
                }),
                Action::Respond(x) => json!({ "respond": { "status": x.status.as_u16() } }),
                Action::Redirect(x) => json!({ "redirect": { "status": x.status.as_u16() } }),
                Action::Aggregate(ag) => json!({
                    "aggregate": ag.backends.iter().map(|b| json!({
                        "name": &*b.name, "upstream": &*cfg.upstreams[b.upstream].name })).collect::<Vec<_>>()
                }),
            };
            let translation = if r.transcode.is_some() {
                Some("grpc_transcode")
            } else if r.soap.is_some() {
                Some("soap")
            } else if r.grpc_web {
                Some("grpc_web")
            } else {
                None
            };
            json!({
                "name": &*r.name,
                "index": r.index,
                "match": if rules.is_null() { json!({}) } else { rules },
                "policies": cfg
                    .global_policies
                    .iter()
                    .map(|p| policy_json(p, "global"))
                    .chain(r.policies.iter().map(|p| policy_json(p, "route")))
                    .collect::<Vec<_>>(),
                "action": action,
                "translation": translation,
                "timeout_ms": r.timeout.map(|t| t.as_millis() as u64),
            })
        })
        .collect();
    json!({ "routes": list })
}

/// Which of the router's tables a route is in for a request to `host`: 0 its exact name,
/// 1 a wildcard suffix (a longer one sorting first), 2 no hosts, 3 other hosts only.
fn host_tier(r: &Route, host: Option<&str>) -> (u8, std::cmp::Reverse<usize>) {
    if r.hosts.is_empty() {
        return (2, std::cmp::Reverse(0));
    }
    let Some(h) = host else {
        return (3, std::cmp::Reverse(0));
    };
    let mut best = (3, std::cmp::Reverse(0));
    for p in &r.hosts {
        let tier = match p {
            HostPattern::Exact(n) if n == h => (0, std::cmp::Reverse(0)),
            HostPattern::Suffix(s) if h.len() > s.len() && h.ends_with(s.as_str()) => {
                (1, std::cmp::Reverse(s.len()))
            }
            _ => continue,
        };
        best = best.min(tier);
    }
    best
}

fn request_json(req: &Request<'_>, host: Option<&str>) -> Value {
    json!({ "method": req.method.as_str(), "uri": req.uri.to_string(), "host": host })
}

/// Why `r` does or does not take the request.
fn verdict(r: &Route, req: &RequestView<'_>, chosen: Option<usize>, cfg: &Config) -> String {
    if chosen == Some(r.index) {
        return "chosen".into();
    }
    if !r.hosts.is_empty() {
        let ok = req.host.is_some_and(|h| {
            r.hosts.iter().any(|p| match p {
                HostPattern::Exact(n) => n == h,
                HostPattern::Suffix(s) => h.len() > s.len() && h.ends_with(s.as_str()),
            })
        });
        if !ok {
            return format!(
                "host: {} is not {}",
                req.host.unwrap_or("(none)"),
                r.hosts
                    .iter()
                    .map(|h| match h {
                        HostPattern::Exact(n) => n.clone(),
                        HostPattern::Suffix(s) => format!("*{s}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
    }
    if match_path_in(&r.path, req.path, r.path_any_case).is_none() {
        return format!("path: {} does not match {}", req.path, path_text(&r.path));
    }
    match crate::router::unmet(r, req) {
        Some(Unmet::Method) => {
            let ms: Vec<&str> = r.methods.iter().map(Method::as_str).collect();
            return format!("method: {} is not {}", req.method, ms.join(" or "));
        }
        Some(Unmet::Header(name)) => {
            return format!("header: {name} does not meet the route's condition");
        }
        Some(Unmet::Query(name)) => {
            return format!("query: {name} does not meet the route's condition");
        }
        Some(Unmet::Cookie(name)) => {
            return format!("cookie: {name} does not meet the route's condition");
        }
        None => {}
    }
    match chosen {
        Some(i) => format!(
            "matches too, but `{}` comes first (a more specific host or path, more conditions, or declared earlier)",
            cfg.routes[i].name
        ),
        // The router's host tables keep a route with hosts out of requests for other hosts.
        None => "matches on its own conditions, but not in the table of this request's host".into(),
    }
}

fn path_text(p: &PathPattern) -> String {
    match p {
        PathPattern::Any => "any path".into(),
        PathPattern::Exact(e) => format!("exact {e}"),
        PathPattern::Prefix(pf) => format!("prefix {pf}"),
        PathPattern::Template(_) => "its template".into(),
    }
}

fn key_text(k: &LimitKey) -> String {
    match k {
        LimitKey::ClientIp => "client address".into(),
        LimitKey::Route => "route".into(),
        LimitKey::Consumer => "consumer".into(),
        LimitKey::Header(h) => format!("header {h}"),
        LimitKey::Claim(c) => format!("claim {c}"),
        LimitKey::Composite(parts) => parts.iter().map(key_text).collect::<Vec<_>>().join(" + "),
    }
}

/// One policy, with what it needs from the request.
fn policy_json(p: &Policy, from: &str) -> Value {
    let (kind, needs): (&str, Value) = match p {
        Policy::Auth(a) => (
            "auth",
            a.methods
                .iter()
                .map(|m| match m {
                    AuthMethod::ApiKey(k) => json!({
                        "api_key": { "header": k.header.as_str(), "query": k.query }
                    }),
                    AuthMethod::Basic(_) => json!("basic_auth: Authorization: Basic"),
                    AuthMethod::Jwt(j) => json!({
                        "jwt": { "issuers": j.issuers.len(), "forward_token": j.forward_token }
                    }),
                    AuthMethod::ClientCert(_) => json!("client_certificate (mutual TLS)"),
                    AuthMethod::Introspection(i) => json!({ "introspection": i.url }),
                })
                .collect(),
        ),
        Policy::Acl(a) => (
            "acl",
            json!({ "allow": a.allow, "deny": a.deny, "scopes": a.scopes,
                    "methods": a.methods.iter().map(Method::as_str).collect::<Vec<_>>() }),
        ),
        Policy::IpFilter(f) => (
            "ip_filter",
            json!({ "allow": f.allow.len(), "deny": f.deny.len() }),
        ),
        Policy::RateLimit(rl) => (
            "rate_limit",
            json!({
                "key": key_text(&rl.key),
                "limits": rl.limits.iter().map(|l| format!("{} per {:?}{}", l.requests, l.per,
                    if l.sliding { " (sliding window)" } else { "" })).collect::<Vec<_>>(),
                "store": format!("{:?}", rl.store),
            }),
        ),
        Policy::ConcurrencyLimit(c) => (
            "concurrency_limit",
            json!({ "key": key_text(&c.key), "max_in_flight": c.max_in_flight }),
        ),
        Policy::BodyLimit(max) => ("body_limit", json!({ "max_bytes": max })),
        Policy::Headers(_) => (
            "headers",
            json!("sets or removes request and response headers"),
        ),
        Policy::Cors(_) => (
            "cors",
            json!("answers preflights; adds CORS headers to answers"),
        ),
        Policy::Compression(_) => (
            "compression",
            json!("compresses answers the client accepts"),
        ),
        Policy::RequestDecompression(max) => {
            ("request_decompression", json!({ "max_decoded_bytes": max }))
        }
        Policy::JsonTransform(_) => ("json_transform", json!("reshapes JSON answers")),
        Policy::XmlJson(_) => ("xml_json", json!("converts between XML and JSON")),
        Policy::Cache(c) => (
            "cache",
            json!({ "max_entries": c.max_entries, "max_object_bytes": c.max_object_bytes }),
        ),
    };
    json!({ "type": kind, "from": from, "needs": needs })
}

fn upstream_json(up: &Upstream) -> Value {
    let balance = match &up.balance {
        Balance::RoundRobin => "round_robin".to_owned(),
        Balance::Random => "random".to_owned(),
        Balance::LeastRequest => "least_request".to_owned(),
        Balance::Hash(h) => format!(
            "hash on {}",
            match h {
                HashOn::Header(n) => format!("header {n}"),
                HashOn::Cookie(c) => format!("cookie {c}"),
                other => format!("{other:?}").to_lowercase(),
            }
        ),
    };
    json!({
        "name": &*up.name,
        "balance": balance,
        "targets": up.targets.iter().map(|t| json!({ "target": &*t.display, "weight": t.weight })).collect::<Vec<_>>(),
        "connect_timeout_ms": up.connect_timeout.as_millis() as u64,
        "request_timeout_ms": up.request_timeout.as_millis() as u64,
        "retries": up.retry.as_ref().map(|r| json!({
            "attempts": r.attempts,
            "on_connect_failure": r.on_connect_failure,
            "on_reset": r.on_reset,
            "on_timeout": r.on_timeout,
            "on_statuses": r.on_statuses,
        })),
        "max_requests": (up.max_requests != usize::MAX).then_some(up.max_requests),
        "health_check": up.health_check.is_some(),
    })
}

fn proxy_json(
    cfg: &Config,
    p: &ProxyAction,
    path: &str,
    query: Option<&str>,
    params: &[String],
) -> Value {
    let before = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let after = p
        .rewrite(path, query, params)
        .unwrap_or_else(|| before.clone());
    json!({
        "proxy": {
            "upstreams": p.upstreams.iter().map(|(u, w)| json!({
                "weight": w, "upstream": upstream_json(&cfg.upstreams[*u]) })).collect::<Vec<_>>(),
            "path": { "before": before, "after": after },
            "host": p.host.as_ref().and_then(|h| h.to_str().ok()),
        }
    })
}

fn action_json(
    cfg: &Config,
    route: &Route,
    path: &str,
    query: Option<&str>,
    params: &[String],
) -> Value {
    let mut a = match &route.action {
        Action::Proxy(p) => proxy_json(cfg, p, path, query, params),
        Action::Respond(r) => json!({ "respond": { "status": r.status.as_u16() } }),
        Action::Redirect(r) => {
            let mut to = String::new();
            let p: Vec<&str> = params.iter().map(String::as_str).collect();
            r.to.render(&p, &mut to);
            json!({ "redirect": { "status": r.status.as_u16(), "to": to } })
        }
        Action::Aggregate(ag) => json!({
            "aggregate": ag.backends.iter().map(|b| json!({
                "name": &*b.name,
                "upstream": &*cfg.upstreams[b.upstream].name,
                "required": b.required,
            })).collect::<Vec<_>>()
        }),
    };
    if route.transcode.is_some() {
        a["translation"] = json!("REST/JSON to gRPC (grpc_transcode)");
    } else if route.soap.is_some() {
        a["translation"] = json!("JSON to SOAP (soap)");
    } else if route.grpc_web {
        a["translation"] = json!("gRPC-Web to gRPC");
    }
    if let Some((m, pct)) = route.mirror {
        a["mirror"] = json!({ "upstream": &*cfg.upstreams[m].name, "percent": pct });
    }
    a
}

/// The explanation for people: one fact a line, in the order the gateway meets them.
pub fn text(v: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let r = &v["request"];
    out.push_str(&format!(
        "request   {} {} (host {})\n",
        s(&r["method"]),
        s(&r["uri"]),
        r["host"].as_str().unwrap_or("none")
    ));
    if let Some(l) = v["listener"].as_str() {
        out.push_str(&format!("listener  {l}\n"));
    }
    let p = &v["path"];
    match p["canonical"].as_str() {
        Some(c) if Some(c) != p["as_sent"].as_str() => out.push_str(&format!(
            "path      {} -> {c} (canonical)\n",
            s(&p["as_sent"])
        )),
        Some(c) => out.push_str(&format!("path      {c} (already canonical)\n")),
        None => out.push_str(&format!(
            "path      {} refused: {}\n",
            s(&p["as_sent"]),
            s(&p["detail"])
        )),
    }
    for rt in v["routes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "route     {:<20} {}\n",
            s(&rt["route"]),
            s(&rt["verdict"])
        ));
    }
    if let Some(a) = v["answer"].as_str() {
        out.push_str(&format!("answer    {a}\n"));
        return out;
    }
    for pol in v["policies"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "policy    {} ({}): {}\n",
            s(&pol["type"]),
            s(&pol["from"]),
            s(&pol["needs"])
        ));
    }
    let a = &v["action"];
    if let Some(px) = a.get("proxy") {
        out.push_str(&format!(
            "rewrite   {} -> {}\n",
            s(&px["path"]["before"]),
            s(&px["path"]["after"])
        ));
        for u in px["upstreams"].as_array().into_iter().flatten() {
            let up = &u["upstream"];
            out.push_str(&format!(
                "upstream  {} (weight {}), {}, request timeout {} ms, retries {}\n",
                s(&up["name"]),
                s(&u["weight"]),
                s(&up["balance"]),
                s(&up["request_timeout_ms"]),
                s(&up["retries"])
            ));
            for t in up["targets"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "target    {} (weight {})\n",
                    s(&t["target"]),
                    s(&t["weight"])
                ));
            }
        }
    } else {
        out.push_str(&format!("action    {}\n", s(a)));
    }
    if let Some(t) = a.get("translation") {
        out.push_str(&format!("translate {}\n", s(t)));
    }
    let c = &v["contract"];
    if c.is_object() {
        if let Some(op) = c["operation"].as_object() {
            out.push_str(&format!(
                "contract  operation {} of API {}\n",
                s(&op["pointer"]),
                s(&op["api"])
            ));
        }
        let r = &c["validate_requests"];
        match r["this_request"].as_str() {
            Some(verdict) => out.push_str(&format!(
                "contract  requests checked; this head {verdict}\n"
            )),
            None if r.is_object() => {
                out.push_str(&format!(
                    "contract  requests checked; this head is refused with {}\n",
                    s(&r["this_request"]["refused"])
                ));
                for f in r["this_request"]["failures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.push_str(&format!(
                        "contract    {} {}{}: {} ({})\n",
                        s(&f["in"]),
                        f["name"].as_str().unwrap_or(""),
                        s(&f["pointer"]),
                        s(&f["detail"]),
                        s(&f["keyword"])
                    ));
                }
            }
            None => out.push_str("contract  requests not checked\n"),
        }
        match c["check_responses"].as_object() {
            Some(a) => out.push_str(&format!(
                "contract  answers checked (sample {}, {})\n",
                s(&a["sample"]),
                if a["enforce"] == json!(true) {
                    "enforced"
                } else {
                    "counted and logged"
                }
            )),
            None => out.push_str("contract  answers not checked\n"),
        }
        for x in c["recent_violations"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "violation {} status {} {}: {}\n",
                s(&x["at"]),
                s(&x["status"]),
                s(&x["kind"]),
                s(&x["failures"][0]["detail"])
            ));
        }
    }
    out.push_str(&format!("response  {}\n", s(&v["response"])));
    out
}
