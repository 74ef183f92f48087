//! The access log: one JSON line per request, written by a dedicated thread so the request path
//! never waits on a disk or a pipe. The channel is bounded; when it is full, lines are dropped
//! and counted (`portico_access_log_dropped_total`) rather than slowing clients down. The
//! writer drains the channel every 20 ms and writes each batch with as few syscalls as its
//! buffer allows; a request only enqueues, it never wakes the writer.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri};
use portico_config::{AccessLog, Redact};

/// What is known about a finished request. Cheap to build: the values are reference-counted
/// copies of what the request already holds; formatting happens on the writer thread.
pub struct Record {
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub client_ip: IpAddr,
    pub listener: Arc<str>,
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub uri: Uri,
    pub version: http::Version,
    pub route: Option<Arc<str>>,
    /// Index into the runtime's routes, for metrics.
    pub route_index: Option<usize>,
    pub upstream: Option<Arc<str>>,
    /// The authenticated consumer's name.
    pub consumer: Option<Arc<str>>,
    pub status: u16,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: Option<&'static str>,
    pub complete: bool,
    /// The request's trace, when tracing is on (its ids go in the line).
    pub trace: Option<crate::observe::trace::Trace>,
    /// The request's phase record, when it asked for one (debug secret, `server_timing`).
    pub phases: Option<Box<crate::observe::phases::Phases>>,
}

#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Record>,
    pub target: AccessLog,
    /// What the lines never show (applied by the writer, off the request path).
    pub redact: Redact,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({:?})", self.target)
    }
}

impl Sink {
    /// Starts the writer for a target; `Ok(None)` for `off`.
    pub fn start(target: &AccessLog, redact: &Redact) -> std::io::Result<Option<Sink>> {
        let (out, buffer): (Box<dyn Write + Send>, usize) = match target {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout { buffer } => (Box::new(std::io::stdout()), *buffer),
            AccessLog::File { path, buffer } => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                (Box::new(f), *buffer)
            }
        };
        let (tx, rx) = sync_channel(buffer);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn({
                let redact = redact.clone();
                move || writer(rx, out, redact)
            })?;
        Ok(Some(Sink {
            tx,
            target: target.clone(),
            redact: redact.clone(),
        }))
    }

    pub fn send(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("portico_access_log_dropped_total").increment(1);
            }
        }
    }
}

/// How often the writer wakes to drain the queue. The request path never wakes the writer:
/// a wake-up per line would cost a context switch per request on a busy core.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

fn writer(rx: Receiver<Record>, out: Box<dyn Write + Send>, redact: Redact) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    let mut line = Vec::with_capacity(512);
    let mut reuse = Reuse {
        redact,
        ..Reuse::default()
    };
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(r) => {
                    line.clear();
                    format_record(&r, &mut line, &mut reuse);
                    if out.write_all(&line).is_err() {
                        metrics::counter!("portico_access_log_dropped_total").increment(1);
                    }
                    wrote = true;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
        #[allow(clippy::disallowed_methods)] // the writer's own thread, not a tokio worker
        std::thread::sleep(FLUSH_EVERY);
    }
}

/// What the writer thread keeps from one line to the next: text that repeats (the time up to
/// the second, the client address) is formatted once, not per line. Formatting them was a
/// third of a line's cost.
#[derive(Default)]
pub struct Reuse {
    second: Option<(u64, [u8; 19])>,
    ip: Option<(IpAddr, String)>,
    /// The writer's settings: values never written.
    pub redact: Redact,
}

/// Writes one JSON line. The fields are written here rather than through a derived
/// `Serialize`: serde_json's string writer was two thirds of a line's cost (~4k instructions),
/// and nearly every string in a line needs no escaping. A string that does is written by
/// serde_json, so the output is the same (a test compares the two). Durations are written in
/// milliseconds to the microsecond (`1.234`), as integers, not through a float formatter.
pub fn format_record(r: &Record, out: &mut Vec<u8>, reuse: &mut Reuse) {
    let mut time = [0u8; 24];
    let time = rfc3339_cached(r.time, &mut time, &mut reuse.second);
    if reuse.ip.as_ref().is_none_or(|(ip, _)| *ip != r.client_ip) {
        reuse.ip = Some((r.client_ip, r.client_ip.to_string()));
    }
    let client_ip = reuse.ip.as_ref().map_or("", |(_, s)| s.as_str());
    let host = r
        .host
        .as_ref()
        .and_then(crate::base::headers::text)
        .or(r.uri.host())
        .filter(|_| !reuse.redact.host);
    // Credentials in the query are shown as `REDACTED` (their names kept).
    let query = r.uri.query().map(|q| {
        portico_config::query::redacted(q, &reuse.redact.query_params)
            .map_or(std::borrow::Cow::Borrowed(q), std::borrow::Cow::Owned)
    });
    // Room for the whole line up front (keys, time, address, numbers, trace ids: under 464
    // bytes), so the writes below grow the buffer only when a string needs escaping.
    out.reserve(
        464 + r.request_id.len()
            + r.listener.len()
            + host.map_or(0, str::len)
            + r.uri.path_and_query().map_or(0, |p| p.as_str().len())
            + r.route.as_deref().map_or(0, str::len)
            + r.upstream.as_deref().map_or(0, str::len)
            + r.consumer.as_deref().map_or(0, str::len),
    );
    let mut o = Obj { out };
    o.str(b"{\"time\":", Some(time));
    o.str(
        b",\"request_id\":",
        crate::base::headers::text(&r.request_id).or(Some("")),
    );
    o.str(b",\"client_ip\":", Some(client_ip));
    o.str(b",\"listener\":", Some(&r.listener));
    o.str(b",\"method\":", Some(r.method.as_str()));
    o.str(b",\"host\":", host);
    o.str(b",\"path\":", Some(r.uri.path()));
    o.str(b",\"query\":", query.as_deref());
    o.str(b",\"protocol\":", Some(protocol(r.version)));
    o.str(b",\"route\":", r.route.as_deref());
    o.str(b",\"upstream\":", r.upstream.as_deref());
    o.str(b",\"consumer\":", r.consumer.as_deref());
    o.uint(b",\"status\":", u64::from(r.status));
    o.millis(b",\"duration_ms\":", Some(r.duration));
    o.millis(b",\"upstream_duration_ms\":", r.upstream_duration);
    o.uint(b",\"bytes_in\":", r.bytes_in);
    o.uint(b",\"bytes_out\":", r.bytes_out);
    o.str(b",\"error\":", r.error);
    // Trace ids in lower-case hex, as OpenTelemetry shows them, to find the trace of a line.
    match &r.trace {
        Some(t) => {
            let mut hex = [0u8; 32];
            crate::observe::trace::write_hex(&t.trace_id, &mut hex);
            o.out.extend_from_slice(b",\"trace_id\":\"");
            o.out.extend_from_slice(&hex);
            crate::observe::trace::write_hex(&t.span_id, &mut hex[..16]);
            o.out.extend_from_slice(b"\",\"span_id\":\"");
            o.out.extend_from_slice(&hex[..16]);
            o.out.push(b'"');
        }
        None => o
            .out
            .extend_from_slice(b",\"trace_id\":null,\"span_id\":null"),
    }
    o.out.extend_from_slice(if r.complete {
        b",\"complete\":true}\n"
    } else {
        b",\"complete\":false}\n"
    });
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// A JSON object being written, field by field; each field comes with its key already
/// quoted and punctuated (`,"key":`).
struct Obj<'a> {
    out: &'a mut Vec<u8>,
}

// The writers are inlined into `format_record` so that each key is a constant: copying it
// is then a few moves instead of a call to `memcpy` (three calls per field were a third of a
// line's cost).
impl Obj<'_> {
    #[inline(always)]
    fn str(&mut self, key: &[u8], v: Option<&str>) {
        self.out.extend_from_slice(key);
        match v {
            Some(v) if !needs_escape(v.as_bytes()) => {
                self.out.push(b'"');
                self.out.extend_from_slice(v.as_bytes());
                self.out.push(b'"');
            }
            Some(v) => {
                let _ = serde_json::to_writer(&mut *self.out, v);
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    #[inline(always)]
    fn uint(&mut self, key: &[u8], v: u64) {
        self.out.extend_from_slice(key);
        self.out
            .extend_from_slice(crate::base::headers::decimal(v, &mut [0u8; 20]));
    }

    /// Milliseconds to the microsecond, as the shortest decimal (`12.5`, `0.0`): the text a
    /// float formatter gives for the same number of microseconds ÷ 1000.
    #[inline(always)]
    fn millis(&mut self, key: &[u8], v: Option<Duration>) {
        self.out.extend_from_slice(key);
        let Some(d) = v else {
            self.out.extend_from_slice(b"null");
            return;
        };
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.out
            .extend_from_slice(crate::base::headers::decimal(micros / 1000, &mut [0u8; 20]));
        let frac = micros % 1000;
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        // Trailing zeros dropped, but at least one digit after the point.
        let keep = if frac % 100 == 0 {
            1
        } else if frac % 10 == 0 {
            2
        } else {
            3
        };
        self.out.push(b'.');
        self.out.extend_from_slice(&digits[..keep]);
    }
}

/// Whether a JSON string needs escaping: a control character, a quote or a backslash. Eight
/// bytes at a time (the bit tricks below flag a byte below 0x20, or equal to `"` or `\`, in
/// each lane), as nearly every string in a log line needs none.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q & HIGH;
        let b = x ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b & HIGH;
        if below_space | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `rfc3339` into `buf`, with the part up to the second formatted only when the second changes.
fn rfc3339_cached<'b>(
    t: SystemTime,
    buf: &'b mut [u8; 24],
    second: &mut Option<(u64, [u8; 19])>,
) -> &'b str {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let prefix = match second {
        Some((s, p)) if *s == secs => *p,
        _ => {
            let mut p = [0u8; 19];
            p.copy_from_slice(&rfc3339(t).as_bytes()[..19]);
            *second = Some((secs, p));
            p
        }
    };
    buf[..19].copy_from_slice(&prefix);
    let ms = d.subsec_millis();
    buf[19] = b'.';
    buf[20] = b'0' + (ms / 100) as u8;
    buf[21] = b'0' + (ms / 10 % 10) as u8;
    buf[22] = b'0' + (ms % 10) as u8;
    buf[23] = b'Z';
    // Only ASCII digits and separators were written.
    std::str::from_utf8(buf).unwrap_or("")
}

/// `2026-11-26T09:48:17.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = portico_config::dates::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line as a derived `Serialize` writes it: the reference for `format_record`.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        time: &'a str,
        request_id: &'a str,
        client_ip: &'a str,
        listener: &'a str,
        method: &'a str,
        host: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
        protocol: &'a str,
        route: Option<&'a str>,
        upstream: Option<&'a str>,
        consumer: Option<&'a str>,
        status: u16,
        duration_ms: f64,
        upstream_duration_ms: Option<f64>,
        bytes_in: u64,
        bytes_out: u64,
        error: Option<&'a str>,
        trace_id: Option<String>,
        span_id: Option<String>,
        complete: bool,
    }

    #[test]
    fn escape_detection_is_exact() {
        for len in 0..24 {
            let plain = vec![b'a'; len];
            assert!(!needs_escape(&plain), "{len}");
            for pos in 0..len {
                for special in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut v = plain.clone();
                    v[pos] = special;
                    assert!(needs_escape(&v), "{len} {pos} {special}");
                }
                for fine in [0x20u8, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
                    let mut v = plain.clone();
                    v[pos] = fine;
                    assert!(!needs_escape(&v), "{len} {pos} {fine}");
                }
            }
        }
    }

    #[test]
    fn lines_match_serde_json() {
        let base = Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_686_497_123),
            request_id: HeaderValue::from_static("abc123"),
            client_ip: "2001:db8::1".parse().unwrap(),
            listener: Arc::from("main"),
            method: Method::POST,
            host: Some(HeaderValue::from_static("api.example.com")),
            uri: "/orders/7?x=1&y=%22q%22".parse().unwrap(),
            version: http::Version::HTTP_11,
            route: Some(Arc::from("orders")),
            route_index: Some(0),
            upstream: Some(Arc::from("10.0.0.1:8080")),
            consumer: Some(Arc::from("caf\u{e9} \"quoted\" \\ back\tslash\u{1}")),
            status: 201,
            duration: Duration::from_nanos(1_234_567),
            upstream_duration: Some(Duration::from_micros(987)),
            bytes_in: 12,
            bytes_out: u64::MAX,
            error: Some("upstream_timeout"),
            complete: true,
            trace: Some({
                let mut t = crate::observe::trace::Trace::start(
                    &http::HeaderMap::new(),
                    &crate::observe::trace::tests::test_tracing(),
                );
                t.trace_id = 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes();
                t.span_id = 0x00f067aa0ba902b7u64.to_be_bytes();
                t
            }),
            phases: None,
        };
        let mut bare = Record {
            time: base.time,
            request_id: base.request_id.clone(),
            client_ip: "127.0.0.1".parse().unwrap(),
            listener: base.listener.clone(),
            method: Method::GET,
            host: None,
            uri: "http://h.example/p".parse().unwrap(),
            version: http::Version::HTTP_2,
            route: None,
            route_index: None,
            upstream: None,
            consumer: None,
            status: 404,
            duration: Duration::ZERO,
            upstream_duration: None,
            bytes_in: 0,
            bytes_out: 0,
            error: None,
            complete: false,
            trace: None,
            phases: None,
        };
        for r in [&base, &bare] {
            let mut got = Vec::new();
            format_record(r, &mut got, &mut Reuse::default());
            let mut tb = [0u8; 24];
            let line = Line {
                time: rfc3339_cached(r.time, &mut tb, &mut None),
                request_id: r.request_id.to_str().unwrap(),
                client_ip: &r.client_ip.to_string(),
                listener: &r.listener,
                method: r.method.as_str(),
                host: r
                    .host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .or(r.uri.host()),
                path: r.uri.path(),
                query: r.uri.query(),
                protocol: protocol(r.version),
                route: r.route.as_deref(),
                upstream: r.upstream.as_deref(),
                consumer: r.consumer.as_deref(),
                status: r.status,
                duration_ms: r.duration.as_micros() as f64 / 1000.0,
                upstream_duration_ms: r.upstream_duration.map(|d| d.as_micros() as f64 / 1000.0),
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                error: r.error,
                trace_id: r
                    .trace
                    .as_ref()
                    .map(|t| format!("{:032x}", u128::from_be_bytes(t.trace_id))),
                span_id: r
                    .trace
                    .as_ref()
                    .map(|t| format!("{:016x}", u64::from_be_bytes(t.span_id))),
                complete: r.complete,
            };
            let mut want = serde_json::to_vec(&line).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
        bare.host = Some(HeaderValue::from_static("h"));
        let mut got = Vec::new();
        format_record(&bare, &mut got, &mut Reuse::default());
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["host"], "h");
        assert_eq!(v["query"], serde_json::Value::Null);
    }

    /// Milliseconds to the microsecond read the same as the float formatter's shortest text.
    #[test]
    fn millis_match_float_text() {
        let micros = [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            110,
            999,
            1000,
            1001,
            1010,
            1100,
            1500,
            12_340,
            123_456_789,
            86_400_000_000,
            4_000_000_000_000,
        ];
        for us in micros {
            let mut got = Vec::new();
            Obj { out: &mut got }.millis(b"", Some(Duration::from_micros(us)));
            let want = serde_json::to_string(&(us as f64 / 1000.0)).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want, "{us}");
        }
        // Nanoseconds below the microsecond are dropped, not rounded.
        let mut got = Vec::new();
        Obj { out: &mut got }.millis(b"", Some(Duration::from_nanos(1_999_999)));
        assert_eq!(got, b"1.999");
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_686_497_123);
        assert_eq!(rfc3339(t), "2026-11-26T09:48:17.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn cached_time_format_matches() {
        let mut second = None;
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_686_497_000);
        for ms in [0, 7, 45, 123, 999, 1000, 1001, 61_250, 86_400_005] {
            let t = base + Duration::from_millis(ms);
            let mut buf = [0u8; 24];
            assert_eq!(rfc3339_cached(t, &mut buf, &mut second), rfc3339(t), "{ms}");
        }
    }
}
