//! What one request carries through the pipeline beside the request itself.

use std::sync::Arc;

use http::HeaderValue;

use crate::base::conn::ConnInfo;
use crate::body::BodyStats;
use crate::observe::access_log::Record;
use crate::policy::concurrency::Guard;
use crate::runtime::state::Runtime;

/// The request's context: what every phase reads (the runtime it started with, its
/// connection, its id, its body's counters) and what the phases fill in for the end (the
/// access record, the places held in concurrency limits, headers every answer gets). Passed
/// as one pointer, so a phase's future holds one reference, not one per value.
pub struct RequestCtx<'a> {
    pub rt: &'a Arc<Runtime>,
    /// When the request arrived.
    pub start: std::time::Instant,
    pub conn: &'a ConnInfo,
    pub request_id: &'a HeaderValue,
    /// The access record, filled in as the request goes (route, consumer, upstream, error).
    pub rec: &'a mut Record,
    /// The request body's counters and limits (`body_limit`, the access log's byte count).
    pub bytes_in: &'a Arc<BodyStats>,
    /// Places taken in `concurrency_limit` policies, given back when the response body ends.
    pub guards: &'a mut Vec<Guard>,
    /// Headers for the answer, refusals included: CORS, `WWW-Authenticate` challenges.
    pub extra: &'a mut Vec<(http::HeaderName, HeaderValue)>,
}
