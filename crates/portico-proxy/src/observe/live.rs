//! The last 15 minutes of traffic, kept in the process for the admin API's `GET /stats` (and
//! the console built on it), so a live view needs no Prometheus.
//!
//! A request adds to its route's counters for the second in progress: two relaxed atomic
//! additions (its count and status class in one word, its latency bucket in another); a call
//! to an upstream adds the same to the counters of the target that answered it. Once a
//! second a sampler task drains every route's and target's counters into rings: per second
//! for the whole gateway (counts and latency buckets) and for each route and target (counts),
//! per minute for each route's and target's latency buckets. Latency percentiles are read from the buckets, so they are the
//! upper bound of a bucket (1-2-5 steps from 0.1 ms to 60 s), not exact values: `/metrics`
//! has the exact histograms.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How many seconds are kept.
pub const SECONDS: usize = 900;
/// How many minutes of per-route latency are kept.
const MINUTES: usize = SECONDS / 60;

/// Latency bucket upper bounds, in microseconds; a last bucket holds everything slower.
pub const BOUNDS_US: [u64; 18] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// Where a request's status class goes in the counts word: requests in the low 24 bits, 4xx
/// in the next 20, 5xx in the top 20 (16 million requests and a million of each error class
/// per route and second before they spill).
const CLIENT_ERROR: u64 = 1 << 24;
const SERVER_ERROR: u64 = 1 << 44;

/// One route's counts for the second in progress.
#[derive(Debug)]
pub struct LiveCounters {
    counts: AtomicU64,
    latency: [AtomicU32; BUCKETS],
}

impl Default for LiveCounters {
    fn default() -> Self {
        LiveCounters {
            counts: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl LiveCounters {
    /// Counts one finished request.
    #[inline]
    pub fn record(&self, status: u16, d: Duration) {
        let class = match status {
            400..=499 => CLIENT_ERROR,
            500..=599 => SERVER_ERROR,
            _ => 0,
        };
        self.counts.fetch_add(1 | class, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let b = BOUNDS_US.partition_point(|&bound| bound < us);
        self.latency[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts so far, leaving zeros.
    fn drain(&self) -> Second {
        let c = self.counts.swap(0, Ordering::Relaxed);
        Second {
            requests: (c & (CLIENT_ERROR - 1)) as u32,
            client_errors: ((c >> 24) & 0xF_FFFF) as u32,
            server_errors: (c >> 44) as u32,
            latency: std::array::from_fn(|i| self.latency[i].swap(0, Ordering::Relaxed)),
        }
    }
}

/// One second (or minute) of traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Second {
    requests: u32,
    client_errors: u32,
    server_errors: u32,
    latency: [u32; BUCKETS],
}

impl Second {
    fn add(&mut self, o: &Second) {
        self.requests += o.requests;
        self.client_errors += o.client_errors;
        self.server_errors += o.server_errors;
        for (a, b) in self.latency.iter_mut().zip(o.latency.iter()) {
            *a += b;
        }
    }

    /// The `q` quantile in milliseconds: the upper bound of the bucket it falls in (`None`
    /// without requests, or in the bucket above 60 s).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= want {
                return BOUNDS_US.get(i).map(|&us| us as f64 / 1000.0);
            }
        }
        None
    }
}

/// A route's history: counts per second, latency per minute.
#[derive(Debug, Default)]
struct RouteRing {
    seconds: VecDeque<(u64, [u32; 3])>,
    minutes: VecDeque<(u64, Second)>,
}

/// The rings, shared by every runtime of a gateway (reloads keep them; a route's ring goes
/// with the route).
#[derive(Debug, Default)]
pub struct LiveStats {
    inner: Mutex<Rings>,
}

#[derive(Debug, Default)]
struct Rings {
    /// `(unix second, traffic)`, oldest first.
    seconds: VecDeque<(u64, Second)>,
    routes: HashMap<Arc<str>, RouteRing>,
    /// Per upstream, per target (as written): the calls the target answered.
    upstreams: HashMap<(Arc<str>, Arc<str>), RouteRing>,
}

impl RouteRing {
    fn add(&mut self, now: u64, s: &Second) {
        let counts = [s.requests, s.client_errors, s.server_errors];
        match self.seconds.back_mut() {
            // Sampled twice in one second: one slot.
            Some((t, c)) if *t == now => {
                for (a, b) in c.iter_mut().zip(counts.iter()) {
                    *a += b;
                }
            }
            _ => push(&mut self.seconds, (now, counts), SECONDS),
        }
        let minute = now / 60 * 60;
        match self.minutes.back_mut() {
            Some((m, acc)) if *m == minute => acc.add(s),
            _ => push(&mut self.minutes, (minute, *s), MINUTES),
        }
    }

    /// Counts in the window after `since`, and latency over the minutes that overlap it.
    fn window(&self, since: u64) -> ([u64; 3], Second) {
        let mut counts = [0u64; 3];
        for (_, c) in self.seconds.iter().filter(|(s, _)| *s > since) {
            for (a, b) in counts.iter_mut().zip(c.iter()) {
                *a += u64::from(*b);
            }
        }
        let mut lat = Second::default();
        for (_, m) in self.minutes.iter().filter(|(m, _)| m + 60 > since) {
            lat.add(m);
        }
        (counts, lat)
    }
}

impl LiveStats {
    /// Drains `routes` (name and counters), `targets` (upstream, target and counters) and
    /// the unrouted requests' counters into the rings, as second `now` (Unix time).
    pub fn sample<'a>(
        &self,
        now: u64,
        routes: impl Iterator<Item = (&'a Arc<str>, &'a LiveCounters)>,
        targets: impl Iterator<Item = (&'a Arc<str>, &'a Arc<str>, &'a LiveCounters)>,
        unrouted: &LiveCounters,
    ) {
        let Ok(mut rings) = self.inner.lock() else {
            return;
        };
        let mut total = unrouted.drain();
        let mut present = Vec::new();
        for (name, counters) in routes {
            let s = counters.drain();
            total.add(&s);
            present.push(name.clone());
            rings.routes.entry(name.clone()).or_default().add(now, &s);
        }
        // Routes the config no longer has go with their history.
        rings.routes.retain(|name, _| present.contains(name));
        let mut present = Vec::new();
        for (upstream, target, counters) in targets {
            let s = counters.drain();
            let key = (upstream.clone(), target.clone());
            rings.upstreams.entry(key.clone()).or_default().add(now, &s);
            present.push(key);
        }
        rings.upstreams.retain(|key, _| present.contains(key));
        match rings.seconds.back_mut() {
            Some((t, acc)) if *t == now => acc.add(&total),
            _ => push(&mut rings.seconds, (now, total), SECONDS),
        }
    }

    /// The last `window` seconds (at most 900): per second for the gateway, totals per route.
    pub fn report(&self, window: u64, now: u64) -> serde_json::Value {
        let window = window.clamp(1, SECONDS as u64);
        let since = now.saturating_sub(window);
        let Ok(rings) = self.inner.lock() else {
            return serde_json::Value::Null;
        };
        let mut total = Second::default();
        let (mut t, mut req, mut c4, mut c5, mut p50, mut p95, mut p99) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for (s, v) in rings.seconds.iter().filter(|(s, _)| *s > since) {
            total.add(v);
            t.push(*s);
            req.push(v.requests);
            c4.push(v.client_errors);
            c5.push(v.server_errors);
            p50.push(v.quantile_ms(0.5));
            p95.push(v.quantile_ms(0.95));
            p99.push(v.quantile_ms(0.99));
        }
        let seconds = t.len().max(1) as f64;
        let routes: serde_json::Map<String, serde_json::Value> = rings
            .routes
            .iter()
            .map(|(name, r)| {
                let (counts, lat) = r.window(since);
                (name.to_string(), summary(counts, seconds, &lat))
            })
            .collect();
        // Per upstream: its targets' calls, and their sum.
        let mut upstreams: std::collections::BTreeMap<&str, UpstreamWindow> = Default::default();
        for ((upstream, target), r) in &rings.upstreams {
            let (counts, lat) = r.window(since);
            let u = upstreams.entry(upstream).or_default();
            for (a, b) in u.0.iter_mut().zip(counts.iter()) {
                *a += b;
            }
            u.1.add(&lat);
            u.2.insert(target.to_string(), summary(counts, seconds, &lat));
        }
        let upstreams: serde_json::Map<String, serde_json::Value> = upstreams
            .into_iter()
            .map(|(name, (counts, lat, targets))| {
                let mut v = summary(counts, seconds, &lat);
                v["targets"] = serde_json::Value::Object(targets);
                (name.to_string(), v)
            })
            .collect();
        serde_json::json!({
            "window_s": window,
            "now": now,
            "bucket_bounds_ms": BOUNDS_US.iter().map(|&us| us as f64 / 1000.0).collect::<Vec<_>>(),
            "total": summary(
                [u64::from(total.requests), u64::from(total.client_errors), u64::from(total.server_errors)],
                seconds,
                &total,
            ),
            "series": {
                "t": t,
                "requests": req,
                "client_errors": c4,
                "server_errors": c5,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
            },
            "routes": routes,
            "upstreams": upstreams,
        })
    }
}

/// An upstream's window while its targets are summed: counts, latency, and each target's
/// summary.
type UpstreamWindow = ([u64; 3], Second, serde_json::Map<String, serde_json::Value>);

fn push<T>(ring: &mut VecDeque<T>, v: T, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(v);
}

/// Totals, rates and percentiles of a window.
fn summary(counts: [u64; 3], seconds: f64, lat: &Second) -> serde_json::Value {
    let [requests, client_errors, server_errors] = counts;
    serde_json::json!({
        "requests": requests,
        "client_errors": client_errors,
        "server_errors": server_errors,
        "requests_per_second": requests as f64 / seconds,
        "error_rate": if requests == 0 { 0.0 } else { server_errors as f64 / requests as f64 },
        "p50_ms": lat.quantile_ms(0.5),
        "p95_ms": lat.quantile_ms(0.95),
        "p99_ms": lat.quantile_ms(0.99),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_and_latency_buckets_are_drained_once() {
        let c = LiveCounters::default();
        for _ in 0..7 {
            c.record(200, Duration::from_micros(150));
        }
        c.record(404, Duration::from_millis(3));
        c.record(503, Duration::from_secs(90));
        let s = c.drain();
        assert_eq!((s.requests, s.client_errors, s.server_errors), (9, 1, 1));
        assert_eq!(s.latency[1], 7, "150 µs is in the (100, 200] bucket");
        assert_eq!(s.latency[5], 1, "3 ms is in the (2, 5] bucket");
        assert_eq!(s.latency[BUCKETS - 1], 1, "90 s is above every bound");
        assert_eq!(s.quantile_ms(0.5), Some(0.2));
        assert_eq!(s.quantile_ms(0.85), Some(5.0));
        assert_eq!(s.quantile_ms(1.0), None, "the slowest is above 60 s");
        assert_eq!(c.drain(), Second::default());
    }

    #[test]
    fn a_window_sums_its_seconds_and_routes_leave_with_the_config() {
        let live = LiveStats::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let (ca, cb, none) = (
            LiveCounters::default(),
            LiveCounters::default(),
            LiveCounters::default(),
        );
        for now in 1_000..1_010 {
            ca.record(200, Duration::from_millis(1));
            cb.record(500, Duration::from_millis(30));
            live.sample(
                now,
                [(&a, &ca), (&b, &cb)].into_iter(),
                std::iter::empty(),
                &none,
            );
        }
        let r = live.report(5, 1_009);
        assert_eq!(r["total"]["requests"], 10);
        assert_eq!(r["total"]["server_errors"], 5);
        assert_eq!(r["series"]["t"].as_array().unwrap().len(), 5);
        assert_eq!(r["routes"]["a"]["requests"], 5);
        assert_eq!(r["routes"]["b"]["error_rate"], 1.0);
        assert_eq!(r["routes"]["b"]["p99_ms"], 50.0);
        assert_eq!(r["total"]["requests_per_second"], 2.0);
        // `b` is gone from the config: its history goes too.
        live.sample(1_010, [(&a, &ca)].into_iter(), std::iter::empty(), &none);
        assert!(live.report(900, 1_010)["routes"]["b"].is_null());
    }

    #[test]
    fn an_upstream_is_the_sum_of_its_targets_and_targets_leave_with_the_config() {
        let live = LiveStats::default();
        let (u, t1, t2): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("u"), Arc::from("http://a"), Arc::from("http://b"));
        let (c1, c2, none) = (
            LiveCounters::default(),
            LiveCounters::default(),
            LiveCounters::default(),
        );
        for now in 2_000..2_004 {
            c1.record(200, Duration::from_millis(1));
            c2.record(200, Duration::from_millis(1));
            c2.record(502, Duration::from_millis(40));
            live.sample(
                now,
                std::iter::empty(),
                [(&u, &t1, &c1), (&u, &t2, &c2)].into_iter(),
                &none,
            );
        }
        let r = live.report(60, 2_003);
        assert_eq!(r["upstreams"]["u"]["requests"], 12);
        assert_eq!(r["upstreams"]["u"]["server_errors"], 4);
        assert_eq!(r["upstreams"]["u"]["targets"]["http://a"]["requests"], 4);
        assert_eq!(
            r["upstreams"]["u"]["targets"]["http://b"]["error_rate"],
            0.5
        );
        assert_eq!(r["upstreams"]["u"]["p99_ms"], 50.0);
        live.sample(
            2_004,
            std::iter::empty(),
            [(&u, &t1, &c1)].into_iter(),
            &none,
        );
        assert!(live.report(60, 2_004)["upstreams"]["u"]["targets"]["http://b"].is_null());
    }
}
