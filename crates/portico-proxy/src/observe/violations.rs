//! The last upstream answers that broke their operation's contract (`check_responses` of
//! `apis`), kept in the process for the admin API (`GET /contract/violations`), `POST
//! /explain` and the console, so drift can be looked at where it happens without a log
//! search. Only a violation takes the lock: an answer that keeps its contract costs nothing
//! here. Kept across reloads; the oldest go first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

/// How many violations are kept.
pub const KEPT: usize = 100;
/// How many failures of one answer are kept.
const FAILURES: usize = 5;

/// One answer that broke its contract.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at: SystemTime,
    pub route: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `status`, `content_type` or `body`.
    pub kind: &'static str,
    /// Whether the answer was replaced by a 502.
    pub enforced: bool,
    pub request_id: String,
    /// The first failures: (pointer, keyword, detail).
    pub failures: Vec<(String, &'static str, String)>,
    pub failures_total: usize,
}

#[derive(Debug, Default)]
pub struct Recent {
    list: Mutex<VecDeque<Violation>>,
}

impl Recent {
    pub fn record(&self, mut v: Violation) {
        v.failures.truncate(FAILURES);
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() == KEPT {
            list.pop_front();
        }
        list.push_back(v);
    }

    /// The newest first, of one route or of all, at most `limit`.
    pub fn report(&self, route: Option<&str>, limit: usize) -> Vec<Value> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .rev()
            .filter(|v| route.is_none_or(|r| v.route == r))
            .take(limit)
            .map(|v| {
                json!({
                    "at": crate::observe::access_log::rfc3339(v.at),
                    "route": v.route,
                    "method": v.method,
                    "path": v.path,
                    "status": v.status,
                    "kind": v.kind,
                    "enforced": v.enforced,
                    "request_id": v.request_id,
                    "failures": v.failures.iter().map(|(pointer, keyword, detail)| json!({
                        "pointer": pointer,
                        "keyword": keyword,
                        "detail": detail,
                    })).collect::<Vec<_>>(),
                    "failures_total": v.failures_total,
                })
            })
            .collect()
    }
}
