//! Protocol translation with I/O: REST/JSON to gRPC, gRPC-Web, SOAP, XML and JSON, composite routes;
//! and the bodies read whole to check them against an OpenAPI operation's contract.

pub mod aggregate;
pub(crate) mod contract;
pub mod grpc;
pub mod grpc_web;
pub mod soap;
pub mod xml_json;

use std::sync::Arc;

use http::{Method, Request};
use portico_config::{ProxyAction, Target};

use crate::body::Body;
use crate::body::problem::Problem;
use crate::runtime::ctx::RequestCtx;
use crate::upstream::pool::UpstreamPool;

/// A translation's call to its route's upstream, ready to send: the upstream and target chosen
/// as a proxied request's would be (by the client's headers, address and `path`), a POST of
/// `body` to `upstream_path` there with the headers `protocol` adds, then the request id and
/// the identity the policies set (last, so nothing the protocol copies replaces them). The
/// access record names the target.
pub(crate) fn upstream_call(
    ctx: &mut RequestCtx<'_>,
    action: &ProxyAction,
    client: &http::request::Parts,
    path: &str,
    upstream_path: http::uri::PathAndQuery,
    body: Body,
    protocol: impl FnOnce(&mut Request<Body>, &UpstreamPool, &Target),
) -> Result<(Arc<UpstreamPool>, usize, Request<Body>), Problem> {
    let cfg = &ctx.rt.config;
    let pool = ctx.rt.pools[action.upstream(|total| fastrand::u32(0..total))].clone();
    let ti = pool.pick(&crate::upstream::balance::PickContext {
        headers: &client.headers,
        client_ip: ctx.rec.client_ip,
        path,
        query: client.uri.query(),
    });
    let target = pool.target(ti);
    ctx.rec.upstream = Some(target.display.clone());
    let mut up = Request::new(body);
    *up.method_mut() = Method::POST;
    *up.uri_mut() = target
        .uri(upstream_path)
        .map_err(|_| Problem::UpstreamProtocol)?;
    protocol(&mut up, &pool, target);
    let h = up.headers_mut();
    h.insert(cfg.server.request_id_header.clone(), ctx.request_id.clone());
    for name in &cfg.server.identity_headers {
        if let Some(v) = client.headers.get(name) {
            h.insert(name.clone(), v.clone());
        }
    }
    Ok((pool, ti, up))
}
