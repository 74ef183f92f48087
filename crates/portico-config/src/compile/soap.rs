//! `soap` routes: the WSDL (read from a file or fetched by URL) and the operations it offers.

use std::sync::Arc;

use crate::file::*;
use crate::ir::*;
use crate::tree::Node;

use super::ctx::{Ctx, get, loc, resolve};

pub(super) fn compile_soap(
    cx: &mut Ctx<'_>,
    s: &SoapConfig,
    snode: &Node,
    cfg: &RouteConfig,
    path: &PathPattern,
) -> Option<Arc<SoapRoute>> {
    if cfg.upstream.is_none() && cfg.split.is_empty() {
        cx.sink.at(
            snode.loc,
            "`soap` needs the route to have an `upstream` (or `split`)",
            "route to the SOAP service's upstream",
        );
        return None;
    }
    if cfg.grpc_transcode.is_some() || cfg.grpc_web || cfg.rewrite.is_some() {
        cx.sink.at(
            snode.loc,
            "`soap` cannot be combined with `grpc_transcode`, `grpc_web` or `rewrite`",
            "the SOAP endpoint's path comes from the WSDL (or `soap.path`); give other uses their own route",
        );
        return None;
    }
    let prefix = match path {
        PathPattern::Prefix(p) => p.trim_end_matches('/').to_owned(),
        PathPattern::Any => String::new(),
        _ => {
            cx.sink.at(
                snode.loc,
                "`soap` needs a `prefix:` path match",
                "match e.g. `path: { prefix: /calculator }`; operations are then `POST /calculator/OPERATION`",
            );
            return None;
        }
    };
    let at = loc(snode, "wsdl");
    let file = if s.wsdl.starts_with("http://") || s.wsdl.starts_with("https://") {
        s.wsdl.clone()
    } else {
        resolve(cx, &s.wsdl).to_string_lossy().into_owned()
    };
    let mut fetch = |loc: &str| {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            return crate::fetch::fetch_url(loc).map_err(|e| format!("cannot fetch it: {e}"));
        }
        // A size cap, as for fetched documents: `/dev/zero` is a file too.
        use std::io::Read;
        let mut buf = Vec::new();
        std::fs::File::open(loc)
            .and_then(|f| f.take(16 << 20).read_to_end(&mut buf))
            .map_err(|e| format!("cannot read it: {e}"))?;
        Ok(buf)
    };
    let wsdl = match portico_translate::wsdl::load(&file, &mut fetch, Default::default()) {
        Ok(w) => w,
        Err(e) => {
            cx.sink.at(
                at,
                e.to_string(),
                "check the file with `portico soap inspect FILE`",
            );
            return None;
        }
    };
    let port = match wsdl.port(s.service.as_deref(), s.port.as_deref()) {
        Ok(p) => p.clone(),
        Err(m) => {
            cx.sink
                .at(snode.loc, m, "name the `service` and `port` to use");
            return None;
        }
    };
    let path_text = match &s.path {
        Some(p) => p.clone(),
        None => {
            // The path of the address, e.g. `/soap11` in `http://host:8080/soap11`.
            let after = port.address.split_once("://").map_or("", |(_, r)| r);
            match after.find('/') {
                Some(i) => after[i..].to_owned(),
                None => "/".to_owned(),
            }
        }
    };
    let Ok(upstream_path) = http::uri::PathAndQuery::try_from(path_text.as_str()) else {
        cx.sink.at(
            loc(snode, "path"),
            format!("`{path_text}` is not a valid path"),
            "write a path such as `/services/calculator`",
        );
        return None;
    };
    if !path_text.starts_with('/') {
        cx.sink.at(
            loc(snode, "path"),
            format!("`{path_text}` must start with `/`"),
            format!("write `/{path_text}`"),
        );
        return None;
    }
    let max_bytes = s.max_bytes.unwrap_or(4 << 20);
    if max_bytes == 0 {
        cx.sink.at(
            loc(snode, "max_bytes"),
            "`max_bytes` must be at least 1",
            "leave it out for the default (4194304)",
        );
        return None;
    }
    let mut bindings: Vec<SoapBinding> = Vec::new();
    let onode = get(snode, "operations").unwrap_or(snode);
    for (name, oc) in &s.operations {
        let at = get(onode, name).map_or(onode.loc, |n| n.loc);
        let Some(operation) = port.operations.iter().position(|o| &o.name == name) else {
            cx.sink.at(
                at,
                format!("`{name}` is not an operation of port `{}`", port.name),
                format!(
                    "the operations are {}",
                    port.operations
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        };
        let method = match http::Method::from_bytes(
            oc.method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        ) {
            Ok(m) => m,
            Err(_) => {
                cx.sink
                    .at(at, "invalid method", "use GET, POST, PUT, PATCH or DELETE");
                return None;
            }
        };
        if !oc.path.starts_with('/') {
            cx.sink.at(
                at,
                format!("`{}` must start with `/`", oc.path),
                format!("write `/{}` (it follows the route's prefix)", oc.path),
            );
            return None;
        }
        let mut segments = Vec::new();
        for seg in oc.path.trim_matches('/').split('/') {
            match seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
                    segments.push(SoapSegment::Param(p.to_owned()))
                }
                None if !seg.contains(['{', '}']) => {
                    segments.push(SoapSegment::Literal(seg.to_owned()))
                }
                _ => {
                    cx.sink.at(
                        at,
                        format!("`{seg}` in `{}` is not a segment", oc.path),
                        "write literal segments and whole-segment parameters such as `/people/{id}`",
                    );
                    return None;
                }
            }
        }
        if bindings
            .iter()
            .any(|b| b.method == method && b.segments == segments)
        {
            cx.sink.at(
                at,
                format!("{method} {} is bound to two operations", oc.path),
                "give each operation its own method or path",
            );
            return None;
        }
        bindings.push(SoapBinding {
            operation,
            method,
            segments,
            path: oc.path.clone(),
        });
    }
    Some(Arc::new(SoapRoute {
        bindings,
        wsdl: Arc::new(wsdl),
        port,
        prefix,
        path: upstream_path,
        token: s
            .ws_security
            .as_ref()
            .map(|w| portico_translate::soap::UsernameToken {
                username: w.username.clone(),
                password: w.password.clone(),
            }),
        max_bytes,
    }))
}
