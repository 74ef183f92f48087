//! OpenTelemetry traces, end to end: a real OTLP receiver (gRPC and HTTP), real upstreams.

use portico_testkit::{Span, client, echo_server, eventually, get, otlp_collector, send, serve};

use super::{config, empty, req};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn tracing_section(endpoint: &str, more: &str) -> String {
    format!("tracing:\n  endpoint: \"{endpoint}\"\n  interval: 50ms\n  timeout: 2s\n{more}")
}

fn server_spans(spans: &[Span]) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == 2).collect()
}

fn children_of<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    let mut c: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect();
    c.sort_by_key(|s| s.start_unix_nano);
    c
}

#[tokio::test]
async fn a_requests_spans_continue_the_clients_trace_and_the_upstream_continues_ours() {
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let dir = portico_testkit::temp_dir("trace-log");
    let log = dir.join("access.log");
    let gw = portico_testkit::gateway(&config(&format!(
        "{}access_log: {{ target: \"{}\" }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: orders\n    match: {{ path: {{ prefix: /orders }} }}\n    upstream: u\n",
        tracing_section(
            &collector.url(),
            "  service_name: edge-gw\n  resource: { deployment.environment.name: test }\n"
        ),
        log.display(),
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let got = send(
        &c,
        req("GET", &gw.url("/orders/7?api_key=s3cret"))
            .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
            .header("tracestate", "vendor=x")
            .header("user-agent", "trace-test/1")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = got.json();
    let spans = collector.wait_for(2).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server.trace_id, CLIENT_TRACE);
    assert_eq!(
        server.parent_span_id, CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(server.name, "GET orders");
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.route"), Some("orders"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("url.path"), Some("/orders/7"));
    assert_eq!(server.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(server.attr("user_agent.original"), Some("trace-test/1"));
    assert_eq!(server.attr("network.protocol.version"), Some("1.1"));
    assert_eq!(server.attr("portico.listener"), Some("main"));
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("edge-gw")
    );
    assert_eq!(
        server
            .resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("test")
    );
    assert!(
        spans
            .iter()
            .all(|s| s.attributes.values().all(|v| !v.contains("s3cret"))),
        "the query's key is in no attribute"
    );
    let attempts = children_of(&spans, server);
    assert_eq!(attempts.len(), 1, "{spans:#?}");
    let attempt = attempts[0];
    assert_eq!(attempt.kind, 3, "a client span");
    assert_eq!(attempt.attr("portico.upstream"), Some("u"));
    assert_eq!(attempt.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        attempt.attr("server.port"),
        Some(up.addr.port().to_string().as_str())
    );
    assert_eq!(attempt.attr("http.response.status_code"), Some("200"));
    assert!(attempt.start_unix_nano >= server.start_unix_nano);
    assert!(attempt.end_unix_nano <= server.end_unix_nano);
    // The upstream was called inside the attempt's span, with the trace state passed on.
    assert_eq!(
        seen["headers"]["traceparent"],
        format!("00-{CLIENT_TRACE}-{}-01", attempt.span_id)
    );
    assert_eq!(seen["headers"]["tracestate"], "vendor=x");
    // The access-log line names the trace and the server span.
    eventually("the access-log line", async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    })
    .await;
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["trace_id"], CLIENT_TRACE);
    assert_eq!(line["span_id"], server.span_id.as_str());
}

#[tokio::test]
async fn retries_are_separate_attempt_spans_sent_over_otlp_http_with_headers() {
    let collector = otlp_collector().await;
    let bad = serve(|_req| async {
        let mut r = http::Response::new(portico_testkit::full("bad"));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r
    })
    .await;
    let good = serve(|_req| async { http::Response::new(portico_testkit::full("good")) }).await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  u:\n    targets: [\"{}\", \"{}\"]\n    passive_health: {{ consecutive_failures: 0 }}\n    retries: {{ attempts: 2, retry_on: [503], backoff: 1ms }}\nroutes:\n  - name: r\n    upstream: u\n",
        tracing_section(
            &collector.url(),
            "  protocol: http/protobuf\n  headers: { x-collector-key: k-123 }\n"
        ),
        bad.url(),
        good.url()
    )))
    .await;
    // Round robin starts at the failing target for one of the first two requests.
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/")).await.text(), "good");
    }
    let spans = collector.wait_for(5).await;
    assert!(spans.iter().all(|s| s.transport == "http"));
    assert!(
        collector
            .export_headers()
            .iter()
            .all(|h| h.get("x-collector-key").is_some_and(|v| v == "k-123"))
    );
    let retried = server_spans(&spans)
        .into_iter()
        .find(|s| children_of(&spans, s).len() == 2)
        .expect("one request was tried twice");
    let tries = children_of(&spans, retried);
    assert_eq!(tries[0].attr("http.response.status_code"), Some("503"));
    assert_eq!(tries[0].status_code, 2, "the failed try is an error");
    assert_eq!(tries[0].attr("http.request.resend_count"), None);
    assert_eq!(tries[1].attr("http.response.status_code"), Some("200"));
    assert_eq!(tries[1].attr("http.request.resend_count"), Some("1"));
    assert_ne!(
        tries[0].attr("server.port"),
        tries[1].attr("server.port"),
        "the retry went to the other target"
    );
    assert_ne!(tries[0].span_id, tries[1].span_id);
    assert_eq!(retried.attr("http.response.status_code"), Some("200"));
    assert_eq!(retried.status_code, 0);
}

/// The upstream's view of the sampling decision (the `traceparent` flags it is sent) is exact
/// per request, so the collector must end with exactly those requests' spans.
#[tokio::test]
async fn sampling_ratios_hold_over_a_thousand_requests_and_routes_and_callers_override_them() {
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: always\n    match: {{ path: {{ prefix: /always }} }}\n    upstream: u\n    tracing: {{ sample_ratio: 1 }}\n  - name: rest\n    upstream: u\n",
        tracing_section(&collector.url(), "  sample_ratio: 0.25\n  max_queue: 4096\n  max_batch: 512\n"),
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let flag = |v: &serde_json::Value| {
        let tp = v["headers"]["traceparent"].as_str().unwrap().to_string();
        tp.ends_with("-01")
    };
    let mut sampled = 0;
    for _ in 0..1000 {
        let got = send(&c, req("GET", &gw.url("/x")).body(empty()).unwrap()).await;
        if flag(&got.json()) {
            sampled += 1;
        }
    }
    // 1,000 draws at 25 %: 250 ± 5 standard deviations (13.7 each).
    assert!((182..=318).contains(&sampled), "{sampled}");
    for _ in 0..20 {
        let got = send(&c, req("GET", &gw.url("/always")).body(empty()).unwrap()).await;
        assert!(flag(&got.json()), "the route samples every new trace");
    }
    // Parent-based: the caller's decision wins over both ratios.
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let got = send(
        &c,
        req("GET", &gw.url("/always"))
            .header("traceparent", &unsampled)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert!(!flag(&got.json()), "the caller said not sampled");
    // A malformed context starts a new trace and is replaced, not passed on beside ours.
    let got = send(
        &c,
        req("GET", &gw.url("/always"))
            .header("traceparent", "00-not-a-context")
            .body(empty())
            .unwrap(),
    )
    .await;
    let tp = got.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tp.len() == 55 && tp.ends_with("-01"), "only ours: {tp}");
    let total = sampled + 21;
    let spans = collector.wait_for(2 * total).await;
    assert_eq!(server_spans(&spans).len(), total);
    assert_eq!(spans.len(), 2 * total, "a server span and an attempt each");
    assert!(spans.iter().all(|s| s.trace_id != CLIENT_TRACE));
    // Decided when the route was known, the requests were still described in full.
    for s in server_spans(&spans) {
        assert!(
            matches!(s.attr("url.path"), Some("/x" | "/always")),
            "{s:?}"
        );
        assert!(s.attr("portico.request_id").is_some(), "{s:?}");
    }
}

#[tokio::test]
async fn a_collector_that_is_down_changes_no_answer_and_the_drops_are_counted() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let up = echo_server().await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        tracing_section(&dead_url, "  max_queue: 8\n  max_batch: 4\n"),
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    for i in 0..300 {
        let got = send(
            &c,
            req("GET", &gw.url(&format!("/n/{i}")))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["path"], format!("/n/{i}"));
    }
    eventually("dropped spans counted", async || {
        let m = get(&gw.admin_url("/metrics")).await.text();
        m.lines().any(|l| {
            l.starts_with("portico_trace_spans_dropped_total{reason=\"queue_full\"}")
                || l.starts_with("portico_trace_spans_dropped_total{reason=\"export_failed\"}")
        })
    })
    .await;
}

#[tokio::test]
async fn errors_are_kept_when_asked_and_b3_is_read_and_written() {
    let collector = otlp_collector().await;
    let broken = serve(|req: http::Request<hyper::body::Incoming>| async move {
        let v = portico_testkit::echo_json(req).await;
        let mut r = http::Response::new(portico_testkit::full(v.to_string()));
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        r
    })
    .await;
    let up = echo_server().await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  ok: {{ targets: [\"{}\"] }}\n  broken: {{ targets: [\"{}\"] }}\nroutes:\n  - name: broken\n    match: {{ path: {{ prefix: /broken }} }}\n    upstream: broken\n  - name: ok\n    upstream: ok\n",
        tracing_section(
            &collector.url(),
            "  sample_ratio: 0\n  parent_based: false\n  keep_errors: true\n  propagators: [b3, b3multi]\n"
        ),
        up.url(),
        broken.url()
    )))
    .await;
    let c = client(false, &[]);
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let got = send(
        &c,
        req("GET", &gw.url("/fine"))
            .header("b3", format!("{b3_trace}-e457b5a2e4d86bd1-1"))
            .body(empty())
            .unwrap(),
    )
    .await;
    let seen = got.json();
    let b3 = seen["headers"]["b3"].as_str().unwrap();
    assert!(b3.starts_with(&format!("{b3_trace}-")), "{b3}");
    assert!(
        b3.ends_with("-0"),
        "not sampled (ratio 0, the caller ignored): {b3}"
    );
    assert_eq!(seen["headers"]["x-b3-traceid"], b3_trace);
    assert_eq!(seen["headers"]["x-b3-sampled"], "0");
    assert!(
        seen["headers"].get("traceparent").is_none(),
        "W3C not written"
    );
    let got = send(&c, req("GET", &gw.url("/broken")).body(empty()).unwrap()).await;
    assert_eq!(got.status, 502);
    let spans = collector.wait_for(2).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1, "only the failed request: {spans:#?}");
    assert_eq!(server[0].attr("http.route"), Some("broken"));
    assert_eq!(server[0].status_code, 2);
    assert_eq!(children_of(&spans, server[0]).len(), 1);
}

#[tokio::test]
async fn each_backend_call_of_a_composite_route_is_a_span_and_carries_the_trace() {
    let collector = otlp_collector().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let backend = |seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>| {
        serve(move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let tp = req.headers()["traceparent"].to_str().unwrap().to_string();
                seen.lock().unwrap().push(tp);
                let mut r = http::Response::new(portico_testkit::full("{\"ok\":true}"));
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                r
            }
        })
    };
    let (a, b) = (backend(seen.clone()).await, backend(seen.clone()).await);
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  a: {{ targets: [\"{}\"] }}\n  b: {{ targets: [\"{}\"] }}\nroutes:\n  - name: both\n    aggregate:\n      backends:\n        - {{ name: first, upstream: a, path: /one }}\n        - {{ name: second, upstream: b, path: /two }}\n",
        tracing_section(&collector.url(), ""),
        a.url(),
        b.url()
    )))
    .await;
    let c = client(false, &[]);
    let got = send(
        &c,
        req("GET", &gw.url("/"))
            .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let spans = collector.wait_for(3).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1);
    let calls = children_of(&spans, server[0]);
    let mut upstreams: Vec<&str> = calls
        .iter()
        .map(|s| s.attr("portico.upstream").unwrap())
        .collect();
    upstreams.sort();
    assert_eq!(upstreams, ["a", "b"]);
    // Each backend was called inside its own span.
    let mut sent: Vec<String> = seen.lock().unwrap().clone();
    sent.sort();
    let mut want: Vec<String> = calls
        .iter()
        .map(|s| format!("00-{CLIENT_TRACE}-{}-01", s.span_id))
        .collect();
    want.sort();
    assert_eq!(sent, want);
}

#[tokio::test]
async fn the_debug_secret_gets_server_timing_a_recorded_trace_and_reaches_no_upstream() {
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let digest = portico_auth::apikey::digest_string("s3cret-debug");
    let gw = portico_testkit::gateway(&config(&format!(
        "server:\n  request_debug: {{ token_hash: \"{digest}\" }}\n{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: timed\n    match: {{ path: {{ prefix: /timed }} }}\n    upstream: u\n    tracing: {{ server_timing: true }}\n  - name: plain\n    match: {{ path: {{ prefix: /plain }} }}\n    upstream: u\n",
        tracing_section(&collector.url(), "  sample_ratio: 0\n  parent_based: false\n"),
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let ask = |path: &str, secret: Option<&str>| {
        let mut r = req("GET", &gw.url(path));
        if let Some(s) = secret {
            r = r.header("x-portico-debug", s);
        }
        r.body(empty()).unwrap()
    };
    // Without the secret, or with a wrong one: nothing is revealed, nothing is recorded.
    for secret in [None, Some("wrong"), Some("")] {
        let got = send(&c, ask("/plain", secret)).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("server-timing"), None, "{secret:?}");
        assert!(
            got.json()["headers"].get("x-portico-debug").is_none(),
            "the debug header never goes upstream"
        );
    }
    // With it: every phase, described.
    let got = send(&c, ask("/plain", Some("s3cret-debug"))).await;
    assert_eq!(got.status, 200);
    assert!(got.json()["headers"].get("x-portico-debug").is_none());
    let timing = got
        .header("server-timing")
        .expect("Server-Timing")
        .to_string();
    let names: Vec<&str> = timing
        .split(", ")
        .map(|m| m.split(';').next().unwrap())
        .collect();
    for want in ["route", "policies", "upstream", "response", "total"] {
        assert!(names.contains(&want), "{want} in {timing}");
    }
    assert!(timing.contains("route;dur="), "{timing}");
    assert!(timing.contains("desc=\"plain\""), "{timing}");
    assert!(
        timing.contains(&format!(
            "desc=\"u 127.0.0.1:{} try 1: 200\"",
            up.addr.port()
        )),
        "{timing}"
    );
    // And its trace is recorded although the ratio is 0, with the phases as events.
    let spans = collector.wait_for(2).await;
    let server = server_spans(&spans);
    assert_eq!(server.len(), 1, "only the debug request: {spans:#?}");
    let events: Vec<&str> = server[0].events.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["route", "policies", "upstream", "response"] {
        assert!(events.contains(&want), "{want} in {events:?}");
    }
    assert!(
        spans
            .iter()
            .all(|s| s.attributes.values().all(|v| !v.contains("s3cret-debug"))),
        "the secret is in no attribute"
    );
    // A route's own `server_timing` shows durations to everyone, and no details.
    let got = send(&c, ask("/timed/x", None)).await;
    let timing = got
        .header("server-timing")
        .expect("Server-Timing")
        .to_string();
    assert!(timing.starts_with("route;dur="), "{timing}");
    assert!(timing.contains("upstream;dur="), "{timing}");
    assert!(!timing.contains("desc="), "{timing}");
    // A refusal with the secret says why.
    let got = send(&c, ask("/nowhere", Some("s3cret-debug"))).await;
    assert_eq!(got.status, 404);
    let timing = got
        .header("server-timing")
        .expect("Server-Timing")
        .to_string();
    assert!(timing.contains("error;dur=0;desc=\"no_route\""), "{timing}");
}

/// Secrets planted in every place a request can carry them; none may reach the access log or
/// a span (attributes, events, resource).
#[tokio::test]
async fn secrets_planted_everywhere_leave_the_process_in_no_log_line_and_no_span() {
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let dir = portico_testkit::temp_dir("redact");
    let log = dir.join("access.log");
    let key_digest = portico_auth::apikey::digest_string("SECRET_APIKEY");
    let debug_digest = portico_auth::apikey::digest_string("SECRET_DEBUG");
    let gw = portico_testkit::gateway(&config(&format!(
        "server:\n  request_debug: {{ token_hash: \"{debug_digest}\" }}\n{}access_log: {{ target: \"{}\" }}\nredact:\n  query_params: [custom]\n  headers: [user-agent]\nconsumers:\n  - name: billing\n    api_keys: [\"{key_digest}\"]\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: r\n    upstream: u\n    policies:\n      - type: api_key\n        query: api_key\n",
        tracing_section(&collector.url(), ""),
        log.display(),
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let mut sent = 0;
    for (query, header_key, debug) in [
        (
            "api_key=SECRET_APIKEY&token=SECRET_TOKEN&custom=SECRET_CUSTOM&plain=visible",
            false,
            false,
        ),
        (
            "token=SECRET_TOKEN&Custom=SECRET_CUSTOM&access_token=SECRET_AT&plain=visible",
            true,
            true,
        ),
    ] {
        let mut r = req("POST", &gw.url(&format!("/orders?{query}")))
            .header("authorization", "Bearer SECRET_AUTH")
            .header("cookie", "session=SECRET_COOKIE")
            .header("user-agent", "SECRET_UA")
            .header("content-type", "application/json");
        if header_key {
            r = r.header("x-api-key", "SECRET_APIKEY");
        }
        if debug {
            r = r.header("x-portico-debug", "SECRET_DEBUG");
        }
        let got = send(
            &c,
            r.body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"{\"password\":\"SECRET_BODY\"}",
            )))
            .unwrap(),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(
            got.json()["body"],
            "{\"password\":\"SECRET_BODY\"}",
            "the upstream gets the body"
        );
        sent += 1;
    }
    let spans = collector.wait_for(2 * sent).await;
    eventually("the access-log lines", async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == sent)
    })
    .await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let span_text = format!("{spans:?}");
    for (place, text) in [("access log", &lines), ("spans", &span_text)] {
        assert!(!text.contains("SECRET"), "a secret in the {place}:\n{text}");
    }
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let q = v["query"].as_str().unwrap();
        assert!(q.contains("plain=visible"), "{q}");
        assert!(q.contains("token=REDACTED"), "{q}");
        assert!(q.contains("ustom=REDACTED"), "{q}");
        assert_eq!(v["consumer"], "billing");
    }
    assert!(
        spans
            .iter()
            .all(|s| s.attr("user_agent.original").is_none()),
        "user-agent is redacted"
    );
}

/// A reload that keeps the export settings keeps the exporter; one that changes them starts a
/// new one, and a request that started before still exports through the old one.
#[tokio::test]
async fn spans_carry_across_reloads() {
    let (first, second) = (otlp_collector().await, otlp_collector().await);
    let (release, held) = super::held_upstream().await;
    let dir = portico_testkit::temp_dir("trace-reload");
    let text = |endpoint: &str, ratio: &str| {
        config(&format!(
            "{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: r\n    upstream: u\n",
            tracing_section(endpoint, &format!("  sample_ratio: {ratio}\n")),
            held.url()
        ))
    };
    let gw = portico_testkit::gateway_from_file(&dir, &text(&first.url(), "1")).await;
    let path = gw.path.clone().unwrap();
    let url = gw.url("/before");
    let in_flight = tokio::spawn(async move { get(&url).await.status });
    eventually("the request reaches the upstream", async || {
        held.hits() == 1
    })
    .await;
    // Sampling changes, the export does not: same exporter.
    std::fs::write(&path, text(&first.url(), "1.0")).unwrap();
    gw.gw.reload_file().await.unwrap();
    // Then the collector changes.
    std::fs::write(&path, text(&second.url(), "1")).unwrap();
    gw.gw.reload_file().await.unwrap();
    release.send(true).unwrap();
    assert_eq!(in_flight.await.unwrap(), 200);
    assert_eq!(get(&gw.url("/after")).await.status, 200);
    let old = first.wait_for(2).await;
    assert_eq!(
        server_spans(&old)
            .iter()
            .map(|s| s.attr("url.path").unwrap())
            .collect::<Vec<_>>(),
        ["/before"],
        "the request that started before the change exports through the old exporter"
    );
    let new = second.wait_for(2).await;
    assert_eq!(
        server_spans(&new)
            .iter()
            .map(|s| s.attr("url.path").unwrap())
            .collect::<Vec<_>>(),
        ["/after"]
    );
}

/// A policy that waits on another service (here a shared rate limit's Redis) is a span of its
/// own, with the refusal's reason when it refuses.
#[tokio::test]
async fn a_shared_rate_limit_is_a_span_with_its_refusal() {
    if !super::cluster::shared_redis() {
        return;
    }
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{}\", timeout: 500ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: limited\n    upstream: u\n    policies:\n      - type: rate_limit\n        key: route\n        store: redis\n        limits: [{{ requests: 1, per: 1m }}]\n",
        tracing_section(&collector.url(), ""),
        super::cluster::prefix(),
        up.url()
    )))
    .await;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let refused = get(&gw.url("/")).await;
    assert_eq!(refused.status, 429);
    // Two server spans, two policy spans, one attempt.
    let spans = collector.wait_for(5).await;
    let mut policy: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "policy rate_limit")
        .collect();
    policy.sort_by_key(|s| s.start_unix_nano);
    assert_eq!(policy.len(), 2, "{spans:#?}");
    assert_eq!(policy[0].attr("error.type"), None);
    assert_eq!(policy[1].attr("error.type"), Some("rate_limited"));
    let server = server_spans(&spans);
    let refused_span = server
        .iter()
        .find(|s| s.attr("http.response.status_code") == Some("429"))
        .unwrap();
    assert_eq!(refused_span.attr("error.type"), Some("rate_limited"));
    assert_eq!(policy[1].parent_span_id, refused_span.span_id);
}

/// A collector behind TLS with a private CA, over both transports.
#[tokio::test]
async fn spans_reach_a_tls_collector_over_grpc_and_http() {
    let dir = portico_testkit::temp_dir("otlp-tls");
    let cert = portico_testkit::cert(&["localhost"]);
    let (ca, _) = cert.write(&dir, "collector");
    for protocol in ["grpc", "http/protobuf"] {
        let collector = portico_testkit::otlp_collector_with_tls(Some(
            cert.server_config(&[b"h2", b"http/1.1"]),
        ))
        .await;
        let up = echo_server().await;
        let gw = portico_testkit::gateway(&config(&format!(
            "tracing:\n  protocol: {protocol}\n  endpoint: \"https://localhost:{}\"\n  tls: {{ ca: \"{}\" }}\n  interval: 50ms\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
            collector.addr.port(),
            ca.display(),
            up.url()
        )))
        .await;
        assert_eq!(get(&gw.url("/tls")).await.status, 200);
        let spans = collector.wait_for(2).await;
        let want = if protocol == "grpc" { "grpc" } else { "http" };
        assert!(spans.iter().all(|s| s.transport == want), "{protocol}");
        assert_eq!(server_spans(&spans)[0].attr("url.path"), Some("/tls"));
    }
}

#[tokio::test]
async fn cache_lookups_are_spans_and_a_hit_calls_no_upstream() {
    let collector = otlp_collector().await;
    let up = serve(|_req| async {
        let mut r = http::Response::new(portico_testkit::full("stored"));
        r.headers_mut()
            .insert("cache-control", "public, max-age=60".parse().unwrap());
        r
    })
    .await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - {{ type: cache }}\n",
        tracing_section(&collector.url(), ""),
        up.url()
    )))
    .await;
    assert_eq!(get(&gw.url("/c")).await.text(), "stored");
    assert_eq!(get(&gw.url("/c")).await.text(), "stored");
    assert_eq!(up.hits(), 1);
    // Miss: server, lookup, attempt. Hit: server, lookup.
    let spans = collector.wait_for(5).await;
    let mut lookups: Vec<&Span> = spans.iter().filter(|s| s.name == "cache lookup").collect();
    lookups.sort_by_key(|s| s.start_unix_nano);
    let results: Vec<&str> = lookups
        .iter()
        .map(|s| s.attr("portico.cache.result").unwrap())
        .collect();
    assert_eq!(results, ["miss", "hit"]);
    let hit_server = server_spans(&spans)
        .into_iter()
        .find(|s| s.span_id == lookups[1].parent_span_id)
        .expect("the lookup's parent is its request's server span");
    assert_eq!(
        children_of(&spans, hit_server).len(),
        1,
        "no upstream attempt on a hit"
    );
}

#[tokio::test]
async fn a_transcoded_call_is_a_translation_span_beside_its_grpc_attempt() {
    let collector = otlp_collector().await;
    let grpc = portico_testkit::grpc_bookstore().await;
    let dir = portico_testkit::temp_dir("trace-transcode");
    let pb = portico_testkit::write_bookstore_descriptor_set(&dir);
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  books: {{ targets: [\"h2c://{grpc}\"] }}\nroutes:\n  - name: books\n    upstream: books\n    grpc_transcode:\n      descriptor_set: \"{}\"\n",
        tracing_section(&collector.url(), ""),
        pb.display()
    )))
    .await;
    assert_eq!(get(&gw.url("/v1/shelves")).await.status, 200);
    let spans = collector.wait_for(3).await;
    let server = server_spans(&spans);
    let children = children_of(&spans, server[0]);
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"translate grpc_transcode"), "{names:?}");
    let attempt = children
        .iter()
        .find(|s| s.kind == 3)
        .expect("the gRPC call");
    assert_eq!(attempt.attr("http.request.method"), Some("POST"));
    assert_eq!(attempt.attr("portico.upstream"), Some("books"));
}

/// HTTP/2 clients are traced the same way; the protocol is on the server span.
#[tokio::test]
async fn an_http2_request_is_traced_with_its_protocol() {
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let gw = portico_testkit::gateway(&config(&format!(
        "{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n",
        tracing_section(&collector.url(), ""),
        up.url()
    )))
    .await;
    let c = client(true, &[]);
    let got = send(
        &c,
        req("GET", &gw.url("/h2"))
            .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(got.version, http::Version::HTTP_2);
    assert!(
        got.json()["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("00-{CLIENT_TRACE}-"))
    );
    let spans = collector.wait_for(2).await;
    let server = server_spans(&spans);
    assert_eq!(server[0].attr("network.protocol.version"), Some("2"));
    assert_eq!(server[0].trace_id, CLIENT_TRACE);
}

/// An exporter that has seen no span for a while sleeps until its next export is due; the
/// first span after the quiet spell wakes it. With a batch of one span and an interval of a
/// minute, the spans arrive at once only if the request woke the thread.
#[tokio::test]
async fn the_first_span_after_a_quiet_spell_wakes_the_exporter() {
    let collector = otlp_collector().await;
    let up = echo_server().await;
    let gw = portico_testkit::gateway(&config(&format!(
        "tracing:\n  endpoint: \"{}\"\n  interval: 60s\n  max_batch: 1\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: r\n    upstream: u\n",
        collector.url(),
        up.url()
    )))
    .await;
    for round in 0..2 {
        // Long enough for the thread to look twice, find nothing and park.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(get(&gw.url("/quiet")).await.status, 200);
        let spans = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            collector.wait_for(2 * (round + 1)),
        )
        .await
        .expect("the spans arrive long before the interval");
        assert_eq!(server_spans(&spans).len(), round + 1);
    }
}
