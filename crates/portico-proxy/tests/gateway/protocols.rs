use std::time::Duration;

use portico_testkit::*;

use crate::{config, empty, req};

#[tokio::test]
async fn http2_clients_and_h2c_upstreams() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  h1: {{ targets: [\"{0}\"] }}\n  h2: {{ targets: [\"h2c://{1}\"] }}\nroutes:\n  - match: {{ path: {{ prefix: /h2 }} }}\n    upstream: h2\n  - upstream: h1\n",
        up.url(),
        up.addr
    )))
    .await;
    // HTTP/2 client (h2c prior knowledge) to an HTTP/1.1 upstream.
    let h2 = client(true, &[]);
    let got = send(&h2, req("GET", &gw.url("/a")).body(empty()).unwrap()).await;
    assert_eq!(got.version, http::Version::HTTP_2);
    let seen = got.json();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(
        seen["headers"]["host"],
        gw.addr.to_string(),
        "the :authority becomes Host"
    );
    // HTTP/1.1 client to an h2c upstream.
    let got = send(
        &client(false, &[]),
        req("GET", &gw.url("/h2/x")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(got.json()["version"], "HTTP/2.0");
    // Many concurrent streams over one HTTP/2 connection.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let h2 = h2.clone();
        let url = gw.url(&format!("/h2/{i}"));
        tasks.push(tokio::spawn(async move {
            send(&h2, req("GET", &url).body(empty()).unwrap()).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().json()["path"], format!("/h2/{i}"));
    }
}

/// RFC 9113 §8.3.1: an HTTP/2 request names its host once. An h2c upstream gets the host an
/// HTTP/1.1 upstream would get as `Host` (the client's, or the route's `rewrite.host`) in
/// `:authority`, and no `host` header that says otherwise.
#[tokio::test]
async fn h2c_upstreams_get_one_authority() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  h2: {{ targets: [\"h2c://{}\"] }}\nroutes:\n  - match: {{ path: {{ prefix: /rewritten }} }}\n    upstream: h2\n    rewrite: {{ host: users.internal }}\n  - upstream: h2\n",
        up.addr
    )))
    .await;
    let gw_host = gw.addr.to_string();
    for (h2, path, host, expected) in [
        (false, "/x", Some("client.example"), "client.example"),
        (
            false,
            "/x",
            Some("client.example:8443"),
            "client.example:8443",
        ),
        (
            false,
            "/rewritten",
            Some("client.example"),
            "users.internal",
        ),
        // Over HTTP/2 from the client: its :authority.
        (true, "/x", None, gw_host.as_str()),
    ] {
        let mut r = req("GET", &gw.url(path));
        if let Some(h) = host {
            r = r.header("host", h);
        }
        let got = send(&client(h2, &[]), r.body(empty()).unwrap()).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let seen = got.json();
        assert_eq!(seen["version"], "HTTP/2.0");
        let uri: http::Uri = seen["uri"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            uri.authority().map(|a| a.as_str()),
            Some(expected),
            "{path} {host:?}: {seen}"
        );
        assert!(
            seen["headers"]["host"].is_null() || seen["headers"]["host"] == expected,
            "{path} {host:?}: {seen}"
        );
    }
}

#[tokio::test]
async fn tls_listener_chooses_certificate_by_sni_and_negotiates_h2() {
    let up = echo_server().await;
    let dir = temp_dir("tls");
    let a = cert(&["a.test"]);
    let b = cert(&["*.b.test"]);
    let (ac, ak) = a.write(&dir, "a");
    let (bc, bk) = b.write(&dir, "b");
    let gw = gateway(&format!(
        r#"listeners:
  - name: tls
    address: "127.0.0.1:0"
    tls:
      certificates:
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
upstreams:
  u: {{ targets: ["{}"] }}
routes:
  - upstream: u
"#,
        ac.display(),
        ak.display(),
        bc.display(),
        bk.display(),
        up.url()
    ))
    .await;
    let port = gw.addr.port();
    // Each client trusts only one certificate: the handshake succeeds only if SNI picked it.
    for (host, roots, h2) in [
        ("a.test", &a, false),
        ("x.b.test", &b, true),
        ("a.test", &a, true),
    ] {
        let c = tls_client_resolving(host, gw.addr, &roots.cert_der, h2);
        let got = send(
            &c,
            req("GET", &format!("https://{host}:{port}/s"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(got.json()["headers"]["x-forwarded-proto"], "https");
    }
    // Wrong trust: the other certificate is served to a.test, so this client refuses it.
    let c = tls_client_resolving("a.test", gw.addr, &b.cert_der, false);
    assert!(
        c.request(
            req("GET", &format!("https://a.test:{port}/"))
                .body(empty())
                .unwrap()
        )
        .await
        .is_err()
    );
}

/// A TLS client that connects to `addr` whatever the URL's host says (no DNS in tests).
fn tls_client_resolving(
    host: &'static str,
    addr: std::net::SocketAddr,
    root: &rustls_pki_types::CertificateDer<'static>,
    h2: bool,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<
        hyper_util::client::legacy::connect::HttpConnector<StaticResolver>,
    >,
    http_body_util::Full<bytes::Bytes>,
> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut http =
        hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(StaticResolver(addr));
    http.enforce_http(false);
    let _ = host;
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let conn = if h2 {
        b.enable_http2().wrap_connector(http)
    } else {
        b.enable_http1().wrap_connector(http)
    };
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(h2)
        .build(conn)
}

#[derive(Clone)]
struct StaticResolver(std::net::SocketAddr);

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for StaticResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        std::future::ready(Ok(vec![self.0].into_iter()))
    }
}

#[tokio::test]
async fn https_upstream_with_private_ca() {
    let c = cert(&["localhost"]);
    let up = serve_with_tls(
        |req| async move {
            let v = echo_json(req).await;
            http::Response::new(full(v.to_string()))
        },
        Some(c.server_config(&[b"h2", b"http/1.1"])),
    )
    .await;
    let dir = temp_dir("ca");
    let (ca, _) = c.write(&dir, "ca");
    let gw = gateway(&config(&format!(
        "upstreams:\n  s:\n    targets: [\"https://localhost:{}\"]\n    tls: {{ ca: \"{}\" }}\n  untrusted:\n    targets: [\"https://localhost:{}\"]\nroutes:\n  - match: {{ path: {{ prefix: /bad }} }}\n    upstream: untrusted\n  - upstream: s\n",
        up.addr.port(),
        ca.display(),
        up.addr.port()
    )))
    .await;
    let got = get(&gw.url("/secure")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json()["version"],
        "HTTP/2.0",
        "ALPN picks h2 with the upstream"
    );
    // Without the private CA, the upstream's certificate is refused: 502, not a silent success.
    let got = get(&gw.url("/bad")).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn websocket_upgrade_is_proxied_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    let ws = websocket_echo().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  ws: {{ targets: [\"http://{ws}\"] }}\nroutes:\n  - upstream: ws\n"
    )))
    .await;
    let (mut sock, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        sock.send(tokio_tungstenite::tungstenite::Message::text(format!(
            "msg {i}"
        )))
        .await
        .unwrap();
        let back = sock.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("msg {i}"));
    }
    sock.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        0u8, 1, 2, 255,
    ]))
    .await
    .unwrap();
    assert_eq!(
        sock.next().await.unwrap().unwrap().into_data().as_ref(),
        &[0u8, 1, 2, 255]
    );
    sock.close(None).await.unwrap();
}

#[tokio::test]
async fn server_sent_events_are_not_buffered() {
    use http_body_util::BodyExt;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = serve(move |_req| {
        let mut release = release_rx.clone();
        async move {
            let (tx, body) = portico_proxy::body::ChannelBody::new(1);
            tokio::spawn(async move {
                tx.send(bytes::Bytes::from_static(b"data: first\n\n"))
                    .await
                    .unwrap();
                // The second event waits until the test has received the first through the gateway.
                let _ = release.wait_for(|r| *r).await;
                tx.send(bytes::Bytes::from_static(b"data: second\n\n"))
                    .await
                    .unwrap();
            });
            let mut r = http::Response::new(http_body_util::Either::Right(body));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  sse: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: sse\n",
        up.url()
    )))
    .await;
    let resp = client(false, &[])
        .request(req("GET", &gw.url("/events")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event must arrive before the stream ends");
    assert_eq!(
        first.unwrap().unwrap().into_data().unwrap().as_ref(),
        b"data: first\n\n"
    );
    release_tx.send(true).unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second.as_ref(), b"data: second\n\n");
}

#[tokio::test]
async fn grpc_is_proxied_with_trailers() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let grpc = grpc_health().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  g: {{ targets: [\"h2c://{grpc}\"] }}\nroutes:\n  - match: {{ path: {{ prefix: /grpc.health.v1.Health }} }}\n    upstream: g\n"
    )))
    .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = HealthClient::new(channel);
    let ok = c
        .check(HealthCheckRequest {
            service: "portico.test".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.get_ref().status(), ServingStatus::Serving);
    // An error travels in the trailers (grpc-status 5, NOT_FOUND); it must arrive intact.
    let err = c
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Server streaming: the first message arrives while the stream stays open.
    let mut stream = c
        .watch(HealthCheckRequest {
            service: "portico.test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn grpc_clients_get_grpc_errors_and_their_deadline_is_honoured() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let slow = serve(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        http::Response::new(full("late"))
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  slow: {{ targets: [\"h2c://{}\"] }}\nroutes:\n  - match: {{ path: {{ prefix: /slow }} }}\n    upstream: slow\n    timeout: 30s\n",
        slow.addr
    )))
    .await;
    // No route: a gRPC status, not an HTTP error the client can't read.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(err.message().contains("no_route"), "{}", err.message());
    // The client's grpc-timeout (150 ms) wins over the route's 30 s (the upstream takes 3 s).
    let got = send(
        &client(true, &[]),
        req("POST", &gw.url("/slow/Svc/Method"))
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "150m")
            .header("te", "trailers")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("grpc-status"), Some("4"));
    assert!(
        got.header("grpc-message")
            .unwrap()
            .contains("upstream_timeout")
    );
}

/// `client_idle_timeout` applies to HTTP/2 connections too: no stream open for that long
/// and the gateway sends GOAWAY and closes. A stream still being answered counts as activity.
#[tokio::test]
async fn idle_http2_connections_close_after_client_idle_timeout() {
    let up = serve(|_req| async move {
        // Three times the idle timeout: the connection must not count as idle meanwhile.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        http::Response::new(full("slow"))
    })
    .await;
    let gw = gateway(&config(&format!(
        "server: {{ client_idle_timeout: 500ms }}\nupstreams:\n  slow: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: slow\n",
        up.url()
    )))
    .await;
    let (mut sender, mut conn) = h2_connection(gw.addr).await;
    let get = || h2_get(&gw.url("/x"));
    let resp = sender.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Had the slow stream been ignored, GOAWAY would have come a second ago and this
    // request, on the same connection, would be refused.
    sender.ready().await.expect("connection still open");
    let resp = sender.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Now idle: closed by the gateway, without the client doing anything.
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut conn).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "closed cleanly after being idle: {ended:?}"
    );
    assert!(sender.ready().await.is_err(), "no more requests");
}

/// Shutdown reaches HTTP/2 connections too: an idle one gets GOAWAY and closes at once.
#[tokio::test]
async fn shutdown_closes_idle_http2_connections() {
    let gw = gateway(&config("routes:\n  - respond: { status: 200, body: ok }\n")).await;
    let (mut sender, conn) = h2_connection(gw.addr).await;
    let resp = sender.send_request(h2_get(&gw.url("/"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let left = tokio::time::timeout(Duration::from_secs(10), gw.gw.shutdown())
        .await
        .expect("drained without waiting for the drain timeout");
    assert_eq!(left, 0, "no connection left open");
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "closed cleanly: {ended:?}");
}

/// One HTTP/2 connection (prior knowledge) of our own, to watch when the gateway closes it:
/// the task driving it ends then.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

fn h2_get(url: &str) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    http::Request::builder()
        .uri(url)
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// An HTTP/2 request may carry `host` fields beside `:authority` (hyper's server does not
/// refuse repeated ones, as Portico's HTTP/1.1 connection does): the upstream receives one.
#[tokio::test]
async fn http2_host_copies_reach_the_upstream_as_one() {
    let up = portico_testkit::echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  echo: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: echo\n",
        up.url()
    )))
    .await;
    let (mut sender, _conn) = h2_connection(gw.addr).await;
    let mut req = h2_get(&gw.url("/h"));
    req.headers_mut()
        .append(http::header::HOST, "a.example".parse().unwrap());
    req.headers_mut()
        .append(http::header::HOST, "b.example".parse().unwrap());
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["host"], "a.example", "{seen}");
}
