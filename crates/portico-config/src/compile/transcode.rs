//! `grpc_transcode` routes: JSON over HTTP to a gRPC upstream, from a descriptor set.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;

use crate::file::*;
use crate::ir::*;
use crate::tree::Node;

use super::ctx::{Ctx, item_loc, loc, read_file};

pub(super) fn compile_transcode(
    cx: &mut Ctx<'_>,
    g: &crate::file::GrpcTranscodeConfig,
    gnode: &Node,
    route: &RouteConfig,
    upstreams: &HashMap<String, usize>,
    upstream_specs: &[Arc<Upstream>],
) -> Option<Arc<GrpcTranscode>> {
    if route.upstream.is_none() && route.split.is_empty() {
        cx.sink.at(
            gnode.loc,
            "`grpc_transcode` needs the route to have an `upstream` (or `split`)",
            "route to the gRPC service's upstream",
        );
        return None;
    }
    if route
        .rewrite
        .as_ref()
        .is_some_and(|r| r.path.is_some() || r.strip_prefix)
    {
        cx.sink.at(
            gnode.loc,
            "`grpc_transcode` cannot be combined with a path `rewrite`",
            "the gRPC call's path is the method's (`/package.Service/Method`); remove the path rewrite",
        );
        return None;
    }
    let names = route
        .upstream
        .iter()
        .chain(route.split.iter().map(|s| &s.upstream));
    for name in names {
        let Some(up) = upstreams.get(name).and_then(|i| upstream_specs.get(*i)) else {
            continue;
        };
        if up.targets.iter().any(|t| t.scheme == Scheme::Http) {
            cx.sink.at(
                gnode.loc,
                format!("upstream `{name}` has `http://` targets; gRPC needs HTTP/2"),
                "write its targets as `h2c://host:port` (or `https://` for TLS)",
            );
            return None;
        }
    }
    let options = portico_translate::Options {
        services: g.services.clone(),
        call_by_name: g.call_by_name.unwrap_or(true),
        emit_defaults: g.emit_defaults,
        ignore_unknown_query: g.ignore_unknown_query,
    };
    let transcoder = match (&g.descriptor_set, g.reflection) {
        (Some(file), false) => {
            let at = loc(gnode, "descriptor_set");
            let bytes = read_file(cx, file, at)?;
            match portico_translate::Transcoder::new(&bytes, options.clone()) {
                Ok(t) => Some(Arc::new(t)),
                Err(errors) => {
                    for e in errors {
                        cx.sink.at(
                            at,
                            format!("`{file}`: {e}"),
                            "fix the `google.api.http` annotation in the .proto file and compile the descriptor set again",
                        );
                    }
                    return None;
                }
            }
        }
        (None, true) => None,
        (Some(_), true) | (None, false) => {
            cx.sink.at(
                gnode.loc,
                "`grpc_transcode` needs exactly one of `descriptor_set` and `reflection: true`",
                "give a descriptor set file, or let Portico ask the service (gRPC server reflection)",
            );
            return None;
        }
    };
    let mut forward_headers = Vec::new();
    for (i, h) in g.forward_headers.iter().enumerate() {
        match HeaderName::try_from(h.as_str()) {
            Ok(n) => forward_headers.push(n),
            Err(_) => cx.sink.at(
                item_loc(gnode, "forward_headers", i),
                format!("invalid header name `{h}`"),
                "header names are tokens such as `x-user-id`",
            ),
        }
    }
    Some(Arc::new(GrpcTranscode {
        transcoder,
        options,
        forward_headers,
        sse_by_default: g.stream_format == Some(crate::file::StreamFormat::Sse),
    }))
}
