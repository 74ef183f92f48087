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
use tokio::net::TcpListener;

use crate::Inner;

pub async fn bind(addr: SocketAddr, inner: Arc<Inner>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on admin address {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(address = %local, "admin listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inner = inner.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(inner.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
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

async fn answer(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    let r = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n"),
        (&Method::GET, "/readyz") => {
            if inner.draining.load(Ordering::Acquire) {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n")
            } else {
                reply(StatusCode::OK, TEXT, "ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let rt = inner.runtime.load();
            metrics::gauge!("portico_config_generation").set(rt.generation as f64);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                inner.prometheus.render(),
            )
        }
        (&Method::GET, "/config") => {
            let rt = inner.runtime.load_full();
            let body = serde_json::json!({
                "source": rt.config.source,
                "hash": rt.config.hash,
                "generation": rt.generation,
                "loaded_at": crate::access_log::rfc3339(rt.loaded_at),
                "last_reload_error": inner.last_reload_error.lock().map(|e| e.clone()).unwrap_or(None),
                "config": rt.config.redacted,
            });
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        (&Method::GET, "/upstreams") => {
            let rt = inner.runtime.load_full();
            let body: serde_json::Map<String, serde_json::Value> = rt
                .pools
                .iter()
                .map(|p| {
                    (
                        p.spec.name.to_string(),
                        serde_json::json!({ "targets": p.health() }),
                    )
                })
                .collect();
            reply(
                StatusCode::OK,
                JSON,
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        (&Method::POST, "/reload") => match crate::Gateway::from_inner(inner.clone())
            .reload_file()
            .await
        {
            Ok(notes) => reply(
                StatusCode::OK,
                JSON,
                serde_json::json!({ "result": "applied", "notes": notes }).to_string(),
            ),
            Err(e) => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                JSON,
                serde_json::json!({ "result": "rejected", "errors": e }).to_string(),
            ),
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/config" | "/upstreams" | "/reload") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /healthz, /readyz, /metrics, /config, /upstreams or POST /reload\n",
        ),
    };
    Ok(r)
}
