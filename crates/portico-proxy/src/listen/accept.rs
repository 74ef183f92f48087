//! Client-facing listeners: accept, TLS, HTTP/1.1 and HTTP/2 serving, connection draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use portico_config::{Listener, Server};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::base::conn::ConnInfo;
use crate::listen::h2::serve_io;
use crate::listen::serving::Serving;
use crate::listen::settings::{ListenError, Settings};

pub struct ListenerHandle {
    pub spec: Listener,
    pub local: SocketAddr,
    pub settings: Arc<ArcSwap<Settings>>,
    pub stop: watch::Sender<bool>,
}

pub async fn bind(
    l: &Listener,
    server: &Server,
    inner: &Arc<Serving>,
) -> Result<ListenerHandle, ListenError> {
    let settings = Arc::new(ArcSwap::from_pointee(Settings::new(l, server)?));
    let bind = |source| ListenError::Bind {
        addr: l.addr,
        source,
    };
    let listener = crate::listen::inherited::bind(l.addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(accept_loop(
        listener,
        settings.clone(),
        inner.clone(),
        stop_rx,
    ));
    tracing::info!(listener = %l.name, address = %local, tls = l.tls.is_some(), "listening");
    Ok(ListenerHandle {
        spec: l.clone(),
        local,
        settings,
        stop,
    })
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<ArcSwap<Settings>>,
    inner: Arc<Serving>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limit = inner.runtime.load().config.server.max_connections_per_ip;
        let Some(slot) = IpSlot::take(&inner, peer.ip(), limit) else {
            metrics::counter!("portico_connections_refused_total", "reason" => "per_ip_limit")
                .increment(1);
            tracing::debug!(%peer, limit, "connection refused: too many from this address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let s = settings.load_full();
        tokio::spawn(serve_connection(stream, peer, s, inner.clone(), slot));
    }
}

/// A connection's place in `server.max_connections_per_ip`, given back when it closes. With
/// no limit set, nothing is counted (and the map stays empty).
struct IpSlot(Option<(Arc<Serving>, std::net::IpAddr)>);

impl IpSlot {
    fn take(inner: &Arc<Serving>, ip: std::net::IpAddr, limit: u32) -> Option<IpSlot> {
        if limit == 0 {
            return Some(IpSlot(None));
        }
        let ip = portico_config::canonical_ip(ip);
        let mut m = inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(IpSlot(Some((inner.clone(), ip))))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((inner, ip)) = self.0.take() {
            let mut m = inner.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// Counts a connection in the gauge and the drain tracker for as long as it lives.
struct ConnGuard {
    inner: Arc<Serving>,
    listener: Arc<str>,
}

impl ConnGuard {
    fn new(inner: &Arc<Serving>, listener: &Arc<str>) -> ConnGuard {
        inner.active_connections.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("portico_open_connections", "listener" => listener.to_string())
            .increment(1.0);
        ConnGuard {
            inner: inner.clone(),
            listener: listener.clone(),
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        metrics::gauge!("portico_open_connections", "listener" => self.listener.to_string())
            .decrement(1.0);
        if self.inner.active_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.connections_idle.notify_waiters();
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    s: Arc<Settings>,
    inner: Arc<Serving>,
    _slot: IpSlot,
) {
    let _guard = ConnGuard::new(&inner, &s.name);
    if s.tls.is_none() {
        let conn = ConnInfo::new(peer, false, s.name.clone());
        if s.http1 {
            // Plain HTTP/1.1 (and HTTP/2 with prior knowledge, handed on from there): our own
            // connection, which checks every head itself.
            let shutdown = inner.shutdown.subscribe();
            let io = crate::http1::server::Transport::Tcp(stream);
            return crate::listen::h1::serve(io, s.clone(), Arc::new(conn), inner, shutdown).await;
        }
        // Boxed, like TLS below: hyper's HTTP/2 connection would otherwise set the size of
        // every connection's task, HTTP/1.1 ones included.
        return Box::pin(serve_stream(stream, &s, conn, inner)).await;
    }
    // Boxed: a TLS connection's handshake and stream make its future three times the size of
    // a plain one's, and every connection's task is as large as the largest branch it could
    // take (measured: 7.2 KB per plain connection unboxed, 2.2 KB boxed).
    let tls = Box::pin(serve_tls(stream, peer, s, inner));
    tls.await;
}

async fn serve_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    s: Arc<Settings>,
    inner: Arc<Serving>,
) {
    let Some(acceptor) = &s.tls else {
        return;
    };
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut info = ConnInfo::new(peer, true, s.name.clone());
    // rustls has verified the chain; read the leaf once for the whole connection.
    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        match portico_auth::mtls::ClientCert::from_der(leaf) {
            Ok(c) => info.client_cert = Some(Arc::new(c)),
            Err(e) => tracing::debug!(%peer, error = %e, "client certificate not readable"),
        }
    }
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if s.http1 && !h2 {
        // HTTP/1.1 over TLS: our own connection, as for plain TCP.
        let shutdown = inner.shutdown.subscribe();
        let io = crate::http1::server::Transport::Tls(Box::new(tls));
        return crate::listen::h1::serve(io, s.clone(), Arc::new(info), inner, shutdown).await;
    }
    serve_stream(tls, &s, info, inner).await;
}

/// Serves a (possibly TLS) stream with hyper: HTTP/2 (ALPN `h2`, or an HTTP/2-only listener).
async fn serve_stream<I>(io: I, s: &Settings, conn: ConnInfo, inner: Arc<Serving>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = inner.shutdown.subscribe();
    serve_io(TokioIo::new(io), s, Arc::new(conn), inner, shutdown).await;
}
