//! HTTP/2 client connections, served by hyper: stream accounting, idle and send timeouts,
//! and the rapid-reset guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::base::conn::ConnInfo;
use crate::base::future::{Either, until};
use crate::listen::serving::Serving;
use crate::listen::settings::Settings;
use crate::pipeline::handle::handle;

pub(crate) async fn serve_io<I>(
    io: TokioIo<I>,
    s: &Settings,
    conn: Arc<ConnInfo>,
    inner: Arc<Serving>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let streams = Arc::new(Streams::new());
    let io = TokioIo::new(Progressing {
        io: io.into_inner(),
        streams: streams.clone(),
    });
    let open = streams.clone();
    let peer = conn.peer;
    let service = service_fn(move |req| {
        let rt = inner.runtime.load_full();
        let conn = conn.clone();
        let mut guard = StreamGuard::new(&open);
        // Boxed: hyper spawns a task per HTTP/2 stream holding this future, and moves it
        // several times on the way into the task (~6 KB each time: 3.5k instructions of
        // `memcpy` per request, measured). A box moves as a pointer.
        crate::base::future::box_in_place(move || async move {
            let declared = crate::body::Declared::new(
                req.headers(),
                hyper::body::Body::is_end_stream(req.body()),
            );
            let req = req.map(|b| crate::body::ClientBody::Hyper(b, declared));
            let resp = handle(rt, conn, req).await;
            guard.answered = true;
            // The stream stays open until its body is sent, so the guard goes with the body.
            resp.map(|r| {
                r.map(|body| Tracked {
                    body,
                    _guard: guard,
                })
            })
        })
    });
    let c = s.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(c);
    let idle = streams.idle_for(s.idle_timeout);
    // `true`: close gracefully (GOAWAY, let streams finish); `false`: drop the connection.
    let stop = async {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => true,
            () = idle => {
                tracing::debug!(%peer, "HTTP/2 connection idle; sending GOAWAY");
                true
            }
            () = streams.stalled(s.send_timeout) => {
                ::metrics::counter!("portico_client_send_timeouts_total").increment(1);
                tracing::debug!(%peer, "client read nothing of its answers for send_timeout; closing");
                // Not a GOAWAY: a client that reads nothing would not read it either.
                false
            }
            () = streams.abuse.notified() => {
                ::metrics::counter!("portico_http2_premature_reset_goaways_total").increment(1);
                tracing::warn!(%peer, "client cancelled most of its HTTP/2 streams before their answers (rapid reset); sending GOAWAY");
                true
            }
        }
    };
    match until(c.as_mut(), stop).await {
        Either::Left(r) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        Either::Right(false) => return,
        Either::Right(true) => {}
    }
    c.as_mut().graceful_shutdown();
    let _ = c.await;
}

/// The open streams of one HTTP/2 connection, and since when none has been open: what
/// `client_idle_timeout` is measured from, as for an HTTP/1.1 connection between requests.
/// Atomics, not a cell: hyper runs each stream as a task of its own (on this thread, as every
/// worker is a single-threaded runtime, but the types must be `Send`).
struct Streams {
    open: AtomicUsize,
    /// Streams that reached the handler, and those the client cancelled before their answer
    /// (CVE-2023-44487, "rapid reset", paced or not).
    started: AtomicU64,
    cancelled: AtomicU64,
    /// Signalled once the cancellations show abuse.
    abuse: tokio::sync::Notify,
    /// Answer bytes handed to hyper, and bytes hyper wrote to the client (frames, headers
    /// and control frames included): while the first runs ahead of the second, answers are
    /// waiting for the client to read.
    produced: AtomicU64,
    written: AtomicU64,
    /// Milliseconds from `base` to when the last stream ended.
    idle_since: AtomicU64,
    base: Instant,
}

impl Streams {
    fn new() -> Streams {
        Streams {
            open: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            abuse: tokio::sync::Notify::new(),
            produced: AtomicU64::new(0),
            written: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// Returns once answers have been waiting to be sent, with nothing written, for about
    /// `timeout` (checked four times per `timeout`: one timer per connection, not per write).
    async fn stalled(&self, timeout: Duration) {
        let step = timeout / 4;
        let mut last = self.written.load(Ordering::Relaxed);
        let mut still = 0;
        loop {
            tokio::time::sleep(step).await;
            let written = self.written.load(Ordering::Relaxed);
            let waiting = self.produced.load(Ordering::Relaxed) > written;
            if waiting && written == last {
                still += 1;
                if still >= 4 {
                    return;
                }
            } else {
                still = 0;
            }
            last = written;
        }
    }

    /// Returns once no stream has been open for `timeout`. One timer per `timeout` while
    /// streams come and go, not one per stream.
    async fn idle_for(&self, timeout: Duration) {
        let mut wait = timeout;
        loop {
            tokio::time::sleep(wait).await;
            if self.open.load(Ordering::Acquire) > 0 {
                wait = timeout;
                continue;
            }
            let since = self.base + Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
            match (since + timeout).checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => wait = left,
                _ => return,
            }
        }
    }
}

/// Once this many streams have reached the handler on one connection, a connection whose
/// client cancelled more than half of them before their answer gets GOAWAY. Each cancelled
/// stream may have cost an upstream request, and a reset frees the client's concurrency
/// slot at once, so a client could otherwise keep the upstreams busy far beyond
/// `max_concurrent_streams` (CVE-2023-44487).
const PREMATURE_RESET_MIN_STREAMS: u64 = 100;

/// One open stream: from the request's arrival until its response body is sent or dropped.
struct StreamGuard {
    streams: Arc<Streams>,
    /// The handler produced the answer; dropped before, the client cancelled the stream.
    answered: bool,
}

impl StreamGuard {
    fn new(s: &Arc<Streams>) -> StreamGuard {
        s.open.fetch_add(1, Ordering::Relaxed);
        s.started.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            streams: s.clone(),
            answered: false,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.streams;
        if !self.answered {
            let cancelled = s.cancelled.fetch_add(1, Ordering::Relaxed) + 1;
            let started = s.started.load(Ordering::Relaxed);
            if started >= PREMATURE_RESET_MIN_STREAMS && cancelled * 2 > started {
                s.abuse.notify_one();
            }
        }
        // The clock is read only when the last open stream ends (busy connections rarely get
        // there). Stored before the count drops, so a count of zero never meets an old time.
        if s.open.load(Ordering::Relaxed) == 1 {
            let ms = s.base.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
            s.idle_since.store(ms, Ordering::Relaxed);
        }
        s.open.fetch_sub(1, Ordering::Release);
    }
}

/// A response body that keeps its stream counted as open until it is done.
struct Tracked<B> {
    body: B,
    _guard: StreamGuard,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let r = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            use bytes::Buf;
            self._guard
                .streams
                .produced
                .fetch_add(d.remaining() as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A client connection's transport that counts what is written to it (for `Streams::stalled`).
struct Progressing<I> {
    io: I,
    streams: Arc<Streams>,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Progressing<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Progressing<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.streams.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.streams.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
