//! Real servers and clients for Portico's integration tests: HTTP/1.1, HTTP/2 (h2c and TLS),
//! WebSocket, server-sent events and gRPC, each on an ephemeral port of 127.0.0.1.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_proxy::body::ChannelBody;
use tokio::net::TcpListener;

pub use portico_proxy::Gateway;

mod bookstore;
mod otlp;
mod soap;
pub use bookstore::{
    Reflection, bookstore_descriptor_set, grpc_bookstore, grpc_bookstore_with, protos_dir,
    write_bookstore_descriptor_set,
};
pub use otlp::{Collector, Span, otlp_collector, otlp_collector_with_tls};
pub use soap::{SoapServer, soap_dir, soap_server};

pub type TestBody = Either<Full<Bytes>, ChannelBody>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Either::Left(Full::new(b.into()))
}

/// A running upstream. `hits` counts requests it received.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Turns `true` once the listener is closed and every connection has ended.
    down: tokio::sync::watch::Receiver<bool>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    /// Stops the server as if its process died: the listener and every open connection close.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
    /// [`Upstream::stop`], then waits until it has taken effect: the port refuses connections
    /// and every connection the server had is closed.
    pub async fn stop_and_wait(&self) {
        self.stop();
        let mut down = self.down.clone();
        let _ = down.wait_for(|d| *d).await;
    }
}

/// How long [`eventually`] waits for its condition: generous, for a loaded CI machine. A
/// condition that holds returns at once, so a passing test never waits this long.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for an event: returns as soon as `cond` holds (checked after 1 ms, then less often,
/// at least every 20 ms), and panics with `what` if it still does not after [`EVENTUALLY`].
pub async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + EVENTUALLY;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if cond().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within {EVENTUALLY:?}: {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// Starts an HTTP/1.1 + h2c (prior knowledge) server running `handler` for each request.
pub async fn serve<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_with_tls(handler, None).await
}

pub async fn serve_with_tls<F, Fut>(handler: F, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    serve_at("127.0.0.1:0".parse().unwrap(), handler, tls).await
}

/// Like [`serve_with_tls`], on a given address (to bring a stopped server back on its port).
pub async fn serve_at<F, Fut>(
    addr: SocketAddr,
    handler: F,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let l = TcpListener::bind(addr).await.unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (down_tx, down) = tokio::sync::watch::channel(false);
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut accept_stop = stop_rx.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let s = tokio::select! {
                r = l.accept() => match r { Ok((s, _)) => s, Err(_) => break },
                _ = accept_stop.wait_for(|s| *s) => break,
            };
            open.retain(|c: &tokio::task::JoinHandle<()>| !c.is_finished());
            let mut conn_stop = stop_rx.clone();
            c2.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let hits = h2.clone();
            let acceptor = acceptor.clone();
            open.push(tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let f = handler(req);
                    async move { Ok::<_, Infallible>(f.await) }
                });
                let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let serve = async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(t) = a.accept(s).await {
                                let _ =
                                    b.serve_connection_with_upgrades(TokioIo::new(t), svc).await;
                            }
                        }
                        None => {
                            let _ = b.serve_connection_with_upgrades(TokioIo::new(s), svc).await;
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = conn_stop.wait_for(|s| *s) => {}
                }
            }));
        }
        drop(l);
        for c in open {
            let _ = c.await;
        }
        let _ = down_tx.send(true);
    });
    Upstream {
        addr,
        hits,
        conns,
        stop,
        down,
    }
}

/// The request as the echo server saw it.
pub async fn echo_json(req: Request<Incoming>) -> serde_json::Value {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = v.to_str().unwrap_or("<binary>").to_string();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                *prev = format!("{prev}, {v}");
            }
            _ => {
                headers.insert(k.as_str().to_string(), serde_json::Value::String(v));
            }
        }
    }
    serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
    })
}

/// An upstream that answers every request with a JSON description of it.
pub async fn echo_server() -> Upstream {
    serve(|req| async move {
        let v = echo_json(req).await;
        let mut r = Response::new(full(v.to_string()));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r.headers_mut()
            .insert("x-upstream", "echo".parse().unwrap());
        r
    })
    .await
}

/// A self-signed certificate for `names`, as PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: rustls_pki_types::CertificateDer<'static>,
}

pub fn cert(names: &[&str]) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    TestCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        cert_der: ck.cert.der().clone(),
    }
}

impl TestCert {
    /// A rustls server config for an upstream test server.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = rustls_pki_types::PrivateKeyDer::from(
            rustls_pki_types::pem::PemObject::from_pem_slice(self.key_pem.as_bytes())
                .map(|k: rustls_pki_types::PrivatePkcs8KeyDer| k)
                .unwrap(),
        );
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(cfg)
    }

    /// Writes cert and key into a fresh folder; returns (cert path, key path).
    pub fn write(&self, dir: &std::path::Path, stem: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

/// The directory of the OpenAPI documents the `apis` tests read.
pub fn openapi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi")
}

/// A fresh, empty folder under the system temp folder.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "portico-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A gateway started from YAML text. Write listeners as `127.0.0.1:0`; the bound ports are in
/// `addr` (the first listener) and `admin`.
pub struct TestGateway {
    pub gw: Gateway,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub path: Option<PathBuf>,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
}

/// `yaml` with an admin port on an ephemeral port, unless it has one.
pub fn with_admin(yaml: &str) -> String {
    if yaml.contains("\nadmin:") || yaml.starts_with("admin:") {
        yaml.to_string()
    } else {
        format!("{yaml}\nadmin: {{ address: \"127.0.0.1:0\" }}\n")
    }
}

/// Starts a gateway from config text (not backed by a file).
pub async fn gateway(yaml: &str) -> TestGateway {
    portico_proxy::install_url_fetcher();
    let text = with_admin(yaml);
    let cfg = portico_config::load_str("test.yaml", &text, std::path::Path::new("."), &|k| {
        std::env::var(k).ok()
    })
    .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    start(cfg, None).await
}

/// Starts a gateway from a config file written with `yaml` (so reloads can rewrite it).
pub async fn gateway_from_file(dir: &std::path::Path, yaml: &str) -> TestGateway {
    let path = dir.join("portico.yaml");
    std::fs::write(&path, with_admin(yaml)).unwrap();
    let cfg =
        portico_config::load_file(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    start(cfg, Some(path)).await
}

/// Starts a gateway from a config store (`redis://…`) and has it follow the store; also
/// says whether it started from the store or from the cached copy.
pub async fn gateway_from_store(
    url: &str,
    cache: Option<PathBuf>,
    poll: std::time::Duration,
) -> Result<(TestGateway, portico_proxy::StartedFrom), portico_proxy::StoreStartError> {
    gateway_from_store_in(url, cache, poll, PathBuf::from(".")).await
}

/// [`gateway_from_store`] with relative paths in the config read from `base`.
pub async fn gateway_from_store_in(
    url: &str,
    cache: Option<PathBuf>,
    poll: std::time::Duration,
    base: PathBuf,
) -> Result<(TestGateway, portico_proxy::StartedFrom), portico_proxy::StoreStartError> {
    portico_proxy::install_url_fetcher();
    let url = portico_proxy::runtime::config_store::StoreUrl::parse(url).unwrap();
    let (cfg, source, from) = portico_proxy::StoreSource::load(url, cache, poll, base).await?;
    let gw = start(cfg, None).await;
    gw.gw.follow_store(source);
    Ok((gw, from))
}

async fn start(cfg: portico_config::Config, path: Option<PathBuf>) -> TestGateway {
    let gw = Gateway::start(cfg, path.clone()).await.unwrap();
    let addr = gw
        .listener_addrs()
        .await
        .first()
        .map(|(_, a)| *a)
        .unwrap_or_else(|| "127.0.0.1:9".parse().unwrap());
    let admin = gw.admin_addr().unwrap();
    TestGateway {
        gw,
        addr,
        admin,
        path,
    }
}

/// A response read whole.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An HTTP client; `h2` selects HTTP/2 (h2c prior knowledge on `http://`). `roots` are trusted
/// for `https://`.
pub fn client(h2: bool, roots: &[rustls_pki_types::CertificateDer<'static>]) -> Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let conn = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(conn)
}

pub async fn send<C>(
    c: &hyper_util::client::legacy::Client<C, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Got
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let resp = c
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("request failed: {e:?}"));
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_else(|e| panic!("body failed: {e:?}"));
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

pub async fn get(url: &str) -> Got {
    send(
        &client(false, &[]),
        Request::get(url).body(Full::new(Bytes::new())).unwrap(),
    )
    .await
}

/// Sends raw bytes on a fresh connection and reads until the server closes it (or 5 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A WebSocket server that echoes every message.
pub async fn websocket_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A gRPC server (tonic) offering `grpc.health.v1.Health`; the service `portico.test` is
/// SERVING. Served over h2c.
pub async fn grpc_health() -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("portico.test", tonic_health::ServingStatus::Serving)
        .await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _reporter = reporter;
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
