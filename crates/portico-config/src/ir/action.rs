//! What a matched route does: proxy (with rewrites), respond, redirect, call a SOAP service,
//! transcode to gRPC, or aggregate several backends.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};

/// A route's SOAP service: the WSDL read and checked when the config loads.
#[derive(Debug)]
pub struct SoapRoute {
    pub wsdl: Arc<portico_translate::wsdl::Wsdl>,
    pub port: portico_translate::wsdl::Port,
    /// The route's path prefix; the operation's name follows it.
    pub prefix: String,
    /// The endpoint's path on the upstream.
    pub path: http::uri::PathAndQuery,
    pub token: Option<portico_translate::soap::UsernameToken>,
    pub max_bytes: u64,
    /// Configured methods and paths, tried before `POST {prefix}/{Operation}`.
    pub bindings: Vec<SoapBinding>,
}

/// `GET /people/{id}` for an operation.
#[derive(Debug)]
pub struct SoapBinding {
    /// Index into the port's operations.
    pub operation: usize,
    pub method: http::Method,
    /// Segments after the prefix: literal text, or `{name}` capturing one segment.
    pub segments: Vec<SoapSegment>,
    /// As written, for documents: `/people/{id}`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoapSegment {
    Literal(String),
    Param(String),
}

impl SoapBinding {
    /// The captured parameters when `method` and `rest` (the path after the prefix) match.
    pub fn matches<'a>(
        &'a self,
        method: &http::Method,
        rest: &'a str,
    ) -> Option<Vec<(&'a str, &'a str)>> {
        if *method != self.method {
            return None;
        }
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                SoapSegment::Literal(l) if l == part => {}
                SoapSegment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                _ => return None,
            }
        }
        Some(params)
    }
}

/// A route's gRPC transcoding: the methods and bindings, built when the config loads.
#[derive(Debug)]
pub struct GrpcTranscode {
    /// From `descriptor_set`; `None` with `reflection` (the runtime fetches it).
    pub transcoder: Option<Arc<portico_translate::Transcoder>>,
    pub options: portico_translate::Options,
    /// Request headers sent along as gRPC metadata.
    pub forward_headers: Vec<HeaderName>,
    /// Server streams as server-sent events unless `Accept` asks for NDJSON (else the reverse).
    pub sse_by_default: bool,
}

#[derive(Debug)]
pub enum Action {
    Proxy(ProxyAction),
    Respond(StaticResponse),
    Redirect(RedirectAction),
    Aggregate(Box<Aggregate>),
}

/// A composite route: backend calls made concurrently (or after the ones they depend on) and
/// merged into one JSON object.
#[derive(Debug)]
pub struct Aggregate {
    /// In the file's order, which is also the order of keys in the answer.
    pub backends: Vec<AggregateBackend>,
    pub partial_status: StatusCode,
    pub errors_key: String,
    pub pass_through_client_errors: bool,
    pub forward_headers: Vec<HeaderName>,
    pub sparse_fieldsets: bool,
}

/// How one backend's answer is reshaped before it is merged: extract, then keep, then drop,
/// then rename.
#[derive(Debug, Default)]
pub struct Shaping {
    pub extract: Option<String>,
    pub keep: Option<portico_translate::shape::Fields>,
    pub drop: Option<portico_translate::shape::Fields>,
    pub rename: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct AggregateBackend {
    pub name: Arc<str>,
    pub upstream: usize,
    pub method: Method,
    pub path: Vec<AggregatePart>,
    /// `None`: the upstream's `request_timeout`.
    pub timeout: Option<Duration>,
    pub required: bool,
    pub merge: bool,
    /// Backends whose answers this one's path uses.
    pub after: Vec<usize>,
    pub shaping: Shaping,
    /// Successful answers reused for this long, per rendered path.
    pub cache_ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregatePart {
    Literal(String),
    /// A parameter of the route's path template.
    Param(usize),
    /// A value in an earlier backend's answer: its index and the keys (or array indexes) to it.
    Answer(usize, Vec<String>),
}

#[derive(Debug)]
pub struct ProxyAction {
    /// Indexes into [`Config::upstreams`](crate::Config::upstreams) with their weights (one entry unless the route
    /// splits traffic).
    pub upstreams: Box<[(usize, u32)]>,
    pub total_weight: u32,
    pub strip_prefix: Option<usize>,
    pub path: Option<PathRewrite>,
    pub host: Option<HeaderValue>,
    /// Query parameters removed (by name) before `query_set` is appended.
    pub query_remove: Vec<String>,
    /// `name=value` pairs, percent-encoded, appended to the query.
    pub query_set: Vec<(String, String)>,
}

impl ProxyAction {
    /// The upstream for one request: the only one, or a weighted draw from `r` in
    /// `0..total_weight`.
    pub fn upstream(&self, r: impl FnOnce(u32) -> u32) -> usize {
        if self.upstreams.len() == 1 {
            return self.upstreams[0].0;
        }
        let mut x = r(self.total_weight);
        for (u, w) in self.upstreams.iter() {
            if x < *w {
                return *u;
            }
            x -= w;
        }
        self.upstreams[0].0
    }

    /// The path and query the upstream gets, when this action changes them (`None`: the
    /// client's, unchanged): `strip_prefix` or the `path` template (with the route's
    /// `params`), then `query_remove` and `query_set`. The gateway and `portico explain` both
    /// call this, so what explain shows is what is sent.
    pub fn rewrite(&self, path: &str, query: Option<&str>, params: &[String]) -> Option<String> {
        let new_path: Option<String> = if let Some(n) = self.strip_prefix {
            let rest = &path[n.min(path.len())..];
            Some(if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            })
        } else if let Some(rw) = &self.path {
            let p: Vec<&str> = params.iter().map(String::as_str).collect();
            let mut s = String::new();
            rw.render(&p, &mut s);
            Some(s)
        } else {
            None
        };
        // Query parameters set or removed by the rewrite.
        let rewritten_query: Option<String> = (!self.query_remove.is_empty()).then(|| {
            let mut out = String::new();
            for (pair, name) in crate::query::raw_pairs(query.unwrap_or("")) {
                if self.query_remove.iter().any(|r| *r == name) {
                    continue;
                }
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(pair);
            }
            for (k, v) in &self.query_set {
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(k);
                out.push('=');
                out.push_str(v);
            }
            out
        });
        let query = match &rewritten_query {
            Some(q) if q.is_empty() => None,
            Some(q) => Some(q.as_str()),
            None => query,
        };
        let new_path = match (new_path, &rewritten_query) {
            (None, Some(_)) => path.to_owned(),
            (None, None) => return None,
            (Some(p), _) => p,
        };
        Some(match query {
            // A rewrite may carry its own query; the client's is appended to it.
            Some(q) if new_path.contains('?') => format!("{new_path}&{q}"),
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        })
    }
}

/// Text with `{param}` placeholders, compiled to parts.
#[derive(Debug, Clone)]
pub struct PathRewrite {
    pub parts: Vec<RewritePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewritePart {
    Literal(String),
    /// Index into the route template's parameters.
    Param(usize),
}

impl PathRewrite {
    pub fn render(&self, params: &[&str], out: &mut String) {
        for p in &self.parts {
            match p {
                RewritePart::Literal(s) => out.push_str(s),
                RewritePart::Param(i) => out.push_str(params.get(*i).copied().unwrap_or("")),
            }
        }
    }
}

#[derive(Debug)]
pub struct StaticResponse {
    pub status: StatusCode,
    pub body: bytes::Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug)]
pub struct RedirectAction {
    pub status: StatusCode,
    pub to: PathRewrite,
}
