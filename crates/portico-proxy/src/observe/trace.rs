//! A request's trace: its ids, read from the client's trace context (W3C `traceparent`, B3)
//! or new; whether it is recorded; and the spans it records on the way (one per upstream
//! attempt). Nothing here touches the OpenTelemetry crates: a request only fills these plain
//! values, and `otel.rs` turns the recorded ones into spans on the exporter's thread.
//!
//! The trace-context formats are parsed here rather than through the SDK's propagators: those
//! go through a `Context` (a heap map) per request, and B3 is not in the crates we take. The
//! parser is checked against the SDK's `TraceContextPropagator` in the tests below.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use portico_config::{Propagators, Tracing};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub static B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");

/// A trace context read from a request: the caller's trace, its span (our parent) and its
/// sampling decision, when it made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: [u8; 16],
    pub parent: [u8; 8],
    pub sampled: Option<bool>,
}

/// A span recorded inside the request's server span.
#[derive(Debug)]
pub struct Child {
    pub span_id: [u8; 8],
    pub kind: ChildKind,
    pub start: SystemTime,
    pub end: SystemTime,
}

/// What a child span stands for, with what it learned.
#[derive(Debug)]
pub enum ChildKind {
    /// One try at an upstream: the upstream's name, the target tried (as written, and its
    /// address), the attempt's number (1 for the first), and the status it answered or the
    /// error it met.
    Attempt {
        upstream: std::sync::Arc<str>,
        target: std::sync::Arc<str>,
        authority: http::uri::Authority,
        method: http::Method,
        attempt: u32,
        status: Option<u16>,
        error: Option<&'static str>,
    },
    /// A policy that may wait on another service: `jwt` (its key set), `introspection` (the
    /// authorization server), `rate_limit` with `store: redis`. `refused` is the reason code
    /// when it refused the request.
    Policy {
        policy: &'static str,
        refused: Option<&'static str>,
    },
    /// A `cache` policy's look-up: `hit`, `stale` (to revalidate) or `miss`.
    Cache { result: &'static str },
    /// A translation: `grpc_transcode` or `soap`, and the problem code when it failed.
    Translate {
        kind: &'static str,
        failed: Option<&'static str>,
    },
}

/// One request's trace.
#[derive(Debug)]
pub struct Trace {
    pub trace_id: [u8; 16],
    /// The gateway's server span.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a trace context.
    pub parent: Option<[u8; 8]>,
    /// The caller's decision, when it made one.
    pub parent_sampled: Option<bool>,
    /// Decided when the route is known (its ratio may differ), else at the first upstream call
    /// or at the end.
    pub sampled: Option<bool>,
    pub user_agent: Option<HeaderValue>,
    /// Whether the access record holds the request's host, path and id (copied only for
    /// requests that are recorded or logged).
    pub described: bool,
    /// Recorded only once the trace is sampled (or always, with `keep_errors`).
    pub children: Vec<Child>,
    /// Whether the client sent a `traceparent` header (valid or not): it is taken out of
    /// the request before ours is written, and only then (a look-up saved otherwise).
    pub client_traceparent: bool,
    /// The section's settings this request started with.
    pub propagators: Propagators,
    pub keep_errors: bool,
    ratio: f64,
    parent_based: bool,
}

impl Trace {
    /// The trace a request belongs to: the caller's when it sent a context in one of the
    /// formats read, else a new one.
    /// Not boxed: it lives in the access record, which is.
    pub fn start(headers: &HeaderMap, cfg: &Tracing) -> Trace {
        let (incoming, client_traceparent) = extract_noting(headers, &cfg.propagators);
        Trace {
            trace_id: incoming.map_or_else(new_trace_id, |i| i.trace_id),
            span_id: new_span_id(),
            parent: incoming.map(|i| i.parent),
            parent_sampled: incoming.and_then(|i| i.sampled),
            sampled: None,
            user_agent: None,
            described: false,
            children: Vec::new(),
            client_traceparent,
            propagators: cfg.propagators,
            keep_errors: cfg.keep_errors,
            ratio: cfg.sample_ratio,
            parent_based: cfg.parent_based,
        }
    }

    /// A copy for a call made apart from the request (a composite route's backend calls run
    /// as tasks of their own): the same trace and decision, no children yet. Its children are
    /// given back with [`Trace::adopt`].
    pub fn fork(&mut self) -> Box<Trace> {
        self.decide(None);
        Box::new(Trace {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            parent_sampled: self.parent_sampled,
            sampled: self.sampled,
            user_agent: None,
            described: false,
            children: Vec::new(),
            client_traceparent: self.client_traceparent,
            propagators: self.propagators,
            keep_errors: self.keep_errors,
            ratio: self.ratio,
            parent_based: self.parent_based,
        })
    }

    /// Takes back the spans a fork recorded.
    pub fn adopt(&mut self, fork: &mut Trace) {
        self.children.append(&mut fork.children);
    }

    /// Records a child span that began at `start` and ends now.
    pub fn child(&mut self, kind: ChildKind, start: SystemTime) {
        self.children.push(Child {
            span_id: new_span_id(),
            kind,
            start,
            end: SystemTime::now(),
        });
    }

    /// Whether spans inside the request are kept: when it is sampled, or may be kept at the
    /// end for its error.
    pub fn records_children(&mut self) -> bool {
        self.decide(None) || self.keep_errors
    }

    /// Whether this trace is recorded, deciding now if not yet: the caller's decision when
    /// `parent_based`, else the ratio (the route's over the section's) applied to the trace
    /// id, as OpenTelemetry's `TraceIdRatioBased` does so that every service sampling at the
    /// same ratio keeps the same traces.
    pub fn decide(&mut self, route_ratio: Option<f64>) -> bool {
        if let Some(s) = self.sampled {
            return s;
        }
        let s = match self.parent_sampled {
            Some(s) if self.parent_based => s,
            _ => ratio_keeps(&self.trace_id, route_ratio.unwrap_or(self.ratio)),
        };
        self.sampled = Some(s);
        s
    }
}

/// When a child span that starts now begins, if the request records child spans (tracing on,
/// and the trace sampled or `keep_errors`); `None` costs nothing more.
pub fn child_start(trace: Option<&mut Trace>) -> Option<SystemTime> {
    trace
        .is_some_and(|t| t.records_children())
        .then(SystemTime::now)
}

/// `TraceIdRatioBased`: the trace id's low 63 bits below `ratio` × 2⁶³.
fn ratio_keeps(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    x < (ratio * (1u64 << 63) as f64) as u64
}

pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

pub fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// The first trace context present, in the order W3C, B3, B3 multi, among the formats read.
/// A malformed one counts as absent (W3C Trace Context §3.2.2: start a new trace).
pub fn extract(headers: &HeaderMap, p: &Propagators) -> Option<Incoming> {
    extract_noting(headers, p).0
}

/// [`extract`], and whether a `traceparent` header was there (read only when the W3C format
/// is).
fn extract_noting(headers: &HeaderMap, p: &Propagators) -> (Option<Incoming>, bool) {
    let mut sent = false;
    if p.tracecontext
        && let Some(v) = headers.get(&TRACEPARENT)
    {
        sent = true;
        if let Some(i) = parse_traceparent(v.as_bytes()) {
            return (Some(i), true);
        }
    }
    (extract_b3(headers, p), sent)
}

fn extract_b3(headers: &HeaderMap, p: &Propagators) -> Option<Incoming> {
    if p.b3
        && let Some(i) = headers.get(&B3).and_then(|v| parse_b3(v.as_bytes()))
    {
        return Some(i);
    }
    if p.b3multi {
        return parse_b3_multi(headers);
    }
    None
}

/// `traceparent` (W3C Trace Context §3.2): `version-traceid-parentid-flags`, lower-case hex.
/// Version `00` is exactly 55 characters; a later version may append fields after a `-`.
pub fn parse_traceparent(v: &[u8]) -> Option<Incoming> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) {
        return None;
    }
    let trace_id = hex::<16>(&v[3..35])?;
    let parent = hex::<8>(&v[36..52])?;
    let flags = hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some(Incoming {
        trace_id,
        parent,
        sampled: Some(flags & 1 == 1),
    })
}

/// Zipkin's single `b3` header: `traceid-spanid[-sampling[-parentspanid]]` (a 64- or 128-bit
/// trace id), or only a sampling decision (`0`, `1`, `d`), which carries no ids to continue.
pub fn parse_b3(v: &[u8]) -> Option<Incoming> {
    let mut parts = v.split(|&b| b == b'-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = match parts.next() {
        None => None,
        Some(s) => Some(b3_sampled(s)?),
    };
    if let Some(parent) = parts.next() {
        hex::<8>(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Incoming {
        trace_id: b3_trace_id(trace)?,
        parent: nonzero_span(span)?,
        sampled,
    })
}

/// Zipkin's `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` and `X-B3-Flags` (`1`: debug, which
/// means sampled).
pub fn parse_b3_multi(h: &HeaderMap) -> Option<Incoming> {
    let trace_id = b3_trace_id(h.get(&B3_TRACE_ID)?.as_bytes())?;
    let parent = nonzero_span(h.get(&B3_SPAN_ID)?.as_bytes())?;
    let sampled = if h.get(&B3_FLAGS).is_some_and(|f| f.as_bytes() == b"1") {
        Some(true)
    } else {
        match h.get(&B3_SAMPLED) {
            Some(s) => Some(match s.as_bytes() {
                b"1" | b"true" => true,
                b"0" | b"false" => false,
                _ => return None,
            }),
            None => None,
        }
    };
    Some(Incoming {
        trace_id,
        parent,
        sampled,
    })
}

fn b3_sampled(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"d" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, widened with zeros on the left).
fn b3_trace_id(t: &[u8]) -> Option<[u8; 16]> {
    let id = match t.len() {
        32 => hex::<16>(t)?,
        16 => {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&hex::<8>(t)?);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn nonzero_span(s: &[u8]) -> Option<[u8; 8]> {
    hex::<8>(s).filter(|id| *id != [0; 8])
}

/// Exactly `2 × N` lower-case hex digits.
fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

/// The two lower-case hex digits of every byte: one load per byte instead of two shifts,
/// two masks and two loads (ids are written into every upstream request when tracing is on).
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// The W3C trace context of a call made inside `span`: what a `traceparent` (version 00)
/// says, kept as bytes and written as hex only where it goes out (straight into an HTTP/1.1
/// request head, or into a header value for the writers that need one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: [u8; 16],
    pub span: [u8; 8],
    pub sampled: bool,
}

/// Bytes of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-01`.
pub const TRACEPARENT_LEN: usize = 55;

/// The `traceparent` for a call made inside `span`.
pub fn traceparent(trace_id: &[u8; 16], span: &[u8; 8], sampled: bool) -> Traceparent {
    Traceparent {
        trace_id: *trace_id,
        span: *span,
        sampled,
    }
}

impl Traceparent {
    /// The header's text into `v`.
    pub fn write(&self, v: &mut [u8; TRACEPARENT_LEN]) {
        v[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id, &mut v[3..35]);
        v[35] = b'-';
        write_hex(&self.span, &mut v[36..52]);
        v[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
    }

    /// The header's text at the end of `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.resize(at + TRACEPARENT_LEN, 0);
        let v: &mut [u8; TRACEPARENT_LEN] =
            (&mut out[at..]).try_into().expect("resized to the length");
        self.write(v);
    }
}

/// The header value of a [`Traceparent`].
pub fn traceparent_value(t: &Traceparent) -> HeaderValue {
    let mut v = [0u8; TRACEPARENT_LEN];
    t.write(&mut v);
    HeaderValue::from_bytes(&v).expect("hex digits and dashes")
}

/// Writes the trace context for a call made inside `span`, in every format written,
/// replacing what the client sent in those formats.
pub fn inject(
    headers: &mut HeaderMap,
    p: &Propagators,
    trace_id: &[u8; 16],
    span: &[u8; 8],
    sampled: bool,
) {
    if p.tracecontext {
        headers.insert(
            TRACEPARENT.clone(),
            traceparent_value(&traceparent(trace_id, span, sampled)),
        );
    }
    inject_b3(headers, p, trace_id, span, sampled);
}

/// The B3 formats of [`inject`] (the W3C one is written by the upstream connection itself on
/// the request path: see `upstream::call`).
#[inline]
pub fn inject_b3(
    headers: &mut HeaderMap,
    p: &Propagators,
    trace_id: &[u8; 16],
    span: &[u8; 8],
    sampled: bool,
) {
    // Checked where it is called: B3 is off by default, and the call was most of its cost.
    if p.b3 || p.b3multi {
        write_b3(headers, p, trace_id, span, sampled);
    }
}

fn write_b3(
    headers: &mut HeaderMap,
    p: &Propagators,
    trace_id: &[u8; 16],
    span: &[u8; 8],
    sampled: bool,
) {
    let mut trace = [0u8; 32];
    write_hex(trace_id, &mut trace);
    let mut span_hex = [0u8; 16];
    write_hex(span, &mut span_hex);
    let value = |b: &[u8]| HeaderValue::from_bytes(b).expect("hex digits and dashes");
    if p.b3 {
        let mut v = [0u8; 51];
        v[..32].copy_from_slice(&trace);
        v[32] = b'-';
        v[33..49].copy_from_slice(&span_hex);
        v[49..].copy_from_slice(if sampled { b"-1" } else { b"-0" });
        headers.insert(B3.clone(), value(&v));
    }
    if p.b3multi {
        headers.insert(B3_TRACE_ID.clone(), value(&trace));
        headers.insert(B3_SPAN_ID.clone(), value(&span_hex));
        headers.insert(
            B3_SAMPLED.clone(),
            HeaderValue::from_static(if sampled { "1" } else { "0" }),
        );
        // Ours is the parent now; the caller's parent and debug flag are not passed on.
        headers.remove(&B3_PARENT);
        headers.remove(&B3_FLAGS);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;

    /// What the SDK's W3C propagator reads from a `traceparent`.
    fn sdk(v: &str) -> Option<Incoming> {
        let mut carrier = std::collections::HashMap::new();
        carrier.insert("traceparent".to_string(), v.to_string());
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| Incoming {
            trace_id: sc.trace_id().to_bytes(),
            parent: sc.span_id().to_bytes(),
            sampled: Some(sc.is_sampled()),
        })
    }

    #[test]
    fn traceparent_reads_as_the_sdk_reads_it() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for v in [
            good,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            // A later version with more fields, read as version 00.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever",
            // Version 00 with more fields, version ff, upper case, zero ids, bad lengths.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "",
        ] {
            assert_eq!(parse_traceparent(v.as_bytes()), sdk(v), "{v}");
        }
        // Where the SDK is laxer than the specification, we keep to the specification
        // (W3C Trace Context §3.2.2: fixed widths): a trace id of 31 digits, one flag digit.
        for lax in [
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(sdk(lax).is_some(), "{lax}");
            assert_eq!(parse_traceparent(lax.as_bytes()), None, "{lax}");
        }
        assert_eq!(
            parse_traceparent(good.as_bytes()).unwrap().sampled,
            Some(true)
        );
    }

    #[test]
    fn b3_single_and_multi() {
        let i = parse_b3(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .unwrap();
        assert_eq!(i.sampled, Some(true));
        assert_eq!(i.parent, 0xe457b5a2e4d86bd1u64.to_be_bytes());
        let short = parse_b3(b"a3ce929d0e0e4736-00f067aa0ba902b7-d").unwrap();
        assert_eq!(&short.trace_id[..8], &[0; 8]);
        assert_eq!(short.sampled, Some(true), "debug means sampled");
        assert_eq!(
            parse_b3(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")
                .unwrap()
                .sampled,
            None
        );
        for bad in [
            &b"0"[..],
            b"1",
            b"80f198ee56343ba864fe8b2a57d3eff7",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
            b"80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-9",
        ] {
            assert_eq!(parse_b3(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let mut h = HeaderMap::new();
        h.insert(
            &B3_TRACE_ID,
            HeaderValue::from_static("463ac35c9f6413ad48485a3953bb6124"),
        );
        h.insert(&B3_SPAN_ID, HeaderValue::from_static("a2fb4a1d1a96d312"));
        h.insert(&B3_SAMPLED, HeaderValue::from_static("0"));
        assert_eq!(parse_b3_multi(&h).unwrap().sampled, Some(false));
        h.insert(&B3_FLAGS, HeaderValue::from_static("1"));
        assert_eq!(parse_b3_multi(&h).unwrap().sampled, Some(true));
        h.insert(&B3_SAMPLED, HeaderValue::from_static("maybe"));
        h.remove(&B3_FLAGS);
        assert_eq!(parse_b3_multi(&h), None);
    }

    #[test]
    fn formats_are_read_in_order_and_only_those_configured() {
        let mut h = HeaderMap::new();
        h.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        h.insert(
            &B3,
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        );
        let all = Propagators {
            tracecontext: true,
            b3: true,
            b3multi: true,
        };
        assert_eq!(extract(&h, &all).unwrap().trace_id[0], 0x4b);
        let b3 = Propagators {
            b3: true,
            ..Default::default()
        };
        assert_eq!(extract(&h, &b3).unwrap().trace_id[0], 0x80);
        assert_eq!(extract(&h, &Propagators::default()), None);
        // A malformed W3C context falls through to the next format.
        h.insert(&TRACEPARENT, HeaderValue::from_static("garbage"));
        assert_eq!(extract(&h, &all).unwrap().trace_id[0], 0x80);
    }

    #[test]
    fn injected_contexts_read_back() {
        let all = Propagators {
            tracecontext: true,
            b3: true,
            b3multi: true,
        };
        let (t, s) = (new_trace_id(), new_span_id());
        for sampled in [true, false] {
            let mut h = HeaderMap::new();
            h.insert(&B3_PARENT, HeaderValue::from_static("0000000000000001"));
            inject(&mut h, &all, &t, &s, sampled);
            let want = Incoming {
                trace_id: t,
                parent: s,
                sampled: Some(sampled),
            };
            assert_eq!(parse_traceparent(h[&TRACEPARENT].as_bytes()), Some(want));
            assert_eq!(
                sdk(h[&TRACEPARENT].to_str().unwrap()),
                Some(want),
                "the SDK reads what we write"
            );
            assert_eq!(parse_b3(h[&B3].as_bytes()), Some(want));
            assert_eq!(parse_b3_multi(&h), Some(want));
            assert!(!h.contains_key(&B3_PARENT));
        }
    }

    #[test]
    fn the_ratio_keeps_its_share_and_follows_the_trace_id() {
        let cfg = |ratio, parent_based| Tracing {
            export: test_export(),
            sample_ratio: ratio,
            parent_based,
            keep_errors: false,
            propagators: Propagators::default(),
            route_ratios: false,
        };
        let mut kept = 0;
        for _ in 0..10_000 {
            let id = new_trace_id();
            if ratio_keeps(&id, 0.25) {
                kept += 1;
                assert!(
                    ratio_keeps(&id, 0.5),
                    "a trace kept at 25 % is kept at 50 %"
                );
            }
        }
        // 10,000 draws at 25 %: 2,500 ± 5 standard deviations (43 each).
        assert!((2_285..=2_715).contains(&kept), "{kept}");
        assert!(!ratio_keeps(&new_trace_id(), 0.0));
        let mut t = Trace::start(&HeaderMap::new(), &cfg(0.0, true));
        t.parent_sampled = Some(true);
        assert!(t.decide(None), "the caller's decision");
        let mut t = Trace::start(&HeaderMap::new(), &cfg(0.0, false));
        t.parent_sampled = Some(true);
        assert!(!t.decide(None), "the ratio, not the caller");
        t.sampled = None;
        assert!(t.decide(Some(1.0)), "the route's ratio");
        assert!(t.decide(Some(0.0)), "decided once");
    }

    pub(crate) fn test_tracing() -> Tracing {
        Tracing {
            export: test_export(),
            sample_ratio: 1.0,
            parent_based: true,
            keep_errors: false,
            propagators: Propagators::default(),
            route_ratios: false,
        }
    }

    pub(crate) fn test_export() -> portico_config::TraceExport {
        portico_config::TraceExport {
            protocol: portico_config::OtlpProtocol::Grpc,
            endpoint: "http://127.0.0.1:4317".into(),
            headers: Vec::new(),
            timeout: std::time::Duration::from_secs(1),
            tls: None,
            service_name: "portico".into(),
            resource: Vec::new(),
            max_queue: 16,
            max_batch: 8,
            interval: std::time::Duration::from_millis(50),
        }
    }
}
