//! Requests checked against their OpenAPI operation's contract, after authentication (so a
//! client without credentials learns nothing of the schema): the head (parameters, body
//! presence, content type) when the route is chosen, the JSON body once read. A refusal is a
//! problem document listing every failure with where it is and the rule it breaks.

use std::cell::RefCell;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use portico_config::{Contract, ResponseCheck};
use portico_contract::{BodyCheck, BodyPlan, Failure, RequestContract, RequestParts, Scratch};

use crate::body::Body;

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
    pub route: &'a str,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub request_id: &'a HeaderValue,
    pub recent: &'a crate::observe::violations::Recent,
}

/// Checks an upstream's answer (one of the sample: the caller draws it) against the
/// operation's `responses`. A violation is counted, logged and kept; with `enforce`, the
/// answer is replaced by a 502.
pub(crate) async fn check_response(
    c: &ResponseCheck,
    asked: Asked<'_>,
    resp: Response<Body>,
) -> Response<Body> {
    let Asked {
        route, request_id, ..
    } = asked;
    let head_request = asked.method == http::Method::HEAD;
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
    let mut failures = Vec::new();
    let plan = c
        .contract
        .check_head(status.as_u16(), content_type, has_body);
    let (resp, kind) = match plan {
        Err(f) => {
            let kind = if f.keyword == "status" {
                "status"
            } else {
                "content_type"
            };
            failures.push(f);
            (resp, kind)
        }
        Ok(portico_contract::ResponsePlan::Pass) => return resp,
        // Only an answer whose length is declared and within the bound is read: one that is
        // streamed, or larger, passes unchecked rather than held back.
        Ok(portico_contract::ResponsePlan::Check(schema))
            if length.is_some_and(|l| l <= c.contract.max_body) =>
        {
            let (parts, body) = resp.into_parts();
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return crate::translate::grpc::problem(
                        StatusCode::BAD_GATEWAY,
                        "upstream_protocol_error",
                        "The upstream's answer was cut short.".into(),
                        serde_json::Map::new(),
                        request_id,
                    );
                }
            };
            SCRATCH.with_borrow_mut(|s| c.contract.check_body(schema, &bytes, s, &mut failures));
            (Response::from_parts(parts, Body::full(bytes)), "body")
        }
        Ok(portico_contract::ResponsePlan::Check(_)) => return resp,
    };
    if failures.is_empty() {
        return resp;
    }
    metrics::counter!("portico_contract_violations_total", "route" => route.to_owned(), "kind" => kind)
        .increment(1);
    let first = &failures[0];
    tracing::warn!(
        route,
        status = status.as_u16(),
        kind,
        pointer = %first.pointer,
        keyword = first.keyword,
        detail = %first.message,
        failures = failures.len(),
        "an upstream answer breaks its operation's contract"
    );
    asked.recent.record(crate::observe::violations::Violation {
        at: std::time::SystemTime::now(),
        route: route.to_owned(),
        method: asked.method.to_string(),
        path: asked.path.to_owned(),
        status: status.as_u16(),
        kind,
        enforced: c.enforce,
        request_id: request_id.to_str().unwrap_or_default().to_owned(),
        failures: failures
            .iter()
            .take(5)
            .map(|f| (f.pointer.clone(), f.keyword, f.message.clone()))
            .collect(),
        failures_total: failures.len(),
    });
    if !c.enforce {
        return resp;
    }
    crate::translate::grpc::problem(
        StatusCode::BAD_GATEWAY,
        "upstream_contract_violation",
        format!(
            "The upstream's answer does not match the API's contract: {} problem{}.",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" }
        ),
        errors(failures),
        request_id,
    )
}
