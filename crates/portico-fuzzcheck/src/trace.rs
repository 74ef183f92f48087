//! Trace contexts from a client (W3C `traceparent`, B3 single and multi): read without a
//! panic, and what is read is written back and read again as the same context.

use http::{HeaderMap, HeaderValue};
use portico_proxy::fuzzing::trace::Incoming;
use portico_proxy::fuzzing::trace::{
    B3, B3_SAMPLED, B3_SPAN_ID, B3_TRACE_ID, TRACEPARENT, extract, inject, parse_b3,
    parse_b3_multi, parse_traceparent,
};

/// The input's lines are, in order: `traceparent`, `b3`, `X-B3-TraceId`, `X-B3-SpanId`,
/// `X-B3-Sampled`.
pub fn trace_context(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let mut h = HeaderMap::new();
    for name in [&TRACEPARENT, &B3, &B3_TRACE_ID, &B3_SPAN_ID, &B3_SAMPLED] {
        if let Some(v) = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok()) {
            h.insert(name.clone(), v);
        }
    }
    let all = portico_config::Propagators {
        tracecontext: true,
        b3: true,
        b3multi: true,
    };
    let read = [
        h.get(&TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes())),
        h.get(&B3).and_then(|v| parse_b3(v.as_bytes())),
        parse_b3_multi(&h),
    ];
    let first = extract(&h, &all);
    assert_eq!(
        first,
        read.iter().flatten().next().copied(),
        "the first present wins"
    );
    for i in read.into_iter().flatten() {
        assert_ne!(i.trace_id, [0; 16]);
        assert_ne!(i.parent, [0; 8]);
        // Written as our context (the caller's span standing in for ours), read back.
        let sampled = i.sampled.unwrap_or(false);
        let mut out = HeaderMap::new();
        inject(&mut out, &all, &i.trace_id, &i.parent, sampled);
        let want = Incoming {
            sampled: Some(sampled),
            ..i
        };
        assert_eq!(parse_traceparent(out[&TRACEPARENT].as_bytes()), Some(want));
        assert_eq!(parse_b3(out[&B3].as_bytes()), Some(want));
        assert_eq!(parse_b3_multi(&out), Some(want));
    }
}
