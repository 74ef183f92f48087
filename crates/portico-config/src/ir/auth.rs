//! Identity and access at run time: consumers and their credentials, the authentication
//! methods, `acl`, `ip_filter`, `cors`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::server::Cidr;

/// The configured API clients.
#[derive(Debug, Default)]
pub struct Consumers {
    pub list: Vec<Consumer>,
    pub api_keys: portico_auth::apikey::KeyStore,
    pub users: portico_auth::basic::Users,
    pub by_name: std::collections::HashMap<String, usize>,
    /// Client-certificate name (SAN URI, SAN DNS name or CN) → consumer.
    pub by_cert_name: std::collections::HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub groups: Vec<Arc<str>>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The name and groups as header values, built once.
    pub name_value: HeaderValue,
    pub groups_value: Option<HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub url: String,
    pub refresh: Duration,
    pub min_refresh: Duration,
}

#[derive(Debug)]
pub struct AuthPolicy {
    /// Tried in order; the first that accepts the request's credentials wins.
    pub methods: Vec<AuthMethod>,
    /// Query parameters any of the methods reads credentials from (kept out of the access log
    /// and the upstream request).
    pub query_params: Vec<String>,
}

impl AuthPolicy {
    pub fn new(methods: Vec<AuthMethod>) -> AuthPolicy {
        let mut query_params: Vec<String> = Vec::new();
        for m in &methods {
            let sources: &[TokenSource] = match m {
                AuthMethod::ApiKey(k) => {
                    query_params.extend(k.query.iter().cloned());
                    &[]
                }
                AuthMethod::Jwt(j) => &j.sources,
                AuthMethod::Introspection(i) => &i.sources,
                AuthMethod::Basic(_) | AuthMethod::ClientCert(_) => &[],
            };
            for s in sources {
                if let TokenSource::Query(q) = s {
                    query_params.push(q.clone());
                }
            }
        }
        query_params.dedup();
        AuthPolicy {
            methods,
            query_params,
        }
    }
}

#[derive(Debug)]
pub enum AuthMethod {
    ApiKey(ApiKeyMethod),
    Basic(BasicMethod),
    Jwt(Box<JwtMethod>),
    ClientCert(ClientCertMethod),
    Introspection(Box<IntrospectionMethod>),
}

#[derive(Debug)]
pub struct IntrospectionMethod {
    /// Its slot in the runtime's per-policy state (its token cache).
    pub slot: usize,
    pub url: String,
    /// `Basic …` with the client id and secret.
    pub authorization: HeaderValue,
    pub sources: Vec<TokenSource>,
    pub timeout: Duration,
    pub cache_size: usize,
    pub cache_ttl: Duration,
    pub rules: Vec<portico_auth::jwt::ClaimRule>,
    pub consumer_claim: Option<String>,
    pub forward_claims: Vec<(String, HeaderName)>,
    /// `Bearer realm="…"`.
    pub challenge: HeaderValue,
}

#[derive(Debug)]
pub struct ClientCertMethod {
    pub forward_header: Option<HeaderName>,
}

impl AuthMethod {
    pub fn kind(&self) -> &'static str {
        match self {
            AuthMethod::ApiKey(_) => "api_key",
            AuthMethod::Basic(_) => "basic_auth",
            AuthMethod::Jwt(_) => "jwt",
            AuthMethod::ClientCert(_) => "client_cert",
            AuthMethod::Introspection(_) => "introspection",
        }
    }
}

#[derive(Debug)]
pub struct ApiKeyMethod {
    pub header: HeaderName,
    pub query: Option<String>,
}

#[derive(Debug)]
pub struct BasicMethod {
    /// `Basic realm="…"`.
    pub challenge: HeaderValue,
    pub cache_ttl: Duration,
    /// Its slot in the runtime's per-policy state (its cache of verified credentials).
    pub slot: usize,
}

#[derive(Debug)]
pub struct JwtMethod {
    /// Its slot in the runtime's per-policy state (its token cache).
    pub slot: usize,
    pub token_cache_size: usize,
    pub forward_token: bool,
    pub issuers: Vec<portico_auth::jwt::Issuer>,
    pub sources: Vec<TokenSource>,
    pub required_claims: Vec<String>,
    pub rules: Vec<portico_auth::jwt::ClaimRule>,
    pub consumer_claim: Option<String>,
    pub forward_claims: Vec<(String, HeaderName)>,
    /// `Bearer realm="…"`.
    pub challenge: HeaderValue,
}

#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `Authorization: Bearer …`.
    Bearer,
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

#[derive(Debug)]
pub struct AclPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub scopes: Vec<String>,
    /// Empty: every method.
    pub methods: Vec<Method>,
}

#[derive(Debug)]
pub struct IpFilterPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

#[derive(Debug)]
pub struct CorsPolicy {
    pub any_origin: bool,
    /// Lower-case exact origins.
    pub origins: Vec<String>,
    /// `*.example.com` patterns as `.example.com` suffixes (with scheme prefix, e.g.
    /// `https://` + suffix).
    pub origin_suffixes: Vec<(String, String)>,
    pub methods: HeaderValue,
    /// `None`: echo the preflight's `Access-Control-Request-Headers`.
    pub headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: HeaderValue,
}
