//! One route: its name, match (host, path, methods, headers, query), action, policies and
//! deprecation, with the route kinds (`soap`, `grpc_transcode`, `aggregate`) checked against
//! the rest of it.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};

use crate::canon::{EscapedSlashes, PathOptions, PathParameters};
use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node, NodeKind, suggest};

use super::action::compile_action;
use super::aggregate::compile_aggregate;
use super::ctx::{Ctx, get, item_loc, loc};
use super::policy::{check_chain, compile_policy, scope_rate_limit};
use super::soap::compile_soap;
use super::transcode::compile_transcode;

#[allow(clippy::too_many_arguments)]
pub(super) fn compile_route(
    cx: &mut Ctx<'_>,
    index: usize,
    name: String,
    cfg: &RouteConfig,
    node: &Node,
    upstreams: &HashMap<String, usize>,
    upstream_specs: &[Arc<Upstream>],
    global_policies: &[Policy],
) -> Option<Route> {
    let errors_before = cx.sink.out.len();
    let mnode = get(node, "match").unwrap_or(node);

    let mut hosts = Vec::new();
    for (i, h) in cfg.matches.hosts.iter().enumerate() {
        let at = item_loc(mnode, "hosts", i);
        let h = h.to_ascii_lowercase();
        let (pattern, bare) = match h.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_owned()),
            None => (HostPattern::Exact(h.clone()), h.clone()),
        };
        if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
            cx.sink.at(at, format!("invalid host `{h}`"), "write a name (`api.example.com`) or a leading wildcard (`*.example.com`), without port");
        } else {
            hosts.push(pattern);
        }
    }

    let (path, template_params) = match &cfg.matches.path {
        None => (PathPattern::Any, Vec::new()),
        Some(p) => {
            let at = loc(mnode, "path");
            match compile_path(p) {
                Ok(pp) => {
                    let params = match &pp {
                        PathPattern::Template(t) => t.params.clone(),
                        _ => Vec::new(),
                    };
                    (pp, params)
                }
                Err((msg, hint)) => {
                    cx.sink.at(at, msg, hint);
                    (PathPattern::Any, Vec::new())
                }
            }
        }
    };

    let mut methods = Vec::new();
    for (i, m) in cfg.matches.methods.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(m) if !methods.contains(&m) => methods.push(m),
            Ok(_) => {}
            Err(_) => cx.sink.at(
                item_loc(mnode, "methods", i),
                format!("invalid method `{m}`"),
                "use GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or another token",
            ),
        }
    }

    let mut headers = Vec::new();
    for (i, h) in cfg.matches.headers.iter().enumerate() {
        let at = item_loc(mnode, "headers", i);
        let Some(test) = compile_value_test(cx, h, at, true) else {
            continue;
        };
        match HeaderName::try_from(h.name.as_str()) {
            Ok(name) => headers.push(HeaderCondition { name, test }),
            Err(_) => cx.sink.at(
                at,
                format!("invalid header name `{}`", h.name),
                "use letters, digits and `-`",
            ),
        }
    }
    let mut cookies = Vec::new();
    for (i, c) in cfg.matches.cookies.iter().enumerate() {
        let at = item_loc(mnode, "cookies", i);
        if c.media_type.is_some() {
            cx.sink.at(
                at,
                format!(
                    "`media_type` applies to headers, not to the cookie `{}`",
                    c.name
                ),
                "use `exact`, `regex` or `present`",
            );
            continue;
        }
        if let Some(test) = compile_value_test(cx, c, at, false) {
            cookies.push(QueryCondition {
                name: c.name.clone(),
                test,
            });
        }
    }
    let mut query = Vec::new();
    for (i, q) in cfg.matches.query.iter().enumerate() {
        let at = item_loc(mnode, "query", i);
        if let Some(test) = compile_value_test(cx, q, at, false) {
            query.push(QueryCondition {
                name: q.name.clone(),
                test,
            });
        }
    }

    let actions = [
        cfg.upstream.is_some(),
        !cfg.split.is_empty(),
        cfg.respond.is_some(),
        cfg.redirect.is_some(),
        cfg.aggregate.is_some(),
    ];
    let action = match actions.iter().filter(|a| **a).count() {
        0 => {
            cx.sink.at(
                node.loc,
                format!("route `{name}` has no action"),
                "add `upstream: NAME`, `split:`, `respond:`, `redirect:` or `aggregate:`",
            );
            None
        }
        1 if cfg.aggregate.is_some() => compile_aggregate(
            cx,
            cfg.aggregate.as_ref().expect("checked"),
            get(node, "aggregate").unwrap_or(node),
            &template_params,
            upstreams,
        )
        .map(|a| Action::Aggregate(Box::new(a))),
        1 => compile_action(cx, cfg, node, &path, &template_params, upstreams),
        _ => {
            cx.sink.at(
                node.loc,
                format!(
                    "route `{name}` has more than one of `upstream`, `split`, `respond`, `redirect`, `aggregate`"
                ),
                "keep exactly one",
            );
            None
        }
    };
    if cfg.rewrite.is_some() && cfg.upstream.is_none() && cfg.split.is_empty() {
        cx.sink.at(
            loc(node, "rewrite"),
            "`rewrite` applies only to routes with an `upstream`",
            "remove `rewrite`, or route to an upstream",
        );
    }

    let mut policies = Vec::new();
    let policy_nodes: Vec<&Node> = (0..cfg.policies.len())
        .map(|i| match get(node, "policies").map(|n| &n.kind) {
            Some(NodeKind::Seq(items)) => &items[i],
            _ => node,
        })
        .collect();
    let global_auth = cx.global_auth;
    check_chain(cx, &cfg.policies, &policy_nodes, global_auth);
    let mut nth = 0;
    for (p, pnode) in cfg.policies.iter().zip(&policy_nodes) {
        let pnode: &Node = pnode;
        if let Some(mut p) = compile_policy(cx, p, pnode) {
            scope_rate_limit(&mut p, Some(&name), &mut nth, &cx.shared_scopes);
            policies.push(p);
        }
    }

    if cfg.grpc_web {
        if cfg.grpc_transcode.is_some() {
            cx.sink.at(
                loc(node, "grpc_web"),
                "`grpc_web` and `grpc_transcode` cannot be combined on one route",
                "give gRPC-Web clients their own route (match on their path prefix)",
            );
        } else if cfg.upstream.is_none() && cfg.split.is_empty() {
            cx.sink.at(
                loc(node, "grpc_web"),
                "`grpc_web` needs the route to have an `upstream` (or `split`)",
                "route to the gRPC service's upstream",
            );
        } else if let Some(name) = cfg
            .upstream
            .iter()
            .chain(cfg.split.iter().map(|s| &s.upstream))
            .find(|n| {
                upstreams
                    .get(*n)
                    .and_then(|i| upstream_specs.get(*i))
                    .is_some_and(|u| u.targets.iter().any(|t| t.scheme == Scheme::Http))
            })
        {
            cx.sink.at(
                loc(node, "grpc_web"),
                format!("upstream `{name}` has `http://` targets; gRPC needs HTTP/2"),
                "write its targets as `h2c://host:port` (or `https://` for TLS)",
            );
        }
    }
    let transcode = match &cfg.grpc_transcode {
        None => None,
        Some(g) => compile_transcode(
            cx,
            g,
            get(node, "grpc_transcode").unwrap_or(node),
            cfg,
            upstreams,
            upstream_specs,
        ),
    };

    let soap = match &cfg.soap {
        None => None,
        Some(s) => compile_soap(cx, s, get(node, "soap").unwrap_or(node), cfg, &path),
    };

    let mirror = match &cfg.mirror {
        None => None,
        Some(m) => {
            let mnode = get(node, "mirror").unwrap_or(node);
            let percent = m.percent.unwrap_or(100);
            if !(1..=100).contains(&percent) {
                cx.sink.at(
                    loc(mnode, "percent"),
                    format!("`percent` is {percent}; it must be from 1 to 100"),
                    "remove `mirror` to copy nothing",
                );
            }
            match upstreams.get(&m.upstream) {
                Some(&u) => Some((u, percent)),
                None => {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    cx.sink.at(
                        loc(mnode, "upstream"),
                        format!("unknown upstream `{}`", m.upstream),
                        suggest(&m.upstream, &known),
                    );
                    None
                }
            }
        }
    };
    if cfg.mirror.is_some() && cfg.upstream.is_none() && cfg.split.is_empty() {
        cx.sink.at(
            loc(node, "mirror"),
            "`mirror` applies only to routes that proxy (`upstream` or `split`)",
            "remove `mirror`, or route to an upstream",
        );
    }
    let response_headers = match &cfg.deprecation {
        Some(d) => compile_deprecation(cx, d, get(node, "deprecation").unwrap_or(node)),
        None => Vec::new(),
    };

    let sample_ratio = super::tracing::compile_route_tracing(cx, cfg.tracing.as_ref(), node);

    if cx.sink.out.len() != errors_before {
        return None;
    }
    Some(Route {
        index,
        name: name.into(),
        hosts,
        path,
        path_any_case: cfg.matches.case_sensitive == Some(false),
        methods,
        headers,
        query,
        cookies,
        action: action?,
        timeout: cfg.timeout.map(|d| d.0),
        response_headers,
        mirror,
        transcode,
        grpc_web: cfg.grpc_web,
        soap,
        sample_ratio,
        server_timing: cfg.tracing.as_ref().is_some_and(|t| t.server_timing),
        effective: Effective::resolve(&policies, global_policies),
        contract: None,
        operation: None,
        policies: policies.into(),
    })
}

fn compile_deprecation(
    cx: &mut Ctx<'_>,
    d: &DeprecationConfig,
    node: &Node,
) -> Vec<(HeaderName, HeaderValue)> {
    let hint = "write a date (`2026-06-30`) or a UTC time (`2026-06-30T12:00:00Z`)";
    let mut out = Vec::new();
    match crate::dates::parse(&d.since) {
        // RFC 9745: a structured-field date, seconds since the epoch.
        Some(t) => out.push((
            HeaderName::from_static("deprecation"),
            HeaderValue::from_str(&format!("@{t}")).expect("ascii"),
        )),
        None => cx.sink.at(
            loc(node, "since"),
            format!("invalid date `{}`", d.since),
            hint,
        ),
    }
    if let Some(s) = &d.sunset {
        match crate::dates::parse(s) {
            // RFC 8594: an HTTP-date.
            Some(t) => out.push((
                HeaderName::from_static("sunset"),
                HeaderValue::from_str(&crate::dates::http_date(t)).expect("ascii"),
            )),
            None => cx
                .sink
                .at(loc(node, "sunset"), format!("invalid date `{s}`"), hint),
        }
    }
    if let Some(link) = &d.link {
        match HeaderValue::try_from(format!("<{link}>; rel=\"deprecation\"; type=\"text/html\"")) {
            Ok(v) if !link.contains(['<', '>', ' ']) => out.push((http::header::LINK, v)),
            _ => cx.sink.at(
                loc(node, "link"),
                format!("invalid link `{link}`"),
                "write an absolute URL",
            ),
        }
    }
    out
}

fn compile_value_test(
    cx: &mut Ctx<'_>,
    v: &ValueMatchConfig,
    at: Loc,
    header: bool,
) -> Option<ValueTest> {
    let set = [
        v.exact.is_some(),
        v.regex.is_some(),
        v.present.is_some(),
        v.media_type.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        cx.sink.at(
            at,
            format!(
                "condition on `{}` needs exactly one of `exact`, `regex`, `present`, `media_type`",
                v.name
            ),
            "for example `{ name: x-version, exact: \"2\" }`",
        );
        return None;
    }
    if let Some(m) = &v.media_type {
        if !header {
            cx.sink.at(
                at,
                format!(
                    "`media_type` applies to headers, not to the query parameter `{}`",
                    v.name
                ),
                "move the condition to `headers`, or use `exact` or `regex`",
            );
            return None;
        }
        return match MediaType::parse(m) {
            Some(mt) if !mt.params.iter().any(|(k, _)| k == "q") => Some(ValueTest::MediaType(mt)),
            Some(_) => {
                cx.sink.at(
                    at,
                    format!("media type `{m}` names a `q` weight"),
                    "leave `q` out: any listed type not refused with `q=0` matches",
                );
                None
            }
            None => {
                cx.sink.at(
                    at,
                    format!("invalid media type `{m}`"),
                    "write `type/subtype` with optional `; name=value` parameters, e.g. `application/vnd.acme.v2+json` or `application/json; version=2`",
                );
                None
            }
        };
    }
    if let Some(e) = &v.exact {
        return Some(ValueTest::Exact(e.clone()));
    }
    if let Some(p) = v.present {
        return Some(ValueTest::Present(p));
    }
    let r = v.regex.as_deref().unwrap_or_default();
    match regex::RegexBuilder::new(r).size_limit(1 << 20).build() {
        Ok(re) => Some(ValueTest::Regex(re)),
        Err(e) => {
            let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
            cx.sink.at(
                at,
                format!("invalid regex `{r}`: {first}"),
                "the syntax is that of the Rust regex crate (RE2-like; no look-around)",
            );
            None
        }
    }
}

pub(crate) fn compile_path(p: &PathMatchConfig) -> Result<PathPattern, (String, String)> {
    let check = |s: &str| -> Result<(), (String, String)> {
        if !s.starts_with('/') {
            return Err((
                format!("path `{s}` must start with `/`"),
                format!("write `/{s}`"),
            ));
        }
        if s.contains(['?', '#'])
            || s.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err((
                format!("path `{s}` contains a character not allowed in a path"),
                "match query parameters with `query:`; percent-encode spaces".into(),
            ));
        }
        // Requests are matched in their canonical form (`canon`), so a pattern written any
        // other way would never match: say which form to write.
        let lenient = PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            merge_slashes: false,
            path_parameters: PathParameters::Keep,
        };
        match crate::canon::canonicalize(s, &lenient) {
            Ok(c) if c == s => {}
            Ok(c) => {
                return Err((
                    format!("path `{s}` is not in canonical form; requests are matched as `{c}`"),
                    format!("write `{c}`"),
                ));
            }
            Err(e) => {
                return Err((
                    format!("path `{s}` cannot match a request: {}", e.detail()),
                    "write the path as clients send it, percent-encoding only what is not a letter, digit or `-._~`".into(),
                ));
            }
        }
        Ok(())
    };
    match p {
        PathMatchConfig::Exact(s) => {
            check(s)?;
            if s.contains(['{', '}']) {
                return Err((
                    format!("exact path `{s}` contains `{{`"),
                    "use `template:` for paths with parameters".into(),
                ));
            }
            Ok(PathPattern::Exact(s.clone()))
        }
        PathMatchConfig::Prefix(s) => {
            check(s)?;
            if s.contains(['{', '}']) {
                return Err((
                    format!("prefix `{s}` contains `{{`"),
                    "use `template:` for paths with parameters".into(),
                ));
            }
            let trimmed = s.trim_end_matches('/');
            Ok(PathPattern::Prefix(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            }))
        }
        PathMatchConfig::Template(s) => {
            check(s)?;
            let mut segments = Vec::new();
            let mut params: Vec<String> = Vec::new();
            let parts: Vec<&str> = s[1..].split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    let (catch_all, name) = match inner.strip_prefix('*') {
                        Some(n) => (true, n),
                        None => (false, inner),
                    };
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err((
                            format!("invalid parameter `{{{inner}}}` in `{s}`"),
                            "name parameters with letters, digits and `_`, as in `{id}`".into(),
                        ));
                    }
                    if params.iter().any(|p| p == name) {
                        return Err((
                            format!("parameter `{name}` appears twice in `{s}`"),
                            "give each parameter its own name".into(),
                        ));
                    }
                    if catch_all && i + 1 != parts.len() {
                        return Err((
                            format!("`{{*{name}}}` must be the last segment of `{s}`"),
                            "a wildcard takes the rest of the path, so nothing can follow it"
                                .into(),
                        ));
                    }
                    params.push(name.to_owned());
                    segments.push(if catch_all {
                        Segment::CatchAll
                    } else {
                        Segment::Param
                    });
                } else if part.contains(['{', '}']) {
                    return Err((
                        format!("`{part}` in `{s}` mixes text and a parameter"),
                        "a parameter must be a whole segment, as in `/files/{name}`".into(),
                    ));
                } else {
                    segments.push(Segment::Literal((*part).to_owned()));
                }
            }
            if params.is_empty() {
                return Err((
                    format!("template `{s}` has no parameters"),
                    "use `exact:` for a fixed path".into(),
                ));
            }
            Ok(PathPattern::Template(Template {
                source: s.clone(),
                segments,
                params,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_must_start_with_a_slash() {
        let Err((msg, hint)) = compile_path(&PathMatchConfig::Prefix("api".into())) else {
            panic!("`api` compiled")
        };
        assert_eq!(msg, "path `api` must start with `/`");
        assert_eq!(hint, "write `/api`");
    }

    #[test]
    fn an_exact_path_has_no_parameters() {
        let Err((msg, hint)) = compile_path(&PathMatchConfig::Exact("/users/{id}".into())) else {
            panic!("`/users/{{id}}` compiled as an exact path")
        };
        assert_eq!(msg, "exact path `/users/{id}` contains `{`");
        assert_eq!(hint, "use `template:` for paths with parameters");
    }

    #[test]
    fn a_path_must_be_canonical() {
        let Err((msg, hint)) = compile_path(&PathMatchConfig::Prefix("/a/../b".into())) else {
            panic!("`/a/../b` compiled")
        };
        assert!(msg.contains("is not in canonical form"), "{msg}");
        assert_eq!(hint, "write `/b`");
    }
}
