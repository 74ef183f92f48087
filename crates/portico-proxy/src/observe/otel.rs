//! The OpenTelemetry exporter: the one module that speaks OTLP (see docs/decisions/0018).
//!
//! A request that is recorded hands its finished trace to a bounded queue ([`Exporter::send`],
//! which never blocks: when the queue is full the spans are dropped and counted). A thread of
//! its own drains the queue, turns each request into OTLP `Span` messages (opentelemetry-proto's
//! types, encoded by prost) and sends them in batches over OTLP/gRPC or OTLP/HTTP, on a
//! single-threaded runtime of its own, so an export that is slow or fails (a collector down)
//! costs requests nothing. Like the access log's writer, the thread polls the queue rather
//! than being woken per request.
//!
//! Each span is encoded once, as it is taken from the queue, into the batch's buffer; the
//! three messages that wrap a batch (the request, its one `ResourceSpans`, its one
//! `ScopeSpans`) are framed around that buffer when it is sent. Letting prost encode the whole
//! request instead walks every attribute once more per level of nesting to size it, and that
//! was most of an export's cost. The span messages are kept between spans and refilled, so
//! their text reuses its allocations.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use portico_config::{OtlpProtocol, TraceExport, TraceTls};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

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
    wake: Arc<Wake>,
    pub export: TraceExport,
}

/// How a span wakes the exporter's thread when it sleeps for want of spans.
struct Wake {
    /// Set by the thread before it parks until the next export is due.
    sleeping: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Drop for Wake {
    /// The last exporter is gone (its queue with it): the thread sends what it holds and ends
    /// now rather than when it next wakes.
    fn drop(&mut self) {
        self.thread.unpark();
    }
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
        let sleeping = Arc::new(AtomicBool::new(false));
        let asleep = sleeping.clone();
        let thread = std::thread::Builder::new()
            .name("portico-otlp".into())
            .spawn(move || run(rx, settings, &asleep))?
            .thread()
            .clone();
        Ok(Exporter {
            tx,
            wake: Arc::new(Wake { sleeping, thread }),
            export: export.clone(),
        })
    }

    /// Queues a recorded request's spans; drops and counts them when the queue is full.
    pub fn send(&self, f: Finished) {
        let spans = 1 + f.children.len() as u64;
        match self.tx.try_send(f) {
            Ok(()) => {
                // The thread, when it found nothing at its last look, sleeps until the next
                // export is due: the first span after a quiet spell wakes it (one system
                // call). While spans keep coming it looks every `TICK` and nobody wakes it.
                // The fence pairs with the thread's (see `run`): either it sees this span when
                // it looks once more before parking, or this sees it asleep.
                fence(Ordering::SeqCst);
                if self.wake.sleeping.load(Ordering::Relaxed)
                    && self.wake.sleeping.swap(false, Ordering::Relaxed)
                {
                    self.wake.thread.unpark();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics::counter!("portico_trace_spans_dropped_total", "reason" => "queue_full")
                    .increment(spans);
            }
        }
    }
}

/// How often the thread looks at the queue while spans are arriving. A look that finds none
/// puts it to sleep until the next export is due (`interval`), or until a span wakes it: an
/// exporter whose ratio keeps no request wakes once an interval.
const TICK: Duration = Duration::from_millis(20);

fn run(rx: Receiver<Finished>, export: TraceExport, sleeping: &AtomicBool) {
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
    let sender = match Sender::new(&export) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(endpoint = %export.endpoint, error = %e, "cannot build the trace exporter; spans are dropped");
            return drain_forever(rx, "exporter_failed");
        }
    };
    let mut batch = Batch::new(&export);
    let mut due = Instant::now() + export.interval;
    let flush = |batch: &mut Batch| {
        if batch.spans == 0 {
            return;
        }
        let n = batch.spans as u64;
        let body = batch.take();
        // Inside the runtime: the client and the timer need it.
        let result =
            rt.block_on(async { tokio::time::timeout(export.timeout, sender.send(body)).await });
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
    // Adds a request's spans, sending the batch when it is full.
    let add = |batch: &mut Batch, f: Finished, due: &mut Instant| {
        batch.add(f);
        if batch.spans >= export.max_batch {
            flush(batch);
            *due = Instant::now() + export.interval;
        }
    };
    let mut quiet = false;
    loop {
        let mut got = false;
        loop {
            match rx.try_recv() {
                Ok(f) => {
                    got = true;
                    add(&mut batch, f, &mut due);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    flush(&mut batch);
                    return;
                }
            }
        }
        if Instant::now() >= due {
            flush(&mut batch);
            due = Instant::now() + export.interval;
        }
        if got || !quiet {
            // Spans are coming (or just stopped): look again in a tick, waking nobody.
            quiet = !got;
            #[allow(clippy::disallowed_methods)] // the exporter's own thread, not a tokio worker
            std::thread::sleep(TICK.min(export.interval));
            continue;
        }
        // Two looks found nothing: sleep until the next export is due. Said before a last
        // look, with a fence that pairs with the sender's, so that a span queued meanwhile
        // is either seen by that look or wakes the thread.
        sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        match rx.try_recv() {
            Ok(f) => {
                sleeping.store(false, Ordering::Relaxed);
                quiet = false;
                add(&mut batch, f, &mut due);
                continue;
            }
            Err(TryRecvError::Disconnected) => {
                flush(&mut batch);
                return;
            }
            Err(TryRecvError::Empty) => {}
        }
        std::thread::park_timeout(due.saturating_duration_since(Instant::now()));
        sleeping.store(false, Ordering::Relaxed);
        quiet = false;
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

/// Field numbers of the messages that wrap a batch (opentelemetry-proto's
/// `collector/trace/v1` and `trace/v1`): `ExportTraceServiceRequest.resource_spans`,
/// `ResourceSpans.resource` and `.scope_spans`, `ScopeSpans.scope` and `.spans`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;

/// The spans waiting to be sent, encoded, and the messages reused to encode them.
struct Batch {
    /// `ResourceSpans.resource`, encoded with its key once.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, likewise.
    scope: Vec<u8>,
    /// The spans, each as a `ScopeSpans.spans` field.
    encoded: Vec<u8>,
    spans: usize,
    server: Span,
    child: Span,
}

impl Batch {
    fn new(export: &TraceExport) -> Batch {
        let mut resource = Vec::new();
        prost::encoding::message::encode(
            RESOURCE_SPANS_RESOURCE,
            &resource_of(export),
            &mut resource,
        );
        let mut scope = Vec::new();
        let s = InstrumentationScope {
            name: "portico".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        prost::encoding::message::encode(SCOPE_SPANS_SCOPE, &s, &mut scope);
        Batch {
            resource,
            scope,
            encoded: Vec::new(),
            spans: 0,
            server: Span::default(),
            child: Span::default(),
        }
    }

    /// Encodes a request's spans into the batch.
    fn add(&mut self, f: Finished) {
        fill_server(&mut self.server, &f);
        prost::encoding::message::encode(SCOPE_SPANS_SPANS, &self.server, &mut self.encoded);
        self.spans += 1;
        for c in &f.children {
            fill_child(&mut self.child, &f, c);
            prost::encoding::message::encode(SCOPE_SPANS_SPANS, &self.child, &mut self.encoded);
            self.spans += 1;
        }
    }

    /// The batch as an encoded `ExportTraceServiceRequest`, leaving it empty.
    fn take(&mut self) -> Vec<u8> {
        let scope_spans = self.scope.len() + self.encoded.len();
        let resource_spans =
            self.resource.len() + field_len(RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
        let mut out = Vec::with_capacity(field_len(REQUEST_RESOURCE_SPANS, resource_spans));
        length_delimited(REQUEST_RESOURCE_SPANS, resource_spans, &mut out);
        out.extend_from_slice(&self.resource);
        length_delimited(RESOURCE_SPANS_SCOPE_SPANS, scope_spans, &mut out);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.encoded);
        self.encoded.clear();
        self.spans = 0;
        out
    }
}

/// A length-delimited field's key and length (its content follows).
fn length_delimited(field: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// The encoded size of a length-delimited field holding `len` bytes.
fn field_len(field: u32, len: usize) -> usize {
    prost::encoding::key_len(field) + encoded_len_varint(len as u64) + len
}

fn resource_of(export: &TraceExport) -> Resource {
    let mut attributes = vec![kv_str("service.name", &export.service_name)];
    attributes.extend(export.resource.iter().map(|(k, v)| kv_str(k, v)));
    attributes.push(kv_str("telemetry.sdk.name", "portico"));
    attributes.push(kv_str("telemetry.sdk.language", "rust"));
    attributes.push(kv_str("service.version", env!("CARGO_PKG_VERSION")));
    Resource {
        attributes,
        ..Default::default()
    }
}

fn kv_str(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

/// Sends encoded batches to the collector: OTLP/HTTP (a protobuf `POST`) or OTLP/gRPC (the
/// `TraceService/Export` call, one length-prefixed message, its status in the trailers).
struct Sender {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    uri: http::Uri,
    headers: http::HeaderMap,
    grpc: bool,
}

impl Sender {
    fn new(export: &TraceExport) -> Result<Sender, String> {
        let grpc = export.protocol == OtlpProtocol::Grpc;
        let tls = rustls_config(export.tls.as_ref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if grpc {
            connector.enable_http2().build()
        } else {
            connector.enable_http1().build()
        };
        let mut builder =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30));
        if grpc {
            builder.http2_only(true);
        }
        let uri = if grpc {
            format!(
                "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                export.endpoint.trim_end_matches('/')
            )
        } else {
            export.endpoint.clone()
        };
        let mut headers = http::HeaderMap::new();
        for (k, v) in &export.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("header `{k}`: bad value"))?;
            headers.append(name, value);
        }
        if grpc {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        } else {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
        }
        Ok(Sender {
            client: builder.build(connector),
            uri: uri.parse().map_err(|e| format!("endpoint: {e}"))?,
            headers,
            grpc,
        })
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let body = if self.grpc {
            // gRPC's message framing: not compressed, then the length (big-endian u32).
            let mut framed = Vec::with_capacity(5 + body.len());
            framed.push(0);
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(&body);
            framed
        } else {
            body
        };
        let mut req = http::Request::post(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = self.headers.clone();
        if self.grpc {
            *req.version_mut() = http::Version::HTTP_2;
        }
        let resp = self.client.request(req).await.map_err(|e| {
            use std::error::Error;
            match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }
        })?;
        let status = resp.status();
        let head = resp.headers().clone();
        // Read to the end: the connection is reused, and gRPC's status is in the trailers.
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the collector answered {status}"));
        }
        if self.grpc {
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let code = trailers
                .get("grpc-status")
                .or_else(|| head.get("grpc-status"))
                .map(|v| v.as_bytes().to_vec());
            match code.as_deref() {
                Some(b"0") => {}
                Some(c) => {
                    let message = trailers
                        .get("grpc-message")
                        .or_else(|| head.get("grpc-message"))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    return Err(format!(
                        "the collector answered gRPC status {} {message}",
                        String::from_utf8_lossy(c)
                    ));
                }
                None => return Err("the collector's answer had no gRPC status".into()),
            }
        }
        Ok(())
    }
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

fn network_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "0.9",
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `Span.flags`: sampled (W3C flags), and whether the parent is remote, said (bit 8) and
/// its value (bit 9).
fn span_flags(remote_parent: bool) -> u32 {
    0x01 | 0x100 | if remote_parent { 0x200 } else { 0 }
}

/// A span's attributes, refilled in place: the `n`th attribute of the span before keeps its
/// key's and text value's allocations for this one's `n`th.
struct Attrs<'a> {
    list: &'a mut Vec<KeyValue>,
    n: usize,
}

impl<'a> Attrs<'a> {
    fn new(list: &'a mut Vec<KeyValue>) -> Self {
        Attrs { list, n: 0 }
    }

    fn slot(&mut self, key: &str) -> &mut Option<any_value::Value> {
        if self.n == self.list.len() {
            self.list.push(KeyValue::default());
        }
        let kv = &mut self.list[self.n];
        self.n += 1;
        kv.key.clear();
        kv.key.push_str(key);
        &mut kv.value.get_or_insert_with(AnyValue::default).value
    }

    fn str(&mut self, key: &str, v: &str) {
        match self.slot(key) {
            Some(any_value::Value::StringValue(s)) => {
                s.clear();
                s.push_str(v);
            }
            other => *other = Some(any_value::Value::StringValue(v.to_string())),
        }
    }

    /// Text written by `fmt::Display`, straight into the value's buffer.
    fn display(&mut self, key: &str, v: impl std::fmt::Display) {
        use std::fmt::Write;
        let slot = self.slot(key);
        if !matches!(slot, Some(any_value::Value::StringValue(_))) {
            *slot = Some(any_value::Value::StringValue(String::new()));
        }
        if let Some(any_value::Value::StringValue(s)) = slot {
            s.clear();
            let _ = write!(s, "{v}");
        }
    }

    fn int(&mut self, key: &str, v: i64) {
        *self.slot(key) = Some(any_value::Value::IntValue(v));
    }

    fn bool(&mut self, key: &str, v: bool) {
        *self.slot(key) = Some(any_value::Value::BoolValue(v));
    }
}

impl Drop for Attrs<'_> {
    fn drop(&mut self) {
        self.list.truncate(self.n);
    }
}

fn set_bytes(to: &mut Vec<u8>, from: &[u8]) {
    to.clear();
    to.extend_from_slice(from);
}

fn set_status(span: &mut Span, error: Option<&str>) {
    match error {
        Some(e) => {
            let s = span.status.get_or_insert_with(Status::default);
            s.code = StatusCode::Error as i32;
            s.message.clear();
            s.message.push_str(e);
        }
        None => span.status = None,
    }
}

/// The request's server span (HTTP semantic conventions, plus `portico.*` for what the
/// conventions have no name for).
fn fill_server(span: &mut Span, f: &Finished) {
    // Extension methods are `_OTHER`, as the conventions ask (and bounded).
    let method = method_label(&f.method);
    set_bytes(&mut span.trace_id, &f.trace_id);
    set_bytes(&mut span.span_id, &f.span_id);
    match f.parent {
        Some(p) => set_bytes(&mut span.parent_span_id, &p),
        None => span.parent_span_id.clear(),
    }
    span.flags = span_flags(f.parent.is_some());
    span.name.clear();
    span.name.push_str(method);
    if let Some(r) = &f.route {
        span.name.push(' ');
        span.name.push_str(r);
    }
    span.kind = SpanKind::Server as i32;
    span.start_time_unix_nano = nanos(f.start);
    span.end_time_unix_nano = nanos(f.end);
    {
        let mut a = Attrs::new(&mut span.attributes);
        a.str("http.request.method", method);
        if let Some(p) = &f.path {
            a.str("url.path", p.path());
        }
        if let Some(r) = &f.route {
            a.str("http.route", r);
        }
        if f.status != 0 {
            a.int("http.response.status_code", i64::from(f.status));
        }
        a.display("client.address", f.client_ip);
        if let Some(host) = f.host.as_ref().and_then(|h| h.to_str().ok()) {
            let (name, port) = address(host);
            a.str("server.address", name);
            if let Some(p) = port {
                a.int("server.port", i64::from(p));
            }
        }
        if let Some(ua) = f.user_agent.as_ref().and_then(|u| u.to_str().ok()) {
            a.str("user_agent.original", ua);
        }
        a.str("network.protocol.version", network_version(f.version));
        if f.bytes_in > 0 {
            a.int("http.request.body.size", f.bytes_in as i64);
        }
        if f.bytes_out > 0 {
            a.int("http.response.body.size", f.bytes_out as i64);
        }
        if let Ok(id) = f.request_id.to_str()
            && f.path.is_some()
            && !id.is_empty()
        {
            a.str("portico.request_id", id);
        }
        a.str("portico.listener", &f.listener);
        if let Some(u) = &f.upstream {
            a.str("portico.upstream.target", u);
        }
        if let Some(c) = &f.consumer {
            a.str("portico.consumer", c);
        }
        if let Some(e) = f.error {
            // The access log's reason code: what refused or failed the request.
            a.str("error.type", e);
        }
        if !f.complete {
            a.bool("portico.complete", false);
        }
    }
    let failed = f.status >= 500 || f.status == 0;
    set_status(span, failed.then(|| f.error.unwrap_or("server error")));
    // A debug request's phases, as events (rare: built afresh).
    span.events.clear();
    for m in &f.events {
        let mut attributes = Vec::with_capacity(2);
        let mut a = Attrs::new(&mut attributes);
        *a.slot("portico.duration_ms") = Some(any_value::Value::DoubleValue(
            m.dur.as_micros() as f64 / 1000.0,
        ));
        if let Some(d) = &m.desc {
            a.str("portico.detail", d);
        }
        drop(a);
        span.events.push(Event {
            time_unix_nano: nanos(f.start + m.at),
            name: m.name.to_string(),
            attributes,
            dropped_attributes_count: 0,
        });
    }
}

/// A span recorded inside the request's server span.
fn fill_child(span: &mut Span, f: &Finished, c: &Child) {
    set_bytes(&mut span.trace_id, &f.trace_id);
    set_bytes(&mut span.span_id, &c.span_id);
    set_bytes(&mut span.parent_span_id, &f.span_id);
    span.flags = span_flags(false);
    span.start_time_unix_nano = nanos(c.start);
    span.end_time_unix_nano = nanos(c.end);
    span.events.clear();
    let mut a = Attrs::new(&mut span.attributes);
    let (name, kind, error): (&str, SpanKind, Option<&str>) = match &c.kind {
        ChildKind::Attempt {
            upstream,
            target,
            authority,
            method,
            attempt,
            status,
            error,
        } => {
            let method = method_label(method);
            a.str("http.request.method", method);
            // Already parsed: its host without an IPv6 literal's brackets.
            let host = authority.host();
            let host = host
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .unwrap_or(host);
            a.str("server.address", host);
            if let Some(p) = authority.port_u16() {
                a.int("server.port", i64::from(p));
            }
            a.str("portico.upstream", upstream);
            a.str("portico.upstream.target", target);
            if *attempt > 1 {
                a.int("http.request.resend_count", i64::from(attempt - 1));
            }
            if let Some(s) = status {
                a.int("http.response.status_code", i64::from(*s));
            }
            if let Some(e) = error {
                a.str("error.type", e);
            }
            let failed = match (status, error) {
                (_, Some(e)) => Some(*e),
                (Some(s), None) if *s >= 500 => Some("upstream 5xx"),
                _ => None,
            };
            (method, SpanKind::Client, failed)
        }
        ChildKind::Policy { policy, refused } => {
            a.str("portico.policy", policy);
            if let Some(r) = refused {
                a.str("error.type", r);
            }
            let name = match *policy {
                "jwt" => "policy jwt",
                "introspection" => "policy introspection",
                _ => "policy rate_limit",
            };
            (name, SpanKind::Internal, None)
        }
        ChildKind::Translate { kind, failed } => {
            a.str("portico.translation", kind);
            if let Some(code) = failed {
                a.str("error.type", code);
            }
            let name = if *kind == "soap" {
                "translate soap"
            } else {
                "translate grpc_transcode"
            };
            (name, SpanKind::Internal, *failed)
        }
        ChildKind::Cache { result } => {
            a.str("portico.cache.result", result);
            ("cache lookup", SpanKind::Internal, None)
        }
    };
    drop(a);
    span.name.clear();
    span.name.push_str(name);
    span.kind = kind as i32;
    set_status(span, error);
}

/// The method as the conventions name it: the standard ones, else `_OTHER`.
fn method_label(m: &Method) -> &'static str {
    match crate::observe::metrics::method_label(m) {
        "OTHER" => "_OTHER",
        known => known,
    }
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
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;

    fn finished(route: Option<&str>, children: Vec<Child>) -> Finished {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Finished {
            trace_id: [7; 16],
            span_id: [8; 8],
            parent: Some([9; 8]),
            start: t,
            end: t + Duration::from_millis(3),
            children,
            user_agent: Some(HeaderValue::from_static("curl/8")),
            method: Method::GET,
            route: route.map(Arc::from),
            status: 502,
            client_ip: "::1".parse().unwrap(),
            host: Some(HeaderValue::from_static("api.example:8443")),
            path: Some("/a/b?q=1".parse().unwrap()),
            version: http::Version::HTTP_11,
            request_id: HeaderValue::from_static("rid-1"),
            listener: Arc::from("main"),
            upstream: Some(Arc::from("10.0.0.1:80")),
            consumer: None,
            error: Some("upstream_error"),
            complete: true,
            bytes_in: 0,
            bytes_out: 12,
            events: Vec::new(),
        }
    }

    /// The batch framed by hand is the request prost would encode from the same spans, and
    /// reusing the span messages leaves nothing of one span in the next.
    #[test]
    fn a_batch_is_the_request_prost_encodes() {
        let export = TraceExport {
            protocol: OtlpProtocol::HttpProtobuf,
            endpoint: "http://127.0.0.1:1/v1/traces".into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            tls: None,
            service_name: "gw".into(),
            resource: vec![("deployment.environment".into(), "test".into())],
            max_queue: 8,
            max_batch: 8,
            interval: Duration::from_secs(1),
        };
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let attempt = |n: u32, error: Option<&'static str>| Child {
            span_id: [n as u8; 8],
            kind: ChildKind::Attempt {
                upstream: Arc::from("u"),
                target: Arc::from("10.0.0.1:80"),
                authority: "10.0.0.1:80".parse().unwrap(),
                method: Method::GET,
                attempt: n,
                status: if error.is_some() { None } else { Some(502) },
                error,
            },
            start: t,
            end: t + Duration::from_millis(1),
        };
        let cache = Child {
            span_id: [5; 8],
            kind: ChildKind::Cache { result: "miss" },
            start: t,
            end: t,
        };
        let mut batch = Batch::new(&export);
        let requests = [
            finished(
                Some("orders"),
                vec![attempt(1, Some("upstream_timeout")), attempt(2, None)],
            ),
            finished(None, vec![cache]),
        ];
        // What prost makes of the same spans, built one by one without reuse.
        let mut want = Vec::new();
        for f in &requests {
            let mut s = Span::default();
            fill_server(&mut s, f);
            want.push(s);
            for c in &f.children {
                let mut s = Span::default();
                fill_child(&mut s, f, c);
                want.push(s);
            }
        }
        for f in requests {
            batch.add(f);
        }
        assert_eq!(batch.spans, 5);
        let body = batch.take();
        assert_eq!(batch.spans, 0);
        let got = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource_of(&export)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "portico".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: want,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(got, expected);
        assert_eq!(body, expected.encode_to_vec());
        // Spot checks of what the spans say.
        let spans = &got.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].name, "GET orders");
        assert_eq!(spans[0].kind, SpanKind::Server as i32);
        assert_eq!(spans[0].parent_span_id, vec![9; 8]);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(spans[1].kind, SpanKind::Client as i32);
        assert_eq!(
            spans[1].status.as_ref().unwrap().message,
            "upstream_timeout"
        );
        let resend = |s: &Span| {
            s.attributes
                .iter()
                .any(|a| a.key == "http.request.resend_count")
        };
        assert!(!resend(&spans[1]) && resend(&spans[2]));
        // The second request has no route: its name and attributes hold nothing of the first's.
        assert_eq!(spans[3].name, "GET");
        assert!(spans[3].attributes.iter().all(|a| a.key != "http.route"));
        assert_eq!(spans[4].name, "cache lookup");
        assert_eq!(spans[4].attributes.len(), 1);
        assert!(spans[4].status.is_none());
        // An empty batch after a flush starts afresh.
        assert_eq!(batch.encoded.len(), 0);
    }

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
