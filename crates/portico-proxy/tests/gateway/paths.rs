//! One canonical path: no spelling of a protected path reaches a backend that trusts the
//! gateway, over HTTP/1.1 (origin and absolute form) or HTTP/2 `:path`.
//!
//! The backend here is as lenient as the real ones behind gateways: it percent-decodes the
//! whole path (`%2F` too), reads `\` as `/`, drops `;…` from each segment (Tomcat, Spring),
//! resolves dot segments, merges slashes, ignores case and a trailing slash. Whatever reaches
//! it is judged by that reading.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portico_testkit::*;

use crate::config;

const KEY: &str = "path-test-key";

/// The path as a lenient backend reads it.
fn lenient(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut dec = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = raw.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            dec.push(v);
            i += 3;
            continue;
        }
        dec.push(bytes[i]);
        i += 1;
    }
    let s = String::from_utf8_lossy(&dec)
        .replace('\\', "/")
        .to_lowercase();
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn protected(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    matches!(segs.first(), Some(&"admin" | &"internal" | &"secure"))
        || (segs.len() >= 3 && segs[0] == "users" && segs[2] == "admin")
}

async fn backend() -> Upstream {
    serve(|req| async move {
        let raw = req.uri().path().to_owned();
        let seen = lenient(&raw);
        let body = serde_json::json!({
            "raw": raw,
            "seen": seen,
            "protected": protected(&seen),
        });
        http::Response::new(full(body.to_string()))
    })
    .await
}

fn gateway_config(up: &Upstream) -> String {
    let key = portico_auth::apikey::digest_string(KEY);
    let rest = r#"consumers:
  - name: ops
    api_keys: ["KEY"]
upstreams:
  u: { targets: ["URL"] }
routes:
  - name: admin
    match: { path: { prefix: /admin }, case_sensitive: false }
    upstream: u
    policies: [{ type: api_key }]
  - name: internal
    match: { path: { prefix: /internal }, case_sensitive: false }
    upstream: u
    policies: [{ type: ip_filter, allow: [10.0.0.0/8] }]
  - name: secure
    match: { path: { prefix: /secure }, case_sensitive: false }
    upstream: u
    policies:
      - type: jwt
        issuers: [{ algorithms: [HS256], keys: [{ secret: "an-hmac-secret-of-more-than-32-bytes!!" }] }]
  - name: user-admin
    match: { path: { template: "/users/{id}/admin" }, case_sensitive: false }
    upstream: u
    policies: [{ type: api_key }]
  - name: public
    match: { path: { prefix: / } }
    upstream: u
"#;
    config(&rest.replace("KEY", &key).replace("URL", &up.url()))
}

/// Disguised forms of protected paths, and the status each must get.
const FORMS: &[(&str, u16)] = &[
    // Encoded unreserved characters.
    ("/%61dmin", 401),
    ("/%41DMIN", 401),
    ("/adm%69n/x", 401),
    ("/%61%64%6d%69%6e", 401),
    ("/intern%61l/x", 403),
    ("/%73ecure", 401),
    ("/users/5/%61dmin", 401),
    ("/%75sers/5/admin", 401),
    // Case.
    ("/ADMIN", 401),
    ("/Admin/x", 401),
    ("/INTERNAL/x", 403),
    ("/SECURE/x", 401),
    ("/users/5/ADMIN", 401),
    // Double encoding stays data: the backend decodes once and sees `%61dmin`.
    ("/%2561dmin", 200),
    // Dot segments, plain and encoded.
    ("/./admin", 401),
    ("/public/../admin", 401),
    ("/public/%2e%2e/admin", 401),
    ("/public/%2E%2E/admin", 401),
    ("/public/.%2e/admin", 401),
    ("/public/%2e./admin", 401),
    ("/%2e/admin", 401),
    ("/../../admin", 401),
    ("/users/5/./admin", 401),
    ("/users/5/x/../admin", 401),
    // Slashes.
    ("//admin", 401),
    ("///admin//x", 401),
    ("/users/5//admin", 401),
    ("/admin/", 401),
    ("/users/5/admin/", 401),
    ("/admin%2Fx", 400),
    ("/admin%2fx", 400),
    ("/%2fadmin", 400),
    ("/public/..%2fadmin", 400),
    // Backslashes.
    ("/\\admin", 400),
    ("/public\\..\\admin", 400),
    ("/public%5c..%5cadmin", 400),
    // Path parameters.
    ("/admin;x", 400),
    ("/public/..;/admin", 400),
    ("/admin;jsessionid=1", 400),
    ("/%61dmin;x", 400),
    ("/users/5/admin;x", 400),
    // Bytes that are not text, overlong forms of `.` and `/`.
    ("/admin%00", 400),
    ("/%c0%ae%c0%ae/admin", 400),
    ("/public/%c0%afadmin", 400),
    ("/admin%0d%0a", 400),
    // A query does not change the path.
    ("/admin?x=1", 401),
    ("/%61dmin?a=/public", 401),
];

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn no_disguised_path_reaches_a_protected_handler() {
    let up = backend().await;
    let gw = gateway(&gateway_config(&up)).await;

    // Controls: the test can tell a protected handler was reached.
    let got = raw(
        gw.addr,
        format!(
            "GET /admin/x HTTP/1.1\r\nhost: a\r\nx-api-key: {KEY}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(body_of(&got).contains("\"protected\":true"), "{got}");
    let got = raw(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(body_of(&got).contains("\"protected\":false"), "{got}");

    let mut failures = Vec::new();
    for (path, want) in FORMS {
        // Origin form and absolute form, over HTTP/1.1.
        for target in [path.to_string(), format!("http://a{path}")] {
            let got = raw(
                gw.addr,
                format!("GET {target} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            let status = status_of(&got);
            if body_of(&got).contains("\"protected\":true") || status != *want {
                failures.push(format!("h1 {target}: {status} {}", body_of(&got)));
            }
        }
    }
    // HTTP/2: the same forms as `:path`, where the client library can carry them.
    let h2 = client(true, &[]);
    let mut sent_h2 = 0;
    for (path, want) in FORMS {
        let Ok(uri) = gw.url(path).parse::<http::Uri>() else {
            continue;
        };
        let got = send(
            &h2,
            Request::get(uri).body(Full::new(Bytes::new())).unwrap(),
        )
        .await;
        sent_h2 += 1;
        if String::from_utf8_lossy(&got.body).contains("\"protected\":true")
            || got.status.as_u16() != *want
        {
            failures.push(format!("h2 {path}: {} {}", got.status, got.text()));
        }
    }
    assert!(FORMS.len() >= 40 && sent_h2 >= 40, "{sent_h2}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn refusals_are_problems_and_the_upstream_gets_the_canonical_path() {
    let up = backend().await;
    let gw = gateway(&gateway_config(&up)).await;
    let got = get(&gw.url("/public/a%2fb")).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["code"], "bad_path");
    assert!(
        got.json()["detail"]
            .as_str()
            .unwrap()
            .contains("encoded slash"),
        "{}",
        got.text()
    );

    // What the gateway matched is what the upstream receives.
    let got = get(&gw.url("/public/%7euser/./x/../%41b%3fc%c3%a9?q=%2e")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["raw"], "/public/~user/Ab%3Fc%C3%A9");
}

#[tokio::test]
async fn listener_options_decode_slashes_and_strip_parameters() {
    let up = backend().await;
    let yaml = gateway_config(&up).replace(
        "    address: \"127.0.0.1:0\"\n",
        "    address: \"127.0.0.1:0\"\n    paths: { escaped_slashes: decode, path_parameters: strip }\n",
    );
    let gw = gateway(&yaml).await;
    // Decoded and stripped forms are judged as what they become.
    for path in [
        "/public%2F..%2Fadmin",
        "/public/..;/admin",
        "/admin;jsessionid=1",
    ] {
        let got = get(&gw.url(path)).await;
        assert_eq!(got.status, 401, "{path}: {}", got.text());
    }
    let got = get(&gw.url("/public%2Fa;b/c")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["raw"], "/public/a/c");

    // `keep` passes encoded slashes through as data, without splitting on them.
    let yaml = gateway_config(&up).replace(
        "    address: \"127.0.0.1:0\"\n",
        "    address: \"127.0.0.1:0\"\n    paths: { escaped_slashes: keep, merge_slashes: false }\n",
    );
    let gw = gateway(&yaml).await;
    let got = get(&gw.url("/public/a%2fb//c")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["raw"], "/public/a%2Fb//c");
}

#[tokio::test]
async fn case_sensitive_routes_keep_their_case() {
    let up = backend().await;
    let yaml = config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: exact-case\n    match: {{ path: {{ prefix: /Docs }} }}\n    respond: {{ body: docs }}\n  - name: public\n    upstream: u\n",
        up.url()
    ));
    let gw = gateway(&yaml).await;
    assert_eq!(get(&gw.url("/Docs/x")).await.text(), "docs");
    assert_ne!(get(&gw.url("/docs/x")).await.text(), "docs");
}
