//! A client's request body, whichever protocol it came over.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::BodyError;
use super::limits::{BodyStats, Declared};

/// A client's request body: from hyper (HTTP/2) or from Portico's own HTTP/1.1 connection.
pub enum ClientBody {
    Hyper(Incoming, Option<Box<Declared>>),
    H1(crate::http1::server::RequestBody),
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b, Some(d)) => d.poll_frame(b, cx),
            ClientBody::Hyper(b, None) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BodyError::Hyper))),
            ClientBody::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BodyError::Client))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b, d) => {
                d.as_ref().is_none_or(|d| d.held.is_none()) && b.is_end_stream()
            }
            ClientBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b, _) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
        }
    }
}

/// Why a whole body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// Malformed or cut short.
    Malformed,
}

/// Reads a client's whole body for a translation (JSON to gRPC or SOAP), at most `max` bytes
/// or the route's `body_limit` if smaller, and records its size for the access log.
pub async fn read_client_body(
    body: ClientBody,
    stats: &BodyStats,
    max: u64,
) -> Result<Bytes, ReadError> {
    use http_body_util::BodyExt;
    let limit = stats.limit.load(Ordering::Relaxed).min(max);
    let bytes = match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ReadError::TooLarge);
        }
        Err(_) => {
            return Err(ReadError::Malformed);
        }
    };
    stats.bytes.store(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}
