//! One request, top to bottom: check, route, request policies, upstream call, response
//! policies, log. Each phase is a function below, in that order.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};

use crate::base::conn::ConnInfo;
use crate::base::headers;
use crate::body::{Body, BodyStats};
use crate::observe::access_log::Record;
use crate::runtime::Runtime;

use crate::pipeline::request::process;
use crate::runtime::ctx::RequestCtx;

/// The response body type: the body plus the bookkeeping that runs when it ends.
pub type ResponseBody = LoggedBody;

/// Entry point from the listeners, for every request on every listener.
#[allow(clippy::manual_async_fn)] // see the comment in the body
pub fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    // Not `async fn`: its parameters would be moved once more, into locals, before the
    // body runs (hundreds of bytes for a request, on every layer of the request path).
    async move {
        let start = Instant::now();
        let cfg = &rt.config;
        let request_id = headers::request_id(req.headers(), &cfg.server.request_id_header);
        let client_ip =
            headers::client_ip(conn.peer.ip(), req.headers(), &cfg.server.trusted_proxies);
        // On-demand debugging: the secret in its header (compared in constant time; a wrong
        // one is ignored, and reveals nothing). The header never goes upstream.
        let debug = match &cfg.server.request_debug {
            Some((name, digest)) => match req.headers_mut().remove(name) {
                Some(v) => portico_auth::apikey::matches(v.as_bytes(), digest),
                None => false,
            },
            None => false,
        };
        // The trace. Its sampling is decided now unless routes have ratios of their own (then
        // when its route is known). A recorded request's span needs the host, path and id that
        // otherwise only the access log copies (below; `process` copies them if it decides).
        // A debug request is always recorded; with `keep_errors` any request may be, so each
        // is described in full.
        let mut trace = cfg
            .tracing
            .as_ref()
            .filter(|_| rt.tracer.is_some())
            .map(|t| {
                let mut trace = crate::observe::trace::Trace::start(req.headers(), t);
                if debug {
                    trace.sampled = Some(true);
                }
                if debug || (!t.route_ratios && trace.decide(None)) || t.keep_errors {
                    if !cfg.redact.user_agent {
                        trace.user_agent = req.headers().get(header::USER_AGENT).cloned();
                    }
                    trace.described = true;
                }
                trace
            });
        // Built in its box: the record (376 bytes) ends up boxed in the response body, and
        // moving it there at the end cost two copies.
        // Without an access log the record only feeds the metrics (route, method, status,
        // duration): what only the log shows is left empty rather than copied (clock read,
        // reference counts taken and released: ~200 instructions).
        let logged =
            rt.access_log.is_some() || debug || trace.as_ref().is_some_and(|t| t.described);
        if let Some(t) = trace.as_mut() {
            t.described |= logged;
        }
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
                trace: trace.take(),
                phases: debug.then(|| crate::observe::phases::Phases::new(start, true)),
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
        let mut ctx = RequestCtx {
            rt: &rt,
            start,
            conn: &conn,
            request_id: &request_id,
            rec,
            bytes_in,
            guards: &mut guards,
            extra: &mut extra,
        };
        let resp = match process(&mut ctx, req).await {
            Ok(r) => r,
            Err(p) => {
                if ctx.rec.error.is_none() {
                    ctx.rec.error = Some(p.code());
                }
                let mut r = if is_grpc {
                    p.grpc_response(&request_id, &cfg.server.request_id_header)
                } else {
                    p.response(&request_id, &cfg.server.request_id_header)
                };
                for (k, v) in ctx.extra.drain(..) {
                    r.headers_mut().append(k, v);
                }
                r
            }
        };
        let mut resp = resp;
        if let Some(p) = ctx.rec.phases.as_deref_mut() {
            if let Some(e) = ctx.rec.error {
                p.marks.push(crate::observe::phases::Mark {
                    name: "error",
                    at: start.elapsed(),
                    dur: Duration::ZERO,
                    desc: Some(e.to_string()),
                });
            }
            resp.headers_mut().insert(
                http::HeaderName::from_static("server-timing"),
                p.server_timing(start.elapsed()),
            );
        }
        ctx.rec.status = resp.status().as_u16();
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
    match route {
        Some((_, m)) => m.live.record(rec.status, rec.duration),
        None => rt.live_unrouted.record(rec.status, rec.duration),
    }
    // Refusals feed the audit trail's security summary.
    if matches!(rec.status, 401 | 403 | 429)
        && let Some(audit) = &rt.audit
    {
        audit.count_refusal(
            rec.consumer.as_ref(),
            rec.error.unwrap_or("unknown"),
            rec.status,
        );
    }
    if let Some(p) = rec.phases.as_deref()
        && p.debug
    {
        // The debug record: what the secret asked for, in the gateway's log.
        let trace_id = rec
            .trace
            .as_ref()
            .map(|t| format!("{:032x}", u128::from_be_bytes(t.trace_id)));
        tracing::info!(
            target: "portico::request_debug",
            request_id = crate::base::headers::text(&rec.request_id).unwrap_or(""),
            trace_id = trace_id.as_deref().unwrap_or(""),
            method = rec.method.as_str(),
            path = rec.uri.path(),
            route = rec.route.as_deref().unwrap_or(""),
            status = rec.status,
            error = rec.error.unwrap_or(""),
            duration_ms = rec.duration.as_micros() as f64 / 1000.0,
            phases = %p.to_json(),
            "request debug record"
        );
    }
    if let Some(exporter) = &rt.tracer {
        let route_ratio = rec
            .route_index
            .and_then(|i| rt.config.routes.get(i)?.sample_ratio);
        let status = rec.status;
        // Taken out of the record (and put back for the access log) only when recorded: the
        // move costs ~50 instructions, paid otherwise by every unsampled request.
        if rec
            .trace
            .as_mut()
            .is_some_and(|t| t.decide(route_ratio) || (t.keep_errors && status >= 500))
            && let Some(mut trace) = rec.trace.take()
        {
            exporter.send(crate::observe::otel::Finished::take(
                rec,
                &mut trace,
                &rt.config.redact,
            ));
            rec.trace = Some(trace);
        }
    }
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
