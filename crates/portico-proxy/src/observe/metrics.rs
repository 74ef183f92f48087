//! Prometheus metrics: the recorder is installed once per process and rendered by the admin
//! listener.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the recorder (first call) and returns the handle that renders the text format.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several gateways);
            // ours is still rendered, but then sees no data, so say it.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Upkeep passes run so far (for the test that the thread is alive).
static UPKEEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The exporter keeps every histogram sample (8 bytes each) until something drains them
/// into buckets: a scrape of `/metrics`, or this thread. Without it a gateway nobody scrapes
/// grew by ~16 bytes per request without end (measured: 3.7–4.5 MiB more resident memory
/// after each 4-second run at 1,000 connections), and one scraped every 15 s held 15 s of
/// samples. A thread of its own, not a task: draining does not depend on which runtimes
/// exist, and it runs once a second.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("portico-metrics".into())
        .spawn(move || {
            loop {
                #[allow(clippy::disallowed_methods)] // this thread's own, not a tokio worker's
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
                UPKEEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread; histogram samples are drained only when /metrics is scraped");
    }
}

/// What a family is, for its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every family Portico exports, with its `# HELP` text. A family without a description is
/// rendered with `# TYPE` only, which Prometheus text-format checkers reject; the tests below
/// hold this table to the sources and to the list in docs/operations.md.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "portico_requests_total",
        Kind::Counter,
        "Requests answered, by route, method and status.",
    ),
    (
        "portico_request_duration_seconds",
        Kind::Histogram,
        "Time from request head to the end of the response body, by route.",
    ),
    (
        "portico_upstream_duration_seconds",
        Kind::Histogram,
        "Time from sending a request upstream to its response head, by upstream.",
    ),
    (
        "portico_upstream_errors_total",
        Kind::Counter,
        "Upstream failures, by upstream and kind (the problem code).",
    ),
    (
        "portico_upstream_retries_total",
        Kind::Counter,
        "Requests sent upstream again, by upstream and reason.",
    ),
    (
        "portico_upstream_retry_budget_exhausted_total",
        Kind::Counter,
        "Retries refused because the upstream's retry budget was spent.",
    ),
    (
        "portico_mirror_requests_total",
        Kind::Counter,
        "Mirrored copies of requests, by upstream and result (sent, failed).",
    ),
    (
        "portico_rate_limited_total",
        Kind::Counter,
        "Requests refused by a rate_limit policy, by route and the refusing limit's name.",
    ),
    (
        "portico_concurrency_limited_total",
        Kind::Counter,
        "Requests refused by a concurrency_limit policy, by route.",
    ),
    (
        "portico_redis_errors_total",
        Kind::Counter,
        "Rate-limit decisions Redis did not make (unreachable, timeout, error).",
    ),
    (
        "portico_redis_up",
        Kind::Gauge,
        "0 after a Redis failure, 1 again after the next success.",
    ),
    (
        "portico_redis_duration_seconds",
        Kind::Histogram,
        "Time per rate-limit script call to Redis, including timeouts.",
    ),
    (
        "portico_auth_failures_total",
        Kind::Counter,
        "Requests refused 401 (or 503 when credentials could not be checked), by route and reason.",
    ),
    (
        "portico_access_denied_total",
        Kind::Counter,
        "Requests refused 403 by acl, ip_filter or CORS, by route and reason.",
    ),
    (
        "portico_jwks_fetches_total",
        Kind::Counter,
        "JWKS documents fetched, by URL and result (ok, error).",
    ),
    (
        "portico_introspection_requests_total",
        Kind::Counter,
        "Token introspection calls, by result (ok, error).",
    ),
    (
        "portico_upstream_ejections_total",
        Kind::Counter,
        "Targets taken out of rotation by passive health checking, by upstream and target.",
    ),
    (
        "portico_upstream_target_healthy",
        Kind::Gauge,
        "1 when the target passes its active health checks, 0 when it is out.",
    ),
    (
        "portico_upstream_connections",
        Kind::Gauge,
        "Connections open to an upstream target (health checks not counted).",
    ),
    (
        "portico_upstream_dns_failures_total",
        Kind::Counter,
        "Failed re-resolutions of an upstream target's name.",
    ),
    (
        "portico_stream_idle_timeouts_total",
        Kind::Counter,
        "Bodies cut off by stream_idle_timeout, by direction (request, response).",
    ),
    (
        "portico_request_body_timeouts_total",
        Kind::Counter,
        "Requests answered 408 because their body came slower than request_body_min_rate.",
    ),
    (
        "portico_client_send_timeouts_total",
        Kind::Counter,
        "Client connections closed because they took none of a waiting answer for send_timeout.",
    ),
    (
        "portico_connections_refused_total",
        Kind::Counter,
        "Client connections closed at accept, by reason (per_ip_limit).",
    ),
    (
        "portico_http2_premature_reset_goaways_total",
        Kind::Counter,
        "HTTP/2 connections sent GOAWAY because the client cancelled most of its streams before their answers.",
    ),
    (
        "portico_open_connections",
        Kind::Gauge,
        "Open client connections, by listener.",
    ),
    (
        "portico_config_reloads_total",
        Kind::Counter,
        "Config reloads, by result (success, failure).",
    ),
    (
        "portico_config_generation",
        Kind::Gauge,
        "Configs applied since start (1 = the first), admin-API target changes included.",
    ),
    (
        "portico_aggregate_cache_hits_total",
        Kind::Counter,
        "Composite-route backend answers reused by cache_ttl.",
    ),
    (
        "portico_cache_requests_total",
        Kind::Counter,
        "Requests on routes with a cache policy, by result.",
    ),
    (
        "portico_compressed_responses_total",
        Kind::Counter,
        "Responses compressed by a compression policy, by coding.",
    ),
    (
        "portico_soap_calls_total",
        Kind::Counter,
        "Calls on soap routes, by result (ok, fault, error).",
    ),
    (
        "portico_contract_violations_total",
        Kind::Counter,
        "Upstream answers that break their OpenAPI operation's contract, by route and kind (status, content_type, body).",
    ),
    (
        "portico_request_validation_failures_total",
        Kind::Counter,
        "Requests refused for breaking their OpenAPI operation's contract, by route and where the first failure was.",
    ),
    (
        "portico_xml_json_conversions_total",
        Kind::Counter,
        "Bodies converted by an xml_json policy, by direction.",
    ),
    (
        "portico_decompressed_requests_total",
        Kind::Counter,
        "Request bodies decoded by a request_decompression policy, by coding.",
    ),
    (
        "portico_grpc_reflection_total",
        Kind::Counter,
        "Fetches of service definitions by gRPC reflection, by route and result.",
    ),
    (
        "portico_admin_target_overrides",
        Kind::Gauge,
        "Upstreams whose targets were set through the admin API.",
    ),
    (
        "portico_config_info",
        Kind::Gauge,
        "1 for the active config's hash, 0 for configs applied before it.",
    ),
    (
        "portico_access_log_dropped_total",
        Kind::Counter,
        "Access-log lines dropped because the writer fell behind.",
    ),
    (
        "portico_config_drift_nodes",
        Kind::Gauge,
        "Nodes of the fleet (sharing this Redis) whose config differs from the one applied last.",
    ),
    (
        "portico_fleet_nodes",
        Kind::Gauge,
        "Nodes of the fleet with a live heartbeat.",
    ),
    (
        "portico_config_store_up",
        Kind::Gauge,
        "With a config store: 1 while it answers, 0 while it cannot be read.",
    ),
    (
        "portico_config_store_version",
        Kind::Gauge,
        "With a config store: the version running (0: the cached copy, not yet confirmed).",
    ),
    (
        "portico_audit_write_errors_total",
        Kind::Counter,
        "Audit records that could not be written.",
    ),
    (
        "portico_trace_spans_exported_total",
        Kind::Counter,
        "Spans the trace exporter delivered to the collector.",
    ),
    (
        "portico_trace_spans_dropped_total",
        Kind::Counter,
        "Spans lost, by reason: the export queue was full, an export failed, or the exporter could not start.",
    ),
];

fn describe() {
    for &(name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        // Extension methods are bounded to one label value.
        _ => "OTHER",
    }
}

pub fn status_label(code: u16) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..600).map(|c| c.to_string()).collect());
    labels
        .get(usize::from(code))
        .map_or("other", String::as_str)
}

/// Per-route handles, registered when a config is applied, so the request path neither
/// allocates label strings nor hashes label sets for the duration histogram.
#[derive(Debug)]
pub struct RouteMetrics {
    pub name: Arc<str>,
    pub duration: metrics::Histogram,
    /// The second in progress, for the admin API's live view (shared with the runtimes
    /// before and after a reload that keeps the route).
    pub live: Arc<crate::observe::live::LiveCounters>,
}

impl RouteMetrics {
    pub fn new(
        name: Arc<str>,
        live: Option<Arc<crate::observe::live::LiveCounters>>,
    ) -> RouteMetrics {
        let duration =
            metrics::histogram!("portico_request_duration_seconds", "route" => name.to_string());
        RouteMetrics {
            name,
            duration,
            live: live.unwrap_or_default(),
        }
    }
}

/// Request counters by (route index, method, status).
type CounterCache = std::collections::HashMap<
    (usize, &'static str, u16),
    metrics::Counter,
    std::hash::BuildHasherDefault<KeyHasher>,
>;

/// A multiply-rotate hasher for integer keys no client can choose: the counter cache's (private
/// to a worker thread, keys from the config) and the token caches' slots (already a keyed
/// SipHash of the token). SipHash's flooding resistance buys nothing there and cost ~150
/// instructions per lookup.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

/// Records a finished request. The request counter has a status label known only at the end;
/// its handle is cached per worker thread, keyed by (config generation, route, method,
/// status), so only the first request of each combination registers it.
pub fn record_request(
    generation: u64,
    route: Option<(usize, &RouteMetrics)>,
    method: &http::Method,
    status: u16,
    d: Duration,
) {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static COUNTERS: RefCell<(u64, CounterCache)> = RefCell::new((0, HashMap::default()));
    }
    let method = method_label(method);
    let route_index = route.map_or(usize::MAX, |(i, _)| i);
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != generation {
            c.0 = generation;
            c.1.clear();
        }
        c.1.entry((route_index, method, status))
            .or_insert_with(|| {
                let name = route.map_or(String::new(), |(_, m)| m.name.to_string());
                metrics::counter!("portico_requests_total", "route" => name, "method" => method, "status" => status_label(status))
            })
            .increment(1);
    });
    match route {
        Some((_, m)) => m.duration.record(d.as_secs_f64()),
        None => metrics::histogram!("portico_request_duration_seconds", "route" => "")
            .record(d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The families the code records: every `counter!`, `gauge!` or `histogram!` call on a
    /// literal `portico_*` name in this crate's sources.
    fn recorded_families() -> std::collections::BTreeMap<String, Kind> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = std::collections::BTreeMap::new();
        let mut dirs = vec![src];
        let mut paths = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    paths.push(path);
                }
            }
        }
        assert!(paths.len() > 30, "the sources were not found");
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for (mac, kind) in [
                ("counter!(", Kind::Counter),
                ("gauge!(", Kind::Gauge),
                ("histogram!(", Kind::Histogram),
            ] {
                for (at, _) in text.match_indices(mac) {
                    let rest = text[at + mac.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix("\"portico_") else {
                        continue;
                    };
                    let name = &rest[..rest.find('"').unwrap()];
                    let prev = found.insert(format!("portico_{name}"), kind);
                    assert!(
                        prev.is_none_or(|k| k == kind),
                        "portico_{name} recorded as two kinds"
                    );
                }
            }
        }
        found
    }

    #[test]
    fn every_recorded_family_is_described() {
        let described: std::collections::BTreeMap<String, Kind> = FAMILIES
            .iter()
            .map(|&(n, k, _)| (n.to_owned(), k))
            .collect();
        assert_eq!(described.len(), FAMILIES.len(), "a family is listed twice");
        assert_eq!(recorded_families(), described);
        for (name, _, help) in FAMILIES {
            assert!(!help.is_empty() && !help.contains('\n'), "{name}");
        }
    }

    /// docs/operations.md lists each family once, with the kind it is exported as.
    #[test]
    fn the_operations_guide_lists_every_family() {
        let doc = include_str!("../../../../docs/operations.md");
        let mut listed = std::collections::BTreeMap::new();
        for line in doc.lines() {
            let Some(row) = line.strip_prefix("| `portico_") else {
                continue;
            };
            let mut cells = row.split('|');
            let name = format!(
                "portico_{}",
                cells.next().unwrap().trim().trim_end_matches('`')
            );
            let kind = match cells.next().unwrap().trim() {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                other => panic!("{name}: unknown kind {other}"),
            };
            assert!(
                listed.insert(name.clone(), kind).is_none(),
                "{name} listed twice"
            );
        }
        let described: std::collections::BTreeMap<String, Kind> = FAMILIES
            .iter()
            .map(|&(n, k, _)| (n.to_owned(), k))
            .collect();
        assert_eq!(listed, described);
    }

    /// Histogram samples pile up in the exporter until drained: the upkeep thread must run
    /// even when nothing scrapes `/metrics`. (The draining itself is the exporter's
    /// `run_upkeep`; a render drains too, so the last check is only that a recorded sample
    /// reaches its bucket, not which of the two put it there.)
    #[test]
    fn upkeep_thread_runs_without_a_scrape() {
        let handle = install();
        metrics::histogram!("portico_request_duration_seconds", "route" => "upkeep-test")
            .record(0.002);
        let before = UPKEEPS.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while UPKEEPS.load(std::sync::atomic::Ordering::Relaxed) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the metrics upkeep thread never ran"
            );
            #[allow(clippy::disallowed_methods)] // a plain #[test]: no runtime to block
            std::thread::sleep(Duration::from_millis(50));
        }
        // And the sample is counted in its bucket.
        let text = handle.render();
        assert!(
            text.contains(
                "portico_request_duration_seconds_bucket{route=\"upkeep-test\",le=\"0.0025\"} 1"
            ),
            "{text}"
        );
    }
}
