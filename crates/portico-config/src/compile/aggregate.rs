//! `aggregate` routes: one request fanned out to several backends, the replies merged.

use std::collections::HashMap;

use http::{HeaderName, Method, StatusCode};

use crate::ir::*;
use crate::tree::{Node, NodeKind, suggest};

use super::ctx::{Ctx, get, item_loc, loc};

pub(super) fn compile_aggregate(
    cx: &mut Ctx<'_>,
    cfg: &crate::file::AggregateConfig,
    node: &Node,
    params: &[String],
    upstreams: &HashMap<String, usize>,
) -> Option<Aggregate> {
    let errors_before = cx.sink.out.len();
    if cfg.backends.is_empty() {
        cx.sink.at(
            loc(node, "backends"),
            "`aggregate` needs at least one backend",
            "list the calls under `backends:`",
        );
        return None;
    }
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    let mut backends = Vec::new();
    for (i, b) in cfg.backends.iter().enumerate() {
        let bnode = get(node, "backends")
            .and_then(|n| match &n.kind {
                NodeKind::Seq(items) => items.get(i),
                _ => None,
            })
            .unwrap_or(node);
        // Names are placeholders' prefixes (`{name.field}`) and the answer's keys: only the
        // characters the docs promise, none that would need quoting or escaping there.
        if b.name.is_empty()
            || !b
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            cx.sink.at(
                loc(bnode, "name"),
                format!("invalid backend name `{}`", b.name),
                "use letters, digits, `-` and `_`",
            );
        } else if names[..i].contains(&b.name.as_str()) {
            cx.sink.at(
                loc(bnode, "name"),
                format!("backend name `{}` appears twice", b.name),
                "names are the keys of the answer; make them unique",
            );
        }
        let upstream = match upstreams.get(&b.upstream) {
            Some(u) => *u,
            None => {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                cx.sink.at(
                    loc(bnode, "upstream"),
                    format!("unknown upstream `{}`", b.upstream),
                    suggest(&b.upstream, &known),
                );
                usize::MAX
            }
        };
        let method = match &b.method {
            None => Method::GET,
            Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    cx.sink.at(
                        loc(bnode, "method"),
                        format!("invalid method `{m}`"),
                        "for example GET or POST",
                    );
                    Method::GET
                }
            },
        };
        if !b.path.starts_with('/') {
            cx.sink.at(
                loc(bnode, "path"),
                format!("backend path `{}` must start with `/`", b.path),
                format!("write `/{}`", b.path),
            );
        }
        let mut parts = Vec::new();
        let mut after = Vec::new();
        let mut rest = b.path.as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(AggregatePart::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                cx.sink.at(
                    loc(bnode, "path"),
                    format!("unclosed `{{` in `{}`", b.path),
                    "close the placeholder, as in `{id}` or `{user.id}`",
                );
                break;
            };
            let inner = &rest[open + 1..open + close];
            match inner.split_once('.') {
                None => match params.iter().position(|p| p == inner) {
                    Some(i) => parts.push(AggregatePart::Param(i)),
                    None => cx.sink.at(
                        loc(bnode, "path"),
                        format!("`{{{inner}}}` is not a parameter of this route's path"),
                        "parameters come from a `template:` path; use `{backend.field}` for a value from another backend's answer",
                    ),
                },
                Some((other, field)) => match names.iter().position(|n| *n == other) {
                    Some(j) if j == i => cx.sink.at(
                        loc(bnode, "path"),
                        format!("backend `{}` uses its own answer", b.name),
                        "a backend can only use the answers of others",
                    ),
                    Some(j) => {
                        if !after.contains(&j) {
                            after.push(j);
                        }
                        parts.push(AggregatePart::Answer(
                            j,
                            field.split('.').map(str::to_owned).collect(),
                        ));
                    }
                    None => cx.sink.at(
                        loc(bnode, "path"),
                        format!("`{{{inner}}}` names no backend `{other}`"),
                        suggest(other, &names),
                    ),
                },
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(AggregatePart::Literal(rest.to_owned()));
        }
        let mut shaping = Shaping {
            extract: b.extract.clone(),
            rename: b
                .rename
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Shaping::default()
        };
        if b.extract
            .as_deref()
            .is_some_and(|e| e.is_empty() || e.split('.').any(str::is_empty))
        {
            cx.sink.at(
                loc(bnode, "extract"),
                "`extract` must be a dotted path such as `data.user`",
                "names joined by `.`; array indexes are numbers",
            );
        }
        for (key, list) in [("fields", &b.fields), ("exclude", &b.exclude)] {
            if list.is_empty() {
                continue;
            }
            match portico_translate::shape::Fields::parse(list.iter().map(String::as_str)) {
                Some(f) if key == "fields" => shaping.keep = Some(f),
                Some(f) => shaping.drop = Some(f),
                None => cx.sink.at(
                    loc(bnode, key),
                    format!("`{key}` has an empty path"),
                    "write dotted paths such as `id` or `address.city`",
                ),
            }
        }
        backends.push(AggregateBackend {
            cache_ttl: b.cache_ttl.map(|d| d.0).filter(|d| !d.is_zero()),
            shaping,
            name: b.name.as_str().into(),
            upstream,
            method,
            path: parts,
            timeout: b.timeout.map(|d| d.0),
            required: b.required.unwrap_or(true),
            merge: b.merge,
            after,
        });
    }
    // Dependencies must not go round in a circle.
    fn cycle(
        backends: &[AggregateBackend],
        at: usize,
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        if let Some(start) = path.iter().position(|p| *p == at) {
            return Some(path[start..].to_vec());
        }
        path.push(at);
        for d in &backends[at].after {
            if let Some(c) = cycle(backends, *d, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    for i in 0..backends.len() {
        if let Some(c) = cycle(&backends, i, &mut Vec::new()) {
            let names: Vec<&str> = c.iter().map(|j| &*backends[*j].name).collect();
            cx.sink.at(
                loc(node, "backends"),
                format!(
                    "backends depend on each other in a circle: {} → {}",
                    names.join(" → "),
                    names[0]
                ),
                "a backend can use only answers that do not depend on its own",
            );
            break;
        }
    }
    let partial_status = match cfg.partial_status.unwrap_or(206) {
        s @ (200 | 206 | 207) => StatusCode::from_u16(s).expect("valid"),
        other => {
            cx.sink.at(
                loc(node, "partial_status"),
                format!("`partial_status` is {other}; it must be 200, 206 or 207"),
                "206 (Partial Content) says clearly that part is missing",
            );
            StatusCode::PARTIAL_CONTENT
        }
    };
    let mut forward_headers = Vec::new();
    for (i, h) in cfg.forward_headers.iter().enumerate() {
        match HeaderName::try_from(h.as_str()) {
            Ok(n) => forward_headers.push(n),
            Err(_) => cx.sink.at(
                item_loc(node, "forward_headers", i),
                format!("invalid header name `{h}`"),
                "header names are tokens such as `authorization`",
            ),
        }
    }
    if cx.sink.out.len() != errors_before {
        return None;
    }
    Some(Aggregate {
        backends,
        partial_status,
        errors_key: cfg.errors_key.clone().unwrap_or_else(|| "_errors".into()),
        pass_through_client_errors: cfg.pass_through_client_errors,
        forward_headers,
        sparse_fieldsets: cfg.sparse_fieldsets.unwrap_or(true),
    })
}
