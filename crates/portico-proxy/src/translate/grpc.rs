//! REST/JSON requests answered by gRPC calls (a route's `grpc_transcode`). The mapping itself
//! is `portico-translate`'s; this module does the I/O: reads the JSON body, sends the call
//! through the upstream's pool (timeouts, retries, breakers and metrics as for any request),
//! reads the answer and its trailers, and writes JSON or a problem.

use std::sync::Arc;

use crate::body::ClientBody;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::BodyExt;
use portico_config::{GrpcTranscode, ProxyAction, Route};
use portico_translate::{RequestError, grpc};

use crate::body::Body;
use crate::body::problem::Problem;
use crate::runtime::ctx::RequestCtx;

/// Largest JSON request body read for a transcoded call (a smaller `body_limit` wins).
const MAX_REQUEST_BODY: u64 = 4 << 20;
/// Largest gRPC response read for a unary call.
const MAX_RESPONSE_BODY: usize = 16 << 20;

/// An answer of the transcoder's own: a problem with fields beyond the fixed ones.
pub(crate) fn problem(
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
    ctx: &mut RequestCtx<'_>,
    route: &Arc<Route>,
    action: &ProxyAction,
    t: &Arc<GrpcTranscode>,
    req: Request<ClientBody>,
    path: &str,
) -> Result<Response<Body>, Problem> {
    let (rt, request_id, bytes_in) = (ctx.rt, ctx.request_id, ctx.bytes_in);
    // Definitions from a file are in the config; reflected ones arrive in the runtime.
    let tr = match &t.transcoder {
        Some(tr) => tr.clone(),
        None => match rt.reflected.get(route.index).and_then(|s| s.load_full()) {
            Some(tr) => tr,
            None => {
                let mut r = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "grpc_definitions_unavailable",
                    "The gateway has not yet obtained this service's definitions (gRPC reflection); retry shortly.".into(),
                    Default::default(),
                    request_id,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(r);
            }
        },
    };
    let call = match tr.route(req.method(), path) {
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
    // Server streams: server-sent events or NDJSON, by `Accept`, else the route's default.
    let sse = call.is_server_streaming() && {
        let accept = parts_accept(&req);
        if accept.contains("text/event-stream") {
            true
        } else if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") {
            false
        } else {
            t.sse_by_default
        }
    };
    ctx.rec.upstream = None;
    let (parts, body) = req.into_parts();
    let body = crate::body::read_client_body(body, bytes_in, MAX_REQUEST_BODY).await?;
    // A client stream arrives as NDJSON: one message per line, sent as one message each.
    let framed = if call.is_client_streaming() {
        let mut all = bytes::BytesMut::new();
        let mut result = Ok(());
        for (n, line) in body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        {
            match tr.request(&call, parts.uri.query(), line) {
                Ok(f) => all.extend_from_slice(&f),
                Err(RequestError::Invalid { detail, field }) => {
                    result = Err(RequestError::Invalid {
                        detail: format!("line {}: {detail}", n + 1),
                        field,
                    });
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        result.map(|()| all.freeze())
    } else {
        tr.request(&call, parts.uri.query(), &body)
    };
    let frame = match framed {
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

    // The gRPC call. Identity set by the policies (consumer, groups, claims) goes along as
    // metadata too.
    let (pool, ti, mut up) = super::upstream_call(
        ctx,
        action,
        &parts,
        path,
        call.method.path.clone(),
        Body::Full(Some(frame)),
        |up, pool, _| {
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
            for name in &t.forward_headers {
                for v in parts.headers.get_all(name) {
                    h.append(name.clone(), v.clone());
                }
            }
        },
    )?;
    let resp = crate::upstream::call::call_upstream(
        route.timeout,
        &pool,
        ti,
        &mut up,
        Some(ctx.rec),
        None,
        None,
    )
    .await?;
    let (head, body) = resp.into_parts();
    if call.is_server_streaming()
        && head.status == StatusCode::OK
        && !head.headers.contains_key("grpc-status")
    {
        let stream = JsonStream {
            inner: body,
            transcoder: tr.clone(),
            key: call.key(),
            buf: bytes::BytesMut::new(),
            sse,
            done: false,
            failed: None,
        };
        let mut r = Response::new(Body::Stream(http_body_util::BodyExt::boxed_unsync(stream)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(if sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            }),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(r);
    }
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
        if let Some(d) =
            status_of("grpc-status-details-bin").and_then(|v| tr.status_details(v.as_bytes()))
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
    if call.is_server_streaming() {
        // A stream that ended at once (trailers-only, OK): no messages.
        let mut r = Response::new(Body::Empty);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(if sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            }),
        );
        return Ok(r);
    }
    match tr.response(&call, &bytes) {
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

fn parts_accept(req: &Request<ClientBody>) -> String {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase()
}

/// A server stream written as JSON as its messages arrive: one line per message (NDJSON) or
/// one `data:` event per message (SSE). A gRPC error after the stream began cannot change the
/// status any more, so it becomes a last line (`{"error": {...}}`) or an `event: error`.
struct JsonStream {
    inner: crate::body::UpstreamBody,
    transcoder: Arc<portico_translate::Transcoder>,
    key: portico_translate::CallKey,
    buf: bytes::BytesMut,
    sse: bool,
    done: bool,
    /// The error line to send once the buffered messages are out.
    failed: Option<Bytes>,
}

impl JsonStream {
    fn line(&self, json: &[u8], event: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 24);
        if self.sse {
            if let Some(e) = event {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(e.as_bytes());
                out.push(b'\n');
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json);
            out.extend_from_slice(b"\n\n");
        } else {
            out.extend_from_slice(json);
            out.push(b'\n');
        }
        out.into()
    }

    fn error_line(&self, code: u32, message: &str) -> Bytes {
        let e = serde_json::json!({
            "grpc_status": code,
            "grpc_code": grpc::code_name(code),
            "status": grpc::http_status(code),
            "message": message,
        });
        if self.sse {
            self.line(e.to_string().as_bytes(), Some("error"))
        } else {
            self.line(
                serde_json::json!({ "error": e }).to_string().as_bytes(),
                None,
            )
        }
    }

    /// The next whole message in the buffer, as JSON.
    fn next_message(&mut self) -> Option<Result<Bytes, String>> {
        if self.buf.len() < 5 {
            return None;
        }
        if self.buf[0] != 0 {
            return Some(Err("compressed gRPC message".into()));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return None;
        }
        let msg = self.buf.split_to(5 + len);
        Some(
            self.transcoder
                .message_json(self.key, &msg[5..])
                .map(|j| self.line(&j, None)),
        )
    }
}

impl http_body::Body for JsonStream {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Some(Ok(line)) => return Poll::Ready(Some(Ok(http_body::Frame::data(line)))),
                None if this.failed.is_some() => {
                    this.done = true;
                    let e = this.failed.take().unwrap_or_default();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(e))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    tracing::warn!(error = %e, "undecodable message in a gRPC stream");
                    return Poll::Ready(Some(Ok(http_body::Frame::data(this.error_line(
                        13,
                        "the service sent a message the gateway cannot decode",
                    )))));
                }
                None => {}
            }
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    if !this.buf.is_empty() {
                        return Poll::Ready(Some(Ok(http_body::Frame::data(
                            this.error_line(13, "the stream ended inside a message"),
                        ))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => this.buf.extend_from_slice(&d),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let code = trailers
                                .get("grpc-status")
                                .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
                                .unwrap_or(2);
                            if code != 0 {
                                let msg = trailers
                                    .get("grpc-message")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|m| {
                                        portico_translate::template::percent_decode(m, false)
                                    })
                                    .unwrap_or_default();
                                // Messages before the trailers still go out first.
                                this.failed = Some(this.error_line(code, &msg));
                            }
                        }
                    }
                },
            }
        }
    }
}

/// Reflection answers read at most: a descriptor set is rarely over a few MiB.
const MAX_REFLECTION_BODY: usize = 32 << 20;

/// Failures of one reflection call.
enum ReflectError {
    /// This reflection version is not offered (`UNIMPLEMENTED`, or not found).
    NotOffered,
    Failed(String),
}

/// One reflection exchange: every question in one request stream, every answer read.
async fn reflection_call(
    pool: &crate::upstream::pool::UpstreamPool,
    path: &'static str,
    questions: Vec<portico_translate::reflection::Question>,
) -> Result<Vec<portico_translate::reflection::Answer>, ReflectError> {
    let headers = http::HeaderMap::new();
    let i = pool.pick(&crate::upstream::balance::PickContext {
        headers: &headers,
        client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        path,
        query: None,
    });
    let target = pool.target(i).clone();
    let uri = target
        .uri(path)
        .map_err(|e| ReflectError::Failed(e.to_string()))?;
    let mut req = Request::new(Body::Full(Some(portico_translate::reflection::requests(
        questions,
    ))));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    req.headers_mut()
        .insert(header::TE, HeaderValue::from_static("trailers"));
    let exchange = async {
        let (_, resp) = pool
            .send(i, &mut req, None)
            .await
            .map_err(|e| ReflectError::Failed(e.to_string()))?;
        let (head, body) = resp.into_parts();
        if head.status == StatusCode::NOT_FOUND {
            return Err(ReflectError::NotOffered);
        }
        let collected = http_body_util::Limited::new(body, MAX_REFLECTION_BODY)
            .collect()
            .await
            .map_err(|e| ReflectError::Failed(e.to_string()))?;
        let code = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
        match code {
            Some(0) => {}
            Some(12) => return Err(ReflectError::NotOffered),
            Some(c) => {
                return Err(ReflectError::Failed(format!(
                    "reflection answered {}",
                    grpc::code_name(c)
                )));
            }
            None => return Err(ReflectError::Failed("no grpc-status".into())),
        }
        portico_translate::reflection::responses(&collected.to_bytes())
            .map_err(ReflectError::Failed)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), exchange).await {
        Ok(r) => r,
        Err(_) => Err(ReflectError::Failed("no answer within 10s".into())),
    }
}

/// Builds a transcoder from the upstream's gRPC server reflection (v1, else v1alpha): the
/// service list, the files that define those services with their imports, and any import the
/// server left out, asked for by name.
pub async fn reflect(
    pool: &crate::upstream::pool::UpstreamPool,
    options: &portico_translate::Options,
) -> Result<portico_translate::Transcoder, String> {
    use portico_translate::reflection::{Answer, Files, Question};
    const PATHS: [&str; 2] = [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    let fail = |e: ReflectError| match e {
        ReflectError::NotOffered => "not offered".to_owned(),
        ReflectError::Failed(e) => e,
    };
    for path in PATHS {
        let answers =
            match reflection_call(pool, path, vec![Question::ListServices(String::new())]).await {
                Err(ReflectError::NotOffered) => continue,
                Err(e) => return Err(fail(e)),
                Ok(a) => a,
            };
        let mut services = Vec::new();
        for a in answers {
            match a {
                Answer::Services(s) => services.extend(s.service.into_iter().map(|s| s.name)),
                Answer::Error(e) => return Err(format!("reflection error: {}", e.error_message)),
                Answer::Files(_) => {}
            }
        }
        services.retain(|s| {
            !s.starts_with("grpc.reflection.")
                && (options.services.is_empty() || options.services.contains(s))
        });
        if services.is_empty() {
            return Err("the service lists no services (besides reflection)".into());
        }
        let mut files = Files::default();
        let mut questions: Vec<Question> = services
            .into_iter()
            .map(Question::FileContainingSymbol)
            .collect();
        // Imports the server did not send are asked for by name, a few rounds at most.
        for _ in 0..8 {
            if questions.is_empty() {
                break;
            }
            for a in reflection_call(pool, path, questions).await.map_err(fail)? {
                match a {
                    Answer::Files(f) => {
                        for raw in f.file_descriptor_proto {
                            files.add(raw)?;
                        }
                    }
                    Answer::Error(e) => {
                        return Err(format!("reflection error: {}", e.error_message));
                    }
                    Answer::Services(_) => {}
                }
            }
            questions = files
                .missing()
                .into_iter()
                .map(Question::FileByFilename)
                .collect();
        }
        let descriptors = files.pool()?;
        return portico_translate::Transcoder::from_pool(descriptors, options.clone())
            .map_err(|errors| errors.join("; "));
    }
    Err("the upstream offers no gRPC server reflection (v1 or v1alpha)".into())
}

/// Starts fetching, by gRPC server reflection, the definitions of every `grpc_transcode` route
/// of `rt` that has none of its own (`reflection: true`). Called for each runtime built: a
/// route whose definitions carried over from the previous runtime is fetched again, so a
/// reload picks up a changed service.
pub(crate) fn start_reflections(rt: &crate::runtime::Runtime) {
    for r in &rt.config.routes {
        if let (Some(t), portico_config::Action::Proxy(a)) = (&r.transcode, &r.action)
            && t.transcoder.is_none()
        {
            start_reflection(
                &rt.reflected,
                r.index,
                rt.pools[a.upstreams[0].0].clone(),
                t.options.clone(),
                r.name.clone(),
            );
        }
    }
}

/// Fetches a route's definitions by reflection in the background, retrying with back-off (1 s
/// doubling to 30 s) until it succeeds or the runtime is replaced.
pub fn start_reflection(
    slots: &Arc<[arc_swap::ArcSwapOption<portico_translate::Transcoder>]>,
    index: usize,
    pool: Arc<crate::upstream::pool::UpstreamPool>,
    options: portico_translate::Options,
    route: Arc<str>,
) {
    let weak = Arc::downgrade(slots);
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_secs(1);
        loop {
            let result = reflect(&pool, &options).await;
            let Some(slots) = weak.upgrade() else { return };
            match result {
                Ok(t) => {
                    tracing::info!(route = %route, methods = t.methods().len(), "gRPC service definitions loaded by reflection");
                    ::metrics::counter!("portico_grpc_reflection_total", "route" => route.to_string(), "result" => "ok").increment(1);
                    slots[index].store(Some(Arc::new(t)));
                    return;
                }
                Err(e) => {
                    tracing::warn!(route = %route, error = %e, retry_in = ?pause, "gRPC reflection failed");
                    ::metrics::counter!("portico_grpc_reflection_total", "route" => route.to_string(), "result" => "error").increment(1);
                }
            }
            drop(slots);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(30));
        }
    });
}
