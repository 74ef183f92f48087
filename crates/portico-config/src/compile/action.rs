//! What a route does with a matched request: proxy it (path and query rewrites, splits,
//! mirrors, header operations), respond with a fixed response, or redirect.

use std::collections::HashMap;

use http::{HeaderValue, StatusCode};

use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node, NodeKind, suggest};

use super::ctx::{Ctx, get, item_loc, loc};
use super::values::header_pairs;

/// The `i`th item node of a route's `split` list (or the route node).
fn split_item(node: &Node, i: usize) -> Node {
    match get(node, "split").map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).cloned().unwrap_or_else(|| node.clone()),
        _ => node.clone(),
    }
}

/// Compiles `/v2/users/{id}` against a route's parameter names.
fn compile_placeholders(text: &str, params: &[String]) -> Result<PathRewrite, (String, String)> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(RewritePart::Literal(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err((
                format!("unclosed `{{` in `{text}`"),
                "close the placeholder, as in `{id}`".into(),
            ));
        };
        let name = &rest[open + 1..open + close];
        let name = name.strip_prefix('*').unwrap_or(name);
        match params.iter().position(|p| p == name) {
            Some(i) => parts.push(RewritePart::Param(i)),
            None => {
                let known: Vec<&str> = params.iter().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "the route's path has no parameters; use a `template:` path to capture some"
                        .to_owned()
                } else {
                    suggest(name, &known)
                };
                return Err((
                    format!("`{{{name}}}` is not a parameter of this route's path"),
                    hint,
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(RewritePart::Literal(rest.to_owned()));
    }
    Ok(PathRewrite { parts })
}

pub(super) fn compile_action(
    cx: &mut Ctx<'_>,
    cfg: &RouteConfig,
    node: &Node,
    path: &PathPattern,
    params: &[String],
    upstreams: &HashMap<String, usize>,
) -> Option<Action> {
    if cfg.upstream.is_some() || !cfg.split.is_empty() {
        // usize::MAX: the upstream is declared but invalid; its error is already reported and
        // the config will not be used, but the rest of the route is still checked.
        let resolve = |cx: &mut Ctx<'_>, up: &str, at: Loc| -> Option<usize> {
            let found = upstreams.get(up).copied();
            if found.is_none() {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "define it under `upstreams:`".to_owned()
                } else {
                    suggest(up, &known)
                };
                cx.sink.at(at, format!("unknown upstream `{up}`"), hint);
            }
            found
        };
        let targets: Vec<(usize, u32)> = match &cfg.upstream {
            Some(up) => vec![(resolve(cx, up, loc(node, "upstream"))?, 1)],
            None => {
                let mut list = Vec::new();
                for (i, part) in cfg.split.iter().enumerate() {
                    let at = get(&split_item(node, i), "upstream")
                        .map_or(item_loc(node, "split", i), |n| n.loc);
                    if list
                        .iter()
                        .any(|(_, _, name): &(usize, u32, &str)| *name == part.upstream)
                    {
                        cx.sink.at(
                            at,
                            format!("upstream `{}` appears twice in `split`", part.upstream),
                            "give each upstream one entry with the total weight",
                        );
                        return None;
                    }
                    list.push((
                        resolve(cx, &part.upstream, at)?,
                        part.weight,
                        part.upstream.as_str(),
                    ));
                }
                if list.iter().all(|(_, w, _)| *w == 0) {
                    cx.sink.at(
                        loc(node, "split"),
                        "the weights in `split` are all 0",
                        "give at least one upstream a weight above 0",
                    );
                    return None;
                }
                list.into_iter().map(|(u, w, _)| (u, w)).collect()
            }
        };
        let total_weight = targets.iter().map(|(_, w)| *w).sum();
        let rw = cfg.rewrite.as_ref();
        let rnode = get(node, "rewrite").unwrap_or(node);
        let strip_prefix = match (rw.is_some_and(|r| r.strip_prefix), path) {
            (false, _) => None,
            (true, PathPattern::Prefix(p)) => Some(if p == "/" { 0 } else { p.len() }),
            (true, _) => {
                cx.sink.at(
                    loc(rnode, "strip_prefix"),
                    "`strip_prefix` needs a `prefix:` path match",
                    "use `rewrite.path` with a template to reshape other paths",
                );
                return None;
            }
        };
        if strip_prefix.is_some() && rw.is_some_and(|r| r.path.is_some()) {
            cx.sink.at(
                loc(rnode, "path"),
                "`strip_prefix` and `path` cannot both be set",
                "keep one of them",
            );
            return None;
        }
        let path_rw = match rw.and_then(|r| r.path.as_deref()) {
            Some(p) if !p.starts_with('/') => {
                cx.sink.at(
                    loc(rnode, "path"),
                    format!("rewrite path `{p}` must start with `/`"),
                    format!("write `/{p}`"),
                );
                return None;
            }
            Some(p) => match compile_placeholders(p, params) {
                Ok(r) => Some(r),
                Err((m, h)) => {
                    cx.sink.at(loc(rnode, "path"), m, h);
                    return None;
                }
            },
            None => None,
        };
        let host = match rw.and_then(|r| r.host.as_deref()) {
            Some(h) => match HeaderValue::try_from(h) {
                Ok(v) if !h.is_empty() => Some(v),
                _ => {
                    cx.sink.at(
                        loc(rnode, "host"),
                        format!("invalid host `{h}`"),
                        "use a host name, optionally with `:port`",
                    );
                    return None;
                }
            },
            None => None,
        };
        // Names and values percent-encoded once, here.
        use portico_auth::basic::form_encode;
        let q = rw.and_then(|r| r.query.as_ref());
        let query_set: Vec<(String, String)> = q
            .iter()
            .flat_map(|q| &q.set)
            .map(|(k, v)| (form_encode(k), form_encode(v)))
            .collect();
        let query_remove: Vec<String> = q
            .iter()
            .flat_map(|q| q.remove.iter().chain(q.set.keys()))
            .map(|k| form_encode(k))
            .collect();
        if query_remove.iter().any(String::is_empty) {
            cx.sink.at(
                loc(rnode, "query"),
                "a query parameter name is empty",
                "name each parameter, e.g. `remove: [debug]`",
            );
            return None;
        }
        return Some(Action::Proxy(ProxyAction {
            upstreams: targets.into(),
            total_weight,
            strip_prefix,
            path: path_rw,
            host,
            query_remove,
            query_set,
        }));
    }
    if let Some(r) = &cfg.respond {
        let rnode = get(node, "respond").unwrap_or(node);
        let status = match StatusCode::from_u16(r.status.unwrap_or(200)) {
            Ok(s) if s.as_u16() >= 200 => s,
            _ => {
                cx.sink.at(
                    loc(rnode, "status"),
                    format!("invalid status {}", r.status.unwrap_or(0)),
                    "use a code from 200 to 599",
                );
                return None;
            }
        };
        let mut headers = Vec::new();
        let ct = r
            .content_type
            .as_deref()
            .unwrap_or("text/plain; charset=utf-8");
        match HeaderValue::try_from(ct) {
            Ok(v) => headers.push((http::header::CONTENT_TYPE, v)),
            Err(_) => cx.sink.at(
                loc(rnode, "content_type"),
                "invalid content type",
                "use a media type such as `application/json`",
            ),
        }
        let mut templated = Vec::new();
        headers.extend(header_pairs(
            cx,
            &r.headers,
            get(rnode, "headers").unwrap_or(rnode),
            &mut templated,
            false,
        ));
        if !templated.is_empty() {
            cx.sink.at(
                loc(rnode, "headers"),
                "`%{…}` variables are not available in `respond` headers",
                "use them in a `headers` policy, which runs for every request",
            );
        }
        return Some(Action::Respond(StaticResponse {
            status,
            body: bytes::Bytes::from(r.body.clone().unwrap_or_default()),
            headers,
        }));
    }
    let r = cfg.redirect.as_ref()?;
    let rnode = get(node, "redirect").unwrap_or(node);
    let status = r.status.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        cx.sink.at(
            loc(rnode, "status"),
            format!("{status} is not a redirect status"),
            "use 301, 302, 303, 307 or 308",
        );
        return None;
    }
    match compile_placeholders(&r.to, params) {
        Ok(to) => Some(Action::Redirect(RedirectAction {
            status: StatusCode::from_u16(status).ok()?,
            to,
        })),
        Err((m, h)) => {
            cx.sink.at(loc(rnode, "to"), m, h);
            None
        }
    }
}
