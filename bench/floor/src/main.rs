//! The floor: the smallest useful hyper 1 reverse proxy, as a benchmark contestant.
//!
//! It answers "how much of Portico's cost per request is the HTTP library, and how much is
//! ours?". Same shape as Portico's plain-proxy path without any of its features: one
//! current-thread runtime, each client connection owns one upstream HTTP/1.1 connection
//! (opened on its first request, no pool, no limits), `X-Forwarded-For` added, the origin's
//! answer streamed back. Not part of the product; `bench/run.py --proxies floor` runs it.
//!
//! Usage: `portico-floor LISTEN_ADDR ORIGIN_ADDR`

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use http::{HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .expect("LISTEN_ADDR")
        .parse()
        .expect("LISTEN_ADDR");
    let origin: SocketAddr = args
        .next()
        .expect("ORIGIN_ADDR")
        .parse()
        .expect("ORIGIN_ADDR");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(serve(stream, peer, origin));
        }
    });
}

async fn serve(stream: TcpStream, peer: SocketAddr, origin: SocketAddr) {
    let xff = HeaderValue::from_str(&peer.ip().to_string()).unwrap();
    let upstream: Rc<RefCell<Option<SendRequest<Incoming>>>> = Rc::new(RefCell::new(None));
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let upstream = upstream.clone();
        let xff = xff.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            *req.uri_mut() = Uri::try_from(path).unwrap();
            req.headers_mut().insert("x-forwarded-for", xff);
            let taken = upstream.borrow_mut().take();
            let mut tx = match taken {
                Some(tx) if !tx.is_closed() => tx,
                _ => connect(origin).await?,
            };
            let resp = tx.send_request(req).await;
            *upstream.borrow_mut() = Some(tx);
            resp.map_err(|e| e.to_string())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn connect(origin: SocketAddr) -> Result<SendRequest<Incoming>, String> {
    let s = TcpStream::connect(origin)
        .await
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_local(conn);
    Ok(tx)
}
