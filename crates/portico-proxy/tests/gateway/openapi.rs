//! `apis`: a gateway serving the operations of an OpenAPI document.

use portico_testkit::*;

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::{SECRET, claims, config, empty, mint, req};

fn petstore() -> String {
    openapi_dir().join("petstore.yaml").display().to_string()
}

#[tokio::test]
async fn openapi_operations_proxy_and_others_get_404() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  pets: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: pets\n",
        up.url(),
        petstore()
    )))
    .await;
    let got = get(&gw.url("/v1/pets?limit=2")).await;
    assert_eq!(got.status, 200);
    let seen = got.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["uri"], "/v1/pets?limit=2");

    let got = send(
        &client(false, &[]),
        req("DELETE", &gw.url("/v1/pets/7")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/v1/pets/7");

    // A method the document has no operation for, a path it does not have, and a path
    // outside the base path: no route.
    let got = send(
        &client(false, &[]),
        req("PUT", &gw.url("/v1/pets/7")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(get(&gw.url("/v1/owners")).await.status, 404);
    assert_eq!(get(&gw.url("/pets")).await.status, 404);
}

#[tokio::test]
async fn openapi_base_path_is_stripped_on_the_way_up() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  pets: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: pets\n    strip_base_path: true\n",
        up.url(),
        openapi_dir().join("petstore.json").display()
    )))
    .await;
    let got = get(&gw.url("/v1/pets/12")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["path"], "/pets/12");
}

const DOC: &str = "openapi: 3.1.0
paths:
  /pets:
    get: { operationId: listPets }
";

#[tokio::test]
async fn openapi_reload_rejects_a_broken_document_and_keeps_serving() {
    let up = echo_server().await;
    let dir = temp_dir("openapi-reload");
    std::fs::write(dir.join("pets.yaml"), DOC).unwrap();
    let gw = gateway_from_file(
        &dir,
        &config(&format!(
            "upstreams:\n  pets: {{ targets: [\"{}\"] }}\napis:\n  - openapi: pets.yaml\n    upstream: pets\n",
            up.url()
        )),
    )
    .await;
    assert_eq!(get(&gw.url("/pets")).await.status, 200);
    assert_eq!(get(&gw.url("/toys")).await.status, 404);

    // Only the document changes; a reload reads it again.
    std::fs::write(
        dir.join("pets.yaml"),
        format!("{DOC}  /toys:\n    get: {{ operationId: listToys }}\n"),
    )
    .unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&gw.url("/toys")).await.status, 200);

    // A reference to nothing: the reload fails with the document's line and column.
    std::fs::write(
        dir.join("pets.yaml"),
        format!("{DOC}  /toys:\n    get: {{ $ref: '#/components/nothing' }}\n"),
    )
    .unwrap();
    let err = gw.gw.reload_file().await.unwrap_err();
    assert!(
        matches!(err, portico_proxy::GatewayError::Config(_)),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(
        err.contains("pets.yaml:6:18: error: unresolved $ref `#/components/nothing`"),
        "{err}"
    );
    assert_eq!(get(&gw.url("/pets")).await.status, 200);
    assert_eq!(get(&gw.url("/toys")).await.status, 200);
}

#[tokio::test]
async fn openapi_mocks_answer_without_an_upstream() {
    // The upstream is a closed port: only the mocked operations can answer.
    let gw = gateway(&config(&format!(
        "upstreams:\n  dead: {{ targets: [\"http://127.0.0.1:9\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: dead\n    operations:\n      showPetById: {{ mock: true }}\n      createPets: {{ mock: {{ status: 201, example: created }} }}\n",
        petstore()
    )))
    .await;
    let got = get(&gw.url("/v1/pets/1")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(
        got.json(),
        serde_json::json!({"id": 1, "name": "Rex", "tag": "dog"})
    );
    let got = send(
        &client(false, &[]),
        req("POST", &gw.url("/v1/pets")).body(empty()).unwrap(),
    )
    .await;
    assert_eq!(got.status, 201);
    assert_eq!(got.json(), serde_json::json!({"id": 2, "name": "Tom"}));
    assert_eq!(get(&gw.url("/v1/pets")).await.status, 502);
}

/// A gateway serving `secured.yaml`, whose OAuth2 scheme is checked as HS256 JWTs from
/// `https://idp.test`, with one consumer holding an API key.
async fn secured_gateway(up: &Upstream) -> TestGateway {
    let key = portico_auth::apikey::digest_string("ann-key-1");
    gateway(&config(&format!(
        "upstreams:\n  pets: {{ targets: [\"{}\"] }}\nconsumers:\n  - {{ name: ann, api_keys: [\"{key}\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: pets\n    security:\n      petsAuth:\n        type: jwt\n        issuers: [{{ issuer: https://idp.test, algorithms: [HS256], keys: [{{ secret: \"{SECRET}\" }}] }}]\n",
        up.url(),
        openapi_dir().join("secured.yaml").display()
    )))
    .await
}

async fn call(gw: &TestGateway, method: &str, path: &str, header: Option<(&str, &str)>) -> Got {
    let mut b = req(method, &gw.url(path));
    if let Some((k, v)) = header {
        b = b.header(k, v);
    }
    send(&client(false, &[]), b.body(empty()).unwrap()).await
}

#[tokio::test]
async fn openapi_api_key_scheme_needs_a_consumers_key() {
    let up = echo_server().await;
    let gw = secured_gateway(&up).await;
    let got = call(&gw, "GET", "/v1/pets", None).await;
    assert_eq!(got.status, 401, "{}", got.text());
    let got = call(&gw, "GET", "/v1/pets", Some(("x-pets-key", "wrong-key"))).await;
    assert_eq!(got.status, 401);
    // The header named by the document, not the policy's default `X-API-Key`.
    let got = call(&gw, "GET", "/v1/pets", Some(("x-api-key", "ann-key-1"))).await;
    assert_eq!(got.status, 401);
    let got = call(&gw, "GET", "/v1/pets", Some(("x-pets-key", "ann-key-1"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["headers"]["x-consumer-name"], "ann");
    // `security: []` asks for nothing.
    assert_eq!(call(&gw, "GET", "/v1/health", None).await.status, 200);
}

#[tokio::test]
async fn openapi_oauth2_scheme_needs_a_token_with_its_scope() {
    let up = echo_server().await;
    let gw = secured_gateway(&up).await;
    let token = |scope: &str| {
        let t = mint(
            Algorithm::HS256,
            SECRET,
            None,
            claims(json!({ "scope": scope })),
        );
        format!("Bearer {t}")
    };
    let got = call(&gw, "DELETE", "/v1/pets/7", None).await;
    assert_eq!(got.status, 401, "{}", got.text());
    // The operation's own `security` replaces the document's: an API key is not enough.
    let got = call(
        &gw,
        "DELETE",
        "/v1/pets/7",
        Some(("x-pets-key", "ann-key-1")),
    )
    .await;
    assert_eq!(got.status, 401);
    let got = call(
        &gw,
        "DELETE",
        "/v1/pets/7",
        Some(("authorization", &token("pets:read"))),
    )
    .await;
    assert_eq!(got.status, 403, "{}", got.text());
    let got = call(
        &gw,
        "DELETE",
        "/v1/pets/7",
        Some(("authorization", &token("pets:read pets:write"))),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["path"], "/v1/pets/7");
}

/// The file watcher follows the documents a config reads, in their own folders too: changing
/// only a document reloads, and a document a reload adds is followed from then on.
#[tokio::test]
async fn openapi_a_changed_document_alone_reloads() {
    use std::time::Duration;
    async fn answers(url: &str, want: u16) -> bool {
        for _ in 0..100 {
            if get(url).await.status == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
    let up = echo_server().await;
    let dir = temp_dir("openapi-watch");
    std::fs::create_dir_all(dir.join("specs")).unwrap();
    std::fs::write(dir.join("specs/pets.yaml"), DOC).unwrap();
    let text = |docs: &[&str]| {
        let mut apis = String::new();
        for d in docs {
            apis.push_str(&format!("  - openapi: {d}\n    upstream: pets\n"));
        }
        config(&format!(
            "upstreams:\n  pets: {{ targets: [\"{}\"] }}\napis:\n{apis}",
            up.url()
        ))
    };
    let gw = gateway_from_file(&dir, &text(&["specs/pets.yaml"])).await;
    gw.gw.watch_file().unwrap();
    assert_eq!(get(&gw.url("/toys")).await.status, 404);

    // Only the document, in a folder of its own, changes.
    std::fs::write(
        dir.join("specs/pets.yaml"),
        format!("{DOC}  /toys:\n    get: {{ operationId: listToys }}\n"),
    )
    .unwrap();
    assert!(
        answers(&gw.url("/toys"), 200).await,
        "the document's change was not followed"
    );

    // The config names a second document; then only that one changes.
    std::fs::write(
        dir.join("more.yaml"),
        "openapi: 3.0.3\npaths:\n  /owners:\n    get: { operationId: listOwners }\n",
    )
    .unwrap();
    let tmp = dir.join(".portico.yaml.tmp");
    std::fs::write(&tmp, text(&["specs/pets.yaml", "more.yaml"])).unwrap();
    std::fs::rename(&tmp, gw.path.as_ref().unwrap()).unwrap();
    assert!(answers(&gw.url("/owners"), 200).await);
    std::fs::write(
        dir.join("more.yaml"),
        "openapi: 3.0.3\npaths:\n  /owners:\n    get: { operationId: listOwners }\n  /vets:\n    get: { operationId: listVets }\n",
    )
    .unwrap();
    assert!(
        answers(&gw.url("/vets"), 200).await,
        "the added document was not followed"
    );

    // A document in a folder not yet followed, added by a reload the watcher did not start
    // (SIGHUP, the admin API): followed from that reload on.
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    std::fs::write(
        dir.join("extra/zoo.yaml"),
        "openapi: 3.0.3\npaths:\n  /zoo:\n    get: { operationId: listZoo }\n",
    )
    .unwrap();
    std::fs::write(
        gw.path.as_ref().unwrap(),
        text(&["specs/pets.yaml", "more.yaml", "extra/zoo.yaml"]),
    )
    .unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&gw.url("/zoo")).await.status, 200);
    // Let the watcher take in the reload (and the config's own write) before the change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        dir.join("extra/zoo.yaml"),
        "openapi: 3.0.3\npaths:\n  /zoo:\n    get: { operationId: listZoo }\n  /keepers:\n    get: { operationId: listKeepers }\n",
    )
    .unwrap();
    assert!(
        answers(&gw.url("/keepers"), 200).await,
        "a document added by another reload was not followed"
    );
}

fn orders(up: &str, extra: &str) -> String {
    let key = portico_auth::apikey::digest_string("k-ann");
    config(&format!(
        "upstreams:\n  orders: {{ targets: [\"{up}\"] }}\nconsumers:\n  - {{ name: ann, api_keys: [\"{key}\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: orders\n{extra}",
        openapi_dir().join("orders.yaml").display()
    ))
}

fn post_json(url: &str, body: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    req("POST", url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap()
}

/// The `(in, pointer, keyword)` of each failure a refusal lists.
fn failures(got: &Got) -> Vec<(String, String, String)> {
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    got.json()["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {}", got.text()))
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("in"), s("pointer"), s("keyword"))
        })
        .collect()
}

fn f(i: &str, p: &str, k: &str) -> (String, String, String) {
    (i.into(), p.into(), k.into())
}

const GOOD: &str =
    r#"{"customer": "ada@example.com", "note": null, "items": [{"sku": "ABC-12", "qty": 2}]}"#;

#[tokio::test]
async fn openapi_requests_that_break_the_contract_never_reach_the_upstream() {
    let up = echo_server().await;
    let gw = gateway(&orders(&up.url(), "")).await;
    for h2 in [false, true] {
        let c = client(h2, &[]);
        // A valid body goes up as sent.
        let got = send(&c, post_json(&gw.url("/orders"), GOOD)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["body"], GOOD);
        let before = up.hits();

        // Every failure at once, each with its pointer and rule.
        let got = send(
            &c,
            post_json(
                &gw.url("/orders"),
                r#"{"customer": "not-an-address", "items": [{"sku": "abc", "qty": 0}, {"qty": 1}], "extra": true}"#,
            ),
        )
        .await;
        assert_eq!(got.status, 400, "{}", got.text());
        assert_eq!(got.json()["code"], "request_invalid");
        assert_eq!(
            failures(&got),
            [
                f("body", "/customer", "format"),
                f("body", "/items/0/sku", "pattern"),
                f("body", "/items/0/qty", "minimum"),
                f("body", "/items/1", "required"),
                f("body", "/extra", "additionalProperties"),
            ]
        );
        // Not JSON; no body though one is required; a media type the operation does not take.
        let got = send(&c, post_json(&gw.url("/orders"), "{\"customer\": ")).await;
        assert_eq!(failures(&got), [f("body", "", "json")]);
        let got = send(&c, req("POST", &gw.url("/orders")).body(empty()).unwrap()).await;
        assert_eq!(got.status, 400);
        assert_eq!(failures(&got), [f("body", "", "required")]);
        let got = send(
            &c,
            req("POST", &gw.url("/orders"))
                .header("content-type", "text/plain")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"hello",
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 415);
        assert_eq!(got.json()["code"], "unsupported_media_type");
        // Parameters: the path, the query (an array not exploded) and a header.
        let got = send(
            &c,
            req("POST", &gw.url("/orders"))
                .header("content-type", "application/json")
                .header("x-request-priority", "12")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    GOOD.as_bytes(),
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(failures(&got), [f("header", "", "maximum")]);
        assert_eq!(got.json()["errors"][0]["name"], "X-Request-Priority");
        assert_eq!(get(&gw.url("/orders/3000000000")).await.status, 400);
        assert_eq!(get(&gw.url("/orders/7")).await.status, 200);
        let got = get(&gw.url("/orders?limit=0&status=open,lost")).await;
        assert_eq!(
            failures(&got),
            [f("query", "", "minimum"), f("query", "/1", "enum")]
        );
        assert_eq!(
            get(&gw.url("/orders?limit=5&status=open,shipped"))
                .await
                .status,
            200
        );
        assert_eq!(
            up.hits(),
            before + 2,
            "a refused request reached the upstream"
        );
    }
}

#[tokio::test]
async fn openapi_authentication_comes_before_validation() {
    let up = echo_server().await;
    let gw = gateway(&orders(&up.url(), "")).await;
    let c = client(false, &[]);
    let put = |key: Option<&str>, body: &str| {
        let mut r = req("PUT", &gw.url("/orders/7")).header("content-type", "application/json");
        if let Some(k) = key {
            r = r.header("x-orders-key", k);
        }
        r.body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap()
    };
    // Without credentials a broken body is not even looked at: the schema stays private.
    let got = send(&c, put(None, "{}")).await;
    assert_eq!(got.status, 401, "{}", got.text());
    assert!(got.json().get("errors").is_none());
    let got = send(&c, put(Some("k-ann"), "{}")).await;
    assert_eq!(got.status, 400);
    assert_eq!(
        failures(&got),
        [f("body", "", "required"), f("body", "", "required")]
    );
    assert_eq!(send(&c, put(Some("k-ann"), GOOD)).await.status, 200);
}

#[tokio::test]
async fn openapi_validation_can_be_turned_off_and_bounded() {
    let up = echo_server().await;
    let gw = gateway(&orders(
        &up.url(),
        "    validation_limits: { max_body_bytes: 300, max_errors: 2 }\n    operations:\n      listOrders: { validate_requests: false }\n",
    ))
    .await;
    let c = client(false, &[]);
    // Off for one operation only.
    assert_eq!(get(&gw.url("/orders?limit=0")).await.status, 200);
    assert_eq!(get(&gw.url("/orders/x")).await.status, 400);
    // At most two failures listed.
    let got = send(
        &c,
        post_json(
            &gw.url("/imports"),
            r#"[{"customer": 1}, {"customer": 2}, {"customer": 3}]"#,
        ),
    )
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(failures(&got).len(), 2);
    // A body over the limit is refused whole.
    let big = format!(
        r#"[{{"customer": "a@b.c", "note": "{}", "items": [{{"sku": "ABC-1", "qty": 1}}]}}]"#,
        "x".repeat(400)
    );
    let got = send(&c, post_json(&gw.url("/imports"), &big)).await;
    assert_eq!(got.status, 413, "{}", got.text());
    // Not required and not sent: nothing to check.
    assert_eq!(
        send(&c, req("POST", &gw.url("/imports")).body(empty()).unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn openapi_mocked_operations_check_requests_too() {
    let gw = gateway(&orders(
        "http://127.0.0.1:9",
        "    operations:\n      createOrder: { mock: true }\n",
    ))
    .await;
    let c = client(false, &[]);
    let got = send(&c, post_json(&gw.url("/orders"), r#"{"items": []}"#)).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(
        failures(&got),
        [f("body", "", "required"), f("body", "/items", "minItems")]
    );
    let got = send(&c, post_json(&gw.url("/orders"), GOOD)).await;
    assert_eq!(got.status, 201, "{}", got.text());
    assert_eq!(got.json()["id"], 1);

    // With `request_decompression`, a compressed body is checked as the upstream would get it.
    let gw = gateway(&orders(
        "http://127.0.0.1:9",
        "    policies: [{ type: request_decompression }]\n    operations:\n      createOrder: { mock: true }\n",
    ))
    .await;
    let gzip = |text: &str| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let post_gzip = |text: &str| {
        req("POST", &gw.url("/orders"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(http_body_util::Full::new(bytes::Bytes::from(gzip(text))))
            .unwrap()
    };
    let got = send(&c, post_gzip(GOOD)).await;
    assert_eq!(got.status, 201, "{}", got.text());
    let got = send(&c, post_gzip(r#"{"items": []}"#)).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(
        failures(&got),
        [f("body", "", "required"), f("body", "/items", "minItems")]
    );
}

fn counted(m: &str, route: &str, kind: &str) -> f64 {
    m.lines()
        .filter(|l| {
            l.starts_with("portico_contract_violations_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn openapi_answers_that_drift_from_the_contract_are_counted_or_refused() {
    let up = echo_server().await;
    let doc = openapi_dir().join("drift.yaml").display().to_string();
    // Counted and logged, passed on.
    let gw = gateway(&config(&format!(
        "upstreams:\n  echo: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: echo\n    name_prefix: watch_\n    check_responses: true\n",
        up.url()
    )))
    .await;
    for path in [
        "/echo/good",
        "/echo/bad-body",
        "/echo/bad-status",
        "/echo/bad-type",
    ] {
        let got = get(&gw.url(path)).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        assert_eq!(got.json()["path"], path);
    }
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(counted(&m, "watch_good", "body"), 0.0, "{m}");
    assert_eq!(counted(&m, "watch_badBody", "body"), 1.0, "{m}");
    assert_eq!(counted(&m, "watch_badStatus", "status"), 1.0, "{m}");
    assert_eq!(counted(&m, "watch_badType", "content_type"), 1.0, "{m}");
    // The last violations, newest first, on the admin API, and one route's in `explain`.
    let v = get(&gw.admin_url("/contract/violations")).await.json();
    let list = v["violations"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = list
        .iter()
        .map(|x| (x["route"].as_str().unwrap(), x["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("watch_badType", "content_type"),
            ("watch_badStatus", "status"),
            ("watch_badBody", "body")
        ]
    );
    let body = &list[2];
    assert_eq!(body["path"], "/echo/bad-body");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["enforced"], false);
    assert_eq!(body["failures"][0]["keyword"], "required");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let one = get(&gw.admin_url("/contract/violations?route=watch_badStatus&limit=5"))
        .await
        .json();
    assert_eq!(one["violations"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&gw.admin_url("/contract/violations?limit=0"))
            .await
            .status,
        400
    );
    let c = client(false, &[]);
    let explained = send(
        &c,
        req("POST", &gw.admin_url("/explain"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"url": "/echo/bad-body"}"#,
            )))
            .unwrap(),
    )
    .await
    .json();
    let contract = &explained["contract"];
    assert_eq!(
        contract["operation"]["pointer"],
        "#/paths/~1echo~1bad-body/get"
    );
    assert_eq!(contract["check_responses"]["enforce"], false);
    assert_eq!(contract["recent_violations"][0]["kind"], "body");

    // Enforced for one operation: its broken answer becomes a 502 naming each failure.
    let gw = gateway(&config(&format!(
        "upstreams:\n  echo: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: echo\n    name_prefix: enforce_\n    check_responses: {{ enforce: true }}\n    operations:\n      badStatus: {{ check_responses: false }}\n",
        up.url()
    )))
    .await;
    assert_eq!(get(&gw.url("/echo/good")).await.status, 200);
    let got = get(&gw.url("/echo/bad-body")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["code"], "upstream_contract_violation");
    assert_eq!(
        failures(&got),
        [
            f("response", "", "required"),
            f("response", "/method", "type")
        ]
    );
    // Not checked for that operation.
    assert_eq!(get(&gw.url("/echo/bad-status")).await.status, 200);
    // A sample of none checks nothing.
    let gw = gateway(&config(&format!(
        "upstreams:\n  echo: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: echo\n    name_prefix: none_\n    check_responses: {{ enforce: true, sample: 0 }}\n",
        up.url()
    )))
    .await;
    assert_eq!(get(&gw.url("/echo/bad-body")).await.status, 200);
}

#[tokio::test]
async fn openapi_an_apis_rate_limit_is_one_budget_for_all_its_operations() {
    let up = echo_server().await;
    let gw = gateway(&orders(
        &up.url(),
        "    policies:\n      - { type: rate_limit, key: client_ip, limits: [{ requests: 3, per: 60s }] }\n    operations:\n      listOrders:\n        policies:\n          - { type: rate_limit, key: client_ip, limits: [{ requests: 1, per: 60s }] }\n",
    ))
    .await;
    // The API's budget of 3 is spent across operations, not 3 for each.
    assert_eq!(get(&gw.url("/orders/1")).await.status, 200);
    assert_eq!(get(&gw.url("/orders/2")).await.status, 200);
    // The operation's own limit is its own: one for listOrders.
    assert_eq!(get(&gw.url("/orders")).await.status, 200);
    let got = get(&gw.url("/orders/3")).await;
    assert_eq!(got.status, 429, "{}", got.text());
    let got = get(&gw.url("/orders")).await;
    assert_eq!(got.status, 429, "{}", got.text());
}

/// An API's budget is named by the API, not by where its policy is written: a reload that
/// moves the lines keeps what was spent.
#[tokio::test]
async fn openapi_an_apis_budget_outlives_a_reload_that_moves_it() {
    let up = echo_server().await;
    let dir = temp_dir("openapi-budget");
    let text = orders(
        &up.url(),
        "    policies:\n      - { type: rate_limit, key: client_ip, limits: [{ requests: 3, per: 60s }] }\n",
    );
    let gw = gateway_from_file(&dir, &text).await;
    assert_eq!(get(&gw.url("/orders/1")).await.status, 200);
    assert_eq!(get(&gw.url("/orders/2")).await.status, 200);
    // Three lines more above it, and a key written in another order.
    let moved = format!("# budgets\n#\n#\n{text}").replace(
        "{ type: rate_limit, key: client_ip,",
        "{ key: client_ip, type: rate_limit,",
    );
    std::fs::write(gw.path.as_ref().unwrap(), moved).unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&gw.url("/orders/3")).await.status, 200);
    let got = get(&gw.url("/orders/4")).await;
    assert_eq!(got.status, 429, "the budget started again: {}", got.text());
}

/// `portico-testkit/openapi/split`, served over HTTP: the document and every file its `$ref`s
/// name are fetched when the config loads, and bodies are checked against schemas from them.
/// (Loading blocks its thread, so the file server needs another one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_a_document_by_url_brings_the_files_it_refers_to() {
    let files = serve(|req| async move {
        let name = req.uri().path().trim_start_matches('/').to_owned();
        match std::fs::read(openapi_dir().join("split").join(&name)) {
            Ok(b) if !name.contains("..") => http::Response::new(full(b)),
            _ => {
                let mut r = http::Response::new(full("no such file"));
                *r.status_mut() = http::StatusCode::NOT_FOUND;
                r
            }
        }
    })
    .await;
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  shop: {{ targets: [\"{}\"] }}\napis:\n  - {{ name: shop, openapi: \"{}/openapi.yaml\", upstream: shop }}\n",
        up.url(),
        files.url()
    )))
    .await;
    assert_eq!(
        files.hits(),
        6,
        "the document and the five files it names, once each"
    );
    let c = client(false, &[]);
    let good = r#"{"id": "o-1", "lines": [{"sku": "a", "qty": 1}], "customer": {"name": "ann", "referredBy": {"name": "bo"}}}"#;
    let got = send(&c, post_json(&gw.url("/shop/orders"), good)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Rules from order.yaml, its `$defs`, and customer.yaml reached through itself.
    let bad = r#"{"id": "x", "lines": [{"sku": "a", "qty": 0}], "customer": {"name": "ann", "referredBy": {"name": ""}}}"#;
    let got = send(&c, post_json(&gw.url("/shop/orders"), bad)).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(
        failures(&got),
        [
            f("body", "/id", "pattern"),
            f("body", "/lines/0/qty", "minimum"),
            f("body", "/customer/referredBy/name", "minLength"),
        ]
    );
    // The path parameter from parameters.yaml, its schema a pointer into order.yaml.
    assert_eq!(get(&gw.url("/shop/orders/o-7")).await.status, 200);
    let got = get(&gw.url("/shop/orders/7")).await;
    assert_eq!(failures(&got), [f("path", "", "pattern")]);
    assert_eq!(got.json()["errors"][0]["name"], "id");

    // A file a reference names that the server does not have: a config error at the reference.
    let text = format!(
        "upstreams:\n  u: {{ targets: [\"http://127.0.0.1:9\"] }}\napis:\n  - {{ openapi: \"{}/paths/orders.yaml\", upstream: u }}\n",
        files.url()
    );
    let err = portico_config::load_str("t.yaml", &text, std::path::Path::new("."), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no `openapi` version"), "{err}");
}

/// A file that a document's `$ref` names is followed like the document: changing it alone
/// reloads the routes' checks.
#[tokio::test]
async fn openapi_a_changed_referred_file_alone_reloads() {
    use std::time::Duration;
    let up = echo_server().await;
    let dir = temp_dir("openapi-split-watch");
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::write(
        dir.join("api.yaml"),
        "openapi: 3.1.0\npaths:\n  /notes:\n    post:\n      operationId: addNote\n      requestBody:\n        content:\n          application/json:\n            schema: { $ref: schemas/note.yaml }\n",
    )
    .unwrap();
    let note = |max: u32| {
        format!("type: object\nproperties:\n  text: {{ type: string, maxLength: {max} }}\n")
    };
    std::fs::write(dir.join("schemas/note.yaml"), note(3)).unwrap();
    let gw = gateway_from_file(
        &dir,
        &config(&format!(
            "upstreams:\n  u: {{ targets: [\"{}\"] }}\napis:\n  - {{ openapi: api.yaml, upstream: u }}\n",
            up.url()
        )),
    )
    .await;
    gw.gw.watch_file().unwrap();
    let c = client(false, &[]);
    let body = r#"{"text": "hello"}"#;
    assert_eq!(
        send(&c, post_json(&gw.url("/notes"), body)).await.status,
        400
    );
    std::fs::write(dir.join("schemas/note.yaml"), note(10)).unwrap();
    let mut status = http::StatusCode::OK;
    for _ in 0..100 {
        status = send(&c, post_json(&gw.url("/notes"), body)).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the schema file's change was not followed");
    // A broken schema file is refused and the running config keeps serving.
    std::fs::write(dir.join("schemas/note.yaml"), "type: [object\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        send(&c, post_json(&gw.url("/notes"), body)).await.status,
        200
    );
    let long = r#"{"text": "far too long a note"}"#;
    assert_eq!(
        send(&c, post_json(&gw.url("/notes"), long)).await.status,
        400
    );
}

/// A form body is checked field by field against its schema and goes upstream as sent.
#[tokio::test]
async fn openapi_form_bodies_are_checked_against_their_schema() {
    let up = echo_server().await;
    let dir = temp_dir("openapi-form");
    std::fs::write(
        dir.join("form.yaml"),
        "openapi: 3.1.0\npaths:\n  /signup:\n    post:\n      operationId: signUp\n      requestBody:\n        content:\n          application/x-www-form-urlencoded:\n            schema:\n              type: object\n              required: [email]\n              properties:\n                email: { type: string, format: email }\n                age: { type: integer, minimum: 18 }\n                tags: { type: array, items: { type: string, maxLength: 3 } }\n            encoding:\n              tags: { style: pipeDelimited }\n",
    )
    .unwrap();
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: u\n",
        up.url(),
        dir.join("form.yaml").display()
    )))
    .await;
    let post = |body: &'static str| {
        req("POST", &gw.url("/signup"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                body.as_bytes(),
            )))
            .unwrap()
    };
    let c = client(false, &[]);
    let got = send(&c, post("email=ada%40example.com&age=36&tags=a|bb")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json()["body"],
        "email=ada%40example.com&age=36&tags=a|bb"
    );
    let before = up.hits();
    let got = send(&c, post("email=nobody&age=12&tags=a|long")).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(
        failures(&got),
        [
            f("body", "/tags/1", "maxLength"),
            f("body", "/email", "format"),
            f("body", "/age", "minimum")
        ]
    );
    // A styled field written twice: its second copy would reach the upstream unread.
    let got = send(&c, post("email=ada%40example.com&tags=a&tags=b")).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(failures(&got), [f("body", "/tags", "style")]);
    assert_eq!(up.hits(), before, "a refused form reached the upstream");
}

/// A multipart body is checked part by part against its schema and goes upstream as sent.
#[tokio::test]
async fn openapi_multipart_bodies_are_checked_against_their_schema() {
    let up = echo_server().await;
    let dir = temp_dir("openapi-multipart");
    std::fs::write(
        dir.join("upload.yaml"),
        "openapi: 3.1.0\npaths:\n  /upload:\n    post:\n      operationId: upload\n      requestBody:\n        content:\n          multipart/form-data:\n            schema:\n              type: object\n              required: [title, file]\n              properties:\n                title: { type: string, maxLength: 20 }\n                meta:\n                  type: object\n                  required: [owner]\n                  properties: { owner: { type: string } }\n                file: { type: string, contentMediaType: image/png }\n            encoding:\n              file:\n                headers:\n                  X-Checksum: { required: true, schema: { type: string, pattern: '^[0-9a-f]{4}$' } }\n",
    )
    .unwrap();
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{}\"\n    upstream: u\n",
        up.url(),
        dir.join("upload.yaml").display()
    )))
    .await;
    let with = |title: &str, meta: &str, checksum: &str| {
        format!(
            "--b0undary\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n{title}\r\n\
             --b0undary\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n{meta}\r\n\
             --b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
             Content-Type: image/png{checksum}\r\n\r\nPNG\r\n--b0undary--\r\n"
        )
    };
    let body = |title: &str, meta: &str| with(title, meta, "\r\nX-Checksum: 00ff");
    let post = |body: String| {
        req("POST", &gw.url("/upload"))
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let c = client(false, &[]);
    let good = body("holiday", r#"{"owner":"ada"}"#);
    let got = send(&c, post(good.clone())).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json()["body"],
        good.as_str(),
        "the body was not sent as it came"
    );
    let before = up.hits();
    let got = send(&c, post(body("a title far longer than twenty", "{}"))).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(
        failures(&got),
        [
            f("body", "/title", "maxLength"),
            f("body", "/meta", "required")
        ]
    );
    // The file part's own header, as its encoding describes it: missing, then malformed.
    let got = send(&c, post(with("holiday", "{\"owner\":\"ada\"}", ""))).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(failures(&got), [f("body", "/file", "required")]);
    let got = send(
        &c,
        post(with("holiday", "{\"owner\":\"ada\"}", "\r\nX-Checksum: zz")),
    )
    .await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(failures(&got), [f("body", "/file", "pattern")]);
    let got = send(&c, post("not multipart".into())).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(failures(&got), [f("body", "", "multipart")]);
    assert_eq!(up.hits(), before, "a refused upload reached the upstream");
}

/// An upstream answering every request with the JSON text of its path (after the first `/`),
/// streamed in two chunks without a length: `/echo/good` answers `{"method":"GET","path":…}`
/// split in the middle.
async fn streaming_json_upstream() -> Upstream {
    serve(|req| async move {
        let path = req.uri().path().to_owned();
        let text = match path.as_str() {
            "/echo/good" | "/echo/huge" => {
                let pad = if path == "/echo/huge" {
                    "x".repeat(3000)
                } else {
                    String::new()
                };
                format!(r#"{{"method":"GET","path":"{path}","pad":"{pad}"}}"#)
            }
            _ => r#"{"method":"GET","path":"/echo/bad-body"}"#.to_owned(),
        };
        let (tx, body) = portico_proxy::body::ChannelBody::new(2);
        tokio::spawn(async move {
            let (a, b) = text.split_at(text.len() / 2);
            tx.send(bytes::Bytes::from(a.to_owned())).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.send(bytes::Bytes::from(b.to_owned())).await.unwrap();
        });
        let mut r = http::Response::new(http_body_util::Either::Right(body));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    })
    .await
}

/// Answers streamed without a length are checked too: log-only as they pass, enforcing by
/// holding them to their end (a larger one than the bound passes unchecked).
#[tokio::test]
async fn openapi_streamed_answers_are_checked_against_the_contract() {
    let up = streaming_json_upstream().await;
    let doc = openapi_dir().join("drift.yaml").display().to_string();
    let gw = gateway(&config(&format!(
        "upstreams:\n  s: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: s\n    name_prefix: streamed_\n    check_responses: true\n",
        up.url()
    )))
    .await;
    let got = get(&gw.url("/echo/good")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.headers.get("content-length").is_none(),
        "the answer was not streamed"
    );
    assert_eq!(got.json()["path"], "/echo/good");
    let got = get(&gw.url("/echo/bad-body")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.json()["path"],
        "/echo/bad-body",
        "a log-only check changed the answer"
    );
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(counted(&m, "streamed_good", "body"), 0.0, "{m}");
    assert_eq!(counted(&m, "streamed_badBody", "body"), 1.0, "{m}");
    let v = get(&gw.admin_url("/contract/violations")).await.json();
    assert_eq!(v["violations"][0]["path"], "/echo/bad-body", "{v:#}");
    assert_eq!(
        v["violations"][0]["failures"][0]["keyword"], "required",
        "{v:#}"
    );

    // Enforcing: the streamed answer is held, checked, and sent whole or refused.
    let gw = gateway(&config(&format!(
        "upstreams:\n  s: {{ targets: [\"{}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: s\n    name_prefix: held_\n    check_responses: {{ enforce: true }}\n    validation_limits: {{ max_body_bytes: 2048 }}\n",
        up.url()
    )))
    .await;
    let got = get(&gw.url("/echo/good")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["path"], "/echo/good");
    let got = get(&gw.url("/echo/bad-body")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["code"], "upstream_contract_violation");
    assert_eq!(
        failures(&got),
        [
            f("response", "", "required"),
            f("response", "/method", "type")
        ]
    );
    // Larger than the bound: sent on whole, unchecked (its first part was held).
    let huge = get(&gw.url("/echo/huge")).await;
    assert_eq!(huge.status, 200, "{}", huge.text());
    assert_eq!(huge.json()["pad"].as_str().map(str::len), Some(3000));
}

/// An HTTP/2 upstream (h2c) that answers every request with a JSON head and no body: its
/// HEADERS frame ends the stream, with no `content-length`.
async fn headers_only_h2_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((_, mut respond))) = conn.accept().await {
                    let mut r = http::Response::new(());
                    r.headers_mut()
                        .insert("content-type", "application/json".parse().unwrap());
                    let _ = respond.send_response(r, true);
                }
            });
        }
    });
    addr
}

/// An answer whose head ends its stream has an empty body, which a JSON schema does not
/// take: counted log-only (the answer passing as it came), refused enforcing.
#[tokio::test]
async fn openapi_answers_ended_by_their_head_are_checked() {
    let up = headers_only_h2_upstream().await;
    let doc = openapi_dir().join("drift.yaml").display().to_string();
    let gw = gateway(&config(&format!(
        "upstreams:\n  s: {{ targets: [\"h2c://{up}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: s\n    name_prefix: headonly_\n    check_responses: true\n"
    )))
    .await;
    let got = get(&gw.url("/echo/good")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "", "a log-only check changed the answer");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(counted(&m, "headonly_good", "body"), 1.0, "{m}");

    let gw = gateway(&config(&format!(
        "upstreams:\n  s: {{ targets: [\"h2c://{up}\"] }}\napis:\n  - openapi: \"{doc}\"\n    upstream: s\n    name_prefix: headonlyheld_\n    check_responses: {{ enforce: true }}\n"
    )))
    .await;
    let got = get(&gw.url("/echo/good")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.json()["code"], "upstream_contract_violation");
}
