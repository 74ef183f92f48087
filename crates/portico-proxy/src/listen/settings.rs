//! A listener's settings, read at each accept.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use portico_config::{Listener, Server};

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Its TLS settings (certificates, keys, client CAs) are unusable.
    #[error("listener `{listener}`: {detail}")]
    Tls { listener: String, detail: String },
    /// Its address cannot be listened on (in use, not this host's, not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Most answer bytes hyper holds per HTTP/2 stream while the client's window is closed.
const H2_SEND_BUFFER: usize = 64 * 1024;

/// Per-listener settings read at each accept, so a reload can change TLS certificates or
/// protocols without rebinding.
pub struct Settings {
    pub name: Arc<str>,
    /// HTTP/1.1 is served (by `h1server`); off only for HTTP/2-only listeners.
    pub http1: bool,
    /// HTTP/2 is served (prior knowledge on plain listeners, ALPN with TLS).
    pub h2: bool,
    pub max_head: usize,
    pub max_headers: usize,
    /// How long an HTTP/1.1 client has for a request head, and may stay idle between requests.
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A connection with answers waiting to be sent that makes no progress this long is closed.
    pub send_timeout: Duration,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub builder: auto::Builder<TokioExecutor>,
}

impl Settings {
    pub fn new(l: &Listener, server: &Server) -> Result<Settings, ListenError> {
        let tls = match &l.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                crate::listen::tls::server_config(t, l.http1, l.http2).map_err(|e| {
                    ListenError::Tls {
                        listener: l.name.to_string(),
                        detail: e.to_string(),
                    }
                })?,
            )),
            None => None,
        };
        // hyper serves HTTP/2 only: HTTP/1.1 clients are `listen::h1`'s.
        let mut b = auto::Builder::new(TokioExecutor::new());
        // Bounded per stream and per connection: a client that never opens its flow-control
        // window leaves at most `max_concurrent_streams` × `H2_SEND_BUFFER` of answers
        // buffered here (6.4 MiB), until `send_timeout` closes the connection.
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(server.max_request_header_bytes as u32)
            .max_concurrent_streams(server.http2_max_concurrent_streams)
            .max_send_buf_size(H2_SEND_BUFFER);
        let b = b.http2_only();
        Ok(Settings {
            name: l.name.clone(),
            http1: l.http1,
            h2: l.http2,
            max_head: server.max_request_header_bytes,
            max_headers: server.max_request_headers,
            header_timeout: server.request_header_timeout,
            idle_timeout: server.client_idle_timeout,
            send_timeout: server.send_timeout,
            tls,
            builder: b,
        })
    }
}
