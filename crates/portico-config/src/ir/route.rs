//! Routes at run time: what a route matches (host, path, headers, query) and the policies in
//! effect on it.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::action::{Action, GrpcTranscode, SoapRoute};
use super::auth::CorsPolicy;
use super::policy::{CachePolicy, CompressionPolicy, JsonTransformPolicy, Policy, XmlJsonPolicy};

#[derive(Debug)]
pub struct Route {
    pub index: usize,
    pub name: Arc<str>,
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// `match.case_sensitive: false`: the path's ASCII letters match in any case.
    pub path_any_case: bool,
    pub methods: Vec<Method>,
    pub headers: Vec<HeaderCondition>,
    pub query: Vec<QueryCondition>,
    /// Same shape as query conditions: a cookie name and its test.
    pub cookies: Vec<QueryCondition>,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub policies: Arc<[Policy]>,
    /// Headers added to every response of this route (deprecation notices).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Shadow traffic: (upstream index, percent of requests).
    pub mirror: Option<(usize, u32)>,
    /// REST/JSON to gRPC transcoding for this route's requests.
    pub transcode: Option<Arc<GrpcTranscode>>,
    /// gRPC-Web requests are bridged to native gRPC.
    pub grpc_web: bool,
    /// The upstream's SOAP operations as JSON endpoints.
    pub soap: Option<Arc<SoapRoute>>,
    /// `tracing.sample_ratio`: this route's share of new traces, over the section's.
    pub sample_ratio: Option<f64>,
    /// `tracing.server_timing`: every answer gets a `Server-Timing` header.
    pub server_timing: bool,
    /// The body and response policies that apply, found when the config loads so requests do
    /// not search the chains.
    pub effective: Effective,
    /// What the route's requests must look like (an OpenAPI operation's parameters and body),
    /// checked after authentication; with the path's parameter names in template order.
    pub contract: Option<Arc<Contract>>,
    /// For a route made from an `apis` operation: the index of its document in
    /// `Config::apis`, and the operation's JSON pointer there.
    pub operation: Option<(usize, Box<str>)>,
}

/// An OpenAPI operation's contract, as the route serves it: what its requests must be (unless
/// `validate_requests: false`), and what its answers are checked against (with
/// `check_responses`).
#[derive(Debug)]
pub struct Contract {
    pub request: Option<portico_contract::RequestContract>,
    pub response: Option<ResponseCheck>,
    /// The document's names of the path template's parameters, in order.
    pub path_names: Box<[Box<str>]>,
}

impl Contract {
    /// A request's path parameters (the router's, in template order) by the document's names.
    pub fn path_params<'a>(&'a self, values: &'a [String]) -> Vec<(&'a str, &'a str)> {
        self.path_names
            .iter()
            .zip(values)
            .map(|(n, v)| (&**n, v.as_str()))
            .collect()
    }
}

/// Which answers are checked, and what a violation does.
#[derive(Debug)]
pub struct ResponseCheck {
    pub contract: portico_contract::ResponseContract,
    /// The share of answers checked, 0 to 1.
    pub sample: f64,
    /// Replace a violating answer with a 502, rather than only count and log it.
    pub enforce: bool,
}

/// One of each kind of body and response policy a route's requests use: the route's own, else
/// a global one (CORS: the global one first, as the chain runs).
#[derive(Debug, Default)]
pub struct Effective {
    pub cors: Option<Arc<CorsPolicy>>,
    pub compression: Option<Arc<CompressionPolicy>>,
    pub json_transform: Option<Arc<JsonTransformPolicy>>,
    pub xml_json: Option<Arc<XmlJsonPolicy>>,
    pub cache: Option<Arc<CachePolicy>>,
    /// `request_decompression`: the largest decoded body.
    pub request_decompression: Option<u64>,
}

impl Effective {
    pub fn resolve(route: &[Policy], global: &[Policy]) -> Effective {
        let route_first = || route.iter().chain(global.iter());
        Effective {
            cors: global.iter().chain(route.iter()).find_map(|p| match p {
                Policy::Cors(c) => Some(c.clone()),
                _ => None,
            }),
            compression: route_first().find_map(|p| match p {
                Policy::Compression(c) => Some(c.clone()),
                _ => None,
            }),
            json_transform: route_first().find_map(|p| match p {
                Policy::JsonTransform(j) => Some(j.clone()),
                _ => None,
            }),
            xml_json: route_first().find_map(|p| match p {
                Policy::XmlJson(x) => Some(x.clone()),
                _ => None,
            }),
            cache: route_first().find_map(|p| match p {
                Policy::Cache(c) => Some(Arc::new(c.clone())),
                _ => None,
            }),
            request_decompression: route_first().find_map(|p| match p {
                Policy::RequestDecompression(max) => Some(*max),
                _ => None,
            }),
        }
    }
}

impl Route {
    /// Number of conditions besides host and path; more conditions rank a route higher.
    pub fn condition_count(&self) -> usize {
        usize::from(!self.methods.is_empty())
            + self.headers.len()
            + self.query.len()
            + self.cookies.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`; matches one or more labels in front.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathPattern {
    Any,
    Exact(String),
    /// No trailing slash, except the root prefix `/`.
    Prefix(String),
    Template(Template),
}

/// A compiled path template: `/users/{id}/files/{*rest}`.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub segments: Vec<Segment>,
    /// Parameter names in order of appearance.
    pub params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// A whole segment captured.
    Param,
    /// The rest of the path (zero or more segments), only last.
    CatchAll,
}

#[derive(Debug)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub test: ValueTest,
}

#[derive(Debug)]
pub struct QueryCondition {
    pub name: String,
    pub test: ValueTest,
}

#[derive(Debug)]
pub enum ValueTest {
    Exact(String),
    Regex(regex::Regex),
    Present(bool),
    MediaType(MediaType),
}

impl ValueTest {
    pub fn accepts(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueTest::Present(want), v) => *want == v.is_some(),
            (ValueTest::Exact(e), Some(v)) => e == v,
            (ValueTest::Regex(r), Some(v)) => r.is_match(v),
            (ValueTest::MediaType(m), Some(v)) => m.listed_in(v),
            (_, None) => false,
        }
    }
}

/// A media type to look for in a list such as `Accept`: `type/subtype` (lower-cased) and the
/// parameters it must carry (names lower-cased, values unquoted). `q` is not among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type/subtype; name=value; …`; `None` when it is not of that shape.
    pub fn parse(s: &str) -> Option<MediaType> {
        let mut parts = s.split(';');
        let essence = parts.next()?.trim().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/')?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
        };
        if !token(ty) || !token(sub) {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (k, v) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if !token(&k) {
                return None;
            }
            params.push((k, v.to_owned()));
        }
        Some(MediaType { essence, params })
    }

    /// Whether the comma-separated list `header` names this type with (at least) these
    /// parameters, in an entry not refused with `q=0`.
    pub fn listed_in(&self, header: &str) -> bool {
        header.split(',').any(|entry| {
            let Some(m) = MediaType::parse(entry) else {
                return false;
            };
            if !m.essence.eq_ignore_ascii_case(&self.essence) {
                return false;
            }
            let refused = m
                .params
                .iter()
                .any(|(k, v)| k == "q" && v.parse::<f32>().is_ok_and(|q| q == 0.0));
            !refused
                && self
                    .params
                    .iter()
                    .all(|want| m.params.iter().any(|have| have == want))
        })
    }
}
