//! `cache` policies: an in-memory shared HTTP cache. Whether a response may be stored and for
//! how long, and whether a stored one satisfies a new request (freshness, `Vary`,
//! `Authorization`, `no-store`, `private`, `s-maxage`, `Age`), are RFC 9111 rules, taken from
//! http-cache-semantics; storage is moka (bounded, concurrent). A stored response is served
//! while fresh; a stale one is revalidated with the origin (`If-None-Match` /
//! `If-Modified-Since`), and a `304` refreshes it without sending the body again. A URL keeps
//! up to [`MAX_VARIANTS`] answers for requests that differ in the headers its `Vary` names.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::base::clock::Clock;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy};

use crate::body::{Body, BodyError};

/// One stored answer.
pub struct Entry {
    policy: CachePolicy,
    body: Bytes,
}

/// Answers kept per URL (one per combination of the `Vary` headers); the oldest goes first.
pub const MAX_VARIANTS: usize = 8;

type Variants = Arc<Vec<Arc<Entry>>>;

/// What the store has for a request.
pub enum Lookup {
    /// A fresh answer (or a `304` for the client's `If-None-Match`).
    Hit(Response<Body>),
    /// A stale answer that the origin may confirm: send the request with these conditional
    /// headers, then hand the answer and the entry to [`ResponseCache::store`].
    Revalidate(Arc<Entry>, http::HeaderMap),
    Miss,
}

/// One store, shared by the policies with the same settings.
pub struct ResponseCache {
    entries: moka::sync::Cache<String, Variants>,
    /// Freshness is judged by the gateway's clock.
    clock: Arc<Clock>,
    max_object_bytes: u64,
    pub fingerprint: u64,
    /// Look-ups answered fresh, found stale (revalidated), and missed; answers stored.
    /// Counted for the admin API's `GET /caches` (relaxed, and kept across reloads with
    /// the store).
    pub hits: std::sync::atomic::AtomicU64,
    pub stale: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
    pub stored: std::sync::atomic::AtomicU64,
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
pub fn request_head(req: &Request<crate::body::ClientBody>) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r.into_parts().0
}

/// The cache key: method, host, path, the query parameters the policy keeps and the values
/// of the headers it names (after a unit separator, so the path stays a prefix for purges).
/// `head`'s URI becomes the one the key describes, so the cache rules (which compare URIs)
/// see requests with the same key as the same resource.
pub fn key(
    head: &mut http::request::Parts,
    host: &str,
    policy: &portico_config::CachePolicy,
) -> String {
    use portico_config::CacheKeyQuery;
    let path = head.uri.path();
    let mut key = format!("{} {host}{path}", head.method);
    let path_at = key.len() - path.len();
    match (&policy.key_query, head.uri.query()) {
        (_, None) | (CacheKeyQuery::None, _) => {}
        (CacheKeyQuery::All, Some(q)) => {
            key.push('?');
            key.push_str(q);
        }
        (CacheKeyQuery::Only(names), Some(q)) => {
            let mut kept: Vec<&str> = portico_config::query::raw_pairs(q)
                .filter(|(_, name)| names.iter().any(|n| n == name))
                .map(|(pair, _)| pair)
                .collect();
            // Sorted: `?b=2&a=1` and `?a=1&b=2` are the same answer.
            kept.sort_unstable();
            if !kept.is_empty() {
                key.push('?');
                key.push_str(&kept.join("&"));
            }
        }
    }
    if !matches!(policy.key_query, CacheKeyQuery::All)
        && let Ok(u) = http::Uri::try_from(&key[path_at..])
    {
        head.uri = u;
    }
    for name in &policy.key_headers {
        key.push('\u{1f}');
        key.push_str(name.as_str());
        key.push('=');
        for (i, v) in head.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    key
}

fn mark(resp: &mut Response<Body>, how: &'static str) {
    resp.headers_mut().insert(
        http::HeaderName::from_static("portico-cache"),
        HeaderValue::from_static(how),
    );
}

impl ResponseCache {
    pub fn new(p: &portico_config::CachePolicy, clock: Arc<Clock>) -> ResponseCache {
        ResponseCache {
            clock,
            entries: moka::sync::Cache::builder()
                .max_capacity(p.max_entries)
                .support_invalidation_closures()
                .build(),
            max_object_bytes: p.max_object_bytes,
            fingerprint: p.fingerprint,
            hits: Default::default(),
            stale: Default::default(),
            misses: Default::default(),
            stored: Default::default(),
        }
    }

    /// What the admin API reports of the store.
    pub fn stats(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let (hits, stale, misses) = (
            self.hits.load(Relaxed),
            self.stale.load(Relaxed),
            self.misses.load(Relaxed),
        );
        let looked = hits + stale + misses;
        serde_json::json!({
            // moka counts lazily: close to, not exactly, the entries held.
            "entries": self.entries.entry_count(),
            "max_object_bytes": self.max_object_bytes,
            "hits": hits,
            "stale": stale,
            "misses": misses,
            "stored": self.stored.load(Relaxed),
            "hit_ratio": if looked == 0 { serde_json::Value::Null } else { serde_json::json!(hits as f64 / looked as f64) },
        })
    }

    /// A fresh stored answer for this request, if there is one (304 when the client's
    /// `If-None-Match` names its `ETag`), or a stale one to revalidate.
    pub fn lookup(&self, key: &str, head: &http::request::Parts) -> Lookup {
        if head.method != Method::GET && head.method != Method::HEAD {
            return Lookup::Miss;
        }
        let Some(variants) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        let now = self.clock.now();
        let mut stale = None;
        for entry in variants.iter() {
            match entry.policy.before_request(head, now) {
                BeforeRequest::Fresh(parts) => return self.hit(entry, head, parts),
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } if stale.is_none() => stale = Some((entry, request)),
                BeforeRequest::Stale { .. } => {}
            }
        }
        let Some((entry, request)) = stale else {
            return Lookup::Miss;
        };
        metrics::counter!("portico_cache_requests_total", "result" => "stale").increment(1);
        // A client's own validators are its business: its conditional request goes to the
        // origin as it is, and the answer is not merged into the store.
        if head.headers.contains_key(header::IF_NONE_MATCH)
            || head.headers.contains_key(header::IF_MODIFIED_SINCE)
        {
            return Lookup::Miss;
        }
        let mut conditional = http::HeaderMap::new();
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let Some(v) = request.headers.get(&name) {
                conditional.insert(name, v.clone());
            }
        }
        if conditional.is_empty() {
            // Nothing to validate with: fetched again in full.
            return Lookup::Miss;
        }
        Lookup::Revalidate(entry.clone(), conditional)
    }

    fn hit(
        &self,
        entry: &Entry,
        head: &http::request::Parts,
        parts: http::response::Parts,
    ) -> Lookup {
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
        Lookup::Hit(resp)
    }

    /// Keeps `entry` as the answer for `head`'s variant of `key`.
    fn insert(&self, key: String, head: &http::request::Parts, entry: Arc<Entry>) {
        self.stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = self.clock.now();
        self.entries.entry(key).and_upsert_with(|old| {
            let mut list: Vec<Arc<Entry>> = old
                .map(|o| o.into_value().as_ref().clone())
                .unwrap_or_default();
            // The variant this request selects (same `Vary` values) is replaced.
            list.retain(|e| {
                !matches!(
                    e.policy.before_request(head, now),
                    BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
                )
            });
            if list.len() >= MAX_VARIANTS {
                list.remove(0);
            }
            list.push(entry);
            Arc::new(list)
        });
    }

    /// Passes the upstream's answer on, storing a copy as it streams when the rules allow it.
    /// With `revalidated`, the answer is the origin's reply to a conditional request for that
    /// entry: a `304` that confirms it serves (and refreshes) the stored body.
    pub fn store(
        self: &Arc<Self>,
        key: String,
        head: &http::request::Parts,
        resp: Response<crate::body::UpstreamBody>,
        revalidated: Option<Arc<Entry>>,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let mut probe = Response::new(());
        *probe.status_mut() = parts.status;
        *probe.headers_mut() = parts.headers.clone();
        let (probe, ()) = probe.into_parts();
        let now = self.clock.now();
        if let Some(old) = revalidated
            && parts.status == StatusCode::NOT_MODIFIED
        {
            if let AfterResponse::NotModified(policy, fresh) =
                old.policy.after_response(head, &probe, now)
            {
                metrics::counter!("portico_cache_requests_total", "result" => "revalidated")
                    .increment(1);
                let entry = Arc::new(Entry {
                    policy,
                    body: old.body.clone(),
                });
                self.insert(key, head, entry.clone());
                let body = if head.method == Method::HEAD {
                    Body::Empty
                } else {
                    Body::full(entry.body.clone())
                };
                let mut resp = Response::from_parts(fresh, body);
                mark(&mut resp, "revalidated");
                return resp;
            }
            // A 304 that names another version: the stored one is no longer the origin's.
            self.entries.invalidate(&key);
        }
        let policy = CachePolicy::new_options(head, &probe, now, options());
        let too_big = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_object_bytes);
        let storable = head.method == Method::GET
            && policy.is_storable()
            && !policy.time_to_live(self.clock.now()).is_zero()
            && !too_big
            && !parts.headers.contains_key(header::SET_COOKIE);
        let mut resp = if storable {
            metrics::counter!("portico_cache_requests_total", "result" => "miss").increment(1);
            let tee = Tee {
                inner: body,
                copy: Some(BytesMut::new()),
                cache: self.clone(),
                key: Some(key),
                head: Some(head.clone()),
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

    /// Whether the origin's `304` to a revalidation confirms `entry` (its validators match).
    /// One that does not cannot be given to the client, who asked unconditionally.
    pub fn confirms(
        &self,
        entry: &Entry,
        head: &http::request::Parts,
        resp: &Response<crate::body::UpstreamBody>,
    ) -> bool {
        let mut probe = Response::new(());
        *probe.status_mut() = resp.status();
        *probe.headers_mut() = resp.headers().clone();
        let (probe, ()) = probe.into_parts();
        matches!(
            entry.policy.after_response(head, &probe, self.clock.now()),
            AfterResponse::NotModified(..)
        )
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
    inner: crate::body::UpstreamBody,
    /// `None` once the copy went over the limit.
    copy: Option<BytesMut>,
    cache: Arc<ResponseCache>,
    key: Option<String>,
    head: Option<http::request::Parts>,
    policy: Option<CachePolicy>,
}

impl Tee {
    /// The whole body went through: store it.
    fn complete(&mut self) {
        if let (Some(copy), Some(key), Some(head), Some(policy)) = (
            self.copy.take(),
            self.key.take(),
            self.head.take(),
            self.policy.take(),
        ) {
            self.cache.insert(
                key,
                &head,
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
