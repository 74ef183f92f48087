//! Response compression (`type: compression` policies): the coding is negotiated from
//! `Accept-Encoding` (q-values honoured, ties broken by the policy's order), and the body is
//! compressed as it streams — each chunk is flushed through the encoder, so server-sent events
//! and other streams keep flowing instead of waiting for a full buffer.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use portico_config::{Coding, CompressionPolicy};

use crate::body::{Body, BodyError};

/// The coding to use: the acceptable one with the highest q, the policy's order breaking ties;
/// `*` stands for any coding not named. `None`: send the body as it is.
pub fn negotiate(accept: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    let mut best: Option<(f32, usize, Coding)> = None;
    let mut named: Vec<(String, f32)> = Vec::new();
    for v in accept.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            named.push((token, q));
        }
    }
    let star = named.iter().find(|(t, _)| t == "*").map(|(_, q)| *q);
    for (rank, c) in offered.iter().enumerate() {
        let q = named
            .iter()
            .find(|(t, _)| t == c.token() || (*c == Coding::Gzip && t == "x-gzip"))
            .map(|(_, q)| *q)
            .or(star)
            .unwrap_or(0.0);
        if q <= 0.0 {
            continue;
        }
        if best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank < br)) {
            best = Some((q, rank, *c));
        }
    }
    best.map(|(_, _, c)| c)
}

/// Compresses `resp` if the request allows it and the response is worth it.
pub fn apply(
    policy: &CompressionPolicy,
    method: &Method,
    accept: &HeaderMap,
    resp: Response<Body>,
) -> Response<Body> {
    let h = resp.headers();
    let status = resp.status();
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS
        || h.contains_key(header::CONTENT_ENCODING)
        || h.contains_key(header::CONTENT_RANGE)
        || h.get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        || !h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| policy.compresses(ct))
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n < policy.min_bytes)
    {
        return resp;
    }
    // The answer depends on Accept-Encoding whether or not it is compressed this time.
    let (mut parts, body) = resp.into_parts();
    add_vary(&mut parts.headers);
    let Some(coding) = negotiate(accept, &policy.codings) else {
        return Response::from_parts(parts, body);
    };
    if http_body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n < policy.min_bytes)
    {
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    // Another representation: a strong validator would now lie.
    if let Some(etag) = parts.headers.get(header::ETAG).cloned()
        && !etag.as_bytes().starts_with(b"W/")
        && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
    {
        parts.headers.insert(header::ETAG, weak);
    }
    metrics::counter!("portico_compressed_responses_total", "coding" => coding.token())
        .increment(1);
    let body = Compressed {
        inner: body,
        encoder: Some(Encoder::new(coding)),
    };
    Response::from_parts(
        parts,
        Body::Stream(http_body_util::BodyExt::boxed_unsync(body)),
    )
}

fn add_vary(h: &mut HeaderMap) {
    let listed = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    });
    if !listed {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(c: Coding) -> Encoder {
        match c {
            // Levels that trade little ratio for a lot of speed, as proxies usually pick.
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(5),
            )),
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                4,
                22,
            ))),
            Coding::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd level 3 is valid"),
            ),
        }
    }

    /// Compresses a chunk and flushes, returning what the encoder produced.
    fn chunk(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(std::mem::take(e.get_mut()).into())
            }
            Encoder::Br(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(std::mem::take(e.get_mut()).into())
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(std::mem::take(e.get_mut()).into())
            }
        }
    }

    /// Ends the stream.
    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => e.finish().map(Bytes::from),
            Encoder::Br(e) => Ok(Bytes::from(e.into_inner())),
            Encoder::Zstd(e) => e.finish().map(Bytes::from),
        }
    }
}

struct Compressed {
    inner: Body,
    /// `None` once the stream is finished.
    encoder: Option<Encoder>,
}

impl HttpBody for Compressed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(enc) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => match enc.chunk(&d) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => return Poll::Ready(Some(Err(BodyError::Compress(e)))),
                    },
                    // Trailers pass after the compressed data is complete.
                    Err(frame) => {
                        let Ok(t) = frame.into_trailers() else {
                            continue;
                        };
                        let enc = this.encoder.take().expect("present");
                        return match enc.finish() {
                            // The rest of the data first; the trailers are dropped rather than
                            // reordered (compressed bodies with trailers are rare).
                            Ok(out) if !out.is_empty() => Poll::Ready(Some(Ok(Frame::data(out)))),
                            Ok(_) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                            Err(e) => Poll::Ready(Some(Err(BodyError::Compress(e)))),
                        };
                    }
                },
                Poll::Ready(None) => {
                    let enc = this.encoder.take().expect("present");
                    return match enc.finish() {
                        Ok(out) if out.is_empty() => Poll::Ready(None),
                        Ok(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => Poll::Ready(Some(Err(BodyError::Compress(e)))),
                    };
                }
            }
        }
    }
}

/// A request body's single coding that a `request_decompression` policy removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCoding {
    Gzip,
    Deflate,
    Br,
    Zstd,
}

impl RequestCoding {
    /// The coding named by `Content-Encoding`: `None` for none or `identity`; `Err` for a
    /// coding the gateway cannot remove (or several stacked).
    pub fn of(h: &HeaderMap) -> Result<Option<RequestCoding>, ()> {
        let mut all = h.get_all(header::CONTENT_ENCODING).iter();
        let Some(v) = all.next() else {
            return Ok(None);
        };
        if all.next().is_some() {
            return Err(());
        }
        let v = v.to_str().map_err(|_| ())?.trim();
        Ok(Some(
            if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
                RequestCoding::Gzip
            } else if v.eq_ignore_ascii_case("deflate") {
                RequestCoding::Deflate
            } else if v.eq_ignore_ascii_case("br") {
                RequestCoding::Br
            } else if v.eq_ignore_ascii_case("zstd") {
                RequestCoding::Zstd
            } else if v.eq_ignore_ascii_case("identity") || v.is_empty() {
                return Ok(None);
            } else {
                return Err(());
            },
        ))
    }
}

/// Where a decoder writes: refuses to grow past the decoded-size limit, so a small body that
/// expands enormously (a "zip bomb") costs at most the limit plus one decoder buffer.
struct Budget {
    out: Vec<u8>,
    left: u64,
    stats: std::sync::Arc<crate::body::BodyStats>,
}

impl Write for Budget {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.stats
                .too_large
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other("decoded body over the limit"));
        }
        self.left -= buf.len() as u64;
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Budget>),
    Deflate(flate2::write::ZlibDecoder<Budget>),
    Br(Box<brotli::DecompressorWriter<Budget>>),
    Zstd(zstd::stream::write::Decoder<'static, Budget>),
}

impl Decoder {
    fn new(
        c: RequestCoding,
        limit: u64,
        stats: std::sync::Arc<crate::body::BodyStats>,
    ) -> std::io::Result<Decoder> {
        let b = Budget {
            out: Vec::new(),
            left: limit,
            stats,
        };
        Ok(match c {
            RequestCoding::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(b)),
            RequestCoding::Deflate => Decoder::Deflate(flate2::write::ZlibDecoder::new(b)),
            RequestCoding::Br => Decoder::Br(Box::new(brotli::DecompressorWriter::new(b, 4096))),
            RequestCoding::Zstd => Decoder::Zstd(zstd::stream::write::Decoder::new(b)?),
        })
    }

    fn budget(&mut self) -> &mut Budget {
        match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Deflate(d) => d.get_mut(),
            Decoder::Br(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Deflate(d) => d.write_all(data),
            Decoder::Br(d) => d.write_all(data),
            Decoder::Zstd(d) => d.write_all(data).and_then(|()| d.flush()),
        }
    }

    /// The rest of the output; an error when the input did not end where its format ends.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => d.finish().map(|b| b.out),
            Decoder::Deflate(d) => d.finish().map(|b| b.out),
            Decoder::Br(mut d) => {
                d.close()?;
                d.into_inner()
                    .map(|b| b.out)
                    .map_err(|_| std::io::Error::other("brotli stream cut short"))
            }
            Decoder::Zstd(d) => d.finish().map(|b| b.out),
        }
    }
}

/// Replaces a compressed request body with its decoded stream (no `Content-Encoding`, no
/// `Content-Length`). Bodies in a coding the gateway cannot decode are refused with 415.
pub fn decode_request(
    req: http::Request<Body>,
    limit: u64,
    stats: std::sync::Arc<crate::body::BodyStats>,
) -> Result<http::Request<Body>, crate::body::problem::Problem> {
    if matches!(req.body(), Body::Empty) {
        return Ok(req);
    }
    let coding = match RequestCoding::of(req.headers()) {
        Ok(None) => return Ok(req),
        Ok(Some(c)) => c,
        Err(()) => return Err(crate::body::problem::Problem::UnsupportedEncoding),
    };
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(stats.clone());
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    let decoder = Decoder::new(coding, limit, stats.clone())
        .map_err(|_| crate::body::problem::Problem::UnsupportedEncoding)?;
    metrics::counter!("portico_decompressed_requests_total", "coding" => match coding {
        RequestCoding::Gzip => "gzip",
        RequestCoding::Deflate => "deflate",
        RequestCoding::Br => "br",
        RequestCoding::Zstd => "zstd",
    })
    .increment(1);
    let body = Decoded {
        inner: body,
        decoder: Some(decoder),
        stats,
    };
    Ok(http::Request::from_parts(
        parts,
        Body::Stream(http_body_util::BodyExt::boxed_unsync(body)),
    ))
}

struct Decoded {
    inner: Body,
    /// `None` once the stream is finished.
    decoder: Option<Decoder>,
    stats: std::sync::Arc<crate::body::BodyStats>,
}

impl Decoded {
    fn fail(&mut self) -> BodyError {
        self.decoder = None;
        if self
            .stats
            .too_large
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            BodyError::TooLarge
        } else {
            self.stats
                .undecodable
                .store(true, std::sync::atomic::Ordering::Relaxed);
            BodyError::Compress(std::io::Error::other("request body does not decode"))
        }
    }
}

impl HttpBody for Decoded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(dec) = this.decoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.decoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(d) = frame.into_data() else { continue };
                    if dec.write(&d).is_err() {
                        return Poll::Ready(Some(Err(this.fail())));
                    }
                    let out = std::mem::take(&mut dec.budget().out);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.into()))));
                    }
                }
                Poll::Ready(None) => {
                    let Ok(out) = this.decoder.take().expect("present").finish() else {
                        return Poll::Ready(Some(Err(this.fail())));
                    };
                    return if out.is_empty() {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Ok(Frame::data(out.into()))))
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation_follows_q_values_then_preference() {
        let all = [Coding::Br, Coding::Zstd, Coding::Gzip];
        assert_eq!(negotiate(&accept("gzip, br"), &all), Some(Coding::Br));
        assert_eq!(
            negotiate(&accept("gzip;q=1, br;q=0.5"), &all),
            Some(Coding::Gzip)
        );
        assert_eq!(
            negotiate(&accept("br;q=0, gzip;q=0.1"), &all),
            Some(Coding::Gzip)
        );
        assert_eq!(negotiate(&accept("identity"), &all), None);
        assert_eq!(negotiate(&accept("*"), &all), Some(Coding::Br));
        assert_eq!(
            negotiate(&accept("*;q=0.5, zstd"), &all),
            Some(Coding::Zstd)
        );
        assert_eq!(negotiate(&accept("br"), &[Coding::Gzip]), None);
        assert_eq!(negotiate(&HeaderMap::new(), &all), None);
        assert_eq!(negotiate(&accept("x-gzip"), &all), Some(Coding::Gzip));
    }
}
