//! Errors the gateway itself answers with, as RFC 9457 `application/problem+json`.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::unified::Body;

/// Why the gateway answered instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NoRoute,
    BadRequest(&'static str),
    /// The request path has no canonical form under the listener's `paths` settings.
    BadPath(portico_config::canon::PathError),
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamProtocol,
    /// The upstream's circuit breaker (`max_requests`) is open.
    UpstreamOverloaded,
    /// A rate limit refused the request; retry after this many seconds.
    RateLimited(u64),
    /// No acceptable credentials (which part was wrong is never said).
    Unauthorized,
    /// Authenticated, or not needing to be, but not allowed.
    Forbidden,
    /// Credentials could not be checked (a key set is unreachable).
    AuthUnavailable,
    /// The body is larger than the route allows.
    PayloadTooLarge,
    /// The request target is longer than `server.max_uri_bytes`.
    UriTooLong,
    /// A shared rate limit could not be checked (Redis down) and the policy fails closed.
    RateLimitUnavailable,
    /// A `concurrency_limit` is full.
    ConcurrencyLimited,
    /// The request body's `Content-Encoding` is one a `request_decompression` policy cannot
    /// remove.
    UnsupportedEncoding,
    /// The request head is larger than `server.max_request_header_bytes` or has more than
    /// `server.max_request_headers` fields.
    HeadTooLarge,
    /// The request head did not arrive within `server.request_header_timeout`.
    HeadTimeout,
    /// The request line names an HTTP version other than 1.0 and 1.1.
    HttpVersion,
    /// The request body arrived slower than `server.request_body_min_rate` allows.
    BodyTimeout,
}

impl Problem {
    pub fn status(self) -> StatusCode {
        match self {
            Problem::NoRoute => StatusCode::NOT_FOUND,
            Problem::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Problem::BadRequest(_) | Problem::BadPath(_) => StatusCode::BAD_REQUEST,
            Problem::UpstreamConnect | Problem::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Problem::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Problem::UpstreamOverloaded
            | Problem::AuthUnavailable
            | Problem::RateLimitUnavailable
            | Problem::ConcurrencyLimited => StatusCode::SERVICE_UNAVAILABLE,
            Problem::Unauthorized => StatusCode::UNAUTHORIZED,
            Problem::Forbidden => StatusCode::FORBIDDEN,
            Problem::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::UriTooLong => StatusCode::URI_TOO_LONG,
            Problem::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Problem::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Problem::HeadTimeout | Problem::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Problem::HttpVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }

    /// A stable, machine-readable name, also logged.
    pub fn code(self) -> &'static str {
        match self {
            Problem::NoRoute => "no_route",
            Problem::RateLimited(_) => "rate_limited",
            Problem::BadRequest(_) => "bad_request",
            Problem::BadPath(_) => "bad_path",
            Problem::UpstreamConnect => "upstream_connect_failed",
            Problem::UpstreamTimeout => "upstream_timeout",
            Problem::UpstreamProtocol => "upstream_protocol_error",
            Problem::UpstreamOverloaded => "upstream_overloaded",
            Problem::Unauthorized => "unauthorized",
            Problem::Forbidden => "forbidden",
            Problem::AuthUnavailable => "auth_unavailable",
            Problem::PayloadTooLarge => "payload_too_large",
            Problem::UriTooLong => "uri_too_long",
            Problem::RateLimitUnavailable => "rate_limit_unavailable",
            Problem::ConcurrencyLimited => "concurrency_limited",
            Problem::UnsupportedEncoding => "unsupported_content_encoding",
            Problem::HeadTooLarge => "request_head_too_large",
            Problem::HeadTimeout => "request_head_timeout",
            Problem::BodyTimeout => "request_body_timeout",
            Problem::HttpVersion => "http_version_not_supported",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Problem::NoRoute => "No route matches this request's host, path, method and headers.",
            Problem::RateLimited(_) => "Too many requests; retry after the time in Retry-After.",
            Problem::BadRequest(why) => why,
            Problem::BadPath(e) => e.detail(),
            Problem::UpstreamConnect => "The gateway could not connect to the upstream.",
            Problem::UpstreamTimeout => "The upstream did not answer in time.",
            Problem::UpstreamProtocol => {
                "The upstream closed the connection or sent an invalid response."
            }
            Problem::UpstreamOverloaded => {
                "The upstream is at its configured limit of requests or connections; retry shortly."
            }
            Problem::Unauthorized => {
                "Valid credentials are required; none were given or those given were not accepted."
            }
            Problem::Forbidden => "The credentials are valid but do not allow this request.",
            Problem::AuthUnavailable => {
                "The gateway cannot check credentials right now; retry shortly."
            }
            Problem::PayloadTooLarge => "The request body is larger than this route accepts.",
            Problem::UriTooLong => "The request target is longer than this gateway accepts.",
            Problem::RateLimitUnavailable => {
                "The gateway cannot check this route's rate limit right now; retry shortly."
            }
            Problem::ConcurrencyLimited => {
                "As many requests as allowed are already in progress; retry shortly."
            }
            Problem::UnsupportedEncoding => {
                "The request body's Content-Encoding is not one this route decodes (gzip, deflate, br, zstd, one at a time)."
            }
            Problem::HeadTooLarge => {
                "The request head is larger, or has more header fields, than this gateway accepts."
            }
            Problem::HeadTimeout => "The request head did not arrive in time.",
            Problem::BodyTimeout => {
                "The request body arrived too slowly; it must average the gateway's minimum rate after a grace period."
            }
            Problem::HttpVersion => "Only HTTP/1.0, HTTP/1.1 and HTTP/2 are served.",
        }
    }

    /// The gRPC status code a gRPC client gets for this problem.
    pub fn grpc_status(self) -> &'static str {
        match self {
            Problem::NoRoute => "12",        // UNIMPLEMENTED
            Problem::BadRequest(_) => "13",  // INTERNAL: the framing, not the message, was bad
            Problem::BadPath(_) => "3",      // INVALID_ARGUMENT
            Problem::UpstreamTimeout => "4", // DEADLINE_EXCEEDED
            Problem::UpstreamOverloaded | Problem::RateLimited(_) | Problem::ConcurrencyLimited => {
                "8"
            } // RESOURCE_EXHAUSTED
            Problem::UpstreamConnect
            | Problem::UpstreamProtocol
            | Problem::AuthUnavailable
            | Problem::RateLimitUnavailable => "14", // UNAVAILABLE
            Problem::Unauthorized => "16",   // UNAUTHENTICATED
            Problem::Forbidden => "7",       // PERMISSION_DENIED
            Problem::PayloadTooLarge | Problem::UriTooLong => "8", // RESOURCE_EXHAUSTED
            Problem::UnsupportedEncoding => "3", // INVALID_ARGUMENT
            Problem::HeadTooLarge => "8",    // RESOURCE_EXHAUSTED
            Problem::HeadTimeout | Problem::BodyTimeout => "4", // DEADLINE_EXCEEDED
            Problem::HttpVersion => "12",    // UNIMPLEMENTED
        }
    }

    /// For gRPC clients: a trailers-only gRPC error (HTTP 200, `grpc-status`, `grpc-message`),
    /// which gRPC libraries report as a status instead of a transport failure.
    pub fn grpc_response(
        self,
        request_id: &HeaderValue,
        request_id_header: &http::HeaderName,
    ) -> Response<Body> {
        let mut resp = Response::new(Body::Empty);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            http::HeaderName::from_static("grpc-status"),
            HeaderValue::from_static(self.grpc_status()),
        );
        // grpc-message is percent-encoded; these details are plain ASCII except spaces.
        let msg = format!("{} ({})", self.detail(), self.code())
            .replace('%', "%25")
            .replace(' ', "%20");
        if let Ok(v) = HeaderValue::try_from(msg) {
            h.insert(http::HeaderName::from_static("grpc-message"), v);
        }
        h.insert(request_id_header.clone(), request_id.clone());
        resp
    }

    pub fn response(
        self,
        request_id: &HeaderValue,
        request_id_header: &http::HeaderName,
    ) -> Response<Body> {
        let status = self.status();
        let body = serde_json::json!({
            // A URN, not a URL: it names the problem without pretending to be a page.
            "type": format!("urn:portico:problem:{}", self.code()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
            "code": self.code(),
            "request_id": request_id.to_str().unwrap_or(""),
        });
        let mut resp = Response::new(Body::full(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(request_id_header.clone(), request_id.clone());
        if matches!(
            self,
            Problem::UpstreamOverloaded
                | Problem::AuthUnavailable
                | Problem::RateLimitUnavailable
                | Problem::ConcurrencyLimited
        ) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Problem::RateLimited(secs) = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if matches!(
            self,
            Problem::BadRequest(_)
                | Problem::PayloadTooLarge
                | Problem::HeadTooLarge
                | Problem::HeadTimeout
                | Problem::HttpVersion
        ) {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<crate::body::client::ReadError> for Problem {
    fn from(e: crate::body::client::ReadError) -> Problem {
        match e {
            crate::body::client::ReadError::TooLarge => Problem::PayloadTooLarge,
            crate::body::client::ReadError::Malformed => {
                Problem::BadRequest("The request body is malformed or was cut short.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Problem; 20] = [
        Problem::NoRoute,
        Problem::BadRequest("The request is malformed."),
        Problem::BadPath(portico_config::canon::PathError::EscapedSlash),
        Problem::UpstreamConnect,
        Problem::UpstreamTimeout,
        Problem::UpstreamProtocol,
        Problem::UpstreamOverloaded,
        Problem::RateLimited(0),
        Problem::Unauthorized,
        Problem::Forbidden,
        Problem::AuthUnavailable,
        Problem::PayloadTooLarge,
        Problem::UriTooLong,
        Problem::RateLimitUnavailable,
        Problem::ConcurrencyLimited,
        Problem::UnsupportedEncoding,
        Problem::HeadTooLarge,
        Problem::HeadTimeout,
        Problem::HttpVersion,
        Problem::BodyTimeout,
    ];

    /// Every problem is an error status with a distinct code, and its body says the same as
    /// its head (RFC 9457: `status` matches the response's).
    #[test]
    fn every_problem_answers_as_rfc_9457_says() {
        use http_body::Body as _;
        let id = HeaderValue::from_static("req-1");
        let id_header = http::HeaderName::from_static("x-request-id");
        let mut codes = std::collections::HashSet::new();
        for p in ALL {
            assert!(codes.insert(p.code()), "{} is used twice", p.code());
            let status = p.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{p:?}"
            );
            let resp = p.response(&id, &id_header);
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            assert_eq!(resp.headers()["x-request-id"], "req-1");
            let Body::Full(Some(bytes)) = resp.body() else {
                panic!("{p:?}: not a whole body");
            };
            assert_eq!(resp.body().size_hint().exact(), Some(bytes.len() as u64));
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(v["status"], status.as_u16(), "{p:?}");
            assert_eq!(v["code"], p.code());
            assert_eq!(v["type"], format!("urn:portico:problem:{}", p.code()));
            assert!(!v["detail"].as_str().unwrap().is_empty(), "{p:?}");
            // gRPC clients get the same problem as a status they can read.
            let g = p.grpc_response(&id, &id_header);
            assert_eq!(g.status(), StatusCode::OK);
            let grpc: u8 = g.headers()["grpc-status"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=16).contains(&grpc), "{p:?}: grpc-status {grpc}");
            assert!(g.headers().contains_key("grpc-message"), "{p:?}");
        }
    }

    #[test]
    fn a_refusal_that_may_pass_says_when_to_retry() {
        let id = HeaderValue::from_static("r");
        let h = http::HeaderName::from_static("x-request-id");
        let retry = |p: Problem| {
            p.response(&id, &h)
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(retry(Problem::RateLimited(0)).as_deref(), Some("1"));
        assert_eq!(retry(Problem::RateLimited(42)).as_deref(), Some("42"));
        assert_eq!(retry(Problem::ConcurrencyLimited).as_deref(), Some("1"));
        assert_eq!(retry(Problem::Forbidden), None);
        // A malformed request closes its connection: what follows it cannot be trusted.
        let bad = Problem::BadRequest("x").response(&id, &h);
        assert_eq!(bad.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn a_body_read_whole_fails_as_the_client_s_problem() {
        use crate::body::client::ReadError;
        assert_eq!(Problem::from(ReadError::TooLarge), Problem::PayloadTooLarge);
        assert_eq!(
            Problem::from(ReadError::Malformed).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
