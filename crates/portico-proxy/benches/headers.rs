//! The per-request header work: hop-by-hop removal, forwarding headers, request id, host and
//! path normalisation, on a typical browser-sized request head.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use portico_proxy::base::headers;

fn typical() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("connection", "keep-alive"),
        ("cookie", "session=4f2b8c1d9e; theme=dark"),
        (
            "authorization",
            "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2ln",
        ),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let base = typical();
    let peer_value = HeaderValue::from_static("10.1.2.3");
    let host = HeaderValue::from_static("api.example.com");
    let rid = HeaderName::from_static("x-request-id");
    let uri: Uri = "/v1/users/42/orders?page=2".parse().unwrap();
    c.bench_function("request_headers", |b| {
        b.iter_batched(
            || base.clone(),
            |mut h| {
                headers::remove_hop_by_hop(&mut h, false);
                headers::add_forwarding(
                    &mut h,
                    &headers::Forwarding {
                        peer: "10.1.2.3".parse().unwrap(),
                        peer_value: &peer_value,
                        peer_trusted: false,
                        tls: false,
                        host: Some(&host),
                        x_forwarded: true,
                        forwarded: false,
                    },
                );
                let id = headers::request_id(&h, &rid);
                h.insert(rid.clone(), id);
                black_box(h)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("request_host_and_path", |b| {
        b.iter(|| {
            let mut buf = String::new();
            let host =
                headers::request_host(black_box(&uri), base.get(http::header::HOST), &mut buf)
                    .map(str::len);
            let canonical = portico_config::canon::canonicalize(
                black_box(uri.path()),
                &portico_config::canon::PathOptions::default(),
            )
            .map(|p| p.len());
            black_box((host, canonical))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
