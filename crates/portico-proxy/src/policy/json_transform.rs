//! `json_transform` policies: status rewrites, and reshaping of JSON response bodies (client
//! sparse fieldsets, removed, renamed and set fields). Bodies are read whole, so only those
//! with a `Content-Length` up to the policy's `max_bytes` are reshaped; others pass untouched.

use http::{HeaderValue, Response, header};
use http_body_util::BodyExt;
use portico_config::JsonTransformPolicy;
use serde_json::Value;

use crate::body::Body;

/// What the reshaping needs from the request: the `fields` parameter.
pub fn wanted_fields(p: &JsonTransformPolicy, query: Option<&str>) -> Option<String> {
    if !p.sparse_fieldsets {
        return None;
    }
    portico_config::query::get(query, "fields").map(|f| f.into_owned())
}

pub async fn apply(
    p: &JsonTransformPolicy,
    fields: Option<&str>,
    mut resp: Response<Body>,
) -> Response<Body> {
    if let Some((_, to)) = p.status.iter().find(|(from, _)| *from == resp.status()) {
        *resp.status_mut() = *to;
    }
    if !p.touches_body() || !resp.status().is_success() {
        return resp;
    }
    let h = resp.headers();
    let is_json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let e = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            e == "application/json" || e.ends_with("+json")
        });
    let len = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| http_body::Body::size_hint(resp.body()).exact());
    if !is_json || h.contains_key(header::CONTENT_ENCODING) || len.is_none_or(|n| n > p.max_bytes) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        // The upstream broke off: nothing sensible to reshape; the client gets an empty body
        // with the status it would have had, and the access log records the failure.
        Err(_) => return Response::from_parts(parts, Body::Empty),
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::full(bytes));
    };
    if let Some(f) = fields.and_then(|f| portico_translate::shape::Fields::parse(f.split(','))) {
        f.keep(&mut v);
    }
    if let Some(r) = &p.remove {
        r.drop_from(&mut v);
    }
    if !p.rename.is_empty() {
        portico_translate::shape::rename(&mut v, &p.rename);
    }
    if let Value::Object(o) = &mut v {
        for (k, val) in &p.set {
            o.insert(k.clone(), val.clone());
        }
    }
    let out = v.to_string();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    parts.headers.remove(header::ETAG);
    Response::from_parts(parts, Body::full(out))
}
