//! The config kept in Redis: versions, compare-and-set pushes, nodes that follow pushes,
//! refuse a bad version and keep serving, start from their cached copy when the store is
//! down and catch up when it is back.
//!
//! Uses the shared Redis on 127.0.0.1:6379 (each test under a key of its own) and, for the
//! outage, a redis-server of the test's own.

use std::time::{Duration, Instant};

use portico_proxy::runtime::config_store::{ConfigStore, PushError, StoreUrl};
use portico_proxy::{StartedFrom, StoreStartError, stored_config};
use portico_testkit::*;

use crate::cluster::{OwnRedis, free_port, prefix, shared_redis, start_cluster, start_sentinel};
use crate::config;

fn store(url: &str) -> ConfigStore {
    ConfigStore::open(StoreUrl::parse(url).unwrap()).unwrap()
}

/// A config whose one route answers `body`.
fn answering(body: &str) -> String {
    with_admin(&config(&format!(
        "routes:\n  - respond: {{ status: 200, body: {body} }}\n"
    )))
}

/// Pushes `text` over whatever version stands.
async fn push(s: &ConfigStore, text: &str) -> u64 {
    s.push(&stored_config(text.into(), "test".into(), None), None, 20)
        .await
        .unwrap()
}

/// Waits (up to 10 s) until the gateway answers `body`.
async fn until_answers(gw: &TestGateway, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(&gw.url("/")).await.text();
        if got == body {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still answering {got:?}, not {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn pushes_are_versioned_kept_for_rollback_and_a_stale_push_loses() {
    if !shared_redis() {
        return;
    }
    let url = format!("redis://127.0.0.1:6379?key={}cfg", prefix());
    let s = store(&url);
    assert_eq!(s.version().await.unwrap(), 0);
    assert!(s.get(None).await.unwrap().is_none());
    let doc = |t: &str| stored_config(t.into(), "ana@ci".into(), None);
    assert_eq!(s.push(&doc("a: 1\n"), Some(0), 2).await.unwrap(), 1);
    assert_eq!(s.push(&doc("a: 2\n"), Some(1), 2).await.unwrap(), 2);
    // A push that read version 1 before the one above: refused, nothing written.
    match s.push(&doc("a: 9\n"), Some(1), 2).await {
        Err(PushError::Conflict { expected, current }) => assert_eq!((expected, current), (1, 2)),
        other => panic!("not a conflict: {other:?}"),
    }
    assert_eq!(s.get(None).await.unwrap().unwrap().text, "a: 2\n");
    // Only the last `keep` (2) versions are kept.
    assert_eq!(s.push(&doc("a: 3\n"), None, 2).await.unwrap(), 3);
    let h = s.history().await.unwrap();
    assert_eq!(
        h.iter()
            .map(|v| (v.version, v.text.as_str()))
            .collect::<Vec<_>>(),
        vec![(3, "a: 3\n"), (2, "a: 2\n")]
    );
    assert!(s.get(Some(1)).await.unwrap().is_none());
    let v3 = s.get(Some(3)).await.unwrap().unwrap();
    assert_eq!(v3.author, "ana@ci");
    assert_eq!(v3.hash, portico_config::text_hash("a: 3\n"));
    assert!(v3.time.ends_with('Z'), "{}", v3.time);
}

#[tokio::test]
async fn a_node_follows_pushes_and_stays_on_its_last_good_config_when_one_is_refused() {
    if !shared_redis() {
        return;
    }
    let url = format!("redis://127.0.0.1:6379?key={}cfg", prefix());
    let s = store(&url);
    // Nothing stored: the node does not start, and says how to store a config.
    match gateway_from_store(&url, None, Duration::from_secs(60)).await {
        Err(e @ StoreStartError::Empty { .. }) => {
            assert!(e.to_string().contains("portico push -c FILE --to"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started with nothing stored"),
    }
    push(&s, &answering("one")).await;
    // A long poll: only the push's announcement can make the node see the next versions.
    let (gw, from) = gateway_from_store(&url, None, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(from, StartedFrom::Store(1));
    until_answers(&gw, "one").await;
    push(&s, &answering("two")).await;
    until_answers(&gw, "two").await;

    // A version the node cannot load (written past `portico push`'s validation): refused,
    // the node keeps serving version 2 and says why on /config.
    let bad = push(&s, &with_admin(&config("routes:\n  - upstream: nowhere\n"))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let cfg = loop {
        let c = get(&gw.admin_url("/config")).await.json();
        if !c["last_reload_error"].is_null() {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the bad version was never refused"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = cfg["last_reload_error"].as_str().unwrap();
    assert!(error.contains(&format!("#v{bad}")), "{error}");
    assert_eq!(cfg["store"]["version"], 2);
    assert_eq!(get(&gw.url("/")).await.text(), "two");
    // A reload asked for tries it again, and refuses it again.
    assert!(gw.gw.reload_file().await.is_err());

    // The next good version is applied, and /config names where it came from.
    push(&s, &answering("four")).await;
    until_answers(&gw, "four").await;
    let cfg = get(&gw.admin_url("/config")).await.json();
    assert_eq!(cfg["store"]["version"], 4);
    assert_eq!(cfg["store"]["reachable"], true);
    assert!(
        cfg["source"].as_str().unwrap().ends_with("cfg#v4"),
        "{}",
        cfg["source"]
    );
    assert!(cfg["last_reload_error"].is_null());
    // The same text pushed again: a new version, nothing to apply.
    let generation = gw.gw.runtime().generation;
    push(&s, &answering("four")).await;
    assert!(gw.gw.reload_file().await.unwrap().is_empty());
    assert_eq!(gw.gw.runtime().generation, generation);
    gw.gw.shutdown().await;
}

#[tokio::test]
async fn the_store_going_away_fails_no_request_and_a_node_starts_from_its_cached_copy() {
    let port = free_port();
    let Some(mut redis) = OwnRedis::start(port) else {
        crate::cluster::require("redis-server (the binary)", false);
        return;
    };
    let url = format!("redis://127.0.0.1:{port}?key=cfg&timeout=300ms");
    let dir = temp_dir("store-cache");
    let cache = dir.join("cache.yaml");
    push(&store(&url), &answering("stored")).await;
    let poll = Duration::from_millis(100);
    let (a, _) = gateway_from_store(&url, Some(cache.clone()), poll)
        .await
        .unwrap();
    until_answers(&a, "stored").await;
    // The cached copy is the stored text, readable by its owner only.
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        answering("stored")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Requests without a pause from here until the store is back and followed again.
    let (stop_load, stopped) = tokio::sync::watch::channel(false);
    let target = a.url("/");
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !*stopped.borrow() {
            let got = get(&target).await;
            match (got.status.as_u16(), got.text().as_str()) {
                (200, "stored" | "after") => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        (ok, failed)
    });

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get(&a.admin_url("/readyz")).await;
        assert_eq!(ready.status, 200);
        if ready.text().contains("unreachable since") {
            assert!(
                ready.text().contains("serving version 1"),
                "{}",
                ready.text()
            );
            break;
        }
        assert!(Instant::now() < deadline, "the outage was never noticed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // No copy and no store: not started, and both reasons said.
    match gateway_from_store(&url, Some(dir.join("none.yaml")), poll).await {
        Err(e @ StoreStartError::NoCopy(..)) => {
            let text = e.to_string();
            assert!(text.contains("none.yaml"), "{text}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started with no store and no copy"),
    }
    let (b, from) = gateway_from_store(&url, Some(cache.clone()), poll)
        .await
        .unwrap();
    assert!(matches!(from, StartedFrom::Cache(_)), "{from:?}");
    until_answers(&b, "stored").await;
    let ready = get(&b.admin_url("/readyz")).await.text();
    assert!(ready.contains("from the cached copy"), "{ready}");

    // The store is back (empty: it keeps nothing on disk) and a config is pushed: both nodes
    // take it within a poll, and say the store answers again.
    let _redis = OwnRedis::start(port).expect("redis-server restarts");
    push(&store(&url), &answering("after")).await;
    until_answers(&a, "after").await;
    until_answers(&b, "after").await;
    for n in [&a, &b] {
        assert_eq!(get(&n.admin_url("/readyz")).await.text(), "ready\n");
    }
    // The cached copy is written just after the new config takes over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&cache).ok() != Some(answering("after")) {
        assert!(
            Instant::now() < deadline,
            "the cached copy is not the new version"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_load.send(true).unwrap();
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 10, "only {ok} requests were sent");
    a.gw.shutdown().await;
    b.gw.shutdown().await;
}

#[tokio::test]
async fn three_nodes_follow_one_push_and_the_one_that_cannot_apply_it_shows_as_drifted() {
    if !shared_redis() {
        return;
    }
    let p = prefix();
    let url = format!("redis://127.0.0.1:6379?key={p}cfg");
    let s = store(&url);
    // Each node reads relative paths from a folder of its own; the third has no secret file.
    let dirs: Vec<_> = (0..3)
        .map(|i| temp_dir(&format!("fleet-node-{i}")))
        .collect();
    for d in &dirs[..2] {
        std::fs::write(d.join("jwt.secret"), "0123456789abcdef0123456789abcdef\n").unwrap();
    }
    let text = |body: &str, extra: &str| {
        with_admin(&config(&format!(
            "redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{p}\", heartbeat_interval: 100ms }}\nroutes:\n  - respond: {{ status: 200, body: {body} }}\n{extra}"
        )))
    };
    push(&s, &text("one", "")).await;
    let mut nodes = Vec::new();
    for d in &dirs {
        let (gw, _) = gateway_from_store_in(&url, None, Duration::from_secs(60), d.clone())
            .await
            .unwrap();
        until_answers(&gw, "one").await;
        nodes.push(gw);
    }
    let guarded = "  - name: guarded\n    match: { path: { prefix: /guarded } }\n    respond: { body: g }\n    policies:\n      - type: jwt\n        issuers: [{ algorithms: [HS256], keys: [{ secret_file: jwt.secret }] }]\n";
    let pushed = Instant::now();
    push(&s, &text("two", guarded)).await;
    until_answers(&nodes[0], "two").await;
    until_answers(&nodes[1], "two").await;
    eprintln!(
        "two nodes applied the push {:?} after it was stored",
        pushed.elapsed()
    );
    // The third cannot read the secret file: it stays on version 1 and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let c = get(&nodes[2].admin_url("/config")).await.json();
        if let Some(e) = c["last_reload_error"].as_str() {
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "the third node never refused");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(error.contains("jwt.secret"), "{error}");
    assert_eq!(get(&nodes[2].url("/")).await.text(), "one");
    // Every node sees the third as drifted, within a few heartbeats.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fleet = get(&nodes[0].admin_url("/cluster")).await.json();
        let drifted: Vec<bool> = fleet["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["drift"].as_bool().unwrap())
            .collect();
        // The drifted node's heartbeat says why once it has refused the push (the others'
        // newer heartbeats can show it drifted before that).
        let stale = fleet["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["drift"] == true);
        if let Some(stale) = stale
            && fleet["drifted"] == 1
            && drifted.len() == 3
            && stale["last_reload_error"].is_string()
        {
            assert_eq!(stale["config_hash"], nodes[2].gw.runtime().config.hash);
            let why = stale["last_reload_error"].as_str().unwrap();
            assert!(why.contains("jwt.secret"), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "drift never shown: {fleet}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in nodes {
        n.gw.shutdown().await;
    }
}

#[tokio::test]
async fn of_concurrent_pushes_over_one_version_exactly_one_is_stored() {
    if !shared_redis() {
        return;
    }
    let url = format!("redis://127.0.0.1:6379?key={}cfg", prefix());
    let s = std::sync::Arc::new(store(&url));
    push(&s, "a: 0\n").await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = s.clone();
        set.spawn(async move {
            s.push(
                &stored_config(format!("a: {i}\n"), format!("p{i}"), None),
                Some(1),
                20,
            )
            .await
        });
    }
    let (mut won, mut lost) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok(v) => won.push(v),
            Err(PushError::Conflict { current, .. }) => {
                assert_eq!(current, 2);
                lost += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((won, lost), (vec![2], 19));
    assert_eq!(s.history().await.unwrap().len(), 2);
}

/// A node follows a store kept in a Redis Cluster, and one found through Sentinel, by polling
/// (no subscription is made there).
#[tokio::test]
async fn nodes_follow_a_store_in_a_redis_cluster_and_through_sentinel() {
    let Some((_nodes, ports)) = start_cluster() else {
        crate::cluster::require("a Redis Cluster (redis-server and redis-cli)", false);
        return;
    };
    let seeds = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let master_port = free_port();
    let Some(_primary) = OwnRedis::start(master_port) else {
        crate::cluster::require("redis-server (the binary)", false);
        return;
    };
    let Some((_sentinel, sentinel_port)) = start_sentinel(master_port) else {
        crate::cluster::require("redis-server --sentinel", false);
        return;
    };
    for url in [
        format!("redis://{seeds}?cluster=true&key={}cfg", prefix()),
        format!("redis://127.0.0.1:{sentinel_port}?sentinel=primary&key=cfg"),
    ] {
        let s = store(&url);
        push(&s, &answering("first")).await;
        let (gw, from) = gateway_from_store(&url, None, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(from, StartedFrom::Store(1), "{url}");
        until_answers(&gw, "first").await;
        push(&s, &answering("second")).await;
        until_answers(&gw, "second").await;
        gw.gw.shutdown().await;
    }
}

async fn post_json(url: &str, body: &str) -> Got {
    send(
        &client(false, &[]),
        crate::req("POST", url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_admin_api_lists_applied_versions_diffs_them_and_rolls_back_through_the_store() {
    if !shared_redis() {
        return;
    }
    let url = format!("redis://127.0.0.1:6379?key={}cfg", prefix());
    let s = store(&url);
    push(&s, &answering("one")).await;
    let (gw, _) = gateway_from_store(&url, None, Duration::from_secs(60))
        .await
        .unwrap();
    push(&s, &answering("two")).await;
    until_answers(&gw, "two").await;

    let v = get(&gw.admin_url("/config/versions")).await.json();
    let list = v["versions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["generation"], 2);
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[0]["applied_by"], "store_watch");
    assert_eq!(list[0]["store_version"], 2);
    assert_eq!(list[1]["applied_by"], "start");
    let one = get(&gw.admin_url("/config/versions/1")).await.json();
    assert_eq!(one["config"]["routes"][0]["respond"]["body"], "one");
    let d = get(&gw.admin_url("/config/diff?from=1")).await.json();
    assert_eq!(d["same"], false);
    assert!(
        d["changes"][0].as_str().unwrap().starts_with("routes: ~"),
        "{d}"
    );
    // Bad requests are problems that say what to send.
    let bad = get(&gw.admin_url("/config/diff?from=x")).await;
    assert_eq!(
        (bad.status.as_u16(), bad.header("content-type")),
        (400, Some("application/problem+json"))
    );
    assert_eq!(get(&gw.admin_url("/config/versions/99")).await.status, 404);
    assert_eq!(
        post_json(&gw.admin_url("/config/rollback"), "{}")
            .await
            .status,
        400
    );

    // Rollback: version 1's text is pushed as version 3 and applied here at once.
    let r = post_json(&gw.admin_url("/config/rollback"), "{\"generation\": 1}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["store_version"], 3);
    assert_eq!(r.json()["applied_here"], true);
    assert_eq!(get(&gw.url("/")).await.text(), "one");
    let stored = s.get(Some(3)).await.unwrap().unwrap();
    assert!(
        stored
            .note
            .as_deref()
            .unwrap()
            .starts_with("rollback to version 1 (generation 1 on node "),
        "{:?}",
        stored.note
    );
    // Applied once, by the rollback or by the watcher that saw the push, whichever came first.
    let v = get(&gw.admin_url("/config/versions")).await.json();
    assert_eq!(v["versions"].as_array().unwrap().len(), 3, "{v}");
    let by = v["versions"][0]["applied_by"].as_str().unwrap();
    assert!(by == "store_admin" || by == "store_watch", "{by}");
    gw.gw.shutdown().await;

    // A config that no longer loads (a file it names is gone) is not pushed: 422.
    let secret = temp_dir("rollback-secret").join("jwt.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let with_secret = with_admin(&config(&format!(
        "routes:\n  - respond: {{ status: 200, body: s }}\n    policies:\n      - type: jwt\n        issuers: [{{ algorithms: [HS256], keys: [{{ secret_file: \"{}\" }}] }}]\n",
        secret.display()
    )));
    let url2 = format!("redis://127.0.0.1:6379?key={}cfg", prefix());
    let s2 = store(&url2);
    push(&s2, &with_secret).await;
    let (gw2, _) = gateway_from_store(&url2, None, Duration::from_secs(60))
        .await
        .unwrap();
    push(&s2, &answering("plain")).await;
    until_answers(&gw2, "plain").await;
    std::fs::remove_file(&secret).unwrap();
    let r = post_json(&gw2.admin_url("/config/rollback"), "{\"generation\": 1}").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.json()["detail"].as_str().unwrap().contains("jwt.secret"),
        "{}",
        r.text()
    );
    assert_eq!(s2.version().await.unwrap(), 2, "nothing was pushed");
    gw2.gw.shutdown().await;

    // A node that runs from a file refuses: the file would say otherwise than what runs.
    let dir = temp_dir("rollback-file");
    let file = gateway_from_file(&dir, &answering("f")).await;
    let r = post_json(&file.admin_url("/config/rollback"), "{\"generation\": 1}").await;
    assert_eq!(r.status, 409);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("runs from the file")
    );
}

/// Whether Python with Playwright and Debian's Chromium are here; without them the browser
/// test is skipped (reported), unless `PORTICO_REQUIRE_BROWSER=1`, which CI sets.
fn browser() -> bool {
    let here = std::path::Path::new("/usr/bin/chromium").exists()
        && std::process::Command::new("python3")
            .args(["-c", "import playwright.sync_api"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !here {
        assert_ne!(
            std::env::var("PORTICO_REQUIRE_BROWSER").as_deref(),
            Ok("1"),
            "Chromium (/usr/bin/chromium) and Python's playwright are required (PORTICO_REQUIRE_BROWSER=1)"
        );
        eprintln!(
            "SKIPPED: the console's browser test needs /usr/bin/chromium and `pip install playwright`"
        );
    }
    here
}

/// The console end to end in headless Chromium (`tests/browser/console.py`): pages load
/// cleanly, the overview's numbers are the API's, and a rollback through the UI changes what
/// the node runs. Screenshots go to `target/console-screenshots/` (docs/console.md links them).
#[tokio::test]
async fn console_in_a_browser() {
    if !shared_redis() || !browser() {
        return;
    }
    let p = prefix();
    let url = format!("redis://127.0.0.1:6379?key={p}cfg");
    let s = store(&url);
    let up = echo_server().await;
    // The upstream of an API whose answers break its contract.
    let drifting = echo_server().await;
    let text = |body: &str| {
        with_admin(&config(&format!(
            "redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"{p}\", heartbeat_interval: 200ms }}\nconsumers:\n  - name: billing\n    groups: [internal]\n    api_keys: [\"{}\"]\nupstreams:\n  u: {{ targets: [\"{}\"] }}\n  d: {{ targets: [\"{}\"] }}\nroutes:\n  - name: proxied\n    match: {{ path: {{ prefix: /p }} }}\n    upstream: u\n    policies:\n      - {{ type: cache }}\n      - {{ type: rate_limit, key: client_ip, limits: [{{ requests: 5, per: 1m }}] }}\n  - name: answer\n    respond: {{ status: 200, body: {body} }}\napis:\n  - {{ openapi: \"{}\", upstream: d, name_prefix: drift_, check_responses: true }}\n",
            portico_auth::apikey::digest_string("key-one"),
            up.url(),
            drifting.url(),
            openapi_dir().join("drift.yaml").display()
        )))
    };
    push(&s, &text("one")).await;
    let (gw, _) = gateway_from_store(&url, None, Duration::from_secs(60))
        .await
        .unwrap();
    push(&s, &text("two")).await;
    until_answers(&gw, "two").await;
    for _ in 0..30 {
        get(&gw.url("/")).await;
    }
    // Through the upstream, each URL once (so each is a cache miss): five answered, then
    // three refused by the rate limit.
    for i in 0..8 {
        let want = if i < 5 { 200 } else { 429 };
        assert_eq!(get(&gw.url(&format!("/p?n={i}"))).await.status, want);
    }
    // An upstream answer that breaks its contract, for the Routes page to list.
    assert_eq!(get(&gw.url("/echo/bad-body")).await.status, 200);
    gw.gw.sample_live();
    let out =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.py");
    let admin = gw.admin_url("");
    // On the blocking pool: the gateway keeps answering on this test's runtime meanwhile.
    let dir = out.clone();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(&admin)
            .arg(&dir)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // The rollback made in the browser: version 1's text is what the node serves again.
    assert_eq!(get(&gw.url("/")).await.text(), "one");
    for page in ["overview", "routes", "upstreams", "config", "fleet"] {
        assert!(out.join(format!("{page}.png")).exists(), "{page}.png");
    }
    gw.gw.shutdown().await;
}

/// `PUT /config` with `text`; `if_match` as the header, when given.
async fn put_config(url: &str, text: &str, if_match: Option<&str>) -> Got {
    let mut r = crate::req("PUT", url).header("content-type", "application/yaml");
    if let Some(h) = if_match {
        r = r.header("if-match", format!("\"{h}\""));
    }
    send(
        &client(false, &[]),
        r.body(http_body_util::Full::new(bytes::Bytes::from(
            text.to_owned(),
        )))
        .unwrap(),
    )
    .await
}

/// A config write goes where the node's config comes from, loaded first exactly as a reload
/// loads it: the store (every node follows), the file (only with `--admin-writes-file`,
/// written whole, then applied), or nowhere (refused, nothing changed).
#[tokio::test]
async fn config_writes_through_the_admin_api_go_where_the_config_comes_from() {
    // From a file, by default: refused, and neither the file nor what runs changes.
    let dir = temp_dir("admin-write-file");
    let gw = gateway_from_file(&dir, &answering("one")).await;
    let path = gw.path.clone().unwrap();
    let r = put_config(&gw.admin_url("/config"), &answering("two"), None).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("--admin-writes-file")
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), answering("one"));
    assert_eq!(get(&gw.url("/")).await.text(), "one");

    // With writes allowed: the file is replaced and applied; the next start reads the same.
    gw.gw.allow_admin_file_writes();
    let hash = get(&gw.admin_url("/config")).await.json()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let r = put_config(
        &gw.admin_url("/api/v1/config?note=from%20the%20test"),
        &answering("two"),
        Some(&hash),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "written");
    assert_eq!(r.json()["applied_here"], true);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), answering("two"));
    assert_eq!(get(&gw.url("/")).await.text(), "two");
    // Based on a config that no longer runs: 412, nothing written.
    let r = put_config(&gw.admin_url("/config"), &answering("three"), Some(&hash)).await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), answering("two"));
    // A config that does not load: 422 naming the place, and nothing written or applied.
    let broken = with_admin(&config("routes:\n  - upstream: nowhere\n"));
    let r = put_config(&gw.admin_url("/config"), &broken, None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    let line = 1 + broken.lines().position(|l| l.contains("nowhere")).unwrap();
    assert!(
        detail.contains(&format!(
            "portico.yaml:{line}:15: error: unknown upstream `nowhere`"
        )),
        "{detail}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), answering("two"));
    assert_eq!(get(&gw.url("/")).await.text(), "two");
    // Not UTF-8: 400.
    let r = send(
        &client(false, &[]),
        crate::req("PUT", &gw.admin_url("/config"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
                0xff, 0xfe,
            ])))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    // A rollback writes the earlier text back to the file.
    let r = post_json(&gw.admin_url("/config/rollback"), "{\"generation\": 1}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "written");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), answering("one"));
    assert_eq!(get(&gw.url("/")).await.text(), "one");
    let versions = get(&gw.admin_url("/config/versions")).await.json();
    assert_eq!(
        versions["versions"][1]["applied_by"], "admin_write",
        "{versions}"
    );
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    gw.gw.shutdown().await;

    // From a store: pushed as the next version, applied here, followed by the fleet.
    if !shared_redis() {
        return;
    }
    let url = format!("redis://127.0.0.1:6379?key={}cfg", prefix());
    let s = store(&url);
    push(&s, &answering("one")).await;
    let (gw, _) = gateway_from_store(&url, None, Duration::from_secs(60))
        .await
        .unwrap();
    let r = put_config(&gw.admin_url("/config"), &answering("two"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "pushed");
    assert_eq!(r.json()["store_version"], 2);
    assert_eq!(get(&gw.url("/")).await.text(), "two");
    let stored = s.get(Some(2)).await.unwrap().unwrap();
    assert!(stored.author.starts_with("node "), "{}", stored.author);
    // Refused before the store sees it.
    let r = put_config(&gw.admin_url("/config"), &broken, None).await;
    assert_eq!(r.status, 422);
    assert_eq!(s.version().await.unwrap(), 2, "nothing was pushed");
    gw.gw.shutdown().await;
}
