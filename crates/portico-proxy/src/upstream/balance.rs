//! Choosing a target for each request: weighted round robin, weighted random, least request
//! (power of two choices over in-flight requests and a peak-EWMA of latency), and consistent
//! hashing. Everything here is decided at config load except the per-request pick, which takes
//! no lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use portico_config::{Balance, HashOn, Target};

/// What a pick may look at.
pub struct PickContext<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

pub enum Balancer {
    RoundRobin(Schedule),
    Random {
        cumulative: Box<[u64]>,
        total: u64,
    },
    LeastRequest,
    Hash {
        on: HashOn,
        ring: Box<[(u64, u32)]>,
        fallback: Schedule,
    },
}

/// A smooth weighted round-robin order computed once (weights 3 and 1 give A A B A, not
/// A A A B), walked with one atomic counter.
pub struct Schedule {
    order: Box<[u32]>,
    next: AtomicUsize,
}

impl Schedule {
    fn new(targets: &[Target]) -> Schedule {
        let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        // Keep the order short: scale huge weights down, keeping their proportions.
        let scale = |w: u32| {
            if total > 4096 {
                (u64::from(w) * 4096 / total).max(1) as i64
            } else {
                i64::from(w)
            }
        };
        let weights: Vec<i64> = targets.iter().map(|t| scale(t.weight)).collect();
        let sum: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(sum as usize);
        for _ in 0..sum {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            current[best] -= sum;
            order.push(best as u32);
        }
        Schedule {
            order: order.into(),
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> usize {
        if self.order.len() == 1 {
            return 0;
        }
        self.order[self.next.fetch_add(1, Ordering::Relaxed) % self.order.len()] as usize
    }
}

/// Latency and load of one target, for `least_request`.
#[derive(Default)]
pub struct TargetLoad {
    pub in_flight: AtomicUsize,
    /// Peak-EWMA of time to response head, in nanoseconds (f64 bits).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since `epoch()`.
    updated_ns: AtomicU64,
}

/// How fast old latency samples are forgotten.
const DECAY: Duration = Duration::from_secs(10);

/// Nanoseconds since the first call: a cheap monotonic clock for ejection deadlines.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn epoch() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl TargetLoad {
    /// Records a response's latency. A slower sample replaces the average at once (peak);
    /// faster ones pull it down gradually. Races between threads lose a sample at worst.
    pub fn observe(&self, latency: Duration) {
        let now = epoch().elapsed().as_nanos() as u64;
        let sample = latency.as_nanos() as f64;
        let prev = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let last = self.updated_ns.swap(now, Ordering::Relaxed);
        let next = if sample > prev || prev == 0.0 {
            sample
        } else {
            let w = (-((now.saturating_sub(last)) as f64) / DECAY.as_nanos() as f64).exp();
            prev * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    pub fn cost(&self, weight: u32) -> f64 {
        let ewma = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed)).max(1_000.0);
        ewma * (self.in_flight.load(Ordering::Relaxed) as f64 + 1.0) / f64::from(weight)
    }
}

impl Balancer {
    pub fn new(balance: &Balance, targets: &[Target]) -> Balancer {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin(Schedule::new(targets)),
            Balance::Random => {
                let mut total = 0u64;
                let cumulative = targets
                    .iter()
                    .map(|t| {
                        total += u64::from(t.weight);
                        total
                    })
                    .collect();
                Balancer::Random { cumulative, total }
            }
            Balance::LeastRequest => Balancer::LeastRequest,
            Balance::Hash(on) => {
                // Points on the ring depend only on each target's own URL, so adding or
                // removing a target moves only the keys that map to it.
                let mut ring = Vec::new();
                for (i, t) in targets.iter().enumerate() {
                    let points = 160 * t.weight.min(64);
                    for p in 0..points {
                        ring.push((hash64(format!("{}#{p}", t.display).as_bytes()), i as u32));
                    }
                }
                ring.sort_unstable();
                Balancer::Hash {
                    on: on.clone(),
                    ring: ring.into(),
                    fallback: Schedule::new(targets),
                }
            }
        }
    }

    /// `cost(i)`: target `i`'s current cost, for `least_request` only.
    pub fn pick(
        &self,
        targets: &[Target],
        cost: &dyn Fn(usize) -> f64,
        ctx: &PickContext<'_>,
    ) -> usize {
        let n = targets.len();
        if n == 1 {
            return 0;
        }
        match self {
            Balancer::RoundRobin(s) => s.pick(),
            Balancer::Random { cumulative, total } => {
                let r = fastrand::u64(0..*total);
                cumulative.partition_point(|c| *c <= r)
            }
            Balancer::LeastRequest => {
                let a = fastrand::usize(0..n);
                let mut b = fastrand::usize(0..n - 1);
                if b >= a {
                    b += 1;
                }
                if cost(a) <= cost(b) { a } else { b }
            }
            Balancer::Hash { on, ring, fallback } => match hash_key(on, ctx) {
                Some(h) => {
                    let i = ring.partition_point(|(p, _)| *p < h);
                    ring.get(i).or(ring.first()).map_or(0, |(_, t)| *t as usize)
                }
                None => fallback.pick(),
            },
        }
    }
}

fn hash_key(on: &HashOn, ctx: &PickContext<'_>) -> Option<u64> {
    match on {
        HashOn::Header(name) => ctx.headers.get(name).map(|v| hash64(v.as_bytes())),
        HashOn::Cookie(name) => cookie(ctx.headers, name).map(|v| hash64(v.as_bytes())),
        HashOn::Query(name) => {
            portico_config::query::get(ctx.query, name).map(|v| hash64(v.as_bytes()))
        }
        HashOn::ClientIp => Some(match ctx.client_ip {
            IpAddr::V4(v4) => hash64(&v4.octets()),
            IpAddr::V6(v6) => hash64(&v6.octets()),
        }),
        HashOn::Path => Some(hash64(ctx.path.as_bytes())),
    }
}

use portico_config::router::cookie;

/// FNV-1a then a splitmix64 finish: stable across runs and processes (so every gateway
/// instance maps a key to the same target) and well spread over the ring.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(weights: &[u32]) -> Vec<Target> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Target {
                scheme: portico_config::Scheme::Http,
                weight: *w,
                authority: format!("10.0.0.{i}:80").parse().unwrap(),
                display: format!("http://10.0.0.{i}:80").into(),
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let s = Schedule::new(&targets(&[3, 1]));
        let picks: Vec<usize> = (0..8).map(|_| s.pick()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
        let s = Schedule::new(&targets(&[5, 1, 1]));
        let picks: Vec<usize> = (0..7).map(|_| s.pick()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn consistent_hash_moves_few_keys_when_a_target_is_added() {
        let h = HeaderMap::new();
        let ctx = |path: &'static str| PickContext {
            headers: Box::leak(Box::new(h.clone())),
            client_ip: "1.2.3.4".parse().unwrap(),
            path,
            query: None,
        };
        let three = targets(&[1, 1, 1]);
        let four = targets(&[1, 1, 1, 1]);
        let b3 = Balancer::new(&Balance::Hash(HashOn::Path), &three);
        let b4 = Balancer::new(&Balance::Hash(HashOn::Path), &four);
        let paths: Vec<&'static str> = (0..2000)
            .map(|i| &*Box::leak(format!("/item/{i}").into_boxed_str()))
            .collect();
        let moved = paths
            .iter()
            .filter(|p| b3.pick(&three, &|_| 0.0, &ctx(p)) != b4.pick(&four, &|_| 0.0, &ctx(p)))
            .count();
        // Ideal: a quarter of the keys move to the new target; nothing else moves.
        assert!(moved > 300 && moved < 700, "{moved} of 2000 keys moved");
        let counts = (0..3)
            .map(|t| {
                paths
                    .iter()
                    .filter(|p| b3.pick(&three, &|_| 0.0, &ctx(p)) == t)
                    .count()
            })
            .collect::<Vec<_>>();
        assert!(counts.iter().all(|c| *c > 450), "uneven spread: {counts:?}");
    }

    #[test]
    fn cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; session=xyz; sessionid=no".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays() {
        let l = TargetLoad::default();
        l.observe(Duration::from_millis(1));
        l.observe(Duration::from_millis(50));
        let peak = f64::from_bits(l.ewma_ns.load(Ordering::Relaxed));
        assert!((peak - 50e6).abs() < 1.0);
        l.observe(Duration::from_millis(1));
        let after = f64::from_bits(l.ewma_ns.load(Ordering::Relaxed));
        assert!(after <= peak && after > 1e6, "decays gradually: {after}");
    }
}
