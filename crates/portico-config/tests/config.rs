use std::path::Path;

use http::{HeaderMap, Method};
use portico_config::router::RequestView;
use portico_config::{Action, Config, Diagnostics, load_str};

fn env(k: &str) -> Option<String> {
    match k {
        "BACKEND" => Some("http://127.0.0.1:9000".into()),
        "PORT" => Some("8081".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, Diagnostics> {
    load_str("test.yaml", text, Path::new("."), &env)
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected errors"),
        Err(d) => {
            d.0.iter()
                .map(|d| {
                    format!(
                        "{}:{}: {} | {}",
                        d.loc.map_or(0, |l| l.line),
                        d.loc.map_or(0, |l| l.column),
                        d.message,
                        d.hint.clone().unwrap_or_default()
                    )
                })
                .collect()
        }
    }
}

const GOOD: &str = r#"
listeners:
  - address: 127.0.0.1:${PORT}
upstreams:
  users:
    targets: ["${BACKEND}"]
  grpc:
    targets: ["h2c://127.0.0.1:50051"]
routes:
  - name: user
    match: { path: { template: "/users/{id}" }, methods: [get] }
    upstream: users
    rewrite: { path: "/v2/users/{id}" }
  - name: api
    match: { path: { prefix: /api/ } }
    upstream: users
    rewrite: { strip_prefix: true }
  - name: api-post-v2
    match:
      path: { prefix: /api }
      methods: [POST]
      headers: [{ name: x-version, exact: "2" }]
    upstream: grpc
  - name: host-only
    match: { hosts: ["*.example.com"], path: { exact: /api/users } }
    respond: { status: 204 }
  - name: static
    match: { path: { exact: /health } }
    respond: { body: ok }
  - name: old
    match: { path: { template: "/old/{*rest}" } }
    redirect: { to: "/new/{rest}", status: 301 }
"#;

fn route<'a>(
    c: &'a Config,
    host: Option<&str>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<(&'a str, Vec<String>)> {
    let (path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    let view = RequestView {
        host,
        path,
        method: &method,
        headers,
        query,
    };
    c.router.find(&view).map(|m| {
        (
            &*m.route.name,
            m.params.iter().map(|s| s.to_string()).collect(),
        )
    })
}

#[test]
fn good_config_compiles_and_routes() {
    let c = load(GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners[0].addr.port(), 8081);
    assert_eq!(
        c.upstreams[0].targets[0].authority.as_str(),
        "127.0.0.1:9000"
    );
    let h = HeaderMap::new();
    assert_eq!(
        route(&c, None, Method::GET, "/users/42", &h),
        Some(("user", vec!["42".into()]))
    );
    // The template route accepts GET only; POST falls back to nothing (no prefix covers /users).
    assert_eq!(route(&c, None, Method::POST, "/users/42", &h), None);
    assert_eq!(route(&c, None, Method::GET, "/api", &h).unwrap().0, "api");
    assert_eq!(
        route(&c, None, Method::GET, "/api/x/y", &h).unwrap().0,
        "api"
    );
    assert_eq!(route(&c, None, Method::GET, "/apix", &h), None);
    // More conditions win over declared order on the same path.
    let mut v2 = HeaderMap::new();
    v2.insert("x-version", "2".parse().unwrap());
    assert_eq!(
        route(&c, None, Method::POST, "/api/a", &v2).unwrap().0,
        "api-post-v2"
    );
    assert_eq!(
        route(&c, None, Method::GET, "/api/a", &v2).unwrap().0,
        "api"
    );
    // Host-specific routes win for their host; other hosts fall through to host-less routes.
    assert_eq!(
        route(&c, Some("a.example.com"), Method::GET, "/api/users", &h)
            .unwrap()
            .0,
        "host-only"
    );
    assert_eq!(
        route(&c, Some("a.b.example.com"), Method::GET, "/api/users", &h)
            .unwrap()
            .0,
        "host-only"
    );
    assert_eq!(
        route(&c, Some("example.com"), Method::GET, "/api/users", &h)
            .unwrap()
            .0,
        "api"
    );
    assert_eq!(
        route(&c, Some("a.example.com"), Method::GET, "/health", &h)
            .unwrap()
            .0,
        "static"
    );
    assert_eq!(
        route(&c, None, Method::GET, "/old/a/b", &h),
        Some(("old", vec!["a/b".into()]))
    );
    match &c.routes[5].action {
        Action::Redirect(r) => {
            let mut s = String::new();
            r.to.render(&["a/b"], &mut s);
            assert_eq!(s, "/new/a/b");
        }
        _ => panic!("not a redirect"),
    }
}

#[test]
fn trailing_slashes_case_and_listener_path_options() {
    let c = load(
        r#"
listeners:
  - { name: strict, address: "127.0.0.1:0" }
  - { name: lax, address: "127.0.0.1:0", paths: { path_parameters: strip } }
server: { paths: { escaped_slashes: decode } }
routes:
  - name: exact
    match: { path: { exact: /a } }
    respond: {}
  - name: exact-slash
    match: { path: { exact: /a/ } }
    respond: {}
  - name: tmpl
    match: { path: { template: "/u/{id}/admin" } }
    respond: {}
  - name: any-case
    match: { path: { prefix: /Admin }, case_sensitive: false }
    respond: {}
  - name: admin-exact
    match: { path: { exact: /admin/x } }
    respond: {}
  - name: rest
    respond: {}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let h = HeaderMap::new();
    let r = |p: &str| route(&c, None, Method::GET, p, &h).map(|(n, v)| (n.to_owned(), v));
    assert_eq!(r("/a").unwrap().0, "exact");
    // A pattern that is itself `/a/` beats the trailing-slash form of `/a`.
    assert_eq!(r("/a/").unwrap().0, "exact-slash");
    assert_eq!(r("/u/5/admin/").unwrap(), ("tmpl".into(), vec!["5".into()]));
    assert_eq!(r("/u/5/admin//").unwrap().0, "rest");
    assert_eq!(r("/ADMIN").unwrap().0, "any-case");
    assert_eq!(r("/aDmIn/y").unwrap().0, "any-case");
    // A more specific route still wins over the case-insensitive one.
    assert_eq!(r("/admin/x").unwrap().0, "admin-exact");
    assert_eq!(r("/ADMIN/x").unwrap().0, "any-case");
    assert_eq!(r("/administrator").unwrap().0, "rest");

    use portico_config::canon::{EscapedSlashes, PathParameters};
    assert_eq!(c.server.paths.escaped_slashes, EscapedSlashes::Decode);
    assert_eq!(c.path_options("strict"), &c.server.paths);
    let lax = c.path_options("lax");
    assert_eq!(lax.escaped_slashes, EscapedSlashes::Decode);
    assert_eq!(lax.path_parameters, PathParameters::Strip);
    assert_eq!(c.listener_paths.len(), 1);
}

#[test]
fn query_and_regex_conditions() {
    let c = load(
        r#"
upstreams: { u: { targets: ["http://127.0.0.1:1"] } }
routes:
  - name: debug
    match: { path: { prefix: / }, query: [{ name: debug, exact: "on" }] }
    upstream: u
  - name: beta
    match: { headers: [{ name: user-agent, regex: "^beta/" }, { name: x-block, present: false }] }
    upstream: u
  - name: rest
    upstream: u
"#,
    )
    .unwrap();
    let h = HeaderMap::new();
    assert_eq!(
        route(&c, None, Method::GET, "/x?a=1&debug=on", &h)
            .unwrap()
            .0,
        "debug"
    );
    assert_eq!(
        route(&c, None, Method::GET, "/x?debug=off", &h).unwrap().0,
        "rest"
    );
    let mut ua = HeaderMap::new();
    ua.insert("user-agent", "beta/1.0".parse().unwrap());
    assert_eq!(route(&c, None, Method::GET, "/x", &ua).unwrap().0, "beta");
    ua.insert("x-block", "1".parse().unwrap());
    assert_eq!(route(&c, None, Method::GET, "/x", &ua).unwrap().0, "rest");
}

#[test]
fn every_error_is_reported_at_once_with_location() {
    let errs = errors(
        r#"
listeners:
  - address: 127.0.0.1
  - adress: 127.0.0.1:80
upstreams:
  users:
    targets: ["ftp://x"]
routes:
  - match: { path: { prefx: /a } }
    upstream: users
  - name: r2
    upstream: user
  - name: r3
    match: { path: { template: "/a/{id}" } }
    upstream: users
    rewrite: { path: "/b/{idd}" }
    timeout: 5 seconds
unknown_section: 1
"#,
    );
    let text = errs.join("\n");
    assert!(
        text.contains("3:14: invalid address `127.0.0.1` | add a port"),
        "{text}"
    );
    assert!(
        text.contains("4:5: unknown key `adress` | did you mean `address`?"),
        "{text}"
    );
    assert!(
        text.contains("7:15: unsupported target scheme `ftp`"),
        "{text}"
    );
    assert!(
        text.contains("9:22: unknown value `prefx` | did you mean `prefix`?"),
        "{text}"
    );
    assert!(
        text.contains("12:15: unknown upstream `user` | did you mean `users`?"),
        "{text}"
    );
    assert!(text.contains("invalid duration `5 seconds`"), "{text}");
    assert!(
        text.contains("18:1: unknown key `unknown_section`"),
        "{text}"
    );
    assert!(errs.len() >= 7, "{text}");
}

#[test]
fn semantic_errors() {
    const WSDL: &str = concat!(
        "\"",
        env!("CARGO_MANIFEST_DIR"),
        "/../portico-testkit/soap/calculator11.wsdl\""
    );
    let cases: &[(&str, &str)] = &[
        (
            "routes: [{ name: a, respond: {} }, { name: a, respond: {} }]",
            "duplicate route name `a`",
        ),
        ("routes: [{ name: a }]", "route `a` has no action"),
        (
            "routes: [{ respond: {}, redirect: { to: /x } }]",
            "more than one of",
        ),
        (
            "routes: [{ match: { path: { exact: nope } }, respond: {} }]",
            "must start with `/`",
        ),
        (
            "routes: [{ match: { path: { template: \"/a/{*r}/b\" } }, respond: {} }]",
            "must be the last segment",
        ),
        (
            "routes: [{ match: { path: { prefix: /%7euser } }, respond: {} }]",
            "is not in canonical form; requests are matched as `/~user`",
        ),
        (
            "routes: [{ match: { path: { exact: /a/../b } }, respond: {} }]",
            "write `/b`",
        ),
        (
            "routes: [{ match: { path: { exact: \"/a%00\" } }, respond: {} }]",
            "cannot match a request",
        ),
        (
            "listeners: [{ address: \"127.0.0.1:0\", tls: { certificates: [{ cert: /dev/zero, key: /dev/zero }] } }]",
            "cannot read `/dev/zero`: not a regular file",
        ),
        ("admin: { address: 9901 }", "a port alone is not an address"),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: \"my user\", upstream: u, path: \"/\" }] } }]",
            "invalid backend name `my user`",
        ),
        (
            "server: { paths: { escaped_slashes: drop } }",
            "unknown value `drop` | expected one of: reject, decode, keep",
        ),
        (
            "routes: [{ match: { path: { template: \"/a/x{id}\" } }, respond: {} }]",
            "mixes text and a parameter",
        ),
        (
            "routes: [{ match: { headers: [{ name: a, exact: b, regex: c }] }, respond: {} }]",
            "exactly one of",
        ),
        (
            "routes: [{ match: { headers: [{ name: a, regex: \"(\" }] }, respond: {} }]",
            "invalid regex",
        ),
        (
            "routes: [{ match: { methods: [\"G T\"] }, respond: {} }]",
            "invalid method",
        ),
        (
            "routes: [{ redirect: { to: /x, status: 200 } }]",
            "not a redirect status",
        ),
        (
            "routes: [{ respond: {}, rewrite: { host: x } }]",
            "applies only to routes with an `upstream`",
        ),
        ("upstreams: { u: { targets: [] } }", "has no targets"),
        (
            "policies: [{ type: rate_limit, limits: [] }]",
            "`limits` is empty",
        ),
        (
            "policies: [{ type: rate_limit, limits: [{ requests: 0, per: 1s }] }]",
            "above 0",
        ),
        (
            "policies: [{ type: rate_limit, key: client_id, limits: [{ requests: 1, per: 1s }] }]",
            "did you mean `client_ip`?",
        ),
        (
            "policies: [{ type: rate_limit, limits: [{ requests: 1, per: 1s, brust: 2 }] }]",
            "did you mean `burst`?",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: a, mirror: { upstream: b } }]",
            "unknown upstream `b`",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: a, mirror: { upstream: a, percent: 0 } }]",
            "it must be from 1 to 100",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ respond: {}, mirror: { upstream: a } }]",
            "applies only to routes that proxy",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], retries: { attempts: 1 } } }",
            "it must be from 2 to 10",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], retries: { budget_percent: 0 } } }",
            "it must be from 1 to 100",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], retries: { retry_on: [999] } } }",
            "999 is not an HTTP status",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], retries: { on: [503] } } }",
            "quote the key",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], health_check: { path: health } } }",
            "must start with `/`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], health_check: { path: /h, expected_statuses: [700] } } }",
            "700 is not an HTTP status",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], health_check: { healthy_threshold: 0 } } }",
            "thresholds must be at least 1",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], health_check: { intervall: 5s } } }",
            "did you mean `interval`?",
        ),
        (
            "routes: [{ respond: {}, deprecation: { since: \"2026-02-30\" } }]",
            "invalid date `2026-02-30`",
        ),
        (
            "routes: [{ respond: {}, deprecation: { since: \"2026-01-01\", sunset: \"next year\" } }]",
            "invalid date `next year`",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ split: [{ upstream: a, weight: 0 }] }]",
            "the weights in `split` are all 0",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ split: [{ upstream: a, weight: 1 }, { upstream: b, weight: 1 }] }]",
            "unknown upstream `b`",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ split: [{ upstream: a, weight: 1 }, { upstream: a, weight: 1 }] }]",
            "appears twice",
        ),
        (
            "upstreams: { a: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: a, split: [{ upstream: a, weight: 1 }] }]",
            "more than one of",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], max_requests: 0 } }",
            "`max_requests` must be at least 1",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], max_connections: 0 } }",
            "`max_connections` must be at least 1",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], max_pending: 10 } }",
            "`max_pending` needs `max_connections`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], max_pending: -1, max_connections: 2 } }",
            "invalid value: integer `-1`, expected a whole number, 0 or more",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], dns_refresh: 10ms } }",
            "`dns_refresh` must be at least 100ms",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], stream_idle_timeout: -5s } }",
            "invalid duration",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, match: { query: [{ name: v, media_type: \"application/json\" }] } }]",
            "`media_type` applies to headers",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, match: { cookies: [{ name: c, media_type: \"application/json\" }] } }]",
            "not to the cookie `c`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, match: { cookies: [{ name: c, regex: \"(\" }] } }]",
            "invalid regex",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, match: { headers: [{ name: accept, media_type: \"json\" }] } }]",
            "invalid media type `json`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, match: { headers: [{ name: accept, media_type: \"application/json; q=0.5\" }] } }]",
            "names a `q` weight",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, match: { headers: [{ name: accept, media_type: \"application/json\", exact: x }] } }]",
            "exactly one of `exact`, `regex`, `present`, `media_type`",
        ),
        (
            "upstreams: { u: { targets: [{ url: \"http://a:1\", weight: 0 }] } }",
            "weight must be at least 1",
        ),
        (
            "upstreams: { u: { targets: [{ url: \"http://a:1\", wieght: 2 }] } }",
            "did you mean `weight`?",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], load_balancing: { algorithm: hash } } }",
            "needs `hash_on`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], load_balancing: { algorithm: random, hash_on: { path: true } } } }",
            "applies only to `algorithm: hash`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], load_balancing: { algorithm: least_connections } } }",
            "expected one of: round_robin, random, least_request, hash",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], load_balancing: { algorithm: hash, hash_on: { header: \"bad name\" } } } }",
            "invalid header name",
        ),
        (
            "upstreams: { u: { targets: [\"http://a/b\"] } }",
            "must not have a path",
        ),
        (
            "server: { trusted_proxies: [\"10.0.0.0/99\"] }",
            "invalid address or CIDR",
        ),
        (
            "listeners: [{ address: \"127.0.0.1:1\" }, { address: \"127.0.0.1:1\" }]",
            "two listeners",
        ),
        (
            "listeners: [{ address: \"127.0.0.1:9901\" }]",
            "is also a listener's",
        ),
        (
            "listeners: [{ address: \"127.0.0.1:1\", tls: { certificates: [{ cert: /nonexistent.pem, key: /nonexistent.key }] } }]",
            "cannot read `/nonexistent.pem`",
        ),
        ("version: 2", "unsupported config version 2"),
        (
            "listeners: [{ address: \"${NOT_SET}\" }]",
            "environment variable `NOT_SET` is not set",
        ),
        ("policies: [{ type: headerz }]", "did you mean `headers`?"),
        (
            "policies: [{ type: headers, request: { set: { \"bad name\": x } } }]",
            "invalid header name",
        ),
        ("routes: [ {", "invalid YAML"),
        ("- a\n- b", "must be a mapping"),
        (
            "policies: [{ type: api_key }]",
            "no consumer has an API key",
        ),
        (
            "consumers: [{ name: a, api_keys: [my-plain-key] }]",
            "API keys are stored as `sha256:<hex>`",
        ),
        (
            "consumers: [{ name: a, api_keys: [\"sha256:abababababababababababababababababababababababababababababababab\"] }, { name: b, api_keys: [\"sha256:abababababababababababababababababababababababababababababababab\"] }]",
            "also a key of consumer `a`",
        ),
        (
            "consumers: [{ name: a }, { name: a }]",
            "duplicate consumer name `a`",
        ),
        (
            "consumers: [{ name: a, basic_auth: { password_hash: hunter2 } }]",
            "never in plain text",
        ),
        (
            "policies: [{ type: basic_auth }]",
            "no consumer has Basic credentials",
        ),
        (
            "policies: [{ type: jwt, issuers: [] }]",
            "`issuers` is empty",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [none], keys: [{ secret: x }] }] }]",
            "`none` is not a supported algorithm",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [HS256, RS256], keys: [{ secret: x }] }] }]",
            "cannot be trusted from one issuer",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [HS256], keys: [{ secret: short }] }] }]",
            "at least 32 are required",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [HS256], keys: [{ pem_file: k.pem }] }] }]",
            "not a PEM key",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [RS256], keys: [{ secret: x }] }] }]",
            "not a secret",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [RS256] }] }]",
            "exactly one of `keys` and `jwks_url`",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [HS256], jwks_url: \"https://x/j\" }] }]",
            "must not publish",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [RS256], jwks_url: \"ftp://x\" }] }]",
            "is not an http(s) URL",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [RS256], jwks_url: \"https://a/j\" }, { algorithms: [RS256], jwks_url: \"https://b/j\" }] }]",
            "each needs `issuer`",
        ),
        (
            "policies: [{ type: acl, allow: [admins] }]",
            "no authentication policy runs before it",
        ),
        (
            "policies: [{ type: any_of, policies: [{ type: ip_filter, allow: [\"10.0.0.0/8\"] }] }]",
            "at least two authentication policies",
        ),
        (
            "policies: [{ type: ip_filter, allow: [\"10.0.0.0/33\"] }]",
            "invalid address or CIDR",
        ),
        (
            "policies: [{ type: cors, origins: [\"*\"], credentials: true }]",
            "cannot be combined with origin `*`",
        ),
        (
            "policies: [{ type: cors, origins: [app.example.com] }]",
            "is not an origin",
        ),
        (
            "policies: [{ type: body_limit, max_bytes: 0 }]",
            "`max_bytes` must be greater than 0",
        ),
        (
            "server: { client_idle_timeout: 0s }",
            "`client_idle_timeout` must be longer than 0s",
        ),
        (
            "server: { request_header_timeout: 0ms }",
            "`request_header_timeout` must be longer than 0s",
        ),
        ("policies: [{ type: jwtt }]", "did you mean `jwt`?"),
        (
            "upstreams: { u: { targets: [\"http://127.0.0.1:1\"], health_check: { grpc_service: x } } }",
            "gRPC health checks need HTTP/2 targets",
        ),
        (
            "upstreams: { u: { targets: [\"h2c://127.0.0.1:1\"], health_check: { grpc_service: x, path: /h } } }",
            "`grpc_service` and `path` cannot be combined",
        ),
        (
            "policies: [{ type: cors, origins: [\"*\"] }, { type: cors, origins: [\"*\"] }]",
            "a second `cors` policy in the same list would never be used",
        ),
        (
            "redis: { url: \"redis://a:1\", cluster_nodes: [\"redis://b:1\"] }",
            "exactly one of `url`, `cluster_nodes` and `sentinel`",
        ),
        (
            "policies: [{ type: concurrency_limit, max_in_flight: 10, key: client_ip, adaptive: { target_latency: 100ms } }]",
            "cannot be split by key",
        ),
        (
            "policies: [{ type: concurrency_limit, max_in_flight: 10, adaptive: { target_latency: 100ms, min_in_flight: 11 } }]",
            "`min_in_flight` must be between 1 and `max_in_flight` (10)",
        ),
        (
            "policies: [{ type: rate_limit, limits: [{ requests: 1, per: 1h, burst: 5, algorithm: sliding_window }] }]",
            "`burst` applies to token-bucket limits",
        ),
        (
            "policies: [{ type: rate_limit, key: { composite: [route] }, limits: [{ requests: 1, per: 1s }] }]",
            "a composite key needs at least two parts",
        ),
        (
            "policies: [{ type: concurrency_limit, max_in_flight: 0 }]",
            "`max_in_flight` must be at least 1",
        ),
        (
            "policies: [{ type: rate_limit, store: redis, limits: [{ requests: 1, per: 1s }] }]",
            "`store: redis` needs the top-level `redis` section",
        ),
        (
            "policies: [{ type: rate_limit, on_store_failure: fail_closed, limits: [{ requests: 1, per: 1s }] }]",
            "applies only with `store: redis`",
        ),
        (
            "policies: [{ type: rate_limit, batch: 5, limits: [{ requests: 1, per: 1s }] }]",
            "`batch` applies only with `store: redis`",
        ),
        (
            "redis: { url: \"redis://x\" }\npolicies: [{ type: rate_limit, store: redis, batch: 0, limits: [{ requests: 1, per: 1s }] }]",
            "`batch` must be at least 1",
        ),
        (
            "redis: { url: \"http://127.0.0.1:6379\" }",
            "is not a Redis URL",
        ),
        (
            "policies: [{ type: rate_limit, store: memcached, limits: [{ requests: 1, per: 1s }] }]",
            "memcached",
        ),
        (
            "policies: [{ type: introspection, url: nope, client_id: a, client_secret: b }]",
            "`nope` is not an http(s) URL",
        ),
        (
            "policies: [{ type: introspection, url: \"https://idp/i\", client_id: \"\", client_secret: b }]",
            "must not be empty",
        ),
        (
            "consumers: [{ name: a, client_cert_names: [x] }, { name: b, client_cert_names: [x] }]",
            "certificate name `x` also identifies consumer `a`",
        ),
        (
            "listeners: [{ address: \"127.0.0.1:0\", tls: { certificates: [{ cert: /nonexistent.pem, key: /nonexistent.key }], client_certificates: { ca: /nonexistent-ca.pem } } }]",
            "cannot read `/nonexistent-ca.pem`",
        ),
        (
            "policies: [{ type: jwt, issuers: [{ algorithms: [RS256], jwks_url: \"https://a/j\", jwks_min_refresh: 0s }] }]",
            "`jwks_min_refresh` must be at least 1s",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, grpc_transcode: { descriptor_set: /nonexistent.pb } }]",
            "cannot read `/nonexistent.pb`",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, grpc_transcode: { descriptor_set: Cargo.toml } }]",
            "not a valid descriptor set",
        ),
        (
            "upstreams: { g: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: g, grpc_transcode: { descriptor_set: x.pb } }]",
            "upstream `g` has `http://` targets; gRPC needs HTTP/2",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, rewrite: { path: /x }, grpc_transcode: { descriptor_set: x.pb } }]",
            "cannot be combined with a path `rewrite`",
        ),
        (
            "routes: [{ respond: { status: 200 }, grpc_transcode: { descriptor_set: x.pb } }]",
            "needs the route to have an `upstream`",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, grpc_transcode: { descriptor_set: x.pb, emit_default: true } }]",
            "did you mean `emit_defaults`?",
        ),
        (
            "upstreams: { g: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: g, grpc_web: true }]",
            "upstream `g` has `http://` targets; gRPC needs HTTP/2",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, grpc_web: true, grpc_transcode: { descriptor_set: x.pb } }]",
            "`grpc_web` and `grpc_transcode` cannot be combined",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, grpc_transcode: { services: [a.B] } }]",
            "needs exactly one of `descriptor_set` and `reflection: true`",
        ),
        (
            "upstreams: { g: { targets: [\"h2c://a:1\"] } }\nroutes: [{ upstream: g, grpc_transcode: { descriptor_set: x.pb, reflection: true } }]",
            "needs exactly one of `descriptor_set` and `reflection: true`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: u, path: \"/{b.id}\" }, { name: b, upstream: u, path: \"/{a.id}\" }] } }]",
            "backends depend on each other in a circle: a → b → a",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: u, path: \"/{a.id}\" }] } }]",
            "backend `a` uses its own answer",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: u, path: \"/{usr.id}\" }, { name: user, upstream: u, path: \"/\" }] } }]",
            "`{usr.id}` names no backend `usr`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: u, path: \"/{id}\" }] } }]",
            "`{id}` is not a parameter of this route's path",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { partial_status: 500, backends: [{ name: a, upstream: u, path: \"/\" }] } }]",
            "`partial_status` is 500; it must be 200, 206 or 207",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: nope, path: \"/\" }, { name: a, upstream: u, path: x }] } }]",
            "unknown upstream `nope`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: u, path: \"/\" }, { name: a, upstream: u, path: \"/\" }] } }]",
            "backend name `a` appears twice",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, aggregate: { backends: [{ name: a, upstream: u, path: \"/\" }] } }]",
            "more than one of `upstream`, `split`, `respond`, `redirect`, `aggregate`",
        ),
        (
            "routes: [{ aggregate: { backends: [] } }]",
            "`aggregate` needs at least one backend",
        ),
        (
            "policies: [{ type: compression, content_types: [json] }]",
            "`json` is not a media type",
        ),
        (
            "policies: [{ type: compression, algorithms: [deflate] }]",
            "unknown value `deflate`",
        ),
        (
            "policies: [{ type: json_transform, status: { 201: 99 } }]",
            "`201: 99` is not a status rewrite",
        ),
        (
            "policies: [{ type: json_transform, remove: [\"a..b\"] }]",
            "`remove` has an empty path",
        ),
        (
            "policies: [{ type: headers, request: { set: { x-a: \"%{client}\" } } }]",
            "unknown variable `%{client}`",
        ),
        (
            "routes: [{ respond: { status: 200, headers: { x-a: \"%{route}\" } } }]",
            "not available in `respond` headers",
        ),
        (
            "policies: [{ type: cache, max_entries: 0 }]",
            "`max_entries` must be at least 1",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ upstream: u, rewrite: { query: { remove: [\"\"] } } }]",
            "a query parameter name is empty",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ match: { path: { prefix: /s } }, upstream: u, soap: { wsdl: /nonexistent/x.wsdl } }]",
            "/nonexistent/x.wsdl: cannot read it",
        ),
        (
            "routes: [{ match: { path: { prefix: /s } }, respond: { status: 200 }, soap: { wsdl: x.wsdl } }]",
            "`soap` needs the route to have an `upstream`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ match: { path: { exact: /s } }, upstream: u, soap: { wsdl: x.wsdl } }]",
            "`soap` needs a `prefix:` path match",
        ),
        (
            &format!(
                "upstreams: {{ u: {{ targets: [\"http://a:1\"] }} }}\nroutes: [{{ match: {{ path: {{ prefix: /s }} }}, upstream: u, soap: {{ wsdl: {WSDL}, operations: {{ Nope: {{ path: /x }} }} }} }}]"
            ),
            "`Nope` is not an operation of port `CalculatorService`",
        ),
        (
            &format!(
                "upstreams: {{ u: {{ targets: [\"http://a:1\"] }} }}\nroutes: [{{ match: {{ path: {{ prefix: /s }} }}, upstream: u, soap: {{ wsdl: {WSDL}, operations: {{ Add: {{ path: \"/a/{{x\" }} }} }} }}]"
            ),
            "is not a segment",
        ),
        (
            &format!(
                "upstreams: {{ u: {{ targets: [\"http://a:1\"] }} }}\nroutes: [{{ match: {{ path: {{ prefix: /s }} }}, upstream: u, soap: {{ wsdl: {WSDL}, service: Other }} }}]"
            ),
            "no SOAP port matches",
        ),
        (
            "policies: [{ type: xml_json, root: \"1st\" }]",
            "`1st` is not an XML element name",
        ),
        (
            "policies: [{ type: xml_json, namespaces: { \"a:b\": \"urn:x\" } }]",
            "`a:b` is not a namespace prefix",
        ),
        (
            "policies: [{ type: xml_json, max_depth: 0 }]",
            "the limit must be at least 1",
        ),
        (
            "policies: [{ type: xml_json, max_attributes: 0 }]",
            "256 attributes",
        ),
        (
            "policies: [{ type: xml_json, request: sideways }]",
            "sideways",
        ),
        (
            "policies: [{ type: request_decompression, max_bytes: 0 }]",
            "`max_bytes` must be at least 1",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"], preconnect: 10, pool_max_idle: 5 } }",
            "`preconnect: 10` is more than the pool keeps",
        ),
        (
            "policies: [{ type: cache, key: { query: some } }]",
            "`some` is not a query key setting",
        ),
        (
            "policies: [{ type: cache, key: { headers: [\"bad header\"] } }]",
            "invalid header name `bad header`",
        ),
        (
            "policies: [{ type: headers, request: { set: { x-a: \"%{claim.}\" } } }]",
            "unknown variable `%{claim.}`",
        ),
        (
            "upstreams: { u: { targets: [\"http://a:1\"] } }\nroutes: [{ aggregate: { backends: [{ name: a, upstream: u, path: \"/\", fields: [\"a..b\"], extract: \"x.\" }] } }]",
            "`fields` has an empty path",
        ),
    ];
    for (text, want) in cases {
        let errs = errors(text).join("\n");
        assert!(
            errs.contains(want),
            "for {text:?}: expected {want:?} in\n{errs}"
        );
    }
}

#[test]
fn diagnostics_render_file_line_column_snippet_and_hint() {
    let err = load("routes:\n  - upstream: nope\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("test.yaml:2:15: error: unknown upstream `nope`"),
        "{err}"
    );
    assert!(
        err.contains(" 2 |   - upstream: nope\n   |               ^"),
        "{err}"
    );
    assert!(err.contains("hint: define it under `upstreams:`"), "{err}");
}

#[test]
fn secrets_are_redacted_and_env_not_expanded() {
    let c = load("upstreams: { u: { targets: [\"${BACKEND}\"] } }\nserver: { request_id_header: x-id }\nextra_token: 1\n").err();
    assert!(c.is_some());
    let c = load("upstreams: { u: { targets: [\"${BACKEND}\"] } }\npolicies: [{ type: headers, request: { set: { authorization: \"Bearer ${PORT}\" } } }]\n").unwrap();
    let shown = c.redacted().to_string();
    assert!(shown.contains("${BACKEND}"), "{shown}");
    assert!(!shown.contains("127.0.0.1:9000"), "{shown}");
}

#[test]
fn empty_file_is_valid() {
    let c = load("").unwrap();
    assert!(c.routes.is_empty());
    assert_eq!(c.admin.unwrap().to_string(), "127.0.0.1:9901");
}

/// `off` unquoted is the YAML boolean false, and so are `false` and `no`: for the keys whose
/// documented value is `off`, each means off.
#[test]
fn unquoted_off_turns_the_admin_listener_and_access_log_off() {
    for off in ["off", "false", "no", "\"off\""] {
        let c = load(&format!(
            "admin:\n  address: {off}\naccess_log: {{ target: {off} }}\n"
        ))
        .unwrap_or_else(|d| panic!("{off}: {d}"));
        assert_eq!(c.admin, None, "{off}");
        assert!(
            matches!(c.access_log, portico_config::AccessLog::Off),
            "{off}: {:?}",
            c.access_log
        );
    }
    // `on` is no address: say what YAML made of it rather than asking for a port.
    assert_eq!(
        errors("admin:\n  address: on\naccess_log: { target: yes }\n"),
        [
            "2:12: `address` is the YAML boolean true here (unquoted `on`, `yes` and `true` all are) | give `host:port`, or `off`",
            "3:23: `target` is the YAML boolean true here (unquoted `on`, `yes` and `true` all are) | use `stdout`, `off` or a file path",
        ]
    );
}

#[test]
fn many_routes_compile() {
    let mut text =
        String::from("upstreams: { u: { targets: [\"http://127.0.0.1:1\"] } }\nroutes:\n");
    for i in 0..10_000 {
        text.push_str(&format!("  - {{ name: r{i}, match: {{ hosts: [h{}.example.com], path: {{ template: \"/svc{i}/{{id}}/items\" }} }}, upstream: u }}\n", i % 50));
    }
    let c = load(&text).unwrap();
    let h = HeaderMap::new();
    assert_eq!(
        route(
            &c,
            Some("h7.example.com"),
            Method::GET,
            "/svc9957/5/items",
            &h
        )
        .unwrap()
        .0,
        "r9957"
    );
    assert!(
        route(
            &c,
            Some("h8.example.com"),
            Method::GET,
            "/svc9957/5/items",
            &h
        )
        .is_none()
    );
}

#[test]
fn json_schema_describes_the_file() {
    let s = portico_config::json_schema();
    let text = s.to_string();
    for key in [
        "listeners",
        "upstreams",
        "routes",
        "strip_prefix",
        "trusted_proxies",
        "apis",
        "openapi",
        "enforce_security",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
}

#[test]
fn bad_durations_are_reported_at_their_key() {
    let e = errors(
        "policies:\n  - type: jwt\n    issuers:\n      - algorithms: [RS256]\n        jwks_url: https://idp/jwks\n    leeway: 30\n",
    );
    assert_eq!(
        e,
        [
            "6:13: invalid duration `30` | a duration needs a unit: write `30s` for seconds (or `30ms`, `30m`)"
        ]
    );
    // Anywhere in a policy (here inside `any_of`), an error is reported at its key.
    let e = errors(
        "policies:\n  - type: any_of\n    policies:\n      - type: jwt\n        issuers: [{ algorithms: [RS256], jwks_url: https://idp/jwks, jwks_refresh: 5 }]\n      - { type: basic_auth }\n",
    );
    assert_eq!(
        e,
        [
            "5:84: invalid duration `5` | a duration needs a unit: write `5s` for seconds (or `5ms`, `5m`)"
        ]
    );
    let e = errors("policies:\n  - { type: basic_auth, cache_ttl: 1m, realmm: x }\n");
    assert_eq!(e, ["2:40: unknown key `realmm` | did you mean `realm`?"]);
    let e = errors(
        "routes:\n  - { upstream: u, policies: [{ type: cors, max_age: 1 }] }\nupstreams: { u: { targets: [\"http://a:1\"] } }\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("2:54: invalid duration `1`"), "{e:?}");
    let e = errors("policies:\n  - { realm: x, type: jwtt }\n");
    assert_eq!(e, ["2:23: unknown value `jwtt` | did you mean `jwt`?"]);
    let e = errors("policies:\n  - { realm: x }\n");
    assert_eq!(
        e,
        ["2:5: missing required key `type` | add `type:` to this mapping"]
    );
}

#[test]
fn jwt_secrets_from_files() {
    let dir = std::env::temp_dir().join(format!("portico-secret-file-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(
        dir.join("secrets/hs"),
        "an-hmac-secret-of-more-than-32-bytes!!\n",
    )
    .unwrap();
    // 32 bytes only with the newline: the newline is not part of the secret.
    std::fs::write(
        dir.join("secrets/short"),
        "a-secret-of-thirty-one-bytes!!!\n",
    )
    .unwrap();
    let errs = |text: &str| -> Vec<String> {
        match load_str("test.yaml", text, &dir, &env) {
            Ok(_) => Vec::new(),
            Err(d) => {
                d.0.iter()
                    .map(|d| {
                        let l = d.loc.unwrap();
                        format!("{}:{}: {}", l.line, l.column, d.message)
                    })
                    .collect()
            }
        }
    };
    let policy = |key: &str| {
        format!(
            "policies:\n  - type: jwt\n    issuers:\n      - algorithms: [HS256]\n        keys: [{key}]\n"
        )
    };
    // Relative to the config file's folder.
    assert_eq!(
        errs(&policy("{ secret_file: secrets/hs }")),
        Vec::<String>::new()
    );
    let e = errs(&policy("{ secret_file: secrets/missing }"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("5:31: cannot read"), "{e:?}");
    assert!(e[0].contains("secrets/missing"), "{e:?}");
    assert_eq!(
        errs(&policy("{ secret_file: secrets/short }")),
        ["5:31: this HMAC secret is 31 bytes; at least 32 are required"]
    );
    assert_eq!(
        errs(&policy("{ secret: x, secret_file: secrets/hs }")),
        ["5:42: a key has both `secret` and `secret_file`"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn jwt_issuer_mixes_public_key_types() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../portico-proxy/tests/keys");
    let load = |text: &str| load_str("test.yaml", text, &keys, &env);
    let policy = |issuer: &str| format!("policies:\n  - type: jwt\n    issuers:\n{issuer}");
    // RS256 and ES256 from one JWKS, and from static keys of both types.
    for issuer in [
        "      - algorithms: [RS256, ES256, PS256, EdDSA]\n        jwks_url: https://idp.example.com/jwks\n",
        "      - algorithms: [RS256, ES256]\n        keys: [{ kid: r, pem_file: rsa.pub }, { kid: e, pem_file: ec.pub }]\n",
    ] {
        if let Err(e) = load(&policy(issuer)) {
            panic!("{issuer}: {e}");
        }
    }
    let errs = |text: &str| -> Vec<(String, String)> {
        match load(text) {
            Ok(_) => panic!("expected errors for {text}"),
            Err(d) => {
                d.0.iter()
                    .map(|d| {
                        let l = d.loc.unwrap();
                        (
                            format!("{}:{}: {}", l.line, l.column, d.message),
                            d.hint.clone().unwrap_or_default(),
                        )
                    })
                    .collect()
            }
        }
    };
    // A key whose type none of the algorithms uses.
    let e = errs(&policy(
        "      - algorithms: [RS256]\n        keys: [{ pem_file: ec.pub }]\n",
    ));
    assert_eq!(
        e[0].0, "5:28: this is an EC key, but the issuer's algorithms (RS256) need RSA",
        "{e:?}"
    );
    assert!(e[0].1.contains("ES256/384"), "{e:?}");
    // A shared secret never joins public keys, and the hint does not send the user to split the
    // issuer in two: two entries with one `issuer` are refused as a duplicate, whose hint is to
    // merge them.
    let e = errs(&policy(
        "      - issuer: https://idp\n        algorithms: [HS256, RS256]\n        keys: [{ pem_file: rsa.pub }]\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].0
            .starts_with("5:21: HS algorithms (a shared secret) and public-key algorithms"),
        "{e:?}"
    );
    for circular in ["split", "two issuers", "another issuer"] {
        assert!(!e[0].1.contains(circular), "{e:?}");
    }
    let e = errs(&policy(
        "      - issuer: https://idp\n        algorithms: [HS256]\n        keys: [{ secret: an-hmac-secret-of-more-than-32-bytes!! }]\n      - issuer: https://idp\n        algorithms: [RS256]\n        keys: [{ pem_file: rsa.pub }]\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].0.contains("is listed twice"), "{e:?}");
    assert!(e[0].1.contains("merge"), "{e:?}");
}
