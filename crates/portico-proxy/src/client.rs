//! Upstream connections: one pooled client per upstream, kept across reloads while the
//! upstream's settings are unchanged.
//!
//! This uses hyper-util's pooled client behind our own type, so the performance work can
//! replace it with a per-thread pool without touching the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_rustls::{ConfigBuilderExt, FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portico_config::{Scheme, Target, Upstream};

use crate::body::Body;

pub struct UpstreamPool {
    pub spec: Arc<Upstream>,
    /// HTTP/1.1 for `http://`; ALPN (h2 or HTTP/1.1) for `https://`.
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// HTTP/2 with prior knowledge for `h2c://`.
    h2c: Client<HttpConnector, Body>,
    next: AtomicUsize,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.spec.name)
            .finish()
    }
}

fn http_connector(spec: &Upstream) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(spec.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http
}

impl UpstreamPool {
    pub fn new(spec: Arc<Upstream>) -> Result<UpstreamPool, String> {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
        let tls = match &spec.tls.roots {
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for r in roots {
                    store.add(r.clone()).map_err(|e| {
                        format!("upstream `{}`: bad CA certificate: {e}", spec.name)
                    })?;
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
            None => builder.with_webpki_roots().with_no_client_auth(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let https = match &spec.tls.server_name {
            Some(name) => {
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| e.to_string())?;
                https.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => https,
        };
        let https = https
            .enable_http1()
            .enable_http2()
            .wrap_connector(http_connector(&spec));

        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(spec.idle_timeout)
            .pool_max_idle_per_host(spec.pool_max_idle)
            // Requests are retried when a pooled connection turns out to be closed before the
            // request was written (the upstream timed it out as we picked it).
            .retry_canceled_requests(true)
            // The proxy sets Host itself (the client's, or the route's rewrite).
            .set_host(false);
        let client = b.build(https);
        let h2c = b.clone().http2_only(true).build(http_connector(&spec));
        Ok(UpstreamPool {
            spec,
            client,
            h2c,
            next: AtomicUsize::new(0),
        })
    }

    /// Next target, round robin.
    pub fn pick(&self) -> &Target {
        let n = self.spec.targets.len();
        let i = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        &self.spec.targets[i]
    }

    pub fn send(&self, target: &Target, req: http::Request<Body>) -> ResponseFuture {
        match target.scheme {
            Scheme::H2c => self.h2c.request(req),
            Scheme::Http | Scheme::Https => self.client.request(req),
        }
    }
}
