//! Integration tests: a real gateway in front of real servers on ephemeral ports.

mod aggregation;
mod auth;
mod balancing;
mod cluster;
mod compression;
mod failures;
mod limits;
mod mtls;
mod protocols;
mod proxying;
mod reload;
mod smuggling;
mod traffic;
mod transcoding;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

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
