//! `cors`: preflights answered at the gateway, and the CORS headers of actual answers.

use http::header;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use portico_config::CorsPolicy;

use crate::body::Body;
use crate::policy::auth::Denial;

/// Whether `origin` may make cross-origin requests under `c`.
pub fn origin_allowed(c: &CorsPolicy, origin: &str) -> bool {
    if c.any_origin {
        return true;
    }
    let o = origin.to_ascii_lowercase();
    c.origins.contains(&o)
        || c.origin_suffixes.iter().any(|(scheme, suffix)| {
            o.strip_prefix(scheme.as_str())
                .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
        })
}

pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 204 with the policy's permissions, or 403 for an origin it does
/// not allow.
pub fn preflight<B>(c: &CorsPolicy, req: &Request<B>) -> Result<Response<Body>, Denial> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|s| origin_allowed(c, s))) else {
        return Err(Denial::Forbidden {
            reason: "cors_origin_not_allowed",
            challenge: None,
        });
    };
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    allow_origin(c, h, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, c.methods.clone());
    let asked = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    if let Some(v) = c.headers.clone().or(asked) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, c.max_age.clone());
    h.append(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    Ok(resp)
}

fn allow_origin(c: &CorsPolicy, h: &mut http::HeaderMap, origin: HeaderValue) {
    if c.any_origin && !c.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if c.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// CORS headers on an actual (non-preflight) response, for an allowed `Origin`.
pub fn cors_response(c: &CorsPolicy, origin: Option<&HeaderValue>, h: &mut http::HeaderMap) {
    let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|s| origin_allowed(c, s))) else {
        return;
    };
    allow_origin(c, h, origin.clone());
    if let Some(e) = &c.expose_headers {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
    }
}
