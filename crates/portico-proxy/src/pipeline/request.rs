//! One request from its checks to its answer (`process`), with the small helpers only it uses.

use crate::body::ClientBody;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use portico_config::router::{Matched, RequestView};
use portico_config::{Action, Policy};

use crate::base::headers;
use crate::body::Body;
use crate::body::problem::Problem;

use crate::pipeline::forward::{build_upstream_request, mirror, tunnel};
use crate::pipeline::policies::{denied, request_policies};
use crate::runtime::ctx::RequestCtx;

/// The request from its checks to its answer: check, route, request policies, act (answer,
/// translate or forward), response policies.
#[allow(clippy::manual_async_fn)] // see the comment in the body
pub(crate) fn process<'c>(
    ctx: &'c mut RequestCtx<'_>,
    mut req: Request<ClientBody>,
) -> impl Future<Output = Result<Response<Body>, Problem>> + 'c {
    // Not `async fn`: its parameters would be moved once more, into locals, before the
    // body runs (hundreds of bytes for a request, on every layer of the request path).
    async move {
        let (rt, conn, request_id, bytes_in) = (ctx.rt, ctx.conn, ctx.request_id, ctx.bytes_in);
        check_framing(&req)?;
        // An HTTP/2 request that declares an empty body but has not ended its stream: the
        // head alone would be a complete request upstream, so its end is awaited first
        // (DATA instead makes it malformed, RFC 9113 §8.1.1).
        if let ClientBody::Hyper(b, _) = req.body()
            && !http_body::Body::is_end_stream(b)
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v == "0")
        {
            Box::pin(await_empty(req.body_mut())).await?;
        }
        let cfg = &rt.config;
        if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > cfg.server.max_uri_bytes {
            return Err(Problem::UriTooLong);
        }
        // Identity headers are set by the gateway only; a client's copies are never passed on.
        // Names are compared first: a `remove` hashes its name even when the header is absent.
        let ids = &cfg.server.identity_headers;
        if req.headers().keys().any(|k| ids.contains(k)) {
            for h in ids {
                req.headers_mut().remove(h);
            }
        }

        // Route. A CORS preflight is routed as the request it asks about.
        let preflight = crate::policy::cors::is_preflight(&req);
        // The one canonical path: everything after this line, and the upstream, sees it.
        match portico_config::canon::canonicalize(
            req.uri().path(),
            cfg.path_options(&conn.listener),
        ) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(p)) => {
                *req.uri_mut() = with_path(req.uri(), &p)?;
                if rt.access_log.is_some() {
                    ctx.rec.uri = req.uri().clone();
                }
            }
            Err(e) => return Err(Problem::BadPath(e)),
        }
        let path = req.uri().path();
        // Looked up once: routing reads it, and the upstream request keeps it.
        let host_value = req.headers().get(header::HOST).cloned();
        let mut host_buf = String::new();
        let host = headers::request_host(req.uri(), host_value.as_ref(), &mut host_buf);
        let mut view = RequestView {
            host,
            path,
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
        };
        let mut found = cfg.router.find(&view);
        let asked_method = preflight
            .then(|| req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD))
            .flatten()
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
        if found.is_none()
            && let Some(m) = &asked_method
        {
            view.method = m;
            found = cfg.router.find(&view);
        }
        let Some(Matched { route, params }) = found else {
            return Err(Problem::NoRoute);
        };
        let route = route.clone();
        let params: Vec<String> = if params.is_empty() {
            Vec::new()
        } else {
            params.iter().map(|s| (*s).to_owned()).collect()
        };
        ctx.rec.route = Some(route.name.clone());
        ctx.rec.route_index = Some(route.index);
        if route.server_timing && ctx.rec.phases.is_none() {
            ctx.rec.phases = Some(crate::observe::phases::Phases::new(ctx.start, false));
        }
        if let Some(p) = ctx.rec.phases.as_deref_mut() {
            p.mark("route", ctx.start, Some(route.name.to_string()));
        }
        // Sampled now that the route (and its ratio) is known, before any upstream is called
        // with the decision.
        if let Some(t) = ctx.rec.trace.as_mut()
            && t.sampled.is_none()
            && t.decide(route.sample_ratio)
        {
            // Recorded after all: what the span shows and only the access log copied.
            if !cfg.redact.user_agent {
                t.user_agent = req.headers().get(header::USER_AGENT).cloned();
            }
            if !t.described {
                t.described = true;
                ctx.rec.request_id = request_id.clone();
                ctx.rec.host = req.headers().get(header::HOST).cloned();
                ctx.rec.uri = req.uri().clone();
            }
        }
        // Credentials in the query never reach the log, whatever happens to the request.
        if ctx.rec.uri.query().is_some() {
            for p in cfg.global_policies.iter().chain(route.policies.iter()) {
                if let Policy::Auth(a) = p
                    && let Some(u) = without_params(&ctx.rec.uri, &a.query_params)
                {
                    ctx.rec.uri = u;
                }
            }
        }

        // CORS: preflights are answered here, before any credentials are asked for.
        let cors = route.effective.cors.clone();
        let origin = cors
            .as_ref()
            .and_then(|_| req.headers().get(header::ORIGIN).cloned());
        if let Some(c) = &cors {
            let mut h = http::HeaderMap::new();
            crate::policy::cors::cors_response(c, origin.as_ref(), &mut h);
            ctx.extra
                .extend(h.into_iter().filter_map(|(k, v)| Some((k?, v))));
            if preflight {
                return match crate::policy::cors::preflight(c, &req) {
                    Ok(mut resp) => {
                        resp.headers_mut()
                            .insert(cfg.server.request_id_header.clone(), request_id.clone());
                        Ok(resp)
                    }
                    Err(d) => Err(denied(d, &route, ctx)),
                };
            }
        }

        let mut identity = crate::policy::auth::Identity::default();
        let began = ctx.rec.phases.is_some().then(Instant::now);
        let limit_headers = request_policies(ctx, &route, &req, &mut identity).await;
        if let (Some(began), Some(p)) = (began, ctx.rec.phases.as_deref_mut()) {
            p.mark("policies", began, None);
        }
        let limit_headers = limit_headers?;
        if let Some(c) = identity.consumer.and_then(|c| cfg.consumers.list.get(c)) {
            ctx.rec.consumer = Some(c.name.clone());
            req.headers_mut()
                .insert(cfg.server.consumer_header.clone(), c.name_value.clone());
            if let Some(g) = &c.groups_value {
                req.headers_mut()
                    .insert(cfg.server.groups_header.clone(), g.clone());
            }
        }
        for h in identity.strip_headers.drain(..) {
            req.headers_mut().remove(h);
        }
        for (k, v) in identity.headers.drain(..) {
            req.headers_mut().insert(k, v);
        }
        if let Some(u) = without_params(req.uri(), &identity.strip_query) {
            *req.uri_mut() = u;
        }
        // The operation's contract, after authentication: a client without credentials learns
        // nothing of the schema. The body, when it is to be checked, is read below.
        let body_schema = match &route.contract {
            None => None,
            Some(c) => {
                match crate::translate::contract::check_head(
                    c,
                    &route.name,
                    &req,
                    &params,
                    request_id,
                ) {
                    Ok(s) => s,
                    Err(resp) => {
                        ctx.rec.error =
                            Some(if resp.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                                "unsupported_media_type"
                            } else {
                                "request_invalid"
                            });
                        return Ok(*resp);
                    }
                }
            }
        };
        // What compression needs from the request, kept only when a policy asks for it. The
        // route's policy wins over a global one.
        let compression = route.effective.compression.clone().map(|c| {
            let mut accept = http::HeaderMap::new();
            for v in req.headers().get_all(header::ACCEPT_ENCODING) {
                accept.append(header::ACCEPT_ENCODING, v.clone());
            }
            (c, req.method().clone(), accept)
        });
        // A `cache` policy: its store, the request as the cache rules see it, and the key.
        let cache = route
            .effective
            .cache
            .as_ref()
            .map(|c| (rt.policies.cache(c.slot).clone(), c))
            .map(|(store, policy)| {
                let head = crate::policy::cache::request_head(&req);
                let mut host_buf = String::new();
                let host = headers::request_host(req.uri(), host_value.as_ref(), &mut host_buf)
                    .unwrap_or("")
                    .to_owned();
                let mut head = head;
                let key = crate::policy::cache::key(&mut head, &host, policy);
                (store, head, key)
            });
        let json_transform = route.effective.json_transform.clone().map(|j| {
            let fields = crate::policy::json_transform::wanted_fields(&j, req.uri().query());
            (j, fields)
        });
        // A fresh stored answer ends the request here; a stale one is revalidated.
        let mut revalidating = None;
        let cached = match (&route.action, &cache) {
            (Action::Proxy(_), Some((store, head, key))) if route.transcode.is_none() => {
                let start = crate::observe::trace::child_start(ctx.rec.trace.as_mut());
                let (found, result) = match store.lookup(key, head) {
                    crate::policy::cache::Lookup::Hit(resp) => (Some(resp), "hit"),
                    crate::policy::cache::Lookup::Revalidate(entry, conditional) => {
                        req.headers_mut().extend(conditional);
                        revalidating = Some(entry);
                        (None, "stale")
                    }
                    crate::policy::cache::Lookup::Miss => (None, "miss"),
                };
                let counter = match result {
                    "hit" => &store.hits,
                    "stale" => &store.stale,
                    _ => &store.misses,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let (Some(start), Some(t)) = (start, ctx.rec.trace.as_mut()) {
                    t.child(crate::observe::trace::ChildKind::Cache { result }, start);
                }
                found
            }
            _ => None,
        };
        let xml_json = route.effective.xml_json.clone();
        let is_head = req.method() == http::Method::HEAD;
        // Whether this answer is one of the sample checked against `responses`, drawn now, and
        // what a violation is recorded with: kept only for the answers that are checked.
        let asked_for = route
            .contract
            .as_ref()
            .and_then(|c| c.response.as_ref())
            .filter(|rc| rc.sample >= 1.0 || fastrand::f64() < rc.sample)
            .map(|_| (req.method().clone(), req.uri().path().to_owned()));
        // Set when the answer is the upstream's, the only kind checked against `responses`.
        let mut upstream_answered = false;
        let resp = match &route.action {
            _ if let Some(hit) = cached => hit,
            Action::Respond(r) => 'respond: {
                // A mocked operation checks the body as the real one would.
                if let (Some(schema), Some(c)) = (
                    body_schema,
                    route.contract.as_ref().and_then(|c| c.request.as_ref()),
                ) {
                    let decompress = route.effective.request_decompression;
                    let refused = Box::pin(check_mocked_body(
                        ctx,
                        c,
                        &route.name,
                        schema,
                        decompress,
                        req,
                    ))
                    .await?;
                    if let Some(resp) = refused {
                        break 'respond resp;
                    }
                }
                let mut resp = Response::new(Body::full(r.body.clone()));
                *resp.status_mut() = r.status;
                for (k, v) in &r.headers {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
                resp
            }
            Action::Redirect(r) => {
                let mut to = String::new();
                let p: Vec<&str> = params.iter().map(String::as_str).collect();
                r.to.render(&p, &mut to);
                let mut resp = Response::new(Body::Empty);
                *resp.status_mut() = r.status;
                if let Ok(v) = HeaderValue::try_from(to) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp
            }
            // The rare branches' futures are boxed here and below (`Box::pin`): hyper copies each
            // request's future when the request arrives, so one stored inline would make every
            // request pay to copy the largest of them (measured: half of all `memcpy`).
            Action::Aggregate(a) => {
                Box::pin(crate::translate::aggregate::handle(ctx, a, &req, &params)).await?
            }
            Action::Proxy(action) if let Some(s) = route.soap.clone() => {
                let path = req.uri().path().to_owned();
                let start = crate::observe::trace::child_start(ctx.rec.trace.as_mut());
                let r = Box::pin(crate::translate::soap::handle(
                    ctx, &route, action, &s, req, &path,
                ))
                .await;
                translation_end(ctx, start, "soap", &r);
                r?
            }
            Action::Proxy(action) if route.transcode.is_some() => {
                let t = route.transcode.clone().expect("checked");
                let path = req.uri().path().to_owned();
                let start = crate::observe::trace::child_start(ctx.rec.trace.as_mut());
                let r = Box::pin(crate::translate::grpc::handle(
                    ctx, &route, action, &t, req, &path,
                ))
                .await;
                translation_end(ctx, start, "grpc_transcode", &r);
                r?
            }
            Action::Proxy(action) => 'proxy: {
                let pool = rt.pools[action.upstream(|total| fastrand::u32(0..total))].clone();
                let ti = pool.pick(&crate::upstream::balance::PickContext {
                    headers: req.headers(),
                    client_ip: ctx.rec.client_ip,
                    path: req.uri().path(),
                    query: req.uri().query(),
                });
                let target = pool.target(ti);
                ctx.rec.upstream = Some(target.display.clone());
                // The client's side of a protocol switch: the HTTP/1.1 connection hands its
                // transport over once the `101` is written (HTTP/2 requests never ask). It
                // puts `OnUpgrade` on exactly the requests that ask (an HTTP/1.1 request
                // with `Upgrade` and `Connection: upgrade`), so no header is looked up here.
                let upgrade = req
                    .extensions_mut()
                    .remove::<crate::http1::server::OnUpgrade>()
                    .and_then(|own| own.take());
                let grpc_web = if route.grpc_web {
                    crate::translate::grpc_web::mode(req.headers())
                } else {
                    None
                };
                // One binding, replaced only by the rare steps: a `let x = match … { _ => x }`
                // chain moves the request (360 bytes) at each step even when nothing happens.
                let mut upstream_req = build_upstream_request(
                    ctx,
                    req,
                    &route,
                    action,
                    target,
                    &params,
                    upgrade.is_some(),
                    identity.claims.as_deref(),
                    host_value.clone(),
                )?;
                // The route's `request_decompression` wins over a global one.
                if let Some(max) = route.effective.request_decompression
                    && upgrade.is_none()
                {
                    upstream_req = crate::policy::compress::decode_request(
                        upstream_req,
                        max,
                        bytes_in.clone(),
                    )?;
                }
                if let (Some(schema), Some(c)) = (
                    body_schema,
                    route.contract.as_ref().and_then(|c| c.request.as_ref()),
                ) && upgrade.is_none()
                {
                    upstream_req = match Box::pin(crate::translate::contract::read_and_check(
                        c,
                        &route.name,
                        schema,
                        upstream_req,
                        request_id,
                    ))
                    .await
                    {
                        Ok(r) => r,
                        Err(crate::translate::xml_json::Refusal::Problem(p)) => return Err(p),
                        Err(crate::translate::xml_json::Refusal::Answer(resp)) => {
                            ctx.rec.error = Some("request_invalid");
                            break 'proxy *resp;
                        }
                    };
                }
                if let Some(x) = &xml_json
                    && upgrade.is_none()
                {
                    upstream_req = match Box::pin(crate::translate::xml_json::request(
                        x,
                        upstream_req,
                        request_id,
                    ))
                    .await
                    {
                        Ok(r) => r,
                        Err(crate::translate::xml_json::Refusal::Problem(p)) => return Err(p),
                        Err(crate::translate::xml_json::Refusal::Answer(resp)) => {
                            break 'proxy *resp;
                        }
                    };
                }
                if let Some(m) = grpc_web {
                    upstream_req =
                        Box::pin(crate::translate::grpc_web::to_grpc(upstream_req, m)).await?;
                }
                if let Body::Counted(_, _, idle, _) = upstream_req.body_mut() {
                    idle.set(pool.spec.stream_idle_timeout);
                }
                if let Some((m, percent)) = route.mirror
                    && (percent == 100 || fastrand::u32(0..100) < percent)
                {
                    upstream_req = Box::pin(mirror(rt, m, upstream_req)).await?;
                }
                // A revalidation keeps a plain copy of the request: a 304 that does not confirm
                // the stored answer is not the client's to see, so the answer is fetched again.
                let plain = revalidating.as_ref().map(|_| {
                    let mut r = crate::upstream::pool::clone_head(&upstream_req);
                    r.headers_mut().remove(header::IF_NONE_MATCH);
                    r.headers_mut().remove(header::IF_MODIFIED_SINCE);
                    r
                });
                let mut resp = crate::upstream::call::call_upstream(
                    route.timeout,
                    &pool,
                    ti,
                    &mut upstream_req,
                    Some(&mut *ctx.rec),
                    None,
                    Some(&conn.timer),
                )
                .await?;
                if let (Some(entry), Some(mut plain), Some((store, head, _))) =
                    (&revalidating, plain, &cache)
                    && resp.status() == StatusCode::NOT_MODIFIED
                    && !store.confirms(entry, head, &resp)
                {
                    resp = crate::upstream::call::call_upstream(
                        route.timeout,
                        &pool,
                        ti,
                        &mut plain,
                        Some(&mut *ctx.rec),
                        None,
                        Some(&conn.timer),
                    )
                    .await?;
                    revalidating = None;
                }
                upstream_answered = true;
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                headers::remove_hop_by_hop(resp.headers_mut(), switching);
                if let Some(client_side) = upgrade
                    && resp.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(tunnel(client_side, upstream_side));
                }
                match (grpc_web, &cache) {
                    (Some(m), _) => crate::translate::grpc_web::from_grpc(resp, m),
                    (None, Some((store, head, key))) if !switching => {
                        store.store(key.clone(), head, resp, revalidating)
                    }
                    (None, _) => resp.map(Body::Upstream),
                }
            }
        };
        let resp = match (
            route.contract.as_ref().and_then(|c| c.response.as_ref()),
            &asked_for,
        ) {
            (Some(rc), Some((method, path))) if upstream_answered => {
                let asked = crate::translate::contract::Asked {
                    route: &route,
                    method,
                    path,
                    request_id,
                    recent: &rt.violations,
                };
                Box::pin(crate::translate::contract::check_response(rc, asked, resp)).await
            }
            _ => resp,
        };
        let steps = crate::pipeline::respond::ResponseSteps {
            limits: limit_headers,
            cors: cors.map(|c| (c, origin)),
            xml_json,
            json_transform,
            compression,
            head_request: is_head,
        };
        // The body hooks' future is boxed: they are rare, and stored inline their future would
        // make every request's larger.
        let resp = if steps.rewrites_body() {
            Box::pin(steps.run_rewriting(ctx, &route, &identity, resp)).await
        } else {
            steps.run(ctx, &route, &identity, resp)
        };
        Ok(resp)
    }
}

/// Reads and checks the body of a request to a mocked operation: `Some` is the refusal.
async fn check_mocked_body(
    ctx: &mut RequestCtx<'_>,
    c: &portico_contract::RequestContract,
    route: &str,
    schema: portico_contract::BodyCheck,
    decompress: Option<u64>,
    req: Request<ClientBody>,
) -> Result<Option<Response<Body>>, Problem> {
    let max = c.limits.max_body;
    let (parts, body) = req.into_parts();
    let bytes = match crate::body::read_client_body(body, ctx.bytes_in, max).await {
        Ok(b) => b,
        Err(crate::body::ReadError::TooLarge) => {
            metrics::counter!("portico_request_validation_failures_total", "route" => route.to_owned(), "location" => "body")
                .increment(1);
            return Err(Problem::PayloadTooLarge);
        }
        Err(crate::body::ReadError::Malformed) => {
            return Err(Problem::BadRequest(
                "The request body is malformed or was cut short.",
            ));
        }
    };
    // Checked as the upstream would get it: decoded, where the route decodes request bodies.
    let bytes = match decompress {
        Some(limit) if parts.headers.contains_key(http::header::CONTENT_ENCODING) => {
            let coded = Request::from_parts(parts, Body::full(bytes));
            let decoded =
                crate::policy::compress::decode_request(coded, limit, ctx.bytes_in.clone())?;
            let (parts, body) = decoded.into_parts();
            crate::translate::xml_json::read_request_body(&parts, body, max).await?
        }
        _ => bytes,
    };
    match crate::translate::contract::check_body(c, route, schema, &bytes, ctx.request_id) {
        Ok(()) => Ok(None),
        Err(resp) => {
            ctx.rec.error = Some("request_invalid");
            Ok(Some(*resp))
        }
    }
}

/// Records a translation's span: the whole of it (reading the JSON, the upstream call, the
/// answer's conversion), beside the upstream attempts it made.
fn translation_end(
    ctx: &mut RequestCtx<'_>,
    start: Option<std::time::SystemTime>,
    kind: &'static str,
    result: &Result<Response<Body>, Problem>,
) {
    if let (Some(start), Some(t)) = (start, ctx.rec.trace.as_mut()) {
        let failed = result.as_ref().err().map(|p| p.code());
        t.child(
            crate::observe::trace::ChildKind::Translate { kind, failed },
            start,
        );
    }
}

/// `uri` without the query parameters `names`; `None` when it has none of them.
fn without_params(uri: &Uri, names: &[String]) -> Option<Uri> {
    if names.is_empty() {
        return None;
    }
    let q = uri.query()?;
    let stripped = portico_config::query::without(q, names);
    if stripped.len() == q.len() {
        return None;
    }
    let path = uri.path();
    let pq = if stripped.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{stripped}")
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Reads a body declared empty to its end; any data in it is a malformed request.
async fn await_empty(body: &mut ClientBody) -> Result<(), Problem> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) if f.data_ref().is_some_and(|d| !d.is_empty()) => {
                return Err(Problem::BadRequest(
                    "The request's DATA contradicts its content-length.",
                ));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(Problem::BadRequest(
                    "The request's DATA contradicts its content-length.",
                ));
            }
        }
    }
    Ok(())
}

/// `uri` with its path replaced by `path` (the canonical one), query kept.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, Problem> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(pq)
            .map_err(|_| Problem::BadRequest("The request path cannot be forwarded."))?,
    );
    Uri::from_parts(parts).map_err(|_| Problem::BadRequest("The request path cannot be forwarded."))
}

/// Answers a request whose head the HTTP/1.1 connection refused as ambiguous (request
/// smuggling; see `h1server`) with 400.
fn check_framing(req: &Request<ClientBody>) -> Result<(), Problem> {
    match req.extensions().get::<crate::http1::server::Refused>() {
        Some(r) => Err(Problem::BadRequest(r.0.detail())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_query_and_the_rest_stays_as_written() {
        let names = ["api_key".to_owned(), "access_token".to_owned()];
        let uri: Uri = "/a/b?x=%41&api_key=k&y=1+2&access%5Ftoken=t"
            .parse()
            .unwrap();
        assert_eq!(without_params(&uri, &names).unwrap(), "/a/b?x=%41&y=1+2");
        let uri: Uri = "http://h/p?api_key=k".parse().unwrap();
        assert_eq!(without_params(&uri, &names).unwrap(), "http://h/p");
        // Nothing to remove: no new URI is built.
        assert!(without_params(&"/p?x=1".parse().unwrap(), &names).is_none());
        assert!(without_params(&"/p".parse().unwrap(), &names).is_none());
        assert!(without_params(&"/p?api_key=k".parse().unwrap(), &[]).is_none());
    }

    #[test]
    fn the_canonical_path_replaces_the_path_and_keeps_the_query() {
        let uri: Uri = "/%61dmin/./x?q=%2F".parse().unwrap();
        assert_eq!(with_path(&uri, "/admin/x").unwrap(), "/admin/x?q=%2F");
        let uri: Uri = "http://h:8080/a//b".parse().unwrap();
        assert_eq!(with_path(&uri, "/a/b").unwrap(), "http://h:8080/a/b");
        assert!(with_path(&uri, "/a b").is_err(), "a path no URI can carry");
    }
}
