//! `listeners` (addresses, protocols, TLS and client certificates), the `admin` port and who
//! may use it, and `access_log`.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::canon::PathOptions;
use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node, NodeKind};

use super::ctx::{Ctx, FNV_START, fnv, get, item_loc, loc, read_file, resolve};
use super::server::path_options;
use super::values::{not_a_switch, parse_addr, yaml_bool};

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

pub(super) fn compile_listeners(
    cx: &mut Ctx<'_>,
    cfgs: &[ListenerConfig],
    nodes: &[&Node],
    server_paths: &PathOptions,
) -> Vec<Listener> {
    let mut out: Vec<Listener> = Vec::new();
    for (cfg, node) in cfgs.iter().zip(nodes) {
        let Some(addr) = parse_addr(cx, &cfg.address, loc(node, "address")) else {
            continue;
        };
        // Port 0 (any free port, used by tests) never collides.
        if addr.port() != 0 && out.iter().any(|l| l.addr == addr) {
            cx.sink.at(
                loc(node, "address"),
                format!("two listeners on `{addr}`"),
                "give each listener its own address",
            );
            continue;
        }
        let name: Arc<str> = cfg.name.clone().unwrap_or_else(|| addr.to_string()).into();
        if out.iter().any(|l| l.name == name) {
            cx.sink.at(
                loc(node, "name"),
                format!("duplicate listener name `{name}`"),
                "listener names must be unique",
            );
            continue;
        }
        let protocols = cfg
            .protocols
            .clone()
            .unwrap_or_else(|| vec![Protocol::Http1, Protocol::Http2]);
        if protocols.is_empty() {
            cx.sink.at(
                loc(node, "protocols"),
                "`protocols` is empty",
                "list `http1`, `http2` or both, or remove the key",
            );
            continue;
        }
        let tls = match &cfg.tls {
            Some(t) => match compile_listener_tls(cx, t, get(node, "tls").unwrap_or(node)) {
                Some(t) => Some(t),
                None => continue,
            },
            None => None,
        };
        out.push(Listener {
            name,
            addr,
            http1: protocols.contains(&Protocol::Http1),
            http2: protocols.contains(&Protocol::Http2),
            tls,
            paths: path_options(cfg.paths.as_ref(), *server_paths),
        });
    }
    out
}

fn compile_listener_tls(
    cx: &mut Ctx<'_>,
    cfg: &TlsListenerConfig,
    node: &Node,
) -> Option<ListenerTls> {
    if cfg.certificates.is_empty() {
        cx.sink.at(
            loc(node, "certificates"),
            "`certificates` is empty",
            "add at least one `{ cert: cert.pem, key: key.pem }`",
        );
        return None;
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut certificates = Vec::new();
    let mut fingerprint = FNV_START;
    let mut ok = true;
    for (i, c) in cfg.certificates.iter().enumerate() {
        let cnode = match get(node, "certificates").map(|n| &n.kind) {
            Some(NodeKind::Seq(items)) => &items[i],
            _ => node,
        };
        let cert_pem = read_file(cx, &c.cert, loc(cnode, "cert"));
        let key_pem = read_file(cx, &c.key, loc(cnode, "key"));
        let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
            ok = false;
            continue;
        };
        fingerprint = fnv(&key_pem, fnv(&cert_pem, fingerprint));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            cx.sink.at(
                loc(cnode, "cert"),
                format!("no PEM certificate found in `{}`", c.cert),
                "the file must hold `-----BEGIN CERTIFICATE-----` blocks, leaf first",
            );
            ok = false;
            continue;
        }
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(k) => k,
            Err(_) => {
                cx.sink.at(
                    loc(cnode, "key"),
                    format!("no PEM private key found in `{}`", c.key),
                    "the file must hold a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key",
                );
                ok = false;
                continue;
            }
        };
        let mut names: Vec<String> = c
            .server_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        if names.is_empty()
            && let Ok(ee) = webpki::EndEntityCert::try_from(&chain[0])
        {
            names = ee.valid_dns_names().map(str::to_ascii_lowercase).collect();
        }
        match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
            Ok(k) => certificates.push(TlsCertificate {
                key: Arc::new(k),
                server_names: names,
            }),
            Err(e) => {
                cx.sink.at(
                    loc(cnode, "key"),
                    format!(
                        "certificate `{}` and key `{}` cannot be used together: {e}",
                        c.cert, c.key
                    ),
                    "check that the key belongs to the certificate",
                );
                ok = false;
            }
        }
    }
    let client_auth = match &cfg.client_certificates {
        None => None,
        Some(cc) => {
            let cnode = get(node, "client_certificates").unwrap_or(node);
            let pem = read_file(cx, &cc.ca, loc(cnode, "ca"));
            match pem {
                None => {
                    ok = false;
                    None
                }
                Some(pem) => {
                    fingerprint = fnv(
                        &pem,
                        fnv(&[u8::from(cc.required.unwrap_or(true))], fingerprint),
                    );
                    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                        .filter_map(Result::ok)
                        .collect();
                    let mut store = rustls::RootCertStore::empty();
                    let (added, _) = store.add_parsable_certificates(roots.iter().cloned());
                    if added == 0 {
                        cx.sink.at(
                            loc(cnode, "ca"),
                            format!("no usable CA certificate in `{}`", cc.ca),
                            "the file must hold the `-----BEGIN CERTIFICATE-----` blocks of the CAs that issue client certificates",
                        );
                        ok = false;
                    }
                    Some(ClientAuth {
                        roots,
                        required: cc.required.unwrap_or(true),
                    })
                }
            }
        }
    };
    ok.then_some(ListenerTls {
        certificates,
        fingerprint,
        client_auth,
    })
}

pub(super) fn compile_admin(
    cx: &mut Ctx<'_>,
    cfg: Option<&AdminConfig>,
    node: Option<&Node>,
    listeners: &[Listener],
) -> Option<SocketAddr> {
    let text = cfg.map_or(DEFAULT_ADMIN, |a| a.address.as_str());
    let at = node.map_or(Loc { line: 1, column: 1 }, |n| loc(n, "address"));
    match yaml_bool(node, "address") {
        Some(false) => return None,
        Some(true) => {
            cx.sink
                .at(at, not_a_switch("address"), "give `host:port`, or `off`");
            return None;
        }
        None if text == "off" => return None,
        None => {}
    }
    let addr = parse_addr(cx, text, at)?;
    if addr.port() != 0 && listeners.iter().any(|l| l.addr == addr) {
        cx.sink.at(
            at,
            format!("the admin address `{addr}` is also a listener's"),
            "give the admin listener its own port, or `address: off`",
        );
        return None;
    }
    Some(addr)
}

pub(super) fn compile_admin_access(
    cx: &mut Ctx<'_>,
    cfg: Option<&AdminConfig>,
    node: Option<&Node>,
) -> AdminAccess {
    let (Some(cfg), Some(node)) = (cfg, node) else {
        return AdminAccess::default();
    };
    let token =
        cfg.token_hash
            .as_deref()
            .and_then(|t| match portico_auth::apikey::parse_digest(t) {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.sink.at(
                        loc(node, "token_hash"),
                        e,
                        "store the digest of the token, never the token: `portico hash api-key`",
                    );
                    None
                }
            });
    let mut read_tokens = Vec::new();
    for (i, t) in cfg.read_token_hashes.iter().enumerate() {
        match portico_auth::apikey::parse_digest(t) {
            Ok(d) if token == Some(d) => cx.sink.at(
                item_loc(node, "read_token_hashes", i),
                "a read-only token is the same as the write token (`token_hash`)",
                "give readers a token of their own: `portico hash api-key` on a new random token",
            ),
            Ok(d) => read_tokens.push(d),
            Err(e) => cx.sink.at(
                item_loc(node, "read_token_hashes", i),
                e,
                "store the digest of the token, never the token: `portico hash api-key`",
            ),
        }
    }
    if !cfg.read_token_hashes.is_empty() && cfg.token_hash.is_none() {
        cx.sink.at(
            loc(node, "read_token_hashes"),
            "read tokens without a write token (`token_hash`) would guard reads and leave every write open",
            "set `token_hash` too (`portico hash api-key` on a new random token)",
        );
    }
    let mut allowed_hosts = Vec::new();
    for (i, h) in cfg.allowed_hosts.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ':', ' ', '*']) {
            cx.sink.at(
                item_loc(node, "allowed_hosts", i),
                format!("invalid host name `{h}`"),
                "write a name such as `gateway-admin.internal`, without port or scheme",
            );
        } else {
            allowed_hosts.push(h.to_ascii_lowercase());
        }
    }
    let tls = cfg
        .tls
        .as_ref()
        .and_then(|t| compile_listener_tls(cx, t, get(node, "tls").unwrap_or(node)));
    AdminAccess {
        token,
        read_tokens,
        allowed_hosts,
        tls,
    }
}

pub(super) fn compile_access_log(
    cx: &mut Ctx<'_>,
    cfg: Option<&AccessLogConfig>,
    node: Option<&Node>,
) -> AccessLog {
    let Some(cfg) = cfg else {
        return AccessLog::Off;
    };
    let buffer = cfg.buffer.unwrap_or(8192);
    if buffer == 0 {
        cx.sink.at(
            node.map_or(Loc::default(), |n| loc(n, "buffer")),
            "`buffer` must be at least 1",
            "the default, 8192 lines, suits most loads",
        );
    }
    let target = node.map_or(Loc::default(), |n| loc(n, "target"));
    match yaml_bool(node, "target") {
        Some(false) => return AccessLog::Off,
        Some(true) => {
            cx.sink.at(
                target,
                not_a_switch("target"),
                "use `stdout`, `off` or a file path",
            );
            return AccessLog::Off;
        }
        None => {}
    }
    match cfg.target.as_str() {
        "off" => AccessLog::Off,
        "stdout" => AccessLog::Stdout { buffer },
        "" => {
            cx.sink.at(
                target,
                "empty access-log target",
                "use `stdout`, `off` or a file path",
            );
            AccessLog::Off
        }
        path => AccessLog::File {
            path: resolve(cx, path),
            buffer,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ctx::testing::{ctx, doc, only_diagnostic};
    use crate::tree::from_node;

    #[test]
    fn admin_address_on_is_not_a_switch() {
        let text = "address: on\n";
        let node = doc(text);
        let cfg: AdminConfig = from_node(&node, &|_: &str| None).unwrap();
        let mut cx = ctx(text);
        assert!(compile_admin(&mut cx, Some(&cfg), Some(&node), &[]).is_none());
        let d = only_diagnostic(cx);
        assert_eq!(
            d.loc,
            Some(Loc {
                line: 1,
                column: 10
            })
        );
        assert_eq!(d.hint.as_deref(), Some("give `host:port`, or `off`"));
    }

    #[test]
    fn admin_address_off_turns_it_off() {
        let text = "address: off\n";
        let node = doc(text);
        let cfg: AdminConfig = from_node(&node, &|_: &str| None).unwrap();
        let mut cx = ctx(text);
        assert!(compile_admin(&mut cx, Some(&cfg), Some(&node), &[]).is_none());
        assert!(cx.sink.finish().is_empty());
    }
}
