//! Mutual TLS: client certificates verified against the listener's CA, mapped to consumers,
//! forwarded upstream; optional and required modes; certificates from another CA refused.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portico_testkit::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A client certificate (chain of one) and its key, as DER.
fn client_cert(
    ca: &Ca,
    cn: &str,
    uri: Option<&str>,
) -> (
    rustls_pki_types::CertificateDer<'static>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(u) = uri {
        p.subject_alt_names
            .push(SanType::URI(u.try_into().unwrap()));
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (cert.der().clone(), der)
}

/// GET `path` over TLS, presenting `identity` when given. `Err` when the handshake or the
/// request fails.
async fn get_tls(
    addr: std::net::SocketAddr,
    server: &TestCert,
    identity: Option<(
        rustls_pki_types::CertificateDer<'static>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
    path: &str,
) -> Result<(u16, serde_json::Value), String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert_der.clone()).unwrap();
    let b = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match identity {
        Some((c, k)) => b.with_client_auth_cert(vec![c], k).unwrap(),
        None => b.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .header("x-client-cert", "Hash=forged")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
}

async fn mtls_gateway(up: &Upstream, required: bool) -> (TestGateway, TestCert, Ca) {
    let dir = temp_dir("mtls");
    let server = cert(&["localhost"]);
    let (c, k) = server.write(&dir, "server");
    let ca = new_ca("Test Client CA");
    std::fs::write(dir.join("clients-ca.pem"), &ca.pem).unwrap();
    let yaml = format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\n    tls:\n      certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n      client_certificates: {{ ca: clients-ca.pem, required: {required} }}\nconsumers:\n  - name: billing\n    groups: [services]\n    client_cert_names: [\"spiffe://test/billing\"]\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: client_cert\n        forward_header: x-client-cert\n",
        c.display(),
        k.display(),
        up.url()
    );
    let gw = gateway_from_file(&dir, &yaml).await;
    (gw, server, ca)
}

#[tokio::test]
async fn client_certificates_identify_consumers_and_are_forwarded() {
    let up = echo_server().await;
    let (gw, server, ca) = mtls_gateway(&up, false).await;

    let billing = client_cert(&ca, "billing-7", Some("spiffe://test/billing"));
    let (status, seen) = get_tls(gw.addr, &server, Some(billing), "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(seen["headers"]["x-consumer-name"], "billing");
    assert_eq!(seen["headers"]["x-consumer-groups"], "services");
    let fwd = seen["headers"]["x-client-cert"].as_str().unwrap();
    assert!(fwd.starts_with("Hash="), "{fwd}");
    assert!(fwd.contains("Subject=\"CN=billing-7\""), "{fwd}");
    assert!(fwd.contains(";URI=spiffe://test/billing"), "{fwd}");
    assert!(!fwd.contains("forged"), "the client's copy is replaced");

    // Verified but unmapped: authenticated, no consumer.
    let other = client_cert(&ca, "someone", None);
    let (status, seen) = get_tls(gw.addr, &server, Some(other), "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(seen["headers"]["x-consumer-name"].is_null());

    // Optional mode: no certificate reaches HTTP and is refused there.
    let (status, _) = get_tls(gw.addr, &server, None, "/").await.unwrap();
    assert_eq!(status, 401);

    // A certificate from another CA never completes the handshake.
    let rogue = client_cert(
        &new_ca("Rogue CA"),
        "billing-7",
        Some("spiffe://test/billing"),
    );
    let r = get_tls(gw.addr, &server, Some(rogue), "/").await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn required_client_certificates_are_enforced_in_the_handshake() {
    let up = echo_server().await;
    let (gw, server, ca) = mtls_gateway(&up, true).await;
    let r = get_tls(gw.addr, &server, None, "/").await;
    assert!(r.is_err(), "no certificate: {r:?}");
    let billing = client_cert(&ca, "billing-7", Some("spiffe://test/billing"));
    let (status, _) = get_tls(gw.addr, &server, Some(billing), "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 1);
}

/// The admin port over TLS with required client certificates: only a client with a
/// certificate from the admin CA gets an answer.
#[tokio::test]
async fn the_admin_port_can_require_client_certificates() {
    let dir = temp_dir("admin-mtls");
    let server = cert(&["localhost"]);
    let (c, k) = server.write(&dir, "server");
    let ca = new_ca("Admin Client CA");
    std::fs::write(dir.join("admin-ca.pem"), &ca.pem).unwrap();
    let yaml = format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\nadmin:\n  address: \"127.0.0.1:0\"\n  tls:\n    certificates: [{{ cert: \"{}\", key: \"{}\" }}]\n    client_certificates: {{ ca: admin-ca.pem }}\nroutes:\n  - respond: {{ body: ok }}\n",
        c.display(),
        k.display(),
    );
    let gw = gateway_from_file(&dir, &yaml).await;
    let operator = client_cert(&ca, "operator", None);
    let (status, _) = get_tls(gw.admin, &server, Some(operator), "/config")
        .await
        .unwrap();
    assert_eq!(status, 200);
    // No certificate, or one from another CA: no answer at all.
    assert!(get_tls(gw.admin, &server, None, "/config").await.is_err());
    let stranger = client_cert(&new_ca("Other CA"), "operator", None);
    assert!(
        get_tls(gw.admin, &server, Some(stranger), "/config")
            .await
            .is_err()
    );
    // Plain HTTP gets nothing either.
    let plain = raw(gw.admin, b"GET /config HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await;
    assert!(!plain.contains("200 OK"), "{plain}");
}
