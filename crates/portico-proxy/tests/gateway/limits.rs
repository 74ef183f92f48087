use portico_testkit::*;

use crate::{config, empty, req};

fn limited(extra: &str, up: &Upstream) -> String {
    config(&format!(
        "server: {{ trusted_proxies: [\"127.0.0.0/8\"] }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: api\n    upstream: u\n    policies:\n      - type: rate_limit\n        limits: [{{ requests: 3, per: 1m }}]\n{extra}",
        up.url()
    ))
}

#[tokio::test]
async fn requests_over_the_limit_get_429_with_retry_after() {
    let up = echo_server().await;
    let gw = gateway(&limited("", &up)).await;
    for left in [2, 1, 0] {
        let got = get(&gw.url("/")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("ratelimit-policy"), Some("\"limit-0\";q=3;w=60"));
        assert!(
            got.header("ratelimit")
                .unwrap()
                .starts_with(&format!("\"limit-0\";r={left};")),
            "{:?}",
            got.header("ratelimit")
        );
    }
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    assert_eq!(got.json()["code"], "rate_limited");
    let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request comes back every 20 s: {retry}"
    );
    assert_eq!(
        up.hits(),
        3,
        "the refused request never reached the upstream"
    );
}

#[tokio::test]
async fn each_client_has_its_own_bucket() {
    let up = echo_server().await;
    let gw = gateway(&limited("", &up)).await;
    let c = client(false, &[]);
    let from = |ip: &'static str| {
        let c = c.clone();
        let url = gw.url("/");
        async move {
            send(
                &c,
                req("GET", &url)
                    .header("x-forwarded-for", ip)
                    .body(empty())
                    .unwrap(),
            )
            .await
            .status
            .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.1").await, 200);
    }
    assert_eq!(from("203.0.113.1").await, 429);
    assert_eq!(
        from("203.0.113.2").await,
        200,
        "another client is not affected"
    );
}

#[tokio::test]
async fn counters_of_an_unchanged_limit_survive_a_reload() {
    let up = echo_server().await;
    let dir = temp_dir("limits");
    let text = limited("", &up);
    let gw = gateway_from_file(&dir, &text).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    // Change something else (a new route): the limit is the same, so its counters are kept.
    std::fs::write(gw.path.as_ref().unwrap(), format!("{text}  - name: other\n    match: {{ path: {{ exact: /other }} }}\n    respond: {{ body: x }}\n")).unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&gw.url("/other")).await.text(), "x");
    assert_eq!(get(&gw.url("/")).await.status, 429);
    // Policies that keep state added before it (a global concurrency limit, a route with a
    // cache first in the file) move the limit to another slot of the runtime's per-policy
    // state; its counters follow it.
    let moved = text.replace(
        "routes:\n",
        "policies:\n  - type: concurrency_limit\n    max_in_flight: 100\nroutes:\n  - name: cached\n    match: { path: { exact: /cached } }\n    respond: { body: c }\n    policies:\n      - type: cache\n",
    );
    assert_ne!(moved, text);
    std::fs::write(gw.path.as_ref().unwrap(), moved).unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&gw.url("/cached")).await.text(), "c");
    assert_eq!(get(&gw.url("/")).await.status, 429);
}

#[tokio::test]
async fn several_limits_and_header_keys() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: quota\n    upstream: u\n    policies:\n      - type: rate_limit\n        key: {{ header: x-api-key }}\n        limits:\n          - {{ requests: 100, per: 1s, burst: 100 }}\n          - {{ requests: 2, per: 24h }}\n        hide_headers: true\n",
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let with_key = |k: &'static str| {
        let c = c.clone();
        let url = gw.url("/");
        async move {
            send(
                &c,
                req("GET", &url)
                    .header("x-api-key", k)
                    .body(empty())
                    .unwrap(),
            )
            .await
        }
    };
    let got = with_key("alpha").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("ratelimit"), None, "headers hidden");
    assert_eq!(with_key("alpha").await.status, 200);
    let refused = with_key("alpha").await;
    assert_eq!(
        refused.status, 429,
        "the daily quota of 2 applies although the per-second limit is far"
    );
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 3600
    );
    assert_eq!(with_key("beta").await.status, 200);
    let metrics = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains("portico_rate_limited_total{route=\"quota\",limit=\"limit-1\"} 1"),
        "the refusal is counted against the daily limit\n{metrics}"
    );
}

#[tokio::test]
async fn concurrency_limit_refuses_at_once_over_the_cap() {
    // The upstream holds the admitted requests until the refusals are in, so the five are
    // "at once" by order, not by timing.
    let (release, up) = crate::held_upstream().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: slow\n    upstream: u\n    policies:\n      - type: concurrency_limit\n        max_in_flight: 2\n",
        up.url()
    )))
    .await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let url = gw.url("/");
        set.spawn(async move { get(&url).await });
    }
    // Three are refused while the two admitted are still held: at once, not queued behind them.
    for _ in 0..3 {
        let got = tokio::time::timeout(EVENTUALLY, set.join_next())
            .await
            .expect("refused at once, not queued")
            .unwrap()
            .unwrap();
        assert_eq!(got.status, 503, "{}", got.text());
        assert_eq!(got.json()["code"], "concurrency_limited");
        assert_eq!(got.header("retry-after"), Some("1"));
    }
    eventually("the two admitted reach the upstream", async || {
        up.hits() >= 2
    })
    .await;
    assert_eq!(up.hits(), 2, "two admitted");
    release.send(true).unwrap();
    let mut ok = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap().status.as_u16() {
            200 => ok += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 2);
    // The places are released when the responses end.
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test]
async fn adaptive_concurrency_sheds_load_while_the_upstream_is_slow() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let delay_ms = Arc::new(AtomicU64::new(300));
    let d = delay_ms.clone();
    let up = serve(move |_req| {
        let d = d.clone();
        async move {
            let ms = d.load(Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            http::Response::new(full("ok"))
        }
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: adaptive\n    upstream: u\n    policies:\n      - type: concurrency_limit\n        max_in_flight: 20\n        adaptive: {{ target_latency: 100ms, min_in_flight: 2 }}\n",
        up.url()
    )))
    .await;
    let wave = |n: usize| {
        let url = gw.url("/");
        async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let url = url.clone();
                set.spawn(async move { get(&url).await.status.as_u16() });
            }
            let mut ok = 0;
            while let Some(s) = set.join_next().await {
                match s.unwrap() {
                    200 => ok += 1,
                    503 => {}
                    other => panic!("unexpected {other}"),
                }
            }
            ok
        }
    };
    assert_eq!(wave(20).await, 20, "the cap starts at max_in_flight");
    // Each slow wave shrinks the cap.
    let mut last = 20;
    for _ in 0..3 {
        last = wave(20).await;
    }
    assert!(
        (2..20).contains(&last),
        "slow upstream: the cap came down to {last}"
    );
    // Fast again: the cap grows back.
    delay_ms.store(0, Ordering::SeqCst);
    for _ in 0..300 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(wave(20).await, 20, "recovered to max_in_flight");
}

/// Several `rate_limit` policies on a route (a global one included): every limit is listed
/// in `RateLimit-Policy` under its own name, numbered through the chain, and `RateLimit`
/// reports whichever is closest to exhaustion, whichever policy it is in.
#[tokio::test]
async fn several_policies_on_a_route_are_all_advertised() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        r#"upstreams:
  u: {{ targets: ["{}"] }}
policies:
  - {{ type: rate_limit, key: route, limits: [{{ requests: 1000, per: 1h }}] }}
routes:
  - name: tight-last
    match: {{ path: {{ prefix: /last }} }}
    upstream: u
    policies:
      - {{ type: rate_limit, limits: [{{ requests: 100, per: 1m }}] }}
      - {{ type: rate_limit, limits: [{{ requests: 3, per: 1m }}, {{ requests: 50, per: 1s }}] }}
  - name: tight-first
    match: {{ path: {{ prefix: /first }} }}
    upstream: u
    policies:
      - {{ type: rate_limit, limits: [{{ requests: 3, per: 1m }}] }}
      - {{ type: rate_limit, limits: [{{ requests: 100, per: 1m }}] }}
"#,
        up.url()
    )))
    .await;
    for (path, policy, tight) in [
        (
            "/last",
            "\"limit-0\";q=1000;w=3600, \"limit-1\";q=100;w=60, \"limit-2\";q=3;w=60, \"limit-3\";q=50;w=1",
            "limit-2",
        ),
        (
            "/first",
            "\"limit-0\";q=1000;w=3600, \"limit-1\";q=3;w=60, \"limit-2\";q=100;w=60",
            "limit-1",
        ),
    ] {
        for left in [2, 1, 0] {
            let got = get(&gw.url(path)).await;
            assert_eq!(got.status, 200, "{path}");
            assert_eq!(got.header("ratelimit-policy"), Some(policy), "{path}");
            let limit = got.header("ratelimit").unwrap();
            assert!(
                limit.starts_with(&format!("\"{tight}\";r={left};")),
                "{path}: {limit}"
            );
        }
        assert_eq!(get(&gw.url(path)).await.status, 429, "{path}");
    }
    let metrics = get(&gw.admin_url("/metrics")).await.text();
    for line in [
        "portico_rate_limited_total{route=\"tight-last\",limit=\"limit-2\"} 1",
        "portico_rate_limited_total{route=\"tight-first\",limit=\"limit-1\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}
