//! Cluster-wide rate limits through a real Redis: two gateways share one limit; Redis stopping
//! and coming back; fail-open and fail-closed.
//!
//! The shared Redis is the one on 127.0.0.1:6379. Without it these tests are skipped (reported
//! on stderr) unless `PORTICO_REQUIRE_REDIS=1`, which CI sets, makes that a failure.

use std::time::{Duration, Instant};

use portico_testkit::*;

use crate::config;

pub(crate) fn require(what: &str, available: bool) -> bool {
    if !available {
        if std::env::var("PORTICO_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("{what} is required (PORTICO_REQUIRE_REDIS=1) but not available");
        }
        eprintln!("SKIPPED: {what} is not available; set PORTICO_REQUIRE_REDIS=1 to fail instead");
    }
    available
}

pub(crate) fn shared_redis() -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok();
    require("Redis on 127.0.0.1:6379", up)
}

/// A key prefix no other test (or earlier run) uses.
pub(crate) fn prefix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("portico-test-{}-{n}:", std::process::id())
}

fn limited(up: &Upstream, redis: &str, prefix: &str, extra: &str, requests: u32) -> String {
    config(&format!(
        "redis: {{ url: \"{redis}\", key_prefix: \"{prefix}\", timeout: 200ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: shared\n    upstream: u\n    policies:\n      - type: rate_limit\n        key: route\n        store: redis\n{extra}        limits: [{{ requests: {requests}, per: 1m }}]\n",
        up.url()
    ))
}

#[tokio::test]
async fn two_gateways_share_one_limit() {
    if !shared_redis() {
        return;
    }
    let up = echo_server().await;
    let p = prefix();
    let yaml = limited(&up, "redis://127.0.0.1:6379", &p, "", 10);
    let a = gateway(&yaml).await;
    let b = gateway(&yaml).await;
    // 30 concurrent requests spread over both instances: exactly 10 pass, fleet-wide.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        set.spawn(async move { get(&url).await });
    }
    let mut ok = 0;
    let mut limited = 0;
    while let Some(got) = set.join_next().await {
        let got = got.unwrap();
        match got.status.as_u16() {
            200 => {
                ok += 1;
                assert!(got.header("ratelimit").is_some());
                assert_eq!(
                    got.header("ratelimit-policy"),
                    Some("\"limit-0\";q=10;w=60")
                );
            }
            429 => {
                limited += 1;
                assert!(got.header("retry-after").is_some());
            }
            s => panic!("unexpected status {s}: {}", got.text()),
        }
    }
    assert_eq!((ok, limited), (10, 20));
    assert_eq!(up.hits(), 10);
    let metrics = get(&a.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains("portico_rate_limited_total{route=\"shared\",limit=\"limit-0\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn batched_leases_never_admit_more_than_the_limit() {
    if !shared_redis() {
        return;
    }
    let up = echo_server().await;
    let p = prefix();
    let yaml = limited(&up, "redis://127.0.0.1:6379", &p, "        batch: 4\n", 10);
    let a = gateway(&yaml).await;
    let b = gateway(&yaml).await;
    let mut ok = 0;
    for i in 0..40 {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        if get(&url).await.status == 200 {
            ok += 1;
        }
    }
    // Units leased by one instance are spent only there; across two instances with batch 4, at
    // most 2 × 3 units can be stranded, and none is ever added.
    assert!((4..=10).contains(&ok), "admitted {ok}");
    assert_eq!(up.hits(), ok);
}

/// A private redis-server on a free port, so it can be stopped without touching other tests.
pub(crate) struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    pub(crate) fn start(port: u16) -> Option<OwnRedis> {
        OwnRedis::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Option<OwnRedis> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OwnRedis { child })
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn redis_outage_fails_open_or_closed_and_recovers() {
    let port = free_port();
    let Some(mut redis) = OwnRedis::start(port) else {
        require("redis-server (the binary)", false);
        return;
    };
    let url = format!("redis://127.0.0.1:{port}");
    let up = echo_server().await;
    let p = prefix();
    let open = gateway(&limited(
        &up,
        &url,
        &p,
        "        on_store_failure: fail_open\n",
        1000,
    ))
    .await;
    let closed = gateway(&limited(
        &up,
        &url,
        &p,
        "        on_store_failure: fail_closed\n",
        1000,
    ))
    .await;
    assert_eq!(get(&open.url("/")).await.status, 200);
    assert_eq!(get(&closed.url("/")).await.status, 200);

    redis.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let got = get(&open.url("/")).await;
        assert_eq!(got.status, 200, "fail-open serves, limiting locally");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "no hang: {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let got = get(&closed.url("/")).await;
        assert_eq!(got.status, 503, "{}", got.text());
        assert_eq!(got.json()["code"], "rate_limit_unavailable");
        assert_eq!(got.header("retry-after"), Some("1"));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "no hang: {:?}",
            t.elapsed()
        );
    }
    let metrics = get(&closed.admin_url("/metrics")).await.text();
    assert!(metrics.contains("portico_redis_errors_total"), "{metrics}");

    // Redis comes back (empty): both return to shared counters without a restart.
    let _redis = OwnRedis::start(port).expect("redis-server restarts");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(&closed.url("/")).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fail-closed gateway never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the counters are in Redis again");
}

#[tokio::test]
async fn local_limit_is_exact_under_concurrency() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: rate_limit\n        key: route\n        limits: [{{ requests: 7, per: 1m }}]\n",
        up.url()
    )))
    .await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let url = gw.url("/");
        set.spawn(async move { get(&url).await.status.as_u16() });
    }
    let mut ok = 0;
    while let Some(s) = set.join_next().await {
        if s.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 7);
}

#[tokio::test]
async fn sliding_window_quotas_locally_and_through_redis() {
    let up = echo_server().await;
    let local = gateway(&config(&format!(
        "upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: rate_limit\n        key: route\n        limits: [{{ requests: 3, per: 1m, algorithm: sliding_window }}]\n",
        up.url()
    )))
    .await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(get(&local.url("/")).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let got = get(&local.url("/")).await;
    let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "{retry}");

    if !shared_redis() {
        return;
    }
    let p = prefix();
    let yaml = config(&format!(
        "redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{p}\" }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: rate_limit\n        key: route\n        store: redis\n        limits:\n          - {{ requests: 100, per: 1s }}\n          - {{ requests: 5, per: 1h, algorithm: sliding_window }}\n",
        up.url()
    ));
    let a = gateway(&yaml).await;
    let b = gateway(&yaml).await;
    let mut ok = 0;
    for i in 0..12 {
        let url = if i % 2 == 0 { a.url("/") } else { b.url("/") };
        let got = get(&url).await;
        if got.status == 200 {
            ok += 1;
        } else {
            assert_eq!(got.status, 429);
            let retry: u64 = got.header("retry-after").unwrap().parse().unwrap();
            assert!(retry > 60, "the hour quota refused it: {retry}");
        }
    }
    assert_eq!(ok, 5, "5 per hour across both instances");
}

/// A three-node Redis Cluster on free ports (no replicas), made with `redis-cli --cluster`.
pub(crate) fn start_cluster() -> Option<(Vec<OwnRedis>, Vec<u16>)> {
    let dir = temp_dir("redis-cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for p in &ports {
        let conf = dir.join(format!("nodes-{p}.conf"));
        nodes.push(OwnRedis::start_with(
            *p,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str()?,
                "--dir",
                dir.to_str()?,
            ],
        )?);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !created.success() {
        return None;
    }
    // Every node must agree the cluster is up before it serves keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    for p in &ports {
        loop {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "cluster", "info"])
                .output()
                .ok()?;
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Some((nodes, ports))
}

#[tokio::test]
async fn a_limit_shared_through_redis_cluster() {
    let Some((_nodes, ports)) = start_cluster() else {
        require("a Redis Cluster (redis-server and redis-cli)", false);
        return;
    };
    let up = echo_server().await;
    let nodes = ports
        .iter()
        .map(|p| format!("\"redis://127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = config(&format!(
        "redis: {{ cluster_nodes: [{nodes}], key_prefix: \"{}\", timeout: 500ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: rate_limit\n        key: {{ header: x-tenant }}\n        store: redis\n        on_store_failure: fail_closed\n        limits:\n          - {{ requests: 4, per: 1m }}\n          - {{ requests: 100, per: 1h, algorithm: sliding_window }}\n",
        prefix(),
        up.url()
    ));
    let a = gateway(&yaml).await;
    let b = gateway(&yaml).await;
    let c = client(false, &[]);
    // Several tenants, so keys land on different nodes; each tenant gets exactly 4.
    for tenant in ["t1", "t2", "t3", "t4", "t5"] {
        let mut ok = 0;
        for i in 0..10 {
            let gw = if i % 2 == 0 { &a } else { &b };
            let got = send(
                &c,
                crate::req("GET", &gw.url("/"))
                    .header("x-tenant", tenant)
                    .body(crate::empty())
                    .unwrap(),
            )
            .await;
            match got.status.as_u16() {
                200 => ok += 1,
                429 => {}
                s => panic!("{tenant}: unexpected {s}: {}", got.text()),
            }
        }
        assert_eq!(ok, 4, "tenant {tenant}");
    }
}

/// A sentinel on a free port watching the primary on `master_port` as `primary` (its config
/// file must be writable: sentinels rewrite it).
pub(crate) fn start_sentinel(master_port: u16) -> Option<(OwnRedis, u16)> {
    let dir = temp_dir("sentinel");
    let sentinel_port = free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor primary 127.0.0.1 {master_port} 1\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let sentinel = OwnRedis { child };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", sentinel_port)).is_err() {
        assert!(Instant::now() < deadline, "sentinel did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((sentinel, sentinel_port))
}

#[tokio::test]
async fn a_limit_shared_through_sentinel() {
    let master_port = free_port();
    let Some(_master) = OwnRedis::start(master_port) else {
        require("redis-server (the binary)", false);
        return;
    };
    let Some((_sentinel, sentinel_port)) = start_sentinel(master_port) else {
        require("redis-server --sentinel", false);
        return;
    };
    let up = echo_server().await;
    let yaml = config(&format!(
        "redis: {{ sentinel: {{ nodes: [\"redis://127.0.0.1:{sentinel_port}\"], master: primary }}, key_prefix: \"{}\", timeout: 500ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: rate_limit\n        key: route\n        store: redis\n        on_store_failure: fail_closed\n        limits: [{{ requests: 6, per: 1m }}]\n",
        prefix(),
        up.url()
    ));
    let a = gateway(&yaml).await;
    let b = gateway(&yaml).await;
    let mut ok = 0;
    for i in 0..14 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match get(&gw.url("/")).await.status.as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(
        ok, 6,
        "the primary found through Sentinel holds one shared limit"
    );
    // The counters really are on that primary.
    let client = redis::Client::open(format!("redis://127.0.0.1:{master_port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let n: usize = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(n > 0);
}

/// With `store: redis` too, the same policy written on two routes gives each route its own
/// budget, and a global policy is one budget across routes.
#[tokio::test]
async fn redis_budgets_are_per_route_unless_the_policy_is_global() {
    if !shared_redis() {
        return;
    }
    let up = echo_server().await;
    let p = prefix();
    let route = |name: &str| {
        format!(
            "  - name: {name}\n    match: {{ path: {{ prefix: /{name} }} }}\n    upstream: u\n    policies:\n      - {{ type: rate_limit, key: client_ip, store: redis, limits: [{{ requests: 2, per: 1m }}] }}\n"
        )
    };
    let gw = gateway(&config(&format!(
        "redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{p}\", timeout: 200ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n{}{}",
        up.url(),
        route("a"),
        route("b"),
    )))
    .await;
    for path in ["/a", "/b"] {
        for _ in 0..2 {
            assert_eq!(get(&gw.url(path)).await.status, 200, "{path}");
        }
        assert_eq!(get(&gw.url(path)).await.status, 429, "{path}");
    }
    // One global policy: the two routes draw on one budget.
    let p = prefix();
    let gw = gateway(&config(&format!(
        "redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{p}\", timeout: 200ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\npolicies:\n  - {{ type: rate_limit, key: client_ip, store: redis, limits: [{{ requests: 2, per: 1m }}] }}\nroutes:\n  - {{ name: a, match: {{ path: {{ prefix: /a }} }}, upstream: u }}\n  - {{ name: b, match: {{ path: {{ prefix: /b }} }}, upstream: u }}\n",
        up.url(),
    )))
    .await;
    assert_eq!(get(&gw.url("/a")).await.status, 200);
    assert_eq!(get(&gw.url("/b")).await.status, 200);
    assert_eq!(get(&gw.url("/a")).await.status, 429);
    assert_eq!(get(&gw.url("/b")).await.status, 429);
}

/// Two nodes sharing a Redis see each other in `GET /cluster`; one that applies a newer
/// config leaves the other flagged as drifted; a node that shuts down leaves at once.
#[tokio::test]
async fn nodes_see_each_other_and_drift_shows_within_a_heartbeat() {
    if !shared_redis() {
        return;
    }
    let up = echo_server().await;
    let prefix = prefix();
    let yaml = |extra: &str| {
        config(&format!(
            "redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{prefix}\", heartbeat_interval: 100ms }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n{extra}",
            up.url()
        ))
    };
    let view = |gw: &TestGateway| {
        let url = gw.admin_url("/cluster");
        async move { get(&url).await.json() }
    };
    let a = gateway(&yaml("")).await;
    let b = gateway(&yaml("")).await;
    let (id_a, id_b) = (
        view(&a).await["node"].clone(),
        view(&b).await["node"].clone(),
    );
    assert_ne!(id_a, id_b, "each node has its own id");
    eventually("both nodes in the fleet, agreeing", async || {
        let v = view(&a).await;
        v["nodes"].as_array().is_some_and(|n| n.len() == 2) && v["drifted"] == 0
    })
    .await;
    let v = view(&a).await;
    assert_eq!(v["nodes"][0]["config_hash"], v["nodes"][1]["config_hash"]);
    assert_eq!(v["nodes"][0]["generation"], 1);
    // b applies a newer config: a now runs an old one.
    let newer = portico_config::load_str(
        "b.yaml",
        &format!(
            "{}admin: {{ address: \"127.0.0.1:0\" }}\n",
            yaml("  - match: { path: { prefix: /new } }\n    respond: { body: new }\n")
        ),
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    let newer_hash = newer.hash.clone();
    b.gw.apply(newer).await.unwrap();
    eventually("a shown as drifted", async || {
        let v = view(&a).await;
        v["newest_hash"] == newer_hash.as_str()
            && v["drifted"] == 1
            && v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["id"] == id_a && n["drift"] == true)
    })
    .await;
    // b leaves: gone at once, not after its heartbeat expires.
    b.gw.shutdown().await;
    let v = view(&a).await;
    let ids: Vec<&serde_json::Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert_eq!(ids, [&id_a]);
    // A configured id is the node's name.
    let named =
        gateway(&yaml("").replace("redis: {", "server: { node_id: edge-1 }\nredis: {")).await;
    assert_eq!(view(&named).await["node"], "edge-1");
    // Without Redis there is no fleet to show.
    let alone = gateway(&config("routes:\n  - respond: { body: x }\n")).await;
    let got = get(&alone.admin_url("/cluster")).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
}
