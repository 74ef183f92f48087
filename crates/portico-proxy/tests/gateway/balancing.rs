use std::collections::HashMap;
use std::sync::Arc;

use portico_testkit::*;

use crate::{config, empty, req};

/// An upstream that answers with its own name, to see where each request went.
async fn named(name: &'static str, delay_ms: u64) -> Upstream {
    serve(move |_req| async move {
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        http::Response::new(full(name))
    })
    .await
}

fn upstream_config(targets: &str, lb: &str) -> String {
    config(&format!(
        "upstreams:\n  u:\n    targets: [{targets}]\n{lb}routes:\n  - upstream: u\n"
    ))
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let (a, b) = (named("a", 0).await, named("b", 0).await);
    let gw = gateway(&upstream_config(
        &format!("{{ url: \"{}\", weight: 3 }}, \"{}\"", a.url(), b.url()),
        "",
    ))
    .await;
    for _ in 0..40 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (30, 10));
}

#[tokio::test]
async fn random_spreads_over_all_targets() {
    let (a, b) = (named("a", 0).await, named("b", 0).await);
    let gw = gateway(&upstream_config(
        &format!("\"{}\", \"{}\"", a.url(), b.url()),
        "    load_balancing: { algorithm: random }\n",
    ))
    .await;
    for _ in 0..200 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    // Binomial(200, 0.5): below 60 has a probability of about 1e-8.
    assert!(
        a.hits() >= 60 && b.hits() >= 60,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test]
async fn least_request_avoids_a_slow_target() {
    let (slow, fast) = (named("slow", 300).await, named("fast", 0).await);
    let gw = gateway(&upstream_config(
        &format!("\"{}\", \"{}\"", slow.url(), fast.url()),
        "    load_balancing: { algorithm: least_request }\n",
    ))
    .await;
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                assert_eq!(get(&gw.url("/")).await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(slow.hits() + fast.hits(), 40);
    assert!(
        fast.hits() >= 3 * slow.hits(),
        "slow={} fast={}",
        slow.hits(),
        fast.hits()
    );
}

#[tokio::test]
async fn hashing_keeps_a_key_on_one_target() {
    let ups = [
        named("a", 0).await,
        named("b", 0).await,
        named("c", 0).await,
    ];
    let targets = ups
        .iter()
        .map(|u| format!("\"{}\"", u.url()))
        .collect::<Vec<_>>()
        .join(", ");
    let gw = gateway(&upstream_config(
        &targets,
        "    load_balancing: { algorithm: hash, hash_on: { header: x-user } }\n",
    ))
    .await;
    let c = client(false, &[]);
    let mut seen: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..20 {
            let got = send(
                &c,
                req("GET", &gw.url("/"))
                    .header("x-user", format!("user-{user}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
            let served_by = got.text();
            match seen.get(&format!("user-{user}")) {
                Some(prev) => assert_eq!(prev, &served_by, "user-{user} moved in round {round}"),
                None => {
                    seen.insert(format!("user-{user}"), served_by);
                }
            }
        }
    }
    let used: std::collections::HashSet<&String> = seen.values().collect();
    assert!(used.len() >= 2, "20 users all landed on {used:?}");
    // Requests without the key are spread round robin.
    let before: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    for _ in 0..3 {
        get(&gw.url("/")).await;
    }
    let after: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b == 1),
        "{before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn circuit_breaker_refuses_requests_over_max_requests_at_once() {
    // The upstream holds every request until released, so "at once" is checked by order, not time.
    let (release, held) = crate::held_upstream().await;
    let gw = Arc::new(
        gateway(&config(&format!(
            "upstreams:\n  u: {{ targets: [\"{}\"], max_requests: 2 }}\nroutes:\n  - upstream: u\n",
            held.url()
        )))
        .await,
    );
    let mut first = Vec::new();
    for _ in 0..2 {
        let gw = gw.clone();
        first.push(tokio::spawn(async move {
            get(&gw.url("/")).await.status.as_u16()
        }));
    }
    eventually("both admitted requests reach the upstream", async || {
        held.hits() >= 2
    })
    .await;
    // Both slots are taken and stay taken: the next four are refused while they wait.
    for _ in 0..4 {
        let got = get(&gw.url("/")).await;
        assert_eq!(got.status, 503);
        assert_eq!(got.header("retry-after"), Some("1"));
        assert_eq!(got.json()["code"], "upstream_overloaded");
    }
    assert!(
        first.iter().all(|t| !t.is_finished()),
        "the admitted requests are still in flight"
    );
    release.send(true).unwrap();
    for t in first {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(held.hits(), 2);
    // With the requests finished, the breaker closes again.
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains("portico_upstream_errors_total{upstream=\"u\",kind=\"upstream_overloaded\"} 4"),
        "{m}"
    );
}

#[tokio::test]
async fn a_route_splits_traffic_between_upstreams_by_weight() {
    let (stable, canary) = (named("stable", 0).await, named("canary", 0).await);
    let gw = gateway(&config(&format!(
        "upstreams:\n  stable: {{ targets: [\"{}\"] }}\n  canary: {{ targets: [\"{}\"] }}\nroutes:\n  - split:\n      - {{ upstream: stable, weight: 90 }}\n      - {{ upstream: canary, weight: 10 }}\n",
        stable.url(),
        canary.url()
    )))
    .await;
    for _ in 0..1000 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    // Binomial(1000, 0.1): mean 100, sd 9.5; outside 50..150 is beyond 5 sd.
    assert!(
        (50..150).contains(&canary.hits()),
        "canary got {} of 1000",
        canary.hits()
    );
    assert_eq!(stable.hits() + canary.hits(), 1000);
}

#[tokio::test]
async fn a_dead_target_is_ejected_and_requests_fail_over_without_errors() {
    let a = named("a", 0).await;
    let b = named("b", 0).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u:\n    targets: [\"{}\", \"{}\"]\n    passive_health: {{ consecutive_failures: 3, ejection_time: 500ms }}\nroutes:\n  - upstream: u\n",
        a.url(),
        b.url()
    )))
    .await;
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
    // Target a dies mid-run: its pooled connections close and new ones are refused.
    a.stop_and_wait().await;
    for i in 0..40 {
        let got = get(&gw.url("/")).await;
        assert_eq!(
            (got.status.as_u16(), got.text()),
            (200, "b".to_string()),
            "request {i} after a died"
        );
    }
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains(&format!(
            "portico_upstream_ejections_total{{upstream=\"u\",target=\"{}\"}} 1",
            a.url()
        )),
        "{m}"
    );
    assert!(
        m.contains("portico_upstream_retries_total{upstream=\"u\",reason=\"other_target\"}"),
        "{m}"
    );
    let health = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(health["u"]["targets"][0]["ejected"], true, "{health}");
    assert_eq!(health["u"]["targets"][1]["ejected"], false, "{health}");
    // It comes back on the same port; after the ejection time it gets traffic again.
    let a2 = serve_at(
        a.addr,
        |_req| async { http::Response::new(full("a")) },
        None,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert!(a2.hits() >= 4, "a got {} of 10 after recovering", a2.hits());
}

#[tokio::test]
async fn active_health_checks_take_a_target_out_and_bring_it_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sick = Arc::new(AtomicBool::new(false));
    let s = sick.clone();
    let a = serve(move |req: http::Request<hyper::body::Incoming>| {
        let sick = s.load(Ordering::SeqCst);
        async move {
            let mut r = http::Response::new(full("a"));
            if req.uri().path() == "/health" && sick {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let b = named("b", 0).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u:\n    targets: [\"{}\", \"{}\"]\n    health_check: {{ path: /health, interval: 50ms, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }}\nroutes:\n  - upstream: u\n",
        a.url(),
        b.url()
    )))
    .await;
    let served = |n: usize| {
        let url = gw.url("/");
        async move {
            let mut by = Vec::new();
            for _ in 0..n {
                by.push(get(&url).await.text());
            }
            by
        }
    };
    assert!(served(10).await.contains(&"a".to_string()));
    sick.store(true, Ordering::SeqCst);
    let healthy = async |want: bool| {
        let health = get(&gw.admin_url("/upstreams")).await.json();
        health["u"]["targets"][0]["healthy"] == want
    };
    eventually("the health checks find a unhealthy", async || {
        healthy(false).await
    })
    .await;
    assert!(
        served(20).await.iter().all(|s| s == "b"),
        "an unhealthy target still got traffic"
    );
    let health = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(health["u"]["targets"][0]["healthy"], false, "{health}");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains(&format!(
            "portico_upstream_target_healthy{{upstream=\"u\",target=\"{}\"}} 0",
            a.url()
        )),
        "{m}"
    );
    sick.store(false, Ordering::SeqCst);
    eventually("the health checks find a healthy again", async || {
        healthy(true).await
    })
    .await;
    assert!(
        served(10).await.contains(&"a".to_string()),
        "a recovered target gets traffic again"
    );
}

/// An upstream that answers every request with `status` and its name, echoing the body.
async fn fixed(name: &'static str, status: u16) -> Upstream {
    serve(
        move |req: http::Request<hyper::body::Incoming>| async move {
            use http_body_util::BodyExt;
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut r =
                http::Response::new(full(format!("{name}:{}", String::from_utf8_lossy(&body))));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r
        },
    )
    .await
}

#[tokio::test]
async fn retries_go_to_another_target_and_replay_small_bodies() {
    let (bad, good) = (fixed("bad", 503).await, fixed("good", 200).await);
    let gw = gateway(&config(&format!(
        "upstreams:\n  u:\n    targets: [\"{}\", \"{}\"]\n    passive_health: {{ consecutive_failures: 0 }}\n    retries: {{ attempts: 2, retry_on: [503], backoff: 1ms, non_idempotent: true }}\nroutes:\n  - upstream: u\n",
        bad.url(),
        good.url()
    )))
    .await;
    let c = client(false, &[]);
    for i in 0..10 {
        let got = send(
            &c,
            req("PUT", &gw.url("/"))
                .body(format!("payload-{i}").into())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (got.status.as_u16(), got.text()),
            (200, format!("good:payload-{i}"))
        );
    }
    assert_eq!(
        bad.hits(),
        5,
        "round robin sent every other first try to the failing target"
    );
    let got = send(&c, req("POST", &gw.url("/")).body("p".into()).unwrap()).await;
    assert_eq!(got.status, 200, "POST retried because non_idempotent is on");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains("portico_upstream_retries_total{upstream=\"u\",reason=\"status\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn posts_are_not_retried_unless_allowed() {
    let (bad, good) = (fixed("bad", 503).await, fixed("good", 200).await);
    let gw = gateway(&config(&format!(
        "upstreams:\n  u:\n    targets: [\"{}\", \"{}\"]\n    passive_health: {{ consecutive_failures: 0 }}\n    retries: {{ attempts: 3, retry_on: [503] }}\nroutes:\n  - upstream: u\n",
        bad.url(),
        good.url()
    )))
    .await;
    let c = client(false, &[]);
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| {
        let c = c.clone();
        let url = gw.url("/");
        async move {
            send(&c, req("POST", &url).body("x".into()).unwrap())
                .await
                .status
                .as_u16()
        }
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(bad.hits() + good.hits(), 4);
}

#[tokio::test]
async fn the_retry_budget_caps_amplification_when_everything_fails() {
    let (a, b) = (fixed("a", 503).await, fixed("b", 503).await);
    let gw = gateway(&config(&format!(
        "upstreams:\n  u:\n    targets: [\"{}\", \"{}\"]\n    passive_health: {{ consecutive_failures: 0 }}\n    retries: {{ attempts: 5, retry_on: [503], budget_percent: 20, backoff: 1ms }}\nroutes:\n  - upstream: u\n",
        a.url(),
        b.url()
    )))
    .await;
    for _ in 0..100 {
        assert_eq!(get(&gw.url("/")).await.status, 503);
    }
    let sent = a.hits() + b.hits();
    // Without a budget: 500. With 20 %: 100 requests + 10 retries to start with + 20 earned.
    assert!(
        sent <= 130,
        "{sent} upstream requests for 100 client requests"
    );
    assert!(sent > 100, "some retries happened: {sent}");
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains("portico_upstream_retry_budget_exhausted_total{upstream=\"u\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn mirrored_requests_reach_the_shadow_without_the_client_waiting() {
    let main = fixed("main", 200).await;
    // The shadow holds its requests until released: the client's answers must come first.
    let (release, gate) = tokio::sync::watch::channel(false);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let shadow = serve(move |req: http::Request<hyper::body::Incoming>| {
        let seen_tx = seen_tx.clone();
        let mut gate = gate.clone();
        async move {
            use http_body_util::BodyExt;
            let path = req.uri().path().to_owned();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let _ = gate.wait_for(|open| *open).await;
            let _ = seen_tx.send(format!("{path} {}", String::from_utf8_lossy(&body)));
            http::Response::new(full("shadow answer, never seen"))
        }
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  main: {{ targets: [\"{}\"] }}\n  shadow: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: main\n    mirror: {{ upstream: shadow, percent: 100 }}\n",
        main.url(),
        shadow.url()
    )))
    .await;
    let c = client(false, &[]);
    for i in 0..3 {
        let got = send(
            &c,
            req("POST", &gw.url(&format!("/orders/{i}")))
                .body(format!("order {i}").into())
                .unwrap(),
        )
        .await;
        assert_eq!(got.text(), format!("main:order {i}"));
    }
    assert!(
        seen_rx.try_recv().is_err(),
        "the shadow answered before being released"
    );
    release.send(true).unwrap();
    let mut copies = Vec::new();
    for _ in 0..3 {
        copies.push(
            tokio::time::timeout(std::time::Duration::from_secs(10), seen_rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    copies.sort();
    assert_eq!(
        copies,
        [
            "/orders/0 order 0",
            "/orders/1 order 1",
            "/orders/2 order 2"
        ]
    );
    assert_eq!(main.hits(), 3);
}

#[tokio::test]
async fn targets_named_by_dns_are_resolved_when_connecting() {
    let up = named("by-name", 0).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"http://localhost:{}\"] }}\nroutes:\n  - upstream: u\n",
        up.addr.port()
    )))
    .await;
    let got = get(&gw.url("/")).await;
    assert_eq!(
        (got.status.as_u16(), got.text()),
        (200, "by-name".to_string())
    );
}

#[tokio::test]
async fn grpc_health_checks_use_the_grpc_health_protocol() {
    let grpc = grpc_health().await;
    let gw = gateway(&crate::config(&format!(
        "upstreams:\n  serving: {{ targets: [\"h2c://{grpc}\"], health_check: {{ grpc_service: portico.test, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }} }}\n  unknown: {{ targets: [\"h2c://{grpc}\"], health_check: {{ grpc_service: no.such.Service, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }} }}\n  whole: {{ targets: [\"h2c://{grpc}\"], health_check: {{ grpc_service: \"\", interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }} }}\nroutes:\n  - upstream: serving\n"
    )))
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let health = get(&gw.admin_url("/upstreams")).await.json();
        let state = |u: &str| health[u]["targets"][0]["healthy"].as_bool();
        if state("serving") == Some(true)
            && state("whole") == Some(true)
            && state("unknown") == Some(false)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never settled: {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
