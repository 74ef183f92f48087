//! Server certificates chosen by SNI.

use std::collections::HashMap;
use std::sync::Arc;

use portico_config::ListenerTls;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// (`.example.com`, key), longest first.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        for (sfx, k) in &self.wildcard {
            // A certificate wildcard covers exactly one label.
            if let Some(label) = name.strip_suffix(sfx.as_str())
                && !label.is_empty()
                && !label.contains('.')
            {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

/// A rustls server config for a listener: SNI selection, ALPN for the enabled HTTP versions.
pub fn server_config(
    tls: &ListenerTls,
    http1: bool,
    http2: bool,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut exact = HashMap::new();
    let mut wildcard = Vec::new();
    for c in &tls.certificates {
        for n in &c.server_names {
            match n.strip_prefix('*') {
                Some(sfx) => wildcard.push((sfx.to_owned(), c.key.clone())),
                None => {
                    exact.entry(n.clone()).or_insert_with(|| c.key.clone());
                }
            }
        }
    }
    wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    let resolver = SniResolver {
        exact,
        wildcard,
        default: tls.certificates[0].key.clone(),
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(ca.roots.iter().cloned());
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            );
            let v = if ca.required {
                v.build()
            } else {
                v.allow_unauthenticated().build()
            }
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    if http2 {
        cfg.alpn_protocols.push(b"h2".to_vec());
    }
    if http1 {
        cfg.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(Arc::new(cfg))
}
