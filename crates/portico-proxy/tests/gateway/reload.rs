use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use portico_testkit::*;

fn cfg(upstream: &str, body: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\nadmin: {{ address: \"127.0.0.1:0\" }}\nupstreams:\n  u: {{ targets: [\"{upstream}\"] }}\nroutes:\n  - name: static\n    match: {{ path: {{ exact: /v }} }}\n    respond: {{ body: \"{body}\" }}\n  - name: proxied\n    upstream: u\n"
    )
}

#[tokio::test]
async fn reload_applies_a_good_file_and_rejects_a_broken_one() {
    let up = echo_server().await;
    let dir = temp_dir("reload");
    let gw = gateway_from_file(&dir, &cfg(&up.url(), "one")).await;
    assert_eq!(get(&gw.url("/v")).await.text(), "one");

    std::fs::write(gw.path.as_ref().unwrap(), cfg(&up.url(), "two")).unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&gw.url("/v")).await.text(), "two");
    assert_eq!(get(&gw.admin_url("/config")).await.json()["generation"], 2);

    // A broken file: rejected whole, the running config keeps serving, the error is visible.
    std::fs::write(
        gw.path.as_ref().unwrap(),
        cfg(&up.url(), "three").replace("upstream: u", "upstream: missing"),
    )
    .unwrap();
    let err = gw.gw.reload_file().await.unwrap_err();
    assert!(
        matches!(err, portico_proxy::GatewayError::Config(_)),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("unknown upstream `missing`"), "{err}");
    assert!(err.contains("portico.yaml:"), "errors name the file: {err}");
    assert_eq!(get(&gw.url("/v")).await.text(), "two");
    let shown = get(&gw.admin_url("/config")).await.json();
    assert_eq!(shown["generation"], 2);
    assert!(
        shown["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    // Through the admin endpoint too.
    let got = send(
        &client(false, &[]),
        http::Request::post(gw.admin_url("/reload"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 422);
    let m = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        m.contains("portico_config_reloads_total{result=\"failure\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn unchanged_upstreams_keep_their_pools() {
    let a = echo_server().await;
    let b = echo_server().await;
    let text = |body: &str, second: &str| {
        format!(
            "listeners: [{{ address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\nupstreams:\n  a: {{ targets: [\"{}\"] }}\n  b: {{ targets: [\"{second}\"] }}\nroutes:\n  - {{ match: {{ path: {{ exact: /v }} }}, respond: {{ body: {body} }} }}\n  - upstream: a\n",
            a.url()
        )
    };
    let dir = temp_dir("pools");
    let gw = gateway_from_file(&dir, &text("x", &b.url())).await;
    let before = gw.gw.runtime();
    std::fs::write(
        gw.path.as_ref().unwrap(),
        text("y", &format!("http://{}", a.addr)),
    )
    .unwrap();
    gw.gw.reload_file().await.unwrap();
    let after = gw.gw.runtime();
    assert!(
        Arc::ptr_eq(&before.pools[0], &after.pools[0]),
        "upstream a did not change: same pool"
    );
    assert!(
        !Arc::ptr_eq(&before.pools[1], &after.pools[1]),
        "upstream b changed: new pool"
    );
}

#[tokio::test]
async fn listeners_are_added_and_removed_on_reload() {
    let up = echo_server().await;
    let dir = temp_dir("listeners");
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    drop(std::net::TcpListener::bind(free)); // make sure it's free
    let base = cfg(&up.url(), "one");
    let gw = gateway_from_file(&dir, &base).await;
    let two = base.replace(
        "listeners:\n",
        &format!("listeners:\n  - name: extra\n    address: \"{free}\"\n"),
    );
    std::fs::write(gw.path.as_ref().unwrap(), &two).unwrap();
    gw.gw.reload_file().await.unwrap();
    assert_eq!(get(&format!("http://{free}/v")).await.text(), "one");
    std::fs::write(gw.path.as_ref().unwrap(), &base).unwrap();
    gw.gw.reload_file().await.unwrap();
    eventually("the removed listener stops accepting", async || {
        tokio::net::TcpStream::connect(free).await.is_err()
    })
    .await;
    assert_eq!(get(&gw.url("/v")).await.text(), "one");
}

#[tokio::test]
async fn a_reload_that_cannot_bind_changes_nothing() {
    let up = echo_server().await;
    let dir = temp_dir("bindfail");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = cfg(&up.url(), "one");
    let gw = gateway_from_file(&dir, &base).await;
    let bad = base
        .replace(
            "listeners:\n",
            &format!(
                "listeners:\n  - name: taken\n    address: \"{}\"\n",
                taken.local_addr().unwrap()
            ),
        )
        .replace("\"one\"", "\"two\"");
    std::fs::write(gw.path.as_ref().unwrap(), &bad).unwrap();
    let err = gw.gw.reload_file().await.unwrap_err();
    assert!(
        matches!(
            err,
            portico_proxy::GatewayError::Listen(portico_proxy::ListenError::Bind { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot listen"), "{err}");
    assert_eq!(get(&gw.url("/v")).await.text(), "one");
}

#[tokio::test]
async fn no_request_fails_across_20_reloads_under_load() {
    let up = echo_server().await;
    let dir = temp_dir("load");
    let gw = gateway_from_file(&dir, &cfg(&up.url(), "v0")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let url = gw.url(if w % 2 == 0 { "/v" } else { "/proxied" });
        let h2 = w % 4 == 3;
        workers.push(tokio::spawn(async move {
            let c = client(h2, &[]);
            while !stop.load(Ordering::Relaxed) {
                match c
                    .request(
                        http::Request::get(&url)
                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                            .unwrap(),
                    )
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        use http_body_util::BodyExt;
                        if r.into_body().collect().await.is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for i in 1..=20 {
        std::fs::write(gw.path.as_ref().unwrap(), cfg(&up.url(), &format!("v{i}"))).unwrap();
        gw.gw.reload_file().await.unwrap();
        // Requests answered under each generation before the next reload.
        let served = ok.load(Ordering::Relaxed);
        eventually("requests are answered between reloads", async || {
            ok.load(Ordering::Relaxed) >= served + 8
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert_eq!(get(&gw.url("/v")).await.text(), "v20");
    assert_eq!(gw.gw.runtime().generation, 21);
}

#[tokio::test]
async fn memory_does_not_grow_across_1000_reloads() {
    let up = echo_server().await;
    let dir = temp_dir("mem");
    let gw = gateway_from_file(&dir, &cfg(&up.url(), "a")).await;
    let path = gw.path.clone().unwrap();
    let round = |n: usize| {
        let gw = gw.gw.clone();
        let path = path.clone();
        let up = up.url();
        async move {
            for i in 0..n {
                std::fs::write(&path, cfg(&up, &format!("body{}", i % 7))).unwrap();
                gw.reload_file().await.unwrap();
            }
        }
    };
    round(200).await; // warm up allocator pools
    let before = rss_kib();
    round(1000).await;
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB over 1000 reloads");
    assert_eq!(get(&gw.url("/v")).await.status, 200);
}

#[tokio::test]
async fn file_changes_are_picked_up_by_the_watcher() {
    let up = echo_server().await;
    let dir = temp_dir("watch");
    let gw = gateway_from_file(&dir, &cfg(&up.url(), "before")).await;
    gw.gw.watch_file().unwrap();
    // Write to a temporary file and rename over the config, as editors and Kubernetes do.
    let tmp = dir.join(".portico.yaml.tmp");
    std::fs::write(&tmp, cfg(&up.url(), "after")).unwrap();
    std::fs::rename(&tmp, gw.path.as_ref().unwrap()).unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = get(&gw.url("/v")).await.text();
        if seen == "after" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "after");
}

/// A config whose only protection sits at its end, as `version` (shown at `/v`).
fn guarded(upstream: &str, version: &str) -> String {
    let key = portico_auth::apikey::digest_string("reload-key");
    format!(
        "listeners:\n  - name: main\n    address: \"127.0.0.1:0\"\nadmin: {{ address: \"127.0.0.1:0\" }}\nconsumers:\n  - name: ops\n    api_keys: [\"{key}\"]\nupstreams:\n  u: {{ targets: [\"{upstream}\"] }}\nroutes:\n  - name: static\n    match: {{ path: {{ exact: /v }} }}\n    respond: {{ body: \"{version}\" }}\n  - name: admin\n    match: {{ path: {{ prefix: /admin }} }}\n    upstream: u\n    policies:\n      - type: api_key\n"
    )
}

/// A slow writer rewrites the config in place, in two parts 0.5 s apart (once within one
/// open, once as two opens), while a client keeps asking for the protected route without a
/// key. The first part alone is a valid config without the `api_key` policy: applying it would
/// let requests through. None may pass, and the last complete file must be applied.
#[tokio::test]
async fn a_file_written_in_place_is_never_applied_half_way() {
    use std::io::Write;
    let up = echo_server().await;
    let dir = temp_dir("slow-writer");
    let gw = gateway_from_file(&dir, &guarded(&up.url(), "v0")).await;
    gw.gw.watch_file().unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let passed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let load = {
        let (done, passed, refused) = (done.clone(), passed.clone(), refused.clone());
        let url = gw.url("/admin/x");
        tokio::spawn(async move {
            let c = client(false, &[]);
            while !done.load(Ordering::SeqCst) {
                let got = send(
                    &c,
                    http::Request::get(&url)
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
                .await;
                match got.status.as_u16() {
                    401 => refused.fetch_add(1, Ordering::SeqCst),
                    _ => passed.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let path = gw.path.clone().unwrap();
    let url = up.url();
    tokio::task::spawn_blocking(move || {
        for (i, version) in ["v1", "v2", "v3"].iter().enumerate() {
            let text = guarded(&url, version);
            let cut = text.find("    policies:").unwrap();
            if i % 2 == 0 {
                // One open, two writes.
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(&text.as_bytes()[..cut]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(500));
                f.write_all(&text.as_bytes()[cut..]).unwrap();
            } else {
                // Two opens: truncate and write, close; append the rest.
                std::fs::write(&path, &text.as_bytes()[..cut]).unwrap();
                std::thread::sleep(Duration::from_millis(500));
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(&text.as_bytes()[cut..]).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1500));
        }
    })
    .await
    .unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = get(&gw.url("/v")).await.text();
        if seen == "v3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(seen, "v3", "the last complete file is applied");
    assert!(refused.load(Ordering::SeqCst) > 50);
    assert_eq!(
        passed.load(Ordering::SeqCst),
        0,
        "requests passed a half-written config"
    );
}

/// Kubernetes mounts a ConfigMap as a symlink to a symlinked folder that is swapped whole.
#[tokio::test]
async fn a_swapped_symlink_is_followed() {
    let up = echo_server().await;
    let dir = temp_dir("symlink-swap");
    let v1 = dir.join("..v1");
    let v2 = dir.join("..v2");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v1.join("portico.yaml"), cfg(&up.url(), "first")).unwrap();
    std::fs::write(v2.join("portico.yaml"), cfg(&up.url(), "second")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    let path = dir.join("portico.yaml");
    std::os::unix::fs::symlink("..data/portico.yaml", &path).unwrap();
    let cfg = portico_config::load_file(&path).unwrap();
    let gw = Gateway::start(cfg, Some(path.clone())).await.unwrap();
    let addr = gw.listener_addrs().await[0].1;
    gw.watch_file().unwrap();
    assert_eq!(get(&format!("http://{addr}/v")).await.text(), "first");
    // The swap: a new link beside the old one, renamed over it.
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = get(&format!("http://{addr}/v")).await.text();
        if seen == "second" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "second");
}

#[tokio::test]
async fn a_reload_to_an_empty_file_is_refused() {
    let up = echo_server().await;
    let dir = temp_dir("empty-reload");
    let gw = gateway_from_file(&dir, &cfg(&up.url(), "kept")).await;
    std::fs::write(gw.path.as_ref().unwrap(), "").unwrap();
    let err = gw.gw.reload_file().await.unwrap_err();
    assert!(
        matches!(err, portico_proxy::GatewayError::NoListeners { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("has no listeners"), "{err}");
    assert_eq!(get(&gw.url("/v")).await.text(), "kept");
}
