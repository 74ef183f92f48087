//! What a client connection knows about itself, for every request on it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::HeaderValue;

/// What the connection knows about itself.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's address as a header value (`X-Forwarded-For`), built once per connection.
    pub peer_value: HeaderValue,
    pub tls: bool,
    pub listener: Arc<str>,
    /// The verified client certificate (mutual TLS).
    pub client_cert: Option<Arc<portico_auth::mtls::ClientCert>>,
    /// The timer of the connection's last route timeout, kept for the next request.
    pub(crate) timer: TimerSlot,
}

/// A spare route-timeout timer, one per connection. A timer made and dropped per request
/// registers in tokio's timer wheel and deregisters again, each under the driver's lock
/// (~1,150 instructions per request at 64 connections; ~400 with the kept timer). Reset to a
/// later deadline, a registered timer only moves its deadline with one atomic operation; the
/// wheel finds the new deadline when the old one comes round. The requests of an HTTP/1.1
/// connection come one after another, so one timer serves them all; concurrent HTTP/2
/// streams of one connection find the slot empty and make their own, as before. The kept
/// timer holds the waker of the last task that polled it: the connection's own task over
/// HTTP/1.1 (dropped with it), a finished stream's over HTTP/2 until the slot is reused.
/// The kept timer stays in the wheel until its last deadline: a connection left idle is
/// woken once then, finds nothing to read and waits again.
#[derive(Default)]
pub(crate) struct TimerSlot(std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>);

impl TimerSlot {
    /// The spare timer set to `deadline`, or a new one.
    pub(crate) fn take(&self, deadline: tokio::time::Instant) -> Pin<Box<tokio::time::Sleep>> {
        let spare = self.0.lock().ok().and_then(|mut s| s.take());
        match spare {
            Some(mut t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps `t` for the next request, unless another is kept already.
    pub(crate) fn put(&self, t: Pin<Box<tokio::time::Sleep>>) {
        if let Ok(mut s) = self.0.lock()
            && s.is_none()
        {
            *s = Some(t);
        }
    }
}

impl std::fmt::Debug for TimerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerSlot")
    }
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool, listener: Arc<str>) -> ConnInfo {
        let ip = portico_config::canonical_ip(peer.ip()).to_string();
        let peer_value =
            HeaderValue::try_from(ip).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            peer_value,
            tls,
            listener,
            client_cert: None,
            timer: TimerSlot::default(),
        }
    }
}
