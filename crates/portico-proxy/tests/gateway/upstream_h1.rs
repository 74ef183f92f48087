//! Portico's own HTTP/1.1 upstream connection against an upstream that writes its answers
//! byte for byte: every way a response body can be delimited, answers that must be refused,
//! and when a connection may carry the next request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use portico_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{config, empty, proxy_to, req};

/// An upstream that answers each request head with `answer(method, path)`, keeps the
/// connection unless the answer says `connection: close` or `close` is in the path, and counts
/// the connections it accepts. Request bodies are not read.
async fn scripted(answer: fn(&str, &str) -> Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let Some(end) = read_head(&mut s, &mut got).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).into_owned();
                    got.drain(..end);
                    let mut line = head.split(' ');
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    let out = answer(method, path);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
                    if path.contains("close") || text.contains("connection: close") {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Reads until `got` holds a whole request head; its length with the empty line, or `None`
/// when the client went away first.
async fn read_head(s: &mut tokio::net::TcpStream, got: &mut Vec<u8>) -> Option<usize> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(e) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(e + 4);
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn framings(_method: &str, path: &str) -> Vec<u8> {
    match path {
        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec(),
        "/none" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        "/http10" => b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        "/until-close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain".to_vec(),
    }
}

#[tokio::test]
async fn every_body_framing_reaches_the_client_whole() {
    let (addr, accepted) = scripted(framings).await;
    let gw = gateway(&proxy_to(&format!("http://{addr}"))).await;
    let c = client(false, &[]);
    // Answers that leave the connection reusable: one connection serves them all.
    for (method, path, body) in [
        ("GET", "/plain", "plain"),
        ("GET", "/chunked", "hello world"),
        ("GET", "/hints", "ok"),
        ("HEAD", "/head", ""),
        ("GET", "/none", ""),
        ("GET", "/plain", "plain"),
    ] {
        let got = send(&c, req(method, &gw.url(path)).body(empty()).unwrap()).await;
        assert_eq!(
            got.status.as_u16(),
            if path == "/none" { 204 } else { 200 },
            "{path}"
        );
        assert_eq!(got.text(), body, "{path}");
        if method == "HEAD" {
            assert_eq!(got.header("content-length"), Some("10"));
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection, reused"
    );
    // Trailers of a chunked answer are passed on to a client that takes them.
    let resp = c
        .request(
            req("GET", &gw.url("/chunked"))
                .header("te", "trailers")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(
        collected
            .trailers()
            .and_then(|t| t.get("x-trailer"))
            .map(|v| v.to_str().unwrap()),
        Some("t")
    );
    // Answers delimited by the end of the connection, or from HTTP/1.0: never reused.
    let before = accepted.load(Ordering::SeqCst);
    for (path, body) in [
        ("/until-close", "until the end"),
        ("/http10", "abc"),
        ("/until-close", "until the end"),
    ] {
        let got = send(&c, req("GET", &gw.url(path)).body(empty()).unwrap()).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.text(), body, "{path}");
    }
    // The first took the pooled connection; none of them was given back, so the next
    // request opens a connection of its own as well.
    let got = get(&gw.url("/plain")).await;
    assert_eq!(got.text(), "plain");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before + 3,
        "no connection reused after a close-delimited or HTTP/1.0 answer"
    );
}

fn broken(_method: &str, path: &str) -> Vec<u8> {
    match path {
        "/cl-and-te" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec()
        }
        "/two-lengths" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec()
        }
        "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello".to_vec(),
        "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        "/garbage" => b"HTTP/1.1 two hundred\r\n\r\n".to_vec(),
        "/huge-head" => {
            let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..80 {
                v.extend_from_slice(format!("x-h{i}: {}\r\n", "a".repeat(1000)).as_bytes());
            }
            v.extend_from_slice(b"content-length: 0\r\n\r\n");
            v
        }
        "/bad-chunk" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec()
        }
        "/long-chunk" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n".to_vec()
        }
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    }
}

#[tokio::test]
async fn answers_a_proxy_could_misread_are_refused() {
    let (addr, accepted) = scripted(broken).await;
    let gw = gateway(&proxy_to(&format!("http://{addr}"))).await;
    let c = client(false, &[]);
    // POST: not idempotent, so each failure is reported once, not retried.
    for path in [
        "/cl-and-te",
        "/two-lengths",
        "/bad-length",
        "/switch",
        "/garbage",
        "/huge-head",
    ] {
        let got = send(&c, req("POST", &gw.url(path)).body("x".into()).unwrap()).await;
        assert_eq!(got.status, 502, "{path}: {}", got.text());
        assert_eq!(got.json()["code"], "upstream_protocol_error", "{path}");
    }
    // Broken in the middle of the body: the head may be on its way already, so the client's
    // request or body fails; either way no short body passes for a whole one.
    for path in ["/bad-chunk", "/long-chunk"] {
        match c
            .request(req("GET", &gw.url(path)).body(empty()).unwrap())
            .await
        {
            Err(_) => {}
            Ok(resp) => {
                assert_eq!(resp.status(), 200, "{path}");
                assert!(
                    resp.into_body().collect().await.is_err(),
                    "{path}: a short body passed off as whole"
                );
            }
        }
    }
    // None of those connections is reused: the next request opens its own.
    let before = accepted.load(Ordering::SeqCst);
    let got = get(&gw.url("/fine")).await;
    assert_eq!(got.text(), "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
}

/// An upstream that decides before the request body is all there (413 here) is answered
/// straight away, not after a body that may never come.
#[tokio::test]
async fn an_answer_before_the_whole_request_body_is_passed_on() {
    let (addr, _) = scripted(|_, _| {
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much"
            .to_vec()
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"http://{addr}\"] }}\nroutes:\n  - upstream: u\n    timeout: 20s\n"
    )))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains("too much") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok(),
        "no answer while the body is incomplete: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

/// A client that asks `Expect: 100-continue` and sends its body in pieces: the upstream's own
/// `100 Continue` must not be taken for its answer (which would stop the body half-way).
#[tokio::test]
async fn an_upstreams_100_continue_does_not_cut_the_body_short() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Notified once the upstream has sent its own 100 Continue.
    let continued = std::sync::Arc::new(tokio::sync::Notify::new());
    let sent = continued.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let Some(end) = read_head(&mut s, &mut got).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if head.contains("expect: 100-continue") {
                    let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    sent.notify_one();
                }
                let mut body = got[end..].to_vec();
                while body.len() < len {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body.extend_from_slice(&buf[..n]),
                    }
                }
                let text = format!("got {}", String::from_utf8_lossy(&body));
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                            text.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    let gw = gateway(&proxy_to(&format!("http://{addr}"))).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the gateway answers 100 Continue")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"first").await.unwrap();
    // The rest comes once the upstream has sent its own 100 Continue to the gateway.
    tokio::time::timeout(EVENTUALLY, continued.notified())
        .await
        .expect("the upstream is asked with Expect: 100-continue");
    s.write_all(b"-last").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("got first-last"), "{text}");
}
