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
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
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
