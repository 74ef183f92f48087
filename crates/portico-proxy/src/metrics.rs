//! Prometheus metrics: the recorder is installed once per process and rendered by the admin
//! listener.

use std::sync::OnceLock;
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
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "portico_requests_total",
        "Requests answered, by route, method and status."
    );
    metrics::describe_histogram!(
        "portico_request_duration_seconds",
        "Time from request head to the end of the response body, by route."
    );
    metrics::describe_histogram!(
        "portico_upstream_duration_seconds",
        "Time from sending a request upstream to its response head, by upstream."
    );
    metrics::describe_counter!(
        "portico_upstream_errors_total",
        "Upstream failures, by upstream and kind."
    );
    metrics::describe_gauge!(
        "portico_open_connections",
        "Open client connections, by listener."
    );
    metrics::describe_counter!(
        "portico_config_reloads_total",
        "Config reloads, by result (success, failure)."
    );
    metrics::describe_gauge!(
        "portico_config_generation",
        "Number of configs applied since start (1 = the first)."
    );
    metrics::describe_gauge!(
        "portico_config_info",
        "Always 1; labels carry the active config's hash and source."
    );
    metrics::describe_counter!(
        "portico_access_log_dropped_total",
        "Access-log lines dropped because the writer fell behind."
    );
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

pub fn record_request(route: &str, method: &http::Method, status: u16, d: Duration) {
    metrics::counter!("portico_requests_total", "route" => route.to_owned(), "method" => method_label(method), "status" => status_label(status)).increment(1);
    metrics::histogram!("portico_request_duration_seconds", "route" => route.to_owned())
        .record(d.as_secs_f64());
}
