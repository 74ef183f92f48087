//! Policies at run time, apart from identity and access (`auth.rs`): caching, body
//! transforms, compression, rate and concurrency limits, header operations.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use super::auth::{AclPolicy, AuthPolicy, CorsPolicy, IpFilterPolicy};

/// A policy in the chain. Request phases run global policies first, then the route's, each in
/// declared order; response phases run in the reverse order.
#[derive(Debug)]
pub enum Policy {
    Headers(HeadersPolicy),
    RateLimit(RateLimitPolicy),
    /// One authentication method, or several of which any one suffices.
    Auth(AuthPolicy),
    Acl(AclPolicy),
    IpFilter(IpFilterPolicy),
    Cors(Arc<CorsPolicy>),
    /// Largest request body, in bytes.
    BodyLimit(u64),
    ConcurrencyLimit(ConcurrencyPolicy),
    Compression(Arc<CompressionPolicy>),
    /// Decode compressed request bodies; the decoded body may be at most this many bytes.
    RequestDecompression(u64),
    JsonTransform(Arc<JsonTransformPolicy>),
    XmlJson(Arc<XmlJsonPolicy>),
    Cache(CachePolicy),
}

/// An in-memory response cache; the store lives in the runtime's per-policy state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// Its slot in the runtime's per-policy state (its store, shared by policies with equal
    /// settings).
    pub slot: usize,
    pub max_entries: u64,
    pub max_object_bytes: u64,
    pub key_query: CacheKeyQuery,
    pub key_headers: Vec<HeaderName>,
    /// The same settings give the same fingerprint: the store (and its entries) survives a
    /// reload that keeps them, and policies with equal settings share one store.
    pub fingerprint: u64,
}

/// Which query parameters are part of a cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheKeyQuery {
    All,
    None,
    /// Only these, sorted by name whatever their order in the request.
    Only(Vec<String>),
}

/// Conversion of bodies between XML and JSON.
#[derive(Debug)]
pub struct XmlJsonPolicy {
    pub request: XmlDirection,
    pub response: XmlDirection,
    pub root: String,
    pub namespaces: Vec<(String, String)>,
    pub max_bytes: u64,
    pub limits: portico_translate::xml::Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlDirection {
    JsonToXml,
    XmlToJson,
    None,
}

/// Reshaping of JSON responses.
#[derive(Debug)]
pub struct JsonTransformPolicy {
    pub sparse_fieldsets: bool,
    pub remove: Option<portico_translate::shape::Fields>,
    pub rename: Vec<(String, String)>,
    pub set: Vec<(String, serde_json::Value)>,
    pub status: Vec<(StatusCode, StatusCode)>,
    pub max_bytes: u64,
}

impl JsonTransformPolicy {
    /// Whether the body needs reading (as opposed to a status rewrite only).
    pub fn touches_body(&self) -> bool {
        self.sparse_fieldsets
            || self.remove.is_some()
            || !self.rename.is_empty()
            || !self.set.is_empty()
    }
}

/// Response compression settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionPolicy {
    pub codings: Vec<Coding>,
    pub min_bytes: u64,
    /// Lower-cased; `text/*` entries end in `/*`.
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }
}

impl CompressionPolicy {
    /// Whether a response of this `Content-Type` is worth compressing.
    pub fn compresses(&self, content_type: &str) -> bool {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if self.content_types.is_empty() {
            return essence.starts_with("text/")
                || matches!(
                    essence.as_str(),
                    "application/json"
                        | "application/javascript"
                        | "application/xml"
                        | "application/x-ndjson"
                        | "image/svg+xml"
                )
                || essence.ends_with("+json")
                || essence.ends_with("+xml");
        }
        self.content_types
            .iter()
            .any(|t| match t.strip_suffix("/*") {
                Some(prefix) => essence.split_once('/').is_some_and(|(ty, _)| ty == prefix),
                None => *t == essence,
            })
    }
}

#[derive(Debug)]
pub struct ConcurrencyPolicy {
    /// Its slot in the runtime's per-policy state (its counters).
    pub slot: usize,
    pub max_in_flight: u32,
    pub key: LimitKey,
    /// (target latency, minimum cap) when the cap adapts to latency.
    pub adaptive: Option<(Duration, u32)>,
    /// Equal fingerprints: a reload keeps the in-flight counts.
    pub fingerprint: u64,
}

/// Where a `rate_limit` policy keeps its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStore {
    Local,
    /// Shared through Redis; `fail_open` says what happens when Redis does not answer;
    /// `batch` units are taken per round trip.
    Redis {
        fail_open: bool,
        batch: u32,
    },
}

#[derive(Debug)]
pub struct RateLimitPolicy {
    /// Its slot in the runtime's per-policy state (its limiters).
    pub slot: usize,
    pub key: LimitKey,
    pub limits: Vec<Limit>,
    pub hide_headers: bool,
    pub store: LimitStore,
    /// Equal fingerprints mean equal limits: a reload keeps their counters.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    ClientIp,
    Route,
    Consumer,
    Header(HeaderName),
    Claim(String),
    Composite(Vec<LimitKey>),
}

#[derive(Debug, Clone)]
pub struct Limit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
    /// A sliding-window quota instead of a token bucket (`burst` is then `requests`).
    pub sliding: bool,
}

#[derive(Debug, Default)]
pub struct HeadersPolicy {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

#[derive(Debug, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
    /// Values with `%{variable}`s, rendered per request: (name, value, append).
    pub templated: Vec<(HeaderName, Vec<ValuePart>, bool)>,
}

/// A piece of a header value template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuePart {
    Literal(String),
    ClientIp,
    RequestId,
    Route,
    Consumer,
    /// A claim of the request's accepted token (JWT or introspection); empty without one.
    Claim(String),
}

/// What header value templates can refer to.
pub struct HeaderVars<'a> {
    pub client_ip: std::net::IpAddr,
    pub request_id: &'a str,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl HeaderOps {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    /// `apply`, then the templated values rendered with `vars`.
    pub fn apply_with(&self, headers: &mut http::HeaderMap, vars: &HeaderVars<'_>) {
        self.apply(headers);
        for (name, parts, append) in &self.templated {
            let mut v = String::new();
            for p in parts {
                match p {
                    ValuePart::Literal(s) => v.push_str(s),
                    ValuePart::ClientIp => v.push_str(&vars.client_ip.to_string()),
                    ValuePart::RequestId => v.push_str(vars.request_id),
                    ValuePart::Route => v.push_str(vars.route),
                    ValuePart::Consumer => v.push_str(vars.consumer.unwrap_or("")),
                    ValuePart::Claim(c) => match vars.claims.and_then(|m| m.get(c)) {
                        Some(serde_json::Value::String(s)) => v.push_str(s),
                        Some(serde_json::Value::Null) | None => {}
                        Some(other) => v.push_str(&other.to_string()),
                    },
                }
            }
            if let Ok(v) = HeaderValue::try_from(v) {
                if *append {
                    headers.append(name.clone(), v);
                } else {
                    headers.insert(name.clone(), v);
                }
            }
        }
    }
}
