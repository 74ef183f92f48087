//! The identity and access phase: authentication methods, `acl`, `ip_filter`, CORS.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;
use http::header::{self, HeaderName, HeaderValue};
use portico_auth::Failure;
use portico_auth::jwt::{self, KeySet, Outcome};
use portico_config::{
    ApiKeyMethod, AuthMethod, AuthPolicy, BasicMethod, ClientCertMethod, IntrospectionMethod,
    JwtMethod, TokenSource,
};

use crate::policy::token_cache::{Granted, TOKEN_CACHE_TTL, TokenCache};

/// What identity policies keep for one runtime generation: the consumers, the JWKS key sets,
/// and the caches of verified credentials. Part of the runtime; the policies read only this.
#[derive(Debug, Clone)]
pub struct AuthState {
    pub consumers: Arc<portico_config::Consumers>,
    /// One per JWKS URL, by slot.
    pub jwks: Vec<Arc<crate::policy::jwks::JwksCache>>,
    /// The policies' state, where the credential and token caches are (by `slot`).
    pub states: crate::policy::state::PolicyStates,
}

/// Who the request is, as far as the chain has established.
#[derive(Debug, Default)]
pub struct Identity {
    /// Index into the config's consumers.
    pub consumer: Option<usize>,
    /// Scopes granted by a token.
    pub scopes: Vec<String>,
    /// Headers to send upstream (forwarded claims).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Query parameters that carried credentials; removed before proxying.
    pub strip_query: Vec<String>,
    /// Headers that carried accepted credentials; removed before proxying.
    pub strip_headers: Vec<HeaderName>,
    /// The token header of the JWT method being tried.
    pending_strip: Option<HeaderName>,
    pub authenticated: bool,
    /// The claims of the accepted token (for `claim` limit keys).
    pub claims: Option<Arc<jwt::Claims>>,
}

/// Why the chain stopped the request.
#[derive(Debug)]
pub enum Denial {
    /// 401 with these challenges.
    Unauthorized {
        reason: Failure,
        challenges: Vec<HeaderValue>,
    },
    /// 403.
    Forbidden {
        reason: &'static str,
        challenge: Option<HeaderValue>,
    },
    /// 503: a key set could not be loaded.
    Unavailable,
}

/// Runs one authentication policy (any of its methods may succeed).
pub async fn authenticate<B>(
    rt: &AuthState,
    policy: &AuthPolicy,
    req: &Request<B>,
    cert: Option<&portico_auth::mtls::ClientCert>,
    id: &mut Identity,
) -> Result<(), Denial> {
    let mut reason = Failure::Missing;
    let mut presented = false;
    let mut token_presented = false;
    for m in &policy.methods {
        let r = match m {
            AuthMethod::ApiKey(k) => api_key(rt, k, req, id),
            AuthMethod::Basic(b) => basic(rt, b, req, id).await,
            AuthMethod::Jwt(j) => jwt_auth(rt, j, req, id).await,
            AuthMethod::ClientCert(c) => client_cert(rt, c, cert, id),
            AuthMethod::Introspection(m) => introspect(rt, m, req, id).await,
        };
        match r {
            Ok(consumer) => {
                id.authenticated = true;
                if id.consumer.is_none() {
                    id.consumer = consumer;
                }
                return Ok(());
            }
            Err(Failure::Unavailable) => return Err(Denial::Unavailable),
            Err(Failure::Missing) => {}
            Err(f) => {
                token_presented |= matches!(m, AuthMethod::Jwt(_) | AuthMethod::Introspection(_));
                // The first real failure is the one reported (logs and metrics only).
                if !presented {
                    reason = f;
                    presented = true;
                }
            }
        }
    }
    let challenges = policy
        .methods
        .iter()
        // A TLS client certificate has no HTTP challenge: it is asked for in the handshake.
        .filter(|m| !matches!(m, AuthMethod::ClientCert(_)))
        .map(|m| match m {
            AuthMethod::ApiKey(k) => {
                HeaderValue::try_from(format!("ApiKey header=\"{}\"", k.header.as_str()))
                    .unwrap_or_else(|_| HeaderValue::from_static("ApiKey"))
            }
            AuthMethod::Basic(b) => b.challenge.clone(),
            AuthMethod::Jwt(j) if token_presented => {
                // RFC 6750 §3.1: a token was sent but is not acceptable.
                let mut v = j.challenge.as_bytes().to_vec();
                v.extend_from_slice(b", error=\"invalid_token\"");
                HeaderValue::from_bytes(&v).unwrap_or_else(|_| j.challenge.clone())
            }
            AuthMethod::Jwt(j) => j.challenge.clone(),
            AuthMethod::Introspection(m) if token_presented => {
                let mut v = m.challenge.as_bytes().to_vec();
                v.extend_from_slice(b", error=\"invalid_token\"");
                HeaderValue::from_bytes(&v).unwrap_or_else(|_| m.challenge.clone())
            }
            AuthMethod::Introspection(m) => m.challenge.clone(),
            AuthMethod::ClientCert(_) => HeaderValue::from_static(""),
        })
        // Methods alike (three `jwt` policies with one realm) send their challenge once.
        .fold(Vec::new(), |mut seen: Vec<HeaderValue>, c| {
            if !seen.contains(&c) {
                seen.push(c);
            }
            seen
        });
    Err(Denial::Unauthorized { reason, challenges })
}

/// The largest introspection answer read.
const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;

/// An opaque token checked at the authorization server (RFC 7662), answers cached per policy.
async fn introspect<B>(
    rt: &AuthState,
    m: &IntrospectionMethod,
    req: &Request<B>,
    id: &mut Identity,
) -> Result<Option<usize>, Failure> {
    let (token, carrier) = token(&m.sources, req, id)?;
    let token: &str = &token;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cache = Some(rt.states.introspection(m.slot)).filter(|c| c.capacity > 0);
    let granted = match cache.and_then(|c| c.get(token, now)) {
        Some(g) => g,
        // Boxed: the call to the authorization server is a large future, and a cached answer
        // (the common case) should not carry its size in every request's state.
        None => Box::pin(ask_introspection(rt, m, token, cache, now)).await?,
    };
    if !granted.active {
        return Err(Failure::Inactive);
    }
    if let Some(h) = carrier {
        id.strip_headers.push(h);
    }
    id.headers.extend(granted.headers);
    id.scopes.extend(granted.scopes);
    if id.claims.is_none() {
        id.claims = granted.claims;
    }
    Ok(granted.consumer)
}

/// Asks the authorization server about `token` and caches what it answers.
async fn ask_introspection(
    rt: &AuthState,
    m: &IntrospectionMethod,
    token: &str,
    cache: Option<&Arc<TokenCache>>,
    now: u64,
) -> Result<Granted, Failure> {
    let form = format!(
        "token={}&token_type_hint=access_token",
        portico_auth::basic::form_encode(token)
    );
    let answer = crate::upstream::fetch::post_form(
        &m.url,
        Some(&m.authorization),
        form,
        m.timeout,
        MAX_INTROSPECTION_BYTES,
    )
    .await
    .and_then(|b| serde_json::from_slice::<jwt::Claims>(&b).map_err(|e| format!("not JSON: {e}")));
    let claims = match answer {
        Ok(c) => {
            metrics::counter!("portico_introspection_requests_total", "result" => "ok")
                .increment(1);
            c
        }
        Err(e) => {
            metrics::counter!("portico_introspection_requests_total", "result" => "error")
                .increment(1);
            tracing::warn!(url = %m.url, error = %e, "token introspection failed");
            return Err(Failure::Unavailable);
        }
    };
    let g = grant(rt, m, Arc::new(claims), now);
    if let Some(c) = cache {
        c.put(token, g.clone(), now);
    }
    Ok(g)
}

/// What an introspection answer grants (or refuses), and until when it may be reused.
fn grant(rt: &AuthState, m: &IntrospectionMethod, claims: Arc<jwt::Claims>, now: u64) -> Granted {
    let whole = claims.clone();
    let claims = &*claims;
    let ttl_end = now + m.cache_ttl.as_secs();
    let exp = claims.get("exp").and_then(|e| e.as_f64()).map(|e| e as u64);
    let active = claims.get("active") == Some(&serde_json::Value::Bool(true))
        && exp.is_none_or(|e| e > now)
        && jwt::check_claims(claims, &[], &m.rules).is_ok();
    if !active {
        return Granted {
            active: false,
            claims: None,
            consumer: None,
            headers: Vec::new(),
            scopes: Vec::new(),
            until: ttl_end,
        };
    }
    let headers = m
        .forward_claims
        .iter()
        .filter_map(|(claim, h)| {
            let v = HeaderValue::try_from(jwt::claim_header_value(claims.get(claim)?)).ok()?;
            Some((h.clone(), v))
        })
        .collect();
    Granted {
        active: true,
        claims: Some(whole),
        consumer: m
            .consumer_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(|v| v.as_str())
            .and_then(|name| rt.consumers.by_name.get(name).copied()),
        headers,
        scopes: jwt::scopes(claims).into_iter().map(str::to_owned).collect(),
        until: exp.map_or(ttl_end, |e| e.min(ttl_end)),
    }
}

/// A verified client certificate, mapped to a consumer by its names when one matches.
fn client_cert(
    rt: &AuthState,
    m: &ClientCertMethod,
    cert: Option<&portico_auth::mtls::ClientCert>,
    id: &mut Identity,
) -> Result<Option<usize>, Failure> {
    let cert = cert.ok_or(Failure::Missing)?;
    if let Some(h) = &m.forward_header
        && let Ok(v) = HeaderValue::try_from(cert.header_text())
    {
        id.headers.push((h.clone(), v));
    }
    let by_name = &rt.consumers.by_cert_name;
    Ok(cert.names().find_map(|n| by_name.get(n).copied()))
}

fn api_key<B>(
    rt: &AuthState,
    m: &ApiKeyMethod,
    req: &Request<B>,
    id: &mut Identity,
) -> Result<Option<usize>, Failure> {
    let consumers = &rt.consumers;
    // A key in the query never goes upstream, whether or not it is the one accepted.
    if let Some(q) = &m.query
        && portico_config::query::get(req.uri().query(), q).is_some()
    {
        id.strip_query.push(q.clone());
    }
    // A key in the query is percent-decoded, as route query conditions are (`+` is a space).
    let decoded;
    let (key, from_query) = match req.headers().get(&m.header) {
        Some(v) => (v.as_bytes(), false),
        None => match m
            .query
            .as_deref()
            .and_then(|q| portico_config::query::get(req.uri().query(), q))
        {
            Some(v) => {
                decoded = v;
                (decoded.as_bytes(), true)
            }
            None => return Err(Failure::Missing),
        },
    };
    if key.is_empty() {
        return Err(Failure::Missing);
    }
    let owner = consumers.api_keys.find(key).ok_or(Failure::Unknown)?;
    if !from_query {
        id.strip_headers.push(m.header.clone());
    }
    Ok(Some(owner))
}

/// At most this many slow password hashes run at once; more wait their turn, so a burst of
/// wrong passwords cannot take every core.
static HASH_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

async fn basic<B>(
    rt: &AuthState,
    m: &BasicMethod,
    req: &Request<B>,
    id: &mut Identity,
) -> Result<Option<usize>, Failure> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(Failure::Missing);
    };
    let (user, password) = portico_auth::basic::parse_authorization(value.as_bytes())?;
    let cache = Some(rt.states.basic(m.slot)).filter(|_| !m.cache_ttl.is_zero());
    if let Some(owner) = cache.and_then(|c| c.get(&user, &password)) {
        id.strip_headers.push(header::AUTHORIZATION);
        return Ok(Some(owner));
    }
    let consumers = rt.consumers.clone();
    // Boxed: a cached credential (the common case) should not carry this wait's state.
    let (user, password, owner) = Box::pin(async move {
        let _slot = HASH_SLOTS
            .acquire()
            .await
            .map_err(|_| Failure::Unavailable)?;
        tokio::task::spawn_blocking(move || {
            let owner = consumers.users.verify_slow(&user, &password);
            (user, password, owner)
        })
        .await
        .map_err(|_| Failure::Unavailable)
    })
    .await?;
    let owner = owner.ok_or(Failure::Unknown)?;
    if let Some(c) = cache {
        c.put(&user, &password, owner);
    }
    id.strip_headers.push(header::AUTHORIZATION);
    Ok(Some(owner))
}

struct Keys<'a>(&'a AuthState);

impl jwt::KeySource for Keys<'_> {
    fn jwks(&self, slot: usize) -> Option<Arc<KeySet>> {
        self.0.jwks.get(slot)?.current()
    }
}

fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The request's token, and the header it came in (removed before proxying unless the policy
/// forwards tokens).
fn token<'r, B>(
    sources: &[TokenSource],
    req: &'r Request<B>,
    id: &mut Identity,
) -> Result<(std::borrow::Cow<'r, str>, Option<HeaderName>), Failure> {
    use std::borrow::Cow;
    for s in sources {
        let found = match s {
            TokenSource::Bearer => match req.headers().get(header::AUTHORIZATION) {
                Some(v) => {
                    let v = crate::base::headers::text(v).ok_or(Failure::Malformed)?;
                    match v.split_once(' ') {
                        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => {
                            Some(Cow::Borrowed(t.trim()))
                        }
                        // Another scheme (Basic, say) is not a token; another method may want it.
                        _ => None,
                    }
                }
                None => None,
            },
            TokenSource::Header(h) => match req.headers().get(h) {
                Some(v) => Some(Cow::Borrowed(
                    crate::base::headers::text(v)
                        .ok_or(Failure::Malformed)?
                        .trim(),
                )),
                None => None,
            },
            TokenSource::Cookie(c) => cookie(req.headers(), c).map(Cow::Borrowed),
            // Decoded as every query parameter is (`portico_config::query`).
            TokenSource::Query(q) => {
                let t = portico_config::query::get(req.uri().query(), q);
                if t.is_some() {
                    id.strip_query.push(q.clone());
                }
                t
            }
        };
        if let Some(t) = found.filter(|t| !t.is_empty()) {
            let carrier = match s {
                TokenSource::Bearer => Some(header::AUTHORIZATION),
                TokenSource::Header(h) => Some(h.clone()),
                TokenSource::Cookie(_) | TokenSource::Query(_) => None,
            };
            return Ok((t, carrier));
        }
    }
    Err(Failure::Missing)
}

async fn jwt_auth<B>(
    rt: &AuthState,
    m: &JwtMethod,
    req: &Request<B>,
    id: &mut Identity,
) -> Result<Option<usize>, Failure> {
    let (token, carrier) = token(&m.sources, req, id)?;
    let token: &str = &token;
    if !m.forward_token
        && let Some(h) = carrier
    {
        // Recorded now, applied only if the request is accepted.
        id.pending_strip = Some(h);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cache = Some(rt.states.jwt(m.slot)).filter(|c| c.capacity > 0);
    if let Some(g) = cache.and_then(|c| c.get(token, now)) {
        id.strip_headers.extend(id.pending_strip.take());
        id.headers.extend(g.headers);
        id.scopes.extend(g.scopes);
        if id.claims.is_none() {
            id.claims = g.claims;
        }
        return Ok(g.consumer);
    }
    let mut outcome = jwt::verify(token, &m.issuers, &Keys(rt), now);
    if let Outcome::UnknownKid { slot } = outcome {
        let refreshed = match rt.jwks.get(slot) {
            // Boxed, as are the fetches below: rare, and large next to a cached answer.
            Some(c) => Box::pin(c.refresh_on_demand()).await,
            None => false,
        };
        outcome = if refreshed {
            jwt::verify(token, &m.issuers, &Keys(rt), now)
        } else {
            Outcome::Invalid(Failure::KeyUnknown)
        };
    }
    let claims = match outcome {
        Outcome::Valid { claims, .. } => claims,
        Outcome::Invalid(Failure::Unavailable) => {
            // No key set loaded yet (first request after start, or the provider was down):
            // one on-demand fetch, then verify again.
            let mut refreshed = false;
            for i in &m.issuers {
                if let jwt::IssuerKeys::Jwks(s) = i.keys
                    && let Some(c) = rt.jwks.get(s)
                    && c.current().is_none()
                {
                    refreshed |= Box::pin(c.refresh_on_demand()).await;
                }
            }
            if !refreshed {
                return Err(Failure::Unavailable);
            }
            match jwt::verify(token, &m.issuers, &Keys(rt), now) {
                Outcome::Valid { claims, .. } => claims,
                Outcome::Invalid(f) => return Err(f),
                Outcome::UnknownKid { .. } => return Err(Failure::KeyUnknown),
            }
        }
        Outcome::Invalid(f) => return Err(f),
        Outcome::UnknownKid { .. } => return Err(Failure::KeyUnknown),
    };
    jwt::check_claims(&claims, &m.required_claims, &m.rules)?;
    let mut headers = Vec::new();
    for (claim, h) in &m.forward_claims {
        if let Some(v) = claims.get(claim)
            && let Ok(v) = HeaderValue::try_from(jwt::claim_header_value(v))
        {
            headers.push((h.clone(), v));
        }
    }
    let scopes: Vec<String> = jwt::scopes(&claims)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let consumer = m
        .consumer_claim
        .as_ref()
        .and_then(|c| claims.get(c))
        .and_then(|v| v.as_str())
        .and_then(|name| rt.consumers.by_name.get(name).copied());
    let exp = claims
        .get("exp")
        .and_then(|e| e.as_f64())
        .map_or(u64::MAX, |e| e as u64);
    let claims = Arc::new(claims);
    if let Some(c) = cache {
        let g = Granted {
            active: true,
            claims: Some(claims.clone()),
            consumer,
            headers: headers.clone(),
            scopes: scopes.clone(),
            until: exp.min(now + TOKEN_CACHE_TTL),
        };
        c.put(token, g, now);
    }
    id.strip_headers.extend(id.pending_strip.take());
    id.headers.extend(headers);
    id.scopes.extend(scopes);
    if id.claims.is_none() {
        id.claims = Some(claims);
    }
    Ok(consumer)
}
