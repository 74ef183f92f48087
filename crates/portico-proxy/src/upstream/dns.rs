//! Resolving targets named by DNS.
//!
//! A target such as `http://orders.internal:9000` is resolved when its pool first needs it and
//! then again every `dns_refresh` by a background task (`upstream/pool.rs`), so changed records reach
//! the pool without a reload. Resolution goes through the system resolver (`getaddrinfo` on
//! tokio's blocking pool), which honours `/etc/hosts` and the resolver's own caching.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

/// Names answered from this table instead of DNS, so tests can change what a name resolves to
/// while a gateway runs. Empty in production; consulted only when set.
fn overrides() -> &'static Mutex<HashMap<String, Vec<SocketAddr>>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Vec<SocketAddr>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Makes `host` (without port) resolve to `addrs` in this process (an address with port 0
/// takes the target's port). For tests: DNS records cannot be changed from a test on a shared machine.
#[doc(hidden)]
pub fn set_override(host: &str, addrs: Vec<SocketAddr>) {
    overrides()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(host.to_ascii_lowercase(), addrs);
}

/// The addresses of `host` at `port`, sorted and without duplicates.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let overridden = overrides()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&host.to_ascii_lowercase())
        .cloned();
    let mut addrs: Vec<SocketAddr> = match overridden {
        Some(a) => a
            .into_iter()
            .map(|mut a| {
                if a.port() == 0 {
                    a.set_port(port);
                }
                a
            })
            .collect(),
        None => tokio::net::lookup_host((host, port)).await?.collect(),
    };
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{host}` has no addresses"),
        ));
    }
    Ok(addrs)
}

/// The address of a target written as an IP literal (`127.0.0.1:80`, `[::1]:80`), or `None`
/// for a DNS name.
pub fn literal(authority: &http::uri::Authority) -> Option<SocketAddr> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, authority.port_u16().unwrap_or(80)))
}
