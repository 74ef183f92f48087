//! Portico's own HTTP/1.1 server connection, for every HTTP/1.1 client (plain TCP and TLS).
//!
//! hyper's server connection kept a 16 KiB read buffer, an 8 KiB write buffer and a
//! two-sided dispatcher per client connection, and it accepts request framing a gateway must
//! refuse, so every head had to go through httparse twice (a framing guard in front of hyper,
//! then hyper). This connection parses each head once and refuses, while building the
//! request, the shapes proxies have disagreed on (request smuggling): both `Content-Length`
//! and `Transfer-Encoding`, more than one `Content-Length` or one that is not a number, a
//! `Transfer-Encoding` other than one `chunked`, a bare-LF line ending. A refused head is
//! answered 400 through the request handler (so it is logged) and the connection closes
//! after it, before anything behind the head is read.
//!
//! One task drives the connection: it reads a head, runs the handler, writes the answer (head
//! and body gathered into as few writes as the body allows), then reads the next head. The
//! request body reads from the same transport through a shared handle (a lock held for one
//! poll at a time), so it can stream while the answer is being written.
//!
//! Also here: `100 Continue` when a body that asked for it is first read; `Connection`
//! keep-alive rules for HTTP/1.0 and 1.1; pipelined requests (answered in order); the
//! request-head and idle timeouts; an unread request body of up to 64 KiB is drained so the
//! connection stays usable; a `101 Switching Protocols` hands the transport (and any bytes
//! already read) to the handler's tunnel; an HTTP/2 prior-knowledge preface on plain TCP hands
//! the connection to hyper's HTTP/2 server. HTTP/2 (by preface or by ALPN) stays on hyper.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as HttpBody;
use tokio::sync::{oneshot, watch};

use crate::base::conn::ConnInfo;
use crate::body::ClientBody;
use crate::body::problem::Problem;
use crate::http1::codec::{BodyFraming, Decoder, Fill};
use crate::http1::server::{
    OnUpgrade, ReadSide, Refusal, Refused, RequestBody, Shared, Transport, Upgraded, head_end,
    poll_write_all,
};
use crate::listen::serving::Serving;
use crate::listen::settings::Settings;

/// Request heads are read in pieces of this size.
const HEAD_READ: usize = 4096;
/// An unread request body up to this size is read and dropped after the answer, so the
/// connection can carry the next request; a larger one closes the connection.
const DRAIN_MAX: u64 = 64 * 1024;
/// Body frames up to this size are copied behind the head (one write); larger ones are
/// written from where they are.
const COPY_MAX: usize = 4096;
/// Bytes gathered before a write.
const WRITE_BATCH: usize = 16 * 1024;
/// A connection keeps a read buffer at most this large between requests.
const IDLE_BUF_MAX: usize = 16 * 1024;
/// How long a connection waits between requests before its read buffer is given back.
const IDLE_SHRINK_AFTER: Duration = Duration::from_secs(1);
/// After a `Connection: close` answer, how long unread client bytes are read and dropped
/// before the socket closes, so the client sees the answer rather than a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX: usize = 256 * 1024;

/// When the gateway drains, how long a connection between requests waits for one more (see
/// `serve`).
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(500);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What the connection's task tells the shutdown watcher.
struct Flags {
    /// Waiting for a head with nothing of it read: the connection can close at once.
    idle: AtomicBool,
    /// The gateway is shutting down: answer what is in progress, then close.
    draining: AtomicBool,
}

/// Serves one HTTP/1.1 client connection (plain or TLS) until it closes.
pub async fn serve(
    io: Transport,
    s: Arc<Settings>,
    conn: Arc<ConnInfo>,
    inner: Arc<Serving>,
    mut shutdown: watch::Receiver<bool>,
) {
    let flags = Flags {
        idle: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    };
    let run = run(io, &s, conn, &inner, &flags);
    tokio::pin!(run);
    if let crate::base::future::Either::Left(()) =
        crate::base::future::until(run.as_mut(), shutdown.wait_for(|s| *s)).await
    {
        return;
    }
    flags.draining.store(true, Ordering::Relaxed);
    if flags.idle.load(Ordering::Relaxed) {
        // Between requests. The client may have sent its next one already (on its way, or in
        // the socket's buffer): closing now would lose it, and the client would see the
        // connection reset instead of an answer (an error for any client that does not resend
        // on its own). So the connection waits a moment: a request that comes is answered,
        // with `Connection: close`; a connection still idle after that closes.
        let grace = tokio::time::sleep(DRAIN_IDLE_GRACE);
        if let crate::base::future::Either::Left(()) =
            crate::base::future::until(run.as_mut(), grace).await
        {
            return;
        }
        if flags.idle.load(Ordering::Relaxed) {
            return;
        }
    }
    run.await;
}

/// How reading a head ended.
// `Head` is large, but it is moved once per request, which costs less than boxing it (an
// allocation per request).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Read {
    Head(Parsed),
    /// The client closed, timed out while idle, or the socket failed: close quietly.
    Closed,
    /// Answer with this problem and close.
    Refuse(Problem),
    /// An HTTP/2 prior-knowledge preface.
    Http2,
}

pub(crate) struct Parsed {
    pub(crate) req: Request<ClientBody>,
    pub(crate) framing: Option<BodyFraming>,
    keep_alive: bool,
    expect: bool,
    /// The client accepts trailers on a chunked answer (`TE: trailers`).
    trailers: bool,
    head_only: bool,
    refused: bool,
    upgrade: Option<oneshot::Sender<Upgraded>>,
}

async fn run(
    io: Transport,
    s: &Settings,
    conn: Arc<ConnInfo>,
    inner: &Arc<Serving>,
    flags: &Flags,
) {
    let sh = Arc::new(Shared {
        rd: Mutex::new(ReadSide {
            io,
            buf: BytesMut::new(),
            dec: Decoder::done(),
            expect: None,
            names: crate::http1::codec::Names::default(),
        }),
    });
    let mut out = Vec::new();
    let mut timer = HeadTimer {
        sleep: None,
        phase: None,
        until: tokio::time::Instant::now(),
    };
    let mut first = true;
    loop {
        timer.phase = None;
        let read = std::future::poll_fn(|cx| poll_head(&sh, s, first, flags, &mut timer, cx)).await;
        first = false;
        let p = match read {
            Read::Head(p) => p,
            Read::Closed => return,
            Read::Refuse(problem) => {
                // Boxed, like the other rare paths below: a connection's task is as large as
                // the largest state it can be in, and every connection pays for it (the
                // answer held across this wait alone added 256 bytes).
                let _ = Box::pin(refuse(&sh, &mut out, problem, inner)).await;
                return Box::pin(linger(sh)).await;
            }
            Read::Http2 => {
                let Some(io) = sh.into_parts() else {
                    return;
                };
                let shutdown = inner.shutdown.subscribe();
                return Box::pin(crate::listen::h2::serve_io(
                    hyper_util::rt::TokioIo::new(io),
                    s,
                    conn,
                    inner.clone(),
                    shutdown,
                ))
                .await;
            }
        };
        let Parsed {
            mut req,
            framing,
            mut keep_alive,
            expect,
            trailers,
            head_only,
            refused,
            upgrade,
        } = p;
        let version = req.version();
        if let Some(f) = framing {
            let mut rd = sh.read();
            rd.dec = Decoder::new(f);
            rd.expect = (expect && version == Version::HTTP_11).then_some(0);
            drop(rd);
            *req.body_mut() = ClientBody::H1(RequestBody {
                shared: Some(sh.clone()),
            });
        }
        let rt = inner.runtime.load_full();
        // While the answer is awaited, a client that closes its connection cancels the
        // request at once (the upstream call with it) instead of holding an upstream
        // connection until the route's timeout. The handler's future is boxed, built in its
        // box: held in this task's state, it made every connection's task ~7 KB for as long
        // as the connection lived, idle or not (its largest state is the pipeline's); boxed,
        // an idle connection holds a pointer, and a request's future is made in memory that
        // the previous request freed, warm in the cache, rather than in its connection's.
        let answered = WatchClient {
            answer: crate::base::future::box_in_place(|| {
                crate::pipeline::handle::handle(rt, conn.clone(), req)
            }),
            sh: &sh,
            limit: s.max_head,
        }
        .await;
        let mut resp = match answered {
            Some(Ok(r)) => r,
            Some(Err(never)) => match never {},
            None => return,
        };
        // The answer goes out now: a `100 Continue` not yet sent never will be.
        let (body_left, owed) = {
            let mut rd = sh.read();
            (!rd.dec.is_over(), rd.expect.take().is_some())
        };
        // A client still waiting for `100 Continue` may or may not send its body now: the
        // connection's next bytes are unknown, so it closes after this answer.
        if refused || (body_left && owed) || flags.draining.load(Ordering::Relaxed) {
            keep_alive = false;
        }
        if body_left && Arc::strong_count(&sh) == 1 {
            // Nobody will read the rest of the body: drop it if it is small, else close.
            let small = sh.read().dec.remaining().is_some_and(|n| n <= DRAIN_MAX);
            keep_alive &= small;
        }
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_some();
        let keep = match write_response(
            &sh,
            &mut out,
            &mut resp,
            version,
            keep_alive,
            head_only,
            trailers,
            s.send_timeout,
        )
        .await
        {
            Ok(keep) => keep,
            Err(_) => return,
        };
        // Done with now: its body holds the request's log record and concurrency places.
        drop(resp);
        if switching {
            if let (Some(io), Some(tx)) = (sh.into_parts(), upgrade) {
                let _ = tx.send(io);
            }
            return;
        }
        if !keep {
            return Box::pin(linger(sh)).await;
        }
        // A body left unread (small enough to keep the connection) is read and dropped.
        let unread = !sh.read().dec.is_over();
        if unread {
            if Arc::strong_count(&sh) > 1 {
                // Still held (a body streaming somewhere): the connection cannot move on.
                return;
            }
            let drained = Box::pin(tokio::time::timeout(s.header_timeout, drain(&sh))).await;
            if !matches!(drained, Ok(true)) {
                return;
            }
        }
        let mut rd = sh.read();
        if rd.buf.is_empty() && rd.buf.capacity() > IDLE_BUF_MAX {
            rd.buf = BytesMut::new();
        }
        if out.capacity() > IDLE_BUF_MAX {
            out = Vec::new();
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's answer, or `None` once the client has gone (see `client_gone`).
    struct WatchClient<'a, F> {
        #[pin]
        answer: F,
        sh: &'a Shared,
        limit: usize,
    }
}

impl<F: Future> Future for WatchClient<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.answer.poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending if client_gone(this.sh, *this.limit, cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether the client closed its connection (or it failed) while its request is answered.
/// Only looked at once the request body has been read whole (until then the body's reader
/// owns the socket and sees the close itself); what the client sends meanwhile, pipelined
/// requests, is kept, up to `limit` bytes, after which the socket is no longer read.
fn client_gone(sh: &Shared, limit: usize, cx: &mut Context<'_>) -> bool {
    let Ok(mut rd) = sh.rd.try_lock() else {
        return false;
    };
    let rd = &mut *rd;
    if !rd.dec.is_over() {
        return false;
    }
    // Readiness first: it registers the wake-up without preparing a read (buffer room, the
    // read call), which is all the common case, a client that waits quietly, needs.
    let tcp = match &rd.io {
        Transport::Tcp(s) => s,
        Transport::Tls(t) => t.get_ref().0,
    };
    match tcp.poll_read_ready(cx) {
        Poll::Pending => return false,
        Poll::Ready(Err(_)) => return true,
        Poll::Ready(Ok(())) => {}
    }
    while rd.buf.len() < limit {
        match rd.io.poll_fill(&mut rd.buf, HEAD_READ, cx) {
            Poll::Ready(Ok(0) | Err(_)) => return true,
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return false,
        }
    }
    false
}

/// Answers a head refused before it could reach the handler (the connection closes after).
async fn refuse(
    sh: &Shared,
    out: &mut Vec<u8>,
    problem: Problem,
    inner: &Serving,
) -> io::Result<bool> {
    let rt = inner.runtime.load_full();
    let cfg = &rt.config.server;
    let id = crate::base::headers::request_id(&HeaderMap::new(), &cfg.request_id_header);
    let mut resp = problem.response(&id, &cfg.request_id_header);
    let send_timeout = cfg.send_timeout;
    write_response(
        sh,
        out,
        &mut resp,
        Version::HTTP_11,
        false,
        false,
        false,
        send_timeout,
    )
    .await
}

/// Reads the rest of an unread request body and drops it; `true` when it ended cleanly.
async fn drain(sh: &Shared) -> bool {
    std::future::poll_fn(|cx| {
        let mut rd = sh.read();
        let rd = &mut *rd;
        loop {
            match ready!(rd.dec.poll_frame(&mut rd.io, &mut rd.buf, cx)) {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return Poll::Ready(false),
                None => return Poll::Ready(rd.dec.is_done()),
            }
        }
    })
    .await
}

/// Closes the connection after a `Connection: close` answer: ends the sending side, then
/// reads (and drops) what the client still sends for a while, so that unread bytes do not
/// make the kernel reset the connection before the client has read the answer.
async fn linger(sh: Arc<Shared>) {
    let Some(mut io) = sh.into_parts() else {
        return;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if io.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_MAX {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// The deadline of the current wait for a head.
struct HeadTimer {
    /// Made when a connection first has to wait, then reset.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What the deadline was set for in this wait (`Some(true)`: idle, nothing of the head
    /// read yet); `None` until the wait first blocks.
    phase: Option<bool>,
    /// The phase's deadline (the sleep may first fire earlier, to give back the buffer).
    until: tokio::time::Instant,
}

/// Waits for a whole request head and parses it.
fn poll_head(
    sh: &Shared,
    s: &Settings,
    first: bool,
    flags: &Flags,
    timer: &mut HeadTimer,
    cx: &mut Context<'_>,
) -> Poll<Read> {
    let mut rd = sh.read();
    let rd = &mut *rd;
    loop {
        // Empty lines before a request are allowed (RFC 9112 §2.2).
        while rd.buf.starts_with(b"\r\n") {
            rd.buf.advance(2);
        }
        if !rd.buf.is_empty() {
            if first
                && s.h2
                && matches!(rd.io, Transport::Tcp(_))
                && PREFACE.starts_with(&rd.buf[..rd.buf.len().min(PREFACE.len())])
            {
                if rd.buf.len() >= PREFACE.len() {
                    return Poll::Ready(Read::Http2);
                }
            } else {
                match head_end(&rd.buf) {
                    // Refused at once, even before the head is complete: a head ended by
                    // LF LF would otherwise never look complete.
                    Err(_) => {
                        return Poll::Ready(Read::Head(refused_head(Refusal::BareLf)));
                    }
                    // The limit counts the whole head: request line, header lines and the
                    // empty line that ends it. Checked on the complete head too, since one
                    // read can bring a head larger than the limit all at once.
                    Ok(Some(end)) if end + 4 > s.max_head => {
                        return Poll::Ready(Read::Refuse(Problem::HeadTooLarge));
                    }
                    Ok(Some(end)) => {
                        return Poll::Ready(parse(
                            &mut rd.buf,
                            &mut rd.names,
                            end + 4,
                            s.max_headers,
                        ));
                    }
                    Ok(None) if rd.buf.len() > s.max_head => {
                        return Poll::Ready(Read::Refuse(Problem::HeadTooLarge));
                    }
                    Ok(None) => {}
                }
            }
        }
        // Between requests, also while draining: `serve` decides how long to wait then.
        let idle = rd.buf.is_empty() && !first;
        flags.idle.store(idle, Ordering::Relaxed);
        match rd.io.poll_fill(&mut rd.buf, HEAD_READ, cx) {
            Poll::Ready(Ok(0)) => {
                flags.idle.store(false, Ordering::Relaxed);
                return Poll::Ready(Read::Closed);
            }
            Poll::Ready(Ok(_)) => {
                flags.idle.store(false, Ordering::Relaxed);
                continue;
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Read::Closed),
            Poll::Pending => {}
        }
        // Waiting. The idle timeout runs while nothing of the next request has come; the
        // head timeout from its first byte (from the accept, for a connection's first
        // request). The deadline is set once per phase, so a client trickling bytes cannot
        // push it back.
        if timer.phase != Some(idle) {
            let after = if idle {
                s.idle_timeout
            } else {
                s.header_timeout
            };
            let now = tokio::time::Instant::now();
            timer.until = now + after;
            // Between requests, the read buffer is given back once the wait has lasted a
            // moment: a connection kept open by a client that is not using it then holds no
            // buffer (a busy connection never waits that long, and keeps its buffer).
            let first = if idle && rd.buf.capacity() > 0 {
                (now + IDLE_SHRINK_AFTER).min(timer.until)
            } else {
                timer.until
            };
            match &mut timer.sleep {
                Some(t) => t.as_mut().reset(first),
                None => timer.sleep = Some(Box::pin(tokio::time::sleep_until(first))),
            }
            timer.phase = Some(idle);
        }
        if let Some(t) = &mut timer.sleep
            && std::future::Future::poll(t.as_mut(), cx).is_ready()
        {
            if idle && t.deadline() < timer.until {
                rd.buf = BytesMut::new();
                t.as_mut().reset(timer.until);
                if std::future::Future::poll(t.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
            }
            flags.idle.store(false, Ordering::Relaxed);
            return Poll::Ready(if idle || rd.buf.is_empty() {
                Read::Closed
            } else {
                Read::Refuse(Problem::HeadTimeout)
            });
        }
        return Poll::Pending;
    }
}

/// A stand-in for a head refused before it could be parsed: the handler answers it with 400.
pub(crate) fn refused_head(r: Refusal) -> Parsed {
    let mut req = Request::new(ClientBody::H1(RequestBody { shared: None }));
    req.extensions_mut().insert(Refused(r));
    Parsed {
        req,
        framing: None,
        keep_alive: false,
        expect: false,
        trailers: false,
        head_only: false,
        refused: true,
        upgrade: None,
    }
}

/// Parses the head that makes up the first `len` bytes of `buf` and cuts it off. Inlined
/// into `poll_head`: called from a second place (the fuzzing entry), it was not, and its
/// result was copied out per request.
#[inline(always)]
pub(crate) fn parse(
    buf: &mut BytesMut,
    names: &mut crate::http1::codec::Names,
    len: usize,
    max_headers: usize,
) -> Read {
    let mut stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut heap: Vec<std::mem::MaybeUninit<httparse::Header<'_>>>;
    let slots = if max_headers <= stack.len() {
        &mut stack[..max_headers]
    } else {
        heap = (0..max_headers)
            .map(|_| std::mem::MaybeUninit::uninit())
            .collect();
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(&buf[..len], slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Read::Refuse(Problem::HeadTooLarge),
        Err(httparse::Error::Version) => return Read::Refuse(Problem::HttpVersion),
        Ok(httparse::Status::Partial) | Err(_) => {
            return Read::Refuse(Problem::BadRequest("The request head is malformed."));
        }
    }
    let Ok(method) = Method::from_bytes(req.method.unwrap_or("").as_bytes()) else {
        return Read::Refuse(Problem::BadRequest("The request head is malformed."));
    };
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let path = req.path.unwrap_or("");
    let (po, pl) = (path.as_ptr() as usize - base, path.len());
    let mut few = [(0, 0, 0, 0); 24];
    let mut many = Vec::new();
    let spans = crate::http1::codec::header_spans(base, req.headers, &mut few, &mut many);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(po..po + pl)) else {
        return Read::Refuse(Problem::BadRequest(
            "The request target is not a valid URI.",
        ));
    };
    // Room for what the gateway adds before the request goes upstream (forwarding headers,
    // the request id): growing the map for them was ~1k instructions per request.
    let mut headers = HeaderMap::with_capacity(spans.len() + 8);
    let mut lengths = 0;
    let mut length = 0u64;
    let mut bad_length = false;
    let mut codings = 0;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut upgrade_token = false;
    let mut has_upgrade = false;
    let mut hosts = 0;
    let mut expect = false;
    let mut trailers = false;
    for (i, &(n, nl, v, vl)) in spans.iter().enumerate() {
        let Ok(name) = names.get(i, &head[n..n + nl]) else {
            return Read::Refuse(Problem::BadRequest("The request head is malformed."));
        };
        // SAFETY: `from_maybe_shared_unchecked` needs bytes that `HeaderValue::from_bytes`
        // would accept (http's invariant: no control characters but HTAB, no DEL). httparse
        // accepted this value, and what it accepts (HTAB, SP, visible ASCII, obs-text) is
        // exactly that set.
        #[allow(unsafe_code)]
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(v..v + vl)) };
        if name == header::CONTENT_LENGTH {
            lengths += 1;
            let d = value.as_bytes().trim_ascii();
            if d.is_empty() || d.len() > 19 || !d.iter().all(u8::is_ascii_digit) {
                bad_length = true;
            } else {
                length = std::str::from_utf8(d).map_or(0, |d| d.parse().unwrap_or(0));
            }
        } else if name == header::TRANSFER_ENCODING {
            codings += 1;
            chunked = value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONNECTION {
            for t in value.as_bytes().split(|b| *b == b',') {
                let t = t.trim_ascii();
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= t.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name == header::HOST {
            hosts += 1;
        } else if name == header::UPGRADE {
            has_upgrade = true;
        } else if name == header::EXPECT {
            expect = value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            trailers = value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        headers.append(name, value);
    }
    // The framing rules of the module comment.
    let refusal = if lengths > 0 && codings > 0 {
        Some(Refusal::LengthAndChunked)
    } else if lengths > 1 || bad_length {
        Some(Refusal::RepeatedLength)
    } else if codings > 1 || (codings == 1 && !chunked) {
        Some(Refusal::TransferCoding)
    } else if hosts > 1 {
        Some(Refusal::RepeatedHost)
    } else if hosts == 0 && version == Version::HTTP_11 {
        Some(Refusal::MissingHost)
    } else {
        None
    };
    let mut out = Request::new(ClientBody::H1(RequestBody { shared: None }));
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.version_mut() = version;
    *out.headers_mut() = headers;
    if let Some(r) = refusal {
        out.extensions_mut().insert(Refused(r));
        return Read::Head(Parsed {
            head_only: out.method() == Method::HEAD,
            req: out,
            framing: None,
            keep_alive: false,
            expect: false,
            trailers: false,
            refused: true,
            upgrade: None,
        });
    }
    let framing = if chunked {
        // Chunked from an HTTP/1.0 client is faulty framing (RFC 9112 §6.1): read it, then
        // close.
        close |= version == Version::HTTP_10;
        Some(BodyFraming::Chunked)
    } else if length > 0 {
        Some(BodyFraming::Length(length))
    } else {
        None
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive);
    let upgrade = if version == Version::HTTP_11 && has_upgrade && upgrade_token {
        let (tx, rx) = oneshot::channel();
        out.extensions_mut()
            .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
        Some(tx)
    } else {
        None
    };
    Read::Head(Parsed {
        head_only: out.method() == Method::HEAD,
        req: out,
        framing,
        keep_alive,
        expect,
        trailers,
        refused: false,
        upgrade,
    })
}

/// How an answer's body goes out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    Close,
}

/// Writes an answer: head, then body frames as they come, gathered into few writes. Returns
/// whether the connection may carry another request. The answer is borrowed, its body read
/// in place: taken by value, it would be copied twice more (into this future, then into its
/// parts), 288 bytes each time, into the connection's task, which is cold memory when many
/// connections are open.
#[allow(clippy::too_many_arguments)]
async fn write_response<B>(
    sh: &Shared,
    out: &mut Vec<u8>,
    resp: &mut Response<B>,
    version: Version,
    keep_alive: bool,
    head_only: bool,
    trailers_ok: bool,
    send_timeout: Duration,
) -> io::Result<bool>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let status = resp.status();
    let h = resp.headers();
    // One walk over the headers instead of three lookups by name (each hashes the name).
    let mut close = false;
    let mut length: Option<&HeaderValue> = None;
    let mut has_date = false;
    for (name, value) in h {
        if name == header::CONNECTION {
            close |= has_token(value.as_bytes(), b"close");
        } else if name == header::CONTENT_LENGTH {
            length = length.or(Some(value));
        } else if name == header::DATE {
            has_date = true;
        }
    }
    let mut keep = keep_alive && !close;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = length.and_then(|v| {
        std::str::from_utf8(v.as_bytes())
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    let (framing, add_length) = if no_body {
        (Out::None, None)
    } else if let Some(n) = declared {
        (Out::Length(n), None)
    } else if let Some(n) = resp.body().size_hint().exact() {
        (Out::Length(n), Some(n))
    } else if version == Version::HTTP_11 {
        (Out::Chunked, None)
    } else {
        keep = false;
        (Out::Close, None)
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in h {
        // Framing and persistence are this connection's, written below; a protocol switch
        // keeps its `Connection: upgrade`.
        if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && declared.is_none() && !no_body)
            || (name == header::CONNECTION && !switching)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        push_date(out);
    }
    if !switching {
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    match (framing, add_length) {
        (_, Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(crate::base::headers::decimal(n, &mut [0u8; 20]));
            out.extend_from_slice(b"\r\n");
        }
        (Out::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    let body = resp.body_mut();

    let mut done = framing == Out::None || framing == Out::Length(0);
    let mut ended = false;
    let mut sent = 0u64;
    let mut pos = 0;
    let mut big: Option<Bytes> = None;
    let mut tail: &'static [u8] = b"";
    let mut stall: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        loop {
            while !done && big.is_none() && out.len() - pos < WRITE_BATCH {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(d) => {
                            if d.is_empty() {
                                continue;
                            }
                            sent += d.len() as u64;
                            if let Out::Length(n) = framing
                                && sent > n
                            {
                                return Poll::Ready(Err(io::Error::other(
                                    "answer body longer than its Content-Length",
                                )));
                            }
                            let chunked = framing == Out::Chunked;
                            if chunked {
                                let mut size = [0u8; 16];
                                out.extend_from_slice(crate::http1::codec::hex(d.len(), &mut size));
                                out.extend_from_slice(b"\r\n");
                            }
                            if d.len() <= COPY_MAX {
                                out.extend_from_slice(&d);
                                if chunked {
                                    out.extend_from_slice(b"\r\n");
                                }
                            } else {
                                big = Some(d);
                                tail = if chunked { b"\r\n" } else { b"" };
                            }
                        }
                        Err(frame) => {
                            // Trailers go out only on a chunked answer to a client that said
                            // it takes them (`TE: trailers`), as hyper does.
                            if let (Ok(t), Out::Chunked) = (frame.into_trailers(), framing)
                                && !ended
                            {
                                ended = true;
                                out.extend_from_slice(b"0\r\n");
                                if trailers_ok {
                                    crate::http1::codec::push_fields(out, &t);
                                }
                                out.extend_from_slice(b"\r\n");
                            }
                        }
                    },
                    Poll::Ready(None) => {
                        done = true;
                        match framing {
                            Out::Length(n) if sent != n => {
                                return Poll::Ready(Err(io::Error::other(
                                    "answer body shorter than its Content-Length",
                                )));
                            }
                            Out::Chunked if !ended => out.extend_from_slice(b"0\r\n\r\n"),
                            _ => {}
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(io::Error::other(e.to_string())));
                    }
                    Poll::Pending => break,
                }
            }
            if pos < out.len() || big.is_some() {
                let mut parts = [&out[pos..], big.as_deref().unwrap_or(b""), tail];
                let before: usize = parts.iter().map(|p| p.len()).sum();
                let r = poll_write_all(&mut sh.read().io, cx, &mut parts);
                let left = [parts[0].len(), parts[1].len(), parts[2].len()];
                // A client that reads nothing for `send_timeout` while the answer waits is
                // dropped (the timer is made only once a write has had to wait).
                if r.is_pending() {
                    let deadline = tokio::time::Instant::now() + send_timeout;
                    let moved = left.iter().sum::<usize>() < before;
                    let t =
                        stall.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if moved {
                        t.as_mut().reset(deadline);
                    }
                    if t.as_mut().poll(cx).is_ready() {
                        metrics::counter!("portico_client_send_timeouts_total").increment(1);
                        return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                    }
                }
                pos = out.len() - left[0];
                if let Some(b) = &mut big {
                    b.advance(b.len() - left[1]);
                }
                tail = &tail[tail.len() - left[2]..];
                ready!(r)?;
                out.clear();
                pos = 0;
                big = None;
                continue;
            }
            if done {
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
    })
    .await?;
    if framing == Out::Close {
        keep = false;
    }
    Ok(keep)
}

/// Whether a comma-separated header value holds `token` (ASCII case ignored).
fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends a `Date` header for now, formatted once per second per thread.
fn push_date(out: &mut Vec<u8>) {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|c| {
        let (at, mut text) = c.get();
        if at != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() != text.len() {
                return;
            }
            text.copy_from_slice(s.as_bytes());
            c.set((secs, text));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&text);
        out.extend_from_slice(b"\r\n");
    });
}
