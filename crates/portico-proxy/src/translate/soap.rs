//! Routes with `soap`: `POST {prefix}/{Operation}` with a JSON body becomes a SOAP call to the
//! upstream, and its envelope (or Fault) comes back as JSON. The WSDL was read at load; here
//! only the envelope is written and read.

use std::sync::Arc;

use crate::body::ClientBody;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use portico_config::{ProxyAction, Route, SoapRoute};
use portico_translate::soap::{self, Reply};
use serde_json::{Map, Value};

use crate::body::Body;
use crate::body::problem::Problem;
use crate::runtime::ctx::RequestCtx;
use crate::translate::grpc::problem;

fn decode(v: &str) -> String {
    portico_translate::template::percent_decode(v, false).unwrap_or_else(|| v.to_owned())
}

fn operations_list(s: &SoapRoute) -> String {
    s.port
        .operations
        .iter()
        .map(|o| o.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
pub async fn handle(
    ctx: &mut RequestCtx<'_>,
    route: &Arc<Route>,
    action: &ProxyAction,
    s: &Arc<SoapRoute>,
    req: Request<ClientBody>,
    path: &str,
) -> Result<Response<Body>, Problem> {
    let (request_id, bytes_in) = (ctx.request_id, ctx.bytes_in);
    let rest = path.get(s.prefix.len()..).unwrap_or("");
    // A configured method and path first, then `POST {prefix}/{Operation}`.
    let bound = s.bindings.iter().find_map(|b| {
        b.matches(req.method(), rest).map(|params| {
            let params: Vec<(String, String)> = params
                .into_iter()
                .map(|(k, v)| (k.to_owned(), decode(v)))
                .collect();
            (&s.port.operations[b.operation], params)
        })
    });
    let name = rest.trim_matches('/');
    let found = match &bound {
        Some((op, _)) => Some(*op),
        None => s.port.operations.iter().find(|o| o.name == name),
    };
    let Some(op) = found else {
        return Ok(problem(
            StatusCode::NOT_FOUND,
            "no_soap_operation",
            format!(
                "`{name}` is not an operation of this SOAP service; it has {}.",
                operations_list(s)
            ),
            Map::new(),
            request_id,
        ));
    };
    if bound.is_none() && req.method() != Method::POST {
        let mut r = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "SOAP operations are called with POST, not {}.",
                req.method()
            ),
            Map::new(),
            request_id,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let body = crate::body::read_client_body(body, bytes_in, s.max_bytes).await?;
    let mut json: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Ok(problem(
                    StatusCode::BAD_REQUEST,
                    "invalid_json_body",
                    format!("The request body is not valid JSON: {e}"),
                    Map::new(),
                    request_id,
                ));
            }
        }
    };
    // On a configured binding, query parameters and then path parameters fill in fields.
    if let Some((_, params)) = &bound
        && let Value::Object(m) = &mut json
    {
        // A query parameter replaces the body's field of that name; repeated, it is a list.
        let mut from_query: Vec<String> = Vec::new();
        for (k, v) in portico_config::query::pairs(parts.uri.query().unwrap_or("")) {
            let (k, v) = (k.into_owned(), v.into_owned());
            if !from_query.contains(&k) {
                from_query.push(k.clone());
                m.insert(k, Value::String(v));
                continue;
            }
            match m.get_mut(&k) {
                Some(Value::Array(a)) => a.push(Value::String(v)),
                Some(prev) => {
                    let first = prev.take();
                    *prev = Value::Array(vec![first, Value::String(v)]);
                }
                None => {
                    m.insert(k, Value::String(v));
                }
            }
        }
        for (k, v) in params {
            m.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let envelope = match soap::request(&s.wsdl.schema, &s.port, op, &json, s.token.as_ref()) {
        Ok(e) => e,
        Err(e) => {
            let mut extra = Map::new();
            if !e.path.is_empty() {
                extra.insert("field".into(), e.path.clone().into());
            }
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                "invalid_soap_request",
                format!("The request does not fit operation `{}`: {e}", op.name),
                extra,
                request_id,
            ));
        }
    };

    // The SOAP call.
    let (content_type, soap_action) = (envelope.content_type, envelope.soap_action);
    let (pool, ti, mut up) = super::upstream_call(
        ctx,
        action,
        &parts,
        path,
        s.path.clone(),
        Body::Full(Some(Bytes::from(envelope.body))),
        |up, _, target| {
            let h = up.headers_mut();
            if let Ok(v) = HeaderValue::try_from(content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Some(a) = soap_action
                && let Ok(v) = HeaderValue::try_from(a)
            {
                h.insert(http::HeaderName::from_static("soapaction"), v);
            }
            if let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
                h.insert(header::HOST, v);
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
    let bytes = match http_body_util::Limited::new(body, s.max_bytes as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(problem(
                StatusCode::BAD_GATEWAY,
                "upstream_body_too_large",
                format!(
                    "The SOAP answer is larger than this route reads ({} bytes).",
                    s.max_bytes
                ),
                Map::new(),
                request_id,
            ));
        }
        Err(_) => return Err(Problem::UpstreamProtocol),
    };
    let limits = portico_translate::xml::Limits {
        max_bytes: s.max_bytes as usize,
        ..portico_translate::xml::Limits::default()
    };
    // A large answer is read on a blocking thread, not on the runtime thread other requests share.
    let reply = if bytes.len() <= crate::translate::xml_json::BLOCKING_ABOVE {
        soap::response(&s.wsdl.schema, &s.port, op, &bytes, &limits)
    } else {
        let index = s.port.operations.iter().position(|o| std::ptr::eq(o, op));
        let s = s.clone();
        match tokio::task::spawn_blocking(move || {
            let op = &s.port.operations[index.expect("the operation is the port's")];
            soap::response(&s.wsdl.schema, &s.port, op, &bytes, &limits)
        })
        .await
        {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err("reading the answer was cancelled".into()),
        }
    };
    match reply {
        Ok(Reply::Ok(v)) if head.status.is_success() => {
            metrics::counter!("portico_soap_calls_total", "result" => "ok").increment(1);
            let mut r = Response::new(Body::full(v.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        Ok(Reply::Fault(f)) => {
            metrics::counter!("portico_soap_calls_total", "result" => "fault").increment(1);
            let status = if f.is_client() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::BAD_GATEWAY
            };
            let mut extra = Map::new();
            extra.insert("faultcode".into(), f.code.clone().into());
            if !f.subcodes.is_empty() {
                extra.insert("subcodes".into(), f.subcodes.clone().into());
            }
            extra.insert("faultstring".into(), f.reason.clone().into());
            if let Some(a) = &f.actor {
                extra.insert("faultactor".into(), a.clone().into());
            }
            if !f.detail.is_null() {
                extra.insert("faultdetail".into(), f.detail.clone());
            }
            Ok(problem(
                status,
                "soap_fault",
                format!("The SOAP service answered with a fault: {}", f.reason),
                extra,
                request_id,
            ))
        }
        Ok(Reply::Ok(_)) => {
            metrics::counter!("portico_soap_calls_total", "result" => "error").increment(1);
            Ok(problem(
                StatusCode::BAD_GATEWAY,
                "upstream_error_status",
                format!(
                    "The SOAP service answered {} without a Fault.",
                    head.status.as_u16()
                ),
                Map::new(),
                request_id,
            ))
        }
        Err(why) => {
            metrics::counter!("portico_soap_calls_total", "result" => "error").increment(1);
            Ok(problem(
                StatusCode::BAD_GATEWAY,
                "upstream_invalid_soap",
                format!(
                    "The upstream's answer ({}) is not a SOAP envelope this route can read: {why}",
                    head.status.as_u16()
                ),
                Map::new(),
                request_id,
            ))
        }
    }
}
