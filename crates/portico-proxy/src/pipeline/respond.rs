//! The response phase: each policy kind's response hook, run in one fixed order.
//!
//! The request phase runs the chain in the order it is written, because there the order is
//! the user's to choose (authenticate before limiting by consumer). The response phase does
//! not follow the chain: a hook that rewrites the body must run before the one that
//! compresses it, and the headers the gateway itself answers with (limits, CORS, the request
//! id) must be the last word, whatever order the policies were listed in. So the order is
//! fixed here, and the same for every route:
//!
//! 1. `headers` policies' response operations, in reverse chain order (the policy closest to
//!    the upstream edits the answer first, as Envoy's filters do on the way back);
//! 2. `xml_json`: an XML body becomes JSON;
//! 3. `json_transform`: the JSON body is reshaped (status map, renames, sparse fieldsets);
//! 4. `compression`: it sees the final body and headers;
//! 5. the route's `response_headers`, then the `RateLimit` headers and the CORS headers;
//! 6. the request id.
//!
//! The `cache` policy's response hook is part of the act itself (`store` in
//! `pipeline/request.rs`): it keeps the upstream's answer before any of these steps, so a hit
//! goes through the same steps as a miss.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{HeaderMap, Method, Response};
use portico_config::{
    CompressionPolicy, CorsPolicy, JsonTransformPolicy, Policy, Route, XmlJsonPolicy,
};

use crate::body::Body;
use crate::policy::auth::Identity;
use crate::policy::ratelimit::LimitHeaders;
use crate::runtime::ctx::RequestCtx;

/// What the response hooks need, gathered while the request phase runs; one field per policy
/// kind that has a response hook (`None` when the route does not use it).
pub(crate) struct ResponseSteps {
    /// The `RateLimit` headers of the tightest limit the request passed.
    pub limits: LimitHeaders,
    /// The CORS policy and the request's `Origin`.
    pub cors: Option<(Arc<CorsPolicy>, Option<HeaderValue>)>,
    pub xml_json: Option<Arc<XmlJsonPolicy>>,
    /// The policy and the sparse fieldset the request asked for.
    pub json_transform: Option<(Arc<JsonTransformPolicy>, Option<String>)>,
    /// The policy, the request's method and its `Accept-Encoding` values.
    pub compression: Option<(Arc<CompressionPolicy>, Method, HeaderMap)>,
    /// The request was a `HEAD`: an answer without a body is not converted.
    pub head_request: bool,
}

impl ResponseSteps {
    /// Whether a hook rewrites the body (and so has to wait for it).
    pub(crate) fn rewrites_body(&self) -> bool {
        self.xml_json.is_some() || self.json_transform.is_some()
    }

    /// Runs every response hook on `resp`, in the order the module's comment gives, for a
    /// route whose hooks leave the body as it is: no future to hold, so the request's own
    /// future stays as small as it was.
    pub(crate) fn run(
        self,
        ctx: &mut RequestCtx<'_>,
        route: &Route,
        identity: &Identity,
        mut resp: Response<Body>,
    ) -> Response<Body> {
        let began = headers_first(ctx, route, identity, &mut resp);
        self.finish(ctx, route, began, resp)
    }

    /// [`ResponseSteps::run`] for a route with a hook that rewrites the body.
    pub(crate) async fn run_rewriting(
        self,
        ctx: &mut RequestCtx<'_>,
        route: &Route,
        identity: &Identity,
        mut resp: Response<Body>,
    ) -> Response<Body> {
        let began = headers_first(ctx, route, identity, &mut resp);
        if let Some(x) = &self.xml_json {
            resp = crate::translate::xml_json::response(x, self.head_request, resp, ctx.request_id)
                .await;
        }
        if let Some((j, fields)) = &self.json_transform {
            resp = crate::policy::json_transform::apply(j, fields.as_deref(), resp).await;
        }
        self.finish(ctx, route, began, resp)
    }

    /// The steps after the body's: compression, then the headers the gateway answers with.
    fn finish(
        self,
        ctx: &mut RequestCtx<'_>,
        route: &Route,
        began: Option<Instant>,
        mut resp: Response<Body>,
    ) -> Response<Body> {
        if let Some((c, method, accept)) = &self.compression {
            resp = crate::policy::compress::apply(c, method, accept, resp);
        }
        if let (Some(began), Some(p)) = (began, ctx.rec.phases.as_deref_mut()) {
            p.mark("response", began, None);
        }
        for (name, value) in &route.response_headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        self.limits.apply(resp.headers_mut());
        if let Some((c, origin)) = &self.cors {
            crate::policy::cors::cors_response(c, origin.as_ref(), resp.headers_mut());
        }
        resp.headers_mut().insert(
            ctx.rt.config.server.request_id_header.clone(),
            ctx.request_id.clone(),
        );
        resp
    }
}

/// The `headers` policies' response operations, in reverse chain order; returns when the
/// response phase began, when phases are being timed.
fn headers_first(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    identity: &Identity,
    resp: &mut Response<Body>,
) -> Option<Instant> {
    let began = ctx.rec.phases.is_some().then(Instant::now);
    let cfg = &ctx.rt.config;
    if !cfg.global_policies.is_empty() || !route.policies.is_empty() {
        let vars = portico_config::HeaderVars {
            client_ip: ctx.rec.client_ip,
            request_id: ctx.request_id.to_str().unwrap_or(""),
            route: &route.name,
            consumer: ctx.rec.consumer.as_deref(),
            claims: identity.claims.as_deref(),
        };
        for p in cfg
            .global_policies
            .iter()
            .chain(route.policies.iter())
            .rev()
        {
            if let Policy::Headers(hp) = p {
                hp.response.apply_with(resp.headers_mut(), &vars);
            }
        }
    }
    began
}
