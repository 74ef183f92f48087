//! What bounds a body as it streams: its byte count and size limit, idle time, and pace.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;

use super::error::BodyError;

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
    pub(crate) fn expired<T>(&mut self, cx: &mut Context<'_>, polled: &Poll<T>, got: u64) -> bool {
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
    pub(crate) held: Option<Frame<Bytes>>,
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

    pub(crate) fn poll_frame(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `check` once with a no-op waker, the way a body's `poll_frame` would.
    fn poll_once(check: impl FnOnce(&mut Context<'_>) -> bool) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        check(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_body_expires_and_each_frame_pushes_the_deadline_back() {
        let mut t = IdleTimer::new(Some(Duration::from_secs(10)));
        let waiting: Poll<()> = Poll::Pending;
        let frame: Poll<()> = Poll::Ready(());
        assert!(!poll_once(|cx| t.expired(cx, &waiting)), "the timer starts");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!poll_once(|cx| t.expired(cx, &frame)), "a frame resets it");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(
            !poll_once(|cx| t.expired(cx, &waiting)),
            "18 s in, 9 s since the frame"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            poll_once(|cx| t.expired(cx, &waiting)),
            "11 s without a frame"
        );
        let mut off = IdleTimer::new(None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(
            !poll_once(|cx| off.expired(cx, &waiting)),
            "no idle timeout set"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_floor_expires_after_its_grace() {
        assert!(
            RateFloor::new(Duration::ZERO, 1024).is_none(),
            "off without a grace"
        );
        assert!(
            RateFloor::new(Duration::from_secs(1), 0).is_none(),
            "off without a rate"
        );
        let mut f = RateFloor::new(Duration::from_secs(30), 1000).unwrap();
        let waiting: Poll<()> = Poll::Pending;
        let frame: Poll<()> = Poll::Ready(());
        assert!(!poll_once(|cx| f.expired(cx, &waiting, 0)));
        tokio::time::advance(Duration::from_secs(29)).await;
        // 5,000 bytes earn 5 s more than the grace: the deadline is 35 s after the start.
        assert!(!poll_once(|cx| f.expired(cx, &frame, 5_000)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            !poll_once(|cx| f.expired(cx, &waiting, 0)),
            "34 s: still within"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            poll_once(|cx| f.expired(cx, &waiting, 0)),
            "36 s: under 1,000 B/s"
        );
    }
}
