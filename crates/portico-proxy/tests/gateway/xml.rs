//! The `xml_json` policy against real upstreams that speak XML (or JSON to XML clients).

use http_body_util::Full;
use portico_testkit::*;
use serde_json::json;

use crate::{config, req};

/// Answers `GET /doc` with an XML document, `GET /bad` with broken XML, `GET /xxe` with an
/// entity attack, and any POST with the body it received (and its type in `x-got-type`).
async fn xml_origin() -> Upstream {
    serve(|req| async move {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_owned();
        let got_type = req
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let (xml, got) = match path.as_str() {
            "/doc" => (
                "<?xml version=\"1.0\"?><order id=\"7\"><item>a</item><item>b</item><total currency=\"EUR\">9.50</total></order>".to_string(),
                String::new(),
            ),
            "/bad" => ("<order>\n  <item>a</order>".to_string(), String::new()),
            "/xxe" => (
                "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>".to_string(),
                String::new(),
            ),
            _ => (String::from_utf8_lossy(&body).into_owned(), got_type),
        };
        let mut r = http::Response::new(full(xml));
        r.headers_mut()
            .insert("content-type", "application/xml".parse().unwrap());
        r.headers_mut().insert("x-got-type", got.parse().unwrap());
        r
    })
    .await
}

async fn post(gw: &TestGateway, path: &str, ct: &str, body: &str) -> Got {
    let c = client(false, &[]);
    send(
        &c,
        req("POST", &gw.url(path))
            .header("content-type", ct)
            .body(Full::new(bytes::Bytes::from(body.to_owned())))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn json_clients_talk_to_an_xml_upstream() {
    let up = xml_origin().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  x: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: x\n    policies:\n      - {{ type: xml_json, root: order, namespaces: {{ ext: \"urn:ext\" }} }}\n",
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    // An XML answer becomes JSON.
    let got = send(
        &c,
        req("GET", &gw.url("/doc")).body(crate::empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.json(),
        json!({"order": {"@id": "7", "item": ["a", "b"], "total": {"@currency": "EUR", "#text": "9.50"}}})
    );
    // A HEAD answer has no body to convert: it passes as it is.
    let got = send(
        &c,
        req("HEAD", &gw.url("/doc")).body(crate::empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    // A JSON body goes upstream as XML (the origin sends it straight back, so it comes back
    // as the same JSON).
    let sent = json!({"order": {"@id": "8", "item": ["x", "y"], "ext:note": "hi & bye"}});
    let got = post(&gw, "/echo", "application/json", &sent.to_string()).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.header("x-got-type"),
        Some("application/xml; charset=utf-8")
    );
    // (A prefix is kept only where it tells siblings apart.)
    assert_eq!(
        got.json(),
        json!({"order": {"@id": "8", "item": ["x", "y"], "note": "hi & bye"}})
    );
    // Several top-level keys are wrapped in the configured root.
    let got = post(
        &gw,
        "/echo",
        "application/json",
        r#"{"a": 1, "b": [true, false]}"#,
    )
    .await;
    assert_eq!(
        got.json(),
        json!({"order": {"a": "1", "b": ["true", "false"]}})
    );
    // Bodies of other types pass untouched.
    let got = post(&gw, "/echo", "text/plain", "<p>as it is</p>").await;
    assert_eq!(got.header("x-got-type"), Some("text/plain"));
    // Bad input is the client's error, with the reason; bad XML from the upstream is the
    // upstream's, with the line and column.
    let got = post(&gw, "/echo", "application/json", "{\"a\": ").await;
    assert_eq!(got.status, 400);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["code"], "invalid_json_body");
    let got = post(&gw, "/echo", "application/json", r#"{"bad key": 1}"#).await;
    assert_eq!(got.status, 400);
    assert!(got.json()["detail"].as_str().unwrap().contains("`bad key`"));
    let got = send(
        &c,
        req("GET", &gw.url("/bad")).body(crate::empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(got.json()["code"], "upstream_invalid_xml");
    assert!(
        got.json()["detail"].as_str().unwrap().contains("line 2"),
        "{}",
        got.text()
    );
    let got = send(
        &c,
        req("GET", &gw.url("/xxe")).body(crate::empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 502);
    assert!(got.json()["detail"].as_str().unwrap().contains("DTD"));
    assert!(
        !got.text().contains("root:"),
        "nothing was read from the file system"
    );
}

#[tokio::test]
async fn xml_clients_talk_to_a_json_upstream() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  j: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: j\n    policies:\n      - {{ type: xml_json, request: xml_to_json, response: json_to_xml, root: echo, max_bytes: 4096 }}\n",
        up.url()
    )))
    .await;
    let got = post(
        &gw,
        "/x",
        "text/xml",
        "<order id=\"1\"><item>a</item><item>b</item></order>",
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    // The upstream got JSON (its echo, a JSON object, comes back as XML under `echo`).
    let back = portico_translate::xml::parse(got.body.as_ref(), &Default::default()).unwrap();
    assert_eq!(back.name, "echo");
    let echoed = portico_translate::xml::to_json(&back);
    assert_eq!(
        echoed["echo"]["body"],
        json!({"order": {"@id": "1", "item": ["a", "b"]}}).to_string()
    );
    assert_eq!(
        echoed["echo"]["headers"]["content-type"],
        "application/json"
    );
    // Entity attacks and oversized documents are refused before anything goes upstream.
    let hits = up.hits();
    let laughs = "<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><l>&b;</l>";
    let got = post(&gw, "/x", "application/xml", laughs).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["code"], "invalid_xml_body");
    let big = format!("<a>{}</a>", "x".repeat(5000));
    let got = post(&gw, "/x", "application/xml", &big).await;
    assert_eq!(got.status, 413);
    let deep = "<a>".repeat(100) + &"</a>".repeat(100);
    let got = post(&gw, "/x", "application/xml", &deep).await;
    assert_eq!(got.status, 400);
    assert!(got.json()["detail"].as_str().unwrap().contains("deeper"));
    assert_eq!(up.hits(), hits);
}

fn with_attributes(n: usize) -> String {
    let mut s = String::from("<r");
    for i in 0..n {
        s.push_str(&format!(" a{i}=\"{i}\""));
    }
    s + "/>"
}

/// Elements with more attributes than `max_attributes` are refused both ways; bodies larger
/// than the size converted on a blocking thread convert as small ones do.
#[tokio::test]
async fn attribute_limit_and_large_bodies() {
    let up = serve(|req| async move {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let xml = match path.as_str() {
            "/out/many" => with_attributes(11),
            "/out/ten" => with_attributes(10),
            // About 200 KiB: past the 64 KiB converted on the runtime thread.
            "/out/large" => format!("<r>{}</r>", "<i>x</i>".repeat(25_000)),
            _ => String::from_utf8_lossy(&body).into_owned(),
        };
        let mut r = http::Response::new(full(xml));
        r.headers_mut()
            .insert("content-type", "application/xml".parse().unwrap());
        r
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  x: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: x\n    policies:\n      - {{ type: xml_json, request: xml_to_json, response: none, max_attributes: 10 }}\n  - match: {{ path: {{ prefix: /out }} }}\n    upstream: x\n    policies:\n      - {{ type: xml_json, request: none, max_attributes: 10 }}\n",
        up.url()
    )))
    .await;
    let hits = up.hits();
    let got = post(&gw, "/in", "application/xml", &with_attributes(11)).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["code"], "invalid_xml_body");
    let detail = got.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("more than 10 attributes"), "{detail}");
    assert_eq!(up.hits(), hits, "nothing went upstream");
    let got = post(&gw, "/in", "application/xml", &with_attributes(10)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["r"]["@a9"], "9");
    // Duplicates are not well-formed XML.
    let got = post(&gw, "/in", "application/xml", "<r a=\"1\" a=\"2\"/>").await;
    assert_eq!(got.status, 400);
    assert!(got.json()["detail"].as_str().unwrap().contains("`a` twice"));
    // A large request body converts (the upstream echoes the JSON it got, as XML).
    let large = format!("<r>{}</r>", "<i>x</i>".repeat(25_000));
    let got = post(&gw, "/in", "application/xml", &large).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["r"]["i"].as_array().unwrap().len(), 25_000);

    let c = client(false, &[]);
    let get = |path: &'static str| {
        let c = c.clone();
        let url = gw.url(path);
        async move { send(&c, req("GET", &url).body(crate::empty()).unwrap()).await }
    };
    let got = get("/out/many").await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["code"], "upstream_invalid_xml");
    let detail = got.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("more than 10 attributes"), "{detail}");
    let got = get("/out/ten").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["r"]["@a0"], "0");
    let got = get("/out/large").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["r"]["i"].as_array().unwrap().len(), 25_000);
}
