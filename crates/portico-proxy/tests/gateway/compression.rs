//! Response compression with real decoders for each coding.

use std::io::{Read, Write};
use std::time::Duration;

use portico_testkit::*;

use crate::{config, empty, req};

fn doc() -> String {
    let items: Vec<String> = (0..100)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\"}}"))
        .collect();
    format!("[{}]", items.join(","))
}

async fn origin() -> Upstream {
    serve(|req| async move {
        let path = req.uri().path().to_owned();
        let (ct, body, enc) = match path.as_str() {
            "/small" => ("application/json", "{\"a\":1}".to_owned(), None),
            "/png" => ("image/png", doc(), None),
            "/already" => ("application/json", doc(), Some("gzip")),
            _ => ("application/json; charset=utf-8", doc(), None),
        };
        let mut r = http::Response::new(full(body));
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
        if let Some(e) = enc {
            r.headers_mut()
                .insert("content-encoding", e.parse().unwrap());
        }
        r
    })
    .await
}

async fn fetch(gw: &TestGateway, path: &str, accept: Option<&str>) -> Got {
    let c = client(false, &[]);
    let mut r = req("GET", &gw.url(path));
    if let Some(a) = accept {
        r = r.header("accept-encoding", a);
    }
    send(&c, r.body(empty()).unwrap()).await
}

#[tokio::test]
async fn responses_are_compressed_as_negotiated() {
    let up = origin().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  comp: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: comp\n    policies:\n      - type: compression\n",
        up.url()
    )))
    .await;
    let plain = doc();
    // Each coding, decoded by its own library.
    let got = fetch(&gw, "/", Some("gzip")).await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(got.header("vary"), Some("accept-encoding"));
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.header("etag"), Some("W/\"v1\""));
    let mut out = String::new();
    flate2::read::GzDecoder::new(&got.body[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, plain);
    assert!(got.body.len() < plain.len() / 2);

    let got = fetch(&gw, "/", Some("br")).await;
    assert_eq!(got.header("content-encoding"), Some("br"));
    let mut out = String::new();
    brotli::Decompressor::new(&got.body[..], 4096)
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, plain);

    let got = fetch(&gw, "/", Some("zstd")).await;
    assert_eq!(got.header("content-encoding"), Some("zstd"));
    assert_eq!(
        String::from_utf8(zstd::decode_all(&got.body[..]).unwrap()).unwrap(),
        plain
    );

    // q-values, then the policy's preference (br, zstd, gzip).
    for (accept, want) in [
        ("gzip, deflate, br, zstd", Some("br")),
        ("gzip;q=1.0, br;q=0.5", Some("gzip")),
        ("br;q=0, gzip;q=0.2", Some("gzip")),
        ("identity", None),
        ("*", Some("br")),
    ] {
        let got = fetch(&gw, "/", Some(accept)).await;
        assert_eq!(got.header("content-encoding"), want, "{accept}");
    }
    // Not asked, too small, not a compressible type, already encoded: as it was.
    let got = fetch(&gw, "/", None).await;
    assert_eq!(
        (got.header("content-encoding"), got.text()),
        (None, plain.clone())
    );
    assert_eq!(got.header("vary"), Some("accept-encoding"));
    assert_eq!(
        fetch(&gw, "/small", Some("gzip"))
            .await
            .header("content-encoding"),
        None
    );
    assert_eq!(
        fetch(&gw, "/png", Some("gzip"))
            .await
            .header("content-encoding"),
        None
    );
    let got = fetch(&gw, "/already", Some("br")).await;
    assert_eq!(
        got.header("content-encoding"),
        Some("gzip"),
        "never compressed twice"
    );
    assert_eq!(got.text(), plain);
}

#[tokio::test]
async fn streams_are_compressed_without_waiting_for_the_end() {
    use http_body_util::BodyExt;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let up = serve(move |_req| {
        let mut release = release_rx.clone();
        async move {
            let (tx, body) = portico_proxy::body::ChannelBody::new(1);
            tokio::spawn(async move {
                tx.send(bytes::Bytes::from("data: first\n\n".repeat(100)))
                    .await
                    .unwrap();
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
        "upstreams:\n  comp-sse: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: comp-sse\n    policies:\n      - {{ type: compression, algorithms: [gzip] }}\n",
        up.url()
    )))
    .await;
    let resp = client(false, &[])
        .request(
            req("GET", &gw.url("/"))
                .header("accept-encoding", "gzip")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    // The first event decodes before the upstream has sent the second.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk must arrive while the stream is open")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    decoder.write_all(&first).unwrap();
    decoder.flush().unwrap();
    assert!(String::from_utf8_lossy(decoder.get_ref()).starts_with("data: first\n\n"));
    release_tx.send(true).unwrap();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            decoder.write_all(&d).unwrap();
        }
    }
    let all = decoder.finish().unwrap();
    assert!(
        String::from_utf8(all)
            .unwrap()
            .ends_with("data: second\n\n")
    );
}

#[tokio::test]
async fn json_responses_are_reshaped_on_any_route() {
    let up = serve(|req| async move {
        let body = serde_json::json!({
            "id": 7, "userName": "ada", "internal": {"shard": 3}, "debug": true,
            "orders": [{"id": 1, "total": 3, "cost": 1}, {"id": 2, "total": 4, "cost": 2}]
        });
        let mut r = http::Response::new(full(body.to_string()));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        if req.uri().path() == "/created" {
            *r.status_mut() = http::StatusCode::CREATED;
        }
        r
    })
    .await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  shape-any: {{ targets: ["{}"] }}
routes:
  - upstream: shape-any
    policies:
      - type: json_transform
        sparse_fieldsets: true
        remove: [internal, debug, orders.cost]
        rename: {{ userName: user_name }}
        set: {{ api_version: 2, source: portico }}
        status: {{ 201: 200 }}
"#,
        up.url()
    )))
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(
        got.json(),
        serde_json::json!({
            "id": 7, "user_name": "ada", "api_version": 2, "source": "portico",
            "orders": [{"id": 1, "total": 3}, {"id": 2, "total": 4}]
        }),
        "{}",
        got.text()
    );
    assert_eq!(
        got.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    let got = get(&gw.url("/?fields=id,orders.total")).await;
    assert_eq!(
        got.json()["orders"],
        serde_json::json!([{"total": 3}, {"total": 4}])
    );
    assert!(got.json().get("user_name").is_none());
    let got = get(&gw.url("/created")).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn header_values_can_carry_request_variables() {
    let echo = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  vars-echo: {{ targets: ["{}"] }}
routes:
  - name: vars-route
    upstream: vars-echo
    policies:
      - type: headers
        request:
          set: {{ x-client: "%{{client_ip}}", x-trace: "id=%{{request_id}};route=%{{route}}" }}
        response:
          add: {{ x-served-route: "%{{route}}" }}
"#,
        echo.url()
    )))
    .await;
    let got = get(&gw.url("/")).await;
    let seen = got.json();
    assert_eq!(seen["headers"]["x-client"], "127.0.0.1");
    let id = got.header("x-request-id").unwrap().to_owned();
    assert_eq!(
        seen["headers"]["x-trace"],
        format!("id={id};route=vars-route")
    );
    assert_eq!(got.header("x-served-route"), Some("vars-route"));
}

#[tokio::test]
async fn compressed_request_bodies_are_decoded_within_a_limit() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  echo: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: echo\n    policies:\n      - {{ type: request_decompression, max_bytes: 100000 }}\n",
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let post = |coding: Option<&str>, body: Vec<u8>| {
        let mut r = req("POST", &gw.url("/upload")).header("content-type", "application/json");
        if let Some(e) = coding {
            r = r.header("content-encoding", e);
        }
        r.body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let plain = doc();
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let deflate = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(plain.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let br = {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(plain.as_bytes()).unwrap();
        }
        out
    };
    let zstd = zstd::encode_all(plain.as_bytes(), 3).unwrap();
    for (coding, body) in [
        ("gzip", gzip.clone()),
        ("x-gzip", gzip.clone()),
        ("deflate", deflate),
        ("br", br),
        ("zstd", zstd),
    ] {
        let got = send(&c, post(Some(coding), body.clone())).await;
        assert_eq!(got.status, 200, "{coding}: {}", got.text());
        let echo = got.json();
        assert_eq!(echo["body"], plain.as_str(), "{coding}");
        assert!(
            echo["headers"].get("content-encoding").is_none(),
            "{coding}"
        );
        // The same stream cut short is the client's error.
        let got = send(&c, post(Some(coding), body[..body.len() / 2].to_vec())).await;
        assert_eq!(got.status, 400, "{coding} cut short: {}", got.text());
    }
    // Unencoded bodies pass as they are.
    let got = send(&c, post(None, plain.clone().into_bytes())).await;
    assert_eq!(got.json()["body"], plain.as_str());

    // A small body that decodes past the limit: 413, and the upstream never gets it whole.
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 4 << 20]).unwrap();
        e.finish().unwrap()
    };
    assert!(bomb.len() < 10_000);
    let got = send(&c, post(Some("gzip"), bomb)).await;
    assert_eq!(got.status, 413, "{}", got.text());
    assert_eq!(got.json()["code"], "payload_too_large");
    // Bytes that are not what the header says, or a stream cut short: 400.
    let got = send(&c, post(Some("gzip"), b"this is not gzip".to_vec())).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert!(
        got.json()["detail"]
            .as_str()
            .unwrap()
            .contains("does not decode")
    );
    // Codings the gateway cannot remove: 415.
    for coding in ["compress", "gzip, br"] {
        let got = send(&c, post(Some(coding), gzip.clone())).await;
        assert_eq!(got.status, 415, "{coding}");
        assert_eq!(got.json()["code"], "unsupported_content_encoding");
    }
}
