//! Upstream connections: Portico's own pool.
//!
//! Each target has one shard per worker thread. A request takes an idle HTTP/1.1 connection
//! from its thread's shard (an uncontended lock: tasks rarely move between threads mid-request)
//! and the response body puts it back when it ends, so there is no shared pool lock, no
//! background task and no channel per request. HTTP/1.1 connections are Portico's own
//! (`http1/codec.rs`), driven by the request that holds them; requests that ask for a protocol
//! switch get a hyper connection made from a pooled or new socket. HTTP/2 connections
//! (`h2c://`, or `https://` when ALPN picks h2) are shared by concurrent requests up to the
//! peer's stream limit; when every connection is full, another one is opened.
//!
//! Limits: each target has at most `max_connections` open; a request that finds none free
//! waits (at most `max_pending` of them, for at most `connect_timeout`) for one to come back or
//! close. Targets named by DNS are resolved again every `dns_refresh`; when an address goes
//! away, idle connections to it close and busy ones are not reused.
//!
//! Stale connections: an idle connection older than `idle_timeout` is never used (and is closed
//! by a sweep). A pooled connection is checked before use (the upstream has not closed it nor
//! sent anything unasked). If writing the request fails before any of it was written, it goes
//! out on a fresh connection; if the connection died after an idempotent request without a
//! body was written, that request is sent again once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_config::{Scheme, Target, Upstream};
use tokio::net::TcpStream;

use crate::body::upstream::{
    Back, ConnSlot, CountGuard, Home, Inner, LoadGuard, Origin, PooledConn, Slots, UpstreamBody,
};
use crate::body::{Body, IdleTimer};
use crate::http1::codec::{self, SendError, Stream};
use crate::observe::trace::Traceparent;
use crate::upstream::balance::{Balancer, PickContext, TargetLoad};

type H1Conn = PooledConn;
type H1Body = codec::ResponseBody<Option<ConnSlot>>;

/// Why an upstream call failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be opened (refused, TLS failure, DNS).
    Connect(String),
    /// Opening the connection took longer than `connect_timeout`.
    ConnectTimeout,
    /// The upstream's `max_requests` are all in flight.
    Overloaded,
    /// The target's `max_connections` are open and `max_pending` requests already wait.
    PendingFull,
    /// No connection became free within `connect_timeout`.
    PendingTimeout,
    /// The connection failed after the request was (at least partly) sent, or the answer
    /// was not valid HTTP.
    Request(Box<dyn std::error::Error + Send + Sync>),
}

impl CallError {
    /// Refused by a limit of ours: says nothing about the target's health.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            CallError::Overloaded | CallError::PendingFull | CallError::PendingTimeout
        )
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "connect: {e}"),
            CallError::ConnectTimeout => f.write_str("connect timed out"),
            CallError::Overloaded => f.write_str("max_requests in flight"),
            CallError::PendingFull => f.write_str("max_connections open and max_pending waiting"),
            CallError::PendingTimeout => {
                f.write_str("no connection became free within connect_timeout")
            }
            CallError::Request(e) => write!(f, "request: {e}"),
        }
    }
}

/// The retry budget starts with 10 retries' worth (so a quiet upstream can still retry) and
/// holds at most 100.
const RETRY_TOKENS_START: u64 = 10_000;
const RETRY_TOKENS_MAX: u64 = 100_000;

/// A failed attempt, and whether the request may go elsewhere: nothing of it was sent (or it
/// can safely be sent again), and the caller's request is as it was.
type Failed = (CallError, bool);

/// Concurrent requests sent on one HTTP/2 connection before another is opened. Servers
/// commonly allow 100 or more; when one allows fewer, extra streams wait in hyper for a free
/// slot rather than fail.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Idle time after which a reused connection might be closed by the upstream under us.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

const PROTO_UNKNOWN: u8 = 0;
const PROTO_H1: u8 = 1;
const PROTO_H2: u8 = 2;

pub struct UpstreamPool {
    pub spec: Arc<Upstream>,
    /// Requests in flight, for the `max_requests` circuit breaker.
    in_flight: Arc<AtomicUsize>,
    /// Retry budget in thousandths of a retry: each request adds `budget_percent` × 10, each
    /// retry takes 1,000.
    retry_tokens: AtomicU64,
    balancer: Balancer,
    /// `portico_upstream_duration_seconds` for this upstream, registered once.
    pub duration: metrics::Histogram,
    targets: Vec<Arc<TargetPool>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("name", &self.spec.name)
            .finish()
    }
}

struct TargetPool {
    target: Target,
    load: TargetLoad,
    /// The calls it answered (or failed) in the second in progress, for the live view.
    /// Shared, like `health`, with the pool a reload replaces: what was counted there and
    /// not yet sampled is not lost.
    live: Arc<crate::observe::live::LiveCounters>,
    /// Shared with the pool a reload replaces, when it had this same target.
    health: Arc<TargetHealth>,
    /// For `https://`: what ALPN chose last time, so requests go to an HTTP/2 connection
    /// without first opening an HTTP/1.1 one.
    proto: AtomicU8,
    shards: Box<[Mutex<Shard>]>,
    /// Held while an HTTP/2 connection is being opened (the slow path only).
    h2_connect: tokio::sync::Mutex<()>,
    max_idle: usize,
    idle_timeout: Duration,
    stream_idle: Option<Duration>,
    slots: Arc<Slots>,
    max_connections: usize,
    max_pending: usize,
    /// Where the target is: fixed for an IP literal, resolved (and re-resolved) for a name;
    /// empty until a name is first resolved.
    addrs: ArcSwap<Vec<SocketAddr>>,
    /// Bumped when re-resolution drops an address; connections from before are checked.
    dns_epoch: AtomicU64,
    next_addr: AtomicUsize,
    /// The host to resolve (`None` for an IP literal).
    dns_name: Option<Box<str>>,
}

/// The target of `previous` at the same scheme and authority as `t`.
fn same_target<'a>(previous: Option<&'a UpstreamPool>, t: &Target) -> Option<&'a Arc<TargetPool>> {
    previous.and_then(|p| {
        p.targets
            .iter()
            .find(|o| o.target.scheme == t.scheme && o.target.authority == t.authority)
    })
}

/// One request waiting for a connection.
struct PendingGuard<'a>(&'a Slots);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request waiting for a connection got.
enum Waited {
    Idle(H1Conn, Origin, Duration),
    Slot(ConnSlot),
}

/// Health of one target: passive (ejection) and active (checks).
#[derive(Default)]
struct TargetHealth {
    /// Active checks found it unhealthy.
    down: std::sync::atomic::AtomicBool,
    check_successes: AtomicU32,
    check_failures: AtomicU32,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Ejected until this time (`balance::now_ns`), 0 when never ejected.
    ejected_until: AtomicU64,
}

#[derive(Default)]
struct Shard {
    /// Idle HTTP/1.1 connections, most recently used last.
    h1: Vec<IdleH1>,
    h2: Vec<H2Conn>,
}

struct IdleH1 {
    conn: H1Conn,
    since: Instant,
    origin: Origin,
}

struct H2Conn {
    tx: http2::SendRequest<Body>,
    in_flight: Arc<AtomicUsize>,
    origin: Origin,
}

/// The shard of the current worker thread.
fn shard_index(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i) % shards
}

/// One shard per runtime worker (a current-thread runtime has one), so no idle connection
/// sits in a shard that no thread takes from.
fn shard_count() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .clamp(1, 64)
}

/// Why an upstream's pool could not be made: its TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The TLS provider refused the protocol versions.
    #[error("upstream `{upstream}`: TLS: {source}")]
    Tls {
        upstream: Arc<str>,
        #[source]
        source: rustls::Error,
    },
    /// A certificate of the upstream's CA bundle is not usable as a root.
    #[error("upstream `{upstream}`: bad CA certificate: {source}")]
    CaCertificate {
        upstream: Arc<str>,
        #[source]
        source: rustls::Error,
    },
}

impl UpstreamPool {
    /// A pool for `spec`. When a reload changed the upstream, `previous` is its old pool:
    /// targets in both keep their health state (ejections, check results).
    pub fn new(
        spec: Arc<Upstream>,
        previous: Option<&UpstreamPool>,
    ) -> Result<UpstreamPool, PoolError> {
        let tls = if spec.targets.iter().any(|t| t.scheme == Scheme::Https) {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|source| PoolError::Tls {
                    upstream: spec.name.clone(),
                    source,
                })?;
            let mut roots = rustls::RootCertStore::empty();
            match &spec.tls.roots {
                Some(certs) => {
                    for c in certs {
                        roots
                            .add(c.clone())
                            .map_err(|source| PoolError::CaCertificate {
                                upstream: spec.name.clone(),
                                source,
                            })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        let shards = shard_count();
        let targets = spec
            .targets
            .iter()
            .map(|t| {
                let literal = crate::upstream::dns::literal(&t.authority);
                Arc::new(TargetPool {
                    stream_idle: spec.stream_idle_timeout,
                    slots: Arc::new(Slots {
                        open: AtomicUsize::new(0),
                        pending: AtomicUsize::new(0),
                        freed: tokio::sync::Notify::new(),
                        gauge: metrics::gauge!("portico_upstream_connections", "upstream" => spec.name.to_string(), "target" => t.display.to_string()),
                    }),
                    max_connections: spec.max_connections,
                    max_pending: spec.max_pending,
                    addrs: ArcSwap::from_pointee(literal.into_iter().collect()),
                    dns_epoch: AtomicU64::new(0),
                    next_addr: AtomicUsize::new(0),
                    dns_name: literal
                        .is_none()
                        .then(|| t.authority.host().to_owned().into_boxed_str()),
                    target: t.clone(),
                    load: TargetLoad::default(),
                    live: same_target(previous, t)
                        .map_or_else(Default::default, |o| o.live.clone()),
                    health: same_target(previous, t)
                        .map_or_else(Default::default, |o| {
                            // Without active checks nothing would ever bring it back up.
                            if spec.health_check.is_none() {
                                o.health.down.store(false, Ordering::Relaxed);
                            }
                            o.health.clone()
                        }),
                    proto: AtomicU8::new(match t.scheme {
                        Scheme::Http => PROTO_H1,
                        Scheme::H2c => PROTO_H2,
                        Scheme::Https => PROTO_UNKNOWN,
                    }),
                    shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
                    h2_connect: tokio::sync::Mutex::new(()),
                    max_idle: spec.pool_max_idle,
                    idle_timeout: spec.idle_timeout,
                })
            })
            .collect::<Vec<_>>();
        // Close idle connections that outlived `idle_timeout`, so they are gone before the
        // upstream's own keep-alive timeout closes them under us. The sweep ends with the pool.
        let weak: Vec<Weak<TargetPool>> = targets.iter().map(Arc::downgrade).collect();
        let period = (spec.idle_timeout / 2).max(Duration::from_millis(100));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    let mut alive = false;
                    for w in &weak {
                        if let Some(t) = w.upgrade() {
                            alive = true;
                            t.sweep();
                        }
                    }
                    if !alive {
                        return;
                    }
                }
            });
        }
        // Names are resolved again every `dns_refresh`; the task ends with the pool.
        let named: Vec<Weak<TargetPool>> = targets
            .iter()
            .filter(|t| t.dns_name.is_some())
            .map(Arc::downgrade)
            .collect();
        if !named.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (every, upstream) = (spec.dns_refresh, spec.name.clone());
            rt.spawn(async move {
                loop {
                    let mut alive = false;
                    for w in &named {
                        let Some(t) = w.upgrade() else { continue };
                        alive = true;
                        t.refresh_dns(&upstream).await;
                    }
                    if !alive {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
        let duration = metrics::histogram!("portico_upstream_duration_seconds", "upstream" => spec.name.to_string());
        Ok(UpstreamPool {
            in_flight: Arc::new(AtomicUsize::new(0)),
            retry_tokens: AtomicU64::new(RETRY_TOKENS_START),
            balancer: Balancer::new(&spec.balance, &spec.targets),
            spec,
            duration,
            targets,
            tls,
        })
    }

    /// The target for a request, by the upstream's load-balancing algorithm.
    pub fn pick(&self, ctx: &PickContext<'_>) -> usize {
        if self.targets.len() == 1 {
            return 0;
        }
        let cost = |i: usize| self.targets[i].load.cost(self.spec.targets[i].weight);
        let i = self.balancer.pick(&self.spec.targets, &cost, ctx);
        // An ejected target's share goes to the next healthy one; when every target is
        // ejected (panic mode), they all take traffic again rather than none.
        if self.is_ejected(i) {
            self.other_target(i).unwrap_or(i)
        } else {
            i
        }
    }

    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i].target
    }

    /// Counts a call that target `i` answered with `status` (a call that failed there counts
    /// as the 502 or 504 the client got) after `d`, for the live view.
    #[inline]
    pub fn record_live(&self, i: usize, status: u16, d: Duration) {
        self.targets[i].live.record(status, d);
    }

    /// Each target (as written) with its live counters.
    pub fn live_counters(
        &self,
    ) -> impl Iterator<Item = (&Arc<str>, &crate::observe::live::LiveCounters)> {
        self.targets.iter().map(|t| (&t.target.display, &*t.live))
    }

    /// Sends a request (its URI in absolute form) to target `i`. A request that could not be
    /// sent there (connection refused, or closed before the request was written) goes to
    /// another target once. Returns the target that answered.
    ///
    /// The request is borrowed, down to the connection that writes it: a layer that took it by
    /// value would hold a copy of its own (360 bytes each, plus a copy kept for replaying), and
    /// this future is boxed per request. Its body is consumed; what is left of the request
    /// afterwards is for the caller to drop.
    #[allow(clippy::manual_async_fn)] // see the comment in the body
    pub fn send<'a>(
        &'a self,
        mut i: usize,
        req: &'a mut Request<Body>,
        trace: Option<&'a Traceparent>,
    ) -> impl Future<Output = Result<(usize, Response<UpstreamBody>), CallError>> + 'a {
        // Not `async fn`: its parameters would be moved once more, into locals, before the
        // body runs.
        async move {
            // Circuit breaker: admit the request only while fewer than `max_requests` are in
            // flight; it stays counted until its response body is gone.
            let admitted = if self.spec.max_requests == usize::MAX {
                None
            } else {
                if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.spec.max_requests {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(CallError::Overloaded);
                }
                Some(CountGuard(self.in_flight.clone()))
            };
            let mut failed_over = false;
            let least_request = matches!(self.balancer, Balancer::LeastRequest);
            loop {
                // least_request: count the request on its target until its response body is
                // gone, and feed the target's latency average. (Inline rather than a wrapping
                // future: each layer moves the request and the response once more.)
                let load = least_request.then(|| {
                    let tp = &self.targets[i];
                    tp.load.in_flight.fetch_add(1, Ordering::Relaxed);
                    (LoadGuard(tp.clone()), Instant::now())
                });
                match self.send_inner(i, req, trace).await {
                    Ok(mut resp) => {
                        if let Some((guard, started)) = load {
                            self.targets[i].load.observe(started.elapsed());
                            resp.body_mut().load = Some(guard);
                        }
                        self.report(i, !matches!(resp.status().as_u16(), 502..=504));
                        resp.body_mut().admitted = admitted;
                        return Ok((i, resp));
                    }
                    Err((e, _)) if e.is_overload() => return Err(e),
                    Err((e, again)) => {
                        self.report(i, false);
                        match (again, failed_over, self.other_target(i)) {
                            (true, false, Some(j)) => {
                                metrics::counter!("portico_upstream_retries_total", "upstream" => self.spec.name.to_string(), "reason" => "other_target").increment(1);
                                (i, failed_over) = (j, true);
                            }
                            _ => return Err(e),
                        }
                    }
                }
            }
        }
    }

    /// Credits the retry budget for one request.
    pub fn earn_retry(&self, percent: u32) {
        let add = u64::from(percent) * 10;
        let _ = self
            .retry_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + add).min(RETRY_TOKENS_MAX))
            });
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn spend_retry(&self) -> bool {
        self.retry_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(1_000)
            })
            .is_ok()
    }

    /// Passive health: consecutive failures eject a target for a while (longer each time it
    /// happens again); a success clears the count. With one target there is nowhere else to
    /// go, so nothing is ejected.
    fn report(&self, i: usize, ok: bool) {
        let h = &self.targets[i].health;
        if ok {
            // Reads first: the common case writes nothing shared.
            if h.failures.load(Ordering::Relaxed) != 0 {
                h.failures.store(0, Ordering::Relaxed);
            }
            if h.ejections.load(Ordering::Relaxed) != 0 {
                h.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        let limit = self.spec.eject_after_failures;
        if limit == 0 || self.targets.len() < 2 {
            return;
        }
        if h.failures.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
            h.failures.store(0, Ordering::Relaxed);
            let times = (h.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(10);
            let until = crate::upstream::balance::now_ns()
                + (self.spec.ejection_time * times).as_nanos() as u64;
            h.ejected_until.store(until, Ordering::Relaxed);
            let target = self.targets[i].target.display.to_string();
            tracing::warn!(upstream = %self.spec.name, %target, seconds = (self.spec.ejection_time * times).as_secs_f64(), "target ejected after consecutive failures");
            metrics::counter!("portico_upstream_ejections_total", "upstream" => self.spec.name.to_string(), "target" => target).increment(1);
        }
    }

    /// Out of rotation: failing its active checks, or ejected by passive checking.
    fn is_ejected(&self, i: usize) -> bool {
        let h = &self.targets[i].health;
        if h.down.load(Ordering::Relaxed) {
            return true;
        }
        let until = h.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > crate::upstream::balance::now_ns()
    }

    /// Starts active health checks, if configured. The task ends when the pool is dropped
    /// (a reload that changed this upstream).
    pub fn start_health_checks(self: &Arc<Self>) {
        let Some(hc) = self.spec.health_check.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(hc.interval).await;
                let Some(pool) = weak.upgrade() else { return };
                for i in 0..pool.targets.len() {
                    let ok = matches!(
                        tokio::time::timeout(hc.timeout, pool.check(i, &hc)).await,
                        Ok(true)
                    );
                    pool.record_check(i, ok, &hc);
                }
            }
        });
    }

    /// Opens `preconnect` connections to each target in the background, so the first burst
    /// of requests finds them ready instead of each waiting for a handshake. HTTP/2 targets
    /// get one (it multiplexes). Failures are left to the requests to report.
    pub fn preconnect(self: &Arc<Self>) {
        let n = self.spec.preconnect;
        if n == 0 {
            return;
        }
        for i in 0..self.targets.len() {
            let pool = Arc::downgrade(self);
            tokio::spawn(async move {
                // A few handshakes at a time: a burst of SYNs helps nobody.
                let mut opened = 0;
                while opened < n {
                    let Some(p) = pool.upgrade() else { return };
                    let tp = p.targets[i].clone();
                    let batch = (n - opened).min(16);
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..batch {
                        let Some(slot) = tp.try_slot() else { break };
                        let p = p.clone();
                        let tp = tp.clone();
                        set.spawn(async move { p.connect(&tp, Some(slot)).await });
                    }
                    if set.is_empty() {
                        return;
                    }
                    let shards = tp.shards.len();
                    while let Some(done) = set.join_next().await {
                        match done {
                            Ok(Ok((Conn::H1(conn), origin))) => {
                                tp.put_idle(opened % shards, conn, origin);
                                opened += 1;
                            }
                            Ok(Ok((Conn::H2(tx), origin))) => {
                                tp.add_h2(0, tx, origin);
                                return;
                            }
                            _ => return,
                        }
                    }
                }
            });
        }
    }

    /// One check on a fresh connection (never a pooled one, whose health says nothing new).
    async fn check(&self, i: usize, hc: &portico_config::HealthCheck) -> bool {
        let tp = &self.targets[i];
        let Ok((conn, _)) = self.connect(tp, None).await else {
            return false;
        };
        if let Some(service) = &hc.grpc_service {
            return match conn {
                Conn::H2(tx) => grpc_health(tx, tp, service).await,
                Conn::H1(_) => false,
            };
        }
        let Some(path) = &hc.path else { return true };
        let mut req = Request::new(Body::Empty);
        req.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("portico-health-check"),
        );
        if let Ok(host) = http::HeaderValue::from_str(tp.target.authority.as_str()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
        let status = match conn {
            Conn::H1(conn) => {
                *req.uri_mut() = Uri::from(path.clone());
                conn.send(&mut req, None).await.ok().map(|(p, _)| p.status)
            }
            Conn::H2(mut tx) => {
                *req.uri_mut() = tp.target.uri(path.clone()).unwrap_or_default();
                *req.version_mut() = Version::HTTP_2;
                tx.send_request(req).await.ok().map(|r| r.status())
            }
        };
        status.is_some_and(|s| hc.is_expected(s.as_u16()))
    }

    fn record_check(&self, i: usize, ok: bool, hc: &portico_config::HealthCheck) {
        let h = &self.targets[i].health;
        let target = &self.targets[i].target.display;
        if ok {
            h.check_failures.store(0, Ordering::Relaxed);
            let n = h.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if h.down.load(Ordering::Relaxed) && n >= hc.healthy_threshold {
                h.down.store(false, Ordering::Relaxed);
                tracing::info!(upstream = %self.spec.name, %target, "target healthy again");
            }
        } else {
            h.check_successes.store(0, Ordering::Relaxed);
            let n = h.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if !h.down.load(Ordering::Relaxed) && n >= hc.unhealthy_threshold {
                h.down.store(true, Ordering::Relaxed);
                tracing::warn!(upstream = %self.spec.name, %target, "target unhealthy: failed its health checks");
            }
        }
        let healthy = if h.down.load(Ordering::Relaxed) {
            0.0
        } else {
            1.0
        };
        metrics::gauge!("portico_upstream_target_healthy", "upstream" => self.spec.name.to_string(), "target" => target.to_string()).set(healthy);
    }

    /// The next target after `i` that is not ejected, or any other one when all are.
    pub fn other_target(&self, i: usize) -> Option<usize> {
        let n = self.targets.len();
        if n < 2 {
            return None;
        }
        (1..n)
            .map(|k| (i + k) % n)
            .find(|&j| !self.is_ejected(j))
            .or(Some((i + 1) % n))
    }

    /// Health of each target, for the admin port.
    pub fn health(&self) -> Vec<serde_json::Value> {
        self.targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({
                    "target": &*t.target.display,
                    "weight": t.target.weight,
                    "ejected": self.is_ejected(i),
                    "healthy": !t.health.down.load(Ordering::Relaxed),
                    "consecutive_failures": t.health.failures.load(Ordering::Relaxed),
                    "ejections": t.health.ejections.load(Ordering::Relaxed),
                    "in_flight": t.load.in_flight.load(Ordering::Relaxed),
                    "connections": t.slots.open.load(Ordering::Relaxed),
                    "pending": t.slots.pending.load(Ordering::Relaxed),
                    "addresses": t.addrs.load().iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect()
    }

    // The request's path through the pool is split into small functions on purpose: this
    // future is boxed per request, and a rare branch written inline (connecting, a stale
    // connection's retry) would keep its temporaries in it, spreading the common case's few
    // fields over more cache lines.
    async fn send_inner(
        &self,
        i: usize,
        req: &mut Request<Body>,
        trace: Option<&Traceparent>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let tp = &self.targets[i];
        let shard = shard_index(tp.shards.len());
        if tp.proto.load(Ordering::Relaxed) == PROTO_H2 {
            return Box::pin(self.send_h2(tp, shard, req, trace)).await;
        }
        let Some((conn, origin, idle_for)) = tp.take_idle(shard) else {
            // Connecting is the rare path: boxed, so its large future does not enlarge every
            // request's.
            return Box::pin(self.send_on_new(tp, shard, req, trace)).await;
        };
        self.send_on(tp, shard, conn, origin, true, idle_for, req, trace)
            .await
    }

    /// Sends when the shard had no idle connection: on a new one, or on one that came free
    /// while waiting for a place.
    async fn send_on_new(
        &self,
        tp: &Arc<TargetPool>,
        shard: usize,
        req: &mut Request<Body>,
        trace: Option<&Traceparent>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        match self.open_h1(tp, shard).await {
            Err(e) => Err((e, true)),
            Ok(Opened::Idle(conn, origin, idle_for)) => {
                self.send_on(tp, shard, conn, origin, true, idle_for, req, trace)
                    .await
            }
            Ok(Opened::H1(conn, origin)) => {
                self.send_on(tp, shard, conn, origin, false, Duration::ZERO, req, trace)
                    .await
            }
            Ok(Opened::H2) => self.send_h2(tp, shard, req, trace).await,
        }
    }

    /// Sends on an HTTP/1.1 connection; `reused` when it comes from the pool (and may turn out
    /// to have been closed by the upstream meanwhile: then it is retried on a new one). A
    /// connection just opened has nothing to retry on.
    #[allow(clippy::too_many_arguments)]
    async fn send_on(
        &self,
        tp: &Arc<TargetPool>,
        shard: usize,
        conn: H1Conn,
        origin: Origin,
        reused: bool,
        idle_for: Duration,
        req: &mut Request<Body>,
        trace: Option<&Traceparent>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        if req.headers().contains_key(http::header::UPGRADE) {
            return Box::pin(send_upgrade(conn, req, trace)).await;
        }
        // A connection the upstream closes just as the request is written fails after the
        // request is gone. That race needs the connection to have sat idle long enough for
        // the upstream's keep-alive timer to fire, so only then is the request (bodiless,
        // so whole after sending) sent again.
        let replay = idle_for >= REPLAY_AFTER_IDLE
            && is_idempotent(req.method())
            && matches!(req.body(), Body::Empty);
        let e = match conn.send(req, trace).await {
            Ok((parts, body)) => return Ok(tp.clone().wrap_h1(parts, body, shard, origin)),
            Err(e) if !reused => return Err(failed(e)),
            Err(e) => e,
        };
        Box::pin(self.send_again(tp, shard, req, trace, e, replay)).await
    }

    /// A pooled connection was dead. Retries on a new one if nothing of the request was
    /// written, or if it was written but may be safely repeated.
    async fn send_again(
        &self,
        tp: &Arc<TargetPool>,
        shard: usize,
        req: &mut Request<Body>,
        trace: Option<&Traceparent>,
        e: SendError,
        replay: bool,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let (e, unsent) = failed(e);
        if !unsent && !replay {
            return Err((e, false));
        }
        metrics::counter!("portico_upstream_retries_total", "upstream" => self.spec.name.to_string(), "reason" => "stale_connection").increment(1);
        self.send_fresh(tp, shard, req, trace).await
    }

    /// Sends on a new connection (after a pooled one turned out dead).
    async fn send_fresh(
        &self,
        tp: &Arc<TargetPool>,
        shard: usize,
        req: &mut Request<Body>,
        trace: Option<&Traceparent>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let slot = match tp.try_slot() {
            Some(s) => s,
            None => match self.wait_for_slot(tp, shard, false).await {
                Ok(Waited::Slot(s)) => s,
                Ok(Waited::Idle(..)) => unreachable!("not asked for"),
                Err(e) => return Err((e, true)),
            },
        };
        match self.connect(tp, Some(slot)).await {
            Err(e) => Err((e, true)),
            Ok((Conn::H1(conn), origin)) => {
                self.send_on(tp, shard, conn, origin, false, Duration::ZERO, req, trace)
                    .await
            }
            Ok((Conn::H2(tx), origin)) => {
                tp.add_h2(shard, tx, origin);
                self.send_h2(tp, shard, req, trace).await
            }
        }
    }

    /// A connection for an HTTP/1.1 request when the shard had no idle one: a new one if the
    /// target is under `max_connections`, else one that comes free while waiting.
    async fn open_h1(&self, tp: &Arc<TargetPool>, shard: usize) -> Result<Opened, CallError> {
        let slot = match tp.try_slot() {
            Some(s) => s,
            None => match self.wait_for_slot(tp, shard, true).await? {
                Waited::Idle(conn, origin, idle_for) => {
                    return Ok(Opened::Idle(conn, origin, idle_for));
                }
                Waited::Slot(s) => s,
            },
        };
        match self.connect(tp, Some(slot)).await? {
            (Conn::H1(conn), origin) => Ok(Opened::H1(conn, origin)),
            (Conn::H2(tx), origin) => {
                tp.add_h2(shard, tx, origin);
                Ok(Opened::H2)
            }
        }
    }

    /// Waits, as one of at most `max_pending`, until the target can open a connection (or,
    /// with `idle`, until a pooled HTTP/1.1 connection comes back), for at most
    /// `connect_timeout`.
    async fn wait_for_slot(
        &self,
        tp: &TargetPool,
        shard: usize,
        idle: bool,
    ) -> Result<Waited, CallError> {
        if tp.slots.pending.fetch_add(1, Ordering::SeqCst) >= tp.max_pending {
            tp.slots.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(CallError::PendingFull);
        }
        let _waiting = PendingGuard(&tp.slots);
        let deadline = tokio::time::Instant::now() + self.spec.connect_timeout;
        loop {
            // Registered before looking, so a connection freed in between still wakes us.
            let freed = tp.slots.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if idle && let Some((conn, origin, idle_for)) = tp.take_idle_any(shard) {
                return Ok(Waited::Idle(conn, origin, idle_for));
            }
            if let Some(s) = tp.try_slot() {
                return Ok(Waited::Slot(s));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(CallError::PendingTimeout);
            }
        }
    }

    async fn send_h2(
        &self,
        tp: &Arc<TargetPool>,
        shard: usize,
        req: &mut Request<Body>,
        trace: Option<&Traceparent>,
    ) -> Result<Response<UpstreamBody>, Failed> {
        // hyper writes the head from the header map: the trace context goes in there.
        put_traceparent(req, trace);
        let (mut tx, in_flight) = match tp.h2_with_capacity(shard) {
            Some(c) => c,
            None => {
                // One handshake at a time: requests arriving meanwhile wait for it and share
                // the new connection instead of each opening their own.
                let _connecting = tp.h2_connect.lock().await;
                match tp.h2_with_capacity(shard) {
                    Some(c) => c,
                    None => {
                        // At `max_connections`, share the least busy connection beyond its
                        // usual stream count (hyper queues streams the peer cannot take yet);
                        // wait only when there is none.
                        let slot = match tp.try_slot() {
                            Some(s) => Ok(s),
                            None => match tp.h2_least_busy() {
                                Some(c) => Err(c),
                                None => match self.wait_for_slot(tp, shard, false).await {
                                    Ok(Waited::Slot(s)) => Ok(s),
                                    Ok(Waited::Idle(..)) => unreachable!("not asked for"),
                                    Err(e) => return Err((e, true)),
                                },
                            },
                        };
                        match slot {
                            Err(shared) => shared,
                            Ok(slot) => match self.connect(tp, Some(slot)).await {
                                Err(e) => return Err((e, true)),
                                Ok((Conn::H2(tx), origin)) => tp.add_h2(shard, tx, origin),
                                Ok((Conn::H1(conn), origin)) => {
                                    // ALPN fell back to HTTP/1.1.
                                    return self
                                        .send_on(
                                            tp,
                                            shard,
                                            conn,
                                            origin,
                                            false,
                                            Duration::ZERO,
                                            req,
                                            None,
                                        )
                                        .await;
                                }
                            },
                        }
                    }
                }
            }
        };
        // hyper takes the request; one it gives back unsent goes back in its place.
        let mut owned = std::mem::replace(req, Request::new(Body::Empty));
        *owned.version_mut() = Version::HTTP_2;
        let moved = host_to_authority(&mut owned);
        match tx.try_send_request(owned).await {
            Ok(resp) => Ok(hyper_response(
                resp,
                Back::H2(in_flight),
                IdleTimer::new(tp.stream_idle),
            )),
            Err(mut e) => {
                in_flight.fetch_sub(1, Ordering::Relaxed);
                // Given back unsent, it may go out again over HTTP/1.1: as it was.
                let unsent = e
                    .take_message()
                    .map(|mut r| {
                        if let Some((host, uri)) = moved {
                            r.headers_mut().insert(http::header::HOST, host);
                            *r.uri_mut() = uri;
                        }
                        *req = r;
                    })
                    .is_some();
                Err((CallError::Request(Box::new(e.into_error())), unsent))
            }
        }
    }

    /// The target's addresses, resolving its name now if that has not happened yet.
    async fn addresses(&self, tp: &TargetPool) -> Result<Arc<Vec<SocketAddr>>, CallError> {
        let addrs = tp.addrs.load_full();
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        tp.refresh_dns(&self.spec.name).await;
        let addrs = tp.addrs.load_full();
        if addrs.is_empty() {
            return Err(CallError::Connect(format!(
                "cannot resolve `{}`",
                tp.target.authority.host()
            )));
        }
        Ok(addrs)
    }

    /// Opens a connection: TCP to the target's addresses in turn (starting from a different
    /// one each time), then TLS and the HTTP handshake. `slot` counts it against
    /// `max_connections` for as long as it is open (health checks pass none).
    async fn connect(
        &self,
        tp: &TargetPool,
        slot: Option<ConnSlot>,
    ) -> Result<(Conn, Origin), CallError> {
        let t = &tp.target;
        let connect = async {
            let addrs = self.addresses(tp).await?;
            let epoch = tp.dns_epoch.load(Ordering::Relaxed);
            let start = tp.next_addr.fetch_add(1, Ordering::Relaxed);
            let mut last = None;
            let mut tcp = None;
            for k in 0..addrs.len() {
                let addr = addrs[(start + k) % addrs.len()];
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        tcp = Some((s, addr));
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let Some((tcp, addr)) = tcp else {
                return Err(CallError::Connect(
                    last.map_or_else(|| "no address".to_owned(), |e| e.to_string()),
                ));
            };
            let origin = Origin { addr, epoch };
            let _ = tcp.set_nodelay(true);
            let conn = match t.scheme {
                Scheme::Http => Ok(Conn::H1(codec::H1Conn::new(Stream::Tcp(tcp), slot))),
                Scheme::H2c => handshake_h2(tcp, slot).await.map(Conn::H2),
                Scheme::Https => {
                    let tls = self
                        .tls
                        .as_ref()
                        .ok_or_else(|| CallError::Connect("no TLS client configured".into()))?;
                    let name = self
                        .spec
                        .tls
                        .server_name
                        .as_deref()
                        .unwrap_or(t.authority.host())
                        .trim_start_matches('[')
                        .trim_end_matches(']');
                    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned())
                        .map_err(|e| CallError::Connect(e.to_string()))?;
                    let stream = tls
                        .connect(server_name, tcp)
                        .await
                        .map_err(|e| CallError::Connect(format!("TLS: {e}")))?;
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        tp.proto.store(PROTO_H2, Ordering::Relaxed);
                        handshake_h2(stream, slot).await.map(Conn::H2)
                    } else {
                        tp.proto.store(PROTO_H1, Ordering::Relaxed);
                        Ok(Conn::H1(codec::H1Conn::new(
                            Stream::Tls(Box::new(stream)),
                            slot,
                        )))
                    }
                }
            }?;
            Ok((conn, origin))
        };
        match tokio::time::timeout(self.spec.connect_timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(CallError::ConnectTimeout),
        }
    }
}

/// How `open_h1` found a connection.
enum Opened {
    /// A pooled one that came back while waiting.
    Idle(H1Conn, Origin, Duration),
    H1(H1Conn, Origin),
    /// ALPN chose HTTP/2; the connection is in the shard.
    H2,
}

enum Conn {
    H1(H1Conn),
    H2(http2::SendRequest<Body>),
}

/// A failed send as the pool reports it: the request may go elsewhere when none of it was
/// written.
fn failed(e: SendError) -> Failed {
    match e {
        SendError::Unsent(e) => (CallError::Request(Box::new(e)), true),
        SendError::Failed(e) => (CallError::Request(Box::new(e)), false),
    }
}

/// A request asking for a protocol switch goes over a hyper connection made from the socket,
/// which hands the switched stream to the tunnel. The connection is not pooled afterwards.
async fn send_upgrade(
    conn: H1Conn,
    req: &mut Request<Body>,
    trace: Option<&Traceparent>,
) -> Result<Response<UpstreamBody>, Failed> {
    put_traceparent(req, trace);
    let (io, slot) = (*conn).into_parts();
    let mut tx = match http1::Builder::new().handshake(TokioIo::new(io)).await {
        Ok((tx, conn)) => {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                drop(slot);
            });
            tx
        }
        Err(e) => return Err((CallError::Connect(e.to_string()), true)),
    };
    // hyper takes the request; one it gives back unsent goes back in its place.
    let owned = std::mem::replace(req, Request::new(Body::Empty));
    match tx.try_send_request(origin_form(owned)).await {
        Ok(resp) => Ok(hyper_response(resp, Back::None, IdleTimer::default())),
        Err(mut e) => {
            let unsent = e.take_message().map(|r| *req = r).is_some();
            Err((CallError::Request(Box::new(e.into_error())), unsent))
        }
    }
}

/// The trace context into the header map, for a request whose head another writer makes
/// (hyper's HTTP/2 and upgrade clients). Portico's HTTP/1.1 connections write it themselves.
fn put_traceparent(req: &mut Request<Body>, trace: Option<&Traceparent>) {
    if let Some(t) = trace {
        req.headers_mut().insert(
            crate::observe::trace::TRACEPARENT.clone(),
            crate::observe::trace::traceparent_value(t),
        );
    }
}

/// A response read by hyper, with what to do when its body ends.
fn hyper_response(resp: Response<Incoming>, back: Back, idle: IdleTimer) -> Response<UpstreamBody> {
    resp.map(|body| UpstreamBody {
        inner: Inner::Hyper(body),
        back,
        load: None,
        admitted: None,
        idle,
    })
}

async fn handshake_h2<I>(
    io: I,
    slot: Option<ConnSlot>,
) -> Result<http2::SendRequest<Body>, CallError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| CallError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
        drop(slot);
    });
    Ok(tx)
}

impl TargetPool {
    /// Room for one more connection under `max_connections`.
    fn try_slot(&self) -> Option<ConnSlot> {
        let s = &self.slots;
        if s.open.fetch_add(1, Ordering::SeqCst) >= self.max_connections {
            s.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        s.gauge.increment(1.0);
        Some(ConnSlot(s.clone()))
    }

    /// Whether a connection still goes to one of the target's addresses.
    fn is_current(&self, o: &Origin) -> bool {
        o.epoch == self.dns_epoch.load(Ordering::Relaxed) || self.addrs.load().contains(&o.addr)
    }

    /// A pooled HTTP/1.1 connection that is open, fresh and ready for a request, with how long
    /// it sat idle.
    fn take_idle(&self, shard: usize) -> Option<(H1Conn, Origin, Duration)> {
        let mut s = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut idle = s.h1.pop()?;
            let idle_for = idle.since.elapsed();
            // A dead one (closed by the upstream, or out of step) is dropped and the next
            // one tried.
            if idle_for < self.idle_timeout && idle.conn.is_reusable() {
                return Some((idle.conn, idle.origin, idle_for));
            }
        }
    }

    /// `take_idle` from this thread's shard, then from the others (for requests that waited
    /// for a connection: the one that came free may be in any shard).
    fn take_idle_any(&self, shard: usize) -> Option<(H1Conn, Origin, Duration)> {
        let n = self.shards.len();
        (0..n).find_map(|k| self.take_idle((shard + k) % n))
    }

    fn put_idle_here(&self, shard: usize, conn: H1Conn, origin: Origin) {
        if !self.is_current(&origin) {
            return;
        }
        {
            let mut s = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
            if s.h1.len() >= self.max_idle {
                return;
            }
            s.h1.push(IdleH1 {
                conn,
                since: Instant::now(),
                origin: Origin {
                    addr: origin.addr,
                    epoch: self.dns_epoch.load(Ordering::Relaxed),
                },
            });
        }
        self.slots.wake_waiter();
    }

    /// An HTTP/2 connection with a free stream, with its in-flight count already taken.
    fn h2_with_capacity(
        &self,
        shard: usize,
    ) -> Option<(http2::SendRequest<Body>, Arc<AtomicUsize>)> {
        let mut s = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        s.h2.retain(|c| !c.tx.is_closed());
        for c in &s.h2 {
            if c.in_flight.load(Ordering::Relaxed) < H2_STREAMS_PER_CONNECTION {
                c.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some((c.tx.clone(), c.in_flight.clone()));
            }
        }
        None
    }

    /// The open HTTP/2 connection (in any shard) with the fewest streams, its count taken.
    fn h2_least_busy(&self) -> Option<(http2::SendRequest<Body>, Arc<AtomicUsize>)> {
        let mut best: Option<(http2::SendRequest<Body>, Arc<AtomicUsize>)> = None;
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(|p| p.into_inner());
            for c in s.h2.iter().filter(|c| !c.tx.is_closed()) {
                let n = c.in_flight.load(Ordering::Relaxed);
                if best
                    .as_ref()
                    .is_none_or(|b| n < b.1.load(Ordering::Relaxed))
                {
                    best = Some((c.tx.clone(), c.in_flight.clone()));
                }
            }
        }
        best.inspect(|b| {
            b.1.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn add_h2(
        &self,
        shard: usize,
        tx: http2::SendRequest<Body>,
        origin: Origin,
    ) -> (http2::SendRequest<Body>, Arc<AtomicUsize>) {
        let in_flight = Arc::new(AtomicUsize::new(1));
        let mut s = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        s.h2.push(H2Conn {
            tx: tx.clone(),
            in_flight: in_flight.clone(),
            origin,
        });
        (tx, in_flight)
    }

    fn sweep(&self) {
        for shard in self.shards.iter() {
            let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Idle connections are not watched: one the upstream closed is found here or when
            // it is next taken.
            s.h1.retain_mut(|i| i.since.elapsed() < self.idle_timeout && i.conn.is_reusable());
            s.h2.retain(|c| !c.tx.is_closed());
        }
    }

    /// Resolves the target's name again. When its addresses change, connections to addresses
    /// that went away are retired: idle ones close now, HTTP/2 ones take no new streams (their
    /// open streams finish), busy HTTP/1.1 ones close when their response ends. A failed
    /// lookup keeps the addresses known so far.
    async fn refresh_dns(&self, upstream: &str) {
        let Some(host) = &self.dns_name else { return };
        let port = self.target.authority.port_u16().unwrap_or(80);
        match crate::upstream::dns::resolve(host, port).await {
            Ok(new) => {
                let old = self.addrs.load_full();
                if *old == new {
                    return;
                }
                let removed = old.iter().any(|a| !new.contains(a));
                let shown: Vec<String> = new.iter().map(ToString::to_string).collect();
                self.addrs.store(Arc::new(new));
                if !old.is_empty() {
                    tracing::info!(upstream, target = %self.target.display, addresses = ?shown, "target resolved to new addresses");
                }
                if removed {
                    self.dns_epoch.fetch_add(1, Ordering::Relaxed);
                    for shard in self.shards.iter() {
                        let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
                        s.h1.retain(|i| self.is_current(&i.origin));
                        s.h2.retain(|c| self.is_current(&c.origin));
                    }
                }
            }
            Err(e) => {
                metrics::counter!("portico_upstream_dns_failures_total", "upstream" => upstream.to_owned(), "target" => self.target.display.to_string()).increment(1);
                tracing::warn!(upstream, target = %self.target.display, error = %e, "cannot resolve target; keeping its known addresses");
            }
        }
    }

    fn wrap_h1(
        self: Arc<Self>,
        parts: http::response::Parts,
        body: H1Body,
        shard: usize,
        origin: Origin,
    ) -> Response<UpstreamBody> {
        let idle = IdleTimer::new(self.stream_idle);
        let mut b = UpstreamBody {
            inner: Inner::H1(body),
            back: Back::H1 {
                pool: self,
                shard,
                origin,
            },
            load: None,
            admitted: None,
            idle,
        };
        if b.is_end_stream() {
            b.release();
        }
        Response::from_parts(parts, b)
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; status 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// One `grpc.health.v1.Health/Check` call: healthy when the call succeeds (`grpc-status: 0`)
/// and the answer is SERVING.
async fn grpc_health(mut tx: http2::SendRequest<Body>, tp: &TargetPool, service: &str) -> bool {
    use prost::Message;
    let msg = HealthCheckRequest {
        service: service.to_owned(),
    }
    .encode_to_vec();
    // gRPC message framing: not compressed, 4-byte big-endian length, the message.
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let Ok(uri) = tp.target.uri("/grpc.health.v1.Health/Check") else {
        return false;
    };
    let mut req = Request::new(Body::full(frame));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    let h = req.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    h.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("portico-health-check"),
    );
    let Ok(resp) = tx.send_request(req).await else {
        return false;
    };
    if resp.status() != http::StatusCode::OK {
        return false;
    }
    // A trailers-only error answer carries grpc-status in the head.
    if resp
        .headers()
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() != b"0")
    {
        return false;
    }
    use http_body_util::BodyExt;
    let Ok(collected) = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
    else {
        return false;
    };
    let ok_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .is_some_and(|s| s.as_bytes() == b"0");
    let body = collected.to_bytes();
    ok_status
        && body.len() >= 5
        && HealthCheckResponse::decode(&body[5..]).is_ok_and(|r| r.status == 1)
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

pub(crate) fn clone_head(req: &Request<Body>) -> Request<Body> {
    let mut r = Request::new(Body::Empty);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

/// HTTP/2 names the host once, in `:authority` (RFC 9113 §8.3.1): the `Host` the request
/// carries (the client's, or a route's `rewrite.host`) becomes the URI's authority, which hyper
/// sends as `:authority`, and the header goes. Sent as both, with the target's address in one
/// and the client's host in the other, strict servers (hypercorn) reset the stream. A `Host`
/// that is no valid authority is dropped, leaving the target's. Returns the header and the
/// URI it replaced.
fn host_to_authority(req: &mut Request<Body>) -> Option<(http::HeaderValue, Uri)> {
    let host = req.headers_mut().remove(http::header::HOST)?;
    let before = req.uri().clone();
    let authority = http::uri::Authority::try_from(host.as_bytes())
        .ok()
        .filter(|a| !a.as_str().contains('@'));
    if let Some(a) = authority {
        let mut parts = before.clone().into_parts();
        parts.authority = Some(a);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    Some((host, before))
}

/// HTTP/1.1 sends the path and query only (`GET /x?y HTTP/1.1`); the host is in `Host`.
fn origin_form(mut req: Request<Body>) -> Request<Body> {
    if req.uri().scheme().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    *req.version_mut() = Version::HTTP_11;
    req
}

impl Home for TargetPool {
    fn put_idle(&self, shard: usize, conn: PooledConn, origin: Origin) {
        self.put_idle_here(shard, conn, origin);
    }

    fn unload(&self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, host: Option<&str>) -> Request<Body> {
        let mut r = Request::new(Body::Empty);
        *r.uri_mut() = uri.parse().unwrap();
        if let Some(h) = host {
            r.headers_mut()
                .insert(http::header::HOST, h.parse().unwrap());
        }
        r
    }

    /// To an HTTP/2 upstream the host goes once, as `:authority`: the `Host` header becomes
    /// the URI's authority and leaves the headers; one that is no authority (or carries
    /// credentials) is dropped and the target's stays.
    #[test]
    fn http2_names_the_host_once_as_authority() {
        let mut r = request("http://10.0.0.5:9000/a?b=1", Some("api.example.com"));
        let (host, before) = host_to_authority(&mut r).unwrap();
        assert_eq!(host, "api.example.com");
        assert_eq!(before, "http://10.0.0.5:9000/a?b=1");
        assert_eq!(r.uri(), "http://api.example.com/a?b=1");
        assert!(r.headers().get(http::header::HOST).is_none());
        for bad in ["user@evil.example", "a b"] {
            let mut r = request("http://10.0.0.5:9000/a", None);
            r.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_str(bad).unwrap(),
            );
            host_to_authority(&mut r).unwrap();
            assert_eq!(r.uri(), "http://10.0.0.5:9000/a", "{bad}");
            assert!(r.headers().get(http::header::HOST).is_none(), "{bad}");
        }
        assert!(host_to_authority(&mut request("http://10.0.0.5/", None)).is_none());
    }

    #[test]
    fn http1_sends_the_origin_form_and_only_safe_methods_are_sent_again() {
        let r = origin_form(request("http://10.0.0.5:9000/a/b?c=%41", Some("h")));
        assert_eq!(r.uri(), "/a/b?c=%41");
        assert_eq!(r.version(), Version::HTTP_11);
        assert_eq!(r.headers()[http::header::HOST], "h");
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
        let head = clone_head(&request("http://10.0.0.5/x", Some("h")));
        assert!(matches!(head.body(), Body::Empty));
        assert_eq!(head.headers()[http::header::HOST], "h");
    }
}
