//! Composite routes against real backends with controlled delays and failures.

use std::time::{Duration, Instant};

use portico_testkit::*;
use serde_json::json;

use crate::config;

/// A JSON backend: answers `body` with `status` after `delay`; `{path}` and `{query}` in the
/// body's strings are replaced by the request's.
async fn backend(status: u16, delay_ms: u64, body: serde_json::Value) -> Upstream {
    serve(move |req| {
        let body = body
            .to_string()
            .replace("{path}", req.uri().path())
            .replace("{query}", req.uri().query().unwrap_or(""))
            .replace(
                "{user}",
                req.headers()
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            );
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let mut r = http::Response::new(full(body));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
    })
    .await
}

#[tokio::test]
async fn backends_are_called_at_once_and_merged() {
    let user = backend(200, 300, json!({"id": 7, "name": "Ada", "path": "{path}"})).await;
    let orders = backend(200, 300, json!([{"total": 3}, {"total": 4}])).await;
    let prefs = backend(
        200,
        300,
        json!({"theme": "dark", "lang": "en", "who": "{user}"}),
    )
    .await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  agg-users: {{ targets: ["{}"] }}
  agg-orders: {{ targets: ["{}"] }}
  agg-prefs: {{ targets: ["{}"] }}
routes:
  - match: {{ path: {{ template: "/mobile/{{id}}/home" }} }}
    aggregate:
      forward_headers: [x-user]
      backends:
        - {{ name: user, upstream: agg-users, path: "/users/{{id}}" }}
        - {{ name: orders, upstream: agg-orders, path: "/orders" }}
        - {{ name: prefs, upstream: agg-prefs, path: "/prefs", merge: true }}
"#,
        user.url(),
        orders.url(),
        prefs.url()
    )))
    .await;
    let c = client(false, &[]);
    let started = Instant::now();
    let got = send(
        &c,
        http::Request::get(gw.url("/mobile/7/home"))
            .header("x-user", "ada")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("portico-aggregation"), Some("complete"));
    assert_eq!(
        got.json(),
        json!({
            "user": {"id": 7, "name": "Ada", "path": "/users/7"},
            "orders": [{"total": 3}, {"total": 4}],
            "theme": "dark", "lang": "en", "who": "ada"
        })
    );
    // Three 300 ms backends in well under the 900 ms they would take one after another.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_millis(750),
        "not concurrent: {took:?}"
    );
}

#[tokio::test]
async fn a_backend_can_use_an_earlier_answer() {
    let user = backend(200, 200, json!({"id": "u/7", "tier": 2})).await;
    let orders = backend(200, 200, json!({"query": "{query}", "path": "{path}"})).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  dep-users: {{ targets: ["{}"] }}
  dep-orders: {{ targets: ["{}"] }}
routes:
  - aggregate:
      backends:
        - {{ name: orders, upstream: dep-orders, path: "/tiers/{{user.tier}}/orders?user={{user.id}}" }}
        - {{ name: user, upstream: dep-users, path: "/me" }}
"#,
        user.url(),
        orders.url()
    )))
    .await;
    let started = Instant::now();
    let got = get(&gw.url("/")).await;
    let took = started.elapsed();
    assert_eq!(
        got.json()["orders"],
        json!({"query": "user=u%2F7", "path": "/tiers/2/orders"}),
        "{}",
        got.text()
    );
    // The dependent call waited for the first.
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn partial_failure_is_reported_honestly() {
    let ok = backend(200, 0, json!({"fine": true})).await;
    let broken = backend(500, 0, json!({"oops": 1})).await;
    let slow = backend(200, 2_000, json!({"late": true})).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  part-ok: {{ targets: ["{}"] }}
  part-broken: {{ targets: ["{}"] }}
  part-slow: {{ targets: ["{}"] }}
routes:
  - aggregate:
      backends:
        - {{ name: main, upstream: part-ok, path: "/" }}
        - {{ name: extras, upstream: part-broken, path: "/", required: false }}
        - {{ name: slowpoke, upstream: part-slow, path: "/", required: false, timeout: 200ms }}
        - {{ name: needs-extras, upstream: part-ok, path: "/x/{{extras.oops}}", required: false }}
"#,
        ok.url(),
        broken.url(),
        slow.url()
    )))
    .await;
    let started = Instant::now();
    let got = get(&gw.url("/")).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the slow one was waited for"
    );
    assert_eq!(got.status, 206, "{}", got.text());
    assert_eq!(got.header("portico-aggregation"), Some("partial"));
    let v = got.json();
    assert_eq!(v["main"], json!({"fine": true}));
    assert!(v.get("extras").is_none() && v.get("slowpoke").is_none());
    let errors = v["_errors"].as_array().unwrap();
    let by = |name: &str| {
        errors
            .iter()
            .find(|e| e["backend"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("extras")["code"], "backend_error_status");
    assert_eq!(by("slowpoke")["code"], "upstream_timeout");
    assert_eq!(by("slowpoke")["status"], 504);
    assert_eq!(by("needs-extras")["code"], "backend_dependency_failed");
    assert!(
        by("extras")["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:portico:problem:")
    );
}

#[tokio::test]
async fn a_required_failure_fails_the_answer() {
    let ok = backend(200, 0, json!({"fine": true})).await;
    let missing = backend(404, 0, json!({"error": "no such user"})).await;
    let slow = backend(200, 2_000, json!({})).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  req-ok: {{ targets: ["{}"] }}
  req-missing: {{ targets: ["{}"] }}
  req-slow: {{ targets: ["{}"] }}
routes:
  - match: {{ path: {{ prefix: /bad }} }}
    aggregate:
      backends:
        - {{ name: main, upstream: req-ok, path: "/" }}
        - {{ name: user, upstream: req-missing, path: "/" }}
  - match: {{ path: {{ prefix: /passed }} }}
    aggregate:
      pass_through_client_errors: true
      backends:
        - {{ name: main, upstream: req-ok, path: "/" }}
        - {{ name: user, upstream: req-missing, path: "/" }}
  - match: {{ path: {{ prefix: /slow }} }}
    aggregate:
      backends:
        - {{ name: main, upstream: req-ok, path: "/" }}
        - {{ name: late, upstream: req-slow, path: "/", timeout: 200ms }}
"#,
        ok.url(),
        missing.url(),
        slow.url()
    )))
    .await;
    let got = get(&gw.url("/bad")).await;
    assert_eq!(got.status, 502);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["backend"], "user");
    let got = get(&gw.url("/passed")).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.json(), json!({"error": "no such user"}));
    let got = get(&gw.url("/slow")).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["backend"], "late");
}

#[tokio::test]
async fn answers_are_shaped_per_backend_and_by_the_client() {
    let user = backend(
        200,
        0,
        json!({"data": {"id": 7, "name": "Ada", "password_hash": "x", "address": {"city": "Paris", "zip": "75001"}}}),
    )
    .await;
    let orders = backend(
        200,
        0,
        json!([{"id": 1, "total": 3, "internal": true}, {"id": 2, "total": 4, "internal": false}]),
    )
    .await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  shape-users: {{ targets: ["{}"] }}
  shape-orders: {{ targets: ["{}"] }}
routes:
  - aggregate:
      backends:
        - name: user
          upstream: shape-users
          path: /me
          extract: data
          exclude: [password_hash, address.zip]
          rename: {{ name: full_name }}
        - {{ name: orders, upstream: shape-orders, path: /orders, fields: [id, total] }}
"#,
        user.url(),
        orders.url()
    )))
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(
        got.json(),
        json!({
            "user": {"id": 7, "full_name": "Ada", "address": {"city": "Paris"}},
            "orders": [{"id": 1, "total": 3}, {"id": 2, "total": 4}]
        }),
        "{}",
        got.text()
    );
    // Sparse fieldsets, through arrays.
    let got = get(&gw.url("/?fields=user.full_name,orders.total")).await;
    assert_eq!(
        got.json(),
        json!({"user": {"full_name": "Ada"}, "orders": [{"total": 3}, {"total": 4}]})
    );
    let got = get(&gw.url("/?fields=user..x")).await;
    assert_eq!(got.status, 400);
}

#[tokio::test]
async fn a_backend_answer_is_reused_for_its_cache_ttl() {
    let slow_changing = backend(200, 0, json!({"rates": [1, 2]})).await;
    let live = backend(200, 0, json!({"now": true})).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  ttl-rates: {{ targets: ["{}"] }}
  ttl-live: {{ targets: ["{}"] }}
routes:
  - name: ttl-route
    match: {{ path: {{ template: "/t/{{id}}" }} }}
    aggregate:
      backends:
        - {{ name: rates, upstream: ttl-rates, path: "/rates/{{id}}", cache_ttl: 400ms }}
        - {{ name: live, upstream: ttl-live, path: "/live" }}
"#,
        slow_changing.url(),
        live.url()
    )))
    .await;
    for _ in 0..3 {
        let got = get(&gw.url("/t/1")).await;
        assert_eq!(got.json()["rates"], json!({"rates": [1, 2]}));
    }
    assert_eq!((slow_changing.hits(), live.hits()), (1, 3));
    // Another path is another entry; after the TTL the backend is asked again.
    get(&gw.url("/t/2")).await;
    assert_eq!(slow_changing.hits(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    get(&gw.url("/t/1")).await;
    assert_eq!(slow_changing.hits(), 3);
}

/// A backend answering `body` exactly as written (key order included).
async fn raw_backend(status: u16, body: &'static str) -> Upstream {
    serve(move |_req| async move {
        let mut r = http::Response::new(full(body));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    })
    .await
}

#[tokio::test]
async fn answer_keys_come_out_sorted_whatever_the_backends_order() {
    let unsorted = raw_backend(200, r#"{"zulu":1,"alpha":2}"#).await;
    let merged = raw_backend(200, r#"{"kiwi":3,"banana":4}"#).await;
    let clash = raw_backend(200, r#"{"zebra":"from-clash"}"#).await;
    let broken = raw_backend(500, r#"{}"#).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  ord-unsorted: {{ targets: ["{}"] }}
  ord-merged: {{ targets: ["{}"] }}
  ord-clash: {{ targets: ["{}"] }}
  ord-broken: {{ targets: ["{}"] }}
routes:
  - match: {{ path: {{ prefix: /complete }} }}
    aggregate:
      backends:
        - {{ name: zebra, upstream: ord-unsorted, path: "/" }}
        - {{ name: mango, upstream: ord-merged, path: "/", merge: true }}
        - {{ name: apple, upstream: ord-unsorted, path: "/" }}
        - {{ name: clash, upstream: ord-clash, path: "/", merge: true }}
  - match: {{ path: {{ prefix: /partial }} }}
    aggregate:
      backends:
        - {{ name: zebra, upstream: ord-unsorted, path: "/" }}
        - {{ name: broken, upstream: ord-broken, path: "/", required: false }}
        - {{ name: Zed, upstream: ord-unsorted, path: "/" }}
"#,
        unsorted.url(),
        merged.url(),
        clash.url(),
        broken.url()
    )))
    .await;
    // Neither the list's order nor the backends' own key order shows: every object's keys are
    // sorted. Where two results share a key, the backend listed later wins.
    let got = get(&gw.url("/complete")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        got.text(),
        r#"{"apple":{"alpha":2,"zulu":1},"banana":4,"kiwi":3,"zebra":"from-clash"}"#
    );
    // Byte order: capitals before `_errors`, lowercase after; the problem's keys sorted too.
    let got = get(&gw.url("/partial")).await;
    assert_eq!(got.status, 206, "{}", got.text());
    let text = got.text();
    assert!(
        text.starts_with(
            r#"{"Zed":{"alpha":2,"zulu":1},"_errors":[{"backend":"broken","code":"backend_error_status","detail":"#
        ),
        "{text}"
    );
    assert!(
        text.ends_with(r#"}],"zebra":{"alpha":2,"zulu":1}}"#),
        "{text}"
    );
}

#[tokio::test]
async fn placeholders_read_the_answer_before_shaping() {
    let user = backend(
        200,
        0,
        json!({"data": {"id": "u1", "name": "Ada", "secret": "s3"}}),
    )
    .await;
    let echo = backend(200, 0, json!({"path": "{path}"})).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  raw-users: {{ targets: ["{}"] }}
  raw-echo: {{ targets: ["{}"] }}
routes:
  - aggregate:
      backends:
        - name: user
          upstream: raw-users
          path: /me
          extract: data
          fields: [id, name]
          rename: {{ name: full_name }}
        - {{ name: raw, upstream: raw-echo, path: "/x/{{user.data.id}}/{{user.data.name}}/{{user.data.secret}}" }}
        - {{ name: shaped-id, upstream: raw-echo, path: "/x/{{user.id}}", required: false }}
        - {{ name: renamed, upstream: raw-echo, path: "/x/{{user.full_name}}", required: false }}
"#,
        user.url(),
        echo.url()
    )))
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status, 206, "{}", got.text());
    let v = got.json();
    // The client sees the shaped answer…
    assert_eq!(v["user"], json!({"id": "u1", "full_name": "Ada"}));
    // …while the placeholders read the raw one: the path through `data`, the field `fields`
    // dropped, the name before `rename`.
    assert_eq!(v["raw"], json!({"path": "/x/u1/Ada/s3"}));
    // The shaped names are not there to read.
    let errors = v["_errors"].as_array().unwrap();
    for name in ["shaped-id", "renamed"] {
        let e = errors.iter().find(|e| e["backend"] == name).unwrap();
        assert_eq!(e["code"], "backend_dependency_failed", "{e}");
    }
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// A composite route's calls go through the same upstream call as a proxied request: the
/// upstream's retry policy applies, and the call is balanced by the client's address and
/// headers (a `hash` on a header keeps one client on one target).
#[tokio::test]
async fn calls_are_retried_and_balanced_like_proxied_requests() {
    let failing = backend(503, 0, json!({"who": "failing"})).await;
    let healthy = backend(200, 0, json!({"who": "healthy"})).await;
    let one = backend(200, 0, json!({"who": "one"})).await;
    let two = backend(200, 0, json!({"who": "two"})).await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  agg-retried:
    targets: ["{}", "{}"]
    retries: {{ attempts: 2 }}
  agg-sticky:
    targets: ["{}", "{}"]
    load_balancing: {{ algorithm: hash, hash_on: {{ header: x-user }} }}
routes:
  - match: {{ path: {{ exact: /both }} }}
    aggregate:
      backends:
        - {{ name: retried, upstream: agg-retried, path: /r }}
        - {{ name: sticky, upstream: agg-sticky, path: /s }}
"#,
        failing.url(),
        healthy.url(),
        one.url(),
        two.url()
    )))
    .await;
    let c = client(false, &[]);
    let mut sticky = std::collections::HashSet::new();
    for _ in 0..8 {
        let got = send(
            &c,
            http::Request::get(gw.url("/both"))
                .header("x-user", "ada")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["retried"]["who"], "healthy", "{}", got.text());
        sticky.insert(got.json()["sticky"]["who"].to_string());
    }
    assert!(
        failing.hits() >= 1,
        "round robin reached the failing target"
    );
    assert_eq!(sticky.len(), 1, "one client, one target: {sticky:?}");
}
