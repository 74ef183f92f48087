//! The admin port against web pages and strangers: `Host` (DNS rebinding), cross-origin and
//! form-typed writes, and the bearer token for state-changing requests.

use http::Request;
use portico_testkit::*;

use crate::config;

const TOKEN: &str = "admin-token-for-tests";

async fn admin_gateway(token: bool) -> (TestGateway, Upstream) {
    let up = echo_server().await;
    let admin = if token {
        format!(
            "admin: {{ address: \"127.0.0.1:0\", token_hash: \"{}\", allowed_hosts: [gw-admin.internal] }}\n",
            portico_auth::apikey::digest_string(TOKEN)
        )
    } else {
        "admin: { address: \"127.0.0.1:0\" }\n".to_string()
    };
    let yaml = config(&format!(
        "{admin}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        up.url()
    ));
    (gateway(&yaml).await, up)
}

async fn admin_call(
    gw: &TestGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut b = Request::builder().method(method).uri(gw.admin_url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(body.to_owned()));
    send(&client(false, &[]), b.body(body).unwrap()).await
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_reads_included() {
    let (gw, _up) = admin_gateway(false).await;
    let got = admin_call(&gw, "GET", "/config", &[("host", "evil.example:9901")], "").await;
    assert_eq!(got.status, 403, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert!(got.text().contains("evil.example"), "{}", got.text());
    // IP addresses and localhost are fine.
    for host in [
        "127.0.0.1:9901",
        "localhost:9901",
        "[::1]:9901",
        "LOCALHOST",
    ] {
        let got = admin_call(&gw, "GET", "/healthz", &[("host", host)], "").await;
        assert_eq!(got.status, 200, "{host}");
    }
    let got = get(&gw.admin_url("/config")).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn cross_origin_and_form_typed_writes_are_refused() {
    let (gw, _up) = admin_gateway(false).await;
    let put = r#"{"targets": ["http://127.0.0.1:9"]}"#;
    // What a web page can send without a preflight.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let cases: &[Case] = &[
        ("POST", "/reload", &[("origin", "http://evil.example")], 403),
        ("POST", "/reload", &[("content-type", "text/plain")], 415),
        (
            "POST",
            "/reload",
            &[("content-type", "application/x-www-form-urlencoded")],
            415,
        ),
        ("POST", "/reload", &[("sec-fetch-site", "cross-site")], 403),
        (
            "PUT",
            "/upstreams/u/targets",
            &[("content-type", "text/plain;charset=UTF-8")],
            415,
        ),
        ("DELETE", "/cache", &[("origin", "null")], 403),
    ];
    for (method, path, headers, want) in cases {
        let got = admin_call(&gw, method, path, headers, put).await;
        assert_eq!(
            got.status.as_u16(),
            *want,
            "{method} {path} {headers:?}: {}",
            got.text()
        );
    }
    // Nothing changed.
    let ups = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(ups["u"]["targets_from"], "config");
    // The same origin, and tools that send no Origin, may write.
    let host = gw.admin.to_string();
    let origin = format!("http://{host}");
    let got = admin_call(
        &gw,
        "PUT",
        "/upstreams/u/targets",
        &[("content-type", "application/json"), ("origin", &origin)],
        put,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let got = admin_call(&gw, "DELETE", "/upstreams/u/targets", &[], "").await;
    assert_eq!(got.status, 200, "{}", got.text());
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let (gw, _up) = admin_gateway(true).await;
    let put = r#"{"targets": ["http://127.0.0.1:9"]}"#;
    let json = ("content-type", "application/json");
    for auth in [None, Some("Bearer wrong"), Some("Basic YWRtaW46eA==")] {
        let mut h = vec![json];
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        let got = admin_call(&gw, "PUT", "/upstreams/u/targets", &h, put).await;
        assert_eq!(got.status, 401, "{auth:?}");
        assert_eq!(
            got.header("www-authenticate"),
            Some("Bearer realm=\"portico-admin\"")
        );
    }
    let got = admin_call(&gw, "POST", "/reload", &[], "").await;
    assert_eq!(got.status, 401);
    assert_eq!(
        get(&gw.admin_url("/upstreams")).await.json()["u"]["targets_from"],
        "config"
    );
    let bearer = format!("Bearer {TOKEN}");
    let got = admin_call(
        &gw,
        "PUT",
        "/upstreams/u/targets",
        &[json, ("authorization", &bearer)],
        put,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    // Reads need no token; a listed name is accepted in Host.
    let got = admin_call(
        &gw,
        "GET",
        "/upstreams",
        &[("host", "gw-admin.internal:9901")],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["u"]["targets_from"], "admin_api");
}

/// `POST /explain` explains a request against the live config, and says what is wrong with a
/// request it cannot read.
#[tokio::test]
async fn explain_answers_against_the_live_config() {
    let (gw, _up) = admin_gateway(false).await;
    let json = [("content-type", "application/json")];
    let body = r#"{"method": "GET", "url": "/%61ny/thing?x=1", "headers": {"x-one": "1"}}"#;
    let got = admin_call(&gw, "POST", "/explain", &json, body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let v = got.json();
    assert_eq!(v["path"]["canonical"], "/any/thing");
    assert!(v["route"]["name"].is_string(), "{v:#}");
    assert_eq!(v["action"]["proxy"]["path"]["before"], "/any/thing?x=1");
    // On a running node: the targets as the pool has them, with their health.
    let up = &v["action"]["proxy"]["upstreams"][0]["upstream"];
    assert_eq!(up["live_targets"][0]["healthy"], true, "{up:#}");
    assert_eq!(up["targets_from"], "config");
    for (bad, why) in [
        ("not json", "not JSON"),
        (r#"{"url": "::"}"#, "`url`"),
        (r#"{"url": "/", "method": "G T"}"#, "`method`"),
        (r#"{"url": "/", "headers": {"x": 1}}"#, "header `x`"),
        (r#"{"url": "/", "listener": "nope"}"#, "no listener `nope`"),
    ] {
        let got = admin_call(&gw, "POST", "/explain", &json, bad).await;
        assert_eq!(got.status, 400, "{bad}");
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
        assert!(
            got.json()["detail"].as_str().unwrap().contains(why),
            "{bad}: {}",
            got.text()
        );
    }
    // GET is not how it is asked.
    let got = admin_call(&gw, "GET", "/explain", &[], "").await;
    assert_eq!(got.status, 405);
}

/// Roles: with read tokens, reads need a read token or the write token (probes aside); a read
/// token cannot change anything.
#[tokio::test]
async fn read_tokens_guard_reads_and_cannot_write() {
    const READER: &str = "reader-token-for-tests";
    let up = echo_server().await;
    let yaml = config(&format!(
        "admin: {{ address: \"127.0.0.1:0\", token_hash: \"{}\", read_token_hashes: [\"{}\"] }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        portico_auth::apikey::digest_string(TOKEN),
        portico_auth::apikey::digest_string(READER),
        up.url()
    ));
    let gw = gateway(&yaml).await;
    let bearer = |t: &str| format!("Bearer {t}");
    let (reader, writer) = (bearer(READER), bearer(TOKEN));
    // Probes need nothing.
    for p in ["/healthz", "/readyz"] {
        assert_eq!(admin_call(&gw, "GET", p, &[], "").await.status, 200, "{p}");
    }
    // Reads: no token or a wrong one is 401 with the realm; either role's token reads.
    for p in ["/config", "/metrics", "/upstreams", "/config/versions"] {
        let got = admin_call(&gw, "GET", p, &[], "").await;
        assert_eq!(got.status, 401, "{p}");
        assert_eq!(
            got.header("www-authenticate"),
            Some("Bearer realm=\"portico-admin\"")
        );
        let got = admin_call(&gw, "GET", p, &[("authorization", "Bearer nope")], "").await;
        assert_eq!(got.status, 401, "{p}");
        for t in [&reader, &writer] {
            let got = admin_call(&gw, "GET", p, &[("authorization", t)], "").await;
            assert_eq!(got.status, 200, "{p} {t}");
        }
    }
    let explain = r#"{"url": "/x"}"#;
    let json = ("content-type", "application/json");
    assert_eq!(
        admin_call(&gw, "POST", "/explain", &[json], explain)
            .await
            .status,
        401
    );
    assert_eq!(
        admin_call(
            &gw,
            "POST",
            "/explain",
            &[json, ("authorization", &reader)],
            explain
        )
        .await
        .status,
        200
    );
    // A read token cannot write: 403, saying why.
    let got = admin_call(&gw, "POST", "/reload", &[("authorization", &reader)], "").await;
    assert_eq!(got.status, 403);
    assert!(got.text().contains("may only read"), "{}", got.text());
    let got = admin_call(&gw, "POST", "/reload", &[("authorization", &writer)], "").await;
    assert_eq!(got.status, 422, "no file to reload: {}", got.text());
}

/// The console: a page, a script and a style sheet from the binary, public (a browser cannot
/// send a token for them) and locked down by their headers; the data stays behind the token.
#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    const READER: &str = "reader-token-for-tests";
    let up = echo_server().await;
    let yaml = config(&format!(
        "admin: {{ address: \"127.0.0.1:0\", token_hash: \"{}\", read_token_hashes: [\"{}\"] }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        portico_auth::apikey::digest_string(TOKEN),
        portico_auth::apikey::digest_string(READER),
        up.url()
    ));
    let gw = gateway(&yaml).await;
    let page = admin_call(&gw, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !page.text().contains("<script>") && !page.text().contains("style="),
        "no inline script or style"
    );
    let mut assets = 0;
    for (path, ctype) in [
        ("/ui/console.js", "text/javascript; charset=utf-8"),
        ("/ui/console.css", "text/css; charset=utf-8"),
    ] {
        assert!(page.text().contains(path), "{path} is linked");
        let got = admin_call(&gw, "GET", path, &[], "").await;
        assert_eq!(
            (got.status.as_u16(), got.header("content-type")),
            (200, Some(ctype)),
            "{path}"
        );
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        assets += got.body.len();
    }
    assert!(
        assets + page.body.len() < 300 * 1024,
        "the console is under 300 KB"
    );
    // The script only ever talks to the versioned API, and writes what it gets as text.
    let js = admin_call(&gw, "GET", "/ui/console.js", &[], "")
        .await
        .text();
    assert!(js.contains("const API = \"/api/v1\""));
    assert!(!js.contains("innerHTML"), "no HTML is built from API data");
    // When `node` is here, the script must at least parse.
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok()
    {
        let file = temp_dir("console-js").join("console.js");
        std::fs::write(&file, &js).unwrap();
        let check = std::process::Command::new("node")
            .arg("--check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // The data it shows still needs the token.
    assert_eq!(admin_call(&gw, "GET", "/stats", &[], "").await.status, 401);
    let auth = format!("Bearer {READER}");
    assert_eq!(
        admin_call(&gw, "GET", "/api/v1/stats", &[("authorization", &auth)], "")
            .await
            .status,
        200
    );
}

/// The audit trail and the admin port: a write without a valid token is counted in the
/// security summary (a flood of them must not rotate the trail away); a write with it is a
/// record, named by its endpoint whatever name it was sent to; explain and OPTIONS are reads.
#[tokio::test]
async fn unauthorised_writes_are_counted_and_authorised_ones_recorded() {
    let up = echo_server().await;
    let trail = temp_dir("admin-audit").join("audit.jsonl");
    let yaml = config(&format!(
        "admin: {{ address: \"127.0.0.1:0\", token_hash: \"{}\" }}\naudit: {{ path: \"{}\", summary_interval: 0s }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        portico_auth::apikey::digest_string(TOKEN),
        trail.display(),
        up.url()
    ));
    let gw = gateway(&yaml).await;
    for _ in 0..3 {
        let got = admin_call(&gw, "POST", "/api/v1/reload", &[], "").await;
        assert_eq!(got.status, 401);
    }
    let json = ("content-type", "application/json");
    assert_eq!(
        admin_call(&gw, "POST", "/api/v1/explain", &[json], r#"{"url": "/"}"#)
            .await
            .status,
        200
    );
    admin_call(&gw, "OPTIONS", "/config", &[], "").await;
    let auth = format!("Bearer {TOKEN}");
    let body = format!("{{\"targets\": [\"{}\"]}}", up.url());
    let got = admin_call(
        &gw,
        "PUT",
        "/api/v1/upstreams/u/targets",
        &[json, ("authorization", &auth)],
        &body,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    gw.gw.write_audit_summary();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&trail)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let admin: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "admin").collect();
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert_eq!(admin[0]["path"], "/upstreams/u/targets");
    assert_eq!(admin[0]["method"], "PUT");
    let summary = records
        .iter()
        .find(|r| r["kind"] == "security_summary")
        .unwrap();
    assert_eq!(
        summary["refusals"][0],
        serde_json::json!({"consumer": null, "reason": "admin_unauthorized", "status": 401, "count": 3})
    );
}
