//! Why a body stream stopped.

/// Why a body stream stopped.
#[derive(Debug)]
pub enum BodyError {
    Hyper(hyper::Error),
    /// The upstream connection failed in the middle of a response body.
    Upstream(crate::http1::codec::ConnError),
    /// The client's HTTP/1.1 request body was malformed or cut short.
    Client(crate::http1::codec::ConnError),
    /// The request body went past the route's `body_limit`.
    TooLarge,
    /// Nothing arrived for the upstream's `stream_idle_timeout`.
    Idle,
    /// The request body fell behind `server.request_body_min_rate`.
    TooSlow,
    /// An HTTP/2 request body went on past its `content-length`.
    Overlong,
    /// The response compressor failed.
    Compress(std::io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => e.fmt(f),
            BodyError::Upstream(e) => e.fmt(f),
            BodyError::Client(e) => write!(f, "request body: {e}"),
            BodyError::TooLarge => f.write_str("request body larger than the route allows"),
            BodyError::Idle => f.write_str("stream idle for longer than stream_idle_timeout"),
            BodyError::TooSlow => f.write_str("request body slower than request_body_min_rate"),
            BodyError::Overlong => f.write_str("request body longer than its content-length"),
            BodyError::Compress(e) => write!(f, "compression: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}
