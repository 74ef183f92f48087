//! Header handling that every proxied request and response goes through: hop-by-hop removal
//! (RFC 9110 §7.6.1), forwarding headers, request ids, host and path normalisation.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portico_config::{Cidr, canonical_ip};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Removes hop-by-hop headers, including those the `Connection` header names. `keep_upgrade`
/// keeps `Upgrade` and `Connection: upgrade` for a WebSocket handshake. `TE: trailers` is kept:
/// gRPC servers expect it and it only announces what the gateway passes through anyway.
pub fn remove_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of these, or only
    // `Connection`, and each `remove` below hashes its name.
    let (mut connection, mut others) = (false, false);
    for name in h.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TRANSFER_ENCODING
            || name == header::PROXY_AUTHENTICATE
            || name == header::TE
            || name == header::UPGRADE
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
        {
            others = true;
        }
    }
    if connection {
        // Names the Connection header lists are removed too. The usual tokens (`keep-alive`,
        // `close`, `upgrade`) name headers handled below or none, so they cost no parsing and
        // no allocation; anything else is collected first (it is removed from the same map).
        let mut listed: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            let b = v.as_bytes();
            if b.eq_ignore_ascii_case(b"keep-alive") || b.eq_ignore_ascii_case(b"close") {
                continue; // the usual single token, without splitting
            }
            for token in v.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                if token.is_empty()
                    || token.eq_ignore_ascii_case("keep-alive")
                    || token.eq_ignore_ascii_case("close")
                    || token.eq_ignore_ascii_case("upgrade")
                {
                    continue;
                }
                // `Host` is end to end whatever a client lists: removing it would let a
                // client send the upstream a request without the host it was routed by.
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes())
                    && n != header::HOST
                {
                    listed.push(n);
                }
            }
        }
        for n in listed {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
    }
    if others {
        h.remove(&KEEP_ALIVE);
        h.remove(&PROXY_CONNECTION);
        h.remove(header::TRANSFER_ENCODING);
        h.remove(header::PROXY_AUTHENTICATE);
        if !h
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            h.remove(header::TE);
        }
        if !keep_upgrade {
            h.remove(header::UPGRADE);
        }
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself trusted.
pub fn client_ip(peer: IpAddr, h: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical_ip(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for v in h.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(v) = v.to_str() else { break };
        for part in v.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                return client;
            };
            client = canonical_ip(ip);
            if !is_trusted(client, trusted) {
                return client;
            }
        }
    }
    client
}

pub fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

pub struct Forwarding<'a> {
    pub peer: IpAddr,
    /// The peer address as a header value, built once per connection.
    pub peer_value: &'a HeaderValue,
    pub peer_trusted: bool,
    pub tls: bool,
    pub host: Option<&'a HeaderValue>,
    pub x_forwarded: bool,
    pub forwarded: bool,
}

/// Sets `X-Forwarded-*` and `Forwarded`. From an untrusted peer, incoming copies are replaced,
/// so a client cannot claim another address; from a trusted proxy, ours are appended.
pub fn add_forwarding(h: &mut HeaderMap, f: &Forwarding<'_>) {
    let peer = canonical_ip(f.peer);
    let proto = if f.tls { "https" } else { "http" };
    if f.x_forwarded {
        // The client's own value counts only from a trusted peer (no lookup otherwise: the
        // name is hashed for each).
        match f
            .peer_trusted
            .then(|| h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()))
            .flatten()
        {
            Some(prev) => {
                let v = format!("{prev}, {peer}");
                h.insert(
                    &X_FORWARDED_FOR,
                    HeaderValue::try_from(v).unwrap_or_else(|_| f.peer_value.clone()),
                );
            }
            None => {
                h.insert(&X_FORWARDED_FOR, f.peer_value.clone());
            }
        }
        if !(f.peer_trusted && h.contains_key(&X_FORWARDED_PROTO)) {
            h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !(f.peer_trusted && h.contains_key(&X_FORWARDED_HOST)) {
            match f.host {
                Some(host) => h.insert(&X_FORWARDED_HOST, host.clone()),
                None => h.remove(&X_FORWARDED_HOST),
            };
        }
    } else if !f.peer_trusted {
        h.remove(&X_FORWARDED_FOR);
        h.remove(&X_FORWARDED_PROTO);
        h.remove(&X_FORWARDED_HOST);
    }
    if f.forwarded {
        let node = match peer {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut elem = format!("for={node};proto={proto}");
        if let Some(host) = f.host.and_then(|h| h.to_str().ok()) {
            elem.push_str(";host=\"");
            elem.push_str(host);
            elem.push('"');
        }
        let value = match (
            f.peer_trusted,
            h.get(&FORWARDED).and_then(|v| v.to_str().ok()),
        ) {
            (true, Some(prev)) => format!("{prev}, {elem}"),
            _ => elem,
        };
        if let Ok(v) = HeaderValue::try_from(value) {
            h.insert(&FORWARDED, v);
        }
    } else if !f.peer_trusted {
        h.remove(&FORWARDED);
    }
}

/// A header value as text: what `HeaderValue::to_str` gives, checked eight bytes at a time.
/// Every way of building a `HeaderValue` admits only tabs, spaces, visible ASCII and bytes
/// above 0x7F, so text is exactly "no byte above 0x7F"; `to_str` tests each byte against the
/// full rule one at a time (~350 instructions for a 700-byte bearer token, measured).
#[allow(unsafe_code)]
pub fn text(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    // SAFETY: ASCII is UTF-8.
    b.is_ascii()
        .then(|| unsafe { std::str::from_utf8_unchecked(b) })
}

/// A request id: the client's if it is sane, else a new one.
pub fn request_id(h: &HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = h.get(name) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            let mut v = v.clone();
            v.set_sensitive(true);
            return v;
        }
    }
    new_request_id()
}

/// 32 hex digits: a per-process random prefix and a counter. Unique within the process and,
/// with overwhelming probability, across processes; no syscall or lock per request.
pub fn new_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // The seed, and its 16 hex digits (the id's first half), made once.
    static SEED: std::sync::OnceLock<(u64, [u8; 16])> = std::sync::OnceLock::new();
    let (seed, prefix) = SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        let seed = h.finish();
        (seed, hex16(seed))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Mix the counter so consecutive ids don't look sequential in logs.
    let mixed = (n ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(prefix);
    buf[16..].copy_from_slice(&hex16(mixed));
    // SAFETY: `from_maybe_shared_unchecked` needs bytes that `HeaderValue::from_bytes` would
    // accept (http's invariant); 32 lower-case hex digits are (checking them again cost ~100
    // instructions per request).
    // `from_owner`: the id is cloned into the upstream request, the response and the access
    // record, and a `Bytes` copied from a slice allocates a second time at its first clone.
    #[allow(unsafe_code)]
    let mut id = unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::from_owner(buf)) };
    // "Never index" for HPACK: an HTTP/2 connection's encoder would otherwise add every new
    // id to its dynamic table, which then fills with ids that never match again, and each
    // response walks that chain of same-named entries (~50 value comparisons per response,
    // measured). HTTP/1.1 writes the value as it is.
    id.set_sensitive(true);
    id
}

/// `n` as 16 lower-case hex digits, most significant first.
fn hex16(n: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The request's host, lower-cased, without port: from the URI (HTTP/2 `:authority`, absolute
/// form) or the `Host` header's value. `buf` holds a lower-cased copy only when one is needed.
pub fn request_host<'a>(
    uri: &'a http::Uri,
    host: Option<&'a HeaderValue>,
    buf: &'a mut String,
) -> Option<&'a str> {
    let raw = match uri.host() {
        Some(h) => h,
        None => strip_port(text(host?)?),
    };
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        *buf = raw.to_ascii_lowercase();
        Some(buf.as_str())
    } else {
        Some(raw)
    }
}

/// The host part of a `Host` value. Byte scans: `rsplit_once(':')` and friends were measured
/// at ~250 instructions per request here.
fn strip_port(v: &str) -> &str {
    let b = v.as_bytes();
    if b.first() == Some(&b'[') {
        return memchr::memchr(b']', b).map_or(v, |i| &v[..=i]);
    }
    match memchr::memrchr(b':', b) {
        // Only ASCII was looked at, so `i` is on a character boundary.
        Some(i) if b[i + 1..].iter().all(u8::is_ascii_digit) => &v[..i],
        _ => v,
    }
}

/// `n` in decimal, written into the end of `buf`, without the formatting machinery (which
/// costs ~100s of instructions per number on the request path). Bytes, not `&str`: every
/// caller appends them to a byte buffer, and a UTF-8 check per number cost more than the
/// digits. Two digits per division, from a table.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret, Host".parse().unwrap());
        h.insert(header::HOST, "api.example".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get(header::UPGRADE).is_none()
        );
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
        assert_eq!(
            h.get(header::HOST).unwrap(),
            "api.example",
            "Host is end to end"
        );
        let mut h = HeaderMap::new();
        h.insert(header::TE, "gzip".parse().unwrap());
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        assert!(h.get(header::TE).is_none());
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn client_ip_through_trusted_proxies() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 10.0.0.5".parse().unwrap(),
        );
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &h, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("3.3.3.3".parse().unwrap(), &h, &trusted),
            "3.3.3.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarding_from_untrusted_replaces() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        let host = HeaderValue::from_static("api.example.com");
        add_forwarding(
            &mut h,
            &Forwarding {
                peer: "::1".parse().unwrap(),
                peer_value: &HeaderValue::from_static("::1"),
                peer_trusted: false,
                tls: true,
                host: Some(&host),
                x_forwarded: true,
                forwarded: true,
            },
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "::1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");
        assert_eq!(
            h.get("forwarded").unwrap(),
            "for=\"[::1]\";proto=https;host=\"api.example.com\""
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        add_forwarding(
            &mut h,
            &Forwarding {
                peer: "10.0.0.1".parse().unwrap(),
                peer_value: &HeaderValue::from_static("10.0.0.1"),
                peer_trusted: true,
                tls: false,
                host: None,
                x_forwarded: true,
                forwarded: false,
            },
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.1");
    }

    #[test]
    fn text_agrees_with_to_str() {
        let long = "Bearer ".to_owned() + &"abcDEF-_.".repeat(80);
        for v in [
            &b""[..],
            b"plain",
            b"with space\tand tab",
            b"caf\xc3\xa9",
            b"obs\xfftext",
            long.as_bytes(),
        ] {
            let v = HeaderValue::from_bytes(v).unwrap();
            assert_eq!(text(&v), v.to_str().ok(), "{v:?}");
        }
    }

    #[test]
    fn request_ids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.as_bytes()
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // One process, one prefix; the counter half differs.
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
        assert_eq!(hex16(0x0123_4567_89ab_cdef), *b"0123456789abcdef");
        // Never indexed by HPACK: one id per response would only churn the table.
        assert!(a.is_sensitive());
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        let kept = request_id(&h, &HeaderName::from_static("x-request-id"));
        assert_eq!(kept, "abc-123");
        assert!(kept.is_sensitive());
        h.insert("x-request-id", "has space".parse().unwrap());
        assert_ne!(
            request_id(&h, &HeaderName::from_static("x-request-id")),
            "has space"
        );
    }

    #[test]
    fn hosts() {
        let mut buf = String::new();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "API.Example.com:8080".parse().unwrap());
        let uri: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            request_host(&uri, h.get(header::HOST), &mut buf),
            Some("api.example.com")
        );
        let mut buf = String::new();
        h.insert(header::HOST, "[::1]:80".parse().unwrap());
        assert_eq!(
            request_host(&uri, h.get(header::HOST), &mut buf),
            Some("[::1]")
        );
        for (host, want) in [
            ("example.com", "example.com"),
            ("example.com:", "example.com"),
            ("example.com.:443", "example.com"),
            ("a:b:80", "a:b"),
            ("a:8x", "a:8x"),
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("Mixed.Case:80", "mixed.case"),
            ("[::ABCD]:443", "[::abcd]"),
            ("host:80:", "host:80"),
            ("1.2.3.4:8080", "1.2.3.4"),
            ("", ""),
        ] {
            let mut buf = String::new();
            h.insert(header::HOST, host.parse().unwrap());
            assert_eq!(
                request_host(&uri, h.get(header::HOST), &mut buf),
                Some(want),
                "{host}"
            );
        }
        // Not text: no host. Without a Host header: no host either, unless the URI has one.
        let mut buf = String::new();
        let v = HeaderValue::from_bytes(b"caf\xc3\xa9:80").unwrap();
        assert_eq!(request_host(&uri, Some(&v), &mut buf), None);
        assert_eq!(request_host(&uri, None, &mut buf), None);
        let abs: http::Uri = "http://Abs.Example:81/x".parse().unwrap();
        assert_eq!(request_host(&abs, Some(&v), &mut buf), Some("abs.example"));
    }
}
