//! The HTTP/1.1 client connection's shared side: the transport and read buffer that the
//! connection's task and the request body both use, the request body itself, the transport
//! after a protocol switch, and the marks a request carries (a refused head, a pending
//! upgrade). The task that drives the connection is `listen::h1`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::http1::codec::{ConnError, Decoder};

pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub(crate) type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A client connection's transport: plain TCP or TLS.
pub type Transport = crate::http1::codec::Stream<TlsStream>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-changed that matters here.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection's state, shared between its task and the request body. One lock, held for
/// one poll at a time: the body reads through it while the task writes the answer through it
/// (uncontended on one thread). Reads go through tokio's `AsyncRead`, which, after a read that
/// did not fill the buffer, waits for the next readiness event instead of trying again (an
/// empty `recvfrom` per request, measured with `try_read` on a shared socket).
pub(crate) struct Shared {
    pub(crate) rd: Mutex<ReadSide>,
}

pub(crate) struct ReadSide {
    pub(crate) io: Transport,
    /// Bytes read and not consumed: the rest of a body, pipelined heads.
    pub(crate) buf: BytesMut,
    /// The current request's body.
    pub(crate) dec: Decoder,
    /// `100 Continue` is owed before the body's first read: how much of it is written.
    pub(crate) expect: Option<usize>,
    /// Header names of the previous request head.
    pub(crate) names: crate::http1::codec::Names,
}

impl Shared {
    pub(crate) fn read(&self) -> std::sync::MutexGuard<'_, ReadSide> {
        lock(&self.rd)
    }

    /// The transport and the bytes read but not consumed, once nothing else holds them.
    pub(crate) fn into_parts(self: Arc<Self>) -> Option<Upgraded> {
        let rd = Arc::try_unwrap(self)
            .ok()?
            .rd
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Some(Upgraded {
            pre: rd.buf.freeze(),
            io: rd.io,
        })
    }
}

/// Writes all of `parts` from the front, advancing them, then flushes (TLS); `Ready(Ok(()))`
/// once all are out.
pub(crate) fn poll_write_all(
    io: &mut Transport,
    cx: &mut Context<'_>,
    parts: &mut [&[u8]],
) -> Poll<io::Result<()>> {
    loop {
        let mut slices = [io::IoSlice::new(&[]); 3];
        let mut n = 0;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            slices[n] = io::IoSlice::new(p);
            n += 1;
        }
        if n == 0 {
            return Pin::new(io).poll_flush(cx);
        }
        let wrote = if n == 1 {
            ready!(Pin::new(&mut *io).poll_write(cx, &slices[0]))?
        } else {
            ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?
        };
        if wrote == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        let mut w = wrote;
        for p in parts.iter_mut() {
            let k = w.min(p.len());
            *p = &p[k..];
            w -= k;
        }
    }
}

/// A client's HTTP/1.1 request body, read from the connection's socket as it is polled.
pub struct RequestBody {
    /// `None` for a request without a body (no allocation for the common case).
    pub(crate) shared: Option<Arc<Shared>>,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = ConnError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ConnError>>> {
        let Some(sh) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut rd = sh.read();
        let rd = &mut *rd;
        if let Some(written) = rd.expect {
            // The client waits for this before it sends the body (RFC 9110 §10.1.1).
            let mut rest = [&CONTINUE[written..]];
            let r = poll_write_all(&mut rd.io, cx, &mut rest);
            rd.expect = Some(CONTINUE.len() - rest[0].len());
            ready!(r).map_err(ConnError::Io)?;
            rd.expect = None;
        }
        rd.dec.poll_frame(&mut rd.io, &mut rd.buf, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|sh| sh.read().dec.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.shared {
            None => SizeHint::with_exact(0),
            Some(sh) => sh.read().dec.size_hint(),
        }
    }
}

/// A client connection after a protocol switch (or handed to HTTP/2), with the bytes the
/// client sent behind its request.
pub struct Upgraded {
    pub(crate) pre: Bytes,
    pub(crate) io: Transport,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Why a request head was refused; the request handler turns it into the problem's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    LengthAndChunked,
    RepeatedLength,
    TransferCoding,
    BareLf,
    RepeatedHost,
    MissingHost,
}

impl Refusal {
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::LengthAndChunked => {
                "The request has both Content-Length and Transfer-Encoding."
            }
            Refusal::RepeatedLength => {
                "The request has more than one Content-Length, or one that is not a number."
            }
            Refusal::TransferCoding => "Transfer-Encoding must be exactly `chunked`.",
            Refusal::BareLf => "The request head has a line ending without CR (bare LF).",
            // RFC 9112 §3.2: one Host, or the gateway and the upstream may see different ones.
            Refusal::RepeatedHost => "The request has more than one Host header.",
            // RFC 9112 §3.2: every HTTP/1.1 request names its host (HTTP/1.0 predates Host).
            Refusal::MissingHost => "An HTTP/1.1 request needs a Host header.",
        }
    }
}

pub(crate) struct BareLf;

/// Where the head at the start of `buf` ends (the offset of its final CRLF CRLF), `None` when
/// it is not complete yet, or `BareLf` when a line ends without CR. One pass over the line
/// ends (memchr), since every request head goes through here.
pub(crate) fn head_end(buf: &[u8]) -> Result<Option<usize>, BareLf> {
    for nl in memchr::memchr_iter(b'\n', buf) {
        if nl == 0 || buf[nl - 1] != b'\r' {
            return Err(BareLf);
        }
        if nl >= 3 && buf[nl - 3..nl - 1] == *b"\r\n" {
            return Ok(Some(nl - 3));
        }
    }
    Ok(None)
}

/// In a request's extensions when it asks for a protocol switch on this connection: the
/// socket arrives here once the `101` answer is written. (Extensions must be `Clone`; the
/// first to take the receiver has it.)
#[derive(Clone)]
pub struct OnUpgrade(pub(crate) Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Marks a request whose head was refused (see the module comment); the handler answers 400.
#[derive(Clone, Copy)]
pub struct Refused(pub Refusal);
