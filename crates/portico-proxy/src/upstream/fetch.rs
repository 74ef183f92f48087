//! One-off HTTP GETs made by the gateway itself (JWKS documents): a fresh connection, HTTP/1.1,
//! TLS with the web's root certificates for `https`, a time limit and a size limit.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

fn tls() -> tokio_rustls::TlsConnector {
    static TLS: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    })
    .clone()
}

/// GETs `url` and returns the body of a 200 answer, at most `max_bytes` long.
pub async fn get(url: &str, timeout: Duration, max_bytes: usize) -> Result<Bytes, String> {
    tokio::time::timeout(timeout, request(url, None, max_bytes))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// POSTs a form (`application/x-www-form-urlencoded`) with an optional `Authorization` value,
/// and returns the body of a 200 answer.
pub async fn post_form(
    url: &str,
    authorization: Option<&http::HeaderValue>,
    form: String,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes, String> {
    tokio::time::timeout(
        timeout,
        request(url, Some((authorization, form)), max_bytes),
    )
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn request(
    url: &str,
    form: Option<(Option<&http::HeaderValue>, String)>,
    max_bytes: usize,
) -> Result<Bytes, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut b = Request::builder()
        .method(if form.is_some() {
            http::Method::POST
        } else {
            http::Method::GET
        })
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("portico/", env!("CARGO_PKG_VERSION")),
        );
    let body = match form {
        Some((auth, text)) => {
            if let Some(a) = auth {
                b = b.header(header::AUTHORIZATION, a.clone());
            }
            b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Full::new(Bytes::from(text))
        }
        None => Full::new(Bytes::new()),
    };
    let req = b.body(body).map_err(|e| e.to_string())?;
    let resp = if https {
        let name = rustls_pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .map_err(|e| e.to_string())?;
        let io = tls()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(io), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if resp.status() != StatusCode::OK {
        return Err(format!("status {}", resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes())
}

async fn send<I>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    tx.send_request(req).await.map_err(|e| e.to_string())
}

/// A GET made while a config loads (a WSDL named by URL), from code that is not async: on its
/// own thread and runtime, so it works inside and outside the gateway's runtime. 10 s, 16 MiB.
pub fn get_blocking(url: &str) -> Result<Vec<u8>, String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(get(&url, Duration::from_secs(10), 16 << 20))
            .map(|b| b.to_vec())
    })
    .join()
    .map_err(|_| "the fetch failed".to_owned())?
}
