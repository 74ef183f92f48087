//! Request-smuggling shapes, sent over a raw socket: each must get a 400 and a closed
//! connection, and must never reach the upstream.

use portico_testkit::*;

use crate::proxy_to;

async fn setup() -> (TestGateway, Upstream) {
    let up = echo_server().await;
    let gw = gateway(&proxy_to(&up.url())).await;
    (gw, up)
}

const SHAPES: &[(&str, &str)] = &[
    (
        "CL and TE",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "duplicate CL",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    ),
    (
        "conflicting CL",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    (
        "CL list",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    ),
    (
        "obs-fold",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    ),
    (
        "bad chunk size",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk size overflow",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "TE not chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ),
    (
        "TE chunked not last",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE gzip, chunked",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE twice",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "space before colon",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n",
    ),
    ("bare CR", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n"),
    (
        "invalid header name",
        "GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n",
    ),
    (
        "NUL in value",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
    ),
    ("bare LF", "GET / HTTP/1.1\nHost: a\n\n"),
    (
        "bare LF in one header",
        "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    ),
    (
        "bare LF in chunk extension",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk data longer than size",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    ),
    (
        "two Host headers",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ),
    (
        "TE identity",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
    ),
    (
        "TE with CL 0",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    ),
];

#[tokio::test]
async fn smuggling_shapes_are_rejected_with_400_and_close() {
    let (gw, up) = setup().await;
    let mut failures = Vec::new();
    for (name, bytes) in SHAPES {
        let resp = raw(gw.addr, bytes.as_bytes()).await;
        // `raw` reads to EOF: getting the whole answer back means the connection was closed.
        if !resp.starts_with("HTTP/1.1 400") {
            failures.push(format!(
                "{name}: {:?}",
                resp.lines().next().unwrap_or("<no response>")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not rejected:\n{}",
        failures.join("\n")
    );
    // Shapes refused before a body is read never reach the upstream.
    assert!(
        up.hits() <= 2,
        "{} rejected requests reached the upstream",
        up.hits()
    );
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400, in origin and in absolute form
/// alike; HTTP/1.0, which predates Host, needs none.
#[tokio::test]
async fn an_http11_request_without_host_is_refused() {
    let (gw, up) = setup().await;
    for head in ["GET /x HTTP/1.1\r\n\r\n", "GET http://a/x HTTP/1.1\r\n\r\n"] {
        let resp = raw(gw.addr, head.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{head:?}: {resp}");
        assert!(resp.contains("needs a Host header"), "{head:?}: {resp}");
    }
    assert_eq!(up.hits(), 0);
    let resp = raw(gw.addr, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn refusals_explain_themselves() {
    let (gw, up) = setup().await;
    let resp = raw(gw.addr, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("application/problem+json"), "{resp}");
    assert!(
        resp.contains("both Content-Length and Transfer-Encoding"),
        "{resp}"
    );
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    // A header named like the marker an earlier version used internally is just a header.
    let resp = raw(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nx-portico-reject: 00:bare-lf\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn valid_chunked_request_is_reserialised() {
    let (gw, up) = setup().await;
    let resp = raw(gw.addr, b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"body\":\"abcde\""), "{resp}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn pipelined_requests_after_a_bad_one_are_not_processed() {
    let (gw, up) = setup().await;
    let resp = raw(gw.addr, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(
        resp.matches("HTTP/1.1").count(),
        1,
        "only one response: {resp}"
    );
    assert_eq!(up.hits(), 0);
}

/// An `Upgrade` request the upstream answers without switching protocols leaves the
/// connection in HTTP/1.1, and every head after it is checked as before: a smuggling shape
/// pipelined behind it is refused, and never reaches the upstream.
#[tokio::test]
async fn heads_after_a_refused_upgrade_are_still_checked() {
    let (gw, up) = setup().await;
    let resp = raw(
        gw.addr,
        b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
          POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "two answers: {resp}");
    assert!(
        resp.contains("HTTP/1.1 400") && resp.contains("both Content-Length and Transfer-Encoding"),
        "{resp}"
    );
    assert_eq!(up.hits(), 1, "only the first request reaches the upstream");
    // A connection stays open for the next request as usual.
    let resp = raw(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 2, "{resp}");
}

/// A chunk-size line longer than 4 KiB, or a trailer section over 16 KiB, ends the
/// connection: the request behind it is never read.
#[tokio::test]
async fn a_body_too_large_to_frame_ends_the_connection() {
    let (gw, up) = setup().await;
    for body in [
        format!("3;x={}\r\nabc\r\n0\r\n\r\n", "e".repeat(5000)),
        format!("3\r\nabc\r\n0\r\nX-Long: {}\r\n\r\n", "a".repeat(20_000)),
    ] {
        let req = format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}\
             GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        let resp = raw(gw.addr, req.as_bytes()).await;
        assert!(!resp.contains("smuggled"), "{resp}");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("malformed"), "{resp}");
    }
    assert!(
        up.hits() <= 2,
        "{} requests reached the upstream",
        up.hits()
    );
}

/// RFC 9113 §8.1.1: an HTTP/2 request whose DATA contradicts its `content-length` is
/// malformed and never reaches the upstream as a complete request.
#[tokio::test]
async fn http2_data_that_contradicts_content_length_is_not_forwarded() {
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let complete = std::sync::Arc::new(AtomicUsize::new(0));
    // Requests whose body the upstream has finished reading, complete or not.
    let ended = std::sync::Arc::new(AtomicUsize::new(0));
    let (seen, end) = (complete.clone(), ended.clone());
    let up = portico_testkit::serve(move |req: http::Request<hyper::body::Incoming>| {
        let (seen, end) = (seen.clone(), end.clone());
        async move {
            if req.into_body().collect().await.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            end.fetch_add(1, Ordering::SeqCst);
            http::Response::new(portico_testkit::full("ok"))
        }
    })
    .await;
    let gw = portico_testkit::gateway(&crate::proxy_to(&up.url())).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let post = |len: &str| {
        http::Request::post(format!("http://{}/x", gw.addr))
            .header("content-length", len)
            .body(())
            .unwrap()
    };
    // `content-length: 0`, then 40 bytes.
    let (resp, mut body) = h2.send_request(post("0"), false).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    body.send_data(bytes::Bytes::from(vec![b'a'; 40]), true)
        .unwrap();
    let status = resp.await.map(|r| r.status().as_u16());
    assert!(matches!(status, Ok(400) | Err(_)), "{status:?}");
    h2 = h2.ready().await.unwrap();
    // `content-length: 10`, the 10 bytes in one frame, then 30 more.
    let (resp, mut body) = h2.send_request(post("10"), false).unwrap();
    body.send_data(bytes::Bytes::from(vec![b'b'; 10]), false)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    body.send_data(bytes::Bytes::from(vec![b'c'; 30]), true)
        .unwrap();
    let status = resp.await.map(|r| r.status().as_u16());
    assert!(!matches!(status, Ok(200)), "{status:?}");
    // Whatever reached the upstream has ended there, so `complete` is final.
    eventually("the upstream is done with what reached it", async || {
        ended.load(Ordering::SeqCst) == up.hits()
    })
    .await;
    assert_eq!(
        complete.load(Ordering::SeqCst),
        0,
        "a malformed request reached the upstream"
    );
    // A body that keeps its word goes through.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let (resp, mut body) = h2.send_request(post("10"), false).unwrap();
    body.send_data(bytes::Bytes::from(vec![b'd'; 4]), false)
        .unwrap();
    body.send_data(bytes::Bytes::from(vec![b'e'; 6]), false)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    body.send_data(bytes::Bytes::new(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(complete.load(Ordering::SeqCst), 1);
}
