//! Clients that go away or abuse the protocol: every cancelled request is still logged and
//! counted, a departed HTTP/1.1 client cancels its upstream request at once, and an HTTP/2
//! client that cancels most of its streams (rapid reset) is sent GOAWAY.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use portico_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config;

/// The sum of a metric's samples whose line contains `with` (the recorder is shared by every
/// test of this process, so counts are compared as at least, never exactly).
fn metric(m: &str, name: &str, with: &str) -> f64 {
    m.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
                && l.contains(with)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A gateway in front of `up` with these `server:` settings.
async fn gateway_with(server: &str, up: &str) -> TestGateway {
    gateway(&config(&format!(
        "server: {{ {server} }}\nupstreams:\n  u: {{ targets: [\"{up}\"] }}\nroutes:\n  - upstream: u\n"
    )))
    .await
}

/// An HTTP/1.1 upstream that reads a request head and never answers; `closed` is set when
/// the gateway closes the connection. `arrived` counts the connections a request came in on
/// (one a request, as none is ever answered).
async fn silent_upstream() -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicUsize::new(0));
    let (g, c, a) = (got.clone(), closed.clone(), arrived.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (g, c, a) = (g.clone(), c.clone(), a.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut first = true;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            c.store(true, Ordering::SeqCst);
                            return;
                        }
                        Ok(_) => {
                            g.store(true, Ordering::SeqCst);
                            if std::mem::take(&mut first) {
                                a.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, got, closed, arrived)
}

#[tokio::test]
async fn an_http1_client_that_leaves_cancels_its_upstream_request_and_is_logged() {
    let (up, got, closed, _) = silent_upstream().await;
    let dir = temp_dir("client-leaves");
    let log = dir.join("access.log");
    let gw = gateway(&config(&format!(
        "access_log: {{ target: \"{}\" }}\nupstreams:\n  u: {{ targets: [\"http://{up}\"], request_timeout: 60s }}\nroutes:\n  - name: slow\n    upstream: u\n",
        log.display()
    )))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /wait HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    eventually("the request reached the upstream", async || {
        got.load(Ordering::SeqCst)
    })
    .await;
    drop(s);
    eventually(
        "the upstream request is cancelled when the client leaves, not after request_timeout",
        async || closed.load(Ordering::SeqCst),
    )
    .await;
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rec: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(rec["status"], 499, "{line}");
    assert_eq!(rec["complete"], false, "{line}");
    assert_eq!(rec["error"], "client_closed_request", "{line}");
    assert_eq!(rec["route"], "slow", "{line}");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metric(&m, "portico_requests_total", "status=\"499\"") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn rapid_reset_gets_goaway_and_every_stream_is_counted() {
    let (up, _got, _closed, arrived) = silent_upstream().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"http://{up}\"] }}\nroutes:\n  - upstream: u\n"
    )))
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2.ready().await.unwrap();
    let mut sent = 0;
    let mut refused = false;
    for _ in 0..400 {
        let req = http::Request::get(format!("http://{}/x", gw.addr))
            .body(())
            .unwrap();
        let (resp, mut stream) = match h2.send_request(req, true) {
            Ok(r) => r,
            Err(_) => {
                refused = true;
                break;
            }
        };
        sent += 1;
        // HEADERS ending the stream, then RST_STREAM once the request has been accepted
        // and forwarded (it is at the upstream).
        let reached = async || arrived.load(Ordering::SeqCst) >= sent;
        eventually("the request reaches the upstream", reached).await;
        stream.send_reset(h2::Reason::CANCEL);
        drop(resp);
        h2 = match h2.ready().await {
            Ok(h) => h,
            Err(_) => {
                refused = true;
                break;
            }
        };
    }
    assert!(refused, "the connection was never closed to new streams");
    assert!(sent < 400, "{sent}");
    assert!(
        sent >= 100,
        "GOAWAY only once the threshold is reached: {sent}"
    );
    let mut m = String::new();
    for _ in 0..100 {
        m = get(&gw.admin_url("/metrics")).await.text();
        if metric(&m, "portico_http2_premature_reset_goaways_total", "") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        metric(&m, "portico_http2_premature_reset_goaways_total", "") >= 1.0,
        "{m}"
    );
    let cancelled = metric(&m, "portico_requests_total", "status=\"499\"");
    assert!(
        cancelled >= 100.0,
        "cancelled streams are counted: {cancelled}\n{m}"
    );
}

/// A body trickled below `request_body_min_rate` is cut off after the grace period with 408;
/// one that keeps the rate passes.
#[tokio::test]
async fn a_trickled_request_body_is_cut_off() {
    let up = echo_server().await;
    let gw = gateway_with(
        "request_body_timeout: 1s, request_body_min_rate: 1000",
        &up.url(),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /slow HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\n")
        .await
        .unwrap();
    // 20 bytes every 100 ms: 200 bytes a second, a fifth of the floor.
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if s.write_all(&[b'x'; 20]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    let answer = writer.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");

    // A body at the rate, after a pause shorter than the grace period, is fine.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /ok HTTP/1.1\r\nhost: a\r\ncontent-length: 4000\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..4 {
        s.write_all(&[b'y'; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// An HTTP/2 client that never opens its flow-control window: its answers wait in bounded
/// buffers, and the connection is closed once nothing has been written for `send_timeout`.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_after_send_timeout() {
    let big = bytes::Bytes::from(vec![b'z'; 256 * 1024]);
    let up = serve(move |_req| {
        let big = big.clone();
        async move { http::Response::new(full(big)) }
    })
    .await;
    let gw = gateway_with("send_timeout: 1s", &up.url()).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (h2, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let ended = tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..20 {
        let req = http::Request::get(format!("http://{}/big", gw.addr))
            .body(())
            .unwrap();
        let (resp, _) = h2.send_request(req, true).unwrap();
        answers.push(resp);
        h2 = h2.ready().await.unwrap();
    }
    // The heads arrive (headers are not flow-controlled); the bodies cannot.
    for resp in answers {
        assert_eq!(resp.await.unwrap().status(), 200);
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), ended).await;
    assert!(closed.is_ok(), "the connection is still open");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metric(&m, "portico_client_send_timeouts_total", "") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn connections_per_client_address_can_be_capped() {
    let up = echo_server().await;
    let gw = gateway_with("max_connections_per_ip: 2", &up.url()).await;
    let ask = |mut s: tokio::net::TcpStream| async move {
        s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        (s, String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let (a, got) = ask(tokio::net::TcpStream::connect(gw.addr).await.unwrap()).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let (b, got) = ask(tokio::net::TcpStream::connect(gw.addr).await.unwrap()).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // A third from the same address is closed at once.
    let (_c, got) = ask(tokio::net::TcpStream::connect(gw.addr).await.unwrap()).await;
    assert_eq!(got, "");
    drop(a);
    drop(b);
    let mut again = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_s, got) = ask(tokio::net::TcpStream::connect(gw.addr).await.unwrap()).await;
        again = got;
        if again.starts_with("HTTP/1.1 200") {
            break;
        }
    }
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "places are given back: {again}"
    );
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metric(&m, "portico_connections_refused_total", "per_ip_limit") >= 1.0,
        "{m}"
    );
}

/// The same over HTTP/1.1: a client that stops reading a large answer is dropped.
#[tokio::test]
async fn an_http1_client_that_stops_reading_is_dropped() {
    let big = bytes::Bytes::from(vec![b'z'; 16 * 1024 * 1024]);
    let up = serve(move |_req| {
        let big = big.clone();
        async move { http::Response::new(full(big)) }
    })
    .await;
    let log = temp_dir("stops-reading").join("access.log");
    let gw = gateway(&config(&format!(
        "server: {{ send_timeout: 1s }}\naccess_log: {{ target: \"{}\" }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        log.display(),
        up.url()
    )))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    // Read nothing (the socket buffers fill up first) until the gateway has given up on the
    // answer: its access-log line is written when the exchange ends.
    eventually("the gateway gives up on the answer", async || {
        !std::fs::read_to_string(&log).unwrap_or_default().is_empty()
    })
    .await;
    let line = std::fs::read_to_string(&log).unwrap();
    let rec: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(rec["complete"], false, "{line}");
    // The answer was cut off: the client finds the connection closed before 16 MiB.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(got.len() < 16 * 1024 * 1024, "{}", got.len());
}
