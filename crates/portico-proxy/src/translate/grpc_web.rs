//! gRPC-Web (binary and text) from browsers, bridged to native gRPC upstreams (a route's
//! `grpc_web: true`).
//!
//! The request's messages are already gRPC-framed; only the content type changes (and the
//! text mode's base64 is undone). On the way back the messages pass through and the HTTP/2
//! trailers, which browsers cannot read, become a last frame flagged 0x80 holding
//! `name: value\r\n` lines. In text mode every chunk is base64-encoded on its own.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::{Body as HttpBody, Frame};

use crate::body::UpstreamBody;
use crate::body::problem::Problem;
use crate::body::{Body, BodyError};

/// Largest text-mode request body decoded (browsers send unary requests only).
const MAX_TEXT_BODY: usize = 4 << 20;

/// The gRPC-Web flavour of a request, from its content type; the answer uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    text: bool,
    /// `+proto` was named.
    proto: bool,
}

pub fn mode(headers: &HeaderMap) -> Option<Mode> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let ct = ct.split(';').next()?.trim().to_ascii_lowercase();
    let (text, proto) = match ct.as_str() {
        "application/grpc-web" => (false, false),
        "application/grpc-web+proto" => (false, true),
        "application/grpc-web-text" => (true, false),
        "application/grpc-web-text+proto" => (true, true),
        _ => return None,
    };
    Some(Mode { text, proto })
}

/// Turns the upstream request into native gRPC.
pub async fn to_grpc(req: Request<Body>, mode: Mode) -> Result<Request<Body>, Problem> {
    let (mut parts, body) = req.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts
        .headers
        .insert(header::TE, HeaderValue::from_static("trailers"));
    for h in ["x-grpc-web", "x-user-agent"] {
        parts.headers.remove(h);
    }
    let body = match mode.text {
        false => body,
        true => {
            use http_body_util::BodyExt;
            let raw = http_body_util::Limited::new(body, MAX_TEXT_BODY)
                .collect()
                .await
                .map_err(|_| Problem::PayloadTooLarge)?
                .to_bytes();
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::full(decode_text(&raw).ok_or(Problem::BadRequest(
                "The grpc-web-text body is not valid base64.",
            ))?)
        }
    };
    Ok(Request::from_parts(parts, body))
}

/// Base64 that may come as several padded pieces (clients encode chunk by chunk).
fn decode_text(raw: &[u8]) -> Option<Vec<u8>> {
    let cleaned: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(cleaned.len() * 3 / 4);
    for piece in cleaned.split_inclusive(|b| *b == b'=') {
        if piece.iter().all(|b| *b == b'=') {
            continue;
        }
        // Take the padding that belongs to this piece.
        let mut end = piece.len();
        while end % 4 != 0 && end < piece.len() + 2 {
            end += 1;
        }
        let mut p = piece.to_vec();
        p.resize(end, b'=');
        out.extend(base64::engine::general_purpose::STANDARD.decode(&p).ok()?);
    }
    Some(out)
}

/// Turns the upstream's gRPC answer into gRPC-Web for the browser.
pub fn from_grpc(resp: Response<UpstreamBody>, mode: Mode) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let ct = match (mode.text, mode.proto) {
        (false, false) => "application/grpc-web",
        (false, true) => "application/grpc-web+proto",
        (true, false) => "application/grpc-web-text",
        (true, true) => "application/grpc-web-text+proto",
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = WebBody {
        inner: body,
        text: mode.text,
        done: false,
    };
    Response::from_parts(
        parts,
        Body::Stream(http_body_util::BodyExt::boxed_unsync(body)),
    )
}

struct WebBody {
    inner: UpstreamBody,
    text: bool,
    done: bool,
}

impl WebBody {
    fn out(&self, bytes: Bytes) -> Bytes {
        if self.text {
            base64::engine::general_purpose::STANDARD
                .encode(&bytes)
                .into()
        } else {
            bytes
        }
    }
}

/// The trailer frame: flag 0x80, length, `name: value\r\n` lines.
fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut lines = Vec::new();
    for (k, v) in trailers {
        lines.extend_from_slice(k.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(v.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    let mut b = BytesMut::with_capacity(5 + lines.len());
    b.put_u8(0x80);
    b.put_u32(lines.len() as u32);
    b.put_slice(&lines);
    b.freeze()
}

impl HttpBody for WebBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => Poll::Ready(Some(Ok(Frame::data(this.out(d))))),
                Err(frame) => match frame.into_trailers() {
                    Ok(t) => {
                        this.done = true;
                        Poll::Ready(Some(Ok(Frame::data(this.out(trailer_frame(&t))))))
                    }
                    Err(_) => Poll::Ready(None),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_mode_accepts_padded_pieces() {
        let e = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let joined = format!("{}{}", e(b"\x00\x00\x00\x00\x01a"), e(b"xy"));
        assert_eq!(
            decode_text(joined.as_bytes()).unwrap(),
            b"\x00\x00\x00\x00\x01axy"
        );
        assert_eq!(decode_text(e(b"abc").as_bytes()).unwrap(), b"abc");
        assert!(decode_text(b"!!!!").is_none());
    }

    #[test]
    fn trailers_become_a_flagged_frame() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let f = trailer_frame(&t);
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[5..], b"grpc-status: 0\r\n");
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 5
        );
    }
}
