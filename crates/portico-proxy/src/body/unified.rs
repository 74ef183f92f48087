//! One body type for everything the gateway sends, so no response is boxed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::client::ClientBody;
use super::error::BodyError;
use super::limits::{BodyStats, IdleTimer, RateFloor};
use super::upstream::UpstreamBody;

#[derive(Default)]
pub enum Body {
    #[default]
    Empty,
    Full(Option<Bytes>),
    /// An upstream's response, passed through frame by frame (trailers included).
    Upstream(UpstreamBody),
    /// A streamed request body whose bytes are counted for the access log.
    Counted(
        ClientBody,
        Arc<BodyStats>,
        IdleTimer,
        Option<Box<RateFloor>>,
    ),
    /// A body produced by a translation (a gRPC stream written as JSON lines): the rare case
    /// that is boxed.
    Stream(http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Upstream(s) => Pin::new(s).poll_frame(cx),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
            Body::Counted(s, stats, idle, floor) => {
                let r = Pin::new(s).poll_frame(cx);
                if idle.expired(cx, &r) {
                    metrics::counter!("portico_stream_idle_timeouts_total", "direction" => "request").increment(1);
                    stats.failed.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyError::Idle)));
                }
                if let Some(floor) = floor {
                    let got = match &r {
                        Poll::Ready(Some(Ok(f))) => f.data_ref().map_or(0, |d| d.len() as u64),
                        _ => 0,
                    };
                    if floor.expired(cx, &r, got) {
                        metrics::counter!("portico_request_body_timeouts_total").increment(1);
                        stats.too_slow.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooSlow)));
                    }
                }
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            let total = stats.bytes.fetch_add(d.len() as u64, Ordering::Relaxed)
                                + d.len() as u64;
                            if total > stats.limit.load(Ordering::Relaxed) {
                                stats.too_large.store(true, Ordering::Relaxed);
                                return Poll::Ready(Some(Err(BodyError::TooLarge)));
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => stats.failed.store(true, Ordering::Relaxed),
                    _ => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Upstream(s) => s.is_end_stream(),
            Body::Stream(s) => s.is_end_stream(),
            Body::Counted(s, ..) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Upstream(s) => s.size_hint(),
            Body::Stream(s) => s.size_hint(),
            Body::Counted(s, ..) => s.size_hint(),
        }
    }
}

/// A body fed from a channel, for responses produced over time (server-sent events in the demo
/// and the test servers).
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(buffer: usize) -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer);
        (tx, ChannelBody { rx })
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
