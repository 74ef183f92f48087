//! REST/JSON requests answered by gRPC calls (a route's `grpc_transcode`). The mapping itself
//! is `portico-translate`'s; this module does the I/O: reads the JSON body, sends the call
//! through the upstream's pool (timeouts, retries, breakers and metrics as for any request),
//! reads the answer and its trailers, and writes JSON or a problem.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use portico_config::{GrpcTranscode, ProxyAction, Route};
use portico_translate::{RequestError, grpc};

use crate::access_log::Record;
use crate::body::{Body, BodyStats};
use crate::problem::Problem;
use crate::runtime::Runtime;

/// Largest JSON request body read for a transcoded call (a smaller `body_limit` wins).
const MAX_REQUEST_BODY: u64 = 4 << 20;
/// Largest gRPC response read for a unary call.
const MAX_RESPONSE_BODY: usize = 16 << 20;

/// An answer of the transcoder's own: a problem with fields beyond the fixed ones.
fn problem(
    status: StatusCode,
    code: &str,
    detail: String,
    extra: serde_json::Map<String, serde_json::Value>,
    request_id: &HeaderValue,
) -> Response<Body> {
    let mut body = serde_json::json!({
        "type": format!("urn:portico:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
        "request_id": request_id.to_str().unwrap_or(""),
    });
    if let Some(o) = body.as_object_mut() {
        o.extend(extra);
    }
    let mut resp = Response::new(Body::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

#[allow(clippy::too_many_arguments)]
pub async fn handle(
    rt: &Runtime,
    route: &Arc<Route>,
    action: &ProxyAction,
    t: &GrpcTranscode,
    req: Request<Incoming>,
    path: &str,
    request_id: &HeaderValue,
    bytes_in: &Arc<BodyStats>,
    rec: &mut Record,
) -> Result<Response<Body>, Problem> {
    let cfg = &rt.config;
    let call = match t.transcoder.route(req.method(), path) {
        Ok(c) => c,
        Err(RequestError::MethodNotAllowed) => {
            let mut r = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("No gRPC method is bound to {} {path}.", req.method()),
                Default::default(),
                request_id,
            );
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
            );
            return Ok(r);
        }
        Err(_) => {
            return Ok(problem(
                StatusCode::NOT_FOUND,
                "no_grpc_method",
                format!("No gRPC method is bound to {} {path}.", req.method()),
                Default::default(),
                request_id,
            ));
        }
    };
    if call.is_streaming() {
        return Ok(problem(
            StatusCode::NOT_IMPLEMENTED,
            "streaming_not_transcoded",
            format!(
                "`{}` is a streaming method; streaming calls are not transcoded yet.",
                call.method.desc.full_name()
            ),
            Default::default(),
            request_id,
        ));
    }
    rec.upstream = None;
    let (parts, body) = req.into_parts();
    let limit = bytes_in
        .limit
        .load(std::sync::atomic::Ordering::Relaxed)
        .min(MAX_REQUEST_BODY);
    let body = match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Problem::PayloadTooLarge);
        }
        Err(_) => {
            return Err(Problem::BadRequest(
                "The request body is malformed or was cut short.",
            ));
        }
    };
    bytes_in
        .bytes
        .store(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let frame = match t.transcoder.request(&call, parts.uri.query(), &body) {
        Ok(f) => f,
        Err(RequestError::Invalid { detail, field }) => {
            let mut extra = serde_json::Map::new();
            if let Some(f) = field {
                extra.insert("field".into(), f.into());
            }
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "invalid_request_message",
                format!(
                    "The request does not fit `{}`: {detail}",
                    call.method.desc.input().full_name()
                ),
                extra,
                request_id,
            ));
        }
        Err(_) => return Err(Problem::NoRoute),
    };

    // The gRPC call.
    let pool = rt.pools[action.upstream(|total| fastrand::u32(0..total))].clone();
    let ti = pool.pick(&crate::balance::PickContext {
        headers: &parts.headers,
        client_ip: rec.client_ip,
        path,
        query: parts.uri.query(),
    });
    let target = pool.target(ti).clone();
    rec.upstream = Some(target.display.clone());
    let scheme = if target.scheme == portico_config::Scheme::Https {
        "https"
    } else {
        "http"
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(target.authority.clone())
        .path_and_query(call.method.path.clone())
        .build()
        .map_err(|_| Problem::UpstreamProtocol)?;
    let mut up = Request::new(Body::Full(Some(frame)));
    *up.method_mut() = Method::POST;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_2;
    let h = up.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    let budget = route.timeout.unwrap_or(pool.spec.request_timeout);
    if let Ok(v) = HeaderValue::try_from(grpc::timeout_header(budget)) {
        h.insert(http::HeaderName::from_static("grpc-timeout"), v);
    }
    h.insert(cfg.server.request_id_header.clone(), request_id.clone());
    for name in &t.forward_headers {
        for v in parts.headers.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    // Identity set by the policies (consumer, groups, claims) goes along as metadata too.
    for name in &cfg.server.identity_headers {
        if let Some(v) = parts.headers.get(name) {
            h.insert(name.clone(), v.clone());
        }
    }
    let resp = crate::proxy::call_upstream(route, &pool, ti, up, rec).await?;
    let (head, body) = resp.into_parts();
    if head.status != StatusCode::OK {
        tracing::debug!(status = %head.status, "gRPC upstream answered with a non-200 HTTP status");
        return Err(Problem::UpstreamProtocol);
    }
    let collected = match http_body_util::Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
    {
        Ok(c) => c,
        Err(_) => return Err(Problem::UpstreamProtocol),
    };
    let trailers = collected.trailers().cloned();
    let bytes: Bytes = collected.to_bytes();
    // A trailers-only answer carries the status in the head.
    let status_of = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| head.headers.get(name))
    };
    let code = status_of("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
        .ok_or(Problem::UpstreamProtocol)?;
    if code != 0 {
        let message = status_of("grpc-message")
            .and_then(|v| v.to_str().ok())
            .and_then(|m| portico_translate::template::percent_decode(m, false))
            .unwrap_or_default();
        let mut extra = serde_json::Map::new();
        extra.insert("grpc_status".into(), code.into());
        extra.insert("grpc_code".into(), grpc::code_name(code).into());
        if let Some(d) = status_of("grpc-status-details-bin")
            .and_then(|v| t.transcoder.status_details(v.as_bytes()))
        {
            extra.insert("details".into(), d);
        }
        let status = StatusCode::from_u16(grpc::http_status(code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(problem(
            status,
            &format!("grpc_{}", grpc::code_name(code).to_ascii_lowercase()),
            if message.is_empty() {
                format!("The gRPC call failed with {}.", grpc::code_name(code))
            } else {
                message
            },
            extra,
            request_id,
        ));
    }
    match t.transcoder.response(&call, &bytes) {
        Ok(json) => {
            let mut r = Response::new(Body::full(json));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        Err(e) => {
            tracing::warn!(method = %call.method.desc.full_name(), error = %e, "undecodable gRPC response");
            Err(Problem::UpstreamProtocol)
        }
    }
}
