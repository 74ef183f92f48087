//! The admin API against its own OpenAPI document: every endpoint's answers (successes and
//! refusals) validate against the schema the document gives for that path, method, status
//! and content type, under both the plain and the `/api/v1` names.

use portico_testkit::*;
use serde_json::{Value, json};

use crate::config;

/// The schema the document gives for an answer, as a validator (its `$ref`s resolve in the
/// whole document).
fn schema_for(
    doc: &Value,
    path: &str,
    method: &str,
    status: u16,
    ctype: &str,
) -> jsonschema::Validator {
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}",
        path.replace('~', "~0").replace('/', "~1")
    );
    let mut response = doc
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("the document has no {method} {path} {status}"))
        .clone();
    if let Some(r) = response["$ref"].as_str() {
        response = doc.pointer(&r[1..]).unwrap().clone();
    }
    let media = ctype.split(';').next().unwrap().trim();
    let schema = response["content"][media]["schema"].clone();
    assert!(
        !schema.is_null(),
        "{method} {path} {status}: the document has no schema for {media}"
    );
    let mut root = doc.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$defs"] = json!({ "answer": schema });
    root["$ref"] = json!("#/$defs/answer");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: schema does not compile: {e}"))
}

/// Calls the endpoint under both names and checks the answer against the document.
async fn check(
    gw: &TestGateway,
    doc: &Value,
    method: &str,
    template: &str,
    url_path: &str,
    body: Option<&str>,
    want: u16,
) -> Value {
    let mut last = Value::Null;
    for prefix in ["", "/api/v1"] {
        let mut b = crate::req(method, &gw.admin_url(&format!("{prefix}{url_path}")));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let got = send(
            &client(false, &[]),
            b.body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or("").to_owned(),
            )))
            .unwrap(),
        )
        .await;
        assert_eq!(
            got.status,
            want,
            "{method} {prefix}{url_path}: {}",
            got.text()
        );
        let ctype = got.header("content-type").unwrap_or("").to_owned();
        let v = schema_for(doc, template, &method.to_ascii_lowercase(), want, &ctype);
        let instance = if ctype.starts_with("text/plain") {
            Value::String(got.text())
        } else {
            got.json()
        };
        let errors: Vec<String> = v
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {prefix}{url_path} {want} does not match the document: {errors:?}\n{instance}"
        );
        last = instance;
    }
    last
}

#[tokio::test]
async fn every_admin_endpoint_answers_as_its_openapi_document_says() {
    let up = echo_server().await;
    let dir = temp_dir("admin-api");
    let gw = gateway_from_file(
        &dir,
        &config(&format!(
            "consumers:\n  - name: billing\n    groups: [internal]\n    api_keys: [\"{}\", \"{}\"]\n    metadata: {{ team: payments }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: quota\n    match: {{ path: {{ prefix: /quota }} }}\n    upstream: u\n    policies:\n      - type: rate_limit\n        key: {{ header: x-api-key }}\n        limits: [{{ requests: 1, per: 1h }}]\n  - name: main\n    upstream: u\n    policies:\n      - {{ type: cache }}\n      - {{ type: rate_limit, key: client_ip, limits: [{{ requests: 1000, per: 1h }}] }}\n",
            portico_auth::apikey::digest_string("key-one"),
            portico_auth::apikey::digest_string("key-two"),
            up.url()
        )),
    )
    .await;
    let doc = get(&gw.admin_url("/api/openapi.json")).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        get(&gw.admin_url("/api/v1/api/openapi.json")).await.json(),
        doc
    );
    // The document is itself valid JSON Schema where it gives schemas: every one compiles.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            for status in op["responses"].as_object().unwrap().keys() {
                let response = &op["responses"][status];
                let response = match response["$ref"].as_str() {
                    Some(r) => doc.pointer(&r[1..]).unwrap(),
                    None => response,
                };
                for ctype in response["content"].as_object().unwrap().keys() {
                    schema_for(&doc, path, method, status.parse().unwrap(), ctype);
                }
            }
        }
    }

    check(&gw, &doc, "GET", "/healthz", "/healthz", None, 200).await;
    check(&gw, &doc, "GET", "/readyz", "/readyz", None, 200).await;
    check(&gw, &doc, "GET", "/metrics", "/metrics", None, 200).await;
    check(&gw, &doc, "GET", "/config", "/config", None, 200).await;
    check(&gw, &doc, "GET", "/upstreams", "/upstreams", None, 200).await;
    let c = check(&gw, &doc, "GET", "/consumers", "/consumers", None, 200).await;
    assert_eq!(
        c["consumers"][0],
        json!({"name": "billing", "groups": ["internal"], "metadata": {"team": "payments"}, "credentials": {"api_keys": 2}})
    );
    assert!(!c.to_string().contains("sha256"), "no digest is shown: {c}");
    // Traffic for the stores and the limits to count: two look-ups of one URL, and a key
    // refused three times after its one request.
    let c = portico_testkit::client(false, &[]);
    for _ in 0..2 {
        let r = portico_testkit::send(
            &c,
            crate::req("GET", &gw.url("/c"))
                .body(crate::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    for want in [200, 429, 429, 429] {
        let r = portico_testkit::send(
            &c,
            crate::req("GET", &gw.url("/quota"))
                .header("x-api-key", "secret-key-value")
                .body(crate::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, want);
    }
    let routes = check(&gw, &doc, "GET", "/routes", "/routes", None, 200).await;
    assert_eq!(routes["routes"][0]["name"], "quota");
    assert_eq!(routes["routes"][0]["match"]["path"]["prefix"], "/quota");
    assert_eq!(routes["routes"][0]["policies"][0]["type"], "rate_limit");
    assert_eq!(routes["routes"][1]["action"]["proxy"][0]["upstream"], "u");
    assert_eq!(
        routes["routes"][1]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["cache", "rate_limit"]
    );
    let caches = check(&gw, &doc, "GET", "/caches", "/caches", None, 200).await;
    let store = &caches["caches"][0];
    assert_eq!(store["routes"], json!(["main"]));
    assert_eq!(
        store["hits"].as_u64().unwrap()
            + store["stale"].as_u64().unwrap()
            + store["misses"].as_u64().unwrap(),
        2,
        "{store}"
    );
    let limits = check(&gw, &doc, "GET", "/rate-limits", "/rate-limits", None, 200).await;
    let quota = &limits["rate_limits"][0];
    assert_eq!(quota["route"], "quota");
    assert_eq!(quota["key"], "header:x-api-key");
    assert_eq!(quota["limits"][0]["requests"], 1);
    assert_eq!(quota["refused"], 3);
    let top = &quota["top_refused"][0];
    assert_eq!(top["refused"], 3);
    assert!(top["key"].as_str().unwrap().starts_with("sha256:"), "{top}");
    assert!(
        !limits.to_string().contains("secret-key-value"),
        "a header key is never shown"
    );
    let main = &limits["rate_limits"][1];
    assert_eq!(
        (main["route"].as_str(), main["key"].as_str()),
        (Some("main"), Some("client_ip"))
    );
    assert_eq!(main["refused"], 0);
    let targets = format!(
        "{{\"targets\": [\"{}\", {{\"url\": \"{}\", \"weight\": 2}}]}}",
        up.url(),
        up.url()
    );
    check(
        &gw,
        &doc,
        "GET",
        "/upstreams/{name}/targets",
        "/upstreams/u/targets",
        None,
        200,
    )
    .await;
    let t = check(
        &gw,
        &doc,
        "PUT",
        "/upstreams/{name}/targets",
        "/upstreams/u/targets",
        Some(&targets),
        200,
    )
    .await;
    assert_eq!(t["targets_from"], "admin_api");
    check(
        &gw,
        &doc,
        "PUT",
        "/upstreams/{name}/targets",
        "/upstreams/u/targets",
        Some("{\"targets\": []}"),
        400,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/upstreams/{name}/targets",
        "/upstreams/nope/targets",
        None,
        404,
    )
    .await;
    check(
        &gw,
        &doc,
        "DELETE",
        "/upstreams/{name}/targets",
        "/upstreams/u/targets",
        None,
        200,
    )
    .await;
    let applied = check(&gw, &doc, "POST", "/reload", "/reload", None, 200).await;
    assert_eq!(applied["result"], "applied");
    check(
        &gw,
        &doc,
        "GET",
        "/config/versions",
        "/config/versions",
        None,
        200,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/config/versions/{generation}",
        "/config/versions/1",
        None,
        200,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/config/versions/{generation}",
        "/config/versions/999",
        None,
        404,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/config/versions/{generation}",
        "/config/versions/x",
        None,
        400,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/config/diff",
        "/config/diff?from=1",
        None,
        200,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/config/diff",
        "/config/diff?from=1&to=999",
        None,
        404,
    )
    .await;
    check(
        &gw,
        &doc,
        "GET",
        "/config/diff",
        "/config/diff?from=z",
        None,
        400,
    )
    .await;
    check(
        &gw,
        &doc,
        "POST",
        "/config/rollback",
        "/config/rollback",
        Some("{\"generation\": 1}"),
        409,
    )
    .await;
    check(
        &gw,
        &doc,
        "POST",
        "/config/rollback",
        "/config/rollback",
        Some("{}"),
        400,
    )
    .await;
    // Config writes on a node that runs from a file: refused unless it may write the file.
    check(
        &gw,
        &doc,
        "PUT",
        "/config",
        "/config",
        Some("routes: []\n"),
        409,
    )
    .await;
    check(
        &gw,
        &doc,
        "POST",
        "/explain",
        "/explain",
        Some("{\"url\": \"/x\"}"),
        200,
    )
    .await;
    check(
        &gw,
        &doc,
        "POST",
        "/explain",
        "/explain",
        Some("not json"),
        400,
    )
    .await;
    check(&gw, &doc, "GET", "/cluster", "/cluster", None, 404).await;
    check(&gw, &doc, "DELETE", "/cache", "/cache?prefix=/a", None, 200).await;
    check(&gw, &doc, "GET", "/openapi", "/openapi", None, 200).await;
    let described = check(
        &gw,
        &doc,
        "GET",
        "/openapi.json",
        "/openapi.json",
        None,
        200,
    )
    .await;
    assert_eq!(described["openapi"], "3.1.0");
    assert!(
        described["paths"]
            .as_object()
            .is_some_and(|p| !p.is_empty()),
        "{described}"
    );
    check(
        &gw,
        &doc,
        "GET",
        "/openapi/{route}",
        "/openapi/nope",
        None,
        404,
    )
    .await;
    // The live view after a known load: exact per gateway, whatever else the process runs.
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    // Unrouted: `main` has no match rules, so a bad path is the way to a 4xx.
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/a%2Fb")).await.status, 400);
    }
    // Counted as each response ends, which can be just after the client has it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let stats = loop {
        gw.gw.sample_live();
        let s = check(&gw, &doc, "GET", "/stats", "/stats?window=60s", None, 200).await;
        if s["total"]["requests"] == 29 || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // With the six requests above for the caches and the limits (three of them refused).
    assert_eq!(stats["total"]["requests"], 29, "{stats}");
    assert_eq!(stats["total"]["client_errors"], 6);
    assert_eq!(stats["routes"]["main"]["requests"], 22);
    assert_eq!(stats["routes"]["quota"]["client_errors"], 3);
    // The same calls by upstream and target: every proxied request but the cached answers
    // and the refused ones (the one upstream has one target).
    let up_stats = &stats["upstreams"]["u"];
    let calls = up_stats["requests"].as_u64().unwrap();
    let hits = caches["caches"][0]["hits"].as_u64().unwrap();
    assert_eq!(calls, 20 + 2 - hits + 1, "{up_stats}");
    assert_eq!(
        up_stats["targets"][up.url()]["requests"],
        calls,
        "{up_stats}"
    );
    assert_eq!(stats["routes"]["main"]["server_errors"], 0);
    assert!(stats["routes"]["main"]["p99_ms"].as_f64().unwrap() > 0.0);
    let per_second: u64 = stats["series"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(per_second, 29);
    // The same requests are in /metrics (which counts every gateway of this process).
    let metrics = get(&gw.admin_url("/metrics")).await.text();
    let counted: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("portico_requests_total{")
                && l.contains("route=\"main\"")
                && l.contains("status=\"200\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(counted >= 20.0, "{counted}");
    check(&gw, &doc, "GET", "/stats", "/stats?window=1h", None, 400).await;
    // A config that does not load: refused with a problem naming the error.
    std::fs::write(
        gw.path.as_ref().unwrap(),
        "routes:\n  - upstream: nowhere\n",
    )
    .unwrap();
    let refused = check(&gw, &doc, "POST", "/reload", "/reload", None, 422).await;
    assert!(refused["detail"].as_str().unwrap().contains("nowhere"));
    // Unknown endpoints and methods are problems too.
    let got = get(&gw.admin_url("/nope")).await;
    assert_eq!(
        (got.status.as_u16(), got.header("content-type")),
        (404, Some("application/problem+json"))
    );
    let got = send(
        &client(false, &[]),
        crate::req("DELETE", &gw.admin_url("/config"))
            .body(crate::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (got.status.as_u16(), got.header("content-type")),
        (405, Some("application/problem+json"))
    );
}
