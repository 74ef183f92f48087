//! One body type for everything the gateway sends, so no response is boxed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::client::UpstreamBody;

/// What is known about a request body as it streams upstream.
#[derive(Debug)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    /// The client's body was malformed or cut short.
    pub failed: AtomicBool,
    /// Largest body allowed (`body_limit` policy); the stream fails past it.
    pub limit: AtomicU64,
    /// The body went past `limit` (or, decoded, past a `request_decompression` limit).
    pub too_large: AtomicBool,
    /// The body did not decode with the coding its `Content-Encoding` named.
    pub undecodable: AtomicBool,
    /// The body came slower than `server.request_body_min_rate` allows.
    pub too_slow: AtomicBool,
}

impl Default for BodyStats {
    fn default() -> Self {
        BodyStats {
            bytes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            limit: AtomicU64::new(u64::MAX),
            too_large: AtomicBool::new(false),
            undecodable: AtomicBool::new(false),
            too_slow: AtomicBool::new(false),
        }
    }
}

/// Why a body stream stopped.
#[derive(Debug)]
pub enum BodyError {
    Hyper(hyper::Error),
    /// The upstream connection failed in the middle of a response body.
    Upstream(crate::h1conn::ConnError),
    /// The client's HTTP/1.1 request body was malformed or cut short.
    Client(crate::h1conn::ConnError),
    /// The request body went past the route's `body_limit`.
    TooLarge,
    /// Nothing arrived for the upstream's `stream_idle_timeout`.
    Idle,
    /// The request body fell behind `server.request_body_min_rate`.
    TooSlow,
    /// An HTTP/2 request body went on past its `content-length`.
    Overlong,
    /// The response compressor failed.
    Compress(std::io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => e.fmt(f),
            BodyError::Upstream(e) => e.fmt(f),
            BodyError::Client(e) => write!(f, "request body: {e}"),
            BodyError::TooLarge => f.write_str("request body larger than the route allows"),
            BodyError::Idle => f.write_str("stream idle for longer than stream_idle_timeout"),
            BodyError::TooSlow => f.write_str("request body slower than request_body_min_rate"),
            BodyError::Overlong => f.write_str("request body longer than its content-length"),
            BodyError::Compress(e) => write!(f, "compression: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Cuts off a body that stays silent for too long (`stream_idle_timeout`). The timer is made
/// only when the body first has to wait, so bodies that arrive at once (most of them) cost
/// nothing; after that each frame pushes the deadline back.
#[derive(Default)]
pub struct IdleTimer {
    after: Option<std::time::Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimer {
    pub fn new(after: Option<std::time::Duration>) -> IdleTimer {
        IdleTimer { after, sleep: None }
    }

    /// Sets the idle time, keeping the timer if one was made.
    pub fn set(&mut self, after: Option<std::time::Duration>) {
        self.after = after;
    }

    /// Called with each poll's outcome; `true` when the body has been idle too long.
    pub fn expired<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<T>) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        match polled {
            Poll::Ready(_) => {
                if let Some(s) = &mut self.sleep {
                    s.as_mut().reset(tokio::time::Instant::now() + after);
                }
                false
            }
            Poll::Pending => {
                let s = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                std::future::Future::poll(s.as_mut(), cx).is_ready()
            }
        }
    }
}

/// The slowest a request body may arrive (`server.request_body_timeout` and
/// `request_body_min_rate`): after a grace period, on average at least `per_sec` bytes a
/// second since its first byte was asked for. A body trickled a byte a second would otherwise
/// hold a connection (and an upstream connection) for as long as it likes: a per-read idle
/// timeout never fires on it. Checked only when the body has to wait, so a body that arrives at
/// once costs nothing. The deadline is `start + grace + bytes / per_sec`.
pub struct RateFloor {
    grace: std::time::Duration,
    per_sec: u64,
    start: Option<tokio::time::Instant>,
    bytes: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RateFloor {
    /// `None` when either setting is zero (the floor is off).
    pub fn new(grace: std::time::Duration, per_sec: u64) -> Option<Box<RateFloor>> {
        (per_sec > 0 && !grace.is_zero()).then(|| {
            Box::new(RateFloor {
                grace,
                per_sec,
                start: None,
                bytes: 0,
                sleep: None,
            })
        })
    }

    fn deadline(&self, start: tokio::time::Instant) -> tokio::time::Instant {
        let earned =
            std::time::Duration::from_millis(self.bytes.saturating_mul(1000) / self.per_sec);
        start + self.grace + earned
    }

    /// Called with each poll's outcome and the bytes it gave; `true` once the body is too slow.
    fn expired<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<T>, got: u64) -> bool {
        let start = *self.start.get_or_insert_with(tokio::time::Instant::now);
        self.bytes += got;
        if polled.is_ready() {
            return false;
        }
        let deadline = self.deadline(start);
        let s = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if s.deadline() != deadline {
            s.as_mut().reset(deadline);
        }
        std::future::Future::poll(s.as_mut(), cx).is_ready()
    }
}

/// An HTTP/2 request body checked against its `content-length` (RFC 9113 §8.1.1: a request
/// whose DATA contradicts it is malformed and must not be forwarded). The h2 library refuses
/// DATA beyond the declared length, but only when it arrives: by then the bytes that make the
/// body complete would already be upstream, which would take the request as whole. So the
/// frame that completes the declared length is held until the stream is seen to end; if more
/// DATA comes instead, the body fails and the upstream never receives a complete request.
/// The last frame usually carries END_STREAM itself, and then nothing is held.
pub struct Declared {
    /// Bytes still expected; `u64::MAX` when no length was declared (nothing is checked).
    left: u64,
    held: Option<Frame<Bytes>>,
}

impl Declared {
    /// The check for a request with these headers: boxed, and only when a length is declared
    /// and the stream has not ended with its head. Every request's body type holds the
    /// option, and a larger one made each move of a request longer (measured: ~250
    /// instructions of `memcpy` per HTTP/1.1 request with the state inline).
    pub fn new(headers: &http::HeaderMap, ended: bool) -> Option<Box<Declared>> {
        if ended {
            return None;
        }
        let left = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse::<u64>().ok())?;
        Some(Box::new(Declared { left, held: None }))
    }

    fn poll_frame(
        &mut self,
        b: &mut Incoming,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use std::task::ready;
        if self.left == u64::MAX {
            return Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BodyError::Hyper)));
        }
        loop {
            if self.held.is_some() {
                if b.is_end_stream() {
                    return Poll::Ready(self.held.take().map(Ok));
                }
                // Waiting for the end: only its end or trailers may follow.
                return match ready!(Pin::new(&mut *b).poll_frame(cx)) {
                    None => Poll::Ready(self.held.take().map(Ok)),
                    // An empty DATA frame that only carries END_STREAM.
                    Some(Ok(f)) if f.data_ref().is_some_and(|d| d.is_empty()) => continue,
                    Some(Ok(f)) if f.is_trailers() => {
                        // Sent after the held data; the trailers come next time.
                        let data = self.held.replace(f);
                        self.left = u64::MAX - 1;
                        Poll::Ready(data.map(Ok))
                    }
                    Some(Ok(_)) => Poll::Ready(Some(Err(BodyError::Overlong))),
                    Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Hyper(e)))),
                };
            }
            if self.left == u64::MAX - 1 {
                // Trailers held behind the last data.
                self.left = 0;
                return Poll::Ready(self.held.take().map(Ok));
            }
            let f = match ready!(Pin::new(&mut *b).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Hyper(e)))),
                Some(Ok(f)) => f,
            };
            let n = f.data_ref().map_or(0, |d| d.len() as u64);
            if n > self.left {
                return Poll::Ready(Some(Err(BodyError::Overlong)));
            }
            self.left -= n;
            if self.left == 0 && f.is_data() && !b.is_end_stream() {
                self.held = Some(f);
                continue;
            }
            return Poll::Ready(Some(Ok(f)));
        }
    }
}

/// A client's request body: from hyper (HTTP/2) or from Portico's own HTTP/1.1 connection.
pub enum ClientBody {
    Hyper(Incoming, Option<Box<Declared>>),
    H1(crate::h1server::RequestBody),
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

pub enum Body {
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

/// Reads a client's whole body for a translation (JSON to gRPC or SOAP), at most `max` bytes
/// or the route's `body_limit` if smaller, and records its size for the access log.
pub async fn read_client_body(
    body: ClientBody,
    stats: &BodyStats,
    max: u64,
) -> Result<Bytes, crate::problem::Problem> {
    use http_body_util::BodyExt;
    let limit = stats.limit.load(Ordering::Relaxed).min(max);
    let bytes = match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(crate::problem::Problem::PayloadTooLarge);
        }
        Err(_) => {
            return Err(crate::problem::Problem::BadRequest(
                "The request body is malformed or was cut short.",
            ));
        }
    };
    stats.bytes.store(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}
