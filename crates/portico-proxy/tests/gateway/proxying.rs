use http_body_util::Full;
use portico_testkit::*;

use crate::{config, empty, proxy_to, req};

#[tokio::test]
async fn proxies_and_sets_forwarding_headers() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  echo: {{ targets: ["{}"] }}
routes:
  - match: {{ path: {{ prefix: / }} }}
    upstream: echo
"#,
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let got = send(
        &c,
        req("GET", &gw.url("/a/b?x=1&y=2"))
            .header("host", "api.example.com")
            .header("connection", "x-hop")
            .header("x-hop", "secret")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-custom", "kept")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = got.json();
    assert_eq!(seen["path"], "/a/b");
    assert_eq!(seen["query"], "x=1&y=2");
    let h = &seen["headers"];
    assert_eq!(h["host"], "api.example.com", "client Host is preserved");
    assert_eq!(h["x-custom"], "kept");
    assert!(
        h.get("x-hop").is_none(),
        "headers named in Connection are hop-by-hop: {h}"
    );
    assert!(h.get("connection").is_none());
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "an untrusted client cannot forge X-Forwarded-For"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    let rid = h["x-request-id"].as_str().unwrap();
    assert_eq!(rid.len(), 32);
    assert_eq!(
        got.header("x-request-id"),
        Some(rid),
        "the same id goes upstream and back"
    );
    assert_eq!(got.header("x-upstream"), Some("echo"));

    // A client-supplied request id is propagated unchanged.
    let got = send(
        &c,
        req("POST", &gw.url("/p"))
            .header("x-request-id", "client-id-1")
            .body("hello".into())
            .unwrap(),
    )
    .await;
    assert_eq!(got.json()["headers"]["x-request-id"], "client-id-1");
    assert_eq!(got.json()["body"], "hello");
    assert_eq!(got.header("x-request-id"), Some("client-id-1"));
}

#[tokio::test]
async fn trusted_proxies_and_forwarded_header() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"server:
  trusted_proxies: ["127.0.0.0/8"]
  forwarded: true
upstreams:
  echo: {{ targets: ["{}"] }}
routes:
  - upstream: echo
"#,
        up.url()
    )))
    .await;
    let got = send(
        &client(false, &[]),
        req("GET", &gw.url("/"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .body(empty())
            .unwrap(),
    )
    .await;
    let h = &got.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "a trusted proxy's proto is kept"
    );
    assert!(
        h["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http"),
        "{h}"
    );
}

#[tokio::test]
async fn rewrites_static_responses_redirects_and_policies() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  echo: {{ targets: ["{}"] }}
policies:
  - type: headers
    response: {{ set: {{ x-global: g }} }}
routes:
  - name: strip
    match: {{ path: {{ prefix: /api }} }}
    upstream: echo
    rewrite: {{ strip_prefix: true, host: internal.svc }}
  - name: tmpl
    match: {{ path: {{ template: "/users/{{id}}/orders/{{*rest}}" }}, methods: [GET] }}
    upstream: echo
    rewrite: {{ path: "/v2/orders/{{rest}}?user={{id}}" }}
    policies:
      - type: headers
        request: {{ set: {{ x-added: "1" }}, remove: [x-drop] }}
        response: {{ add: {{ x-route: tmpl }}, remove: [x-upstream] }}
  - name: static
    match: {{ path: {{ exact: /ping }} }}
    respond: {{ status: 202, body: pong, content_type: text/plain, headers: {{ x-s: "1" }} }}
  - name: moved
    match: {{ path: {{ template: "/old/{{name}}" }} }}
    redirect: {{ to: "https://new.example.com/{{name}}", status: 308 }}
"#,
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let got = send(
        &c,
        req("GET", &gw.url("/api/items/7?q=1"))
            .body(empty())
            .unwrap(),
    )
    .await;
    let seen = got.json();
    assert_eq!(seen["path"], "/items/7");
    assert_eq!(seen["query"], "q=1");
    assert_eq!(seen["headers"]["host"], "internal.svc");
    assert_eq!(got.header("x-global"), Some("g"));
    let got = send(&c, req("GET", &gw.url("/api")).body(empty()).unwrap()).await;
    assert_eq!(got.json()["path"], "/");

    let got = send(
        &c,
        req("GET", &gw.url("/users/42/orders/a/b?page=2"))
            .header("x-drop", "1")
            .body(empty())
            .unwrap(),
    )
    .await;
    let seen = got.json();
    assert_eq!(seen["path"], "/v2/orders/a/b");
    assert_eq!(seen["query"], "user=42&page=2");
    assert_eq!(seen["headers"]["x-added"], "1");
    assert!(seen["headers"].get("x-drop").is_none());
    assert_eq!(got.header("x-route"), Some("tmpl"));
    assert_eq!(got.header("x-upstream"), None);

    let got = send(&c, req("GET", &gw.url("/ping")).body(empty()).unwrap()).await;
    assert_eq!(got.status, 202);
    assert_eq!(got.text(), "pong");
    assert_eq!(got.header("x-s"), Some("1"));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("x-global"), Some("g"));

    let got = send(&c, req("GET", &gw.url("/old/doc")).body(empty()).unwrap()).await;
    assert_eq!(got.status, 308);
    assert_eq!(got.header("location"), Some("https://new.example.com/doc"));
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  echo: {{ targets: ["{}"] }}
routes:
  - match: {{ path: {{ prefix: /public }} }}
    upstream: echo
  - match: {{ path: {{ prefix: /admin }} }}
    respond: {{ status: 403, body: forbidden }}
"#,
        up.url()
    )))
    .await;
    let resp = raw(
        gw.addr,
        b"GET /public/../admin/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let resp = raw(
        gw.addr,
        b"GET /public//./a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.contains("\"path\":\"/public/a\""), "{resp}");
}

#[tokio::test]
async fn large_bodies_stream_in_bounded_memory() {
    use http_body_util::BodyExt;
    const SIZE: usize = 256 << 20;
    // Upstream: counts the upload without keeping it, answers with SIZE bytes generated on the fly.
    let up = serve(|req: http::Request<hyper::body::Incoming>| async move {
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(f) = body.frame().await {
            n += f.unwrap().data_ref().map_or(0, |d| d.len());
        }
        let (tx, rx) = portico_proxy::body::ChannelBody::new(2);
        tokio::spawn(async move {
            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
            for _ in 0..(SIZE >> 20) {
                if tx.send(chunk.clone()).await.is_err() {
                    return;
                }
            }
        });
        let mut r = http::Response::new(http_body_util::Either::Right(rx));
        r.headers_mut()
            .insert("x-received", n.to_string().parse().unwrap());
        r
    })
    .await;
    let gw = gateway(&proxy_to(&up.url())).await;
    let before = rss_kib();
    // Upload SIZE bytes with a streamed body (no Content-Length), download SIZE bytes.
    let (tx, rx) = portico_proxy::body::ChannelBody::new(2);
    tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![b'y'; 1 << 20]);
        for _ in 0..(SIZE >> 20) {
            tx.send(chunk.clone()).await.unwrap();
        }
    });
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<portico_proxy::body::ChannelBody>();
    let resp = c
        .request(http::Request::post(gw.url("/up")).body(rx).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-received"], SIZE.to_string().as_str());
    let mut body = resp.into_body();
    let mut n = 0usize;
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(n, SIZE);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    // 512 MiB crossed the gateway; buffering any real fraction of it would show here.
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB while streaming 2 x 256 MiB"
    );
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_request() {
    let up = echo_server().await;
    let dir = temp_dir("log");
    let log = dir.join("access.log");
    let gw = gateway(&config(&format!(
        "access_log: {{ target: \"{}\" }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: r\n    upstream: u\n",
        log.display(),
        up.url()
    )))
    .await;
    let got = send(
        &client(false, &[]),
        req("POST", &gw.url("/x?y=1"))
            .header("host", "h.example")
            .body("12345".into())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let _ = get(&gw.url("/second")).await;
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/x");
    assert_eq!(v["query"], "y=1");
    assert_eq!(v["host"], "h.example");
    assert_eq!(v["route"], "r");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 5);
    assert_eq!(v["bytes_out"].as_u64().unwrap() as usize, got.body.len());
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["upstream"], up.url());
    assert_eq!(v["request_id"], got.header("x-request-id").unwrap());
    assert_eq!(v["complete"], true);
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn admin_endpoints() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\npolicies:\n  - type: headers\n    request: {{ set: {{ authorization: \"Bearer secret-value\" }} }}\nroutes:\n  - name: r1\n    upstream: u\n",
        up.url()
    )))
    .await;
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    let _ = get(&gw.url("/x")).await;
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains("portico_requests_total{route=\"r1\",method=\"GET\",status=\"200\"}"),
        "{m}"
    );
    assert!(
        m.contains("portico_request_duration_seconds_bucket{route=\"r1\""),
        "{m}"
    );
    assert!(
        m.contains("portico_upstream_duration_seconds_bucket{upstream=\"u\""),
        "{m}"
    );
    assert!(m.contains("portico_open_connections"), "{m}");
    assert!(m.contains("portico_config_generation"), "{m}");
    let cfg = get(&gw.admin_url("/config")).await;
    let v = cfg.json();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["hash"].as_str().unwrap().len(), 16);
    let shown = v["config"].to_string();
    assert!(!shown.contains("secret-value"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_eq!(get(&gw.admin_url("/nope")).await.status, 404);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let up = serve(|_req| async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        http::Response::new(full("slow done"))
    })
    .await;
    let gw = gateway(&proxy_to(&up.url())).await;
    let url = gw.url("/");
    let inflight = tokio::spawn(async move { get(&url).await });
    // In flight: the upstream has the request (and answers 300 ms later, during the drain).
    eventually("the request reaches the upstream", async || up.hits() >= 1).await;
    let left = gw.gw.shutdown().await;
    assert_eq!(left, 0);
    let got = inflight.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "slow done");
    // New connections are refused once drained.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 503);
}

#[tokio::test]
async fn upstream_connections_are_reused_and_expire_when_idle() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"], idle_timeout: 1s }}\nroutes:\n  - upstream: u\n",
        up.url()
    )))
    .await;
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(
        up.conns(),
        1,
        "sequential requests share one keep-alive connection"
    );
    // Idle past idle_timeout: the pooled connection is not used again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    assert_eq!(up.conns(), 2);
}

#[tokio::test]
async fn http2_upstreams_get_more_connections_when_streams_run_out() {
    // Every request is held until all 150 are at the upstream at once.
    let (release, up) = crate::held_upstream().await;
    // The client's 150 streams share one connection to the gateway: it must take them all.
    let gw = gateway(&config(&format!(
        "server: {{ http2_max_concurrent_streams: 200 }}\nupstreams:\n  u: {{ targets: [\"h2c://{}\"] }}\nroutes:\n  - upstream: u\n",
        up.addr
    )))
    .await;
    let c = client(true, &[]);
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let c = c.clone();
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move {
            send(&c, req("GET", &url).body(empty()).unwrap())
                .await
                .status
        }));
    }
    eventually("all 150 streams reach the upstream at once", async || {
        up.hits() >= 150
    })
    .await;
    release.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        up.conns() >= 2,
        "150 concurrent streams need more than one connection (100 streams each); got {}",
        up.conns()
    );
    assert!(
        up.conns() <= 4,
        "connections are shared, not one per request; got {}",
        up.conns()
    );
}

#[tokio::test]
async fn deprecated_routes_announce_it() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - match: {{ path: {{ prefix: /v1 }} }}\n    upstream: u\n    deprecation: {{ since: \"2026-06-30\", sunset: \"2027-01-01\", link: \"https://example.com/migrate\" }}\n  - upstream: u\n",
        up.url()
    )))
    .await;
    let got = get(&gw.url("/v1/x")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("deprecation"), Some("@1782777600"));
    assert_eq!(got.header("sunset"), Some("Fri, 01 Jan 2027 00:00:00 GMT"));
    assert_eq!(
        got.header("link"),
        Some("<https://example.com/migrate>; rel=\"deprecation\"; type=\"text/html\"")
    );
    let got = get(&gw.url("/v2/x")).await;
    assert_eq!(got.header("deprecation"), None);
}

#[tokio::test]
async fn query_parameters_are_set_and_removed_before_proxying() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  echo: {{ targets: ["{}"] }}
routes:
  - match: {{ path: {{ prefix: /q }} }}
    upstream: echo
    rewrite:
      query: {{ set: {{ version: "2", "a b": "x&y" }}, remove: [debug] }}
  - match: {{ path: {{ prefix: /s }} }}
    upstream: echo
    rewrite: {{ strip_prefix: true, query: {{ remove: [token] }} }}
"#,
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let get = |p: &str| send(&c, req("GET", &gw.url(p)).body(empty()).unwrap());
    let seen = get("/q/items?debug=1&keep=yes&version=1&debug=2")
        .await
        .json();
    assert_eq!(seen["path"], "/q/items");
    assert_eq!(seen["query"], "keep=yes&a%20b=x%26y&version=2");
    // Set parameters arrive even when the client sent no query.
    assert_eq!(get("/q").await.json()["query"], "a%20b=x%26y&version=2");
    // With a path rewrite too; removing the only parameter leaves no query at all.
    let seen = get("/s/x?token=secret").await.json();
    assert_eq!(
        (seen["path"].as_str(), seen["query"].as_str()),
        (Some("/x"), None)
    );
}

/// What a Prometheus text-format checker (`promtool check metrics`) requires of each family:
/// one `# HELP` and one `# TYPE` line, both before its first sample, and its samples in one
/// group. Returns the families seen, or the first violation.
fn check_exposition(text: &str) -> Result<std::collections::BTreeSet<String>, String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut help: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sampled: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, desc) = rest.split_once(' ').unwrap_or((rest, ""));
            if desc.trim().is_empty() {
                return Err(format!("empty HELP for {name}"));
            }
            if sampled.contains(name) {
                return Err(format!("HELP for {name} after its samples"));
            }
            *help.entry(name).or_default() += 1;
            if help[name] > 1 {
                return Err(format!("second HELP for {name}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("bad TYPE line {line}"))?;
            if sampled.contains(name) {
                return Err(format!("TYPE for {name} after its samples"));
            }
            if kinds.insert(name, kind).is_some() {
                return Err(format!("second TYPE for {name}"));
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            let name = &line[..line.find(['{', ' ']).ok_or(format!("bad sample {line}"))?];
            // A histogram's samples carry suffixes on the family's name.
            let family = if kinds.contains_key(name) {
                name
            } else {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| matches!(kinds.get(f), Some(&"histogram" | &"summary")))
                    .ok_or(format!("sample {name} has no TYPE before it"))?
            };
            if help.get(family) != Some(&1) {
                return Err(format!("sample of {family} has no HELP before it"));
            }
            if current.as_deref() != Some(family) {
                if sampled.contains(family) {
                    return Err(format!("samples of {family} are not in one group"));
                }
                sampled.insert(family.to_owned());
                current = Some(family.to_owned());
            }
        }
    }
    Ok(sampled)
}

#[tokio::test]
async fn every_metric_family_has_help_and_type() {
    let up = echo_server().await;
    // A port nothing listens on, for upstream errors.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let prefix = format!(
        "portico-test-{}-{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let gw = gateway(&config(&format!(
        r#"redis: {{ url: "redis://127.0.0.1:6379", key_prefix: "{prefix}", timeout: 200ms }}
upstreams:
  u: {{ targets: ["{up}"] }}
  down: {{ targets: ["http://{closed}"] }}
routes:
  - name: limited
    match: {{ path: {{ prefix: /limited }} }}
    upstream: u
    policies:
      - type: rate_limit
        store: redis
        limits: [{{ requests: 1, per: 1m }}]
  - name: denied
    match: {{ path: {{ prefix: /denied }} }}
    upstream: u
    policies: [{{ type: ip_filter, deny: ["127.0.0.1"] }}]
  - name: cached
    match: {{ path: {{ prefix: /cached }} }}
    upstream: u
    policies: [{{ type: cache }}]
  - name: xml
    match: {{ path: {{ prefix: /xml }} }}
    upstream: u
    policies: [{{ type: xml_json, request: xml_to_json, root: echo }}]
  - name: calc
    match: {{ path: {{ prefix: /calc }} }}
    upstream: u
    soap: {{ wsdl: "{wsdl}" }}
  - name: down
    match: {{ path: {{ prefix: /down }} }}
    upstream: down
  - name: r
    upstream: u
"#,
        up = up.url(),
        wsdl = soap_dir().join("calculator11.wsdl").display(),
    )))
    .await;
    let c = client(false, &[]);
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    // Two on a budget of one: at least one refused, whether Redis decides or is absent.
    get(&gw.url("/limited")).await;
    assert_eq!(get(&gw.url("/limited")).await.status, 429);
    assert_eq!(get(&gw.url("/denied")).await.status, 403);
    get(&gw.url("/cached")).await;
    let xml = req("POST", &gw.url("/xml"))
        .header("content-type", "text/xml")
        .body(Full::new(bytes::Bytes::from_static(b"<a>1</a>")))
        .unwrap();
    assert_eq!(send(&c, xml).await.status, 200);
    // The echo server's JSON is no SOAP envelope: a SOAP call with result `error`.
    let soap = req("POST", &gw.url("/calc/Add"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(b"{\"a\":1,\"b\":2}")))
        .unwrap();
    assert_eq!(send(&c, soap).await.status, 502);
    assert_eq!(get(&gw.url("/down")).await.status, 502);

    let m = get(&gw.admin_url("/metrics")).await.text();
    let families = check_exposition(&m).unwrap_or_else(|e| panic!("{e}\n{m}"));
    for f in [
        "portico_requests_total",
        "portico_request_duration_seconds",
        "portico_upstream_duration_seconds",
        "portico_upstream_errors_total",
        "portico_upstream_connections",
        "portico_rate_limited_total",
        "portico_redis_duration_seconds",
        "portico_access_denied_total",
        "portico_cache_requests_total",
        "portico_xml_json_conversions_total",
        "portico_soap_calls_total",
        "portico_open_connections",
        "portico_config_generation",
        "portico_config_info",
    ] {
        assert!(families.contains(f), "{f} not exported\n{m}");
    }
    assert!(
        m.contains("# HELP portico_config_info 1 for the active config's hash, 0 for"),
        "{m}"
    );
}

#[test]
fn the_exposition_check_finds_what_promtool_rejects() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n";
    assert!(check_exposition(good).is_ok());
    for bad in [
        "# TYPE a_total counter\na_total 1\n",
        "# HELP a_total A.\na_total 1\n",
        "# HELP a_total A.\n# HELP a_total A.\n# TYPE a_total counter\na_total 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n# HELP b B.\n# TYPE b gauge\nb 1\na_total{x=\"1\"} 2\n",
    ] {
        assert!(check_exposition(bad).is_err(), "{bad}");
    }
}
