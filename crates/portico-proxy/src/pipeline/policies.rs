//! The policy chain's request phase, in chain order (the response phase is `respond.rs`).

use std::sync::atomic::Ordering;

use crate::body::ClientBody;
use http::Request;
use http::header::{self};
use portico_config::{Policy, Route};

use crate::base::conn::ConnInfo;
use crate::body::problem::Problem;
use crate::runtime::Runtime;

use crate::runtime::ctx::RequestCtx;

/// Request phase of the chain (global policies first, then the route's, each in order):
/// authentication, `acl`, `ip_filter`, `rate_limit` and `body_limit`. Returns the `RateLimit`
/// headers for the response.
pub(crate) async fn request_policies(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    req: &Request<ClientBody>,
    identity: &mut crate::policy::auth::Identity,
) -> Result<crate::policy::ratelimit::LimitHeaders, Problem> {
    let (rt, conn, bytes_in) = (ctx.rt, ctx.conn, ctx.bytes_in);
    // Most routes have no chain at all: nothing below is set up for them.
    if route.policies.is_empty() && rt.config.global_policies.is_empty() {
        return Ok(crate::policy::ratelimit::LimitHeaders::default());
    }
    // The limit closest to exhaustion over all the chain's `rate_limit` policies, with its
    // number; `first_limit` numbers each policy's limits after the policies before it.
    let mut tightest: Option<(usize, crate::policy::ratelimit::Tightest)> = None;
    let mut first_limit = 0;
    let client_ip = ctx.rec.client_ip;
    let client = ClientText {
        ip: client_ip,
        conn,
    };
    for p in rt
        .config
        .global_policies
        .iter()
        .chain(route.policies.iter())
    {
        match p {
            Policy::Auth(a) => {
                let cert = conn.client_cert.as_deref();
                // A span for the methods that may wait on another service.
                let span = match ctx.rec.trace.as_mut() {
                    Some(t) => waits_on(a).and_then(|p| {
                        crate::observe::trace::child_start(Some(t)).map(|start| (p, start))
                    }),
                    None => None,
                };
                // Not boxed: `authenticate` keeps its slow waits (a key-set fetch, a call to
                // the authorization server, a password hash) behind boxes of their own, so
                // its future is small and a box here would cost more than the copy it saves.
                let result =
                    crate::policy::auth::authenticate(&rt.auth, a, req, cert, identity).await;
                if let (Some((policy, start)), Some(t)) = (span, ctx.rec.trace.as_mut()) {
                    let refused = result.as_ref().err().map(|d| match d {
                        crate::policy::auth::Denial::Unauthorized { reason, .. } => reason.code(),
                        crate::policy::auth::Denial::Forbidden { reason, .. } => reason,
                        crate::policy::auth::Denial::Unavailable => "verifier_unavailable",
                    });
                    t.child(
                        crate::observe::trace::ChildKind::Policy { policy, refused },
                        start,
                    );
                }
                if let Err(d) = result {
                    return Err(denied(d, route, ctx));
                }
                if ctx.rec.consumer.is_none()
                    && let Some(c) = identity
                        .consumer
                        .and_then(|c| rt.config.consumers.list.get(c))
                {
                    ctx.rec.consumer = Some(c.name.clone());
                }
            }
            Policy::Acl(a) => crate::policy::access::acl(&rt.auth, a, req.method(), identity)
                .map_err(|d| denied(d, route, ctx))?,
            Policy::IpFilter(f) => {
                crate::policy::access::ip_filter(f, client_ip).map_err(|d| denied(d, route, ctx))?
            }
            Policy::BodyLimit(max) => {
                let declared = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if declared.is_some_and(|n| n > *max) {
                    return Err(Problem::PayloadTooLarge);
                }
                // A chunked body is cut off when it passes the limit.
                bytes_in.limit.fetch_min(*max, Ordering::Relaxed);
            }
            Policy::ConcurrencyLimit(c) => {
                let key = key_text(rt, &c.key, route, req, &client, identity);
                match rt.policies.concurrency(c.slot).acquire(&key) {
                    Some(g) => ctx.guards.push(g),
                    None => {
                        metrics::counter!("portico_concurrency_limited_total", "route" => route.name.to_string())
                            .increment(1);
                        return Err(Problem::ConcurrencyLimited);
                    }
                }
            }
            Policy::RateLimit(rl) => {
                let key = key_text(rt, &rl.key, route, req, &client, identity);
                let key: &str = &key;
                let limiters = rt.policies.rate_limit(rl.slot);
                let decision = match &limiters.shared {
                    None => match limiters.check(key, !rl.hide_headers) {
                        Ok(a) => crate::policy::ratelimit::Decision::Allowed(a),
                        Err((wait, i)) => crate::policy::ratelimit::Decision::Limited(wait, i),
                    },
                    Some(shared) => {
                        let start = crate::observe::trace::child_start(ctx.rec.trace.as_mut());
                        let d = Box::pin(limiters.check_shared(
                            shared,
                            &route.name,
                            key,
                            !rl.hide_headers,
                        ))
                        .await;
                        if let (Some(start), Some(t)) = (start, ctx.rec.trace.as_mut()) {
                            let refused = match &d {
                                crate::policy::ratelimit::Decision::Limited(..) => {
                                    Some(Problem::RateLimited(0).code())
                                }
                                crate::policy::ratelimit::Decision::Unavailable => {
                                    Some(Problem::RateLimitUnavailable.code())
                                }
                                _ => None,
                            };
                            t.child(
                                crate::observe::trace::ChildKind::Policy {
                                    policy: "rate_limit",
                                    refused,
                                },
                                start,
                            );
                        }
                        d
                    }
                };
                let first = first_limit;
                first_limit += rl.limits.len();
                match decision {
                    crate::policy::ratelimit::Decision::Allowed(allowed) => {
                        if let Some(t) = allowed.tightest
                            && tightest.is_none_or(|(_, best)| t.tighter_than(&best))
                        {
                            tightest = Some((first + t.limit, t));
                        }
                    }
                    crate::policy::ratelimit::Decision::Limited(wait, i) => {
                        limiters.refusals.record(key);
                        // The limit's name as in the RateLimit headers.
                        metrics::counter!("portico_rate_limited_total", "route" => route.name.to_string(), "limit" => crate::policy::ratelimit::limit_name(first + i))
                            .increment(1);
                        return Err(Problem::RateLimited(
                            wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                        ));
                    }
                    crate::policy::ratelimit::Decision::Unavailable => {
                        return Err(Problem::RateLimitUnavailable);
                    }
                }
            }
            Policy::Headers(_)
            | Policy::Cors(_)
            | Policy::Compression(_)
            | Policy::RequestDecompression(_)
            | Policy::XmlJson(_)
            | Policy::JsonTransform(_)
            | Policy::Cache(_) => {}
        }
    }
    Ok(crate::policy::ratelimit::LimitHeaders::new(
        rt.rate_limit_policy[route.index].clone(),
        tightest,
    ))
}

/// The client's address as text, for limit keys. When the client is the peer (no trusted
/// proxy in between), the text made once per connection is used: formatting an address per
/// request cost ~1.3k instructions.
struct ClientText<'a> {
    ip: std::net::IpAddr,
    conn: &'a ConnInfo,
}

impl<'a> ClientText<'a> {
    fn text(&self) -> std::borrow::Cow<'a, str> {
        if self.ip == portico_config::canonical_ip(self.conn.peer.ip())
            && let Ok(t) = self.conn.peer_value.to_str()
        {
            return std::borrow::Cow::Borrowed(t);
        }
        std::borrow::Cow::Owned(self.ip.to_string())
    }
}

/// The text of a limit key for this request.
fn key_text<'a>(
    rt: &'a Runtime,
    key: &portico_config::LimitKey,
    route: &'a Route,
    req: &'a Request<ClientBody>,
    client: &ClientText<'a>,
    identity: &crate::policy::auth::Identity,
) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    match key {
        portico_config::LimitKey::ClientIp => client.text(),
        portico_config::LimitKey::Route => Cow::Borrowed(&route.name),
        portico_config::LimitKey::Header(h) => Cow::Borrowed(
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        // Consumer names are header text, so they never contain a control character: the
        // anonymous bucket's key cannot collide with a consumer named `anonymous`.
        portico_config::LimitKey::Consumer => Cow::Borrowed(
            identity
                .consumer
                .and_then(|c| rt.config.consumers.list.get(c))
                .map_or("\u{0}anonymous", |c| &c.name),
        ),
        portico_config::LimitKey::Claim(c) => Cow::Owned(
            identity
                .claims
                .as_ref()
                .and_then(|claims| claims.get(c))
                .map(portico_auth::jwt::claim_header_value)
                .unwrap_or_default(),
        ),
        portico_config::LimitKey::Composite(parts) => {
            // Unit separator between parts, so `a` + `bc` and `ab` + `c` stay distinct.
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('\u{1f}');
                }
                out.push_str(&key_text(rt, p, route, req, client, identity));
            }
            Cow::Owned(out)
        }
    }
}

/// Turns a denial into its problem, counting it and queuing its response headers.
/// The name of an authentication policy's span when one of its methods may wait on another
/// service (a key set to fetch, an authorization server to ask).
fn waits_on(a: &portico_config::AuthPolicy) -> Option<&'static str> {
    a.methods.iter().find_map(|m| match m {
        portico_config::AuthMethod::Introspection(_) => Some("introspection"),
        portico_config::AuthMethod::Jwt(j)
            if j.issuers
                .iter()
                .any(|i| matches!(i.keys, portico_auth::jwt::IssuerKeys::Jwks(_))) =>
        {
            Some("jwt")
        }
        _ => None,
    })
}

pub(crate) fn denied(
    d: crate::policy::auth::Denial,
    route: &Route,
    ctx: &mut RequestCtx<'_>,
) -> Problem {
    use crate::policy::auth::Denial;
    match d {
        Denial::Unauthorized { reason, challenges } => {
            ctx.rec.error = Some(reason.code());
            metrics::counter!("portico_auth_failures_total", "route" => route.name.to_string(), "reason" => reason.code()).increment(1);
            ctx.extra.extend(
                challenges
                    .into_iter()
                    .map(|c| (header::WWW_AUTHENTICATE, c)),
            );
            Problem::Unauthorized
        }
        Denial::Forbidden { reason, challenge } => {
            ctx.rec.error = Some(reason);
            metrics::counter!("portico_access_denied_total", "route" => route.name.to_string(), "reason" => reason).increment(1);
            if let Some(c) = challenge {
                ctx.extra.push((header::WWW_AUTHENTICATE, c));
            }
            Problem::Forbidden
        }
        Denial::Unavailable => {
            ctx.rec.error = Some("verifier_unavailable");
            metrics::counter!("portico_auth_failures_total", "route" => route.name.to_string(), "reason" => "verifier_unavailable").increment(1);
            Problem::AuthUnavailable
        }
    }
}
