//! A `multipart/form-data` body (RFC 7578) split into its parts by multer, for the request
//! check to type each part by its property's schema.
//!
//! The body is already read whole (bounded by `validation_limits.max_body_bytes`), so multer's
//! stream is one ready chunk and every future it returns is ready at its first poll: they
//! are polled once, with no runtime.

use std::future::Future;
use std::task::{Context, Poll, Waker};

/// At most this many parts are read; a body with more is refused (a form with a thousand
/// fields is not one a person filled in).
pub const MAX_PARTS: usize = 1000;

/// The type given to a part whose `Content-Type` is empty or not text: none that an
/// `encoding` can list, and neither text nor JSON, so the part is a file.
pub(crate) const UNREADABLE: &str = "(unreadable)";

/// One part of the body.
#[derive(Debug)]
pub(crate) struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// Its `Content-Type` as written (`""` when it has none, [`UNREADABLE`] when it is
    /// empty or not text).
    pub content_type: String,
    /// Whether it names a `filename`: an uploaded file.
    pub file: bool,
    /// Its headers, for those its `encoding` describes.
    pub headers: http::HeaderMap,
    pub data: bytes::Bytes,
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// The parts of `body`, in order, or why it is not a multipart body with this boundary.
pub(crate) fn parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let chunk = bytes::Bytes::copy_from_slice(body);
    let stream =
        futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(chunk)));
    let mut form = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    loop {
        let field = match ready(form.next_field()) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(out),
            Err(e) => return Err(e),
        };
        if out.len() == MAX_PARTS {
            return Err(format!("the body has more than {MAX_PARTS} parts"));
        }
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(format!(
                "part {} has no name in its Content-Disposition",
                out.len() + 1
            ));
        };
        let file = field.file_name().is_some();
        // Read from the header itself: multer drops a type it cannot parse, which would
        // make the part untyped (and so take the type its `encoding` lists).
        let content_type = match field.headers().get(http::header::CONTENT_TYPE) {
            None => String::new(),
            Some(v) => match v.to_str() {
                Ok(t) if !t.split(';').next().unwrap_or("").trim().is_empty() => t.to_owned(),
                _ => UNREADABLE.to_owned(),
            },
        };
        let headers = field.headers().clone();
        let data = ready(field.bytes())?;
        out.push(Part {
            name,
            content_type,
            file,
            headers,
            data,
        });
    }
}

/// The output of one of multer's futures, which are ready at once over a ready stream.
fn ready<T>(f: impl Future<Output = multer::Result<T>>) -> Result<T, String> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r.map_err(|e| e.to_string()),
        // Cannot happen over a ready stream; refused rather than waited on.
        Poll::Pending => Err("the body could not be read as multipart".into()),
    }
}
