//! An upstream's answer checked against what its operation documents: a status the operation
//! lists, a media type its `content` has, and a JSON body its schema accepts. A failure is drift
//! of the backend from its own contract.

use std::sync::Arc;

use crate::json::{self, Scratch, Tree};
use crate::request::{Failure, MediaRange, best_media, essence, is_json};
use crate::schema::{SchemaId, Schemas};
use crate::validate::{Direction, Run};

/// Which statuses a `responses` entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusSel {
    Exact(u16),
    /// `2XX`: the hundreds digit.
    Range(u16),
    Default,
}

impl StatusSel {
    pub fn of(key: &str) -> Option<StatusSel> {
        if key == "default" {
            return Some(StatusSel::Default);
        }
        let b = key.as_bytes();
        if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) {
            if b[1..].eq_ignore_ascii_case(b"xx") {
                return Some(StatusSel::Range(u16::from(b[0] - b'0')));
            }
            if b[1..].iter().all(u8::is_ascii_digit) {
                return key.parse().ok().map(StatusSel::Exact);
            }
        }
        None
    }

    /// How specifically this entry covers `status`: 3 exactly, 2 by range, 1 as default.
    fn fit(self, status: u16) -> u8 {
        match self {
            StatusSel::Exact(s) if s == status => 3,
            StatusSel::Range(h) if status / 100 == h => 2,
            StatusSel::Default => 1,
            _ => 0,
        }
    }
}

/// One documented response: its statuses and its media types with their schemas (none: the
/// response has no body).
#[derive(Debug)]
pub struct ResponseRule {
    pub status: StatusSel,
    pub media: Box<[(MediaRange, Option<SchemaId>)]>,
}

/// What an operation answers.
#[derive(Debug)]
pub struct ResponseContract {
    pub schemas: Arc<Schemas>,
    pub responses: Box<[ResponseRule]>,
    pub max_body: u64,
    pub max_depth: u32,
    pub max_errors: usize,
}

/// What to do with an answer's body, from its head.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponsePlan {
    Pass,
    /// Read it (when its length is known and at most `max_body`) and check it.
    Check(SchemaId),
}

fn failure(keyword: &'static str, pointer: String, message: String) -> Failure {
    Failure {
        location: "response",
        name: None,
        pointer,
        keyword,
        message,
    }
}

impl ResponseContract {
    /// Checks an answer's status and media type. `has_body`: the answer carries a body.
    pub fn check_head(
        &self,
        status: u16,
        content_type: Option<&str>,
        has_body: bool,
    ) -> Result<ResponsePlan, Failure> {
        let Some(rule) = self
            .responses
            .iter()
            .filter(|r| r.status.fit(status) > 0)
            .max_by_key(|r| r.status.fit(status))
        else {
            return Err(failure(
                "status",
                String::new(),
                format!("the status {status} is not one the operation documents"),
            ));
        };
        if !has_body || rule.media.is_empty() {
            return Ok(ResponsePlan::Pass);
        }
        let essence = essence(content_type);
        match best_media(&rule.media, &essence) {
            None => Err(failure(
                "content",
                String::new(),
                format!(
                    "the media type `{essence}` is not one the operation documents for {status}"
                ),
            )),
            Some(Some(s)) if is_json(&essence) => Ok(ResponsePlan::Check(*s)),
            Some(_) => Ok(ResponsePlan::Pass),
        }
    }

    /// Checks a JSON answer against its schema (`writeOnly` properties are not required).
    pub fn check_body(
        &self,
        schema: SchemaId,
        body: &[u8],
        scratch: &mut Scratch,
        failures: &mut Vec<Failure>,
    ) {
        if crate::stream::valid_bytes(
            &self.schemas,
            schema,
            body,
            self.max_depth,
            Direction::Response,
        ) {
            return;
        }
        if let Err(e) = json::read(body, scratch, self.max_depth) {
            let (keyword, message) = e.failure();
            failures.push(failure(keyword, String::new(), message));
            return;
        }
        let tree = Tree { body, s: scratch };
        let mut out = Vec::new();
        let mut run = Run::new(
            tree,
            &self.schemas,
            &mut out,
            self.max_errors,
            Direction::Response,
        );
        run.check(schema, tree.root());
        failures.extend(
            out.into_iter()
                .map(|v| failure(v.keyword, v.pointer, v.message)),
        );
    }
}
