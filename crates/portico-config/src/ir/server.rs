//! The gateway's own settings at run time: listeners and their TLS, the admin port, the
//! access log, the `server` section, the Redis connection, and client-address ranges.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

use crate::canon::PathOptions;

/// The admin port's checks beyond its address.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// Digest of the bearer token for state-changing requests.
    pub token: Option<[u8; 32]>,
    /// Digests of read-only tokens; when any, reads need one (or the write token).
    pub read_tokens: Vec<[u8; 32]>,
    /// Lower-case names accepted in `Host`, besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// TLS (and client certificates) on the admin port; read at start.
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub http1: bool,
    pub http2: bool,
    pub tls: Option<ListenerTls>,
    /// How request paths are canonicalised (`server.paths` with this listener's keys over it).
    pub paths: PathOptions,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// In file order; the first is used when no name matches the client's SNI.
    pub certificates: Vec<TlsCertificate>,
    /// Identifies the certificate files' contents, so a reload can tell whether TLS changed.
    pub fingerprint: u64,
    /// Mutual TLS: the CA client certificates must chain to.
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub roots: Vec<CertificateDer<'static>>,
    /// Refuse handshakes without a valid certificate.
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct TlsCertificate {
    pub key: Arc<CertifiedKey>,
    /// Lower-case names, `*.example.com` allowed.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout { buffer: usize },
    File { path: PathBuf, buffer: usize },
}

#[derive(Debug, Clone)]
pub struct Server {
    pub trusted_proxies: Vec<Cidr>,
    pub request_id_header: HeaderName,
    pub x_forwarded: bool,
    pub forwarded: bool,
    pub max_request_header_bytes: usize,
    pub max_request_headers: usize,
    pub drain_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub request_header_timeout: Duration,
    pub max_uri_bytes: usize,
    pub consumer_header: HeaderName,
    pub groups_header: HeaderName,
    /// Every header that carries identity upstream (consumer, groups, forwarded claims):
    /// removed from each client request before any policy runs.
    pub identity_headers: Vec<HeaderName>,
    /// How request paths are canonicalised on listeners that do not say otherwise.
    pub paths: PathOptions,
    /// How long a config file written in place must rest before the watcher applies it.
    pub reload_settle: Duration,
    /// A request body must average `request_body_min_rate` bytes a second after this grace
    /// period (zero: no floor).
    pub request_body_timeout: Duration,
    pub request_body_min_rate: u64,
    pub send_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// 0: no limit.
    pub max_connections_per_ip: u32,
    /// The configured node id (`None`: host name and start time).
    pub node_id: Option<String>,
    /// On-demand request debugging: the header and the digest of its secret.
    pub request_debug: Option<(HeaderName, [u8; 32])>,
}

/// An IPv4 or IPv6 network. IPv4-mapped IPv6 peers are compared as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:1.2.3.4` as `1.2.3.4`, so dual-stack listeners log and compare IPv4 clients as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The server, or (with `cluster`) the first of the seed nodes.
    pub url: String,
    /// Redis Cluster seed nodes; empty for a single server.
    pub cluster_nodes: Vec<String>,
    /// Sentinel URLs and the primary's name, when the primary is found through Sentinel.
    pub sentinel: Option<(Vec<String>, String)>,
    pub timeout: Duration,
    pub key_prefix: String,
    /// `None`: no heartbeats.
    pub heartbeat_interval: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let c6 = Cidr::parse("fd00::/8").unwrap();
        assert!(c6.contains("fd12::1".parse().unwrap()));
        assert!(!c6.contains("fe80::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(Cidr::parse("1.2.3.4").unwrap().prefix, 32);
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }
}
