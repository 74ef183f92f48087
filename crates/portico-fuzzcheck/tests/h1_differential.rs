//! Portico's HTTP/1.1 request-head reading against httparse's on the same heads: they accept
//! and refuse the same heads and read the same method, target, version and header fields,
//! except where the table says otherwise and why. A listed difference that no longer holds
//! fails too, so the table stays true.

use portico_proxy::fuzzing::{HeadRead, MAX_HEADERS, read_request_head};

/// What one parser made of a head.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accepted {
        method: String,
        target: String,
        version: u8,
        /// Lower-case names, values as read.
        headers: Vec<(String, Vec<u8>)>,
    },
    Refused,
    Incomplete,
}

fn portico(head: &[u8]) -> Verdict {
    match read_request_head(head) {
        HeadRead::Head(h) if h.refusal.is_none() => Verdict::Accepted {
            method: h.method,
            target: h.target,
            version: h.version,
            headers: h.headers,
        },
        HeadRead::Head(_) | HeadRead::Refused(_) => Verdict::Refused,
        HeadRead::Incomplete => Verdict::Incomplete,
    }
}

fn httparse(head: &[u8]) -> Verdict {
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => Verdict::Accepted {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            version: req.version.unwrap_or_default(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
        },
        Ok(httparse::Status::Partial) => Verdict::Incomplete,
        Err(_) => Verdict::Refused,
    }
}

/// How the two readings relate.
#[derive(Clone, Copy)]
enum Want {
    /// Both accept with the same fields, or both refuse.
    Same,
    /// httparse accepts; Portico answers 400 (the reason is the table's second column).
    PorticoRefuses(&'static str),
    /// Both accept, and Portico's target differs (http::Uri's normal form).
    TargetDiffers(&'static str),
}
use Want::*;

fn cases() -> Vec<(String, Want)> {
    let s = |x: &str| x.to_string();
    let long_value = "v".repeat(60 * 1024);
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("x-{i}: {i}\r\n"))
        .collect();
    vec![
        // Valid heads.
        (s("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (
            s("GET /users/5?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"),
            Same,
        ),
        (
            s("POST /v1/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Same,
        ),
        (
            s("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Same,
        ),
        (s("GET / HTTP/1.0\r\n\r\n"), Same),
        (s("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (s("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (
            s("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
            Same,
        ),
        (s("GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (s("PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (s("get / HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (
            s("GET / HTTP/1.1\r\nX-Empty:\r\nX-Pad:   v  \r\nX_Under: 1\r\n\r\n"),
            Same,
        ),
        (s("GET / HTTP/1.1\r\nX-Tab:\tv\tw\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nX-Obs: caf\u{e9}\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nContent-Length:  7 \r\n\r\n"), Same),
        (
            s("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
            Same,
        ),
        (
            s("GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"),
            Same,
        ),
        (
            format!("GET / HTTP/1.1\r\nX-Long: {long_value}\r\n\r\n"),
            Same,
        ),
        // Targets both take as they are: raw UTF-8 and braces (the canonical path encodes
        // them before routing), a port out of range (refused when an upstream is picked).
        (s("GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (s("GET /a{b}|c HTTP/1.1\r\nHost: a\r\n\r\n"), Same),
        (s("GET http://a:99999/ HTTP/1.1\r\n\r\n"), Same),
        // Malformed heads both refuse.
        (s("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\n: a\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nX-(bad): a\r\n\r\n"), Same),
        (s("G(T / HTTP/1.1\r\n\r\n"), Same),
        (s(" GET / HTTP/1.1\r\n\r\n"), Same),
        (s("GET  / HTTP/1.1\r\n\r\n"), Same),
        (s("GET /a b HTTP/1.1\r\n\r\n"), Same),
        (s("GET / HTTP/1.2\r\n\r\n"), Same),
        (s("GET / HTTP/2.0\r\n\r\n"), Same),
        (s("GET / http/1.1\r\n\r\n"), Same),
        (s("GET /\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n"), Same),
        (s("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), Same),
        (s("GET /\x01 HTTP/1.1\r\n\r\n"), Same),
        (format!("GET / HTTP/1.1\r\n{many}\r\n"), Same),
        // Incomplete.
        (s("GET / HTTP/1.1\r\nHost: a\r\n"), Same),
        // Framing and smuggling: heads httparse reads, and Portico refuses with 400.
        (
            s("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"),
            PorticoRefuses("TE and CL together: proxies disagree on which wins (RFC 9112 §6.3)"),
        ),
        (
            s("POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"),
            PorticoRefuses("differing lengths: either could frame the body"),
        ),
        (
            s("POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n"),
            PorticoRefuses("repeated lengths are refused even when equal: one length, one reading"),
        ),
        (
            s("POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n"),
            PorticoRefuses("a list as Content-Length: some servers take the first, some refuse"),
        ),
        (
            s("POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n"),
            PorticoRefuses("a length that is not all digits (`+4` parses as 4 in some readers)"),
        ),
        (
            s("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"),
            PorticoRefuses("a length that is not a decimal number"),
        ),
        (
            s("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            PorticoRefuses("a length beyond u64 (20 digits) overflows other readers"),
        ),
        (
            s("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            PorticoRefuses(
                "a coding other than exactly `chunked` (the upstream may not decode it)",
            ),
        ),
        (
            s("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"),
            PorticoRefuses("an unknown coding: no way to find the body's end"),
        ),
        (
            s(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            PorticoRefuses("Transfer-Encoding repeated: readers join or pick differently"),
        ),
        (
            s("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            PorticoRefuses("two Hosts: the gateway and the upstream may route by different ones"),
        ),
        (
            s("GET / HTTP/1.1\nHost: a\n\n"),
            PorticoRefuses("bare LF line ends: a reader that needs CRLF sees one long line"),
        ),
        (
            s("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
            PorticoRefuses("one bare LF inside a CRLF head: the same, hidden in one header"),
        ),
        // Accepted by both, with the target in http::Uri's form.
        (
            s("GET http://a HTTP/1.1\r\n\r\n"),
            TargetDiffers("an absolute-form target without a path has the path `/`"),
        ),
        (
            s("GET HTTP://A/b HTTP/1.1\r\n\r\n"),
            TargetDiffers("the scheme is case-insensitive and held in lower case"),
        ),
    ]
}

/// `Host: a` after the request line of an HTTP/1.1 head that has none: Portico refuses such a
/// head (RFC 9112 §3.2, listed once below), which would hide what each case is about.
fn with_host(h: String) -> String {
    let lower = h.to_ascii_lowercase();
    if lower.contains("\nhost:") || lower.contains("\nhost :") {
        return h;
    }
    const LINE_END: &str = " HTTP/1.1\r\n";
    match h.find(LINE_END) {
        Some(i) => {
            let at = i + LINE_END.len();
            format!("{}Host: a\r\n{}", &h[..at], &h[at..])
        }
        None => h,
    }
}

#[test]
fn portico_and_httparse_read_heads_alike_but_for_listed_reasons() {
    let mut cases: Vec<(String, Want)> = cases()
        .into_iter()
        .map(|(h, w)| (with_host(h), w))
        .collect();
    let no_host = PorticoRefuses(
        "RFC 9112 §3.2: an HTTP/1.1 request without Host could be routed by one host and served by another",
    );
    cases.push(("GET / HTTP/1.1\r\n\r\n".to_string(), no_host));
    cases.push(("GET http://a/b HTTP/1.1\r\n\r\n".to_string(), no_host));
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (head, want) in &cases {
        let (p, h) = (portico(head.as_bytes()), httparse(head.as_bytes()));
        let shown = head.escape_debug().to_string();
        let shown = &shown[..shown.len().min(120)];
        let ok = match want {
            Same => p == h,
            PorticoRefuses(_) => p == Verdict::Refused && matches!(h, Verdict::Accepted { .. }),
            TargetDiffers(_) => match (&p, &h) {
                (
                    Verdict::Accepted {
                        method,
                        target,
                        version,
                        headers,
                    },
                    Verdict::Accepted {
                        method: m2,
                        target: t2,
                        version: v2,
                        headers: h2,
                    },
                ) => method == m2 && version == v2 && headers == h2 && target != t2,
                _ => false,
            },
        };
        if !ok {
            let why = match want {
                Same => "",
                PorticoRefuses(r) | TargetDiffers(r) => r,
            };
            failures.push(format!(
                "{shown} ({why})\n  portico: {p:?}\n  httparse: {h:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
