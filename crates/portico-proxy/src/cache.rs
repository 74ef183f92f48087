//! `cache` policies: an in-memory shared HTTP cache. Whether a response may be stored and for
//! how long, and whether a stored one satisfies a new request (freshness, `Vary`,
//! `Authorization`, `no-store`, `private`, `s-maxage`, `Age`), are RFC 9111 rules, taken from
//! http-cache-semantics; storage is moka (bounded, concurrent). A stored response is served
//! while fresh; a stale one is fetched again (not revalidated) in this version.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};

use crate::body::{Body, BodyError};

struct Entry {
    policy: CachePolicy,
    body: Bytes,
}

/// One store, shared by the policies with the same settings.
pub struct ResponseCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    max_object_bytes: u64,
    pub fingerprint: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// The request as the cache rules see it.
pub fn request_head(req: &Request<hyper::body::Incoming>) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r.into_parts().0
}

/// The cache key: method, host and path with query.
pub fn key(head: &http::request::Parts, host: &str) -> String {
    let pq = head.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{} {host}{pq}", head.method)
}

fn mark(resp: &mut Response<Body>, how: &'static str) {
    resp.headers_mut().insert(
        http::HeaderName::from_static("portico-cache"),
        HeaderValue::from_static(how),
    );
}

impl ResponseCache {
    pub fn new(p: &portico_config::CachePolicy) -> ResponseCache {
        ResponseCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(p.max_entries)
                .support_invalidation_closures()
                .build(),
            max_object_bytes: p.max_object_bytes,
            fingerprint: p.fingerprint,
        }
    }

    /// A fresh stored answer for this request, if there is one (304 when the client's
    /// `If-None-Match` names its `ETag`).
    pub fn lookup(&self, key: &str, head: &http::request::Parts) -> Option<Response<Body>> {
        if head.method != Method::GET && head.method != Method::HEAD {
            return None;
        }
        let entry = self.entries.get(key)?;
        let BeforeRequest::Fresh(parts) = entry.policy.before_request(head, SystemTime::now())
        else {
            metrics::counter!("portico_cache_requests_total", "result" => "stale").increment(1);
            return None;
        };
        metrics::counter!("portico_cache_requests_total", "result" => "hit").increment(1);
        let not_modified = match (
            head.headers.get(header::IF_NONE_MATCH),
            parts.headers.get(header::ETAG),
        ) {
            (Some(inm), Some(etag)) => inm.to_str().ok().is_some_and(|l| {
                l.split(',').any(|t| {
                    let t = t.trim();
                    t == "*"
                        || t.trim_start_matches("W/")
                            == etag.to_str().unwrap_or("").trim_start_matches("W/")
                })
            }),
            _ => false,
        };
        let body = if not_modified || head.method == Method::HEAD {
            Body::Empty
        } else {
            Body::full(entry.body.clone())
        };
        let mut resp = Response::from_parts(parts, body);
        if not_modified {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().remove(header::CONTENT_LENGTH);
        }
        mark(&mut resp, "hit");
        Some(resp)
    }

    /// Passes the upstream's answer on, storing a copy as it streams when the rules allow it.
    pub fn store(
        self: &Arc<Self>,
        key: String,
        head: &http::request::Parts,
        resp: Response<crate::client::UpstreamBody>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let mut probe = Response::new(());
        *probe.status_mut() = parts.status;
        *probe.headers_mut() = parts.headers.clone();
        let (probe, ()) = probe.into_parts();
        let policy = CachePolicy::new_options(head, &probe, SystemTime::now(), options());
        let too_big = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_object_bytes);
        let storable = head.method == Method::GET
            && policy.is_storable()
            && !policy.time_to_live(SystemTime::now()).is_zero()
            && !too_big
            && !parts.headers.contains_key(header::SET_COOKIE);
        let mut resp = if storable {
            metrics::counter!("portico_cache_requests_total", "result" => "miss").increment(1);
            let tee = Tee {
                inner: body,
                copy: Some(BytesMut::new()),
                cache: self.clone(),
                key: Some(key),
                policy: Some(policy),
            };
            Response::from_parts(
                parts,
                Body::Stream(http_body_util::BodyExt::boxed_unsync(tee)),
            )
        } else {
            metrics::counter!("portico_cache_requests_total", "result" => "uncacheable")
                .increment(1);
            Response::from_parts(parts, Body::Upstream(body))
        };
        mark(&mut resp, "miss");
        resp
    }

    /// Drops every entry, or those whose path starts with `prefix`.
    pub fn purge(&self, prefix: Option<&str>) {
        match prefix {
            None => self.entries.invalidate_all(),
            Some(p) => {
                let p = p.to_owned();
                let _ = self.entries.invalidate_entries_if(move |k, _| {
                    k.split_once(' ')
                        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                        .is_some_and(|path| path.starts_with(&p))
                });
            }
        }
    }
}

/// The upstream's body, copied (up to the object limit) into the cache when it completes.
struct Tee {
    inner: crate::client::UpstreamBody,
    /// `None` once the copy went over the limit.
    copy: Option<BytesMut>,
    cache: Arc<ResponseCache>,
    key: Option<String>,
    policy: Option<CachePolicy>,
}

impl Tee {
    /// The whole body went through: store it.
    fn complete(&mut self) {
        if let (Some(copy), Some(key), Some(policy)) =
            (self.copy.take(), self.key.take(), self.policy.take())
        {
            self.cache.entries.insert(
                key,
                Arc::new(Entry {
                    policy,
                    body: copy.freeze(),
                }),
            );
        }
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let (Some(d), Some(copy)) = (f.data_ref(), this.copy.as_mut()) {
                    if copy.len() as u64 + d.len() as u64 > this.cache.max_object_bytes {
                        this.copy = None;
                    } else {
                        copy.extend_from_slice(d);
                    }
                }
                // hyper stops polling a body that says it has ended.
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => this.copy = None,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
