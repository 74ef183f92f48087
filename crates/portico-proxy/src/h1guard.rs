//! A guard in front of hyper on HTTP/1 connections that refuses request framing proxies
//! disagree on (request smuggling).
//!
//! hyper parses strictly but, as RFC 9112 allows, it *accepts* a few ambiguous shapes: a
//! request with both `Content-Length` and `Transfer-Encoding` (it drops the length), repeated
//! identical `Content-Length` lines (it keeps one), and bare-LF line endings. A gateway in
//! front of other proxies must refuse them instead. hyper exposes no hook before it interprets
//! those headers, so this wrapper follows the connection's message framing, holds each request
//! head back until it is complete, checks it with httparse (the parser hyper itself uses), and
//! only then releases it to hyper.
//!
//! A refused head is replaced by a synthetic request carrying a per-process secret, which the
//! request handler answers with a 400 problem response and `Connection: close`. hyper answers
//! pipelined requests in order, so that 400 is written after any earlier responses and the
//! bytes after the refused head are never read.
//!
//! Bodies are followed (Content-Length, chunked) but not judged: hyper's own decoder rejects a
//! malformed body. A chunk-size or trailer line the guard cannot follow (longer than 4 KiB, or
//! a size it cannot read) fails the read, which ends the connection. After an
//! `Upgrade`/`CONNECT` request, or on an HTTP/2 preface, the guard steps aside.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub const REJECT_HEADER: &str = "x-portico-reject";

/// The longest chunk-size or trailer line the guard follows (with its CRLF).
const MAX_LINE: usize = 4096;

/// The secret that marks a synthetic rejection request as ours, not a client's.
pub fn reject_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut out = String::new();
        for i in 0..2u8 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    })
}

/// Why a head was refused; the request handler turns it into the problem's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    LengthAndChunked,
    RepeatedLength,
    TransferCoding,
    BareLf,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::LengthAndChunked => "length-and-chunked",
            Refusal::RepeatedLength => "repeated-length",
            Refusal::TransferCoding => "transfer-coding",
            Refusal::BareLf => "bare-lf",
        }
    }

    pub fn from_code(c: &str) -> Option<Refusal> {
        [
            Refusal::LengthAndChunked,
            Refusal::RepeatedLength,
            Refusal::TransferCoding,
            Refusal::BareLf,
        ]
        .into_iter()
        .find(|r| r.code() == c)
    }

    pub fn detail(self) -> &'static str {
        match self {
            Refusal::LengthAndChunked => {
                "The request has both Content-Length and Transfer-Encoding."
            }
            Refusal::RepeatedLength => "The request has more than one Content-Length.",
            Refusal::TransferCoding => "Transfer-Encoding must be exactly `chunked`.",
            Refusal::BareLf => "The request head has a line ending without CR (bare LF).",
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a request head in `pending`.
    Head,
    /// `n` body bytes remain.
    Length(u64),
    /// A chunk-size line is being read into `line`.
    ChunkSize,
    /// `n` chunk data bytes remain, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data; `n` bytes of it remain.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until an empty line.
    Trailers,
    /// Not HTTP/1 framing any more (upgrade, HTTP/2) or framing the guard cannot follow:
    /// everything goes straight to hyper.
    PassThrough,
    /// A head was refused; `out` holds the synthetic request, then the stream ends.
    Refused,
    /// A chunk-size or trailer line the guard cannot follow (over-long, or a size it cannot
    /// read) in the middle of a body: after the bytes already judged, reading fails and hyper
    /// ends the connection. Stepping aside instead would let the next head reach hyper
    /// unchecked while the current answer may already be on its way.
    Broken,
}

/// Tells the request handler whether every request head on the connection so far went
/// through the guard's checks and passed. While it holds, the handler skips its own framing
/// checks (and the lookup of the refusal marker, a hashed header name per request); once a
/// head is refused, a client sends a header named like the marker, or the guard steps aside
/// (upgrade, HTTP/2, a head too big or malformed for hyper to accept), the handler checks
/// every request itself, and the connection is closed after the current answer.
#[derive(Debug)]
pub struct Checked(AtomicBool);

impl Checked {
    /// For connections that check every head themselves (Portico's own HTTP/1.1 server):
    /// always `all()`.
    pub fn trusted() -> Arc<Checked> {
        static TRUSTED: OnceLock<Arc<Checked>> = OnceLock::new();
        TRUSTED
            .get_or_init(|| Arc::new(Checked(AtomicBool::new(true))))
            .clone()
    }

    pub fn all(&self) -> bool {
        // Relaxed: the guard and the handler run in the same connection task.
        self.0.load(Ordering::Relaxed)
    }
}

pub struct H1Guard<IO> {
    io: IO,
    state: State,
    checked: Arc<Checked>,
    /// Bytes read but not yet judged (part of a head, a chunk line or trailers).
    pending: BytesMut,
    /// Bytes judged and ready for hyper.
    out: BytesMut,
    /// Bytes of the current line when reading chunk sizes and trailers.
    line: Vec<u8>,
    max_head: usize,
    first: bool,
}

impl<IO> H1Guard<IO> {
    pub fn new(io: IO, max_head: usize) -> Self {
        H1Guard {
            io,
            state: State::Head,
            checked: Arc::new(Checked(AtomicBool::new(true))),
            pending: BytesMut::new(),
            out: BytesMut::new(),
            line: Vec::new(),
            max_head,
            first: true,
        }
    }

    /// The connection's [`Checked`], for the request handler.
    pub fn checked(&self) -> Arc<Checked> {
        self.checked.clone()
    }

    /// Called after every change of state, before any byte judged under the new state reaches
    /// hyper.
    fn note_state(&self) {
        if matches!(
            self.state,
            State::PassThrough | State::Refused | State::Broken
        ) {
            self.checked.0.store(false, Ordering::Relaxed);
        }
    }

    fn refuse(&mut self, r: Refusal) {
        self.state = State::Refused;
        self.note_state();
        self.pending.clear();
        self.out.extend_from_slice(
            format!(
                "GET / HTTP/1.1\r\nhost: portico.invalid\r\n{REJECT_HEADER}: {}:{}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                reject_token(),
                r.code()
            )
            .as_bytes(),
        );
    }

    /// Follows the framing over `input`, the bytes right after those already judged. Returns
    /// how many leading bytes are judged; any rest is an incomplete head to hold back.
    fn walk(&mut self, input: &[u8]) -> Walk {
        let walked = self.walk_states(input);
        self.note_state();
        walked
    }

    fn walk_states(&mut self, input: &[u8]) -> Walk {
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            match self.state {
                State::PassThrough | State::Refused => return Walk::Judged(input.len()),
                State::Broken => return Walk::Judged(i),
                State::Head => {
                    if self.first && b"PRI * HTTP/2.0".starts_with(&rest[..rest.len().min(14)]) {
                        if rest.len() < 14 {
                            return Walk::Judged(i);
                        }
                        self.state = State::PassThrough;
                        continue;
                    }
                    // Empty lines between requests are allowed (RFC 9112 §2.2).
                    if rest.starts_with(b"\r\n") {
                        i += 2;
                        continue;
                    }
                    // A bare LF anywhere in the head refuses it at once, even before the head
                    // is complete (a head ended by LF LF would otherwise never look complete).
                    let end = match head_end(rest) {
                        Ok(end) => end,
                        Err(BareLf) => return Walk::Refuse(i, Refusal::BareLf),
                    };
                    let Some(end) = end else {
                        if rest.len() > self.max_head {
                            // Too big to judge: hyper refuses it with 431.
                            self.state = State::PassThrough;
                            return Walk::Judged(input.len());
                        }
                        return Walk::Judged(i);
                    };
                    self.first = false;
                    match judge(&rest[..end + 4]) {
                        Verdict::Refuse(r) => return Walk::Refuse(i, r),
                        Verdict::Pass(next, marked) => {
                            if marked {
                                // A client's copy of the refusal marker: the handler strips it.
                                self.checked.0.store(false, Ordering::Relaxed);
                            }
                            self.state = next;
                            i += end + 4;
                        }
                    }
                }
                State::Length(n) | State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    i += take as usize;
                    let left = n - take;
                    self.state = match (self.state_is_length(), left) {
                        (true, 0) => State::Head,
                        (true, l) => State::Length(l),
                        (false, 0) => State::ChunkEnd(2),
                        (false, l) => State::ChunkData(l),
                    };
                }
                State::ChunkEnd(k) => {
                    let take = usize::from(k).min(rest.len());
                    i += take;
                    self.state = if take == usize::from(k) {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(k - take as u8)
                    };
                }
                State::ChunkSize | State::Trailers => {
                    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                        if self.line.len() + rest.len() > MAX_LINE {
                            self.state = State::Broken;
                            return Walk::Judged(i);
                        }
                        self.line.extend_from_slice(rest);
                        return Walk::Judged(input.len());
                    };
                    if self.line.len() + nl + 1 > MAX_LINE {
                        self.state = State::Broken;
                        return Walk::Judged(i);
                    }
                    self.line.extend_from_slice(&rest[..=nl]);
                    i += nl + 1;
                    let line = std::mem::take(&mut self.line);
                    self.state = match self.state {
                        State::ChunkSize => match chunk_size(&line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            // hyper's decoder would reject most of these, but a size the
                            // guard cannot read is framing it cannot follow: end here.
                            None => {
                                self.state = State::Broken;
                                return Walk::Judged(i - (nl + 1));
                            }
                        },
                        _ if line == b"\r\n" => State::Head,
                        _ => State::Trailers,
                    };
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Walk::Judged(i)
    }

    fn state_is_length(&self) -> bool {
        matches!(self.state, State::Length(_))
    }
}

enum Walk {
    /// The first `n` bytes are fine; the rest is an incomplete head.
    Judged(usize),
    /// The first `n` bytes are fine; a refused head starts at `n`.
    Refuse(usize, Refusal),
}

pub struct BareLf;

/// Where the head at the start of `buf` ends (the offset of its final CRLF CRLF), `None` when
/// it is not complete yet, or `BareLf` when a line ends without CR. One pass over the line
/// ends (memchr), since every request head goes through here.
pub fn head_end(buf: &[u8]) -> Result<Option<usize>, BareLf> {
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

fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

enum Verdict {
    /// The head is fine; the state after it, and whether it carries a header named like the
    /// refusal marker.
    Pass(State, bool),
    Refuse(Refusal),
}

fn judge(head: &[u8]) -> Verdict {
    // Uninitialised slots: zeroing 256 of them (8 KiB) per request cost more than the parse.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut req = httparse::Request::new(&mut []);
    if !matches!(
        req.parse_with_uninit_headers(head, &mut headers),
        Ok(httparse::Status::Complete(_))
    ) {
        // Malformed: hyper parses the same bytes with the same parser and refuses them.
        return Verdict::Pass(State::PassThrough, false);
    }
    let mut lengths = 0;
    let mut length = 0u64;
    let mut codings = 0;
    let mut chunked = false;
    let mut upgrade = req.method == Some("CONNECT");
    let mut marked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(n) => length = n,
                // A list or garbage: hyper refuses or normalises it; refuse here too.
                None => return Verdict::Refuse(Refusal::RepeatedLength),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if h.name.eq_ignore_ascii_case(REJECT_HEADER) {
            marked = true;
        }
    }
    if lengths > 0 && codings > 0 {
        return Verdict::Refuse(Refusal::LengthAndChunked);
    }
    if lengths > 1 {
        return Verdict::Refuse(Refusal::RepeatedLength);
    }
    if codings > 1 || (codings == 1 && !chunked) {
        return Verdict::Refuse(Refusal::TransferCoding);
    }
    let next = if upgrade {
        State::PassThrough
    } else if chunked {
        State::ChunkSize
    } else if length > 0 {
        State::Length(length)
    } else {
        State::Head
    };
    Verdict::Pass(next, marked)
}

impl<IO: AsyncRead + Unpin> AsyncRead for H1Guard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // Don't signal end of stream: hyper would drop the connection without answering
                // the marked request. It closes the connection itself after the 400
                // (`connection: close`), so nothing needs to wake this read.
                State::Refused => return Poll::Pending,
                State::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a chunk-size or trailer line is malformed or longer than 4 KiB",
                    )));
                }
                State::PassThrough if this.pending.is_empty() => {
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                _ => {}
            }
            if this.pending.is_empty() {
                // The common case: read straight into hyper's buffer and judge the bytes where
                // they are. Only an incomplete head is copied aside.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                let got = buf.filled().len() - before;
                if got == 0 {
                    return Poll::Ready(Ok(()));
                }
                let (n, refused) = match this.walk(&buf.filled()[before..]) {
                    Walk::Judged(n) => (n, None),
                    Walk::Refuse(n, r) => (n, Some(r)),
                };
                if n == got {
                    return Poll::Ready(Ok(()));
                }
                match refused {
                    Some(r) => this.refuse(r),
                    // What follows the judged bytes is never read.
                    None if matches!(this.state, State::Broken) => {}
                    None => this.pending.extend_from_slice(&buf.filled()[before + n..]),
                }
                buf.set_filled(before + n);
                if n > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // A head that arrived in pieces: gather it aside until it is complete.
            let mut tmp = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // End of stream: give hyper what was held back so it can report it.
                let rest = this.pending.split();
                this.out.extend_from_slice(&rest);
                this.state = State::PassThrough;
                this.note_state();
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.pending.extend_from_slice(rb.filled());
            let held = this.pending.split();
            match this.walk(&held) {
                Walk::Judged(n) => {
                    this.out.extend_from_slice(&held[..n]);
                    if !matches!(this.state, State::Broken) {
                        this.pending.extend_from_slice(&held[n..]);
                    }
                }
                Walk::Refuse(n, r) => {
                    this.out.extend_from_slice(&held[..n]);
                    this.refuse(r);
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for H1Guard<IO> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn through(input: &[u8]) -> Vec<u8> {
        let mut g = H1Guard::new(input, 65536);
        let mut out = Vec::new();
        g.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn valid_traffic_passes_unchanged() {
        let input: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(input).await, input);
    }

    #[tokio::test]
    async fn bodies_that_look_like_heads_are_not_judged() {
        let body = b"GET / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n";
        let mut input = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        assert_eq!(through(&input).await, input);
    }

    #[tokio::test]
    async fn ambiguous_heads_become_a_marked_request() {
        for (input, code) in [
            (&b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..], "length-and-chunked"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", "repeated-length"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", "transfer-coding"),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "bare-lf"),
        ] {
            let mut g = H1Guard::new(input, 65536);
            let mut buf = vec![0u8; 4096];
            let n = g.read(&mut buf).await.unwrap();
            let out = String::from_utf8(buf[..n].to_vec()).unwrap();
            assert!(out.contains(&format!("{REJECT_HEADER}: {}:{code}\r\n", reject_token())), "{out}");
            assert!(out.ends_with("connection: close\r\n\r\n"), "nothing after the marked request: {out}");
            // After the marked request the guard reads nothing more.
            assert!(tokio::time::timeout(std::time::Duration::from_millis(20), g.read(&mut buf)).await.is_err());
        }
    }

    /// A chunk line the guard cannot follow ends the stream with an error after the bytes
    /// before it, so nothing behind it (here a head hyper would accept and the guard refuses)
    /// reaches hyper unchecked.
    #[tokio::test]
    async fn unfollowable_chunk_lines_end_the_connection() {
        let start = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
        let smuggled = "POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let long = "a".repeat(MAX_LINE);
        for (name, rest) in [
            ("long trailer", format!("0\r\nX-T: {long}\r\n\r\n")),
            ("long extension", format!("3;{long}\r\nabc\r\n0\r\n\r\n")),
            (
                "unreadable size",
                "0000000000000000003\r\nabc\r\n0\r\n\r\n".to_string(),
            ),
        ] {
            let input = format!("{start}{rest}{smuggled}");
            // Small reads, so the line arrives in pieces as well.
            for step in [7, 4096, input.len()] {
                let chunks: Vec<&[u8]> = input.as_bytes().chunks(step).collect();
                let mut io = chunked_reader(chunks);
                let mut g = H1Guard::new(&mut io, 65536);
                let mut out = Vec::new();
                let err = g.read_to_end(&mut out).await.expect_err(name);
                assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}");
                let out = String::from_utf8(out).unwrap();
                assert!(out.starts_with(start), "{name}/{step}: {out}");
                assert!(
                    !out.contains("/s HTTP"),
                    "{name}/{step}: the next head got through"
                );
                assert!(!g.checked().all(), "{name}");
            }
        }
    }

    /// A reader that hands out `chunks` one read at a time.
    fn chunked_reader(chunks: Vec<&[u8]>) -> impl AsyncRead + Unpin + '_ {
        struct Chunks<'a>(std::collections::VecDeque<&'a [u8]>);
        impl AsyncRead for Chunks<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                if let Some(c) = self.0.pop_front() {
                    let n = c.len().min(buf.remaining());
                    buf.put_slice(&c[..n]);
                    if n < c.len() {
                        self.0.push_front(&c[n..]);
                    }
                }
                Poll::Ready(Ok(()))
            }
        }
        Chunks(chunks.into())
    }

    #[tokio::test]
    async fn http2_preface_passes() {
        let input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04";
        assert_eq!(through(input).await, input);
    }
}
