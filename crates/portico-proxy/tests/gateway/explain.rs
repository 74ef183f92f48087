//! `portico explain` against what the gateway does: for each request of a table, the route
//! explain names and the upstream path it shows are the ones the running gateway uses.

use portico_testkit::*;

use crate::{config, empty, req};

/// Routes that each mark the request with their name, over every kind of match and rewrite.
fn routes(up: &str) -> String {
    let mark = |name: &str| {
        format!("    policies: [{{ type: headers, request: {{ set: {{ x-route: {name} }} }} }}]\n")
    };
    let route = |name: &str, body: &str| format!("  - name: {name}\n{body}{}", mark(name));
    let mut text = format!("upstreams:\n  echo: {{ targets: [\"{up}\"] }}\nroutes:\n");
    text.push_str(
        "  - name: health\n    match: { path: { exact: /healthz } }\n    respond: { body: ok }\n",
    );
    text.push_str(&route(
        "user",
        "    match: { path: { template: \"/users/{id}\" }, methods: [GET] }\n    upstream: echo\n    rewrite: { path: \"/v2/people/{id}\", query: { remove: [debug], set: { v: \"2\" } } }\n",
    ));
    text.push_str(&route(
        "user-write",
        "    match: { path: { template: \"/users/{id}\" } }\n    upstream: echo\n",
    ));
    text.push_str(&route(
        "beta",
        "    match: { path: { prefix: /api }, headers: [{ name: x-beta, exact: \"1\" }] }\n    upstream: echo\n    rewrite: { strip_prefix: true }\n",
    ));
    text.push_str(&route(
        "api",
        "    match: { path: { prefix: /api } }\n    upstream: echo\n",
    ));
    text.push_str(&route(
        "tenant",
        "    match: { hosts: [\"*.tenant.test\"], path: { prefix: / } }\n    upstream: echo\n",
    ));
    // Precedence cases of docs/configuration.md ("routes"): exact over prefix, the longer
    // prefix, a literal segment over a parameter, more conditions, declared order, any case.
    for (name, body) in [
        ("p-exact", "    match: { path: { exact: /p/exact } }\n"),
        ("p-short", "    match: { path: { prefix: /p } }\n"),
        ("p-long", "    match: { path: { prefix: /p/long } }\n"),
        (
            "t-param",
            "    match: { path: { template: \"/t/{a}/x\" } }\n",
        ),
        (
            "t-literal",
            "    match: { path: { template: \"/t/y/{b}\" } }\n",
        ),
        ("c-plain", "    match: { path: { exact: /c } }\n"),
        (
            "c-header",
            "    match: { path: { exact: /c }, headers: [{ name: x-c, present: true }] }\n",
        ),
        ("d-first", "    match: { path: { exact: /d } }\n"),
        ("d-second", "    match: { path: { exact: /d } }\n"),
        (
            "ci",
            "    match: { path: { prefix: /ci }, case_sensitive: false }\n",
        ),
    ] {
        text.push_str(&route(name, &format!("{body}    upstream: echo\n")));
    }
    text.push_str(&route("any", "    upstream: echo\n"));
    config(&text)
}

/// Method, host, path and query, headers, and the route that takes the request.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn explain_names_the_route_and_the_path_the_gateway_uses() {
    let up = echo_server().await;
    let text = routes(&up.url());
    let cfg = portico_config::load_str("t.yaml", &text, std::path::Path::new("."), &|_| None)
        .unwrap_or_else(|d| panic!("{d}"));
    let gw = gateway(&text).await;
    let c = client(false, &[]);
    // (method, host, path and query, headers, the route that takes it)
    let table: [Case; 18] = [
        ("GET", "a.test", "/healthz", &[], "health"),
        ("GET", "a.test", "/users/7?debug=1&x=%41", &[], "user"),
        ("DELETE", "a.test", "/users/7", &[], "user-write"),
        (
            "GET",
            "a.test",
            "/api/orders?q=1",
            &[("x-beta", "1")],
            "beta",
        ),
        (
            "GET",
            "a.test",
            "/api/orders?q=1",
            &[("x-beta", "2")],
            "api",
        ),
        ("GET", "a.test", "/%61pi/./orders//x", &[], "api"),
        ("GET", "shop.tenant.test", "/api/orders", &[], "tenant"),
        ("GET", "tenant.test", "/x", &[], "any"),
        ("POST", "a.test", "/USERS/7", &[], "any"),
        ("GET", "a.test", "/users/", &[], "any"),
        ("GET", "a.test", "/p/exact", &[], "p-exact"),
        ("GET", "a.test", "/p/exact/more", &[], "p-short"),
        ("GET", "a.test", "/p/long/x", &[], "p-long"),
        ("GET", "a.test", "/t/y/x", &[], "t-literal"),
        ("GET", "a.test", "/c", &[("x-c", "1")], "c-header"),
        ("GET", "a.test", "/c", &[], "c-plain"),
        ("GET", "a.test", "/d", &[], "d-first"),
        ("GET", "a.test", "/CI/x", &[], "ci"),
    ];
    let mut rewritten = 0;
    for (method, host, pq, headers, want) in table {
        let mut hm = http::HeaderMap::new();
        hm.insert("host", host.parse().unwrap());
        for (k, v) in headers {
            hm.insert(*k, v.parse().unwrap());
        }
        let v = portico_config::explain::explain(
            &cfg,
            &portico_config::explain::Request {
                listener: None,
                method: method.parse().unwrap(),
                uri: pq.parse().unwrap(),
                headers: hm,
            },
        );
        let named = v["route"]["name"].as_str().unwrap_or("(none)").to_owned();
        assert_eq!(named, want, "{method} {host}{pq}: {v:#}");
        let mut builder = req(method, &gw.url(pq)).header("host", host);
        for (k, val) in headers {
            builder = builder.header(*k, *val);
        }
        let got = send(&c, builder.body(empty()).unwrap()).await;
        let case = format!("{method} {host}{pq}");
        if named == "health" {
            assert_eq!(got.text(), "ok", "{case}");
            continue;
        }
        assert_eq!(got.status, 200, "{case}: {}", got.text());
        let seen = got.json();
        assert_eq!(seen["headers"]["x-route"], named.as_str(), "{case}: {v:#}");
        let shown = v["action"]["proxy"]["path"]["after"].as_str().unwrap();
        assert_eq!(
            seen["uri"], shown,
            "{case}: the upstream path explain shows"
        );
        if shown != v["action"]["proxy"]["path"]["before"] {
            rewritten += 1;
        }
        // Every other route says why it did not take the request.
        for r in v["routes"].as_array().unwrap() {
            let verdict = r["verdict"].as_str().unwrap();
            if r["route"] == named.as_str() {
                assert_eq!(verdict, "chosen", "{case}");
            } else {
                assert_ne!(verdict, "chosen", "{case}");
                assert!(!verdict.is_empty(), "{case}");
            }
        }
    }
    // `user` (template, query edits) and `beta` (strip_prefix) rewrite.
    assert_eq!(rewritten, 2);
}

#[tokio::test]
async fn explain_shows_a_refused_path_and_a_request_no_route_takes() {
    let text = config(
        "upstreams:\n  u: { targets: [\"http://127.0.0.1:9\"] }\nroutes:\n  - name: only\n    match: { path: { exact: /only }, methods: [GET] }\n    upstream: u\n",
    );
    let cfg =
        portico_config::load_str("t.yaml", &text, std::path::Path::new("."), &|_| None).unwrap();
    let ask = |method: &str, pq: &str| {
        portico_config::explain::explain(
            &cfg,
            &portico_config::explain::Request {
                listener: None,
                method: method.parse().unwrap(),
                uri: pq.parse().unwrap(),
                headers: http::HeaderMap::new(),
            },
        )
    };
    let v = ask("GET", "/a%2Fb");
    assert_eq!(v["path"]["refused"], "escaped_slash");
    assert!(v["answer"].as_str().unwrap().starts_with("400 bad_path"));
    let v = ask("POST", "/only");
    assert!(v["answer"].as_str().unwrap().starts_with("404 no_route"));
    assert_eq!(v["routes"][0]["verdict"], "method: POST is not GET");
    let v = ask("GET", "/elsewhere");
    assert_eq!(
        v["routes"][0]["verdict"],
        "path: /elsewhere does not match exact /only"
    );
    let text = portico_config::explain::text(&ask("GET", "/only"));
    assert!(text.contains("route     only"), "{text}");
    assert!(text.contains("upstream  u"), "{text}");
}
