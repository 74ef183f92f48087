//! Portico's own HTTP/1.1 server connection, over raw sockets: pipelining, persistence rules
//! for HTTP/1.0 and 1.1, `100 Continue`, unread bodies, timeouts, refused heads, and the
//! hand-off of an HTTP/2 preface.

use std::net::SocketAddr;
use std::time::Duration;

use portico_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{config, proxy_to};

/// Reads whatever arrives within `wait` (or until the peer closes); the text and whether the
/// connection was closed.
async fn read_for(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// Reads until `count` answers with bodies of the given `content-length` have arrived.
async fn read_answers(s: &mut TcpStream, count: usize) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while complete_answers(&text) < count {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answers in time")
            .unwrap();
        assert!(n > 0, "closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

/// How many whole `content-length` answers `text` holds.
fn complete_answers(text: &str) -> usize {
    let mut rest = text;
    let mut n = 0;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = rest[..end].to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if rest.len() < end + 4 + len {
            break;
        }
        rest = &rest[end + 4 + len..];
        n += 1;
    }
    n
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = echo_server().await;
    let gw = gateway(&proxy_to(&up.url())).await;
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_answers(&mut s, 3).await;
    let one = text.find("\"path\":\"/one\"").expect(&text);
    let two = text.find("\"path\":\"/two\"").expect(&text);
    let three = text.find("\"path\":\"/three\"").expect(&text);
    assert!(one < two && two < three, "{text}");
    assert!(text.contains("\"body\":\"abc\""), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    assert!(text.to_ascii_lowercase().contains("date: "), "{text}");
    assert_eq!(up.conns(), 1, "one upstream connection carried all three");
}

#[tokio::test]
async fn http10_closes_unless_asked_to_keep_alive() {
    let gw = gateway(&config("routes:\n  - respond: { status: 200, body: hi }\n")).await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let (text, closed) = read_for(&mut s, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        closed,
        "an HTTP/1.0 connection closes after its answer: {text}"
    );

    let mut s = connect(gw.addr).await;
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let text = read_answers(&mut s, 1).await;
        assert!(
            text.to_ascii_lowercase().contains("connection: keep-alive"),
            "{text}"
        );
        assert!(text.ends_with("hi"), "{text}");
    }
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_wanted() {
    let up = echo_server().await;
    let gw = gateway(&proxy_to(&up.url())).await;
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let (interim, closed) = read_for(&mut s, Duration::from_millis(1500)).await;
    assert!(!closed);
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let text = read_answers(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body\":\"hello\""), "{text}");
}

#[tokio::test]
async fn an_answer_before_the_body_skips_100_continue_and_closes() {
    let gw = gateway(&config("routes:\n  - respond: { status: 403, body: no }\n")).await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_for(&mut s, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(closed, "{text}");
}

#[tokio::test]
async fn an_unread_small_body_is_drained_and_a_large_one_closes() {
    let gw = gateway(&config("routes:\n  - respond: { status: 200, body: ok }\n")).await;
    // The route never reads the body; the connection reads past it for the next request.
    let mut s = connect(gw.addr).await;
    s.write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let text = read_answers(&mut s, 2).await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );

    // Too large to drain: the answer says the connection closes, and it does.
    let mut s = connect(gw.addr).await;
    s.write_all(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\nxyz")
        .await
        .unwrap();
    let (text, closed) = read_for(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(closed, "{text}");
}

#[tokio::test]
async fn idle_connections_close_after_client_idle_timeout() {
    let gw = gateway(&config(
        "server: { client_idle_timeout: 300ms }\nroutes:\n  - respond: { status: 200, body: ok }\n",
    ))
    .await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let text = read_answers(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (more, closed) = read_for(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "closed after being idle");
    assert_eq!(more, "", "closed without an answer");
}

/// A connection idle past the moment its read buffer is given back (1 s) serves its next
/// request as before, and still closes at `client_idle_timeout`, not earlier.
#[tokio::test]
async fn a_connection_idle_past_its_buffer_release_serves_on_and_closes_on_time() {
    let gw = gateway(&config(
        "server: { client_idle_timeout: 2500ms }\nroutes:\n  - respond: { status: 200, body: ok }\n",
    ))
    .await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answers(&mut s, 1).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let text = read_answers(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Idle again: open past the release point, closed once the idle timeout has passed.
    let start = std::time::Instant::now();
    let (more, closed) = read_for(&mut s, Duration::from_secs(10)).await;
    assert!(closed && more.is_empty(), "{more}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2400),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_slow_head_gets_408() {
    let gw = gateway(&config(
        "server: { request_header_timeout: 300ms }\nroutes:\n  - respond: { status: 200, body: ok }\n",
    ))
    .await;
    let mut s = connect(gw.addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    // Trickling bytes does not push the deadline back.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break;
        }
    }
    let (text, closed) = read_for(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("request_head_timeout"), "{text}");
    assert!(closed, "{text}");
}

#[tokio::test]
async fn unsupported_versions_and_malformed_heads_get_problems() {
    let gw = gateway(&config("routes:\n  - respond: { status: 200, body: ok }\n")).await;
    let text = raw(gw.addr, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 505"), "{text}");
    assert!(text.contains("http_version_not_supported"), "{text}");
    let text = raw(gw.addr, b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
}

/// An upstream that answers every request with a chunked body ("hi", then "there") and a
/// trailer.
async fn chunked_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n5\r\nthere\r\n0\r\nX-Trailer: t\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn answers_of_unknown_length_are_chunked_or_end_with_the_connection() {
    let up = chunked_upstream().await;
    let gw = gateway(&proxy_to(&format!("http://{up}"))).await;
    let text = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n2\r\nhi\r\n5\r\nthere\r\n0\r\n\r\n"),
        "{text:?}"
    );
    // Trailers only for a client that says it takes them.
    let text = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close, TE\r\n\r\n",
    )
    .await;
    assert!(
        text.ends_with("5\r\nthere\r\n0\r\nx-trailer: t\r\n\r\n"),
        "{text:?}"
    );
    // HTTP/1.0 has no chunked coding: the body runs to the connection's end.
    let text = raw(
        gw.addr,
        b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    let lower = text.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{text}");
    assert!(lower.contains("connection: close"), "{text}");
    assert!(text.ends_with("\r\n\r\nhithere"), "{text:?}");
}

/// HTTP/1.1 over TLS goes through the same connection: pipelining, a chunked body, and a
/// refused smuggling shape that ends the connection, over a raw TLS stream.
#[tokio::test]
async fn tls_clients_get_the_same_connection() {
    let up = echo_server().await;
    let dir = temp_dir("h1tls");
    let c = cert(&["a.test"]);
    let (cp, kp) = c.write(&dir, "a");
    let gw = gateway(&format!(
        "listeners:\n  - name: tls\n    address: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\" }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        cp.display(),
        kp.display(),
        up.url()
    ))
    .await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.cert_der.clone()).unwrap();
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls_pki_types::ServerName::try_from("a.test").unwrap();

    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let mut s = connector.connect(name.clone(), tcp).await.unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /never HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await
    .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => panic!("the connection stayed open after the refusal: {text}"),
        }
    }
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(
        text.contains("\"path\":\"/one\"") && text.contains("\"body\":\"abcde\""),
        "{text}"
    );
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("both Content-Length and Transfer-Encoding"),
        "{text}"
    );
    assert!(!text.contains("/never"), "{text}");
    assert_eq!(up.hits(), 2);
}

/// A connection keeps its route-timeout timer from one request to the next (see `TimerSlot`):
/// the timer must be re-armed each time, earlier or later than before, and after it fired.
#[tokio::test]
async fn each_request_on_a_connection_gets_its_own_route_timeout() {
    let up = serve(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        } else {
            // Long enough that a timer left elapsed would fire before the answer comes.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        http::Response::new(full("ok"))
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"], request_timeout: 10s }}\nroutes:\n  \
         - match: {{ path: {{ exact: /slow }} }}\n    upstream: u\n    timeout: 300ms\n  \
         - upstream: u\n    timeout: 3s\n",
        up.url()
    )))
    .await;
    let mut s = connect(gw.addr).await;
    // Fast (3 s, later than no timer), slow (300 ms: earlier than the kept 3 s deadline),
    // fast again (the kept timer has fired), slow again.
    for (path, want) in [
        ("/fast", "HTTP/1.1 200 OK"),
        ("/slow", "HTTP/1.1 504 "),
        ("/fast", "HTTP/1.1 200 OK"),
        ("/slow", "HTTP/1.1 504 "),
    ] {
        let started = std::time::Instant::now();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let text = read_answers(&mut s, 1).await;
        assert!(text.starts_with(want), "{path}: {text}");
        if path == "/slow" {
            // The 300 ms timeout, not the 3 s one kept from the request before.
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "{path} took {:?}",
                started.elapsed()
            );
            assert!(text.contains("upstream_timeout"), "{text}");
        }
    }
}
