//! The request as the upstream gets it (`build_upstream_request`), its copy to a mirror, and the
//! tunnel after a protocol switch.

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};
use portico_config::{Policy, ProxyAction, Route, Scheme, Target};

use crate::base::headers;
use crate::body::Body;
use crate::body::problem::Problem;
use crate::runtime::Runtime;

use crate::runtime::ctx::RequestCtx;

#[allow(clippy::too_many_arguments)]
pub(crate) fn build_upstream_request(
    ctx: &RequestCtx<'_>,
    req: Request<ClientBody>,
    route: &Route,
    action: &ProxyAction,
    target: &Target,
    params: &[String],
    upgrade: bool,
    claims: Option<&portico_auth::jwt::Claims>,
    // The client's `Host` header, looked up once by the caller.
    host_header: Option<HeaderValue>,
) -> Result<Request<Body>, Problem> {
    let (rt, conn, request_id, bytes_in) = (ctx.rt, ctx.conn, ctx.request_id, ctx.bytes_in);
    let client_ip = ctx.rec.client_ip;
    let cfg = &rt.config;
    let (mut parts, body) = req.into_parts();

    // Path and query.
    let pq = match action.rewrite(parts.uri.path(), parts.uri.query(), params) {
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(full) => PathAndQuery::try_from(full)
            .map_err(|_| Problem::BadRequest("The rewritten path is not a valid URI path."))?,
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
pub(crate) async fn mirror(
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
            let (_, resp) = pool.send(target, &mut copy, None).await.ok()?;
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

/// Copies bytes both ways between the client and the upstream after a `101 Switching Protocols`.
pub(crate) async fn tunnel(
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
