//! Composite routes (`aggregate`): one client request, several backend calls made at once —
//! or as soon as the answers they depend on are in — merged into one JSON object.
//!
//! Failure is reported honestly: an optional backend that fails is left out and described by
//! a problem object under the errors key, with `206` (or the configured status) and
//! `Portico-Aggregation: partial`; a required one that fails fails the answer (502, or 504 for
//! a timeout), naming it.

use std::sync::Arc;
use std::time::Duration;

use crate::body::ClientBody;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use portico_config::{Aggregate, AggregatePart};
use serde_json::{Map, Value};

use crate::body::Body;
use crate::body::problem::Problem;
use crate::runtime::ctx::RequestCtx;
use crate::upstream::pool::UpstreamPool;

/// Largest backend answer read.
const MAX_BACKEND_BODY: usize = 8 << 20;

/// Backend answers kept by `cache_ttl`: by route, backend, upstream and rendered path, with
/// their expiry. Bounded; entries also age out by their own TTL.
fn answer_cache() -> &'static moka::sync::Cache<String, (Value, std::time::Instant)> {
    static CACHE: std::sync::OnceLock<moka::sync::Cache<String, (Value, std::time::Instant)>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| moka::sync::Cache::new(10_000))
}

/// Why one backend has no answer.
#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// The backend's own answer, for `pass_through_client_errors`.
    passed: Option<Box<(StatusCode, bytes::Bytes, Option<HeaderValue>)>>,
}

type Outcome = Result<Value, Failure>;

/// Characters left as they are when a value goes into a path or query.
fn encode_value(v: &str, out: &mut String) {
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The backend's path with the route's parameters and earlier answers filled in.
fn render(
    parts: &[AggregatePart],
    params: &[String],
    done: &[Option<Outcome>],
    names: &[Arc<str>],
) -> Result<String, String> {
    let mut out = String::new();
    for p in parts {
        match p {
            AggregatePart::Literal(s) => out.push_str(s),
            // Path parameters are raw path text already (still percent-encoded).
            AggregatePart::Param(i) => out.push_str(params.get(*i).map_or("", String::as_str)),
            AggregatePart::Answer(j, path) => {
                let Some(Some(Ok(v))) = done.get(*j) else {
                    return Err(format!(
                        "`{}` has no answer to take `{}` from",
                        names[*j],
                        path.join(".")
                    ));
                };
                let mut cur = v;
                for key in path {
                    cur = match cur {
                        Value::Object(o) => o.get(key),
                        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        format!("`{}` answered without `{}`", names[*j], path.join("."))
                    })?;
                }
                match cur {
                    Value::String(s) => encode_value(s, &mut out),
                    Value::Number(n) => out.push_str(&n.to_string()),
                    Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                    _ => {
                        return Err(format!(
                            "`{}.{}` is not a string, number or boolean",
                            names[*j],
                            path.join(".")
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One backend call: the answer as JSON, or why there is none.
async fn call(
    pool: Arc<UpstreamPool>,
    target: usize,
    method: Method,
    path: String,
    headers: http::HeaderMap,
    timeout: Option<Duration>,
    trace: Option<&mut crate::observe::trace::Trace>,
) -> Outcome {
    let fail = |status: StatusCode, code: &'static str, detail: String| Failure {
        status,
        code,
        detail,
        passed: None,
    };
    let budget = timeout.unwrap_or(pool.spec.request_timeout);
    let t = pool.target(target).clone();
    let uri = t.uri(path.as_str()).map_err(|e| {
        fail(
            StatusCode::BAD_GATEWAY,
            "upstream_protocol_error",
            format!("invalid backend path: {e}"),
        )
    })?;
    let mut req = Request::new(Body::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    if let Ok(host) = HeaderValue::from_str(t.authority.as_str()) {
        req.headers_mut().insert(header::HOST, host);
    }
    let exchange = async {
        // The same call as a proxied request's: the upstream's retry policy, failover,
        // metrics and error mapping apply.
        let resp = crate::upstream::call::call_upstream(
            timeout, &pool, target, &mut req, None, trace, None,
        )
        .await
        .map_err(|p| Failure {
            status: p.status(),
            code: p.code(),
            detail: match p {
                Problem::UpstreamTimeout => {
                    format!("no answer within {} ms", budget.as_millis())
                }
                Problem::UpstreamConnect => "the upstream could not be reached".into(),
                Problem::UpstreamOverloaded => "the upstream's limits refused the call".into(),
                _ => "the upstream's answer broke off or was not valid HTTP".into(),
            },
            passed: None,
        })?;
        let (head, body) = resp.into_parts();
        let bytes = http_body_util::Limited::new(body, MAX_BACKEND_BODY)
            .collect()
            .await
            .map_err(|e| {
                fail(
                    StatusCode::BAD_GATEWAY,
                    "upstream_protocol_error",
                    e.to_string(),
                )
            })?
            .to_bytes();
        if !head.status.is_success() {
            return Err(Failure {
                status: StatusCode::BAD_GATEWAY,
                code: "backend_error_status",
                detail: format!("answered {}", head.status.as_u16()),
                passed: head.status.is_client_error().then(|| {
                    Box::new((
                        head.status,
                        bytes.clone(),
                        head.headers.get(header::CONTENT_TYPE).cloned(),
                    ))
                }),
            });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            fail(
                StatusCode::BAD_GATEWAY,
                "backend_not_json",
                format!("answered with a body that is not JSON: {e}"),
            )
        })
    };
    // The call's budget covers reading the answer too, not only its head.
    match tokio::time::timeout(budget, exchange).await {
        Ok(r) => r,
        Err(_) => Err(fail(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("no answer within {} ms", budget.as_millis()),
        )),
    }
}

/// The `cache_ttl` key of one backend call (unit separators keep the parts apart).
fn answer_key(route: Option<&str>, backend: &str, upstream: &str, path: &str) -> String {
    format!(
        "{}\u{1f}{backend}\u{1f}{upstream}\u{1f}{path}",
        route.unwrap_or("")
    )
}

fn problem_json(a: &Aggregate, i: usize, f: &Failure, request_id: &HeaderValue) -> Value {
    serde_json::json!({
        "type": format!("urn:portico:problem:{}", f.code),
        "title": f.status.canonical_reason().unwrap_or("Error"),
        "status": f.status.as_u16(),
        "detail": format!("Backend `{}`: {}.", a.backends[i].name, f.detail),
        "code": f.code,
        "backend": &*a.backends[i].name,
        "request_id": request_id.to_str().unwrap_or(""),
    })
}

pub async fn handle(
    ctx: &mut RequestCtx<'_>,
    a: &Aggregate,
    req: &Request<ClientBody>,
    params: &[String],
) -> Result<Response<Body>, Problem> {
    let (rt, request_id) = (ctx.rt, ctx.request_id);
    let cfg = &rt.config;
    // What every backend receives: the request id, the identity Portico established, and the
    // headers the route forwards.
    let mut headers = http::HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(cfg.server.request_id_header.clone(), request_id.clone());
    for name in cfg.server.identity_headers.iter().chain(&a.forward_headers) {
        for v in req.headers().get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let names: Vec<Arc<str>> = a.backends.iter().map(|b| b.name.clone()).collect();
    let n = a.backends.len();
    let mut done: Vec<Option<Outcome>> = vec![None; n];
    let mut started = vec![false; n];
    let mut running = tokio::task::JoinSet::new();
    loop {
        // Start every backend whose dependencies are in; one whose dependency failed fails.
        for i in 0..n {
            if started[i] {
                continue;
            }
            let b = &a.backends[i];
            if b.after.iter().any(|d| done[*d].is_none()) {
                continue;
            }
            started[i] = true;
            if let Some(d) = b.after.iter().find(|d| matches!(done[**d], Some(Err(_)))) {
                done[i] = Some(Err(Failure {
                    status: StatusCode::FAILED_DEPENDENCY,
                    code: "backend_dependency_failed",
                    detail: format!("it needs `{}`, which failed", names[*d]),
                    passed: None,
                }));
                continue;
            }
            let pool = rt.pools[b.upstream].clone();
            let timeout = b.timeout;
            match render(&b.path, params, &done, &names) {
                Ok(path) => {
                    if b.cache_ttl.is_some()
                        && let Some((v, until)) = answer_cache().get(&answer_key(
                            ctx.rec.route.as_deref(),
                            &b.name,
                            &pool.spec.name,
                            &path,
                        ))
                        && until > std::time::Instant::now()
                    {
                        metrics::counter!("portico_aggregate_cache_hits_total").increment(1);
                        done[i] = Some(Ok(v));
                        continue;
                    }
                    // Balanced as the client's own request would be (its address and
                    // headers), on the backend's path.
                    let (p, q) = path.split_once('?').unwrap_or((&path, ""));
                    let target = pool.pick(&crate::upstream::balance::PickContext {
                        headers: req.headers(),
                        client_ip: ctx.rec.client_ip,
                        path: p,
                        query: (!q.is_empty()).then_some(q),
                    });
                    let (method, headers) = (b.method.clone(), headers.clone());
                    // The call's spans are recorded in a fork of the request's trace, taken
                    // back when it ends.
                    let mut fork = ctx.rec.trace.as_mut().map(|t| t.fork());
                    running.spawn(async move {
                        let outcome = call(
                            pool,
                            target,
                            method,
                            path.clone(),
                            headers,
                            timeout,
                            fork.as_deref_mut(),
                        )
                        .await;
                        (i, path, outcome, fork)
                    });
                }
                Err(detail) => {
                    done[i] = Some(Err(Failure {
                        status: StatusCode::BAD_GATEWAY,
                        code: "backend_dependency_failed",
                        detail,
                        passed: None,
                    }));
                }
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        match running.join_next().await {
            Some(Ok((i, path, outcome, fork))) => {
                if let (Some(t), Some(mut f)) = (ctx.rec.trace.as_mut(), fork) {
                    t.adopt(&mut f);
                }
                if let (Some(ttl), Ok(v)) = (a.backends[i].cache_ttl, &outcome) {
                    let key = answer_key(
                        ctx.rec.route.as_deref(),
                        &a.backends[i].name,
                        &rt.pools[a.backends[i].upstream].spec.name,
                        &path,
                    );
                    answer_cache().insert(key, (v.clone(), std::time::Instant::now() + ttl));
                }
                done[i] = Some(outcome);
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "aggregate backend task failed");
                return Err(Problem::UpstreamProtocol);
            }
            None => {
                // Nothing running, yet some not done: only a dependency failure leaves that,
                // and the next round marks them.
                continue;
            }
        }
    }

    // A required failure decides the answer.
    for (i, b) in a.backends.iter().enumerate() {
        if let Some(Err(f)) = &done[i]
            && b.required
        {
            ctx.rec.upstream = Some(b.name.clone());
            if a.pass_through_client_errors
                && let Some(passed) = &f.passed
            {
                let (status, body, ct) = &**passed;
                let mut r = Response::new(Body::full(body.clone()));
                *r.status_mut() = *status;
                if let Some(ct) = ct {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                }
                return Ok(r);
            }
            let status = if f.status == StatusCode::GATEWAY_TIMEOUT {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            let mut body = problem_json(a, i, f, request_id);
            body["status"] = status.as_u16().into();
            body["title"] = status.canonical_reason().unwrap_or("Error").into();
            let mut r = Response::new(Body::full(body.to_string()));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            return Ok(r);
        }
    }
    let mut out = Map::new();
    let mut errors = Vec::new();
    for (i, b) in a.backends.iter().enumerate() {
        let shaped = done[i]
            .take()
            .map(|o| o.and_then(|v| shape(v, &b.shaping, &b.name)));
        match shaped {
            Some(Ok(Value::Object(o))) if b.merge => out.extend(o),
            Some(Ok(v)) => {
                out.insert(b.name.to_string(), v);
            }
            Some(Err(f)) => errors.push(problem_json(a, i, &f, request_id)),
            None => {}
        }
    }
    let partial = !errors.is_empty();
    let mut out = Value::Object(out);
    // `?fields=a,b.c`: the client keeps only what it shows (problems always stay).
    if a.sparse_fieldsets
        && let Some(wanted) = req
            .uri()
            .query()
            .and_then(|q| portico_config::query::get(Some(q), "fields"))
    {
        match portico_translate::shape::Fields::parse(wanted.split(',')) {
            Some(f) => f.keep(&mut out),
            None => {
                return Err(Problem::BadRequest(
                    "The `fields` parameter must list dotted field paths separated by commas.",
                ));
            }
        }
    }
    if partial && let Value::Object(o) = &mut out {
        o.insert(a.errors_key.clone(), Value::Array(errors));
    }
    let mut r = Response::new(Body::full(out.to_string()));
    *r.status_mut() = if partial {
        a.partial_status
    } else {
        StatusCode::OK
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::HeaderName::from_static("portico-aggregation"),
        HeaderValue::from_static(if partial { "partial" } else { "complete" }),
    );
    Ok(r)
}

/// Applies a backend's shaping to its answer.
fn shape(v: Value, s: &portico_config::Shaping, name: &str) -> Outcome {
    let mut v = match &s.extract {
        None => v,
        Some(path) => portico_translate::shape::extract(v, path).ok_or_else(|| Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "backend_shape_mismatch",
            detail: format!("`{name}` answered without `{path}` to extract"),
            passed: None,
        })?,
    };
    if let Some(k) = &s.keep {
        k.keep(&mut v);
    }
    if let Some(d) = &s.drop {
        d.drop_from(&mut v);
    }
    if !s.rename.is_empty() {
        portico_translate::shape::rename(&mut v, &s.rename);
    }
    Ok(v)
}
