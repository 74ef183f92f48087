use std::time::Duration;

use portico_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{config, empty, req};

fn assert_problem(got: &Got, status: u16, code: &str) {
    assert_eq!(got.status.as_u16(), status, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let p = got.json();
    assert_eq!(p["status"], status);
    assert_eq!(p["code"], code);
    assert!(p["title"].is_string() && p["detail"].is_string() && p["type"].is_string());
    assert_eq!(
        p["request_id"].as_str(),
        got.header("x-request-id"),
        "the body carries the request id"
    );
}

#[tokio::test]
async fn no_route_is_404_problem() {
    let gw = gateway(&config(
        "routes:\n  - match: { path: { exact: /only }, methods: [GET] }\n    respond: {}\n",
    ))
    .await;
    assert_problem(&get(&gw.url("/other")).await, 404, "no_route");
    let got = send(
        &client(false, &[]),
        req("POST", &gw.url("/only")).body(empty()).unwrap(),
    )
    .await;
    assert_problem(&got, 404, "no_route");
}

#[tokio::test]
async fn upstream_down_is_502() {
    // Bind then drop: the port is closed, so connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = gateway(&config(&format!("upstreams:\n  down: {{ targets: [\"http://127.0.0.1:{port}\"] }}\nroutes:\n  - upstream: down\n"))).await;
    assert_problem(&get(&gw.url("/")).await, 502, "upstream_connect_failed");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains(
            "portico_upstream_errors_total{upstream=\"down\",kind=\"upstream_connect_failed\"}"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn slow_upstream_past_timeout_is_504() {
    let up = serve(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        http::Response::new(full("too late"))
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  slow: {{ targets: [\"{}\"], request_timeout: 10s }}\nroutes:\n  - upstream: slow\n    timeout: 200ms\n",
        up.url()
    )))
    .await;
    assert_problem(&get(&gw.url("/")).await, 504, "upstream_timeout");
}

#[tokio::test]
async fn upstream_reset_before_response_is_502() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            // Half a status line, then a reset.
            let _ = s.write_all(b"HTTP/1.1 200").await;
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let gw = gateway(&config(&format!(
        "upstreams:\n  r: {{ targets: [\"http://{addr}\"] }}\nroutes:\n  - upstream: r\n"
    )))
    .await;
    // POST: not idempotent, so not retried; the failure is reported as it is.
    let got = send(
        &client(false, &[]),
        req("POST", &gw.url("/")).body("x".into()).unwrap(),
    )
    .await;
    assert_problem(&got, 502, "upstream_protocol_error");
}

#[tokio::test]
async fn upstream_reset_mid_body_aborts_the_client_response() {
    use http_body_util::BodyExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // The reset comes once the client has the answer's head.
    let headed = std::sync::Arc::new(tokio::sync::Notify::new());
    let reset = headed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial")
                .await;
            reset.notified().await;
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let gw = gateway(&config(&format!(
        "upstreams:\n  r: {{ targets: [\"http://{addr}\"] }}\nroutes:\n  - upstream: r\n"
    )))
    .await;
    let resp = client(false, &[])
        .request(req("GET", &gw.url("/")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    headed.notify_one();
    // The client must see an error, never a short body passed off as complete.
    assert!(resp.into_body().collect().await.is_err());
}

#[tokio::test]
async fn stale_pooled_connection_is_retried_for_idempotent_requests() {
    // An upstream that answers one request per connection with keep-alive semantics, then
    // closes the socket: the gateway's pooled connection goes stale between requests.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cl = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let cl = cl.clone();
            tokio::spawn(async move {
                // Every connection, answered or not, counts as closed when this ends.
                async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                .await;
                cl.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"http://{addr}\"] }}\nroutes:\n  - upstream: u\n"
    )))
    .await;
    for i in 0..5 {
        let got = get(&gw.url("/")).await;
        assert_eq!(got.status, 200, "request {i}: {}", got.text());
        // The upstream has closed every connection it answered on: the pooled one is stale.
        let answered = accepted.load(std::sync::atomic::Ordering::SeqCst);
        eventually(
            "the upstream closes the connection it answered on",
            async || closed.load(std::sync::atomic::Ordering::SeqCst) >= answered,
        )
        .await;
    }
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 5);
}

/// `max_request_header_bytes` counts the whole head, from the request line through the empty
/// line that ends it: a head of exactly the limit passes, one byte more gets 431, also when
/// it arrives in one piece.
#[tokio::test]
async fn the_request_head_limit_is_exact() {
    let gw = gateway(&config(
        "server: { max_request_header_bytes: 8192 }\nroutes:\n  - respond: {}\n",
    ))
    .await;
    let head = |len: usize| {
        let bare = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Pad: \r\n\r\n";
        let head = bare.replace(
            "X-Pad: ",
            &format!("X-Pad: {}", "a".repeat(len - bare.len())),
        );
        assert_eq!(head.len(), len);
        head
    };
    let resp = raw(gw.addr, head(8192).as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = raw(gw.addr, head(8193).as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(resp.contains("request_head_too_large"), "{resp}");
}

#[tokio::test]
async fn oversized_request_head_is_rejected() {
    let gw = gateway(&config("server: { max_request_header_bytes: 8192, max_request_headers: 20 }\nroutes:\n  - respond: {}\n")).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let resp = raw(gw.addr, big.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw(gw.addr, many.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}
