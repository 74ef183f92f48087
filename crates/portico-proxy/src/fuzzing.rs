//! The HTTP/1.1 parsers of this crate, callable on plain bytes, for the fuzz targets and the
//! differential tests (`crates/portico-fuzzcheck`). Not an API: the parsers stay private to
//! their connections, and this module only runs them the way those connections do, then
//! reports what they made as plain data.

use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::StatusCode;

pub use crate::http1::codec::BodyFraming;
use crate::http1::codec::{Decoder, Fill, Names};
use crate::http1::server::{Refusal, Refused, head_end};
use crate::listen::h1::{self, Read};

/// The trace-context formats read from clients and written upstream.
pub mod trace {
    pub use crate::observe::trace::{
        B3, B3_SAMPLED, B3_SPAN_ID, B3_TRACE_ID, Incoming, TRACEPARENT, extract, inject, parse_b3,
        parse_b3_multi, parse_traceparent,
    };
}

/// The defaults of `server.max_request_header_bytes` and `server.max_request_headers`.
pub const MAX_HEAD: usize = 65536;
pub const MAX_HEADERS: usize = 100;

/// A request head as the client connection built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as the gateway holds it (`http::Uri`'s form of it).
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version: u8,
    /// Names as `http` holds them (lower case), values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Set when the head parsed but is answered 400 without being routed (the framing rules of
    /// `h1server`): the problem's detail.
    pub refusal: Option<&'static str>,
    /// How the body is delimited, for a head that is not refused.
    pub framing: Option<BodyFraming>,
    /// Bytes the head took, leading empty lines included.
    pub len: usize,
}

/// How reading one request head from `input` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadRead {
    /// More bytes are needed.
    Incomplete,
    Head(RequestHead),
    /// Answered with this problem (its code) and the connection closed.
    Refused(&'static str),
}

/// Reads the request head at the start of `input` as a client connection does with the
/// default limits (leading empty lines skipped, bare LF refused before the head is complete).
pub fn read_request_head(input: &[u8]) -> HeadRead {
    let mut buf = BytesMut::from(input);
    let mut skipped = 0;
    while buf.starts_with(b"\r\n") {
        let _ = buf.split_to(2);
        skipped += 2;
    }
    let end = match head_end(&buf) {
        Err(_) => {
            return head_of(h1::refused_head(Refusal::BareLf).req, None, 0);
        }
        Ok(None) if buf.len() > MAX_HEAD => return HeadRead::Refused("request_head_too_large"),
        Ok(None) => return HeadRead::Incomplete,
        Ok(Some(end)) => end + 4,
    };
    let mut names = Names::default();
    match h1::parse(&mut buf, &mut names, end, MAX_HEADERS) {
        Read::Head(p) => head_of(p.req, p.framing, skipped + end),
        Read::Refuse(problem) => HeadRead::Refused(problem.code()),
        Read::Closed | Read::Http2 => unreachable!("parse only reads heads"),
    }
}

fn head_of<B>(req: http::Request<B>, framing: Option<BodyFraming>, len: usize) -> HeadRead {
    let refusal = req.extensions().get::<Refused>().map(|r| r.0.detail());
    HeadRead::Head(RequestHead {
        method: req.method().as_str().to_owned(),
        target: req.uri().to_string(),
        version: u8::from(req.version() == http::Version::HTTP_11),
        headers: fields(req.headers()),
        refusal,
        framing: if refusal.is_some() { None } else { framing },
        len,
    })
}

fn fields(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// A response head as the upstream connection read it, interim answers skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: u8,
    /// What the pipeline sees: the fields about this connection only are taken out.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    /// Bytes the head took, interim answers included.
    pub len: usize,
}

/// Reads the response head at the start of `input` as an upstream connection does: `Ok(None)`
/// while it is incomplete, an error for what the connection refuses.
pub fn read_response_head(input: &[u8]) -> Result<Option<ResponseHead>, String> {
    let mut buf = BytesMut::from(input);
    let mut names = Names::default();
    loop {
        let Some((parts, shape)) =
            crate::http1::codec::parse_head(&mut buf, &mut names).map_err(|e| e.to_string())?
        else {
            if buf.len() >= crate::http1::codec::MAX_HEAD {
                return Err("response head larger than 64 KiB".into());
            }
            return Ok(None);
        };
        if parts.status.is_informational() {
            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                );
            }
            continue;
        }
        return Ok(Some(ResponseHead {
            status: parts.status.as_u16(),
            version: u8::from(parts.version == http::Version::HTTP_11),
            headers: fields(&parts.headers),
            framing: shape.framing,
            keep_alive: shape.keep_alive,
            len: input.len() - buf.len(),
        }));
    }
}

/// A body as the decoder delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBody {
    pub data: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Why the body broke, if it did.
    pub error: Option<String>,
    /// Bytes of the input after the body (the next message), when it ended.
    pub rest: usize,
}

/// Hands the decoder `input` in pieces of `step` bytes (at least 1), then the end of the
/// stream.
struct Pieces<'a> {
    pieces: VecDeque<&'a [u8]>,
}

impl Fill for Pieces<'_> {
    fn poll_fill(
        &mut self,
        buf: &mut BytesMut,
        _want: usize,
        _cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let p = self.pieces.pop_front().unwrap_or_default();
        buf.extend_from_slice(p);
        Poll::Ready(Ok(p.len()))
    }
}

/// Decodes the body framed by `framing` at the start of `input`, delivered `step` bytes at a
/// time, as both connections do.
pub fn decode_body(framing: BodyFraming, input: &[u8], step: usize) -> DecodedBody {
    let mut io = Pieces {
        pieces: input.chunks(step.max(1)).collect(),
    };
    let mut buf = BytesMut::new();
    let mut dec = Decoder::new(framing);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = DecodedBody {
        data: Vec::new(),
        trailers: Vec::new(),
        error: None,
        rest: 0,
    };
    loop {
        match dec.poll_frame(&mut io, &mut buf, &mut cx) {
            Poll::Ready(Some(Ok(f))) => match f.into_data() {
                Ok(d) => out.data.extend_from_slice(&d),
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        out.trailers.extend(fields(&t));
                    }
                }
            },
            Poll::Ready(Some(Err(e))) => {
                out.error = Some(e.to_string());
                return out;
            }
            Poll::Ready(None) => {
                out.rest = buf.len() + io.pieces.iter().map(|p| p.len()).sum::<usize>();
                return out;
            }
            Poll::Pending => unreachable!("the pieces are all there"),
        }
    }
}
