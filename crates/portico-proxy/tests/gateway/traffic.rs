//! Connection limits, pending requests, stream idle timeouts, media-type version routing, DNS
//! re-resolution, health kept across reloads, and load-balancing distributions at scale.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portico_testkit::*;

use crate::{config, empty, req};

/// An upstream that answers with its own name after `delay`.
async fn named(name: &'static str, delay: Duration) -> Upstream {
    serve(move |_req| async move {
        tokio::time::sleep(delay).await;
        http::Response::new(full(name))
    })
    .await
}

#[tokio::test]
async fn max_connections_queues_requests_and_refuses_past_max_pending() {
    let (release, held) = crate::held_upstream().await;
    let gw = Arc::new(
        gateway(&config(&format!(
            "upstreams:\n  conn-capped:\n    targets: [\"{}\"]\n    max_connections: 1\n    max_pending: 2\nroutes:\n  - upstream: conn-capped\n",
            held.url()
        )))
        .await,
    );
    // One request holds the only connection; two more wait for it.
    let mut admitted = Vec::new();
    for _ in 0..3 {
        let gw = gw.clone();
        admitted.push(tokio::spawn(async move {
            get(&gw.url("/")).await.status.as_u16()
        }));
    }
    let waited = Instant::now();
    loop {
        let h = get(&gw.admin_url("/upstreams")).await.json();
        if held.hits() == 1 && h["conn-capped"]["targets"][0]["pending"] == 2 {
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(5), "{h}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The next one finds the queue full: 503 at once.
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("1"));
    assert_eq!(got.json()["code"], "upstream_overloaded");
    release.send(true).unwrap();
    for t in admitted {
        assert_eq!(t.await.unwrap(), 200);
    }
    // All three went over the one connection, one after another.
    assert_eq!((held.hits(), held.conns()), (3, 1));
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains(&format!(
            "portico_upstream_connections{{upstream=\"conn-capped\",target=\"{}\"}} 1",
            held.url()
        )),
        "{m}"
    );
}

#[tokio::test]
async fn a_request_waits_for_a_connection_at_most_connect_timeout() {
    // The first request holds the only connection until the second has given up.
    let (release, slow) = crate::held_upstream_answering("slow").await;
    let gw = Arc::new(
        gateway(&config(&format!(
            "upstreams:\n  pend-timeout:\n    targets: [\"{}\"]\n    max_connections: 1\n    connect_timeout: 200ms\nroutes:\n  - upstream: pend-timeout\n",
            slow.url()
        )))
        .await,
    );
    let first = {
        let gw = gw.clone();
        tokio::spawn(async move { get(&gw.url("/")).await.status.as_u16() })
    };
    eventually("the first request reaches the upstream", async || {
        slow.hits() >= 1
    })
    .await;
    let started = Instant::now();
    let got = get(&gw.url("/")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["code"], "upstream_overloaded");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "gave up after {:?}",
        started.elapsed()
    );
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn a_silent_stream_is_cut_off_after_stream_idle_timeout() {
    use http_body_util::BodyExt;
    let up = serve(|_req| async move {
        let (tx, body) = portico_proxy::body::ChannelBody::new(1);
        tokio::spawn(async move {
            tx.send(bytes::Bytes::from_static(b"data: first\n\n"))
                .await
                .unwrap();
            // Then silence, with the stream still open.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        http::Response::new(http_body_util::Either::Right(body))
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  idle-stream:\n    targets: [\"{}\"]\n    stream_idle_timeout: 300ms\nroutes:\n  - upstream: idle-stream\n",
        up.url()
    )))
    .await;
    let resp = client(false, &[])
        .request(req("GET", &gw.url("/events")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first.as_ref(), b"data: first\n\n");
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the gateway must cut the stream off");
    assert!(
        !matches!(end, Some(Ok(_))),
        "the stream must end in an error, not look complete: {end:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains("portico_stream_idle_timeouts_total{direction=\"response\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn accept_media_type_versions_pick_the_route() {
    let (v1, v2) = (
        named("v1", Duration::ZERO).await,
        named("v2", Duration::ZERO).await,
    );
    let gw = gateway(&config(&format!(
        r#"upstreams:
  api-v1: {{ targets: ["{}"] }}
  api-v2: {{ targets: ["{}"] }}
routes:
  - match:
      path: {{ prefix: /things }}
      headers: [{{ name: accept, media_type: "application/vnd.acme.v2+json" }}]
    upstream: api-v2
  - match:
      path: {{ prefix: /things }}
      headers: [{{ name: accept, media_type: "application/json; version=2" }}]
    upstream: api-v2
  - match: {{ path: {{ prefix: /things }} }}
    upstream: api-v1
"#,
        v1.url(),
        v2.url()
    )))
    .await;
    let c = client(false, &[]);
    let ask = |accept: &'static str| {
        let c = c.clone();
        let url = gw.url("/things");
        async move {
            send(
                &c,
                req("GET", &url)
                    .header("accept", accept)
                    .body(empty())
                    .unwrap(),
            )
            .await
            .text()
        }
    };
    assert_eq!(ask("application/vnd.acme.v2+json").await, "v2");
    assert_eq!(
        ask("Application/VND.acme.v2+JSON; charset=utf-8").await,
        "v2"
    );
    assert_eq!(
        ask("text/html, application/vnd.acme.v2+json;q=0.9").await,
        "v2"
    );
    assert_eq!(ask("application/json; version=2").await, "v2");
    assert_eq!(ask("application/json;version=\"2\";q=0.5").await, "v2");
    // Not listed, listed with another version, or refused with q=0: version 1.
    assert_eq!(ask("application/json").await, "v1");
    assert_eq!(ask("application/json; version=3").await, "v1");
    assert_eq!(ask("application/vnd.acme.v2+json;q=0").await, "v1");
    assert_eq!(ask("application/vnd.acme.v1+json").await, "v1");
}

#[tokio::test]
async fn targets_named_by_dns_are_re_resolved_and_old_addresses_retired() {
    let (a, b) = (
        named("a", Duration::ZERO).await,
        named("b", Duration::ZERO).await,
    );
    // The name stands for a's address first, then for b's.
    portico_proxy::upstream::dns::set_override("moving.portico.test", vec![a.addr]);
    let gw = gateway(&config(
        "upstreams:\n  moving:\n    targets: [\"http://moving.portico.test:80\"]\n    dns_refresh: 100ms\nroutes:\n  - upstream: moving\n",
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.text(), "a");
    }
    portico_proxy::upstream::dns::set_override("moving.portico.test", vec![b.addr]);
    let waited = Instant::now();
    while get(&gw.url("/")).await.text() != "b" {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "never moved to the new address"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_hits = a.hits();
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.text(), "b");
    }
    assert_eq!(a.hits(), a_hits, "the retired address got traffic");
    let h = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(
        h["moving"]["targets"][0]["addresses"],
        serde_json::json!([b.addr.to_string()]),
        "{h}"
    );
}

#[tokio::test]
async fn a_reload_that_changes_an_upstream_keeps_its_unchanged_targets_health() {
    let (a, b) = (
        named("a", Duration::ZERO).await,
        named("b", Duration::ZERO).await,
    );
    let c = named("c", Duration::ZERO).await;
    let dir = temp_dir("reload-health");
    let file = |targets: &str| {
        config(&format!(
            "upstreams:\n  kept-health:\n    targets: [{targets}]\n    passive_health: {{ consecutive_failures: 2, ejection_time: 1m }}\nroutes:\n  - upstream: kept-health\n"
        ))
    };
    let gw = gateway_from_file(&dir, &file(&format!("\"{}\", \"{}\"", a.url(), b.url()))).await;
    a.stop_and_wait().await;
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/")).await.text(), "b");
    }
    let h = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(h["kept-health"]["targets"][0]["ejected"], true, "{h}");
    // Add a third target: the upstream changed, a is still the same target and stays out.
    std::fs::write(
        gw.path.as_ref().unwrap(),
        file(&format!(
            "\"{}\", \"{}\", \"{}\"",
            a.url(),
            b.url(),
            c.url()
        )) + "\nadmin: { address: \"127.0.0.1:0\" }\n",
    )
    .unwrap();
    gw.gw.reload_file().await.unwrap();
    let h = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(
        h["kept-health"]["targets"].as_array().unwrap().len(),
        3,
        "{h}"
    );
    assert_eq!(h["kept-health"]["targets"][0]["ejected"], true, "{h}");
    assert_eq!(h["kept-health"]["targets"][2]["ejected"], false, "{h}");
    let mut seen = HashMap::new();
    for _ in 0..12 {
        let got = get(&gw.url("/")).await;
        assert_eq!(got.status, 200);
        *seen.entry(got.text()).or_insert(0) += 1;
    }
    assert!(!seen.contains_key("a"), "{seen:?}");
    assert!(seen.contains_key("c"), "{seen:?}");
}

/// Sends `n` requests through the gateway from 16 concurrent clients, each with its own
/// `x-key` header, and counts which target answered.
async fn spread(gw: &TestGateway, path: &str, n: usize) -> HashMap<String, usize> {
    let counts = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (url, counts) = (gw.url(path), counts.clone());
        tasks.push(tokio::spawn(async move {
            let c = client(false, &[]);
            for i in (w..n).step_by(16) {
                let got = send(
                    &c,
                    req("GET", &url)
                        .header("x-key", format!("key-{i}"))
                        .body(empty())
                        .unwrap(),
                )
                .await;
                assert_eq!(got.status, 200);
                *counts.lock().unwrap().entry(got.text()).or_insert(0) += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(counts).unwrap().into_inner().unwrap()
}

#[tokio::test]
async fn ten_thousand_requests_follow_each_algorithm_within_tolerance() {
    let ups = [
        named("a", Duration::ZERO).await,
        named("b", Duration::ZERO).await,
        named("c", Duration::ZERO).await,
    ];
    // Weights 1:2:1 for the weighted algorithms.
    let weighted = format!(
        "[\"{}\", {{ url: \"{}\", weight: 2 }}, \"{}\"]",
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let even = format!(
        "[\"{}\", \"{}\", \"{}\"]",
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let gw = gateway(&config(&format!(
        r#"upstreams:
  d-rr: {{ targets: {weighted} }}
  d-random: {{ targets: {weighted}, load_balancing: {{ algorithm: random }} }}
  d-least: {{ targets: {even}, load_balancing: {{ algorithm: least_request }} }}
  d-hash: {{ targets: {weighted}, load_balancing: {{ algorithm: hash, hash_on: {{ header: x-key }} }} }}
routes:
  - {{ match: {{ path: {{ prefix: /rr }} }}, upstream: d-rr }}
  - {{ match: {{ path: {{ prefix: /random }} }}, upstream: d-random }}
  - {{ match: {{ path: {{ prefix: /least }} }}, upstream: d-least }}
  - {{ match: {{ path: {{ prefix: /hash }} }}, upstream: d-hash }}
"#
    )))
    .await;
    const N: usize = 10_000;
    let share =
        |c: &HashMap<String, usize>, k: &str| c.get(k).copied().unwrap_or(0) as f64 / N as f64;

    // Smooth weighted round robin is exact: 2,500 / 5,000 / 2,500.
    let rr = spread(&gw, "/rr", N).await;
    assert_eq!((rr["a"], rr["b"], rr["c"]), (2_500, 5_000, 2_500), "{rr:?}");

    // Random: each share within 0.02 of its weight (over 4 standard deviations).
    let random = spread(&gw, "/random", N).await;
    for (k, want) in [("a", 0.25), ("b", 0.5), ("c", 0.25)] {
        let got = share(&random, k);
        assert!(
            (got - want).abs() < 0.02,
            "random: {k} got {got}, want {want}: {random:?}"
        );
    }

    // Least request over equal targets: none starved, none past what the power of two choices
    // allows. A target cheaper than the others wins every pair it is drawn into, which is 2/3
    // of the picks; and the peak-EWMA keeps one slow answer for seconds, so on a loaded machine
    // one target can lead for the whole run (a share of 0.52 has been seen).
    let least = spread(&gw, "/least", N).await;
    for k in ["a", "b", "c"] {
        let got = share(&least, k);
        assert!(
            (0.1..0.6).contains(&got),
            "least_request: {k} got {got}: {least:?}"
        );
    }

    // Consistent hashing of 10,000 distinct keys follows the weights within 30% (the ring
    // places 160 points per unit of weight), and a key always lands on the same target.
    let hashed = spread(&gw, "/hash", N).await;
    for (k, want) in [("a", 0.25), ("b", 0.5), ("c", 0.25)] {
        let got = share(&hashed, k);
        assert!(
            (got - want).abs() < want * 0.3,
            "hash: {k} got {got}, want {want}: {hashed:?}"
        );
    }
    let again = spread(&gw, "/hash", N).await;
    assert_eq!(hashed, again, "the same keys must land on the same targets");
}

async fn admin(gw: &TestGateway, method: &str, path: &str, body: &str) -> Got {
    let c = client(false, &[]);
    send(
        &c,
        req(method, &gw.admin_url(path))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn targets_swapped_through_the_admin_api_keep_in_flight_requests_and_outlive_reloads() {
    // a holds its answers until the targets have been swapped.
    let (release_a, a) = crate::held_upstream_answering("a").await;
    let b = named("b", Duration::ZERO).await;
    let dir = temp_dir("admin-targets");
    let yaml = config(&format!(
        "upstreams:\n  swapped: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: swapped\n",
        a.url()
    ));
    let gw = Arc::new(gateway_from_file(&dir, &yaml).await);
    // Requests in flight to a when the targets change.
    let mut in_flight = Vec::new();
    for _ in 0..5 {
        let gw = gw.clone();
        in_flight.push(tokio::spawn(async move {
            let got = get(&gw.url("/")).await;
            (got.status.as_u16(), got.text())
        }));
    }
    eventually("five requests in flight to a", async || a.hits() >= 5).await;
    let put = admin(
        &gw,
        "PUT",
        "/upstreams/swapped/targets",
        &format!(r#"{{"targets": [{{"url": "{}", "weight": 2}}]}}"#, b.url()),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["targets_from"], "admin_api");
    assert_eq!(put.json()["targets"][0]["weight"], 2);
    assert!(
        in_flight.iter().all(|t| !t.is_finished()),
        "the requests to a are still in flight"
    );
    release_a.send(true).unwrap();
    for t in in_flight {
        assert_eq!(t.await.unwrap(), (200, "a".to_string()));
    }
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.text(), "b");
    }
    // The change is visible where drift is looked for.
    let shown = get(&gw.admin_url("/config")).await.json();
    assert_eq!(
        shown["target_overrides"]["swapped"][0]["url"],
        b.url(),
        "{shown}"
    );
    let ups = get(&gw.admin_url("/upstreams")).await.json();
    assert_eq!(ups["swapped"]["targets_from"], "admin_api", "{ups}");
    // A file reload keeps it, and says so.
    let notes = gw.gw.reload_file().await.unwrap();
    assert!(notes.iter().any(|n| n.contains("admin API")), "{notes:?}");
    assert_eq!(get(&gw.url("/")).await.text(), "b");
    // DELETE returns to the file's targets.
    let del = admin(&gw, "DELETE", "/upstreams/swapped/targets", "").await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json()["targets_from"], "config");
    assert_eq!(get(&gw.url("/")).await.text(), "a");

    // Refusals: precise, and nothing changes.
    for (body, status, needle) in [
        ("not json", 400, "not JSON"),
        (r#"{"targets": []}"#, 400, "at least one target"),
        (
            r#"{"targets": ["ftp://x:1"]}"#,
            400,
            "unsupported target scheme `ftp`",
        ),
        (
            r#"{"targets": [{"url": "http://x:1", "weight": 0}]}"#,
            400,
            "at least 1",
        ),
        (
            r#"{"targets": [{"url": "http://x:1", "wieght": 2}]}"#,
            400,
            "unknown key `wieght`",
        ),
        (
            r#"{"targets": ["http://x:1/path"]}"#,
            400,
            "must not have a path",
        ),
    ] {
        let got = admin(&gw, "PUT", "/upstreams/swapped/targets", body).await;
        assert_eq!(got.status.as_u16(), status, "{body}: {}", got.text());
        assert_eq!(got.header("content-type"), Some("application/problem+json"));
        assert!(
            got.json()["detail"].as_str().unwrap().contains(needle),
            "{body}: {}",
            got.text()
        );
    }
    let got = admin(
        &gw,
        "PUT",
        "/upstreams/nope/targets",
        r#"{"targets": ["http://x:1"]}"#,
    )
    .await;
    assert_eq!(got.status, 404);
    assert_eq!(get(&gw.url("/")).await.text(), "a");
}

#[tokio::test]
async fn a_cookie_picks_the_route() {
    let (stable, beta) = (
        named("stable", Duration::ZERO).await,
        named("beta", Duration::ZERO).await,
    );
    let gw = gateway(&config(&format!(
        r#"upstreams:
  ck-stable: {{ targets: ["{}"] }}
  ck-beta: {{ targets: ["{}"] }}
routes:
  - match: {{ cookies: [{{ name: channel, exact: beta }}] }}
    upstream: ck-beta
  - upstream: ck-stable
"#,
        stable.url(),
        beta.url()
    )))
    .await;
    let c = client(false, &[]);
    for (cookie, want) in [
        (Some("channel=beta"), "beta"),
        (Some("a=1; channel=beta; b=2"), "beta"),
        (Some("a=1; channel=\"beta\""), "beta"),
        (Some("channel=stable"), "stable"),
        (Some("xchannel=beta"), "stable"),
        (None, "stable"),
    ] {
        let mut r = req("GET", &gw.url("/"));
        if let Some(v) = cookie {
            r = r.header("cookie", v);
        }
        assert_eq!(
            send(&c, r.body(empty()).unwrap()).await.text(),
            want,
            "{cookie:?}"
        );
    }
}

#[tokio::test]
async fn preconnect_opens_connections_before_the_first_request() {
    let up = named("warm", Duration::from_millis(50)).await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"], preconnect: 4 }}\nroutes:\n  - upstream: u\n",
        up.url()
    )))
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.conns() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.conns(), 4, "opened with no request");
    assert_eq!(up.hits(), 0);
    // Four requests at once find them ready: no new connection.
    let c = client(false, &[]);
    let calls: Vec<_> = (0..4)
        .map(|_| send(&c, req("GET", &gw.url("/")).body(empty()).unwrap()))
        .collect();
    for got in futures_util::future::join_all(calls).await {
        assert_eq!(got.status, 200);
    }
    assert_eq!(up.hits(), 4);
    assert_eq!(up.conns(), 4, "the preconnected connections served them");
}
