//! One request, top to bottom: check, route, request policies, upstream call, response
//! policies, log. Each phase is a function below, in that order.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use portico_config::router::{Matched, RequestView};
use portico_config::{Action, Policy, ProxyAction, Route, Scheme, Target};

use crate::base::conn::ConnInfo;
use crate::base::headers;
use crate::body::problem::Problem;
use crate::body::{Body, BodyStats};
use crate::observe::access_log::Record;
use crate::runtime::Runtime;

/// The response body type: the body plus the bookkeeping that runs when it ends.
pub type ResponseBody = LoggedBody;

/// Entry point from the listeners, for every request on every listener.
#[allow(clippy::manual_async_fn)] // see the comment in the body
pub fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    // Not `async fn`: its parameters would be moved once more, into locals, before the
    // body runs (hundreds of bytes for a request, on every layer of the request path).
    async move {
        let start = Instant::now();
        let cfg = &rt.config;
        let request_id = headers::request_id(req.headers(), &cfg.server.request_id_header);
        let client_ip =
            headers::client_ip(conn.peer.ip(), req.headers(), &cfg.server.trusted_proxies);
        // Built in its box: the record (376 bytes) ends up boxed in the response body, and
        // moving it there at the end cost two copies.
        // Without an access log the record only feeds the metrics (route, method, status,
        // duration): what only the log shows is left empty rather than copied (clock read,
        // reference counts taken and released: ~200 instructions).
        let logged = rt.access_log.is_some();
        let done: Box<Finish> = Box::new((
            Record {
                time: if logged {
                    SystemTime::now()
                } else {
                    SystemTime::UNIX_EPOCH
                },
                request_id: if logged {
                    request_id.clone()
                } else {
                    HeaderValue::from_static("")
                },
                client_ip,
                listener: conn.listener.clone(),
                method: req.method().clone(),
                host: if logged {
                    req.headers().get(header::HOST).cloned()
                } else {
                    None
                },
                uri: if logged {
                    req.uri().clone()
                } else {
                    Uri::default()
                },
                version: req.version(),
                route: None,
                route_index: None,
                upstream: None,
                consumer: None,
                status: 0,
                duration: Duration::ZERO,
                upstream_duration: None,
                bytes_in: 0,
                bytes_out: 0,
                error: None,
                complete: false,
            },
            start,
            rt.clone(),
            Arc::new(BodyStats::default()),
        ));
        // Until the answer exists, the record is held by a guard that still logs and counts
        // the request if the client goes away first (the future is dropped: an HTTP/2 reset,
        // an HTTP/1.1 client that closed).
        let mut pending = Unanswered(Some(done));
        let (rec, _, _, bytes_in) = &mut **pending.0.as_mut().expect("just set");
        // gRPC and gRPC-Web calls are POSTs: other methods skip the lookup.
        let is_grpc = req.method() == http::Method::POST
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let mut extra = Vec::new();
        let mut guards = Vec::new();
        let resp = match process(
            &rt,
            &conn,
            req,
            &request_id,
            rec,
            &mut guards,
            bytes_in,
            &mut extra,
        )
        .await
        {
            Ok(r) => r,
            Err(p) => {
                if rec.error.is_none() {
                    rec.error = Some(p.code());
                }
                let mut r = if is_grpc {
                    p.grpc_response(&request_id, &cfg.server.request_id_header)
                } else {
                    p.response(&request_id, &cfg.server.request_id_header)
                };
                for (k, v) in extra {
                    r.headers_mut().append(k, v);
                }
                r
            }
        };
        rec.status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let body = LoggedBody {
            inner: body,
            bytes: 0,
            done: pending.0.take(),
            _in_flight: guards,
        };
        Ok(Response::from_parts(parts, body))
    }
}

// The request's side outputs (log record, held places, problem headers) are separate
// out-parameters on purpose: each is filled by a different phase.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // see the comment in the body
fn process(
    rt: &Arc<Runtime>,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
    request_id: &HeaderValue,
    rec: &mut Record,
    guards: &mut Vec<crate::policy::concurrency::Guard>,
    bytes_in: &Arc<BodyStats>,
    extra: &mut Vec<(http::HeaderName, HeaderValue)>,
) -> impl Future<Output = Result<Response<Body>, Problem>> {
    // Not `async fn`: its parameters would be moved once more, into locals, before the
    // body runs (hundreds of bytes for a request, on every layer of the request path).
    async move {
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
        let preflight = crate::policy::auth::is_preflight(&req);
        // The one canonical path: everything after this line, and the upstream, sees it.
        match portico_config::canon::canonicalize(
            req.uri().path(),
            cfg.path_options(&conn.listener),
        ) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(p)) => {
                *req.uri_mut() = with_path(req.uri(), &p)?;
                if rt.access_log.is_some() {
                    rec.uri = req.uri().clone();
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
        rec.route = Some(route.name.clone());
        rec.route_index = Some(route.index);
        // Credentials in the query never reach the log, whatever happens to the request.
        if rec.uri.query().is_some() {
            for p in cfg.global_policies.iter().chain(route.policies.iter()) {
                if let Policy::Auth(a) = p
                    && let Some(u) = without_params(&rec.uri, &a.query_params)
                {
                    rec.uri = u;
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
            crate::policy::auth::cors_response(c, origin.as_ref(), &mut h);
            extra.extend(h.into_iter().filter_map(|(k, v)| Some((k?, v))));
            if preflight {
                return match crate::policy::auth::preflight(c, &req) {
                    Ok(mut resp) => {
                        resp.headers_mut()
                            .insert(cfg.server.request_id_header.clone(), request_id.clone());
                        Ok(resp)
                    }
                    Err(d) => Err(denied(d, &route, rec, extra)),
                };
            }
        }

        let mut identity = crate::policy::auth::Identity::default();
        let limit_headers = request_policies(
            rt,
            conn,
            &route,
            &req,
            rec,
            bytes_in,
            &mut identity,
            extra,
            guards,
        )
        .await?;
        if let Some(c) = identity.consumer.and_then(|c| cfg.consumers.list.get(c)) {
            rec.consumer = Some(c.name.clone());
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
            .and_then(|c| {
                rt.response_caches
                    .iter()
                    .find(|s| s.fingerprint == c.fingerprint)
                    .map(|s| (s.clone(), c))
            })
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
                match store.lookup(key, head) {
                    crate::policy::cache::Lookup::Hit(resp) => Some(resp),
                    crate::policy::cache::Lookup::Revalidate(entry, conditional) => {
                        req.headers_mut().extend(conditional);
                        revalidating = Some(entry);
                        None
                    }
                    crate::policy::cache::Lookup::Miss => None,
                }
            }
            _ => None,
        };
        let xml_json = route.effective.xml_json.clone();
        let is_head = req.method() == http::Method::HEAD;
        let mut resp = match &route.action {
            _ if let Some(hit) = cached => hit,
            Action::Respond(r) => {
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
                Box::pin(crate::translate::aggregate::handle(
                    rt, a, &req, &params, request_id, rec,
                ))
                .await?
            }
            Action::Proxy(action) if let Some(s) = route.soap.clone() => {
                let path = req.uri().path().to_owned();
                Box::pin(crate::translate::soap::handle(
                    rt, &route, action, &s, req, &path, request_id, bytes_in, rec,
                ))
                .await?
            }
            Action::Proxy(action) if route.transcode.is_some() => {
                let t = route.transcode.clone().expect("checked");
                let path = req.uri().path().to_owned();
                Box::pin(crate::translate::grpc::handle(
                    rt, &route, action, &t, req, &path, request_id, bytes_in, rec,
                ))
                .await?
            }
            Action::Proxy(action) => 'proxy: {
                let pool = rt.pools[action.upstream(|total| fastrand::u32(0..total))].clone();
                let ti = pool.pick(&crate::upstream::balance::PickContext {
                    headers: req.headers(),
                    client_ip: rec.client_ip,
                    path: req.uri().path(),
                    query: req.uri().query(),
                });
                let target = pool.target(ti);
                rec.upstream = Some(target.display.clone());
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
                    rt,
                    conn,
                    req,
                    &route,
                    action,
                    target,
                    &params,
                    request_id,
                    upgrade.is_some(),
                    bytes_in,
                    rec.client_ip,
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
                    Some(&mut *rec),
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
                        Some(&mut *rec),
                        Some(&conn.timer),
                    )
                    .await?;
                    revalidating = None;
                }
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
        response_policies(
            cfg.global_policies.iter().chain(route.policies.iter()),
            &mut resp,
            &portico_config::HeaderVars {
                client_ip: rec.client_ip,
                request_id: request_id.to_str().unwrap_or(""),
                route: &route.name,
                consumer: rec.consumer.as_deref(),
                claims: identity.claims.as_deref(),
            },
        );
        if let Some(x) = &xml_json {
            resp = Box::pin(crate::translate::xml_json::response(
                x, is_head, resp, request_id,
            ))
            .await;
        }
        if let Some((j, fields)) = &json_transform {
            resp = Box::pin(crate::policy::json_transform::apply(
                j,
                fields.as_deref(),
                resp,
            ))
            .await;
        }
        // Compression last: it sees the final headers.
        if let Some((c, method, accept)) = &compression {
            resp = crate::policy::compress::apply(c, method, accept, resp);
        }
        for (name, value) in &route.response_headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        limit_headers.apply(resp.headers_mut());
        if let Some(c) = &cors {
            crate::policy::auth::cors_response(c, origin.as_ref(), resp.headers_mut());
        }
        resp.headers_mut()
            .insert(cfg.server.request_id_header.clone(), request_id.clone());
        Ok(resp)
    }
}

/// Request phase of the chain (global policies first, then the route's, each in order):
/// authentication, `acl`, `ip_filter`, `rate_limit` and `body_limit`. Returns the `RateLimit`
/// headers for the response.
#[allow(clippy::too_many_arguments)]
async fn request_policies(
    rt: &Runtime,
    conn: &ConnInfo,
    route: &Route,
    req: &Request<ClientBody>,
    rec: &mut Record,
    bytes_in: &BodyStats,
    identity: &mut crate::policy::auth::Identity,
    extra: &mut Vec<(http::HeaderName, HeaderValue)>,
    guards: &mut Vec<crate::policy::concurrency::Guard>,
) -> Result<crate::policy::ratelimit::LimitHeaders, Problem> {
    // Most routes have no chain at all: nothing below is set up for them.
    if route.policies.is_empty() && rt.config.global_policies.is_empty() {
        return Ok(crate::policy::ratelimit::LimitHeaders::default());
    }
    // The limit closest to exhaustion over all the chain's `rate_limit` policies, with its
    // number; `first_limit` numbers each policy's limits after the policies before it.
    let mut tightest: Option<(usize, crate::policy::ratelimit::Tightest)> = None;
    let mut first_limit = 0;
    let client_ip = rec.client_ip;
    let client = ClientText {
        ip: client_ip,
        conn,
    };
    for p in rt
        .config
        .global_policies
        .iter()
        .chain(route.policies.iter())
    {
        match p {
            Policy::Auth(a) => {
                let cert = conn.client_cert.as_deref();
                // Not boxed: `authenticate` keeps its slow waits (a key-set fetch, a call to
                // the authorization server, a password hash) behind boxes of their own, so
                // its future is small and a box here would cost more than the copy it saves.
                if let Err(d) =
                    crate::policy::auth::authenticate(&rt.auth, a, req, cert, identity).await
                {
                    return Err(denied(d, route, rec, extra));
                }
                if rec.consumer.is_none()
                    && let Some(c) = identity
                        .consumer
                        .and_then(|c| rt.config.consumers.list.get(c))
                {
                    rec.consumer = Some(c.name.clone());
                }
            }
            Policy::Acl(a) => crate::policy::auth::acl(&rt.auth, a, req.method(), identity)
                .map_err(|d| denied(d, route, rec, extra))?,
            Policy::IpFilter(f) => crate::policy::auth::ip_filter(f, client_ip)
                .map_err(|d| denied(d, route, rec, extra))?,
            Policy::BodyLimit(max) => {
                let declared = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if declared.is_some_and(|n| n > *max) {
                    return Err(Problem::PayloadTooLarge);
                }
                // A chunked body is cut off when it passes the limit.
                bytes_in.limit.fetch_min(*max, Ordering::Relaxed);
            }
            Policy::ConcurrencyLimit(c) => {
                let key = key_text(rt, &c.key, route, req, &client, identity);
                match rt.in_flight[c.id].acquire(&key) {
                    Some(g) => guards.push(g),
                    None => {
                        metrics::counter!("portico_concurrency_limited_total", "route" => route.name.to_string())
                            .increment(1);
                        return Err(Problem::ConcurrencyLimited);
                    }
                }
            }
            Policy::RateLimit(rl) => {
                let key = key_text(rt, &rl.key, route, req, &client, identity);
                let key: &str = &key;
                let limiters = &rt.rate_limiters[rl.id];
                let decision = match &limiters.shared {
                    None => match limiters.check(key, !rl.hide_headers) {
                        Ok(a) => crate::policy::ratelimit::Decision::Allowed(a),
                        Err((wait, i)) => crate::policy::ratelimit::Decision::Limited(wait, i),
                    },
                    Some(shared) => {
                        Box::pin(limiters.check_shared(shared, &route.name, key, !rl.hide_headers))
                            .await
                    }
                };
                let first = first_limit;
                first_limit += rl.limits.len();
                match decision {
                    crate::policy::ratelimit::Decision::Allowed(allowed) => {
                        if let Some(t) = allowed.tightest
                            && tightest.is_none_or(|(_, best)| t.tighter_than(&best))
                        {
                            tightest = Some((first + t.limit, t));
                        }
                    }
                    crate::policy::ratelimit::Decision::Limited(wait, i) => {
                        // The limit's name as in the RateLimit headers.
                        metrics::counter!("portico_rate_limited_total", "route" => route.name.to_string(), "limit" => crate::policy::ratelimit::limit_name(first + i))
                            .increment(1);
                        return Err(Problem::RateLimited(
                            wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                        ));
                    }
                    crate::policy::ratelimit::Decision::Unavailable => {
                        return Err(Problem::RateLimitUnavailable);
                    }
                }
            }
            Policy::Headers(_)
            | Policy::Cors(_)
            | Policy::Compression(_)
            | Policy::RequestDecompression(_)
            | Policy::XmlJson(_)
            | Policy::JsonTransform(_)
            | Policy::Cache(_) => {}
        }
    }
    Ok(crate::policy::ratelimit::LimitHeaders::new(
        rt.rate_limit_policy[route.index].clone(),
        tightest,
    ))
}

/// The client's address as text, for limit keys. When the client is the peer (no trusted
/// proxy in between), the text made once per connection is used: formatting an address per
/// request cost ~1.3k instructions.
struct ClientText<'a> {
    ip: std::net::IpAddr,
    conn: &'a ConnInfo,
}

impl<'a> ClientText<'a> {
    fn text(&self) -> std::borrow::Cow<'a, str> {
        if self.ip == portico_config::canonical_ip(self.conn.peer.ip())
            && let Ok(t) = self.conn.peer_value.to_str()
        {
            return std::borrow::Cow::Borrowed(t);
        }
        std::borrow::Cow::Owned(self.ip.to_string())
    }
}

/// The text of a limit key for this request.
fn key_text<'a>(
    rt: &'a Runtime,
    key: &portico_config::LimitKey,
    route: &'a Route,
    req: &'a Request<ClientBody>,
    client: &ClientText<'a>,
    identity: &crate::policy::auth::Identity,
) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    match key {
        portico_config::LimitKey::ClientIp => client.text(),
        portico_config::LimitKey::Route => Cow::Borrowed(&route.name),
        portico_config::LimitKey::Header(h) => Cow::Borrowed(
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        // Consumer names are header text, so they never contain a control character: the
        // anonymous bucket's key cannot collide with a consumer named `anonymous`.
        portico_config::LimitKey::Consumer => Cow::Borrowed(
            identity
                .consumer
                .and_then(|c| rt.config.consumers.list.get(c))
                .map_or("\u{0}anonymous", |c| &c.name),
        ),
        portico_config::LimitKey::Claim(c) => Cow::Owned(
            identity
                .claims
                .as_ref()
                .and_then(|claims| claims.get(c))
                .map(portico_auth::jwt::claim_header_value)
                .unwrap_or_default(),
        ),
        portico_config::LimitKey::Composite(parts) => {
            // Unit separator between parts, so `a` + `bc` and `ab` + `c` stay distinct.
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('\u{1f}');
                }
                out.push_str(&key_text(rt, p, route, req, client, identity));
            }
            Cow::Owned(out)
        }
    }
}

/// Turns a denial into its problem, counting it and queuing its response headers.
fn denied(
    d: crate::policy::auth::Denial,
    route: &Route,
    rec: &mut Record,
    extra: &mut Vec<(http::HeaderName, HeaderValue)>,
) -> Problem {
    use crate::policy::auth::Denial;
    match d {
        Denial::Unauthorized { reason, challenges } => {
            rec.error = Some(reason.code());
            metrics::counter!("portico_auth_failures_total", "route" => route.name.to_string(), "reason" => reason.code()).increment(1);
            extra.extend(
                challenges
                    .into_iter()
                    .map(|c| (header::WWW_AUTHENTICATE, c)),
            );
            Problem::Unauthorized
        }
        Denial::Forbidden { reason, challenge } => {
            rec.error = Some(reason);
            metrics::counter!("portico_access_denied_total", "route" => route.name.to_string(), "reason" => reason).increment(1);
            if let Some(c) = challenge {
                extra.push((header::WWW_AUTHENTICATE, c));
            }
            Problem::Forbidden
        }
        Denial::Unavailable => {
            rec.error = Some("verifier_unavailable");
            metrics::counter!("portico_auth_failures_total", "route" => route.name.to_string(), "reason" => "verifier_unavailable").increment(1);
            Problem::AuthUnavailable
        }
    }
}

/// `uri` without the query parameters `names`; `None` when it has none of them.
fn without_params(uri: &Uri, names: &[String]) -> Option<Uri> {
    if names.is_empty() {
        return None;
    }
    let q = uri.query()?;
    let stripped = crate::policy::auth::strip_query(q, names);
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

#[allow(clippy::too_many_arguments)]
fn build_upstream_request(
    rt: &Runtime,
    conn: &ConnInfo,
    req: Request<ClientBody>,
    route: &Route,
    action: &ProxyAction,
    target: &Target,
    params: &[String],
    request_id: &HeaderValue,
    upgrade: bool,
    bytes_in: &Arc<BodyStats>,
    client_ip: std::net::IpAddr,
    claims: Option<&portico_auth::jwt::Claims>,
    // The client's `Host` header, looked up once by the caller.
    host_header: Option<HeaderValue>,
) -> Result<Request<Body>, Problem> {
    let cfg = &rt.config;
    let (mut parts, body) = req.into_parts();

    // Path and query.
    let original_pq = parts.uri.path_and_query().cloned();
    let path = parts.uri.path();
    let query = parts.uri.query();
    let new_path: Option<String> = if let Some(n) = action.strip_prefix {
        let rest = &path[n.min(path.len())..];
        Some(if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        })
    } else if let Some(rw) = &action.path {
        let p: Vec<&str> = params.iter().map(String::as_str).collect();
        let mut s = String::new();
        rw.render(&p, &mut s);
        Some(s)
    } else {
        None
    };
    // Query parameters set or removed by the rewrite.
    let rewritten_query: Option<String> = (!action.query_remove.is_empty()).then(|| {
        let mut out = String::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if action.query_remove.iter().any(|r| r == name) {
                continue;
            }
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(pair);
        }
        for (k, v) in &action.query_set {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    });
    let query = match &rewritten_query {
        Some(q) if q.is_empty() => None,
        Some(q) => Some(q.as_str()),
        None => query,
    };
    let new_path = match (new_path, &rewritten_query) {
        (None, Some(_)) => Some(path.to_owned()),
        (p, _) => p,
    };
    let pq = match new_path {
        None => original_pq.unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(p) => {
            let full = match query {
                // A rewrite may carry its own query; the client's is appended to it.
                Some(q) if p.contains('?') => format!("{p}&{q}"),
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            PathAndQuery::try_from(full)
                .map_err(|_| Problem::BadRequest("The rewritten path is not a valid URI path."))?
        }
    };

    // Host: the rewrite's, else the client's (Host header, or :authority over HTTP/2).
    // Only Portico's HTTP/1.1 connection guarantees a single `Host` (it refuses a repeated
    // one); an HTTP/2 request's copies are collapsed by the insert below, as before.
    let single_host = host_header.is_some() && parts.version != Version::HTTP_2;
    let client_host = host_header.or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    let scheme = match target.scheme {
        Scheme::Https => http::uri::Scheme::HTTPS,
        Scheme::Http | Scheme::H2c => http::uri::Scheme::HTTP,
    };
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(target.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| Problem::BadRequest("The request URI cannot be forwarded."))?;
    parts.version = if target.scheme == Scheme::H2c {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    let h = &mut parts.headers;
    headers::remove_hop_by_hop(h, upgrade);
    let peer_trusted = headers::is_trusted(conn.peer.ip(), &cfg.server.trusted_proxies);
    headers::add_forwarding(
        h,
        &headers::Forwarding {
            peer: conn.peer.ip(),
            peer_value: &conn.peer_value,
            peer_trusted,
            tls: conn.tls,
            host: client_host.as_ref(),
            x_forwarded: cfg.server.x_forwarded,
            forwarded: cfg.server.forwarded,
        },
    );
    match (&action.host, client_host) {
        (Some(h2), _) => {
            h.insert(header::HOST, h2.clone());
        }
        // The client's `Host` header is still there, alone (the HTTP/1.1 connection refuses
        // a repeated one, and hop-by-hop removal never takes it): inserting it again would
        // hash its name and replace it with itself.
        (None, Some(_)) if single_host => {}
        (None, Some(c)) => {
            h.insert(header::HOST, c);
        }
        (None, None) => {
            if let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    h.insert(cfg.server.request_id_header.clone(), request_id.clone());
    for p in cfg.global_policies.iter().chain(route.policies.iter()) {
        if let Policy::Headers(hp) = p {
            if hp.request.templated.is_empty() {
                hp.request.apply(h);
            } else {
                let consumer = h
                    .get(&cfg.server.consumer_header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let vars = portico_config::HeaderVars {
                    client_ip,
                    request_id: request_id.to_str().unwrap_or(""),
                    route: &route.name,
                    consumer: consumer.as_deref(),
                    claims,
                };
                hp.request.apply_with(h, &vars);
            }
        }
    }

    let body = if body_is_empty(&parts, &body) {
        Body::Empty
    } else {
        // gRPC request streams are streams by design: only `stream_idle_timeout` bounds them.
        let grpc = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let floor = if grpc {
            None
        } else {
            crate::body::RateFloor::new(
                cfg.server.request_body_timeout,
                cfg.server.request_body_min_rate,
            )
        };
        Body::Counted(
            body,
            bytes_in.clone(),
            crate::body::IdleTimer::default(),
            floor,
        )
    };
    Ok(Request::from_parts(parts, body))
}

fn body_is_empty(parts: &http::request::Parts, body: &ClientBody) -> bool {
    use http_body::Body as _;
    body.is_end_stream()
        || (parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0"))
}

/// Sends a copy of the request to the mirror upstream in the background and returns the
/// request to send for real. The client never waits for the mirror, and its answer is read and
/// dropped. Bodies over 64 KiB, or without a length, are not copied (the request still goes).
async fn mirror(
    rt: &Runtime,
    upstream: usize,
    mut req: Request<Body>,
) -> Result<Request<Body>, Problem> {
    let template = crate::upstream::call::replayable(&mut req, true).await?;
    let Some(template) = template else {
        return Ok(req);
    };
    let pool = rt.pools[upstream].clone();
    let mut copy = template.build();
    // Aim the copy at the mirror's own target.
    let target = pool.pick(&crate::upstream::balance::PickContext {
        headers: copy.headers(),
        client_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        path: copy.uri().path(),
        query: copy.uri().query(),
    });
    let t = pool.target(target).clone();
    let scheme = if t.scheme == portico_config::Scheme::Https {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let pq = copy
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if let Ok(uri) = Uri::builder()
        .scheme(scheme)
        .authority(t.authority.clone())
        .path_and_query(pq)
        .build()
    {
        *copy.uri_mut() = uri;
    }
    let timeout = pool.spec.request_timeout;
    tokio::spawn(async move {
        let outcome = tokio::time::timeout(timeout, async {
            let (_, resp) = pool.send(target, &mut copy).await.ok()?;
            use http_body_util::BodyExt;
            resp.into_body().collect().await.ok().map(|_| ())
        })
        .await;
        let result = if matches!(outcome, Ok(Some(()))) {
            "sent"
        } else {
            "failed"
        };
        metrics::counter!("portico_mirror_requests_total", "upstream" => pool.spec.name.to_string(), "result" => result).increment(1);
    });
    Ok(req)
}

fn response_policies<'a>(
    policies: impl DoubleEndedIterator<Item = &'a Policy>,
    resp: &mut Response<Body>,
    vars: &portico_config::HeaderVars<'_>,
) {
    for p in policies.rev() {
        if let Policy::Headers(hp) = p {
            hp.response.apply_with(resp.headers_mut(), vars);
        }
    }
}

/// Copies bytes both ways between the client and the upstream after a `101 Switching Protocols`.
async fn tunnel(
    client: tokio::sync::oneshot::Receiver<crate::http1::server::Upgraded>,
    upstream: hyper::upgrade::OnUpgrade,
) {
    let (mut c, u) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(_), _) => {
            tracing::debug!("upgrade failed: the client connection ended");
            return;
        }
        (_, Err(e)) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut u = hyper_util::rt::TokioIo::new(u);
    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
}

/// What a finished request is recorded with: its access record, when it started, the config
/// it ran under and its request body's counters.
type Finish = (Record, Instant, Arc<Runtime>, Arc<BodyStats>);

/// The response body, which logs and counts the request when it ends (or is dropped because
/// the client went away).
pub struct LoggedBody {
    inner: Body,
    bytes: u64,
    /// Boxed: the response body is moved several times on its way into hyper's connection,
    /// and the access record would make every move a few hundred bytes longer.
    done: Option<Box<Finish>>,
    /// Places held in `concurrency_limit` policies, released when the body is dropped.
    _in_flight: Vec<crate::policy::concurrency::Guard>,
}

impl LoggedBody {
    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            finish(done, self.bytes, complete);
        }
    }
}

/// Counts a request in the metrics and sends its access-log line.
fn finish(mut done: Box<Finish>, bytes_out: u64, complete: bool) {
    let (rec, start, rt, bytes_in) = &mut *done;
    rec.duration = start.elapsed();
    rec.bytes_out = bytes_out;
    rec.bytes_in = bytes_in.bytes.load(Ordering::Relaxed);
    rec.complete = complete;
    let route = rec.route_index.map(|i| (i, &rt.route_metrics[i]));
    crate::observe::metrics::record_request(
        rt.generation,
        route,
        &rec.method,
        rec.status,
        rec.duration,
    );
    // The record leaves its box only for the access log (a 376-byte move otherwise).
    if rt.access_log.is_some() {
        let (rec, _, rt, _) = *done;
        if let Some(sink) = &rt.access_log {
            sink.send(rec);
        }
    }
}

/// The log record of a request not yet answered. Dropped with it still inside, the client
/// went away before the answer: the request is logged and counted as status 499 (nginx's
/// "client closed request"; never sent), `error: client_closed_request`, `complete: false`.
struct Unanswered(Option<Box<Finish>>);

/// The status logged for a request whose client left before it was answered.
pub const CLIENT_CLOSED: u16 = 499;

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut done) = self.0.take() {
            done.0.status = CLIENT_CLOSED;
            done.0.error.get_or_insert("client_closed_request");
            finish(done, 0, false);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // A body that was empty from the start is never polled; it still completed.
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(complete);
    }
}

impl http_body::Body for LoggedBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, crate::body::BodyError>>>
    {
        use std::task::Poll;
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if http_body::Body::is_end_stream(&this.inner) {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
