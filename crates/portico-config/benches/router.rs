//! Route matching and config compilation with 10, 1,000 and 10,000 routes: a mix of exact
//! hosts, wildcard hosts and host-less routes; exact paths, prefixes and templates; some with
//! method and header conditions.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portico_config::router::RequestView;

fn config_text(n: usize) -> String {
    let mut t =
        String::from("upstreams:\n  u: { targets: [\"http://127.0.0.1:9000\"] }\nroutes:\n");
    for i in 0..n {
        let host = match i % 4 {
            0 => format!("hosts: [svc{}.example.com], ", i % 97),
            1 => format!("hosts: [\"*.zone{}.example.org\"], ", i % 13),
            _ => String::new(),
        };
        let path = match i % 3 {
            0 => format!("{{ exact: /api/v1/items{i} }}"),
            1 => format!("{{ prefix: /svc{i}/static }}"),
            _ => format!("{{ template: \"/users{i}/{{id}}/orders/{{order}}\" }}"),
        };
        let extra = if i % 5 == 0 {
            ", methods: [GET, POST], headers: [{ name: x-tenant, present: true }]"
        } else {
            ""
        };
        t.push_str(&format!(
            "  - {{ name: r{i}, match: {{ {host}path: {path}{extra} }}, upstream: u }}\n"
        ));
    }
    t
}

fn bench(c: &mut Criterion) {
    let env = |_: &str| None;
    let mut g = c.benchmark_group("route_match");
    for n in [10usize, 1_000, 10_000] {
        let cfg =
            portico_config::load_str("bench.yaml", &config_text(n), Path::new("."), &env).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        headers.insert("user-agent", "bench/1.0".parse().unwrap());
        headers.insert("accept", "application/json".parse().unwrap());
        // A template route without host, near the end of the table.
        let t = n - 1 - (n - 1 + 1) % 3;
        let template_path = format!("/users{t}/42/orders/7");
        let prefix_path = format!("/svc{}/static/js/app.js", 1 + 3 * ((n / 2) / 3));
        let cases = [
            ("template", Some("api.example.net"), template_path.as_str()),
            ("prefix", None, prefix_path.as_str()),
            ("miss", Some("svc5.example.com"), "/nothing/here"),
        ];
        for (name, host, path) in cases {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let view = RequestView {
                        host,
                        path: black_box(path),
                        method: &Method::GET,
                        headers: &headers,
                        query: None,
                    };
                    black_box(cfg.router.find(&view).map(|m| m.route.index))
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("config_compile");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let text = config_text(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                portico_config::load_str("bench.yaml", black_box(text), Path::new("."), &env)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
