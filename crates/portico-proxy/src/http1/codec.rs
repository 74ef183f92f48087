//! Portico's own HTTP/1.1 client connection to an upstream.
//!
//! hyper's client connection is a task of its own, fed through a channel: per request that is
//! a hop between two tasks, and per open connection a task, a 13 KB channel block and two
//! 8 KiB buffers, whether the connection is busy or idle. This one is driven by whoever holds
//! it: the request's task writes the request and reads the answer's head, and the response
//! body reads the rest from the socket as the client takes it. An idle connection is just a
//! socket and an empty buffer in the pool.
//!
//! httparse (the parser hyper uses) reads response heads, chunk sizes and trailers; this
//! module holds the framing rules around it (RFC 9112 §6): which responses have no body,
//! `Transfer-Encoding: chunked` before `Content-Length`, a body delimited by the connection's
//! end, and when a connection may carry another request. It is strict where proxies have
//! disagreed: a response with both `Content-Length` and `Transfer-Encoding`, or with
//! differing lengths, is an error, never a guess.
//!
//! Requests asking for a protocol switch (`Upgrade`) do not come here: they go to a hyper
//! connection made from the same socket, which hands the upgraded stream over.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest response head (status line and headers) accepted, and the most headers.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// The largest chunk-size line and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Reads ask for at least this much room; a buffer is reused once the frames cut from it are
/// gone. Response heads are read with the same room: asking for 4 KiB instead (the heap's
/// largest share at 1,000 connections is these buffers) took 4 MiB more of RSS there with
/// mimalloc, not less (docs/benchmarks.md, "Memory").
const READ_SIZE: usize = 8192;
/// The most a read asks for, and the largest frame gathered from a body of known length.
const READ_MAX: usize = 64 * 1024;
/// An idle connection keeps a buffer at most this large.
const IDLE_BUF_MAX: usize = 16 * 1024;
/// Request body bytes gathered behind the head before a write.
const WRITE_BATCH: usize = 16 * 1024;

/// The socket under a connection: plain, or TLS (`T` is the client's TLS stream here; the
/// server side uses the same type with its own).
pub enum Stream<T = tokio_rustls::client::TlsStream<TcpStream>> {
    Tcp(TcpStream),
    Tls(Box<T>),
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection to an upstream, ready for a request. `S` rides along for as long as
/// the connection is open (the pool's count of open connections).
pub struct H1Conn<S> {
    io: Stream,
    /// Bytes read and not consumed yet. Always empty between requests.
    buf: BytesMut,
    /// The request head (and body bytes gathered behind it) being written; kept for reuse.
    out: Vec<u8>,
    /// Header names of the previous response.
    names: Names,
    slot: S,
}

/// Why a request failed on a connection.
pub enum SendError {
    /// Nothing of the request was written (the caller's request is as it was): it may go out
    /// on another connection.
    Unsent(io::Error),
    /// The request was (perhaps partly) written, or the answer was unusable.
    Failed(ConnError),
}

/// A failure of the connection or of the upstream's side of the protocol.
#[derive(Debug)]
pub enum ConnError {
    Io(io::Error),
    /// The upstream sent something that is not a valid HTTP/1.1 answer.
    Protocol(&'static str),
    /// The request's body failed while it was being sent.
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// The request's body did not match the length it announced.
    BodyLength,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "upstream connection: {e}"),
            ConnError::Protocol(e) => write!(f, "upstream response: {e}"),
            ConnError::Body(e) => write!(f, "request body: {e}"),
            ConnError::BodyLength => {
                f.write_str("request body length differs from its Content-Length")
            }
        }
    }
}

impl std::error::Error for ConnError {}

/// A request body an [`H1Conn`] can send: the gateway's own body type, kept generic here so
/// the wire format does not depend on the gateway's body types (they depend on it). `Default`
/// is the empty body left in the request once the rest of it is no longer wanted.
pub trait SendBody:
    HttpBody<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Default + Unpin
{
}

impl<B> SendBody for B where
    B: HttpBody<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Default
        + Unpin
{
}

/// How the request's body goes out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
}

impl<S> H1Conn<S> {
    /// Boxed once per connection, so moving a connection (and the response body that holds
    /// it) moves a pointer.
    pub fn new(io: Stream, slot: S) -> Box<Self> {
        Box::new(H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            names: Names::default(),
            slot,
        })
    }

    /// The socket and the pool's count, for a hyper connection (protocol switches).
    pub fn into_parts(self) -> (Stream, S) {
        (self.io, self.slot)
    }

    /// Whether an idle connection can take a request: the upstream has not closed it and has
    /// sent nothing unasked. Looks without waiting (a read that would block is the good case).
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut one = [0u8; 1];
        let mut rb = ReadBuf::new(&mut one);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_pending()
    }

    /// Sends `req` (its URI's path and query go on the request line) and reads the answer's
    /// head. 1xx answers other than `101` are skipped. The request is borrowed, not taken:
    /// when nothing of it was written (`SendError::Unsent`) it is still whole in the caller's
    /// hands, to go out on another connection, and the future holds a pointer to it rather than
    /// one more copy (each layer of the pool's call holding its own was 360 bytes, written to
    /// memory that is cold at a thousand connections).
    #[allow(clippy::manual_async_fn)] // see the comment in the body
    pub fn send<'a, B>(
        mut self: Box<Self>,
        req: &'a mut Request<B>,
        trace: Option<&'a crate::observe::trace::Traceparent>,
    ) -> impl Future<Output = Result<(http::response::Parts, ResponseBody<S>), SendError>> + 'a
    where
        S: 'a,
        B: SendBody + 'a,
    {
        // Not `async fn`: its parameters would be moved once more, into locals, before the
        // body runs.
        async move {
            let out = self.write_head(req, trace);
            let head_only = req.method() == Method::HEAD;
            let mut sending = Sending {
                out,
                written: 0,
                wrote: false,
                sent: 0,
                // `write_head` says `None` for a body that has ended already.
                body_done: out == Out::None,
                body_taken: false,
            };
            // Write the request; an answer that arrives before the body is all sent ends the
            // sending (the upstream has decided), and the connection is not reused.
            let body = req.body_mut();
            let early = std::future::poll_fn(|cx| self.poll_send(cx, &mut sending, body)).await;
            let early = match early {
                Ok(early) => early,
                Err(e) if !sending.wrote && !sending.body_taken => {
                    let ConnError::Io(e) = e else {
                        return Err(SendError::Failed(e));
                    };
                    return Err(SendError::Unsent(e));
                }
                Err(e) => return Err(SendError::Failed(e)),
            };
            // What is left of the body is not wanted (an early answer): dropped now, which
            // tells its sender.
            *req.body_mut() = B::default();
            if self.out.capacity() > 4 * WRITE_BATCH {
                self.out = Vec::new();
            }
            self.out.clear();
            let mut keep = !early;
            loop {
                let (head, shape) = match std::future::poll_fn(|cx| self.poll_head(cx)).await {
                    Ok(h) => h,
                    Err(e) => return Err(SendError::Failed(e)),
                };
                let status = head.status;
                if status.is_informational() {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(SendError::Failed(ConnError::Protocol(
                            "101 Switching Protocols to a request that asked for no upgrade",
                        )));
                    }
                    continue;
                }
                keep &= shape.keep_alive;
                let dec = if head_only
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED
                {
                    Decoder::done()
                } else {
                    if shape.framing == BodyFraming::Close {
                        keep = false;
                    }
                    Decoder::new(shape.framing)
                };
                let mut body = ResponseBody {
                    conn: Some(self),
                    dec,
                    keep,
                };
                if body.dec.is_done() {
                    body.finish();
                }
                return Ok((head, body));
            }
        }
    }

    /// Writes the request line and headers into `self.out` and says how the body goes.
    /// `trace`, the request's trace context, is written after its headers: put in the header
    /// map, it would cost an allocation, a validation and two hashings of its name per request.
    fn write_head<B: SendBody>(
        &mut self,
        req: &Request<B>,
        trace: Option<&crate::observe::trace::Traceparent>,
    ) -> Out {
        let body = req.body();
        let w = &mut self.out;
        w.clear();
        w.extend_from_slice(req.method().as_str().as_bytes());
        w.push(b' ');
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        w.extend_from_slice(if pq.is_empty() { b"/" } else { pq.as_bytes() });
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let headers_at = w.len();
        let mut had_length = false;
        let mut had_host = false;
        for (name, value) in req.headers() {
            // The framing is written from the body below, never copied.
            if name == header::CONTENT_LENGTH {
                had_length = true;
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            had_host |= name == header::HOST;
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if let Some(t) = trace {
            w.extend_from_slice(b"traceparent: ");
            t.append_to(w);
            w.extend_from_slice(b"\r\n");
        }
        // Without a `Host` header, one from the URI goes first (RFC 9112 §3.2). Noticed in the
        // walk above rather than looked up by name before it; the pipeline always sets `Host`,
        // so the insertion is for the pool's other callers.
        if !had_host && let Some(a) = req.uri().authority() {
            let line = [b"host: ", a.as_str().as_bytes(), b"\r\n"].concat();
            w.splice(headers_at..headers_at, line);
        }
        let out = if body.is_end_stream() {
            // An empty body still says so where a body is expected.
            if had_length || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
                w.extend_from_slice(b"content-length: 0\r\n");
            }
            Out::None
        } else if let Some(n) = body.size_hint().exact() {
            w.extend_from_slice(b"content-length: ");
            w.extend_from_slice(crate::base::headers::decimal(n, &mut [0u8; 20]));
            w.extend_from_slice(b"\r\n");
            if n == 0 { Out::None } else { Out::Length(n) }
        } else {
            w.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Out::Chunked
        };
        w.extend_from_slice(b"\r\n");
        out
    }

    /// Moves the request out: fills `out` from the body (up to a batch), writes, repeats.
    /// While nothing can be written, watches for an early answer (`Ok(true)`).
    fn poll_send<B: SendBody>(
        &mut self,
        cx: &mut Context<'_>,
        s: &mut Sending,
        body: &mut B,
    ) -> Poll<Result<bool, ConnError>> {
        loop {
            while !s.body_done && self.out.len() - s.written < WRITE_BATCH {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        s.body_taken = true;
                        s.take_frame(frame, &mut self.out)?;
                    }
                    Poll::Ready(None) => {
                        s.body_taken = true;
                        s.body_done = true;
                        match s.out {
                            Out::Length(n) if s.sent != n => {
                                return Poll::Ready(Err(ConnError::BodyLength));
                            }
                            Out::Chunked => s.finish_chunked(&mut self.out),
                            _ => {}
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(ConnError::Body(e.into())));
                    }
                    Poll::Pending => break,
                }
            }
            if s.written < self.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out[s.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ConnError::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => {
                        s.wrote = true;
                        s.written += n;
                        if s.written == self.out.len() {
                            self.out.clear();
                            s.written = 0;
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnError::Io(e))),
                    Poll::Pending => {}
                }
            } else if s.body_done {
                if let Stream::Tls(_) = self.io {
                    ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(ConnError::Io)?;
                }
                return Poll::Ready(Ok(false));
            }
            // Blocked on the body or the socket: an answer may already be coming.
            match self.io.poll_fill(&mut self.buf, READ_SIZE, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ConnError::Io(io::ErrorKind::UnexpectedEof.into())));
                }
                Poll::Ready(Ok(_)) => {
                    // `100 Continue` (the upstream wants the body) and other interim answers
                    // do not end the sending.
                    while skip_interim(&mut self.buf) {}
                    // A head too large to be one is left for `poll_head` to refuse.
                    if self.buf.len() > MAX_HEAD || head_complete(&self.buf) {
                        return Poll::Ready(Ok(true));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ConnError::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads until a whole response head is in the buffer, then parses it.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(http::response::Parts, Shape), ConnError>> {
        loop {
            if !self.buf.is_empty()
                && let Some(parsed) = parse_head(&mut self.buf, &mut self.names)?
            {
                return Poll::Ready(Ok(parsed));
            }
            if self.buf.len() >= MAX_HEAD {
                return Poll::Ready(Err(ConnError::Protocol("response head larger than 64 KiB")));
            }
            let n =
                ready!(self.io.poll_fill(&mut self.buf, READ_SIZE, cx)).map_err(ConnError::Io)?;
            if n == 0 {
                return Poll::Ready(Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.buf.is_empty() {
                        "closed before an answer"
                    } else {
                        "closed in the middle of the answer's head"
                    },
                ))));
            }
        }
    }
}

/// Progress of writing one request.
struct Sending {
    out: Out,
    /// Bytes of the connection's `out` buffer already written.
    written: usize,
    /// Some of the request reached the socket.
    wrote: bool,
    /// Body bytes taken so far.
    sent: u64,
    body_done: bool,
    /// A frame was taken from the body (the request cannot be handed back unsent).
    body_taken: bool,
}

impl Sending {
    fn take_frame(&mut self, frame: Frame<Bytes>, w: &mut Vec<u8>) -> Result<(), ConnError> {
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return Ok(());
                }
                self.sent += data.len() as u64;
                match self.out {
                    Out::Length(n) => {
                        if self.sent > n {
                            return Err(ConnError::BodyLength);
                        }
                        w.extend_from_slice(&data);
                    }
                    Out::Chunked => {
                        let mut size = [0u8; 16];
                        w.extend_from_slice(hex(data.len(), &mut size));
                        w.extend_from_slice(b"\r\n");
                        w.extend_from_slice(&data);
                        w.extend_from_slice(b"\r\n");
                    }
                    Out::None => return Err(ConnError::BodyLength),
                }
            }
            Err(frame) => {
                // Trailers: sent with a chunked body, dropped otherwise (as hyper does).
                if let (Ok(trailers), Out::Chunked) = (frame.into_trailers(), self.out) {
                    w.extend_from_slice(b"0\r\n");
                    push_fields(w, &trailers);
                    w.extend_from_slice(b"\r\n");
                    self.out = Out::None;
                }
            }
        }
        Ok(())
    }

    fn finish_chunked(&mut self, w: &mut Vec<u8>) {
        if self.out == Out::Chunked {
            w.extend_from_slice(b"0\r\n\r\n");
            self.out = Out::None;
        }
    }
}

pub(crate) struct Shape {
    pub(crate) framing: BodyFraming,
    pub(crate) keep_alive: bool,
}

/// Parses the head at the start of `buf`, if it is all there, and cuts it off.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
) -> Result<Option<(http::response::Parts, Shape)>, ConnError> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ConnError::Protocol("more than 128 response headers"));
        }
        Err(_) => return Err(ConnError::Protocol("malformed response head")),
    };
    if len > MAX_HEAD {
        return Err(ConnError::Protocol("response head larger than 64 KiB"));
    }
    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|_| ConnError::Protocol("invalid status code"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Room for the request id and response policies' headers, without growing the map.
    let mut headers = HeaderMap::with_capacity(resp.headers.len() + 4);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = version == Version::HTTP_10;
    // Header values point into the head; one shared buffer holds them all.
    let mut few = [(0, 0, 0, 0); 24];
    let mut many = Vec::new();
    let spans = header_spans(buf.as_ptr() as usize, resp.headers, &mut few, &mut many);
    let head = buf.split_to(len).freeze();
    for (i, &(n, nl, v, vl)) in spans.iter().enumerate() {
        let name = names
            .get(i, &head[n..n + nl])
            .map_err(|_| ConnError::Protocol("invalid header name"))?;
        // SAFETY: `from_maybe_shared_unchecked` needs bytes that `HeaderValue::from_bytes`
        // would accept (http's invariant: no control characters but HTAB, no DEL). httparse
        // accepted this value, and what it accepts (HTAB, SP, visible ASCII, obs-text) is
        // exactly that set; checking every byte again was measured at ~240 instructions per
        // response.
        #[allow(unsafe_code)]
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(v..v + vl)) };
        if name == header::CONTENT_LENGTH {
            let n = content_length(value.as_bytes())
                .ok_or(ConnError::Protocol("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ConnError::Protocol("differing Content-Length values"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            coded = true;
            // Only the last coding decides whether the body is chunked.
            chunked = value
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            // Plain `chunked` describes this connection only and is undone here.
            if value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
            {
                continue;
            }
        } else if name == header::CONNECTION {
            let mut only_persistence = true;
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else {
                    only_persistence = false;
                }
            }
            // `keep-alive` or `close` concern this connection only: nothing for the pipeline
            // to forward or remove. A list naming other headers stays, so those go too.
            if only_persistence {
                continue;
            }
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        headers.append(name, value);
    }
    if coded && length.is_some() {
        return Err(ConnError::Protocol(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let framing = match (coded, chunked, length) {
        (true, true, _) => BodyFraming::Chunked,
        (true, false, _) => BodyFraming::Close,
        (false, _, Some(n)) => BodyFraming::Length(n),
        (false, _, None) => BodyFraming::Close,
    };
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((
        parts,
        Shape {
            framing,
            keep_alive: !close,
        },
    )))
}

/// The header names of the previous head read on a connection, in order, with their bytes as
/// sent. A client or an upstream sends the same names in the same order head after head, so
/// a name is usually found here by one byte comparison. `HeaderName::from_bytes` costs
/// ~150 instructions per name (a lookup of the standard names, and an allocation for any
/// other name, such as `x-request-id`), and a name taken from here costs a clone (a copy,
/// or a reference count for a custom name).
#[derive(Default)]
pub struct Names {
    /// (offset in `raw`, length, name) per header of the previous head.
    names: Vec<(u16, u16, HeaderName)>,
    raw: Vec<u8>,
}

/// Names remembered per connection at most, and their bytes: enough for the usual head,
/// bounded for a client that sends a hundred headers.
const NAMES_MAX: usize = 32;
const NAMES_RAW_MAX: usize = 1024;

impl Names {
    /// The name of the `i`-th header of the head being read, sent as `raw`. Names are asked
    /// for in order, starting from 0 for each head.
    pub fn get(
        &mut self,
        i: usize,
        raw: &[u8],
    ) -> Result<HeaderName, http::header::InvalidHeaderName> {
        if let Some((at, len, name)) = self.names.get(i)
            && self
                .raw
                .get(usize::from(*at)..usize::from(*at) + usize::from(*len))
                == Some(raw)
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw)?;
        // The heads differ from here on: forget the rest and remember this one instead.
        if let Some((at, _, _)) = self.names.get(i) {
            self.raw.truncate(usize::from(*at));
        }
        self.names.truncate(i);
        if self.names.len() == i && i < NAMES_MAX && self.raw.len() + raw.len() <= NAMES_RAW_MAX {
            // Both fit in u16: the bounds above are far below.
            self.names
                .push((self.raw.len() as u16, raw.len() as u16, name.clone()));
            self.raw.extend_from_slice(raw);
        }
        Ok(name)
    }
}

/// Where a header's name and value are in a head: offsets from its start and lengths.
pub type Span = (usize, usize, usize, usize);

/// The headers httparse found in a head starting at address `base`, as offsets, not slices:
/// the head is cut off its buffer before values can share it. Room for the usual handful of
/// headers on the stack; more go to the heap.
pub fn header_spans<'a>(
    base: usize,
    headers: &[httparse::Header<'_>],
    few: &'a mut [Span; 24],
    many: &'a mut Vec<Span>,
) -> &'a [Span] {
    let span = |h: &httparse::Header<'_>| {
        (
            h.name.as_ptr() as usize - base,
            h.name.len(),
            h.value.as_ptr() as usize - base,
            h.value.len(),
        )
    };
    if headers.len() <= few.len() {
        for (slot, h) in few.iter_mut().zip(headers.iter()) {
            *slot = span(h);
        }
        &few[..headers.len()]
    } else {
        many.extend(headers.iter().map(span));
        &many[..]
    }
}

/// A `Content-Length` value: digits, or a list of equal values (`5, 5`).
fn content_length(v: &[u8]) -> Option<u64> {
    let mut out = None;
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// Cuts a whole interim (1xx, not 101) answer off the start of `buf`; false when `buf` does
/// not start with one.
fn skip_interim(buf: &mut BytesMut) -> bool {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len))
            if resp
                .code
                .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
        {
            let _ = buf.split_to(len);
            true
        }
        _ => false,
    }
}

/// Whether `buf` holds a whole head (ends with an empty line).
fn head_complete(buf: &[u8]) -> bool {
    memchr::memmem::find(buf, b"\r\n\r\n").is_some()
}

/// A source of bytes for [`Decoder`]: reads more into `buf`, first making room for `want`
/// bytes if less than a quarter of that is free; `Ok(0)` at the end of the stream.
pub trait Fill {
    fn poll_fill(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>>;
}

/// Makes room for `want` bytes in `buf` if less than a quarter of that is free.
pub fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want / 4 {
        // Reclaims the buffer's own allocation when the frames cut from it are gone. A little
        // more than `want`: a read that fills all the room leaves the socket marked readable,
        // and the next read (for the next message) would come back empty first.
        buf.reserve(want + 512);
    }
}

/// Reads from `r` into `buf`'s spare room (made first, see [`make_room`]).
pub fn fill_from<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    want: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    make_room(buf, want);
    tokio_util::io::poll_read_buf(Pin::new(r), cx, buf)
}

impl<T: AsyncRead + AsyncWrite + Unpin> Fill for Stream<T> {
    fn poll_fill(
        &mut self,
        buf: &mut BytesMut,
        want: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        // A plain socket without a buffer reads into the stack first, and makes a buffer
        // only for bytes that came: a connection whose peer sends nothing (a new client
        // connection, or one whose buffer was given back while it sat idle) holds none
        // meanwhile. (Waiting for readiness would not do: a new socket counts as readable
        // until a read says otherwise.)
        if buf.capacity() == 0
            && let Stream::Tcp(s) = self
        {
            let mut stack = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut stack[..want.clamp(1, 4096)]);
            std::task::ready!(Pin::new(s).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if !got.is_empty() {
                make_room(buf, want);
                buf.extend_from_slice(got);
            }
            return Poll::Ready(Ok(got.len()));
        }
        fill_from(self, buf, want, cx)
    }
}

#[derive(Clone, Copy)]
enum State {
    /// `n` bytes of body remain.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// `n` bytes of chunk data remain, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// Everything until the peer closes.
    Eof,
    Done,
    /// The body broke (malformed framing, the connection failed).
    Failed,
}

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
    /// Until the peer closes the connection (responses only).
    Close,
}

/// Reads one message body (RFC 9112 §6, §7.1) out of a connection's buffer and socket, for
/// either side: the upstream's response bodies and the client's request bodies.
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: BodyFraming) -> Decoder {
        Decoder {
            state: match framing {
                BodyFraming::Length(0) => State::Done,
                BodyFraming::Length(n) => State::Length(n),
                BodyFraming::Chunked => State::ChunkSize,
                BodyFraming::Close => State::Eof,
            },
        }
    }

    pub fn done() -> Decoder {
        Decoder { state: State::Done }
    }

    /// The body was read to its end (not broken off).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Nothing more will come: read to its end, or broken.
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    /// Body bytes still due, when the body has a known length.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }

    fn fail(&mut self, e: ConnError) -> Poll<Option<Result<Frame<Bytes>, ConnError>>> {
        self.state = State::Failed;
        Poll::Ready(Some(Err(e)))
    }

    /// The next frame: what `buf` holds first, then what `io` brings.
    pub fn poll_frame<F: Fill>(
        &mut self,
        io: &mut F,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ConnError>>> {
        loop {
            // What the buffer holds decides: each arm answers, moves on, or falls through to
            // read more.
            match self.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::Length(n) | State::ChunkData(n) if !buf.is_empty() => {
                    // More of a body of known length is due: take what has already arrived,
                    // without waiting, so a body that came whole leaves as one frame (one
                    // write to the client) instead of one per read.
                    if matches!(self.state, State::Length(_))
                        && (buf.len() as u64) < n
                        && buf.len() < READ_MAX
                    {
                        let want = (n - buf.len() as u64).min((READ_MAX - buf.len()) as u64);
                        match io.poll_fill(buf, want as usize, cx) {
                            Poll::Ready(Ok(0)) => return self.fail(cut_short()),
                            Poll::Ready(Ok(_)) => continue,
                            Poll::Ready(Err(e)) => return self.fail(ConnError::Io(e)),
                            // Nothing more yet: what is there goes now.
                            Poll::Pending => {}
                        }
                    }
                    let take = n.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    let left = n - take;
                    let length = matches!(self.state, State::Length(_));
                    self.state = match (length, left) {
                        (true, 0) => State::Done,
                        (true, l) => State::Length(l),
                        (false, 0) => State::ChunkEnd,
                        (false, l) => State::ChunkData(l),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Eof if !buf.is_empty() => {
                    let data = buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // The line is checked for a bare LF first: httparse takes one inside a chunk
                // extension as part of it, where other parsers end the line (smuggling).
                State::ChunkSize => match memchr::memchr(b'\n', buf) {
                    None if buf.len() < MAX_CHUNK_LINE => {}
                    None => return self.fail(ConnError::Protocol("chunk-size line too long")),
                    Some(nl) if nl >= MAX_CHUNK_LINE => {
                        return self.fail(ConnError::Protocol("chunk-size line too long"));
                    }
                    Some(nl) if nl == 0 || buf[nl - 1] != b'\r' => {
                        return self.fail(ConnError::Protocol("bare LF in a chunk-size line"));
                    }
                    Some(_) => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            let _ = buf.split_to(used);
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size)
                            };
                            continue;
                        }
                        Ok(httparse::Status::Partial) | Err(_) => {
                            return self.fail(ConnError::Protocol("invalid chunk size"));
                        }
                    },
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return self.fail(ConnError::Protocol("chunk longer than its size"));
                        }
                    } else if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = State::ChunkSize;
                        continue;
                    } else {
                        return self.fail(ConnError::Protocol("chunk longer than its size"));
                    }
                }
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.state = State::Done;
                        return Poll::Ready(None);
                    }
                    let mut slots = [httparse::EMPTY_HEADER; 64];
                    match httparse::parse_headers(&buf[..], &mut slots) {
                        Ok(httparse::Status::Complete((used, _))) if used > MAX_TRAILERS => {
                            return self.fail(ConnError::Protocol("trailers larger than 16 KiB"));
                        }
                        Ok(httparse::Status::Complete((used, _))) if has_bare_lf(&buf[..used]) => {
                            return self.fail(ConnError::Protocol("bare LF in trailers"));
                        }
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields.iter() {
                                let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) else {
                                    return self.fail(ConnError::Protocol("invalid trailer"));
                                };
                                trailers.append(n, v);
                            }
                            let _ = buf.split_to(used);
                            self.state = State::Done;
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => {}
                        Ok(httparse::Status::Partial) => {
                            return self.fail(ConnError::Protocol("trailers larger than 16 KiB"));
                        }
                        Err(_) => return self.fail(ConnError::Protocol("malformed trailers")),
                    }
                }
                State::Length(_) | State::ChunkData(_) | State::Eof => {}
            }
            // A body of known length is read in pieces as large as what remains (up to a
            // limit).
            let want = match self.state {
                State::Length(n) | State::ChunkData(n) => usize::try_from(n)
                    .unwrap_or(READ_MAX)
                    .clamp(READ_SIZE, READ_MAX),
                _ => READ_SIZE,
            };
            let n = match ready!(io.poll_fill(buf, want, cx)) {
                Ok(n) => n,
                Err(e) => return self.fail(ConnError::Io(e)),
            };
            if n == 0 {
                // The end of a close-delimited body.
                if let State::Eof = self.state {
                    self.state = State::Done;
                    return Poll::Ready(None);
                }
                return self.fail(cut_short());
            }
        }
    }
}

/// A response body read straight from its connection. When it has been read to its end, the
/// connection is ready for another request ([`ResponseBody::take_conn`]).
pub struct ResponseBody<S> {
    conn: Option<Box<H1Conn<S>>>,
    dec: Decoder,
    /// The connection may carry another request once this body is read.
    keep: bool,
}

impl<S> ResponseBody<S> {
    /// The connection, once the body has ended and the connection can be reused.
    pub fn take_conn(&mut self) -> Option<Box<H1Conn<S>>> {
        if self.dec.is_done() && self.keep {
            self.conn.take()
        } else {
            None
        }
    }

    fn finish(&mut self) {
        // Bytes after the answer were never asked for: the connection is out of step.
        if self.conn.as_ref().is_some_and(|c| !c.buf.is_empty()) {
            self.keep = false;
        }
        match &mut self.conn {
            Some(_) if !self.keep => self.conn = None,
            // A large answer grew the buffer: an idle connection keeps only a small one.
            Some(c) if c.buf.capacity() > IDLE_BUF_MAX => c.buf = BytesMut::new(),
            _ => {}
        }
    }
}

impl<S: Unpin> HttpBody for ResponseBody<S> {
    type Data = Bytes;
    type Error = ConnError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ConnError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let c = &mut **conn;
        let r = this.dec.poll_frame(&mut c.io, &mut c.buf, cx);
        if this.dec.is_over() && r.is_ready() {
            if this.dec.is_done() {
                this.finish();
            } else {
                this.keep = false;
                this.conn = None;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.dec.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.dec.size_hint()
    }
}

/// Whether a line in `b` ends with LF alone.
fn has_bare_lf(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', b).any(|nl| nl == 0 || b[nl - 1] != b'\r')
}

fn cut_short() -> ConnError {
    ConnError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed in the middle of the body",
    ))
}

/// Writes header (or trailer) fields as `name: value` lines.
pub fn push_fields(w: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        w.extend_from_slice(name.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(value.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
}

/// `n` in lowercase hex, without leading zeros.
pub fn hex(mut n: usize, out: &mut [u8; 16]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &out[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names come from the previous head when the bytes match at the same position, and are
    /// parsed (and remembered) otherwise; the answer is always what `from_bytes` gives.
    #[test]
    fn names_are_remembered_per_position() {
        let mut names = Names::default();
        let heads: [&[&[u8]]; 6] = [
            &[b"Server", b"Content-Type", b"X-Request-Id"],
            &[b"Server", b"Content-Type", b"X-Request-Id"],
            &[b"server", b"X-Request-Id", b"Content-Type", b"Via"],
            &[b"server", b"X-Request-Id"],
            &[b"server", b"X-Request-Id", b"Content-Type", b"Via"],
            &[],
        ];
        for head in heads {
            for (i, raw) in head.iter().enumerate() {
                assert_eq!(
                    names.get(i, raw).unwrap(),
                    HeaderName::from_bytes(raw).unwrap(),
                    "{i} {raw:?}"
                );
            }
        }
        // After the heads above, the last one is what is remembered.
        assert_eq!(names.names.len(), 4);
        assert_eq!(names.raw, b"serverX-Request-IdContent-TypeVia");
        // An invalid name is refused and does not disturb what is remembered.
        assert!(names.get(1, b"bad name").is_err());
        assert_eq!(names.get(0, b"server").unwrap(), header::SERVER);
        // Bounded: a hundred long names keep at most NAMES_MAX and NAMES_RAW_MAX.
        let mut names = Names::default();
        for i in 0..100 {
            let raw = format!("x-{i:0>60}");
            assert_eq!(names.get(i, raw.as_bytes()).unwrap().as_str(), raw);
        }
        assert!(names.names.len() <= NAMES_MAX && names.raw.len() <= NAMES_RAW_MAX);
        assert!(!names.names.is_empty());
    }

    /// A request without `Host` gets one from its URI, first after the request line; one
    /// with `Host` is written as it is, once.
    #[tokio::test]
    async fn host_comes_first_and_once() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let mut conn = H1Conn::new(
            Stream::<tokio_rustls::client::TlsStream<TcpStream>>::Tcp(s),
            (),
        );
        let cases: [(&str, Option<&str>, &str); 2] = [
            (
                "http://up.example:8080/a?b=1",
                None,
                "GET /a?b=1 HTTP/1.1\r\nhost: up.example:8080\r\nx-one: 1\r\n\r\n",
            ),
            (
                "http://up.example:8080/",
                Some("client.example"),
                "GET / HTTP/1.1\r\nx-one: 1\r\nhost: client.example\r\n\r\n",
            ),
        ];
        for (uri, host, want) in cases {
            let mut req = Request::builder().uri(uri).header("x-one", "1");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            conn.write_head(
                &req.body(http_body_util::Empty::<Bytes>::new()).unwrap(),
                None,
            );
            assert_eq!(String::from_utf8_lossy(&conn.out), want);
        }
        // The trace context follows the request's own headers.
        let tp = crate::observe::trace::traceparent(&[0xab; 16], &[0x01; 8], true);
        let req = Request::builder()
            .uri("http://up.example:8080/t")
            .header("host", "h")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        conn.write_head(&req, Some(&tp));
        assert_eq!(
            String::from_utf8_lossy(&conn.out),
            format!(
                "GET /t HTTP/1.1\r\nhost: h\r\ntraceparent: 00-{}-{}-01\r\n\r\n",
                "ab".repeat(16),
                "01".repeat(8)
            )
        );
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"12"), Some(12));
        assert_eq!(content_length(b"5, 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b"0x5"), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn hex_sizes() {
        let mut b = [0u8; 16];
        assert_eq!(hex(0, &mut b), b"0");
        assert_eq!(hex(255, &mut b), b"ff");
        assert_eq!(hex(4096, &mut b), b"1000");
        use crate::base::headers::decimal;
        for n in [
            0,
            7,
            9,
            10,
            42,
            99,
            100,
            101,
            1005,
            65_535,
            1_000_000,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes(), "{n}");
        }
        // Every value below 100,000, so each pair of the table is read at each position.
        for n in 0..100_000u64 {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    /// Hands out `pieces` one read at a time.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl Fill for Pieces {
        fn poll_fill(
            &mut self,
            buf: &mut BytesMut,
            _want: usize,
            _cx: &mut Context<'_>,
        ) -> Poll<io::Result<usize>> {
            let p = self.0.pop_front().unwrap_or_default();
            buf.extend_from_slice(&p);
            Poll::Ready(Ok(p.len()))
        }
    }

    /// Decodes `input` delivered in pieces of `step` bytes: the data, the trailers' count, and
    /// the error if the body broke.
    fn decode(framing: BodyFraming, input: &[u8], step: usize) -> (Vec<u8>, usize, Option<String>) {
        let mut io = Pieces(input.chunks(step).map(<[u8]>::to_vec).collect());
        let mut buf = BytesMut::new();
        let mut dec = Decoder::new(framing);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut data, mut trailers) = (Vec::new(), 0);
        loop {
            match dec.poll_frame(&mut io, &mut buf, &mut cx) {
                Poll::Ready(Some(Ok(f))) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers += f.into_trailers().map_or(0, |t| t.len()),
                },
                Poll::Ready(Some(Err(e))) => return (data, trailers, Some(e.to_string())),
                Poll::Ready(None) => {
                    // Nothing after the body is taken.
                    assert!(dec.is_done());
                    return (data, trailers, None);
                }
                Poll::Pending => unreachable!(),
            }
        }
    }

    #[test]
    fn bodies_decode_the_same_however_they_arrive() {
        let chunked = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n";
        for step in [1, 2, 7, 4096] {
            assert_eq!(
                decode(BodyFraming::Chunked, chunked, step),
                (b"abcde".to_vec(), 2, None),
                "step {step}"
            );
            assert_eq!(
                decode(BodyFraming::Length(5), b"hello", step),
                (b"hello".to_vec(), 0, None)
            );
        }
        let long = "a".repeat(MAX_CHUNK_LINE);
        for (name, input) in [
            (
                "bare LF in an extension",
                "3;x\nabc\r\n0\r\n\r\n".to_string(),
            ),
            ("long extension", format!("3;{long}\r\nabc\r\n0\r\n\r\n")),
            (
                "long trailers",
                format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(MAX_TRAILERS)),
            ),
            (
                "bare LF in trailers",
                "0\r\nX-T: 1\nX-U: 2\r\n\r\n".to_string(),
            ),
            (
                "data longer than its size",
                "3\r\nabcdef\r\n0\r\n\r\n".to_string(),
            ),
            ("unreadable size", "zz\r\nabc\r\n0\r\n\r\n".to_string()),
            ("cut short", "5\r\nab".to_string()),
        ] {
            for step in [1, 7, 4096, input.len()] {
                let (_, _, err) = decode(BodyFraming::Chunked, input.as_bytes(), step);
                assert!(err.is_some(), "{name}, step {step}: accepted");
            }
        }
    }

    fn head(bytes: &[u8]) -> Result<Option<(http::response::Parts, Shape)>, ConnError> {
        parse_head(&mut BytesMut::from(bytes), &mut Names::default())
    }

    #[test]
    fn response_framing() {
        let (p, s) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x"], "y");
        assert!(matches!(s.framing, BodyFraming::Length(5)) && s.keep_alive);
        let (_, s) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(s.framing, BodyFraming::Chunked));
        let (_, s) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(s.framing, BodyFraming::Close));
        let (p, s) = head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!s.keep_alive);
        // Headers about this connection only are consumed; a Connection list naming other
        // headers is kept so the pipeline removes those too.
        assert!(p.headers.get("connection").is_none());
        let (p, s) = head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(s.keep_alive && matches!(s.framing, BodyFraming::Chunked));
        assert_eq!(p.headers["connection"], "keep-alive, X-Hop");
        assert!(
            p.headers.get("keep-alive").is_none() && p.headers.get("transfer-encoding").is_none()
        );
        assert_eq!(p.headers["x-hop"], "1");
        let (p, s) = head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(p.version, Version::HTTP_10);
        assert!(matches!(s.framing, BodyFraming::Close) && !s.keep_alive);
        let (_, s) =
            head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(s.keep_alive);
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-").unwrap().is_none());
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
