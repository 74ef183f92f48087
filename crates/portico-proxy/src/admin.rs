//! The admin listener: health, readiness, metrics, the active config, and reload.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::gateway::{Gateway, Inner};

pub async fn bind(addr: SocketAddr, inner: Arc<Inner>) -> Result<SocketAddr, String> {
    let listener = crate::listen::inherited::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on admin address {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // TLS, and with it client certificates, is read once: like the address, a change needs a
    // restart (a reload says so).
    let tls = match &inner.shared.runtime.load().config.admin_access.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            crate::listen::tls::server_config(t, true, false)
                .map_err(|e| format!("admin TLS: {e}"))?,
        )),
        None => None,
    };
    tracing::info!(address = %local, tls = tls.is_some(), "admin listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let inner = inner.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| audited(inner.clone(), req, peer));
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        let accepted = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(stream),
                        )
                        .await;
                        match accepted {
                            Ok(Ok(s)) => {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                            _ => tracing::debug!(%peer, "admin TLS handshake failed"),
                        }
                    }
                }
            });
        }
    });
    Ok(local)
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// [`answer`], with every request that would change state (any method but `GET`, `HEAD` and
/// `OPTIONS`, `POST /explain` aside) recorded in the audit trail with its caller and outcome,
/// refused ones included. A request without a valid token (401) is counted in the trail's
/// security summary instead of a record of its own: anyone who reaches the port can send
/// those, and a flood of records would rotate the trail's history away.
async fn audited(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // The endpoint as the guard and the router see it (`/api/v1/…` is another name for it).
    let path = req.uri().path();
    let path = path
        .strip_prefix("/api/v1")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path)
        .to_owned();
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && path != "/explain";
    let method = req.method().clone();
    let resp = answer(inner.clone(), req).await;
    if changes && let Ok(r) = &resp {
        if r.status() == StatusCode::UNAUTHORIZED {
            if let Some(a) = &inner.shared.runtime.load().audit {
                a.count_refusal(None, "admin_unauthorized", 401);
            }
        } else {
            Gateway::from_inner(inner).audit_admin(
                method.as_str(),
                &path,
                peer,
                r.status().as_u16(),
            );
        }
    }
    resp
}

/// The admin API's OpenAPI 3.1 document (`GET /api/openapi.json`).
const OPENAPI: &str = include_str!("admin-openapi.json");

/// The console, served at `/` from the binary: a page, a script and a style sheet that use
/// the API (`assets/console`).
const CONSOLE: [(&str, &str, &str); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../assets/console/index.html"),
    ),
    (
        "/ui/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console/console.js"),
    ),
    (
        "/ui/console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console/console.css"),
    ),
    (
        "/ui/icon.svg",
        "image/svg+xml",
        include_str!("../assets/console/icon.svg"),
    ),
];

/// A console file: no inline script or style, nothing from elsewhere, never framed.
fn console_file(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = reply(StatusCode::OK, content_type, body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn answer(
    inner: Arc<Inner>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    // `/api/v1/…` is the versioned name of every endpoint (what tools should pin).
    if let Some(rest) = req.uri().path().strip_prefix("/api/v1")
        && rest.starts_with('/')
    {
        let target = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        if let Ok(u) = target.parse() {
            *req.uri_mut() = u;
        }
    }
    if let Some(refused) = guard(&inner.shared.runtime.load().config.admin_access, &req) {
        return Ok(refused);
    }
    if matches!(*req.method(), Method::GET | Method::HEAD)
        && let Some((_, ctype, body)) = CONSOLE.iter().find(|(p, _, _)| *p == req.uri().path())
    {
        return Ok(console_file(ctype, body));
    }
    if req.uri().path() == "/api/openapi.json" {
        return Ok(match *req.method() {
            Method::GET | Method::HEAD => reply(StatusCode::OK, JSON, OPENAPI),
            _ => problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "GET /api/openapi.json".into(),
            ),
        });
    }
    if let Some(name) = req
        .uri()
        .path()
        .strip_prefix("/upstreams/")
        .and_then(|p| p.strip_suffix("/targets"))
        .map(str::to_owned)
    {
        return Ok(targets(inner, req, &name).await);
    }
    if let Some(rest) = req.uri().path().strip_prefix("/config/") {
        let rest = rest.to_owned();
        return Ok(config_versions(&inner, req, &rest).await);
    }
    if req.method() == Method::GET && req.uri().path() == "/openapi.json" {
        let rt = inner.shared.runtime.load_full();
        // With the methods of routes that learnt them by reflection.
        let doc = portico_config::describe::openapi_with(&rt.config, &|r| {
            rt.reflected.get(r.index).and_then(|s| s.load_full())
        });
        return Ok(reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&doc).unwrap_or_default(),
        ));
    }
    if req.method() == Method::GET
        && let Some(rest) = req.uri().path().strip_prefix("/openapi")
    {
        return Ok(openapi(&inner, rest.trim_start_matches('/')));
    }
    let r = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n"),
        (&Method::GET, "/readyz") => {
            if inner.draining.load(Ordering::Acquire) {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n")
            } else if let Some(note) = inner.store.get().and_then(|s| s.readiness_note()) {
                // Still ready: the node serves its last good config. The note says what it
                // cannot do meanwhile (follow pushes).
                reply(StatusCode::OK, TEXT, format!("ready; {note}\n"))
            } else {
                reply(StatusCode::OK, TEXT, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let rt = inner.shared.runtime.load();
            metrics::gauge!("portico_config_generation").set(rt.generation as f64);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                inner.prometheus.render(),
            )
        }
        (&Method::GET, "/config") => {
            let rt = inner.shared.runtime.load_full();
            let body = serde_json::json!({
                "source": rt.config.source,
                "hash": rt.config.hash,
                "generation": rt.generation,
                "loaded_at": crate::observe::access_log::rfc3339(rt.loaded_at),
                "last_reload_error": inner.last_reload_error.lock().map(|e| e.clone()).unwrap_or(None),
                "store": inner.store.get().map(|s| s.status()),
                "target_overrides": overrides_json(&inner),
                "config": rt.config.redacted(),
            });
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        (&Method::GET, "/upstreams") => {
            let rt = inner.shared.runtime.load_full();
            let body: serde_json::Map<String, serde_json::Value> = rt
                .pools
                .iter()
                .map(|p| {
                    let from = if overridden(&inner, &p.spec.name) {
                        "admin_api"
                    } else {
                        "config"
                    };
                    (
                        p.spec.name.to_string(),
                        serde_json::json!({ "targets": p.health(), "targets_from": from }),
                    )
                })
                .collect();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        (&Method::POST, "/explain") => explain(&inner, req).await,
        (&Method::GET, "/stats") => {
            let window = match portico_config::query::get(req.uri().query(), "window") {
                None => Ok(std::time::Duration::from_secs(900)),
                Some(w) => portico_config::duration::parse_duration(&w),
            };
            match window {
                Ok(w) if (1..=900).contains(&w.as_secs()) => {
                    let now = crate::runtime::fleet::unix_ms(std::time::SystemTime::now()) / 1000;
                    reply(
                        StatusCode::OK,
                        JSON,
                        serde_json::to_vec(&inner.shared.live.report(w.as_secs(), now))
                            .unwrap_or_default(),
                    )
                }
                Ok(_) | Err(_) => problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "`window` is a duration from 1s to 15m, such as `60s` or `5m` (default 15m)"
                        .into(),
                ),
            }
        }
        (&Method::GET, "/cluster") => cluster(&inner).await,
        (&Method::GET, "/consumers") => {
            let rt = inner.shared.runtime.load_full();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&consumers(&rt.config)).unwrap_or_default(),
            )
        }
        (&Method::PUT, "/config") => put_config(&inner, req).await,
        (&Method::GET, "/routes") => {
            let rt = inner.shared.runtime.load_full();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&portico_config::explain::routes(&rt.config))
                    .unwrap_or_default(),
            )
        }
        (&Method::GET, "/contract/violations") => {
            let q = req.uri().query();
            let route = portico_config::query::get(q, "route");
            let limit = match portico_config::query::get(q, "limit").map(|l| l.parse::<usize>()) {
                None => Ok(crate::observe::violations::KEPT),
                Some(Ok(n)) if (1..=crate::observe::violations::KEPT).contains(&n) => Ok(n),
                Some(_) => Err(()),
            };
            match limit {
                Ok(limit) => {
                    let rt = inner.shared.runtime.load_full();
                    let list = rt.violations.report(route.as_deref(), limit);
                    reply(
                        StatusCode::OK,
                        JSON,
                        serde_json::to_vec_pretty(&serde_json::json!({ "violations": list }))
                            .unwrap_or_default(),
                    )
                }
                Err(()) => problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    format!(
                        "`limit` is a number from 1 to {}",
                        crate::observe::violations::KEPT
                    ),
                ),
            }
        }
        (&Method::GET, "/caches") => {
            let rt = inner.shared.runtime.load_full();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&caches(&rt)).unwrap_or_default(),
            )
        }
        (&Method::GET, "/rate-limits") => {
            let rt = inner.shared.runtime.load_full();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&rate_limits(&rt)).unwrap_or_default(),
            )
        }
        (&Method::POST, "/reload") => {
            match Gateway::from_inner(inner.clone())
                .reload_file_from("admin")
                .await
            {
                Ok(notes) => reply(
                    StatusCode::OK,
                    JSON,
                    serde_json::json!({ "result": "applied", "notes": notes }).to_string(),
                ),
                Err(e) => reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "application/problem+json",
                    serde_json::json!({
                        "type": "about:blank",
                        "title": "Config refused",
                        "status": 422,
                        "detail": e.to_string(),
                        "result": "rejected",
                        "errors": e.to_string(),
                    })
                    .to_string(),
                ),
            }
        }
        (&Method::DELETE, "/cache") => {
            let prefix = req
                .uri()
                .query()
                .and_then(|q| portico_config::query::get(Some(q), "prefix"));
            let rt = inner.shared.runtime.load_full();
            let stores = rt.policies.caches();
            for c in &stores {
                c.purge(prefix.as_deref());
            }
            reply(
                StatusCode::OK,
                JSON,
                serde_json::json!({ "purged": prefix.as_deref().unwrap_or("everything"), "stores": stores.len() }).to_string(),
            )
        }
        (
            _,
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/config"
            | "/upstreams"
            | "/reload"
            | "/cache"
            | "/explain"
            | "/cluster"
            | "/stats"
            | "/consumers"
            | "/caches"
            | "/rate-limits"
            | "/routes"
            | "/contract/violations",
        ) => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            format!(
                "{} does not take {}; see /api/openapi.json",
                req.uri().path(),
                req.method()
            ),
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            "no such admin endpoint; the API is described at /api/openapi.json".into(),
        ),
    };
    Ok(r)
}

/// A write's body, at most 64 KiB (a larger one is refused with 413).
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    read_body_up_to(req, 64 * 1024).await
}

async fn read_body_up_to(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response<Full<Bytes>>> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Body too large",
            format!("send at most {} KiB", limit / 1024),
        )),
    }
}

/// `POST /explain`: `portico explain` against the live config. The body is JSON:
/// `{"url": "http://host/path?q" or "/path", "method": "GET", "headers": {"name": "value"},
/// "listener": "name"}` (only `url` is required); the answer is explain's JSON.
async fn explain(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let bad = |detail: String| {
        problem(
            StatusCode::BAD_REQUEST,
            "Invalid request to explain",
            detail,
        )
    };
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("the body is not JSON: {e}")),
    };
    let Some(uri) = v["url"].as_str().and_then(|u| u.parse::<http::Uri>().ok()) else {
        return bad("`url` must be a URL: \"http://host/path\" or \"/path\"".into());
    };
    let Ok(method) = Method::from_bytes(v["method"].as_str().unwrap_or("GET").as_bytes()) else {
        return bad("`method` is not an HTTP method".into());
    };
    let mut headers = http::HeaderMap::new();
    if let Some(h) = v["headers"].as_object() {
        for (name, value) in h {
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(http::HeaderValue::from_str),
            ) {
                (Ok(n), Some(Ok(val))) => {
                    headers.append(n, val);
                }
                _ => {
                    return bad(format!(
                        "header `{name}` is not a valid name and text value"
                    ));
                }
            }
        }
    }
    let rt = inner.shared.runtime.load_full();
    let listener = v["listener"].as_str();
    if let Some(l) = listener
        && !rt.config.listeners.iter().any(|x| &*x.name == l)
    {
        return bad(format!("the config has no listener `{l}`"));
    }
    let mut out = portico_config::explain::explain(
        &rt.config,
        &portico_config::explain::Request {
            listener,
            method,
            uri,
            headers,
        },
    );
    // On a running node, each upstream's targets as the pool has them now: health, ejection,
    // load, and targets set through the admin API.
    if let Some(ups) = out["action"]["proxy"]["upstreams"].as_array_mut() {
        for u in ups {
            let name = u["upstream"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(pool) = rt.pools.iter().find(|p| *p.spec.name == *name) {
                u["upstream"]["live_targets"] = serde_json::Value::Array(pool.health());
                u["upstream"]["targets_from"] = if overridden(inner, &name) {
                    "admin_api".into()
                } else {
                    "config".into()
                };
            }
        }
    }
    // On a running node, the route's last answers that broke its contract.
    if out["contract"].is_object()
        && let Some(route) = out["route"]["name"].as_str()
    {
        let recent = rt.violations.report(Some(route), 10);
        out["contract"]["recent_violations"] = serde_json::Value::Array(recent);
    }
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec_pretty(&out).unwrap_or_default(),
    )
}

fn overridden(inner: &Inner, name: &str) -> bool {
    inner
        .target_overrides
        .lock()
        .is_ok_and(|o| o.contains_key(name))
}

fn overrides_json(inner: &Inner) -> serde_json::Value {
    let o = inner
        .target_overrides
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    o.iter()
        .map(|(name, targets)| (name.clone(), targets_json(targets)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn targets_json(targets: &[portico_config::Target]) -> serde_json::Value {
    targets
        .iter()
        .map(|t| serde_json::json!({ "url": &*t.display, "weight": t.weight }))
        .collect()
}

/// An RFC 9457 problem answer.
/// The refusal, if any, of what keeps a web page and a stranger from using the admin port:
/// - `Host` must be an IP address, `localhost` or a name in `admin.allowed_hosts`, so a page
///   whose name was re-bound to the admin address (DNS rebinding) is refused, reads included;
/// - a state-changing request (anything but `GET`, `HEAD`, `OPTIONS`) is refused when it says
///   it comes from another origin (`Origin`, `Sec-Fetch-Site`) or carries a body type that a
///   page may send cross-origin without asking (`text/plain`, form encodings), so a page can
///   neither `POST /reload` nor re-point an upstream;
/// - with `admin.token_hash`, a state-changing request must carry `Authorization: Bearer
///   <token>` whose SHA-256 digest matches (a read-only token gets 403);
/// - with `admin.read_token_hashes`, so must a read (`GET`, `POST /explain`), with a read
///   token or the write token; `/healthz` and `/readyz` stay open for probes.
fn guard(
    access: &portico_config::AdminAccess,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let h = req.headers();
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host
        && !admin_host_allowed(host, &access.allowed_hosts)
    {
        return Some(problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "`Host: {host}` is not an address of this admin port; name it by IP address or `localhost`, or list the name in `admin.allowed_hosts`"
            ),
        ));
    }
    // `POST /explain` reads: it takes a body only to describe the request to explain.
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || (req.method() == Method::POST && req.uri().path() == "/explain");
    if reads {
        // Probes, and the console's page and assets (a browser cannot send a token with a
        // page or a script it loads; they hold no data: the page asks the API, with a token).
        let path = req.uri().path();
        let public = matches!(path, "/healthz" | "/readyz" | "/") || path.starts_with("/ui/");
        if access.read_tokens.is_empty() || public {
            return None;
        }
        let ok = bearer(h).is_some_and(|t| {
            access
                .read_tokens
                .iter()
                .chain(access.token.iter())
                .any(|want| portico_auth::apikey::matches(t.as_bytes(), want))
        });
        return (!ok).then(|| {
            unauthorized(
                "this admin request needs `Authorization: Bearer <token>` with a read token (admin.read_token_hashes) or the write token",
            )
        });
    }
    let cross_site = h
        .get("sec-fetch-site")
        .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"));
    let foreign_origin = h.get(header::ORIGIN).is_some_and(|o| {
        let same = host.is_some_and(|host| {
            o.to_str().is_ok_and(|o| {
                o.strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"))
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
            })
        });
        !same
    });
    if cross_site || foreign_origin {
        return Some(problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "state-changing admin requests are not accepted from another origin".into(),
        ));
    }
    let simple_type = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            matches!(
                t.as_str(),
                "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
            )
        });
    if simple_type {
        return Some(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "state-changing admin requests take `application/json` or no body".into(),
        ));
    }
    if let Some(want) = &access.token {
        let ok = bearer(h).is_some_and(|t| portico_auth::apikey::matches(t.as_bytes(), want));
        if !ok {
            // A read token is not enough here: say so rather than "no token".
            let read_only = bearer(h).is_some_and(|t| {
                access
                    .read_tokens
                    .iter()
                    .any(|r| portico_auth::apikey::matches(t.as_bytes(), r))
            });
            if read_only {
                return Some(problem(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "this token may only read; changes need the write token (admin.token_hash)"
                        .into(),
                ));
            }
            return Some(unauthorized(
                "this admin request needs `Authorization: Bearer <token>` (admin.token_hash)",
            ));
        }
    }
    None
}

/// The bearer token of a request, if it sends one.
fn bearer(h: &http::HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.get(..7)
        .filter(|s| s.eq_ignore_ascii_case("bearer "))
        .map(|_| v[7..].trim())
}

/// 401 with the admin realm's challenge.
fn unauthorized(detail: &str) -> Response<Full<Bytes>> {
    let mut r = problem(StatusCode::UNAUTHORIZED, "Unauthorized", detail.into());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portico-admin\""),
    );
    r
}

/// Whether `Host` names this admin port in a way no web page can borrow.
fn admin_host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]:port`
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// `GET /cluster`: the nodes sharing this gateway's Redis, their configs, and which run
/// another config than the fleet's newest.
async fn cluster(inner: &Arc<Inner>) -> Response<Full<Bytes>> {
    let rt = inner.shared.runtime.load_full();
    let Some(store) = rt.redis.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            "No fleet",
            "this gateway has no `redis` section: nodes publish heartbeats only to a shared Redis"
                .into(),
        );
    };
    match crate::runtime::fleet::view(&store).await {
        Ok(v) => {
            let mut body = serde_json::to_value(&v).unwrap_or_default();
            body["node"] = inner.node_id.clone().into();
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis unavailable",
            format!("the fleet's heartbeats cannot be read: {e}"),
        ),
    }
}

fn problem(status: StatusCode, title: &str, detail: String) -> Response<Full<Bytes>> {
    reply(
        status,
        "application/problem+json",
        serde_json::json!({ "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail })
            .to_string(),
    )
}

/// The answer to a config write (`PUT /config`, `POST /config/rollback`).
fn written(
    r: Result<crate::gateway::Written, crate::gateway::ConfigWriteError>,
) -> Response<Full<Bytes>> {
    use crate::gateway::{ConfigWriteError as E, Written};
    const JSON: &str = "application/json";
    match r {
        Ok(Written::Pushed { version, applied }) => reply(
            StatusCode::OK,
            JSON,
            serde_json::json!({
                "result": "pushed",
                "store_version": version,
                "applied_here": applied.is_ok(),
                "error": applied.err().map(|e| e.to_string()),
            })
            .to_string(),
        ),
        Ok(Written::File { path, applied }) => reply(
            StatusCode::OK,
            JSON,
            serde_json::json!({
                "result": "written",
                "file": path,
                "applied_here": applied.is_ok(),
                "error": applied.err().map(|e| e.to_string()),
            })
            .to_string(),
        ),
        Err(e @ E::Unknown(_)) => problem(StatusCode::NOT_FOUND, "Not Found", e.to_string()),
        Err(e @ (E::Push(crate::runtime::config_store::PushError::Store(_)) | E::Interrupted)) => {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                e.to_string(),
            )
        }
        Err(e @ E::DoesNotLoad(_)) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Content",
            e.to_string(),
        ),
        Err(e @ E::Stale { .. }) => problem(
            StatusCode::PRECONDITION_FAILED,
            "Precondition Failed",
            e.to_string(),
        ),
        Err(e @ E::File { .. }) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            e.to_string(),
        ),
        Err(e) => problem(StatusCode::CONFLICT, "Conflict", e.to_string()),
    }
}

/// The largest config `PUT /config` takes.
const MAX_CONFIG_BODY: usize = 4 << 20;

/// `PUT /config`: the body (YAML, UTF-8) becomes the config where this node's comes from
/// (see `Gateway::write_config`). `If-Match` (the running config's `hash`, from `GET
/// /config`) makes it conditional; `?note=` is kept with it.
async fn put_config(inner: &Arc<Inner>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let expect = req
        .headers()
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        });
    let note = portico_config::query::get(req.uri().query(), "note").map(|n| n.into_owned());
    let body = match read_body_up_to(req, MAX_CONFIG_BODY).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "the body must be the config as UTF-8 YAML text".into(),
        );
    };
    let gw = Gateway::from_inner(inner.clone());
    written(
        gw.write_config(
            text,
            &format!("node {}", inner.node_id),
            note,
            expect.as_deref(),
        )
        .await,
    )
}

/// `/config/versions` (the configs this node applied, newest first), `/config/versions/G`
/// (one, redacted), `/config/diff?from=G&to=G` (what changed between two; `to` defaults to the
/// current one) and `POST /config/rollback` with `{"generation": G}` (store-backed nodes).
async fn config_versions(
    inner: &Arc<Inner>,
    req: Request<Incoming>,
    rest: &str,
) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    let versions = inner.versions();
    let current = inner.shared.runtime.load().generation;
    let not_found = |g: u64| {
        problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!(
                "generation {g} is not among the configs this node remembers (see /config/versions)"
            ),
        )
    };
    // A generation given as text; `Err` holds the problem's detail.
    let generation = |s: Option<&str>| -> Result<Option<u64>, String> {
        match s {
            None => Ok(None),
            Some(t) => t
                .parse()
                .map(Some)
                .map_err(|_| format!("`{t}` is not a generation number (see /config/versions)")),
        }
    };
    let bad = |detail: String| problem(StatusCode::BAD_REQUEST, "Bad Request", detail);
    match (req.method(), rest) {
        (&Method::GET, "versions") => {
            let list: Vec<serde_json::Value> =
                versions.iter().rev().map(|v| v.summary(current)).collect();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&serde_json::json!({ "versions": list }))
                    .unwrap_or_default(),
            )
        }
        (&Method::GET, "diff") => {
            let q = req.uri().query();
            let (from, to) = match (
                generation(portico_config::query::get(q, "from").as_deref()),
                generation(portico_config::query::get(q, "to").as_deref()),
            ) {
                (Ok(Some(f)), Ok(t)) => (f, t.unwrap_or(current)),
                (Ok(None), _) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "Bad Request",
                        "give `from` (and optionally `to`): generations from /config/versions".into(),
                    );
                }
                (Err(r), _) | (_, Err(r)) => return bad(r),
            };
            let find = |g: u64| versions.iter().find(|v| v.generation == g);
            let (Some(a), Some(b)) = (find(from), find(to)) else {
                return not_found(if find(from).is_none() { from } else { to });
            };
            let changes: Vec<String> = portico_config::diff::diff(&a.redacted(), &b.redacted())
                .iter()
                .map(ToString::to_string)
                .collect();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&serde_json::json!({
                    "from": a.summary(current),
                    "to": b.summary(current),
                    "same": a.hash == b.hash,
                    "changes": changes,
                }))
                .unwrap_or_default(),
            )
        }
        (&Method::POST, "rollback") => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            let Some(g) = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["generation"].as_u64())
            else {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    "send `{\"generation\": G}` with a generation from /config/versions".into(),
                );
            };
            let gw = Gateway::from_inner(inner.clone());
            written(
                gw.rollback_to(g, &format!("node {}", inner.node_id))
                    .await,
            )
        }
        (&Method::GET, v) if v.starts_with("versions/") => {
            let g = match generation(v.strip_prefix("versions/")) {
                Ok(Some(g)) => g,
                Ok(None) => return not_found(0),
                Err(r) => return bad(r),
            };
            match versions.iter().find(|x| x.generation == g) {
                Some(x) => {
                    let mut body = x.summary(current);
                    body["config"] = x.redacted();
                    reply(
                        StatusCode::OK,
                        JSON,
                        serde_json::to_vec_pretty(&body).unwrap_or_default(),
                    )
                }
                None => not_found(g),
            }
        }
        (_, "versions" | "diff" | "rollback") => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "GET /config/versions, GET /config/versions/G, GET /config/diff?from=G&to=G, POST /config/rollback".into(),
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            "try /config/versions, /config/versions/G, /config/diff?from=G&to=G or POST /config/rollback".into(),
        ),
    }
}

/// `GET /consumers`: each consumer's name, groups and metadata (from the redacted config) and
/// which kinds of credential it has and how many (counted in the config's tree: only the
/// number of entries is read, never a secret or a digest).
/// Every policy of the config with where it applies: `None` for the global chain (every
/// route), else the route's name.
fn placed_policies(
    cfg: &portico_config::Config,
) -> impl Iterator<Item = (Option<&str>, &portico_config::Policy)> {
    cfg.global_policies.iter().map(|p| (None, p)).chain(
        cfg.routes
            .iter()
            .flat_map(|r| r.policies.iter().map(move |p| (Some(&*r.name), p))),
    )
}

/// `GET /caches`: each response store (policies with equal settings share one), the routes
/// that use it, and its counts.
fn caches(rt: &crate::runtime::Runtime) -> serde_json::Value {
    let mut out: Vec<(
        std::sync::Arc<crate::policy::cache::ResponseCache>,
        serde_json::Value,
    )> = Vec::new();
    for (route, p) in placed_policies(&rt.config) {
        let portico_config::Policy::Cache(c) = p else {
            continue;
        };
        let store = rt.policies.cache(c.slot);
        let at = route.map_or_else(|| serde_json::json!("*"), |r| serde_json::json!(r));
        if let Some((_, v)) = out
            .iter_mut()
            .find(|(s, _)| std::sync::Arc::ptr_eq(s, store))
        {
            if let Some(routes) = v["routes"].as_array_mut()
                && !routes.contains(&at)
            {
                routes.push(at);
            }
            continue;
        }
        let mut v = store.stats();
        v["routes"] = serde_json::json!([at]);
        v["max_entries"] = serde_json::json!(c.max_entries);
        out.push((store.clone(), v));
    }
    serde_json::json!({ "caches": out.into_iter().map(|(_, v)| v).collect::<Vec<_>>() })
}

/// How a limit key is written in the config.
fn limit_key_name(k: &portico_config::LimitKey) -> String {
    use portico_config::LimitKey;
    match k {
        LimitKey::ClientIp => "client_ip".into(),
        LimitKey::Route => "route".into(),
        LimitKey::Consumer => "consumer".into(),
        LimitKey::Header(h) => format!("header:{h}"),
        LimitKey::Claim(c) => format!("claim:{c}"),
        LimitKey::Composite(parts) => parts
            .iter()
            .map(limit_key_name)
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// A refused key as the API shows it. Addresses, routes and consumer names are shown; a key
/// made from a header or a claim may be a credential (an API key, a token's subject), so it
/// is shown as the start of its SHA-256 digest: enough to tell keys apart and to find one
/// whose value is known, never the value.
fn shown_key(kind: &portico_config::LimitKey, key: &str) -> String {
    use portico_config::LimitKey;
    match kind {
        LimitKey::ClientIp | LimitKey::Route | LimitKey::Consumer => key.to_string(),
        _ => {
            use sha2::Digest;
            let d = sha2::Sha256::digest(key.as_bytes());
            let mut hex = [0u8; 16];
            crate::observe::trace::write_hex(&d[..8], &mut hex);
            format!("sha256:{}", String::from_utf8_lossy(&hex))
        }
    }
}

/// `GET /rate-limits`: each `rate_limit` policy, its limits, where its counters live, and
/// the keys it refused most since its counters were made.
fn rate_limits(rt: &crate::runtime::Runtime) -> serde_json::Value {
    let list: Vec<serde_json::Value> = placed_policies(&rt.config)
        .filter_map(|(route, p)| match p {
            portico_config::Policy::RateLimit(rl) => Some((route, rl)),
            _ => None,
        })
        .map(|(route, rl)| {
            let l = rt.policies.rate_limit(rl.slot);
            let limits: Vec<serde_json::Value> = l
                .limits()
                .map(|x| {
                    serde_json::json!({
                        "requests": x.requests,
                        "per_seconds": x.per.as_secs_f64(),
                        "burst": x.burst,
                        "algorithm": if x.sliding { "sliding_window" } else { "token_bucket" },
                    })
                })
                .collect();
            let top: Vec<serde_json::Value> = l
                .refusals
                .top()
                .iter()
                .map(|(k, n)| serde_json::json!({ "key": shown_key(&rl.key, k), "refused": n }))
                .collect();
            serde_json::json!({
                "route": route.unwrap_or("*"),
                "key": limit_key_name(&rl.key),
                "limits": limits,
                "store": match rl.store {
                    portico_config::LimitStore::Local => "local",
                    portico_config::LimitStore::Redis { .. } => "redis",
                },
                "local_keys": l.keys(),
                "refused": l.refusals.total.load(std::sync::atomic::Ordering::Relaxed),
                "top_refused": top,
            })
        })
        .collect();
    serde_json::json!({ "rate_limits": list })
}

fn consumers(cfg: &portico_config::Config) -> serde_json::Value {
    use portico_config::tree::NodeKind;
    let redacted = cfg.redacted();
    let tree = portico_config::tree::parse_document(&cfg.text).ok();
    let raw: Vec<&portico_config::tree::Node> = match tree.as_ref().map(|t| &t.kind) {
        Some(NodeKind::Map(entries)) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("consumers"))
            .and_then(|(_, v)| match &v.kind {
                NodeKind::Seq(items) => Some(items.iter().collect()),
                _ => None,
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let list: Vec<serde_json::Value> = redacted["consumers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut credentials = serde_json::Map::new();
            if let Some(NodeKind::Map(fields)) = raw.get(i).map(|n| &n.kind) {
                for (k, v) in fields {
                    let Some(k) = k.as_str() else { continue };
                    if matches!(k, "name" | "groups" | "metadata") {
                        continue;
                    }
                    let n = match &v.kind {
                        NodeKind::Seq(items) => items.len(),
                        NodeKind::Null => 0,
                        _ => 1,
                    };
                    if n > 0 {
                        credentials.insert(k.to_owned(), n.into());
                    }
                }
            }
            serde_json::json!({
                "name": c["name"],
                "groups": c.get("groups").cloned().unwrap_or_else(|| serde_json::json!([])),
                "metadata": c.get("metadata").cloned().unwrap_or_else(|| serde_json::json!({})),
                "credentials": credentials,
            })
        })
        .collect();
    serde_json::json!({ "consumers": list })
}

/// `/upstreams/NAME/targets`: `GET` the targets in use, `PUT {"targets": [...]}` to replace
/// them without touching the file, `DELETE` to return to the file's.
async fn targets(inner: Arc<Inner>, req: Request<Incoming>, name: &str) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    let gw = Gateway::from_inner(inner.clone());
    let current = |inner: &Inner| {
        let rt = inner.shared.runtime.load_full();
        rt.pools.iter().find(|p| &*p.spec.name == name).map(|p| {
            serde_json::json!({
                "upstream": name,
                "targets": targets_json(&p.spec.targets),
                "targets_from": if overridden(inner, name) { "admin_api" } else { "config" },
            })
            .to_string()
        })
    };
    let unknown = || {
        problem(
            StatusCode::NOT_FOUND,
            "Unknown upstream",
            format!("the running config has no upstream `{name}`"),
        )
    };
    let result = match *req.method() {
        Method::GET => {
            return match current(&inner) {
                Some(body) => reply(StatusCode::OK, JSON, body),
                None => unknown(),
            };
        }
        Method::DELETE => gw.set_targets(name, None).await,
        Method::PUT => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            match parse_targets(&body) {
                Ok(t) => gw.set_targets(name, Some(t)).await,
                Err(e) => return problem(StatusCode::BAD_REQUEST, "Invalid targets", e),
            }
        }
        _ => {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "method not allowed; use GET, PUT or DELETE\n",
            );
        }
    };
    match result {
        Ok(()) => reply(StatusCode::OK, JSON, current(&inner).unwrap_or_default()),
        Err(crate::gateway::TargetsError::UnknownUpstream) => unknown(),
        Err(crate::gateway::TargetsError::Invalid(e)) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "Targets not applied", e)
        }
    }
}

/// `{"targets": ["http://host:port", {"url": "http://host:port", "weight": 2}, ...]}`, with
/// the same rules as targets in the file.
fn parse_targets(body: &[u8]) -> Result<Vec<portico_config::Target>, String> {
    let hint =
        r#"send {"targets": ["http://host:port", {"url": "http://host:port", "weight": 2}]}"#;
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e}); {hint}"))?;
    let list = v
        .get("targets")
        .and_then(|t| t.as_array())
        .ok_or_else(|| format!("no `targets` list; {hint}"))?;
    if list.is_empty() {
        return Err("`targets` is empty; an upstream needs at least one target".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let (url, weight) = match item {
            serde_json::Value::String(u) => (u.as_str(), 1),
            serde_json::Value::Object(o) => {
                let url = o
                    .get("url")
                    .and_then(|u| u.as_str())
                    .ok_or_else(|| format!("target {i}: no `url`; {hint}"))?;
                let weight = match o.get("weight") {
                    None => 1,
                    Some(w) => w
                        .as_u64()
                        .filter(|w| (1..=u64::from(u32::MAX)).contains(w))
                        .ok_or_else(|| {
                            format!("target {i}: `weight` must be a whole number of at least 1")
                        })? as u32,
                };
                if let Some(k) = o.keys().find(|k| *k != "url" && *k != "weight") {
                    return Err(format!(
                        "target {i}: unknown key `{k}`; a target has `url` and `weight`"
                    ));
                }
                (url, weight)
            }
            _ => {
                return Err(format!(
                    "target {i}: write a URL string or {{\"url\", \"weight\"}}"
                ));
            }
        };
        let mut t =
            portico_config::parse_target_url(url).map_err(|e| format!("target {i}: {e}"))?;
        t.weight = weight;
        out.push(t);
    }
    Ok(out)
}

/// `GET /openapi`: the routes with a document; `GET /openapi/ROUTE`: the OpenAPI document of
/// a `soap` route's JSON side.
fn openapi(inner: &Inner, name: &str) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    let rt = inner.shared.runtime.load_full();
    let soap_routes = rt.config.routes.iter().filter(|r| r.soap.is_some());
    if name.is_empty() {
        let list: serde_json::Map<String, serde_json::Value> = soap_routes
            .map(|r| (r.name.to_string(), format!("/openapi/{}", r.name).into()))
            .collect();
        return reply(
            StatusCode::OK,
            JSON,
            serde_json::to_vec_pretty(&list).unwrap_or_default(),
        );
    }
    let Some((route, s)) = rt
        .config
        .routes
        .iter()
        .find_map(|r| (&*r.name == name).then_some(r).zip(r.soap.as_ref()))
    else {
        return problem(
            StatusCode::NOT_FOUND,
            "No such document",
            format!("No `soap` route is named `{name}`; GET /openapi lists them."),
        );
    };
    let doc = portico_translate::openapi::document(
        &s.wsdl.schema,
        &s.port,
        &s.prefix,
        &format!("{} (Portico route `{}`)", s.port.name, route.name),
        &s.bindings
            .iter()
            .map(|b| (b.operation, b.method.as_str(), b.path.as_str()))
            .collect::<Vec<_>>(),
    );
    reply(
        StatusCode::OK,
        JSON,
        serde_json::to_vec_pretty(&doc).unwrap_or_default(),
    )
}
