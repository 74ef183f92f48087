//! A request's phase record: when each phase (routing, the policy chain, each upstream
//! attempt, the response steps) started and how long it took. Kept only for requests that
//! asked with the debug secret (`server.request_debug`) or whose route sends `Server-Timing`
//! to everyone (`tracing.server_timing`); other requests carry `None` and pay nothing.
//!
//! It becomes a `Server-Timing` header (W3C Server Timing) on the answer and, for a debug
//! request, a log line and events on the request's span.

use std::fmt::Write;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// One phase: its name (a `Server-Timing` metric name), when it began after the request
/// arrived, how long it took, and a short description.
#[derive(Debug, Clone)]
pub struct Mark {
    pub name: &'static str,
    pub at: Duration,
    pub dur: Duration,
    pub desc: Option<String>,
}

#[derive(Debug)]
pub struct Phases {
    pub start: Instant,
    /// Asked for with the secret: also logged and put on the span.
    pub debug: bool,
    pub marks: Vec<Mark>,
}

impl Phases {
    pub fn new(start: Instant, debug: bool) -> Box<Phases> {
        Box::new(Phases {
            start,
            debug,
            marks: Vec::with_capacity(6),
        })
    }

    /// Records a phase that began at `began` and ends now.
    pub fn mark(&mut self, name: &'static str, began: Instant, desc: Option<String>) {
        let now = Instant::now();
        self.marks.push(Mark {
            name,
            at: began.saturating_duration_since(self.start),
            dur: now.saturating_duration_since(began),
            desc,
        });
    }

    /// `name;dur=1.234;desc="…", …` with `total` last: durations in milliseconds to the
    /// microsecond. Descriptions (route, upstream, target, outcome) only for a debug request:
    /// a route's `server_timing` is for every client and shows durations alone. They are
    /// quoted strings with `"` and `\` escaped and anything outside printable ASCII replaced,
    /// so the value is always a valid header.
    pub fn server_timing(&self, total: Duration) -> HeaderValue {
        let mut s = String::with_capacity(32 * (self.marks.len() + 1));
        for m in &self.marks {
            let desc = m.desc.as_deref().filter(|_| self.debug);
            push_metric(&mut s, m.name, m.dur, desc);
            s.push_str(", ");
        }
        push_metric(&mut s, "total", total, None);
        HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static("total"))
    }

    /// The record as JSON, for the log line.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.marks
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "phase": m.name,
                        "start_ms": millis(m.at),
                        "duration_ms": millis(m.dur),
                        "detail": m.desc,
                    })
                })
                .collect(),
        )
    }
}

fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn push_metric(s: &mut String, name: &str, dur: Duration, desc: Option<&str>) {
    let _ = write!(s, "{name};dur={}", millis(dur));
    if let Some(d) = desc {
        s.push_str(";desc=\"");
        for c in d.chars() {
            match c {
                '"' | '\\' => {
                    s.push('\\');
                    s.push(c);
                }
                ' '..='~' => s.push(c),
                _ => s.push('?'),
            }
        }
        s.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_lists_the_phases_then_the_total_and_escapes_descriptions() {
        let start = Instant::now();
        let mut p = Phases::new(start, true);
        p.marks.push(Mark {
            name: "route",
            at: Duration::ZERO,
            dur: Duration::from_micros(12),
            desc: Some("orders".into()),
        });
        p.marks.push(Mark {
            name: "upstream",
            at: Duration::from_micros(300),
            dur: Duration::from_micros(1500),
            desc: Some("a \"q\" \\ é\n".into()),
        });
        let v = p.server_timing(Duration::from_micros(2001));
        assert_eq!(
            v.to_str().unwrap(),
            "route;dur=0.012;desc=\"orders\", upstream;dur=1.5;desc=\"a \\\"q\\\" \\\\ ??\", total;dur=2.001"
        );
        let j = p.to_json();
        assert_eq!(j[1]["phase"], "upstream");
        assert_eq!(j[1]["start_ms"], 0.3);
    }
}
