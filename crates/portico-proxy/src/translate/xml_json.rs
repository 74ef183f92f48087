//! `xml_json` policies: request and response bodies converted between XML and JSON with the
//! generic mapping of `portico_translate::xml`. Bodies are read whole, up to the policy's
//! `max_bytes`; anything that is not the expected type passes untouched. Bodies larger than
//! [`BLOCKING_ABOVE`] are converted on a blocking thread, so that converting one does not hold
//! up the other requests served by the same runtime thread.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use portico_config::{XmlDirection, XmlJsonPolicy};
use portico_translate::xml;

use crate::body::Body;

fn media(h: &http::HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn is_json(h: &http::HeaderMap) -> bool {
    let m = media(h);
    m == "application/json" || m.ends_with("+json")
}

pub fn is_xml(h: &http::HeaderMap) -> bool {
    let m = media(h);
    m == "application/xml" || m == "text/xml" || m.ends_with("+xml")
}

/// What a body converts into: the new body and its media type, or why it does not.
fn convert(
    p: &XmlJsonPolicy,
    dir: XmlDirection,
    body: &[u8],
) -> Result<(Bytes, &'static str), String> {
    match dir {
        XmlDirection::XmlToJson => {
            let root = xml::parse(body, &p.limits).map_err(|e| e.to_string())?;
            Ok((xml::to_json(&root).to_string().into(), "application/json"))
        }
        XmlDirection::JsonToXml => {
            let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let out = xml::from_json(&v, &p.root, &p.namespaces).map_err(|e| e.to_string())?;
            Ok((out.into(), "application/xml; charset=utf-8"))
        }
        XmlDirection::None => unreachable!("not called for `none`"),
    }
}

/// Bodies larger than this many bytes are converted on tokio's blocking threads.
pub const BLOCKING_ABOVE: usize = 64 << 10;

/// [`convert`], on a blocking thread when the body is large.
async fn convert_large(
    p: &Arc<XmlJsonPolicy>,
    dir: XmlDirection,
    body: Bytes,
) -> Result<(Bytes, &'static str), String> {
    if body.len() <= BLOCKING_ABOVE {
        return convert(p, dir, &body);
    }
    let p = p.clone();
    match tokio::task::spawn_blocking(move || convert(&p, dir, &body)).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err("the conversion was cancelled".into()),
    }
}

/// The headers of a converted body.
fn retype(h: &mut http::HeaderMap, media: &'static str, len: usize) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

async fn read(body: Body, max: u64) -> Result<Bytes, Option<()>> {
    match http_body_util::Limited::new(body, max as usize)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Some(())),
        Err(_) => Err(None),
    }
}

/// Why a request body was not converted.
pub enum Refusal {
    Problem(crate::body::problem::Problem),
    /// A problem with a detail of its own.
    Answer(Box<Response<Body>>),
}

/// Reads a request body whole, at most `max` bytes, telling why it could not be: too large
/// (for `max` or the route's `body_limit`), undecodable, or malformed.
pub(crate) async fn read_request_body(
    parts: &http::request::Parts,
    body: Body,
    max: u64,
) -> Result<Bytes, crate::body::problem::Problem> {
    // What the client's body stream knows when it fails: over `body_limit`, or undecodable.
    let stats = match &body {
        Body::Counted(_, s, ..) => Some(s.clone()),
        _ => parts
            .extensions
            .get::<std::sync::Arc<crate::body::BodyStats>>()
            .cloned(),
    };
    match read(body, max).await {
        Ok(b) => Ok(b),
        Err(Some(())) => Err(crate::body::problem::Problem::PayloadTooLarge),
        Err(None) => {
            use std::sync::atomic::Ordering::Relaxed;
            Err(match stats {
                Some(s) if s.too_large.load(Relaxed) => {
                    crate::body::problem::Problem::PayloadTooLarge
                }
                Some(s) if s.undecodable.load(Relaxed) => {
                    crate::body::problem::Problem::BadRequest(
                        "The request body does not decode with the coding its Content-Encoding names.",
                    )
                }
                _ => crate::body::problem::Problem::BadRequest(
                    "The request body is malformed or was cut short.",
                ),
            })
        }
    }
}

/// Converts the request body on its way upstream.
pub async fn request(
    p: &Arc<XmlJsonPolicy>,
    req: Request<Body>,
    request_id: &HeaderValue,
) -> Result<Request<Body>, Refusal> {
    let wanted = match p.request {
        XmlDirection::None => return Ok(req),
        XmlDirection::JsonToXml => is_json(req.headers()),
        XmlDirection::XmlToJson => is_xml(req.headers()),
    };
    if !wanted || req.headers().contains_key(header::CONTENT_ENCODING) {
        return Ok(req);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = read_request_body(&parts, body, p.max_bytes)
        .await
        .map_err(Refusal::Problem)?;
    let (out, media) = convert_large(p, p.request, bytes).await.map_err(|why| {
        let (code, what) = match p.request {
            XmlDirection::JsonToXml => ("invalid_json_body", "JSON"),
            _ => ("invalid_xml_body", "XML"),
        };
        Refusal::Answer(Box::new(crate::translate::grpc::problem(
            StatusCode::BAD_REQUEST,
            code,
            format!("The request body is not {what} this route can convert: {why}"),
            serde_json::Map::new(),
            request_id,
        )))
    })?;
    metrics::counter!("portico_xml_json_conversions_total", "direction" => "request").increment(1);
    retype(&mut parts.headers, media, out.len());
    Ok(Request::from_parts(parts, Body::full(out)))
}

/// Converts the response body on its way to the client.
pub async fn response(
    p: &Arc<XmlJsonPolicy>,
    head_request: bool,
    resp: Response<Body>,
    request_id: &HeaderValue,
) -> Response<Body> {
    // No body to convert: answers to HEAD, 1xx, 204 and 304.
    let s = resp.status();
    if head_request
        || s.is_informational()
        || s == StatusCode::NO_CONTENT
        || s == StatusCode::NOT_MODIFIED
    {
        return resp;
    }
    let wanted = match p.response {
        XmlDirection::None => return resp,
        XmlDirection::XmlToJson => is_xml(resp.headers()),
        // Problem documents (the gateway's own errors included) keep their registered type.
        XmlDirection::JsonToXml => {
            is_json(resp.headers()) && media(resp.headers()) != "application/problem+json"
        }
    };
    if !wanted || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let what = if p.response == XmlDirection::XmlToJson {
        "XML"
    } else {
        "JSON"
    };
    let bytes = match read(body, p.max_bytes).await {
        Ok(b) => b,
        Err(Some(())) => {
            return crate::translate::grpc::problem(
                StatusCode::BAD_GATEWAY,
                "upstream_body_too_large",
                format!(
                    "The upstream's {what} body is larger than this route converts ({} bytes).",
                    p.max_bytes
                ),
                serde_json::Map::new(),
                request_id,
            );
        }
        // The upstream broke off: the client gets the status with an empty body, and the
        // access log records the failure.
        Err(None) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(parts, Body::Empty);
        }
    };
    match convert_large(p, p.response, bytes).await {
        Ok((out, media)) => {
            metrics::counter!("portico_xml_json_conversions_total", "direction" => "response")
                .increment(1);
            retype(&mut parts.headers, media, out.len());
            parts.headers.remove(header::ETAG);
            Response::from_parts(parts, Body::full(out))
        }
        Err(why) => crate::translate::grpc::problem(
            StatusCode::BAD_GATEWAY,
            if p.response == XmlDirection::XmlToJson {
                "upstream_invalid_xml"
            } else {
                "upstream_invalid_json"
            },
            format!("The upstream's body is not {what} this route can convert: {why}"),
            serde_json::Map::new(),
            request_id,
        ),
    }
}
