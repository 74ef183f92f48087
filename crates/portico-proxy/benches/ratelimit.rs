//! The local rate-limit decision (`Limiters::check`): one hot key, and 10,000 keys taken in
//! turn, for a token bucket and a sliding window, with the `RateLimit` headers built.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portico_config::Policy;
use portico_proxy::policy::ratelimit::Limiters;

/// A policy with one limit that never refuses in the benchmark's time.
fn limiters(sliding: bool) -> std::sync::Arc<Limiters> {
    let text = format!(
        "policies:\n  - type: rate_limit\n    key: client_ip\n    limits: [{{ requests: 1000000000, per: 1s{} }}]\n",
        if sliding {
            ", algorithm: sliding_window"
        } else {
            ""
        }
    );
    let cfg = portico_config::load_str("bench.yaml", &text, Path::new("."), &|_: &str| None)
        .expect("valid policy");
    let Some(Policy::RateLimit(p)) = cfg.global_policies.first() else {
        panic!("a rate_limit policy");
    };
    Limiters::new(p, None)
}

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let mut g = c.benchmark_group("rate_limit_check");
    for (name, sliding) in [("token_bucket", false), ("sliding_window", true)] {
        let l = limiters(sliding);
        g.bench_function(BenchmarkId::new(name, "one_key"), |b| {
            b.iter(|| black_box(l.check(black_box("10.0.0.1"), true).is_ok()))
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new(name, "10000_keys"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(l.check(black_box(&keys[i]), true).is_ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
