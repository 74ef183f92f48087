//! The `cache` policy against a real origin whose answers say how they may be cached.

use portico_testkit::*;

use crate::{config, empty, req};

async fn origin() -> Upstream {
    serve(|req| async move {
        let path = req.uri().path().to_owned();
        let n = req
            .headers()
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("any")
            .to_owned();
        let mut r = http::Response::new(full(format!("{path} {n}")));
        let h = r.headers_mut();
        h.insert("content-type", "text/plain".parse().unwrap());
        h.insert("etag", "\"e1\"".parse().unwrap());
        match path.as_str() {
            "/fresh" => h.insert("cache-control", "public, max-age=60".parse().unwrap()),
            "/short" => h.insert("cache-control", "max-age=1".parse().unwrap()),
            "/nostore" => h.insert("cache-control", "no-store".parse().unwrap()),
            "/private" => h.insert("cache-control", "private, max-age=60".parse().unwrap()),
            "/vary" => {
                h.insert("vary", "accept-language".parse().unwrap());
                h.insert("cache-control", "max-age=60".parse().unwrap())
            }
            _ => None,
        };
        r
    })
    .await
}

async fn fetch(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Got {
    let c = client(false, &[]);
    let mut r = req("GET", &gw.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    send(&c, r.body(empty()).unwrap()).await
}

#[tokio::test]
async fn fresh_answers_come_from_the_cache_and_the_rules_are_kept() {
    let up = origin().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  cached: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: cached\n    policies:\n      - {{ type: cache, max_entries: 100 }}\n",
        up.url()
    )))
    .await;
    // max-age: the second request never reaches the origin.
    let a = fetch(&gw, "/fresh", &[]).await;
    assert_eq!(a.header("portico-cache"), Some("miss"));
    let b = fetch(&gw, "/fresh", &[]).await;
    assert_eq!(b.header("portico-cache"), Some("hit"));
    assert_eq!(b.text(), a.text());
    assert!(b.header("age").is_some());
    assert_eq!(up.hits(), 1);
    // A matching If-None-Match gets 304 from the cache.
    let c = fetch(&gw, "/fresh", &[("if-none-match", "\"e1\"")]).await;
    assert_eq!(c.status, 304);
    assert!(c.body.is_empty());
    assert_eq!(up.hits(), 1);
    // no-store, private and no freshness at all: always the origin.
    for p in ["/nostore", "/private", "/plain"] {
        fetch(&gw, p, &[]).await;
        let again = fetch(&gw, p, &[]).await;
        assert_eq!(again.header("portico-cache"), Some("miss"), "{p}");
    }
    assert_eq!(up.hits(), 7);
    // Vary: another language is another answer.
    let en = fetch(&gw, "/vary", &[("accept-language", "en")]).await;
    let fr = fetch(&gw, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!(
        (en.text(), fr.text()),
        ("/vary en".to_string(), "/vary fr".to_string())
    );
    assert_eq!(fr.header("portico-cache"), Some("miss"));
    let fr2 = fetch(&gw, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!(
        (fr2.header("portico-cache"), fr2.text()),
        (Some("hit"), "/vary fr".to_string())
    );
    // Expiry.
    fetch(&gw, "/short", &[]).await;
    // Past the answer's `max-age` on the gateway's clock, without waiting for it.
    gw.gw
        .runtime()
        .clock
        .advance(std::time::Duration::from_millis(2100));
    assert_eq!(
        fetch(&gw, "/short", &[]).await.header("portico-cache"),
        Some("miss")
    );
    // Purge through the admin port.
    let hits = up.hits();
    let c = client(false, &[]);
    let purged = send(
        &c,
        req("DELETE", &gw.admin_url("/cache?prefix=/fresh"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(purged.status, 200);
    assert_eq!(
        fetch(&gw, "/fresh", &[]).await.header("portico-cache"),
        Some("miss")
    );
    assert_eq!(up.hits(), hits + 1);
    assert_eq!(
        fetch(&gw, "/vary", &[("accept-language", "fr")])
            .await
            .header("portico-cache"),
        Some("hit")
    );
}

/// An origin that answers conditional requests: `ETag` on `/etag`, `Last-Modified` on `/lm`,
/// both valid for one second; counts the 304s it sent.
async fn validating_origin() -> (Upstream, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let not_modified = std::sync::Arc::new(AtomicUsize::new(0));
    let nm = not_modified.clone();
    let up = serve(move |req| {
        let nm = nm.clone();
        async move {
            let path = req.uri().path().to_owned();
            let h = req.headers();
            let confirmed = match path.as_str() {
                "/etag" => h.get("if-none-match").is_some_and(|v| v == "\"v7\""),
                _ => h
                    .get("if-modified-since")
                    .is_some_and(|v| v == "Tue, 03 Nov 2026 10:00:00 GMT"),
            };
            let mut r = if confirmed {
                nm.fetch_add(1, Ordering::SeqCst);
                let mut r = http::Response::new(full(""));
                *r.status_mut() = http::StatusCode::NOT_MODIFIED;
                r
            } else {
                http::Response::new(full(format!("body of {path}")))
            };
            let rh = r.headers_mut();
            rh.insert("cache-control", "max-age=1".parse().unwrap());
            rh.insert(
                "x-origin-said",
                if confirmed { "304" } else { "200" }.parse().unwrap(),
            );
            if path == "/etag" {
                rh.insert("etag", "\"v7\"".parse().unwrap());
            } else {
                rh.insert(
                    "last-modified",
                    "Tue, 03 Nov 2026 10:00:00 GMT".parse().unwrap(),
                );
            }
            if !confirmed {
                rh.insert("content-type", "text/plain".parse().unwrap());
            }
            r
        }
    })
    .await;
    (up, not_modified)
}

#[tokio::test]
async fn stale_answers_are_revalidated_with_the_origin() {
    let (up, not_modified) = validating_origin().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  cached: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: cached\n    policies:\n      - {{ type: cache }}\n",
        up.url()
    )))
    .await;
    for path in ["/etag", "/lm"] {
        let first = fetch(&gw, path, &[]).await;
        assert_eq!(first.header("portico-cache"), Some("miss"), "{path}");
        assert_eq!(
            fetch(&gw, path, &[]).await.header("portico-cache"),
            Some("hit")
        );
        // Past the answer's `max-age` on the gateway's clock, without waiting for it.
        gw.gw
            .runtime()
            .clock
            .advance(std::time::Duration::from_millis(2100));
        // Stale: the origin is asked whether it changed, says 304, and the client gets the
        // whole stored answer with the origin's refreshed headers.
        let before = not_modified.load(std::sync::atomic::Ordering::SeqCst);
        let again = fetch(&gw, path, &[]).await;
        assert_eq!(again.status, 200, "{path}");
        assert_eq!(again.header("portico-cache"), Some("revalidated"), "{path}");
        assert_eq!(again.text(), format!("body of {path}"));
        assert_eq!(again.header("x-origin-said"), Some("304"));
        assert_eq!(again.header("content-type"), Some("text/plain"));
        assert_eq!(
            not_modified.load(std::sync::atomic::Ordering::SeqCst),
            before + 1
        );
        // Refreshed: fresh again for the next second.
        let hits = up.hits();
        assert_eq!(
            fetch(&gw, path, &[]).await.header("portico-cache"),
            Some("hit")
        );
        assert_eq!(up.hits(), hits);
    }
    // A client's own validator is passed through untouched (the origin's 304 is the client's).
    // Past the answer's `max-age` on the gateway's clock, without waiting for it.
    gw.gw
        .runtime()
        .clock
        .advance(std::time::Duration::from_millis(2100));
    let mine = fetch(&gw, "/etag", &[("if-none-match", "\"v7\"")]).await;
    assert_eq!(mine.status, 304);
    assert_eq!(mine.header("portico-cache"), Some("miss"));
}

#[tokio::test]
async fn each_vary_variant_is_kept_side_by_side() {
    let up = origin().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  cached: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: cached\n    policies:\n      - {{ type: cache }}\n",
        up.url()
    )))
    .await;
    let langs = ["en", "fr", "de", "it"];
    for l in langs {
        let got = fetch(&gw, "/vary", &[("accept-language", l)]).await;
        assert_eq!(got.header("portico-cache"), Some("miss"), "{l}");
    }
    assert_eq!(up.hits(), 4);
    // Every language is now served from the cache, each with its own body.
    for l in langs.iter().rev() {
        let got = fetch(&gw, "/vary", &[("accept-language", l)]).await;
        assert_eq!(
            (got.header("portico-cache"), got.text()),
            (Some("hit"), format!("/vary {l}")),
        );
    }
    assert_eq!(up.hits(), 4);
    // Past the per-URL bound the oldest variant goes.
    for i in 0..portico_proxy::policy::cache::MAX_VARIANTS {
        fetch(&gw, "/vary", &[("accept-language", &format!("x{i}"))]).await;
    }
    let en = fetch(&gw, "/vary", &[("accept-language", "en")]).await;
    assert_eq!(en.header("portico-cache"), Some("miss"));
}

#[tokio::test]
async fn the_cache_key_keeps_chosen_query_parameters_and_headers() {
    let up = origin().await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  cached: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: cached\n    policies:\n      - type: cache\n        key: {{ query: [page, size], headers: [x-tenant] }}\n",
        up.url()
    )))
    .await;
    let status = |g: Got| g.header("portico-cache").map(str::to_owned);
    let t = [("x-tenant", "a")];
    assert_eq!(
        status(fetch(&gw, "/fresh?page=1&size=5&utm=x", &t).await).as_deref(),
        Some("miss")
    );
    // Other parameters and the order of the kept ones do not matter…
    assert_eq!(
        status(fetch(&gw, "/fresh?size=5&utm=y&page=1", &t).await).as_deref(),
        Some("hit")
    );
    // …the kept ones' values and the named header's do.
    assert_eq!(
        status(fetch(&gw, "/fresh?page=2&size=5", &t).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        status(fetch(&gw, "/fresh?page=1&size=5", &[("x-tenant", "b")]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(
        status(fetch(&gw, "/fresh?page=1&size=5", &[]).await).as_deref(),
        Some("miss")
    );
    assert_eq!(up.hits(), 4);
    // A purge by path prefix still finds keys with headers in them.
    let c = client(false, &[]);
    let purged = send(
        &c,
        req("DELETE", &gw.admin_url("/cache?prefix=/fresh"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(purged.status, 200);
    assert_eq!(
        status(fetch(&gw, "/fresh?page=1&size=5", &t).await).as_deref(),
        Some("miss")
    );
}

/// The origin answers a revalidation of `Last-Modified` with a 304 that carries no validator,
/// which confirms nothing (RFC 9111 §4.3.4): the client, who asked unconditionally, must get
/// the whole answer, fetched again.
#[tokio::test]
async fn a_304_that_confirms_nothing_is_not_passed_to_the_client() {
    let up = serve(|req| async move {
        let conditional = req.headers().contains_key("if-modified-since");
        let mut r = if conditional {
            let mut r = http::Response::new(full(""));
            *r.status_mut() = http::StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = http::Response::new(full("fresh copy"));
            r.headers_mut().insert(
                "last-modified",
                "Tue, 03 Nov 2026 10:00:00 GMT".parse().unwrap(),
            );
            r
        };
        r.headers_mut()
            .insert("cache-control", "max-age=1".parse().unwrap());
        r
    })
    .await;
    let gw = gateway(&config(&format!(
        "upstreams:\n  cached: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: cached\n    policies:\n      - {{ type: cache }}\n",
        up.url()
    )))
    .await;
    assert_eq!(
        fetch(&gw, "/x", &[]).await.header("portico-cache"),
        Some("miss")
    );
    // Past the answer's `max-age` on the gateway's clock, without waiting for it.
    gw.gw
        .runtime()
        .clock
        .advance(std::time::Duration::from_millis(2100));
    let got = fetch(&gw, "/x", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "fresh copy");
    assert_eq!(
        up.hits(),
        3,
        "first fetch, the revalidation, the plain fetch again"
    );
}
