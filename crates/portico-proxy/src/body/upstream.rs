//! An upstream's response body, and what it gives back to the pool when it ends.
//!
//! The body sits below the pool (every body type is one enum, [`super::Body`], so no response
//! is boxed), so it reaches the pool only through `Home`, which the pool's targets implement:
//! the body module needs none of the pool's types, and the pool depends on it, not the other
//! way round.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use super::error::BodyError;
use super::limits::IdleTimer;
use crate::http1::codec::{H1Conn, ResponseBody};

/// A pooled HTTP/1.1 connection; its slot counts it against `max_connections` while open.
pub(crate) type PooledConn = Box<H1Conn<Option<ConnSlot>>>;

/// The pool's side of a response body: a target that takes its HTTP/1.1 connection back, and
/// counts the request out of `least_request`'s in-flight number.
pub(crate) trait Home: Send + Sync {
    /// Takes back a connection whose response has been read to its end.
    fn put_idle(&self, shard: usize, conn: PooledConn, origin: Origin);
    /// The request no longer counts as in flight on this target.
    fn unload(&self);
}

/// Open connections of a target and requests waiting for one.
pub(crate) struct Slots {
    pub(crate) open: AtomicUsize,
    pub(crate) pending: AtomicUsize,
    /// Signalled when a connection goes back to the pool or closes while someone waits.
    pub(crate) freed: tokio::sync::Notify,
    pub(crate) gauge: metrics::Gauge,
}

impl Slots {
    pub(crate) fn wake_waiter(&self) {
        if self.pending.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        }
    }
}

/// One open connection, counted until the connection's task ends.
pub(crate) struct ConnSlot(pub(crate) Arc<Slots>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.gauge.decrement(1.0);
        self.0.wake_waiter();
    }
}

/// Which address a connection went to, and the DNS epoch it was last known current in.
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) addr: SocketAddr,
    pub(crate) epoch: u64,
}

pub(crate) enum Back {
    None,
    /// Return the body's HTTP/1.1 connection to its shard when the body ends.
    H1 {
        pool: Arc<dyn Home>,
        shard: usize,
        origin: Origin,
    },
    /// Give this stream back to the HTTP/2 connection's count.
    H2(Arc<AtomicUsize>),
}

/// An upstream response body. When it ends, its connection goes back to the pool (HTTP/1.1)
/// or its stream is counted free (HTTP/2). Dropped early, the HTTP/1.1 connection is closed
/// (it still carries the rest of that response).
pub struct UpstreamBody {
    pub(crate) inner: Inner,
    pub(crate) back: Back,
    /// For `least_request`: keeps the request counted in flight while the body lives.
    pub(crate) load: Option<LoadGuard>,
    /// For `max_requests`: keeps the request counted against the circuit breaker.
    pub(crate) admitted: Option<CountGuard>,
    pub(crate) idle: IdleTimer,
}

pub(crate) enum Inner {
    /// Read by Portico's own HTTP/1.1 connection.
    H1(ResponseBody<Option<ConnSlot>>),
    /// Read by hyper (HTTP/2, and HTTP/1.1 requests that asked for a protocol switch).
    Hyper(Incoming),
}

pub(crate) struct CountGuard(pub(crate) Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) struct LoadGuard(pub(crate) Arc<dyn Home>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.unload();
    }
}

impl UpstreamBody {
    pub(crate) fn release(&mut self) {
        match std::mem::replace(&mut self.back, Back::None) {
            Back::None => {}
            Back::H1 {
                pool,
                shard,
                origin,
            } => {
                if let Inner::H1(b) = &mut self.inner
                    && let Some(conn) = b.take_conn()
                {
                    pool.put_idle(shard, conn, origin);
                }
            }
            Back::H2(n) => {
                n.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Back::H2(n) = std::mem::replace(&mut self.back, Back::None) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let r = match &mut this.inner {
            Inner::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BodyError::Upstream))),
            Inner::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(BodyError::Hyper))),
        };
        if this.idle.expired(cx, &r) {
            // The connection still owes the rest of this response: close it.
            metrics::counter!("portico_stream_idle_timeouts_total", "direction" => "response")
                .increment(1);
            this.back = Back::None;
            return Poll::Ready(Some(Err(BodyError::Idle)));
        }
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.back = Back::None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(b) => b.is_end_stream(),
            Inner::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(b) => b.size_hint(),
            Inner::Hyper(b) => b.size_hint(),
        }
    }
}
