//! The OpenTelemetry exporter: the one module that uses the OpenTelemetry crates (they break
//! together between releases; see docs/decisions/0018).
//!
//! A request that is recorded hands its finished trace to a bounded queue ([`Exporter::send`],
//! which never blocks: when the queue is full the spans are dropped and counted). A thread of
//! its own drains the queue, builds the spans (`SpanData`) and sends them in batches through
//! the OTLP exporter, on a single-threaded runtime of its own, so an export that is slow or
//! fails (a collector down) costs requests nothing. Like the access log's writer, the thread
//! polls the queue rather than being woken per request.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use portico_config::{OtlpProtocol, TraceExport, TraceTls};

use crate::observe::access_log::Record;
use crate::observe::trace::{Child, ChildKind, Trace};

/// What a recorded request leaves for the exporter: its trace's ids and children, and the
/// server span's attributes (copies of the access record's values; reference counts, no
/// text is copied).
pub struct Finished {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: SystemTime,
    end: SystemTime,
    children: Vec<Child>,
    user_agent: Option<HeaderValue>,
    method: Method,
    route: Option<Arc<str>>,
    status: u16,
    client_ip: IpAddr,
    host: Option<HeaderValue>,
    /// `None` when the request was not described (decided at its end, unrouted).
    path: Option<http::Uri>,
    version: http::Version,
    request_id: HeaderValue,
    listener: Arc<str>,
    upstream: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    error: Option<&'static str>,
    complete: bool,
    bytes_in: u64,
    bytes_out: u64,
    /// A debug request's phases, as span events.
    events: Vec<crate::observe::phases::Mark>,
}

impl Finished {
    /// Takes the trace's children; the ids stay for the access log.
    pub fn take(rec: &Record, trace: &mut Trace, redact: &portico_config::Redact) -> Finished {
        // The span's times from the monotonic duration: one clock read, at the end. The wall
        // clock and the monotonic one are read at different moments (a thread can be paused
        // between them), so the span is widened to hold every child it recorded.
        let end = SystemTime::now();
        let mut start = end.checked_sub(rec.duration).unwrap_or(end);
        let mut end = end;
        for c in &trace.children {
            start = start.min(c.start);
            end = end.max(c.end);
        }
        Finished {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent: trace.parent,
            start,
            end,
            children: std::mem::take(&mut trace.children),
            user_agent: trace.user_agent.take(),
            method: rec.method.clone(),
            route: rec.route.clone(),
            status: rec.status,
            client_ip: rec.client_ip,
            host: rec.host.clone().filter(|_| !redact.host),
            path: trace.described.then(|| rec.uri.clone()),
            version: rec.version,
            request_id: rec.request_id.clone(),
            listener: rec.listener.clone(),
            upstream: rec.upstream.clone(),
            consumer: rec.consumer.clone(),
            error: rec.error,
            complete: rec.complete,
            bytes_in: rec.bytes_in,
            bytes_out: rec.bytes_out,
            events: rec
                .phases
                .as_deref()
                .filter(|p| p.debug)
                .map(|p| p.marks.clone())
                .unwrap_or_default(),
        }
    }
}

/// The queue to the exporter's thread. Cloned into every runtime whose export settings are
/// the same, so a reload neither loses spans nor reconnects; the thread ends, after sending
/// what it holds, when the last clone is dropped.
#[derive(Clone)]
pub struct Exporter {
    tx: SyncSender<Finished>,
    pub export: TraceExport,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Exporter({})", self.export.endpoint)
    }
}

impl Exporter {
    pub fn start(export: &TraceExport) -> std::io::Result<Exporter> {
        let (tx, rx) = sync_channel(export.max_queue);
        let settings = export.clone();
        std::thread::Builder::new()
            .name("portico-otlp".into())
            .spawn(move || run(rx, settings))?;
        Ok(Exporter {
            tx,
            export: export.clone(),
        })
    }

    /// Queues a recorded request's spans; drops and counts them when the queue is full.
    pub fn send(&self, f: Finished) {
        let spans = 1 + f.children.len() as u64;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(f) {
            metrics::counter!("portico_trace_spans_dropped_total", "reason" => "queue_full")
                .increment(spans);
        }
    }
}

/// How often the thread looks at the queue when spans are arriving; when a look finds none,
/// the next waits twice as long, up to `IDLE_TICK` (an idle exporter, such as one whose
/// ratio keeps no request, wakes ten times a second rather than fifty). A burst after a quiet
/// spell waits at most that long: the queue (`max_queue`) holds it meanwhile.
const TICK: Duration = Duration::from_millis(20);
const IDLE_TICK: Duration = Duration::from_millis(100);

fn run(rx: Receiver<Finished>, export: TraceExport) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the trace exporter; spans are dropped");
            return drain_forever(rx, "exporter_failed");
        }
    };
    let exporter = match rt.block_on(async { build(&export) }) {
        Ok(mut e) => {
            e.set_resource(&resource(&export));
            e
        }
        Err(e) => {
            tracing::error!(endpoint = %export.endpoint, error = %e, "cannot build the trace exporter; spans are dropped");
            return drain_forever(rx, "exporter_failed");
        }
    };
    let scope = InstrumentationScope::builder("portico")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch: Vec<SpanData> = Vec::with_capacity(export.max_batch);
    let mut due = Instant::now() + export.interval;
    let flush = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(export.max_batch));
        let n = spans.len() as u64;
        // Inside the runtime: the timer needs its clock.
        let result = rt
            .block_on(async { tokio::time::timeout(export.timeout, exporter.export(spans)).await });
        match result {
            Ok(Ok(())) => {
                metrics::counter!("portico_trace_spans_exported_total").increment(n);
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %export.endpoint, error = %e, spans = n, "trace export failed");
                metrics::counter!("portico_trace_spans_dropped_total", "reason" => "export_failed")
                    .increment(n);
            }
            Err(_) => {
                tracing::warn!(endpoint = %export.endpoint, spans = n, "trace export timed out");
                metrics::counter!("portico_trace_spans_dropped_total", "reason" => "export_failed")
                    .increment(n);
            }
        }
    };
    let mut tick = TICK;
    loop {
        let mut got = false;
        loop {
            match rx.try_recv() {
                Ok(f) => {
                    got = true;
                    spans_of(f, &scope, &mut batch);
                    if batch.len() >= export.max_batch {
                        flush(&mut batch);
                        due = Instant::now() + export.interval;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    flush(&mut batch);
                    let _ = exporter.shutdown_with_timeout(export.timeout);
                    return;
                }
            }
        }
        if Instant::now() >= due {
            flush(&mut batch);
            due = Instant::now() + export.interval;
        }
        tick = if got { TICK } else { (tick * 2).min(IDLE_TICK) };
        #[allow(clippy::disallowed_methods)] // the exporter's own thread, not a tokio worker
        std::thread::sleep(tick.min(export.interval));
    }
}

/// An exporter that could not be built still empties the queue (counting what it drops), so
/// senders never see it full for another reason.
fn drain_forever(rx: Receiver<Finished>, reason: &'static str) {
    while let Ok(f) = rx.recv() {
        metrics::counter!("portico_trace_spans_dropped_total", "reason" => reason)
            .increment(1 + f.children.len() as u64);
    }
}

fn resource(export: &TraceExport) -> Resource {
    Resource::builder_empty()
        .with_service_name(export.service_name.clone())
        .with_attributes(
            export
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attributes([
            KeyValue::new("telemetry.sdk.name", "portico"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build()
}

/// The OTLP exporter for the settings. Inside the exporter's runtime: the gRPC channel spawns
/// its connection task there.
fn build(export: &TraceExport) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let https = export.endpoint.starts_with("https://");
    match export.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &export.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                    .map_err(|e| e.to_string())?;
                let value = v.parse().map_err(|_| format!("header `{k}`: bad value"))?;
                metadata.insert(key, value);
            }
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .with_timeout(export.timeout)
                .with_metadata(metadata);
            if https {
                b = b.with_tls_config(tonic_tls(export.tls.as_ref()));
            }
            b.build().map_err(|e| e.to_string())
        }
        OtlpProtocol::HttpProtobuf => {
            let tls = rustls_config(export.tls.as_ref())?;
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build();
            let client =
                opentelemetry_http::hyper::HyperClient::new(connector, export.timeout, None);
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(export.endpoint.clone())
                .with_timeout(export.timeout)
                .with_headers(export.headers.iter().cloned().collect())
                .with_http_client(client)
                .build()
                .map_err(|e| e.to_string())
        }
    }
}

fn tonic_tls(tls: Option<&TraceTls>) -> tonic::transport::ClientTlsConfig {
    let mut c = tonic::transport::ClientTlsConfig::new();
    match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => c = c.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        None => c = c.with_webpki_roots(),
    }
    if let Some((cert, key)) = tls.and_then(|t| t.identity.as_ref()) {
        c = c.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    c
}

fn rustls_config(tls: Option<&TraceTls>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca.as_ref()) {
        Some(ca) => {
            for c in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(c.map_err(|e| format!("collector CA: {e}"))?)
                    .map_err(|e| format!("collector CA: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match tls.and_then(|t| t.identity.as_ref()) {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn span_context(trace_id: [u8; 16], span_id: [u8; 8]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

fn network_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "0.9",
    }
}

/// The request's spans: the server span (HTTP semantic conventions, plus `portico.*` for what
/// the conventions have no name for), then its children.
fn spans_of(f: Finished, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
    // Extension methods are `_OTHER`, as the conventions ask (and bounded).
    let method = method_label(&f.method);
    let name = match &f.route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    // Each attribute costs the exporter two allocations and its encoding: values the gateway
    // already holds are shared (`Arc<str>`, static text), and sizes are left out when zero.
    let mut attrs = Vec::with_capacity(18);
    attrs.push(KeyValue::new("http.request.method", method));
    if let Some(p) = &f.path {
        attrs.push(KeyValue::new("url.path", p.path().to_string()));
    }
    if let Some(r) = &f.route {
        attrs.push(KeyValue::new("http.route", r.clone()));
    }
    if f.status != 0 {
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(f.status),
        ));
    }
    attrs.push(KeyValue::new("client.address", f.client_ip.to_string()));
    if let Some(host) = f.host.as_ref().and_then(|h| h.to_str().ok()) {
        let (name, port) = address(host);
        attrs.push(KeyValue::new("server.address", name.to_string()));
        if let Some(p) = port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
    }
    if let Some(ua) = f.user_agent.as_ref().and_then(|u| u.to_str().ok()) {
        attrs.push(KeyValue::new("user_agent.original", ua.to_string()));
    }
    attrs.push(KeyValue::new(
        "network.protocol.version",
        network_version(f.version),
    ));
    if f.bytes_in > 0 {
        attrs.push(KeyValue::new("http.request.body.size", f.bytes_in as i64));
    }
    if f.bytes_out > 0 {
        attrs.push(KeyValue::new("http.response.body.size", f.bytes_out as i64));
    }
    if let Ok(id) = f.request_id.to_str()
        && f.path.is_some()
        && !id.is_empty()
    {
        attrs.push(KeyValue::new("portico.request_id", id.to_string()));
    }
    attrs.push(KeyValue::new("portico.listener", f.listener.clone()));
    if let Some(u) = &f.upstream {
        attrs.push(KeyValue::new("portico.upstream.target", u.clone()));
    }
    if let Some(c) = &f.consumer {
        attrs.push(KeyValue::new("portico.consumer", c.clone()));
    }
    if let Some(e) = f.error {
        // The access log's reason code: what refused or failed the request.
        attrs.push(KeyValue::new("error.type", e));
    }
    if !f.complete {
        attrs.push(KeyValue::new("portico.complete", false));
    }
    let status = if f.status >= 500 || f.status == 0 {
        Status::error(f.error.unwrap_or("server error"))
    } else {
        Status::Unset
    };
    out.push(SpanData {
        span_context: span_context(f.trace_id, f.span_id),
        parent_span_id: f.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: f.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: f.start,
        end_time: f.end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: events_of(&f),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    });
    for c in f.children {
        let (name, kind, attrs, status) = match c.kind {
            ChildKind::Attempt {
                upstream,
                target,
                authority,
                method,
                attempt,
                status,
                error,
            } => {
                let mut a = Vec::with_capacity(8);
                let method = method_label(&method);
                a.push(KeyValue::new("http.request.method", method));
                let (host, port) = address(authority.as_str());
                a.push(KeyValue::new("server.address", host.to_string()));
                if let Some(p) = port {
                    a.push(KeyValue::new("server.port", i64::from(p)));
                }
                a.push(KeyValue::new("portico.upstream", upstream));
                a.push(KeyValue::new("portico.upstream.target", target));
                if attempt > 1 {
                    a.push(KeyValue::new(
                        "http.request.resend_count",
                        i64::from(attempt - 1),
                    ));
                }
                if let Some(s) = status {
                    a.push(KeyValue::new("http.response.status_code", i64::from(s)));
                }
                if let Some(e) = error {
                    a.push(KeyValue::new("error.type", e));
                }
                let st = match (status, error) {
                    (_, Some(e)) => Status::error(e),
                    (Some(s), None) if s >= 500 => Status::error("upstream 5xx"),
                    _ => Status::Unset,
                };
                (method, SpanKind::Client, a, st)
            }
            ChildKind::Policy { policy, refused } => {
                let mut a = vec![KeyValue::new("portico.policy", policy)];
                if let Some(r) = refused {
                    a.push(KeyValue::new("error.type", r));
                }
                let name = match policy {
                    "jwt" => "policy jwt",
                    "introspection" => "policy introspection",
                    _ => "policy rate_limit",
                };
                (name, SpanKind::Internal, a, Status::Unset)
            }
            ChildKind::Translate { kind, failed } => {
                let mut a = vec![KeyValue::new("portico.translation", kind)];
                let status = match failed {
                    Some(code) => {
                        a.push(KeyValue::new("error.type", code));
                        Status::error(code)
                    }
                    None => Status::Unset,
                };
                let name = if kind == "soap" {
                    "translate soap"
                } else {
                    "translate grpc_transcode"
                };
                (name, SpanKind::Internal, a, status)
            }
            ChildKind::Cache { result } => (
                "cache lookup",
                SpanKind::Internal,
                vec![KeyValue::new("portico.cache.result", result)],
                Status::Unset,
            ),
        };
        out.push(SpanData {
            span_context: span_context(f.trace_id, c.span_id),
            parent_span_id: SpanId::from_bytes(f.span_id),
            parent_span_is_remote: false,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: c.start,
            end_time: c.end,
            attributes: attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        });
    }
}

/// The method as the conventions name it: the standard ones, else `_OTHER`.
fn method_label(m: &Method) -> &'static str {
    match crate::observe::metrics::method_label(m) {
        "OTHER" => "_OTHER",
        known => known,
    }
}

/// A debug request's phases as the server span's events.
fn events_of(f: &Finished) -> SpanEvents {
    let mut events = SpanEvents::default();
    events.events = f
        .events
        .iter()
        .map(|m| {
            let mut a = vec![KeyValue::new(
                "portico.duration_ms",
                m.dur.as_micros() as f64 / 1000.0,
            )];
            if let Some(d) = &m.desc {
                a.push(KeyValue::new("portico.detail", d.clone()));
            }
            opentelemetry::trace::Event::new(m.name, f.start + m.at, a, 0)
        })
        .collect();
    events
}

/// `server.address` and `server.port` of a `host[:port]` (`[v6]:port`), read by the http
/// crate's authority parser; the address without the brackets an IPv6 literal is written in.
/// Not an authority: the text as it is, no port.
fn address(h: &str) -> (&str, Option<u16>) {
    match h.parse::<http::uri::Authority>() {
        Ok(a) => {
            let host = a.host();
            let host = host
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .unwrap_or(host);
            // Borrowed from `h`: the parsed host is a slice of the same text.
            let start = h.find(host).unwrap_or(0);
            (&h[start..start + host.len()], a.port_u16())
        }
        Err(_) => (h, None),
    }
}

#[cfg(test)]
mod tests {
    use super::address;

    #[test]
    fn hosts_split_into_address_and_port() {
        assert_eq!(address("api.example.com"), ("api.example.com", None));
        assert_eq!(
            address("api.example.com:8443"),
            ("api.example.com", Some(8443))
        );
        assert_eq!(address("[::1]:80"), ("::1", Some(80)));
        assert_eq!(address("[::1]"), ("::1", None));
        // As the http crate reads it: the host, and no port.
        assert_eq!(address("h:notaport"), ("h", None));
        // Not an authority at all: the text as it is.
        assert_eq!(address("a b"), ("a b", None));
    }
}
