//! Policies: each `type` compiled to its runtime form (the identity and access ones by
//! `auth.rs`), the order a chain must respect, and the scope of rate-limit counters.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};

use crate::file::*;
use crate::ir::*;
use crate::tree::Node;

use super::ctx::{Ctx, FNV_START, fnv, get, item_loc, loc};
use super::values::compile_header_ops;

/// Checks the order of a policy chain: an `acl` needs an authentication policy before it
/// (globally or earlier in the same list). Returns whether the chain authenticates.
pub(super) fn check_chain(
    cx: &mut Ctx<'_>,
    policies: &[PolicyConfig],
    nodes: &[&Node],
    mut auth: bool,
) -> bool {
    let mut cors_seen = false;
    for (p, n) in policies.iter().zip(nodes) {
        if let PolicyConfig::Cors(_) = p {
            if cors_seen {
                cx.sink.at(
                    n.loc,
                    "a second `cors` policy in the same list would never be used",
                    "merge the two: list every origin, method and header in one `cors` policy",
                );
            }
            cors_seen = true;
        }
        match p {
            PolicyConfig::ApiKey(_)
            | PolicyConfig::BasicAuth(_)
            | PolicyConfig::Jwt(_)
            | PolicyConfig::ClientCert(_)
            | PolicyConfig::Introspection(_)
            | PolicyConfig::AnyOf(_) => auth = true,
            PolicyConfig::Acl(a)
                if !auth && (!a.allow.is_empty() || !a.deny.is_empty() || !a.scopes.is_empty()) =>
            {
                cx.sink.at(
                    n.loc,
                    "this `acl` has no identity to check: no authentication policy runs before it",
                    "put an `api_key`, `basic_auth`, `jwt` or `any_of` policy before it, in the global `policies` or earlier in this list",
                );
            }
            _ => {}
        }
    }
    auth
}

fn limit_key(cx: &mut Ctx<'_>, k: LimitKeyConfig, node: &Node) -> Option<LimitKey> {
    Some(match k {
        LimitKeyConfig::ClientIp => LimitKey::ClientIp,
        LimitKeyConfig::Route => LimitKey::Route,
        LimitKeyConfig::Consumer => LimitKey::Consumer,
        LimitKeyConfig::Header(h) => match HeaderName::try_from(h.as_str()) {
            Ok(n) => LimitKey::Header(n),
            Err(_) => {
                cx.sink.at(
                    loc(node, "key"),
                    format!("invalid header name `{h}`"),
                    "use letters, digits and `-`",
                );
                return None;
            }
        },
        LimitKeyConfig::Claim(c) if c.is_empty() => {
            cx.sink.at(
                loc(node, "key"),
                "the claim name is empty",
                "name a claim, such as `sub`",
            );
            return None;
        }
        LimitKeyConfig::Claim(c) => LimitKey::Claim(c),
        LimitKeyConfig::Composite(parts) => {
            if parts.len() < 2 {
                cx.sink.at(
                    loc(node, "key"),
                    "a composite key needs at least two parts",
                    "for one part, write it directly, e.g. `key: consumer`",
                );
                return None;
            }
            let mut out = Vec::new();
            for p in parts {
                out.push(limit_key(cx, p, node)?);
            }
            LimitKey::Composite(out)
        }
    })
}

pub(crate) fn compile_policy(cx: &mut Ctx<'_>, p: &PolicyConfig, node: &Node) -> Option<Policy> {
    let before = cx.sink.out.len();
    let policy = match p {
        PolicyConfig::ApiKey(_)
        | PolicyConfig::BasicAuth(_)
        | PolicyConfig::Jwt(_)
        | PolicyConfig::ClientCert(_)
        | PolicyConfig::Introspection(_)
        | PolicyConfig::AnyOf(_)
        | PolicyConfig::Acl(_)
        | PolicyConfig::IpFilter(_)
        | PolicyConfig::Cors(_)
        | PolicyConfig::BodyLimit(_) => super::auth::compile_access_policy(cx, p, node)?,
        PolicyConfig::Cache(c) => {
            let max_entries = c.max_entries.unwrap_or(10_000);
            if max_entries == 0 {
                cx.sink.at(
                    loc(node, "max_entries"),
                    "`max_entries` must be at least 1",
                    "remove the policy to cache nothing",
                );
                return None;
            }
            let max_object_bytes = c.max_object_bytes.unwrap_or(1 << 20);
            let key_node = get(node, "key").unwrap_or(node);
            let key_query = match c.key.as_ref().and_then(|k| k.query.as_ref()) {
                None => CacheKeyQuery::All,
                Some(CacheKeyQueryConfig::Word(w)) if w == "all" => CacheKeyQuery::All,
                Some(CacheKeyQueryConfig::Word(w)) if w == "none" => CacheKeyQuery::None,
                Some(CacheKeyQueryConfig::Word(w)) => {
                    cx.sink.at(
                        loc(key_node, "query"),
                        format!("`{w}` is not a query key setting"),
                        "use `all`, `none` or a list of parameter names such as `[page, size]`",
                    );
                    return None;
                }
                Some(CacheKeyQueryConfig::Names(n)) => {
                    let mut n = n.clone();
                    n.sort();
                    n.dedup();
                    CacheKeyQuery::Only(n)
                }
            };
            let mut key_headers = Vec::new();
            for h in c.key.iter().flat_map(|k| &k.headers) {
                match HeaderName::try_from(h.as_str()) {
                    Ok(n) => key_headers.push(n),
                    Err(_) => {
                        cx.sink.at(
                            loc(key_node, "headers"),
                            format!("invalid header name `{h}`"),
                            "use letters, digits and `-`",
                        );
                        return None;
                    }
                }
            }
            Policy::Cache(CachePolicy {
                slot: cx.slot_for(node),
                max_entries,
                max_object_bytes,
                key_query,
                key_headers,
                fingerprint: fnv(
                    format!("cache{max_entries}/{max_object_bytes}").as_bytes(),
                    FNV_START,
                ),
            })
        }
        PolicyConfig::XmlJson(x) => {
            let dir = |d: Option<XmlDirectionConfig>, default: XmlDirection| match d {
                None => default,
                Some(XmlDirectionConfig::JsonToXml) => XmlDirection::JsonToXml,
                Some(XmlDirectionConfig::XmlToJson) => XmlDirection::XmlToJson,
                Some(XmlDirectionConfig::None) => XmlDirection::None,
            };
            let root = x.root.clone().unwrap_or_else(|| "root".into());
            if !portico_translate::xml::is_xml_name(&root) || root.contains(':') {
                cx.sink.at(
                    loc(node, "root"),
                    format!("`{root}` is not an XML element name"),
                    "use letters, digits, `_`, `-` and `.`, starting with a letter",
                );
                return None;
            }
            for prefix in x.namespaces.keys() {
                if !prefix.is_empty()
                    && (!portico_translate::xml::is_xml_name(prefix) || prefix.contains(':'))
                {
                    cx.sink.at(
                        loc(node, "namespaces"),
                        format!("`{prefix}` is not a namespace prefix"),
                        "use letters, digits, `_`, `-` and `.`, or `\"\"` for the default namespace",
                    );
                    return None;
                }
            }
            let max_bytes = x.max_bytes.unwrap_or(1 << 20);
            let max_depth = x.max_depth.unwrap_or(64);
            let max_attributes = x.max_attributes.unwrap_or(256);
            for (key, value) in [
                ("max_bytes", max_bytes),
                ("max_depth", u64::from(max_depth)),
                ("max_attributes", u64::from(max_attributes)),
            ] {
                if value == 0 {
                    cx.sink.at(
                        loc(node, key),
                        "the limit must be at least 1",
                        "leave it out for the default (1048576 bytes, 64 levels, 256 attributes)",
                    );
                    return None;
                }
            }
            Policy::XmlJson(Arc::new(XmlJsonPolicy {
                request: dir(x.request, XmlDirection::JsonToXml),
                response: dir(x.response, XmlDirection::XmlToJson),
                root,
                namespaces: x
                    .namespaces
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                max_bytes,
                limits: portico_translate::xml::Limits {
                    max_depth: max_depth as usize,
                    max_bytes: max_bytes as usize,
                    max_attributes: max_attributes as usize,
                },
            }))
        }
        PolicyConfig::JsonTransform(j) => {
            let remove = if j.remove.is_empty() {
                None
            } else {
                match portico_translate::shape::Fields::parse(j.remove.iter().map(String::as_str)) {
                    Some(f) => Some(f),
                    None => {
                        cx.sink.at(
                            loc(node, "remove"),
                            "`remove` has an empty path",
                            "write dotted paths such as `debug` or `user.password_hash`",
                        );
                        return None;
                    }
                }
            };
            let mut status = Vec::new();
            for (from, to) in &j.status {
                match (StatusCode::from_u16(*from), StatusCode::from_u16(*to)) {
                    (Ok(f), Ok(t)) if (100..600).contains(from) && (200..600).contains(to) => {
                        status.push((f, t))
                    }
                    _ => {
                        cx.sink.at(
                            loc(node, "status"),
                            format!("`{from}: {to}` is not a status rewrite"),
                            "map one HTTP status (100–599) to another (200–599), as in `201: 200`",
                        );
                        return None;
                    }
                }
            }
            Policy::JsonTransform(Arc::new(JsonTransformPolicy {
                sparse_fieldsets: j.sparse_fieldsets,
                remove,
                rename: j
                    .rename
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                set: j.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                status,
                max_bytes: j.max_bytes.unwrap_or(1 << 20),
            }))
        }
        PolicyConfig::RequestDecompression(d) => {
            let max = d.max_bytes.unwrap_or(8 << 20);
            if max == 0 {
                cx.sink.at(
                    loc(node, "max_bytes"),
                    "`max_bytes` must be at least 1",
                    "give the largest decoded body to accept, e.g. 8388608",
                );
                return None;
            }
            Policy::RequestDecompression(max)
        }
        PolicyConfig::Compression(c) => {
            let mut codings = Vec::new();
            for a in &c.algorithms {
                let coding = match a {
                    crate::file::CodingConfig::Br => Coding::Br,
                    crate::file::CodingConfig::Zstd => Coding::Zstd,
                    crate::file::CodingConfig::Gzip => Coding::Gzip,
                };
                if !codings.contains(&coding) {
                    codings.push(coding);
                }
            }
            if codings.is_empty() {
                codings = vec![Coding::Br, Coding::Zstd, Coding::Gzip];
            }
            let mut content_types = Vec::new();
            for (i, t) in c.content_types.iter().enumerate() {
                let t = t.trim().to_ascii_lowercase();
                if t.split_once('/')
                    .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
                {
                    cx.sink.at(
                        item_loc(node, "content_types", i),
                        format!("`{t}` is not a media type"),
                        "write `type/subtype`, or `type/*` for all of a type",
                    );
                    return None;
                }
                content_types.push(t);
            }
            Policy::Compression(Arc::new(CompressionPolicy {
                codings,
                min_bytes: c.min_bytes.unwrap_or(1024),
                content_types,
            }))
        }
        PolicyConfig::ConcurrencyLimit(c) => {
            if c.max_in_flight == 0 {
                cx.sink.at(
                    loc(node, "max_in_flight"),
                    "`max_in_flight` must be at least 1",
                    "to refuse every request, use a route with `respond: { status: 503 }`",
                );
                return None;
            }
            let key = limit_key(cx, c.key.clone().unwrap_or(LimitKeyConfig::Route), node)?;
            let adaptive = match &c.adaptive {
                None => None,
                Some(a) => {
                    let anode = get(node, "adaptive").unwrap_or(node);
                    let min = a.min_in_flight.unwrap_or(1);
                    if key != LimitKey::Route {
                        cx.sink.at(
                            loc(node, "key"),
                            "an `adaptive` cap is kept per route; it cannot be split by key",
                            "remove `key` (or use `key: route`), or drop `adaptive`",
                        );
                        return None;
                    }
                    if a.target_latency.0.is_zero() {
                        cx.sink.at(
                            loc(anode, "target_latency"),
                            "`target_latency` must be greater than 0",
                            "use the latency a healthy upstream stays under, such as `250ms`",
                        );
                        return None;
                    }
                    if min == 0 || min > c.max_in_flight {
                        cx.sink.at(
                            loc(anode, "min_in_flight"),
                            format!(
                                "`min_in_flight` must be between 1 and `max_in_flight` ({})",
                                c.max_in_flight
                            ),
                            "remove it for the default, 1",
                        );
                        return None;
                    }
                    Some((a.target_latency.0, min))
                }
            };
            let slot = cx.slot_for(node);
            let fingerprint = fnv(
                format!("{key:?}{}{adaptive:?}", c.max_in_flight).as_bytes(),
                FNV_START,
            );
            Policy::ConcurrencyLimit(ConcurrencyPolicy {
                slot,
                max_in_flight: c.max_in_flight,
                key,
                adaptive,
                fingerprint,
            })
        }
        PolicyConfig::Headers(h) => Policy::Headers(HeadersPolicy {
            request: compile_header_ops(cx, &h.request, get(node, "request").unwrap_or(node)),
            response: compile_header_ops(cx, &h.response, get(node, "response").unwrap_or(node)),
        }),
        PolicyConfig::RateLimit(r) => {
            if r.limits.is_empty() {
                cx.sink.at(
                    loc(node, "limits"),
                    "`limits` is empty",
                    "add one, such as `{ requests: 100, per: 1m }`",
                );
                return None;
            }
            let mut limits = Vec::new();
            for (i, l) in r.limits.iter().enumerate() {
                let at = item_loc(node, "limits", i);
                let sliding = l.algorithm == Some(LimitAlgorithmConfig::SlidingWindow);
                if sliding && l.burst.is_some() {
                    cx.sink.at(
                        at,
                        "`burst` applies to token-bucket limits, not `sliding_window`",
                        "remove `burst`: a sliding window allows `requests` in any span of `per`",
                    );
                    continue;
                }
                if sliding && l.per.0 < Duration::from_millis(1) {
                    cx.sink.at(
                        at,
                        "a sliding window must be at least 1ms",
                        "use a window such as `1m` or `24h`",
                    );
                    continue;
                }
                let burst = l.burst.unwrap_or(l.requests);
                if l.requests == 0 || burst == 0 || l.per.0.is_zero() {
                    cx.sink.at(
                        at,
                        "a limit needs `requests`, `per` and `burst` above 0",
                        "for example `{ requests: 10, per: 1s, burst: 20 }`",
                    );
                    continue;
                }
                limits.push(Limit {
                    requests: l.requests,
                    per: l.per.0,
                    burst,
                    sliding,
                });
            }
            let key = limit_key(cx, r.key.clone().unwrap_or(LimitKeyConfig::ClientIp), node)?;
            let store = if r.store == Some(LimitStoreConfig::Redis) {
                if !cx.have_redis {
                    cx.sink.at(
                        loc(node, "store"),
                        "`store: redis` needs the top-level `redis` section",
                        "add `redis: { url: \"redis://127.0.0.1:6379\" }`",
                    );
                    return None;
                }
                if r.batch == Some(0) {
                    cx.sink.at(
                        loc(node, "batch"),
                        "`batch` must be at least 1",
                        "remove it for one round trip per request",
                    );
                    return None;
                }
                LimitStore::Redis {
                    fail_open: r.on_store_failure != Some(StoreFailureConfig::FailClosed),
                    batch: r.batch.unwrap_or(1),
                }
            } else {
                for (key, set) in [
                    ("on_store_failure", r.on_store_failure.is_some()),
                    ("batch", r.batch.is_some()),
                ] {
                    if set {
                        cx.sink.at(
                            loc(node, key),
                            format!("`{key}` applies only with `store: redis`"),
                            "remove it, or add `store: redis`",
                        );
                        return None;
                    }
                }
                LimitStore::Local
            };
            let slot = cx.slot_for(node);
            let fingerprint = fnv(format!("{key:?}{limits:?}{store:?}").as_bytes(), FNV_START);
            Policy::RateLimit(RateLimitPolicy {
                slot,
                key,
                limits,
                hide_headers: r.hide_headers,
                store,
                fingerprint,
            })
        }
    };
    (cx.sink.out.len() == before).then_some(policy)
}

/// A `rate_limit` policy's counters belong to where it is written: a route's to that route
/// alone, a global one (`route: None`) to all routes together. The fingerprint names the
/// counters (kept across reloads when it is unchanged; part of the keys in Redis), so it takes
/// the route and the policy's place among the `rate_limit` policies there: the same limits
/// written on two routes, or twice on one, never share a budget.
pub(super) fn scope_rate_limit(
    p: &mut Policy,
    route: Option<&str>,
    nth: &mut usize,
    shared: &std::collections::HashMap<usize, String>,
) {
    if let Policy::RateLimit(rl) = p {
        let scope = match (shared.get(&rl.slot), route) {
            // One policy node copied into several routes: one scope for all its copies.
            (Some(s), _) => s.clone(),
            (None, Some(name)) => format!("route {name} #{nth}"),
            (None, None) => format!("global #{nth}"),
        };
        rl.fingerprint = fnv(scope.as_bytes(), rl.fingerprint);
        *nth += 1;
    }
}
