//! Integration tests: a real gateway in front of real servers on ephemeral ports.

// Some tests wait on threads of their own (a config writer, a Redis they start) with
// `std::thread::sleep`, which clippy.toml keeps out of the product's code.
#![allow(clippy::disallowed_methods)]

mod abuse;
mod admin;
mod admin_api;
mod aggregation;
mod audit;
mod auth;
mod balancing;
mod caching;
mod client_h1;
mod cluster;
mod compression;
mod config_store;
mod explain;
mod failures;
mod limits;
mod mtls;
mod openapi;
mod paths;
mod protocols;
mod proxying;
mod reload;
mod smuggling;
mod soap;
mod tracing;
mod traffic;
mod transcoding;
mod upstream_h1;
mod xml;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub fn req(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// Config with one listener on an ephemeral port and the given upstreams/routes appended.
pub fn config(rest: &str) -> String {
    format!("listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\n{rest}")
}

/// Config with one upstream `u` at `url` and a catch-all route to it.
pub fn proxy_to(url: &str) -> String {
    config(&format!(
        "upstreams:\n  u: {{ targets: [\"{url}\"] }}\nroutes:\n  - upstream: u\n"
    ))
}

/// An upstream that holds every request until `release` sends `true` (then answers `held`),
/// so "in flight at once" is set up by order rather than by timing.
pub async fn held_upstream() -> (tokio::sync::watch::Sender<bool>, portico_testkit::Upstream) {
    held_upstream_answering("held").await
}

/// [`held_upstream`] answering `body`.
pub async fn held_upstream_answering(
    body: &'static str,
) -> (tokio::sync::watch::Sender<bool>, portico_testkit::Upstream) {
    let (release, gate) = tokio::sync::watch::channel(false);
    let held = portico_testkit::serve(move |_req| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            http::Response::new(portico_testkit::full(body))
        }
    })
    .await;
    (release, held)
}

/// The HMAC secret the tests' `jwt` policies trust for HS256 tokens.
pub(crate) const SECRET: &str = "an-hmac-secret-of-more-than-32-bytes!!";

pub(crate) fn keys() -> String {
    format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/{name}", keys())).unwrap()
}

pub(crate) fn encoding_key(alg: Algorithm, key: &str) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(key.as_bytes())
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem(key)).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem(key)).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem(key)).unwrap(),
    }
}

/// A token signed with `key` (a secret for HS*, else a PEM file under `keys()`).
pub(crate) fn mint(
    alg: Algorithm,
    key: &str,
    kid: Option<&str>,
    claims: serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, &claims, &encoding_key(alg, key)).unwrap()
}

/// Claims of a valid token from `https://idp.test` for `alice`, with `extra` set (`null` removes).
pub(crate) fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"iss": "https://idp.test", "aud": "api", "sub": "alice", "exp": now() + 300, "iat": now()});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}
