//! The route table on arbitrary hosts, methods, paths, headers and queries.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue, Method};
use portico_config::Config;
use portico_config::router::{RequestView, match_path_in};

/// A table that uses every dimension the router indexes or tests.
const CONFIG: &str = r#"
routes:
  - name: exact
    match: { path: { exact: /health } }
    respond: {}
  - name: exact-slash
    match: { path: { exact: /a/ } }
    respond: {}
  - name: user
    match: { path: { template: "/users/{id}" }, methods: [GET] }
    respond: {}
  - name: user-files
    match: { path: { template: "/users/{id}/files/{*rest}" } }
    respond: {}
  - name: api
    match: { path: { prefix: /api } }
    respond: {}
  - name: api-v2
    match:
      path: { prefix: /api }
      methods: [POST]
      headers: [{ name: x-version, exact: "2" }]
    respond: {}
  - name: debug
    match: { path: { prefix: /api/debug }, query: [{ name: debug, exact: "on" }] }
    respond: {}
  - name: any-case
    match: { path: { prefix: /Docs }, case_sensitive: false }
    respond: {}
  - name: host
    match: { hosts: [api.example.com], path: { prefix: /v1 } }
    respond: {}
  - name: wildcard
    match: { hosts: ["*.example.com"], path: { template: "/t/{a}/{b}" } }
    respond: {}
  - name: catch-all
    match: { path: { prefix: / } }
    respond: {}
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        portico_config::load_str("router.yaml", CONFIG, std::path::Path::new("."), &|_| None)
            .expect("the fixed config loads")
    })
}

/// Input: lines `host`, `method`, `path`, `query`, `x-version`; missing lines are absent.
/// `find` never panics; the route it picks matches the path by `match_path` with exactly the
/// parameters the router captured; any path starting with `/` finds a route (the catch-all).
pub fn router(data: &[u8]) {
    let text = crate::text(data);
    let mut lines = text.split('\n');
    let host = lines.next().filter(|h| !h.is_empty());
    let method = lines
        .next()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let path = lines.next().unwrap_or("/");
    let query = lines.next().filter(|q| !q.is_empty());
    let mut headers = HeaderMap::new();
    if let Some(v) = lines.next().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert("x-version", v);
    }
    let view = RequestView {
        host,
        path,
        method: &method,
        headers: &headers,
        query,
    };
    let found = config().router.find(&view);
    match &found {
        Some(m) => {
            let again = match_path_in(&m.route.path, path, m.route.path_any_case);
            assert_eq!(
                again.as_deref(),
                Some(&m.params[..]),
                "route {} for {path:?}",
                m.route.name
            );
        }
        None => assert!(!path.starts_with('/'), "no route for {path:?}"),
    }
}
