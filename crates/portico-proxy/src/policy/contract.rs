//! Requests checked against their OpenAPI operation's contract, after authentication (so a
//! client without credentials learns nothing of the schema): the head (parameters, body
//! presence, content type) when the route is chosen, the JSON body once read. A refusal is a
//! problem document listing every failure with where it is and the rule it breaks.

use std::cell::RefCell;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use portico_config::Contract;
use portico_contract::{BodyPlan, Failure, RequestParts, SchemaId, Scratch};

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
) -> Result<Option<SchemaId>, Box<Response<Body>>> {
    let path: Vec<(&str, &str)> = c
        .path_names
        .iter()
        .zip(params)
        .map(|(n, v)| (&**n, v.as_str()))
        .collect();
    let parts = RequestParts {
        path: &path,
        query: req.uri().query(),
        headers: req.headers(),
    };
    let body = req.body();
    let has_body = !body.is_end_stream() && body.size_hint().upper() != Some(0);
    let mut failures = Vec::new();
    let r = SCRATCH.with_borrow_mut(|s| c.request.check_head(&parts, has_body, s, &mut failures));
    match r {
        Ok(BodyPlan::Pass) => Ok(None),
        Ok(BodyPlan::Check(s)) => Ok(Some(s)),
        Err(status) => Err(Box::new(refusal(route, status, failures, request_id))),
    }
}

/// Checks a body read whole.
pub(crate) fn check_body(
    c: &Contract,
    route: &str,
    schema: SchemaId,
    body: &Bytes,
    request_id: &HeaderValue,
) -> Result<(), Box<Response<Body>>> {
    let mut failures = Vec::new();
    let r = SCRATCH.with_borrow_mut(|s| c.request.check_body(schema, body, s, &mut failures));
    r.map_err(|status| Box::new(refusal(route, status, failures, request_id)))
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
    crate::translate::grpc::problem(status, code, detail, extra, request_id)
}

/// Reads the body of a request on its way upstream and checks it; the body goes on as read.
pub(crate) async fn read_and_check(
    c: &Contract,
    route: &str,
    schema: SchemaId,
    req: Request<Body>,
    request_id: &HeaderValue,
) -> Result<Request<Body>, crate::translate::xml_json::Refusal> {
    use crate::translate::xml_json::Refusal;
    let (parts, body) = req.into_parts();
    let bytes =
        crate::translate::xml_json::read_request_body(&parts, body, c.request.limits.max_body)
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
