//! Requests checked against their OpenAPI operation's contract, after authentication (so a
//! client without credentials learns nothing of the schema): the head (parameters, body
//! presence, content type) when the route is chosen, the JSON body once read. A refusal is a
//! problem document listing every failure with where it is and the rule it breaks.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use portico_config::{Contract, ResponseCheck};
use portico_contract::{BodyCheck, BodyPlan, Failure, RequestContract, RequestParts, Scratch};

use crate::body::Body;
use crate::observe::violations::Recent;

thread_local! {
    /// The flat tree of the body being checked, reused by every request on this thread.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Checks a request's head. `Ok(Some(schema))`: its body must be read and checked against
/// `schema`; `Err`: the answer refusing it.
pub(crate) fn check_head<B: http_body::Body>(
    c: &Contract,
    route: &str,
    req: &Request<B>,
    params: &[String],
    request_id: &HeaderValue,
) -> Result<Option<BodyCheck>, Box<Response<Body>>> {
    let Some(rc) = &c.request else {
        return Ok(None);
    };
    let path = c.path_params(params);
    let parts = RequestParts {
        path: &path,
        query: req.uri().query(),
        headers: req.headers(),
    };
    let body = req.body();
    let has_body = !body.is_end_stream() && body.size_hint().upper() != Some(0);
    let mut failures = Vec::new();
    let r = SCRATCH.with_borrow_mut(|s| rc.check_head(&parts, has_body, s, &mut failures));
    match r {
        Ok(BodyPlan::Pass) => Ok(None),
        Ok(BodyPlan::Check(s)) => Ok(Some(s)),
        Err(status) => Err(Box::new(refusal(route, status, failures, request_id))),
    }
}

/// Checks a body read whole.
pub(crate) fn check_body(
    c: &RequestContract,
    route: &str,
    schema: BodyCheck,
    body: &Bytes,
    request_id: &HeaderValue,
) -> Result<(), Box<Response<Body>>> {
    let mut failures = Vec::new();
    let r = SCRATCH.with_borrow_mut(|s| c.check_body(schema, body, s, &mut failures));
    r.map_err(|status| Box::new(refusal(route, status, failures, request_id)))
}

/// The failures as the `errors` member of a problem document.
fn errors(failures: Vec<Failure>) -> serde_json::Map<String, serde_json::Value> {
    let errors: Vec<serde_json::Value> = failures
        .into_iter()
        .map(|f| {
            let mut o = serde_json::Map::new();
            o.insert("in".into(), f.location.into());
            if let Some(n) = f.name {
                o.insert("name".into(), String::from(n).into());
            }
            o.insert("pointer".into(), f.pointer.into());
            o.insert("keyword".into(), f.keyword.into());
            o.insert("detail".into(), f.message.into());
            serde_json::Value::Object(o)
        })
        .collect();
    let mut extra = serde_json::Map::new();
    extra.insert("errors".into(), errors.into());
    extra
}

/// The problem document of a refused request.
fn refusal(
    route: &str,
    status: u16,
    failures: Vec<Failure>,
    request_id: &HeaderValue,
) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let location = failures.first().map_or("body", |f| {
        if f.keyword == "content" {
            "content_type"
        } else {
            f.location
        }
    });
    metrics::counter!("portico_request_validation_failures_total", "route" => route.to_owned(), "location" => location)
        .increment(1);
    let (code, detail) = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        (
            "unsupported_media_type",
            "The request body's media type is not one the API accepts here.".to_owned(),
        )
    } else {
        (
            "request_invalid",
            format!(
                "The request does not match the API's contract: {} problem{}.",
                failures.len(),
                if failures.len() == 1 { "" } else { "s" }
            ),
        )
    };
    let extra = errors(failures);
    crate::translate::grpc::problem(status, code, detail, extra, request_id)
}

/// Reads the body of a request on its way upstream and checks it; the body goes on as read.
pub(crate) async fn read_and_check(
    c: &RequestContract,
    route: &str,
    schema: BodyCheck,
    req: Request<Body>,
    request_id: &HeaderValue,
) -> Result<Request<Body>, crate::translate::xml_json::Refusal> {
    use crate::translate::xml_json::Refusal;
    let (parts, body) = req.into_parts();
    let bytes =
        crate::translate::xml_json::read_request_body(&parts, body, c.limits.max_body)
            .await
            .map_err(|p| {
                if matches!(p, crate::body::problem::Problem::PayloadTooLarge) {
                    metrics::counter!("portico_request_validation_failures_total", "route" => route.to_owned(), "location" => "body")
                        .increment(1);
                }
                Refusal::Problem(p)
            })?;
    check_body(c, route, schema, &bytes, request_id).map_err(Refusal::Answer)?;
    Ok(Request::from_parts(parts, Body::full(bytes)))
}

/// The request an answer is checked for, as the violation record names it.
pub(crate) struct Asked<'a> {
    /// The route, whose contract holds the answer's rules: kept by an answer checked after
    /// it has gone on.
    pub route: &'a Arc<portico_config::Route>,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub request_id: &'a HeaderValue,
    pub recent: &'a Arc<Recent>,
}

/// Checks an upstream's answer (one of the sample: the caller draws it) against the
/// operation's `responses`. A violation is counted, logged and kept; with `enforce`, the
/// answer is replaced by a 502.
///
/// Log-only, the answer goes on as it comes and a copy of its body is checked when it ends
/// (as its last bytes go), so checking never holds the rest of an answer back. Enforcing, the body is held until it ends (a
/// streamed one included), checked, and then sent or replaced. Either way a body larger than
/// `max_body_bytes` passes unchecked.
pub(crate) async fn check_response(
    c: &ResponseCheck,
    asked: Asked<'_>,
    resp: Response<Body>,
) -> Response<Body> {
    let head_request = *asked.method == http::Method::HEAD;
    use http_body_util::BodyExt;
    let status = resp.status();
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let has_body = !head_request
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
        && !status.is_informational()
        && length != Some(0);
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let seen = Seen {
        route: &asked.route.name,
        method: asked.method.as_str(),
        path: asked.path,
        request_id: asked.request_id,
        recent: asked.recent,
        enforce: c.enforce,
        status,
    };
    let schema = match c
        .contract
        .check_head(status.as_u16(), content_type, has_body)
    {
        Err(f) => {
            let kind = if f.keyword == "status" {
                "status"
            } else {
                "content_type"
            };
            return seen.report(kind, vec![f]).unwrap_or(resp);
        }
        Ok(portico_contract::ResponsePlan::Pass) => return resp,
        Ok(portico_contract::ResponsePlan::Check(schema)) => schema,
    };
    let max = c.contract.max_body;
    if length.is_some_and(|l| l > max) {
        return resp;
    }
    let (parts, mut body) = resp.into_parts();
    if !c.enforce {
        let later = Later {
            route: asked.route.clone(),
            method: asked.method.as_str().to_owned(),
            path: asked.path.to_owned(),
            request_id: asked.request_id.clone(),
            recent: asked.recent.clone(),
            status,
            schema,
        };
        // A body already at its end is not polled by the writers: checked now.
        if http_body::Body::is_end_stream(&body) {
            later.check(&[]);
            return Response::from_parts(parts, body);
        }
        let tee = Tee {
            inner: body,
            copy: Some(bytes::BytesMut::new()),
            limit: max as usize,
            done: Some(later),
        };
        return Response::from_parts(parts, Body::Stream(tee.boxed_unsync()));
    }
    // Enforcing: hold the frames until the body ends, or passes the bound.
    let mut frames = std::collections::VecDeque::new();
    let mut size = 0u64;
    let complete = loop {
        if http_body::Body::is_end_stream(&body) {
            break true;
        }
        match body.frame().await {
            None => break true,
            Some(Err(_)) => {
                return crate::translate::grpc::problem(
                    StatusCode::BAD_GATEWAY,
                    "upstream_protocol_error",
                    "The upstream's answer was cut short.".into(),
                    serde_json::Map::new(),
                    asked.request_id,
                );
            }
            Some(Ok(f)) => {
                let trailers = f.is_trailers();
                size += f.data_ref().map_or(0, |d| d.len() as u64);
                frames.push_back(f);
                if trailers {
                    break true;
                }
                if size > max {
                    break false;
                }
            }
        }
    };
    if !complete {
        // Too large to check: sent on unchecked, what was held first.
        let replay = Replay {
            frames,
            rest: Some(body),
        };
        return Response::from_parts(parts, Body::Stream(replay.boxed_unsync()));
    }
    let bytes = joined(&frames);
    let mut failures = Vec::new();
    SCRATCH.with_borrow_mut(|s| c.contract.check_body(schema, &bytes, s, &mut failures));
    if let Some(refusal) = seen.report("body", failures) {
        return refusal;
    }
    let body = if frames.iter().any(|f| f.is_trailers()) {
        Body::Stream(Replay { frames, rest: None }.boxed_unsync())
    } else {
        Body::full(bytes)
    };
    Response::from_parts(parts, body)
}

/// The data of `frames`, one buffer (no copy for a single frame).
fn joined(frames: &std::collections::VecDeque<http_body::Frame<Bytes>>) -> Bytes {
    let mut data = frames.iter().filter_map(|f| f.data_ref());
    match (data.next(), data.next()) {
        (None, _) => Bytes::new(),
        (Some(one), None) => one.clone(),
        _ => {
            let mut all = bytes::BytesMut::new();
            for d in frames.iter().filter_map(|f| f.data_ref()) {
                all.extend_from_slice(d);
            }
            all.freeze()
        }
    }
}

/// An answer's violation, as it is counted, logged and kept.
struct Seen<'a> {
    route: &'a str,
    method: &'a str,
    path: &'a str,
    request_id: &'a HeaderValue,
    recent: &'a Recent,
    enforce: bool,
    status: StatusCode,
}

impl Seen<'_> {
    /// Counts, logs and keeps the failures, if any; `Some` is the 502 that replaces the
    /// answer when the check enforces.
    fn report(&self, kind: &'static str, failures: Vec<Failure>) -> Option<Response<Body>> {
        let first = failures.first()?;
        let route = self.route;
        metrics::counter!("portico_contract_violations_total", "route" => route.to_owned(), "kind" => kind)
            .increment(1);
        tracing::warn!(
            route,
            status = self.status.as_u16(),
            kind,
            pointer = %first.pointer,
            keyword = first.keyword,
            detail = %first.message,
            failures = failures.len(),
            "an upstream answer breaks its operation's contract"
        );
        self.recent.record(crate::observe::violations::Violation {
            at: std::time::SystemTime::now(),
            route: route.to_owned(),
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            status: self.status.as_u16(),
            kind,
            enforced: self.enforce,
            request_id: self.request_id.to_str().unwrap_or_default().to_owned(),
            failures: failures
                .iter()
                .take(5)
                .map(|f| (f.pointer.clone(), f.keyword, f.message.clone()))
                .collect(),
            failures_total: failures.len(),
        });
        if !self.enforce {
            return None;
        }
        Some(crate::translate::grpc::problem(
            StatusCode::BAD_GATEWAY,
            "upstream_contract_violation",
            format!(
                "The upstream's answer does not match the API's contract: {} problem{}.",
                failures.len(),
                if failures.len() == 1 { "" } else { "s" }
            ),
            errors(failures),
            self.request_id,
        ))
    }
}

/// What a log-only check needs once the answer has gone on.
struct Later {
    route: Arc<portico_config::Route>,
    method: String,
    path: String,
    request_id: HeaderValue,
    recent: Arc<Recent>,
    status: StatusCode,
    schema: portico_contract::SchemaId,
}

impl Later {
    fn check(self, bytes: &[u8]) {
        let Some(c) = self
            .route
            .contract
            .as_ref()
            .and_then(|c| c.response.as_ref())
        else {
            return;
        };
        let mut failures = Vec::new();
        SCRATCH.with_borrow_mut(|s| c.contract.check_body(self.schema, bytes, s, &mut failures));
        let seen = Seen {
            route: &self.route.name,
            method: &self.method,
            path: &self.path,
            request_id: &self.request_id,
            recent: &self.recent,
            enforce: false,
            status: self.status,
        };
        seen.report("body", failures);
    }
}

/// An answer passed on frame by frame, a copy of its data (while within `limit`) checked
/// when it ends. A body cut short, or dropped before its end, is not checked.
struct Tee {
    inner: Body,
    copy: Option<bytes::BytesMut>,
    limit: usize,
    done: Option<Later>,
}

impl Tee {
    fn finish(&mut self) {
        if let (Some(copy), Some(later)) = (self.copy.take(), self.done.take()) {
            later.check(&copy);
        }
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    match &mut this.copy {
                        Some(c) if c.len() + d.len() <= this.limit => c.extend_from_slice(d),
                        _ => this.copy = None,
                    }
                }
                // A body that knows it has ended is not polled again: check it now.
                if http_body::Body::is_end_stream(&this.inner) {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.done = None,
            Poll::Ready(None) => this.finish(),
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

/// Held frames sent first, then the rest of the body, if any.
struct Replay {
    frames: std::collections::VecDeque<http_body::Frame<Bytes>>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match &mut this.rest {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self
                .rest
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream)
    }
}
