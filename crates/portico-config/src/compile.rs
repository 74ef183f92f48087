//! Validation and compilation: the file's sections, checked together, become [`Config`].
//! Every problem is collected with its location; nothing stops at the first.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::canon::{EscapedSlashes, PathOptions, PathParameters};
use crate::diag::{Diagnostics, Sink};
use crate::file::*;
use crate::ir::*;
use crate::router::Router;
use crate::tree::{Env, Loc, Node, NodeKind, from_node, parse_document, suggest};

const TOP_LEVEL: &[&str] = &[
    "version",
    "listeners",
    "admin",
    "access_log",
    "server",
    "upstreams",
    "routes",
    "policies",
    "consumers",
    "redis",
];

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

pub(crate) struct Ctx<'a> {
    /// Rate-limit policies compiled so far (the next one's id).
    pub(crate) rate_limits: usize,
    /// Basic-auth policies compiled so far (the next one's id).
    pub(crate) basic_policies: usize,
    /// JWKS URLs by slot.
    pub(crate) jwks: Vec<JwksSource>,
    /// Whether any consumer has an API key / Basic credentials.
    pub(crate) have_api_keys: bool,
    pub(crate) have_users: bool,
    /// Header names `jwt` policies forward claims in.
    pub(crate) claim_headers: Vec<HeaderName>,
    /// JWT policies compiled so far (the next one's id).
    pub(crate) jwt_policies: usize,
    /// Introspection policies compiled so far (the next one's id).
    pub(crate) introspection_policies: usize,
    /// Whether the file has a `redis` section (for `store: redis`).
    pub(crate) have_redis: bool,
    /// Concurrency policies compiled so far (the next one's id).
    pub(crate) concurrency_limits: usize,
    /// Whether the global chain authenticates (so route `acl` policies have an identity).
    pub(crate) global_auth: bool,
    pub(crate) sink: Sink<'a>,
    pub(crate) base_dir: &'a Path,
    pub(crate) env: Env<'a>,
}

/// The value node under `key` in a mapping node.
pub(crate) fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Location of `key`'s value in a mapping node, or of the mapping itself.
pub(crate) fn loc(node: &Node, key: &str) -> Loc {
    get(node, key).map_or(node.loc, |n| n.loc)
}

/// The `i`th item node of a route's `split` list (or the route node).
fn split_item(node: &Node, i: usize) -> Node {
    match get(node, "split").map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).cloned().unwrap_or_else(|| node.clone()),
        _ => node.clone(),
    }
}

/// Location of the `i`th item of the list under `key`.
pub(crate) fn item_loc(node: &Node, key: &str, i: usize) -> Loc {
    match get(node, key).map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).map_or(loc(node, key), |n| n.loc),
        _ => loc(node, key),
    }
}

fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Parses, validates and compiles a config text. `source` names it in diagnostics; relative
/// paths in it are resolved against `base_dir`.
pub fn compile(
    source: &str,
    text: &str,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<Config, Diagnostics> {
    let mut cx = Ctx {
        rate_limits: 0,
        basic_policies: 0,
        jwt_policies: 0,
        introspection_policies: 0,
        have_redis: false,
        concurrency_limits: 0,
        jwks: Vec::new(),
        have_api_keys: false,
        have_users: false,
        claim_headers: Vec::new(),
        global_auth: false,
        sink: Sink::new(source, text),
        base_dir,
        env,
    };
    let root = match parse_document(text) {
        Ok(n) => n,
        Err(e) => {
            cx.sink.de(e);
            return Err(cx.sink.finish());
        }
    };
    let NodeKind::Map(entries) = &root.kind else {
        cx.sink.at(
            root.loc,
            format!("the config must be a mapping, found {}", root.type_name()),
            "start with `listeners:`, `upstreams:` and `routes:`",
        );
        return Err(cx.sink.finish());
    };

    // Structural pass: each item on its own, so one bad route doesn't hide another.
    let mut file = FileConfig::default();
    let mut listener_nodes = Vec::new();
    let mut upstream_nodes = BTreeMap::new();
    let mut route_nodes = Vec::new();
    let mut policy_nodes = Vec::new();
    let mut consumer_nodes = Vec::new();
    let mut route_count = 0usize;
    for (k, v) in entries {
        let key = k.key_text();
        match key.as_str() {
            "version" => match from_node::<Option<u32>>(v, cx.env) {
                Ok(Some(1) | None) => file.version = Some(1),
                Ok(Some(n)) => cx.sink.at(
                    v.loc,
                    format!("unsupported config version {n}"),
                    "this Portico reads `version: 1`",
                ),
                Err(e) => cx.sink.de(e),
            },
            "listeners" => each_item(&mut cx, v, |cx, n| {
                match from_node::<ListenerConfig>(n, cx.env) {
                    Ok(l) => {
                        file.listeners.push(l);
                        listener_nodes.push(n);
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "routes" => each_item(&mut cx, v, |cx, n| {
                route_count += 1;
                match from_node::<RouteConfig>(n, cx.env) {
                    Ok(r) => {
                        file.routes.push(r);
                        route_nodes.push((route_count, n));
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "policies" => each_item(&mut cx, v, |cx, n| {
                match from_node::<PolicyConfig>(n, cx.env) {
                    Ok(p) => {
                        file.policies.push(p);
                        policy_nodes.push(n);
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "consumers" => each_item(&mut cx, v, |cx, n| {
                match from_node::<ConsumerConfig>(n, cx.env) {
                    Ok(c) => {
                        file.consumers.push(c);
                        consumer_nodes.push(n);
                    }
                    Err(e) => cx.sink.de(e),
                }
            }),
            "upstreams" => match &v.kind {
                NodeKind::Map(ups) => {
                    for (name, body) in ups {
                        match from_node::<UpstreamConfig>(body, cx.env) {
                            Ok(u) => {
                                file.upstreams.insert(name.key_text(), u);
                                upstream_nodes.insert(name.key_text(), (name, body));
                            }
                            Err(e) => cx.sink.de(e),
                        }
                    }
                }
                NodeKind::Null => {}
                _ => cx.sink.at(
                    v.loc,
                    format!(
                        "`upstreams` must be a mapping of names to upstreams, found {}",
                        v.type_name()
                    ),
                    "write `upstreams:` then `  users: { targets: [\"http://127.0.0.1:9000\"] }`",
                ),
            },
            "admin" => match from_node::<Option<AdminConfig>>(v, cx.env) {
                Ok(a) => file.admin = a,
                Err(e) => cx.sink.de(e),
            },
            "access_log" => match from_node::<Option<AccessLogConfig>>(v, cx.env) {
                Ok(a) => file.access_log = a,
                Err(e) => cx.sink.de(e),
            },
            "redis" => match from_node::<Option<RedisConfig>>(v, cx.env) {
                Ok(r) => file.redis = r,
                Err(e) => cx.sink.de(e),
            },
            "server" => match from_node::<Option<ServerConfig>>(v, cx.env) {
                Ok(s) => file.server = s,
                Err(e) => cx.sink.de(e),
            },
            other => cx.sink.at(
                k.loc,
                format!("unknown key `{other}`"),
                suggest(other, TOP_LEVEL),
            ),
        }
    }

    // Semantic pass.
    let mut server = compile_server(&mut cx, file.server.as_ref(), get(&root, "server"));
    let listeners = compile_listeners(&mut cx, &file.listeners, &listener_nodes, &server.paths);
    let admin = compile_admin(
        &mut cx,
        file.admin.as_ref(),
        get(&root, "admin"),
        &listeners,
    );
    let admin_access = compile_admin_access(&mut cx, file.admin.as_ref(), get(&root, "admin"));
    let access_log =
        compile_access_log(&mut cx, file.access_log.as_ref(), get(&root, "access_log"));
    let (upstreams, upstream_index) = compile_upstreams(&mut cx, &file.upstreams, &upstream_nodes);
    let redis = compile_redis(&mut cx, file.redis.as_ref(), get(&root, "redis"));
    cx.have_redis = redis.is_some();
    let consumers =
        crate::auth::compile_consumers(&mut cx, &file.consumers, &consumer_nodes, &server);
    cx.global_auth = check_chain(&mut cx, &file.policies, &policy_nodes, false);
    let mut nth = 0;
    let global_policies: Arc<[Policy]> = file
        .policies
        .iter()
        .zip(&policy_nodes)
        .filter_map(|(p, n)| {
            let mut p = compile_policy(&mut cx, p, n)?;
            scope_rate_limit(&mut p, None, &mut nth);
            Some(p)
        })
        .collect();
    let mut routes = Vec::new();
    let mut names: HashMap<String, Loc> = HashMap::new();
    for (cfg, (number, node)) in file.routes.iter().zip(&route_nodes) {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("route-{number}"));
        if let Some(first) = names.get(&name) {
            cx.sink.at(
                loc(node, "name"),
                format!("duplicate route name `{name}`"),
                format!(
                    "route names must be unique; the first `{name}` is on line {}",
                    first.line
                ),
            );
            continue;
        }
        names.insert(name.clone(), loc(node, "name"));
        if let Some(r) = compile_route(
            &mut cx,
            routes.len(),
            name,
            cfg,
            node,
            &upstream_index,
            &upstreams,
            &global_policies,
        ) {
            routes.push(Arc::new(r));
        }
    }

    if !cx.sink.out.is_empty() {
        return Err(cx.sink.finish());
    }
    let router = Router::build(&routes);
    let mut identity = vec![server.consumer_header.clone(), server.groups_header.clone()];
    for h in std::mem::take(&mut cx.claim_headers) {
        if !identity.contains(&h) {
            identity.push(h);
        }
    }
    server.identity_headers = identity;
    let listener_paths = listeners
        .iter()
        .filter(|l| l.paths != server.paths)
        .map(|l| (l.name.clone(), l.paths))
        .collect();
    Ok(Config {
        source: source.to_owned(),
        hash: format!("{:016x}", fnv(text.as_bytes(), FNV_START)),
        listeners,
        admin,
        admin_access,
        access_log,
        server,
        upstreams,
        routes,
        router,
        global_policies,
        rate_limit_policies: cx.rate_limits,
        concurrency_policies: cx.concurrency_limits,
        consumers: Arc::new(consumers),
        jwks: cx.jwks,
        redis,
        listener_paths,
        text: Arc::from(text),
    })
}

fn each_item<'n>(cx: &mut Ctx<'_>, v: &'n Node, mut f: impl FnMut(&mut Ctx<'_>, &'n Node)) {
    match &v.kind {
        NodeKind::Seq(items) => items.iter().for_each(|n| f(cx, n)),
        NodeKind::Null => {}
        _ => cx.sink.at(
            v.loc,
            format!("expected a list, found {}", v.type_name()),
            "start each item with `- `",
        ),
    }
}

pub(crate) fn resolve(cx: &Ctx<'_>, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cx.base_dir.join(p)
    }
}

/// Largest file a config may name (certificates, keys, CA bundles, secrets, descriptor sets).
pub(crate) const MAX_NAMED_FILE: u64 = 64 << 20;

/// Reads a regular file of at most `MAX_NAMED_FILE` bytes: a config that names `/dev/zero`, a
/// FIFO or a huge file must fail with an error, not hang or exhaust memory while loading.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_NAMED_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_NAMED_FILE >> 20
        )));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_NAMED_FILE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_NAMED_FILE {
        return Err(std::io::Error::other("it grew while being read"));
    }
    Ok(buf)
}

pub(crate) fn read_file(cx: &mut Ctx<'_>, path: &str, at: Loc) -> Option<Vec<u8>> {
    let full = resolve(cx, path);
    match read_bounded(&full) {
        Ok(b) => Some(b),
        Err(e) => {
            cx.sink.at(
                at,
                format!("cannot read `{}`: {e}", full.display()),
                "check the path; relative paths are resolved from the config file's folder",
            );
            None
        }
    }
}

fn parse_addr(cx: &mut Ctx<'_>, s: &str, at: Loc) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if s.starts_with("localhost") {
                "use an IP address, such as `127.0.0.1:8080` (host names are not resolved for listeners)"
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "a port alone is not an address: add the IP to listen on, as in `127.0.0.1:9901` or `0.0.0.0:8080`"
            } else if !s.contains(':') {
                "add a port, as in `0.0.0.0:8080`"
            } else {
                "write `IP:port`, such as `0.0.0.0:8080` or `[::]:8080`"
            };
            cx.sink.at(at, format!("invalid address `{s}`"), hint);
            None
        }
    }
}

fn compile_listeners(
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

/// The boolean a key's value was written as, if any. YAML reads `off`, `no` and `false`
/// unquoted as the boolean false (and `on`, `yes`, `true` as true), which the file types then
/// see as the text `false`; for keys whose documented value is `off`, that is what was meant.
fn yaml_bool(node: Option<&Node>, key: &str) -> Option<bool> {
    match node.and_then(|n| get(n, key)).map(|v| &v.kind) {
        Some(NodeKind::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn not_a_switch(key: &str) -> String {
    format!("`{key}` is the YAML boolean true here (unquoted `on`, `yes` and `true` all are)")
}

fn compile_admin(
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

fn compile_admin_access(
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
        allowed_hosts,
        tls,
    }
}

fn compile_access_log(
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

fn compile_server(cx: &mut Ctx<'_>, cfg: Option<&ServerConfig>, node: Option<&Node>) -> Server {
    let default = ServerConfig::default();
    let cfg = cfg.unwrap_or(&default);
    let fallback = Node {
        kind: NodeKind::Null,
        loc: Loc::default(),
    };
    let node = node.unwrap_or(&fallback);
    let mut trusted = Vec::new();
    for (i, t) in cfg.trusted_proxies.iter().enumerate() {
        match Cidr::parse(t) {
            Some(c) => trusted.push(c),
            None => cx.sink.at(
                item_loc(node, "trusted_proxies", i),
                format!("invalid address or CIDR `{t}`"),
                "write an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`)",
            ),
        }
    }
    let request_id_header =
        match HeaderName::try_from(cfg.request_id_header.as_deref().unwrap_or("x-request-id")) {
            Ok(h) => h,
            Err(_) => {
                cx.sink.at(
                    loc(node, "request_id_header"),
                    "invalid header name",
                    "use letters, digits and `-`, such as `x-request-id`",
                );
                HeaderName::from_static("x-request-id")
            }
        };
    let positive = |cx: &mut Ctx<'_>, v: Option<usize>, key: &str, default: usize| -> usize {
        match v {
            Some(0) => {
                cx.sink.at(
                    loc(node, key),
                    format!("`{key}` must be greater than 0"),
                    format!("remove it for the default, {default}"),
                );
                default
            }
            Some(n) => n,
            None => default,
        }
    };
    // Zero would close every connection the moment it waits (idle) or refuse every request
    // head (408); neither is a way to turn the timeout off.
    let nonzero = |cx: &mut Ctx<'_>,
                   v: Option<Duration>,
                   key: &str,
                   (d, default): (Duration, &str)| {
        match v {
            Some(v) if v.is_zero() => {
                cx.sink.at(
                    loc(node, key),
                    format!("`{key}` must be longer than 0s"),
                    format!(
                        "remove it for the default, {default}, or give a longer duration such as 1h"
                    ),
                );
                d
            }
            Some(v) => v,
            None => d,
        }
    };
    let client_idle_timeout = nonzero(
        cx,
        cfg.client_idle_timeout.as_ref().map(|d| d.0),
        "client_idle_timeout",
        (Duration::from_secs(60), "60s"),
    );
    let request_header_timeout = nonzero(
        cx,
        cfg.request_header_timeout.as_ref().map(|d| d.0),
        "request_header_timeout",
        (Duration::from_secs(10), "10s"),
    );
    Server {
        trusted_proxies: trusted,
        request_id_header,
        x_forwarded: cfg.x_forwarded.unwrap_or(true),
        forwarded: cfg.forwarded.unwrap_or(false),
        max_request_header_bytes: positive(
            cx,
            cfg.max_request_header_bytes,
            "max_request_header_bytes",
            65536,
        )
        .max(8192),
        max_request_headers: positive(cx, cfg.max_request_headers, "max_request_headers", 100),
        drain_timeout: cfg.drain_timeout.map_or(Duration::from_secs(30), |d| d.0),
        client_idle_timeout,
        request_header_timeout,
        max_uri_bytes: positive(cx, cfg.max_uri_bytes, "max_uri_bytes", 8192),
        consumer_header: identity_header(cx, node, "consumer", "x-consumer-name", cfg),
        groups_header: identity_header(cx, node, "groups", "x-consumer-groups", cfg),
        identity_headers: Vec::new(),
        paths: path_options(cfg.paths.as_ref(), PathOptions::default()),
        reload_settle: nonzero(
            cx,
            cfg.reload_settle.as_ref().map(|d| d.0),
            "reload_settle",
            (Duration::from_secs(1), "1s"),
        ),
        request_body_timeout: cfg
            .request_body_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        request_body_min_rate: cfg.request_body_min_rate.unwrap_or(1024),
        send_timeout: nonzero(
            cx,
            cfg.send_timeout.as_ref().map(|d| d.0),
            "send_timeout",
            (Duration::from_secs(60), "60s"),
        ),
        http2_max_concurrent_streams: positive(
            cx,
            cfg.http2_max_concurrent_streams.map(|n| n as usize),
            "http2_max_concurrent_streams",
            100,
        ) as u32,
        max_connections_per_ip: cfg.max_connections_per_ip.unwrap_or(0),
    }
}

/// `paths:` keys over `base` (the defaults for `server.paths`, the server's for a listener).
fn path_options(cfg: Option<&PathsConfig>, base: PathOptions) -> PathOptions {
    let Some(cfg) = cfg else {
        return base;
    };
    PathOptions {
        escaped_slashes: match cfg.escaped_slashes {
            None => base.escaped_slashes,
            Some(EscapedSlashesConfig::Reject) => EscapedSlashes::Reject,
            Some(EscapedSlashesConfig::Decode) => EscapedSlashes::Decode,
            Some(EscapedSlashesConfig::Keep) => EscapedSlashes::Keep,
        },
        merge_slashes: cfg.merge_slashes.unwrap_or(base.merge_slashes),
        path_parameters: match cfg.path_parameters {
            None => base.path_parameters,
            Some(PathParametersConfig::Reject) => PathParameters::Reject,
            Some(PathParametersConfig::Strip) => PathParameters::Strip,
            Some(PathParametersConfig::Keep) => PathParameters::Keep,
        },
    }
}

fn compile_redis(
    cx: &mut Ctx<'_>,
    cfg: Option<&RedisConfig>,
    node: Option<&Node>,
) -> Option<RedisSettings> {
    let cfg = cfg?;
    let node = node?;
    let urls: Vec<(String, Loc)> = match (&cfg.url, cfg.cluster_nodes.is_empty(), &cfg.sentinel) {
        (Some(u), true, None) => vec![(u.clone(), loc(node, "url"))],
        (None, false, None) => cfg
            .cluster_nodes
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), item_loc(node, "cluster_nodes", i)))
            .collect(),
        (None, true, Some(s)) if !s.nodes.is_empty() && !s.master.is_empty() => {
            let snode = get(node, "sentinel").unwrap_or(node);
            s.nodes
                .iter()
                .enumerate()
                .map(|(i, u)| (u.clone(), item_loc(snode, "nodes", i)))
                .collect()
        }
        (None, true, Some(_)) => {
            cx.sink.at(
                loc(node, "sentinel"),
                "`sentinel` needs `nodes` and `master`",
                "e.g. `sentinel: { nodes: [\"redis://10.0.0.5:26379\"], master: mymaster }`",
            );
            return None;
        }
        _ => {
            cx.sink.at(
                node.loc,
                "`redis` needs exactly one of `url`, `cluster_nodes` and `sentinel`",
                "give `url: redis://host:6379` for one server, `cluster_nodes: [...]` for a Redis Cluster, or `sentinel: { nodes: [...], master: NAME }`",
            );
            return None;
        }
    };
    for (u, at) in &urls {
        let ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|p| u.starts_with(p));
        if !ok {
            cx.sink.at(
                *at,
                format!("`{u}` is not a Redis URL"),
                "write `redis://host:port` (or `rediss://` for TLS), e.g. `redis://127.0.0.1:6379/0`",
            );
            return None;
        }
    }
    let timeout = cfg.timeout.map_or(Duration::from_millis(50), |d| d.0);
    if timeout.is_zero() {
        cx.sink.at(
            loc(node, "timeout"),
            "`timeout` must be greater than 0",
            "remove it for the default, 50ms",
        );
        return None;
    }
    Some(RedisSettings {
        url: urls[0].0.clone(),
        cluster_nodes: cfg.cluster_nodes.clone(),
        sentinel: cfg
            .sentinel
            .as_ref()
            .map(|s| (s.nodes.clone(), s.master.clone())),
        timeout,
        key_prefix: cfg.key_prefix.clone().unwrap_or_else(|| "portico:".into()),
    })
}

fn identity_header(
    cx: &mut Ctx<'_>,
    node: &Node,
    key: &str,
    default: &'static str,
    cfg: &ServerConfig,
) -> HeaderName {
    let set = cfg.identity_headers.as_ref();
    let name = match key {
        "consumer" => set.and_then(|s| s.consumer.as_deref()),
        _ => set.and_then(|s| s.groups.as_deref()),
    };
    match name.map(HeaderName::try_from) {
        None => HeaderName::from_static(default),
        Some(Ok(h)) => h,
        Some(Err(_)) => {
            let at = get(node, "identity_headers").map_or(node.loc, |n| loc(n, key));
            cx.sink
                .at(at, "invalid header name", "use letters, digits and `-`");
            HeaderName::from_static(default)
        }
    }
}

/// Checks the order of a policy chain: an `acl` needs an authentication policy before it
/// (globally or earlier in the same list). Returns whether the chain authenticates.
fn check_chain(
    cx: &mut Ctx<'_>,
    policies: &[PolicyConfig],
    nodes: &[&Node],
    mut auth: bool,
) -> bool {
    let mut cors_seen = false;
    for (p, n) in policies.iter().zip(nodes) {
        if let PolicyConfig::Cors(_) = p {
            if cors_seen {
                cx.sink.at(
                    n.loc,
                    "a second `cors` policy in the same list would never be used",
                    "merge the two: list every origin, method and header in one `cors` policy",
                );
            }
            cors_seen = true;
        }
        match p {
            PolicyConfig::ApiKey(_)
            | PolicyConfig::BasicAuth(_)
            | PolicyConfig::Jwt(_)
            | PolicyConfig::ClientCert(_)
            | PolicyConfig::Introspection(_)
            | PolicyConfig::AnyOf(_) => auth = true,
            PolicyConfig::Acl(a)
                if !auth && (!a.allow.is_empty() || !a.deny.is_empty() || !a.scopes.is_empty()) =>
            {
                cx.sink.at(
                    n.loc,
                    "this `acl` has no identity to check: no authentication policy runs before it",
                    "put an `api_key`, `basic_auth`, `jwt` or `any_of` policy before it, in the global `policies` or earlier in this list",
                );
            }
            _ => {}
        }
    }
    auth
}

fn compile_upstreams(
    cx: &mut Ctx<'_>,
    cfgs: &BTreeMap<String, UpstreamConfig>,
    nodes: &BTreeMap<String, (&Node, &Node)>,
) -> (Vec<Arc<Upstream>>, HashMap<String, usize>) {
    let mut out = Vec::new();
    let mut index = HashMap::new();
    // Keep file order so upstream indexes are stable across identical reloads.
    let mut ordered: Vec<(&String, &UpstreamConfig)> = cfgs.iter().collect();
    ordered.sort_by_key(|(name, _)| nodes.get(*name).map(|(k, _)| (k.loc.line, k.loc.column)));
    for (name, cfg) in ordered {
        let (name_node, node) = nodes[name];
        // Declared names resolve even when the upstream itself is invalid (reported here), so
        // routes that use it don't get a second, misleading "unknown upstream" error.
        index.insert(name.clone(), usize::MAX);
        if name.is_empty() {
            cx.sink.at(
                name_node.loc,
                "empty upstream name",
                "name it, as in `users:`",
            );
            continue;
        }
        if cfg.targets.is_empty() {
            cx.sink.at(
                loc(node, "targets"),
                format!("upstream `{name}` has no targets"),
                "add one, such as `targets: [\"http://127.0.0.1:9000\"]`",
            );
            continue;
        }
        let mut targets = Vec::new();
        let mut fp = fnv(format!("{cfg:?}").as_bytes(), FNV_START);
        for (i, t) in cfg.targets.iter().enumerate() {
            let at = item_loc(node, "targets", i);
            if t.weight == Some(0) {
                cx.sink.at(
                    at,
                    "a target's weight must be at least 1",
                    "remove the target, or give it `weight: 1` or more",
                );
                continue;
            }
            if let Some(mut target) = parse_target(cx, &t.url, at) {
                target.weight = t.weight.unwrap_or(1);
                targets.push(target);
            }
        }
        if targets.len() != cfg.targets.len() {
            continue;
        }
        let mut tls = UpstreamTls::default();
        if let Some(t) = &cfg.tls {
            let tnode = get(node, "tls").unwrap_or(node);
            if let Some(ca) = &t.ca {
                let Some(pem) = read_file(cx, ca, loc(tnode, "ca")) else {
                    continue;
                };
                fp = fnv(&pem, fp);
                let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .collect();
                if roots.is_empty() {
                    cx.sink.at(
                        loc(tnode, "ca"),
                        format!("no PEM certificate found in `{ca}`"),
                        "the CA bundle must hold `-----BEGIN CERTIFICATE-----` blocks",
                    );
                    continue;
                }
                tls.roots = Some(roots);
            }
            if let Some(sn) = &t.server_name {
                if rustls_pki_types::ServerName::try_from(sn.as_str()).is_err() {
                    cx.sink.at(
                        loc(tnode, "server_name"),
                        format!("invalid server name `{sn}`"),
                        "use a DNS name such as `api.internal`",
                    );
                    continue;
                }
                tls.server_name = Some(sn.clone());
            }
        }
        let health_check = match &cfg.health_check {
            None => None,
            Some(h) => {
                let hnode = get(node, "health_check").unwrap_or(node);
                let path = match &h.path {
                    None => None,
                    Some(p) if p.starts_with('/') => {
                        match http::uri::PathAndQuery::try_from(p.as_str()) {
                            Ok(pq) => Some(pq),
                            Err(_) => {
                                cx.sink.at(
                                    loc(hnode, "path"),
                                    format!("invalid path `{p}`"),
                                    "write a path such as `/healthz`",
                                );
                                continue;
                            }
                        }
                    }
                    Some(p) => {
                        cx.sink.at(
                            loc(hnode, "path"),
                            format!("path `{p}` must start with `/`"),
                            format!("write `/{p}`"),
                        );
                        continue;
                    }
                };
                if h.grpc_service.is_some() {
                    if h.path.is_some() {
                        cx.sink.at(
                            loc(hnode, "grpc_service"),
                            "`grpc_service` and `path` cannot be combined",
                            "a gRPC health check asks `grpc.health.v1.Health/Check`; remove `path`",
                        );
                        continue;
                    }
                    if targets.iter().any(|t: &Target| t.scheme == Scheme::Http) {
                        cx.sink.at(
                            loc(hnode, "grpc_service"),
                            "gRPC health checks need HTTP/2 targets",
                            "write the targets as `h2c://host:port` (or `https://` with HTTP/2)",
                        );
                        continue;
                    }
                }
                if let Some(bad) = h
                    .expected_statuses
                    .iter()
                    .find(|s| !(100..600).contains(*s))
                {
                    cx.sink.at(
                        loc(hnode, "expected_statuses"),
                        format!("{bad} is not an HTTP status"),
                        "use codes from 100 to 599",
                    );
                    continue;
                }
                if h.healthy_threshold == Some(0) || h.unhealthy_threshold == Some(0) {
                    cx.sink.at(
                        hnode.loc,
                        "health-check thresholds must be at least 1",
                        "the defaults are 2 (healthy) and 3 (unhealthy)",
                    );
                    continue;
                }
                let interval = h.interval.map_or(Duration::from_secs(5), |d| d.0);
                if interval.is_zero() {
                    cx.sink.at(
                        loc(hnode, "interval"),
                        "`interval` must be more than 0",
                        "for example `5s`",
                    );
                    continue;
                }
                Some(HealthCheck {
                    path,
                    grpc_service: h.grpc_service.clone(),
                    interval,
                    timeout: h.timeout.map_or(Duration::from_secs(2), |d| d.0),
                    expected_statuses: h.expected_statuses.clone(),
                    healthy_threshold: h.healthy_threshold.unwrap_or(2),
                    unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3),
                })
            }
        };
        let retry = match &cfg.retries {
            None => None,
            Some(r) => {
                let rnode = get(node, "retries").unwrap_or(node);
                let attempts = r.attempts.unwrap_or(2);
                if !(2..=10).contains(&attempts) {
                    cx.sink.at(
                        loc(rnode, "attempts"),
                        format!("`attempts` is {attempts}; it must be from 2 to 10"),
                        "it counts the first try: 2 means one retry; remove `retries` for none",
                    );
                    continue;
                }
                let budget = r.budget_percent.unwrap_or(20);
                if budget == 0 || budget > 100 {
                    cx.sink.at(
                        loc(rnode, "budget_percent"),
                        format!("`budget_percent` is {budget}; it must be from 1 to 100"),
                        "20 lets retries add at most a fifth more load",
                    );
                    continue;
                }
                let on = if r.retry_on.is_empty() {
                    vec![
                        RetryOn::Named(RetryCondition::ConnectFailure),
                        RetryOn::Named(RetryCondition::Reset),
                        RetryOn::Status(502),
                        RetryOn::Status(503),
                        RetryOn::Status(504),
                    ]
                } else {
                    r.retry_on.clone()
                };
                if let Some(RetryOn::Status(bad)) = on
                    .iter()
                    .find(|o| matches!(o, RetryOn::Status(s) if !(100..600).contains(s)))
                {
                    cx.sink.at(
                        loc(rnode, "retry_on"),
                        format!("{bad} is not an HTTP status"),
                        "use codes from 100 to 599, or connect_failure, reset, timeout",
                    );
                    continue;
                }
                Some(RetryPolicy {
                    attempts,
                    on_connect_failure: on
                        .contains(&RetryOn::Named(RetryCondition::ConnectFailure)),
                    on_reset: on.contains(&RetryOn::Named(RetryCondition::Reset)),
                    on_timeout: on.contains(&RetryOn::Named(RetryCondition::Timeout)),
                    on_statuses: on
                        .iter()
                        .filter_map(|o| {
                            if let RetryOn::Status(s) = o {
                                Some(*s)
                            } else {
                                None
                            }
                        })
                        .collect(),
                    budget_percent: budget,
                    backoff: r.backoff.map_or(Duration::from_millis(25), |d| d.0),
                    attempt_timeout: r.attempt_timeout.map(|d| d.0),
                    non_idempotent: r.non_idempotent,
                })
            }
        };
        if cfg.max_requests == Some(0) {
            cx.sink.at(
                loc(node, "max_requests"),
                "`max_requests` must be at least 1",
                "remove it for no limit",
            );
            continue;
        }
        if cfg.max_connections == Some(0) {
            cx.sink.at(
                loc(node, "max_connections"),
                "`max_connections` must be at least 1",
                "remove it for no limit",
            );
            continue;
        }
        if cfg.max_pending.is_some() && cfg.max_connections.is_none() {
            cx.sink.at(
                loc(node, "max_pending"),
                "`max_pending` needs `max_connections`",
                "requests wait for a connection only when `max_connections` caps them; add it or remove `max_pending`",
            );
            continue;
        }
        if cfg
            .dns_refresh
            .is_some_and(|d| d.0 < Duration::from_millis(100))
        {
            cx.sink.at(
                loc(node, "dns_refresh"),
                "`dns_refresh` must be at least 100ms",
                "names are resolved again this often; `10s` is the default",
            );
            continue;
        }
        let Some(balance) =
            compile_balance(cx, cfg.load_balancing.as_ref(), get(node, "load_balancing"))
        else {
            continue;
        };
        let d = |v: Option<crate::duration::DurationStr>, default: u64| {
            v.map_or(Duration::from_millis(default), |d| d.0)
        };
        let pool_max_idle = cfg.pool_max_idle.unwrap_or(128);
        let preconnect = cfg.preconnect.unwrap_or(0);
        if preconnect > pool_max_idle || preconnect > cfg.max_connections.unwrap_or(usize::MAX) {
            cx.sink.at(
                loc(node, "preconnect"),
                format!("`preconnect: {preconnect}` is more than the pool keeps"),
                "keep it at most `pool_max_idle` (default 128) and `max_connections`",
            );
            continue;
        }
        index.insert(name.clone(), out.len());
        out.push(Arc::new(Upstream {
            name: name.as_str().into(),
            targets,
            balance,
            connect_timeout: d(cfg.connect_timeout, 5_000),
            request_timeout: d(cfg.request_timeout, 60_000),
            idle_timeout: d(cfg.idle_timeout, 30_000),
            pool_max_idle,
            preconnect,
            max_requests: cfg.max_requests.unwrap_or(usize::MAX),
            max_connections: cfg.max_connections.unwrap_or(usize::MAX),
            max_pending: cfg.max_pending.unwrap_or(1024),
            stream_idle_timeout: Some(d(cfg.stream_idle_timeout, 300_000)).filter(|t| !t.is_zero()),
            dns_refresh: d(cfg.dns_refresh, 10_000),
            health_check,
            retry,
            eject_after_failures: cfg
                .passive_health
                .as_ref()
                .and_then(|p| p.consecutive_failures)
                .unwrap_or(5),
            ejection_time: cfg
                .passive_health
                .as_ref()
                .and_then(|p| p.ejection_time)
                .map_or(Duration::from_secs(10), |d| d.0),
            tls,
            fingerprint: fp,
        }));
    }
    (out, index)
}

fn compile_balance(
    cx: &mut Ctx<'_>,
    cfg: Option<&LoadBalancingConfig>,
    node: Option<&Node>,
) -> Option<Balance> {
    let Some(cfg) = cfg else {
        return Some(Balance::RoundRobin);
    };
    let at = node.map_or(Loc::default(), |n| loc(n, "hash_on"));
    match (cfg.algorithm, &cfg.hash_on) {
        (Algorithm::RoundRobin, None) => Some(Balance::RoundRobin),
        (Algorithm::Random, None) => Some(Balance::Random),
        (Algorithm::LeastRequest, None) => Some(Balance::LeastRequest),
        (Algorithm::Hash, None) => {
            cx.sink.at(node.map_or(Loc::default(), |n| n.loc), "`algorithm: hash` needs `hash_on`", "for example `hash_on: { header: x-user-id }`, `{ cookie: session }` or `{ client_ip: true }`");
            None
        }
        (Algorithm::Hash, Some(h)) => {
            let on = match h {
                HashOnConfig::Header(name) => match http::HeaderName::try_from(name.as_str()) {
                    Ok(n) => HashOn::Header(n),
                    Err(_) => {
                        cx.sink.at(
                            at,
                            format!("invalid header name `{name}`"),
                            "use letters, digits and `-`",
                        );
                        return None;
                    }
                },
                HashOnConfig::Cookie(c) if !c.is_empty() => HashOn::Cookie(c.clone()),
                HashOnConfig::Query(q) if !q.is_empty() => HashOn::Query(q.clone()),
                HashOnConfig::ClientIp(true) => HashOn::ClientIp,
                HashOnConfig::Path(true) => HashOn::Path,
                _ => {
                    cx.sink.at(at, "`hash_on` names nothing to hash", "write `{ header: NAME }`, `{ cookie: NAME }`, `{ query: NAME }`, `{ client_ip: true }` or `{ path: true }`");
                    return None;
                }
            };
            Some(Balance::Hash(on))
        }
        (_, Some(_)) => {
            cx.sink.at(
                at,
                "`hash_on` applies only to `algorithm: hash`",
                "remove `hash_on`, or use `algorithm: hash`",
            );
            None
        }
    }
}

fn parse_target(cx: &mut Ctx<'_>, t: &str, at: Loc) -> Option<Target> {
    match target_from_str(t) {
        Ok(target) => Some(target),
        Err((msg, hint)) => {
            cx.sink.at(at, msg, hint);
            None
        }
    }
}

/// A target from its URL (weight 1), as in the file: `http://host:port`, `https://host:port`
/// or `h2c://host:port`. The error is a message and a hint. Also used by the admin API.
pub fn parse_target_url(t: &str) -> Result<Target, String> {
    target_from_str(t).map_err(|(msg, hint)| format!("{msg}; {hint}"))
}

fn target_from_str(t: &str) -> Result<Target, (String, String)> {
    let hint = || "write `http://host:port`, `https://host:port` or `h2c://host:port`".to_owned();
    let Some((scheme, rest)) = t.split_once("://") else {
        return Err((format!("target `{t}` has no scheme"), hint()));
    };
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (Scheme::Http, 80),
        "https" => (Scheme::Https, 443),
        "h2c" => (Scheme::H2c, 80),
        other => {
            return Err((format!("unsupported target scheme `{other}`"), hint()));
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err((
            format!("target `{t}` must not have a path, query or user info"),
            "use a route `rewrite` to change paths; targets are `scheme://host:port`".to_owned(),
        ));
    }
    let with_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty())
        && !rest.ends_with(']')
    {
        rest.to_owned()
    } else {
        format!("{rest}:{default_port}")
    };
    match with_port.parse::<http::uri::Authority>() {
        Ok(a) if !a.host().is_empty() => Ok(Target {
            scheme,
            weight: 1,
            authority: a,
            display: t.into(),
        }),
        _ => Err((format!("invalid target `{t}`"), hint())),
    }
}

#[allow(clippy::too_many_arguments)]
fn compile_route(
    cx: &mut Ctx<'_>,
    index: usize,
    name: String,
    cfg: &RouteConfig,
    node: &Node,
    upstreams: &HashMap<String, usize>,
    upstream_specs: &[Arc<Upstream>],
    global_policies: &[Policy],
) -> Option<Route> {
    let errors_before = cx.sink.out.len();
    let mnode = get(node, "match").unwrap_or(node);

    let mut hosts = Vec::new();
    for (i, h) in cfg.matches.hosts.iter().enumerate() {
        let at = item_loc(mnode, "hosts", i);
        let h = h.to_ascii_lowercase();
        let (pattern, bare) = match h.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_owned()),
            None => (HostPattern::Exact(h.clone()), h.clone()),
        };
        if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
            cx.sink.at(at, format!("invalid host `{h}`"), "write a name (`api.example.com`) or a leading wildcard (`*.example.com`), without port");
        } else {
            hosts.push(pattern);
        }
    }

    let (path, template_params) = match &cfg.matches.path {
        None => (PathPattern::Any, Vec::new()),
        Some(p) => {
            let at = loc(mnode, "path");
            match compile_path(p) {
                Ok(pp) => {
                    let params = match &pp {
                        PathPattern::Template(t) => t.params.clone(),
                        _ => Vec::new(),
                    };
                    (pp, params)
                }
                Err((msg, hint)) => {
                    cx.sink.at(at, msg, hint);
                    (PathPattern::Any, Vec::new())
                }
            }
        }
    };

    let mut methods = Vec::new();
    for (i, m) in cfg.matches.methods.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(m) if !methods.contains(&m) => methods.push(m),
            Ok(_) => {}
            Err(_) => cx.sink.at(
                item_loc(mnode, "methods", i),
                format!("invalid method `{m}`"),
                "use GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or another token",
            ),
        }
    }

    let mut headers = Vec::new();
    for (i, h) in cfg.matches.headers.iter().enumerate() {
        let at = item_loc(mnode, "headers", i);
        let Some(test) = compile_value_test(cx, h, at, true) else {
            continue;
        };
        match HeaderName::try_from(h.name.as_str()) {
            Ok(name) => headers.push(HeaderCondition { name, test }),
            Err(_) => cx.sink.at(
                at,
                format!("invalid header name `{}`", h.name),
                "use letters, digits and `-`",
            ),
        }
    }
    let mut cookies = Vec::new();
    for (i, c) in cfg.matches.cookies.iter().enumerate() {
        let at = item_loc(mnode, "cookies", i);
        if c.media_type.is_some() {
            cx.sink.at(
                at,
                format!(
                    "`media_type` applies to headers, not to the cookie `{}`",
                    c.name
                ),
                "use `exact`, `regex` or `present`",
            );
            continue;
        }
        if let Some(test) = compile_value_test(cx, c, at, false) {
            cookies.push(QueryCondition {
                name: c.name.clone(),
                test,
            });
        }
    }
    let mut query = Vec::new();
    for (i, q) in cfg.matches.query.iter().enumerate() {
        let at = item_loc(mnode, "query", i);
        if let Some(test) = compile_value_test(cx, q, at, false) {
            query.push(QueryCondition {
                name: q.name.clone(),
                test,
            });
        }
    }

    let actions = [
        cfg.upstream.is_some(),
        !cfg.split.is_empty(),
        cfg.respond.is_some(),
        cfg.redirect.is_some(),
        cfg.aggregate.is_some(),
    ];
    let action = match actions.iter().filter(|a| **a).count() {
        0 => {
            cx.sink.at(
                node.loc,
                format!("route `{name}` has no action"),
                "add `upstream: NAME`, `split:`, `respond:`, `redirect:` or `aggregate:`",
            );
            None
        }
        1 if cfg.aggregate.is_some() => compile_aggregate(
            cx,
            cfg.aggregate.as_ref().expect("checked"),
            get(node, "aggregate").unwrap_or(node),
            &template_params,
            upstreams,
        )
        .map(|a| Action::Aggregate(Box::new(a))),
        1 => compile_action(cx, cfg, node, &path, &template_params, upstreams),
        _ => {
            cx.sink.at(
                node.loc,
                format!(
                    "route `{name}` has more than one of `upstream`, `split`, `respond`, `redirect`, `aggregate`"
                ),
                "keep exactly one",
            );
            None
        }
    };
    if cfg.rewrite.is_some() && cfg.upstream.is_none() && cfg.split.is_empty() {
        cx.sink.at(
            loc(node, "rewrite"),
            "`rewrite` applies only to routes with an `upstream`",
            "remove `rewrite`, or route to an upstream",
        );
    }

    let mut policies = Vec::new();
    let policy_nodes: Vec<&Node> = (0..cfg.policies.len())
        .map(|i| match get(node, "policies").map(|n| &n.kind) {
            Some(NodeKind::Seq(items)) => &items[i],
            _ => node,
        })
        .collect();
    let global_auth = cx.global_auth;
    check_chain(cx, &cfg.policies, &policy_nodes, global_auth);
    let mut nth = 0;
    for (p, pnode) in cfg.policies.iter().zip(&policy_nodes) {
        let pnode: &Node = pnode;
        if let Some(mut p) = compile_policy(cx, p, pnode) {
            scope_rate_limit(&mut p, Some(&name), &mut nth);
            policies.push(p);
        }
    }

    if cfg.grpc_web {
        if cfg.grpc_transcode.is_some() {
            cx.sink.at(
                loc(node, "grpc_web"),
                "`grpc_web` and `grpc_transcode` cannot be combined on one route",
                "give gRPC-Web clients their own route (match on their path prefix)",
            );
        } else if cfg.upstream.is_none() && cfg.split.is_empty() {
            cx.sink.at(
                loc(node, "grpc_web"),
                "`grpc_web` needs the route to have an `upstream` (or `split`)",
                "route to the gRPC service's upstream",
            );
        } else if let Some(name) = cfg
            .upstream
            .iter()
            .chain(cfg.split.iter().map(|s| &s.upstream))
            .find(|n| {
                upstreams
                    .get(*n)
                    .and_then(|i| upstream_specs.get(*i))
                    .is_some_and(|u| u.targets.iter().any(|t| t.scheme == Scheme::Http))
            })
        {
            cx.sink.at(
                loc(node, "grpc_web"),
                format!("upstream `{name}` has `http://` targets; gRPC needs HTTP/2"),
                "write its targets as `h2c://host:port` (or `https://` for TLS)",
            );
        }
    }
    let transcode = match &cfg.grpc_transcode {
        None => None,
        Some(g) => compile_transcode(
            cx,
            g,
            get(node, "grpc_transcode").unwrap_or(node),
            cfg,
            upstreams,
            upstream_specs,
        ),
    };

    let soap = match &cfg.soap {
        None => None,
        Some(s) => compile_soap(cx, s, get(node, "soap").unwrap_or(node), cfg, &path),
    };

    let mirror = match &cfg.mirror {
        None => None,
        Some(m) => {
            let mnode = get(node, "mirror").unwrap_or(node);
            let percent = m.percent.unwrap_or(100);
            if !(1..=100).contains(&percent) {
                cx.sink.at(
                    loc(mnode, "percent"),
                    format!("`percent` is {percent}; it must be from 1 to 100"),
                    "remove `mirror` to copy nothing",
                );
            }
            match upstreams.get(&m.upstream) {
                Some(&u) => Some((u, percent)),
                None => {
                    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                    cx.sink.at(
                        loc(mnode, "upstream"),
                        format!("unknown upstream `{}`", m.upstream),
                        suggest(&m.upstream, &known),
                    );
                    None
                }
            }
        }
    };
    if cfg.mirror.is_some() && cfg.upstream.is_none() && cfg.split.is_empty() {
        cx.sink.at(
            loc(node, "mirror"),
            "`mirror` applies only to routes that proxy (`upstream` or `split`)",
            "remove `mirror`, or route to an upstream",
        );
    }
    let response_headers = match &cfg.deprecation {
        Some(d) => compile_deprecation(cx, d, get(node, "deprecation").unwrap_or(node)),
        None => Vec::new(),
    };

    if cx.sink.out.len() != errors_before {
        return None;
    }
    Some(Route {
        index,
        name: name.into(),
        hosts,
        path,
        path_any_case: cfg.matches.case_sensitive == Some(false),
        methods,
        headers,
        query,
        cookies,
        action: action?,
        timeout: cfg.timeout.map(|d| d.0),
        response_headers,
        mirror,
        transcode,
        grpc_web: cfg.grpc_web,
        soap,
        effective: Effective::resolve(&policies, global_policies),
        policies: policies.into(),
    })
}

fn compile_soap(
    cx: &mut Ctx<'_>,
    s: &SoapConfig,
    snode: &Node,
    cfg: &RouteConfig,
    path: &PathPattern,
) -> Option<Arc<SoapRoute>> {
    if cfg.upstream.is_none() && cfg.split.is_empty() {
        cx.sink.at(
            snode.loc,
            "`soap` needs the route to have an `upstream` (or `split`)",
            "route to the SOAP service's upstream",
        );
        return None;
    }
    if cfg.grpc_transcode.is_some() || cfg.grpc_web || cfg.rewrite.is_some() {
        cx.sink.at(
            snode.loc,
            "`soap` cannot be combined with `grpc_transcode`, `grpc_web` or `rewrite`",
            "the SOAP endpoint's path comes from the WSDL (or `soap.path`); give other uses their own route",
        );
        return None;
    }
    let prefix = match path {
        PathPattern::Prefix(p) => p.trim_end_matches('/').to_owned(),
        PathPattern::Any => String::new(),
        _ => {
            cx.sink.at(
                snode.loc,
                "`soap` needs a `prefix:` path match",
                "match e.g. `path: { prefix: /calculator }`; operations are then `POST /calculator/OPERATION`",
            );
            return None;
        }
    };
    let at = loc(snode, "wsdl");
    let file = if s.wsdl.starts_with("http://") || s.wsdl.starts_with("https://") {
        s.wsdl.clone()
    } else {
        resolve(cx, &s.wsdl).to_string_lossy().into_owned()
    };
    let mut fetch = |loc: &str| {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            return crate::fetch_url(loc).map_err(|e| format!("cannot fetch it: {e}"));
        }
        // A size cap, as for fetched documents: `/dev/zero` is a file too.
        use std::io::Read;
        let mut buf = Vec::new();
        std::fs::File::open(loc)
            .and_then(|f| f.take(16 << 20).read_to_end(&mut buf))
            .map_err(|e| format!("cannot read it: {e}"))?;
        Ok(buf)
    };
    let wsdl = match portico_translate::wsdl::load(&file, &mut fetch, Default::default()) {
        Ok(w) => w,
        Err(e) => {
            cx.sink.at(
                at,
                e.to_string(),
                "check the file with `portico soap inspect FILE`",
            );
            return None;
        }
    };
    let port = match wsdl.port(s.service.as_deref(), s.port.as_deref()) {
        Ok(p) => p.clone(),
        Err(m) => {
            cx.sink
                .at(snode.loc, m, "name the `service` and `port` to use");
            return None;
        }
    };
    let path_text = match &s.path {
        Some(p) => p.clone(),
        None => {
            // The path of the address, e.g. `/soap11` in `http://host:8080/soap11`.
            let after = port.address.split_once("://").map_or("", |(_, r)| r);
            match after.find('/') {
                Some(i) => after[i..].to_owned(),
                None => "/".to_owned(),
            }
        }
    };
    let Ok(upstream_path) = http::uri::PathAndQuery::try_from(path_text.as_str()) else {
        cx.sink.at(
            loc(snode, "path"),
            format!("`{path_text}` is not a valid path"),
            "write a path such as `/services/calculator`",
        );
        return None;
    };
    if !path_text.starts_with('/') {
        cx.sink.at(
            loc(snode, "path"),
            format!("`{path_text}` must start with `/`"),
            format!("write `/{path_text}`"),
        );
        return None;
    }
    let max_bytes = s.max_bytes.unwrap_or(4 << 20);
    if max_bytes == 0 {
        cx.sink.at(
            loc(snode, "max_bytes"),
            "`max_bytes` must be at least 1",
            "leave it out for the default (4194304)",
        );
        return None;
    }
    let mut bindings: Vec<SoapBinding> = Vec::new();
    let onode = get(snode, "operations").unwrap_or(snode);
    for (name, oc) in &s.operations {
        let at = get(onode, name).map_or(onode.loc, |n| n.loc);
        let Some(operation) = port.operations.iter().position(|o| &o.name == name) else {
            cx.sink.at(
                at,
                format!("`{name}` is not an operation of port `{}`", port.name),
                format!(
                    "the operations are {}",
                    port.operations
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return None;
        };
        let method = match http::Method::from_bytes(
            oc.method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        ) {
            Ok(m) => m,
            Err(_) => {
                cx.sink
                    .at(at, "invalid method", "use GET, POST, PUT, PATCH or DELETE");
                return None;
            }
        };
        if !oc.path.starts_with('/') {
            cx.sink.at(
                at,
                format!("`{}` must start with `/`", oc.path),
                format!("write `/{}` (it follows the route's prefix)", oc.path),
            );
            return None;
        }
        let mut segments = Vec::new();
        for seg in oc.path.trim_matches('/').split('/') {
            match seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
                    segments.push(SoapSegment::Param(p.to_owned()))
                }
                None if !seg.contains(['{', '}']) => {
                    segments.push(SoapSegment::Literal(seg.to_owned()))
                }
                _ => {
                    cx.sink.at(
                        at,
                        format!("`{seg}` in `{}` is not a segment", oc.path),
                        "write literal segments and whole-segment parameters such as `/people/{id}`",
                    );
                    return None;
                }
            }
        }
        if bindings
            .iter()
            .any(|b| b.method == method && b.segments == segments)
        {
            cx.sink.at(
                at,
                format!("{method} {} is bound to two operations", oc.path),
                "give each operation its own method or path",
            );
            return None;
        }
        bindings.push(SoapBinding {
            operation,
            method,
            segments,
            path: oc.path.clone(),
        });
    }
    Some(Arc::new(SoapRoute {
        bindings,
        wsdl: Arc::new(wsdl),
        port,
        prefix,
        path: upstream_path,
        token: s
            .ws_security
            .as_ref()
            .map(|w| portico_translate::soap::UsernameToken {
                username: w.username.clone(),
                password: w.password.clone(),
            }),
        max_bytes,
    }))
}

fn compile_transcode(
    cx: &mut Ctx<'_>,
    g: &crate::file::GrpcTranscodeConfig,
    gnode: &Node,
    route: &RouteConfig,
    upstreams: &HashMap<String, usize>,
    upstream_specs: &[Arc<Upstream>],
) -> Option<Arc<GrpcTranscode>> {
    if route.upstream.is_none() && route.split.is_empty() {
        cx.sink.at(
            gnode.loc,
            "`grpc_transcode` needs the route to have an `upstream` (or `split`)",
            "route to the gRPC service's upstream",
        );
        return None;
    }
    if route
        .rewrite
        .as_ref()
        .is_some_and(|r| r.path.is_some() || r.strip_prefix)
    {
        cx.sink.at(
            gnode.loc,
            "`grpc_transcode` cannot be combined with a path `rewrite`",
            "the gRPC call's path is the method's (`/package.Service/Method`); remove the path rewrite",
        );
        return None;
    }
    let names = route
        .upstream
        .iter()
        .chain(route.split.iter().map(|s| &s.upstream));
    for name in names {
        let Some(up) = upstreams.get(name).and_then(|i| upstream_specs.get(*i)) else {
            continue;
        };
        if up.targets.iter().any(|t| t.scheme == Scheme::Http) {
            cx.sink.at(
                gnode.loc,
                format!("upstream `{name}` has `http://` targets; gRPC needs HTTP/2"),
                "write its targets as `h2c://host:port` (or `https://` for TLS)",
            );
            return None;
        }
    }
    let options = portico_translate::Options {
        services: g.services.clone(),
        call_by_name: g.call_by_name.unwrap_or(true),
        emit_defaults: g.emit_defaults,
        ignore_unknown_query: g.ignore_unknown_query,
    };
    let transcoder = match (&g.descriptor_set, g.reflection) {
        (Some(file), false) => {
            let at = loc(gnode, "descriptor_set");
            let bytes = read_file(cx, file, at)?;
            match portico_translate::Transcoder::new(&bytes, options.clone()) {
                Ok(t) => Some(Arc::new(t)),
                Err(errors) => {
                    for e in errors {
                        cx.sink.at(
                            at,
                            format!("`{file}`: {e}"),
                            "fix the `google.api.http` annotation in the .proto file and compile the descriptor set again",
                        );
                    }
                    return None;
                }
            }
        }
        (None, true) => None,
        (Some(_), true) | (None, false) => {
            cx.sink.at(
                gnode.loc,
                "`grpc_transcode` needs exactly one of `descriptor_set` and `reflection: true`",
                "give a descriptor set file, or let Portico ask the service (gRPC server reflection)",
            );
            return None;
        }
    };
    let mut forward_headers = Vec::new();
    for (i, h) in g.forward_headers.iter().enumerate() {
        match HeaderName::try_from(h.as_str()) {
            Ok(n) => forward_headers.push(n),
            Err(_) => cx.sink.at(
                item_loc(gnode, "forward_headers", i),
                format!("invalid header name `{h}`"),
                "header names are tokens such as `x-user-id`",
            ),
        }
    }
    Some(Arc::new(GrpcTranscode {
        transcoder,
        options,
        forward_headers,
        sse_by_default: g.stream_format == Some(crate::file::StreamFormat::Sse),
    }))
}

fn compile_deprecation(
    cx: &mut Ctx<'_>,
    d: &DeprecationConfig,
    node: &Node,
) -> Vec<(HeaderName, HeaderValue)> {
    let hint = "write a date (`2026-06-30`) or a UTC time (`2026-06-30T12:00:00Z`)";
    let mut out = Vec::new();
    match crate::dates::parse(&d.since) {
        // RFC 9745: a structured-field date, seconds since the epoch.
        Some(t) => out.push((
            HeaderName::from_static("deprecation"),
            HeaderValue::from_str(&format!("@{t}")).expect("ascii"),
        )),
        None => cx.sink.at(
            loc(node, "since"),
            format!("invalid date `{}`", d.since),
            hint,
        ),
    }
    if let Some(s) = &d.sunset {
        match crate::dates::parse(s) {
            // RFC 8594: an HTTP-date.
            Some(t) => out.push((
                HeaderName::from_static("sunset"),
                HeaderValue::from_str(&crate::dates::http_date(t)).expect("ascii"),
            )),
            None => cx
                .sink
                .at(loc(node, "sunset"), format!("invalid date `{s}`"), hint),
        }
    }
    if let Some(link) = &d.link {
        match HeaderValue::try_from(format!("<{link}>; rel=\"deprecation\"; type=\"text/html\"")) {
            Ok(v) if !link.contains(['<', '>', ' ']) => out.push((http::header::LINK, v)),
            _ => cx.sink.at(
                loc(node, "link"),
                format!("invalid link `{link}`"),
                "write an absolute URL",
            ),
        }
    }
    out
}

fn compile_value_test(
    cx: &mut Ctx<'_>,
    v: &ValueMatchConfig,
    at: Loc,
    header: bool,
) -> Option<ValueTest> {
    let set = [
        v.exact.is_some(),
        v.regex.is_some(),
        v.present.is_some(),
        v.media_type.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        cx.sink.at(
            at,
            format!(
                "condition on `{}` needs exactly one of `exact`, `regex`, `present`, `media_type`",
                v.name
            ),
            "for example `{ name: x-version, exact: \"2\" }`",
        );
        return None;
    }
    if let Some(m) = &v.media_type {
        if !header {
            cx.sink.at(
                at,
                format!(
                    "`media_type` applies to headers, not to the query parameter `{}`",
                    v.name
                ),
                "move the condition to `headers`, or use `exact` or `regex`",
            );
            return None;
        }
        return match MediaType::parse(m) {
            Some(mt) if !mt.params.iter().any(|(k, _)| k == "q") => Some(ValueTest::MediaType(mt)),
            Some(_) => {
                cx.sink.at(
                    at,
                    format!("media type `{m}` names a `q` weight"),
                    "leave `q` out: any listed type not refused with `q=0` matches",
                );
                None
            }
            None => {
                cx.sink.at(
                    at,
                    format!("invalid media type `{m}`"),
                    "write `type/subtype` with optional `; name=value` parameters, e.g. `application/vnd.acme.v2+json` or `application/json; version=2`",
                );
                None
            }
        };
    }
    if let Some(e) = &v.exact {
        return Some(ValueTest::Exact(e.clone()));
    }
    if let Some(p) = v.present {
        return Some(ValueTest::Present(p));
    }
    let r = v.regex.as_deref().unwrap_or_default();
    match regex::RegexBuilder::new(r).size_limit(1 << 20).build() {
        Ok(re) => Some(ValueTest::Regex(re)),
        Err(e) => {
            let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
            cx.sink.at(
                at,
                format!("invalid regex `{r}`: {first}"),
                "the syntax is that of the Rust regex crate (RE2-like; no look-around)",
            );
            None
        }
    }
}

pub(crate) fn compile_path(p: &PathMatchConfig) -> Result<PathPattern, (String, String)> {
    let check = |s: &str| -> Result<(), (String, String)> {
        if !s.starts_with('/') {
            return Err((
                format!("path `{s}` must start with `/`"),
                format!("write `/{s}`"),
            ));
        }
        if s.contains(['?', '#'])
            || s.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err((
                format!("path `{s}` contains a character not allowed in a path"),
                "match query parameters with `query:`; percent-encode spaces".into(),
            ));
        }
        // Requests are matched in their canonical form (`canon`), so a pattern written any
        // other way would never match: say which form to write.
        let lenient = PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            merge_slashes: false,
            path_parameters: PathParameters::Keep,
        };
        match crate::canon::canonicalize(s, &lenient) {
            Ok(c) if c == s => {}
            Ok(c) => {
                return Err((
                    format!("path `{s}` is not in canonical form; requests are matched as `{c}`"),
                    format!("write `{c}`"),
                ));
            }
            Err(e) => {
                return Err((
                    format!("path `{s}` cannot match a request: {}", e.detail()),
                    "write the path as clients send it, percent-encoding only what is not a letter, digit or `-._~`".into(),
                ));
            }
        }
        Ok(())
    };
    match p {
        PathMatchConfig::Exact(s) => {
            check(s)?;
            if s.contains(['{', '}']) {
                return Err((
                    format!("exact path `{s}` contains `{{`"),
                    "use `template:` for paths with parameters".into(),
                ));
            }
            Ok(PathPattern::Exact(s.clone()))
        }
        PathMatchConfig::Prefix(s) => {
            check(s)?;
            if s.contains(['{', '}']) {
                return Err((
                    format!("prefix `{s}` contains `{{`"),
                    "use `template:` for paths with parameters".into(),
                ));
            }
            let trimmed = s.trim_end_matches('/');
            Ok(PathPattern::Prefix(if trimmed.is_empty() {
                "/".into()
            } else {
                trimmed.into()
            }))
        }
        PathMatchConfig::Template(s) => {
            check(s)?;
            let mut segments = Vec::new();
            let mut params: Vec<String> = Vec::new();
            let parts: Vec<&str> = s[1..].split('/').collect();
            for (i, part) in parts.iter().enumerate() {
                if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    let (catch_all, name) = match inner.strip_prefix('*') {
                        Some(n) => (true, n),
                        None => (false, inner),
                    };
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err((
                            format!("invalid parameter `{{{inner}}}` in `{s}`"),
                            "name parameters with letters, digits and `_`, as in `{id}`".into(),
                        ));
                    }
                    if params.iter().any(|p| p == name) {
                        return Err((
                            format!("parameter `{name}` appears twice in `{s}`"),
                            "give each parameter its own name".into(),
                        ));
                    }
                    if catch_all && i + 1 != parts.len() {
                        return Err((
                            format!("`{{*{name}}}` must be the last segment of `{s}`"),
                            "a wildcard takes the rest of the path, so nothing can follow it"
                                .into(),
                        ));
                    }
                    params.push(name.to_owned());
                    segments.push(if catch_all {
                        Segment::CatchAll
                    } else {
                        Segment::Param
                    });
                } else if part.contains(['{', '}']) {
                    return Err((
                        format!("`{part}` in `{s}` mixes text and a parameter"),
                        "a parameter must be a whole segment, as in `/files/{name}`".into(),
                    ));
                } else {
                    segments.push(Segment::Literal((*part).to_owned()));
                }
            }
            if params.is_empty() {
                return Err((
                    format!("template `{s}` has no parameters"),
                    "use `exact:` for a fixed path".into(),
                ));
            }
            Ok(PathPattern::Template(Template {
                source: s.clone(),
                segments,
                params,
            }))
        }
    }
}

/// Compiles `/v2/users/{id}` against a route's parameter names.
fn compile_placeholders(text: &str, params: &[String]) -> Result<PathRewrite, (String, String)> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(RewritePart::Literal(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err((
                format!("unclosed `{{` in `{text}`"),
                "close the placeholder, as in `{id}`".into(),
            ));
        };
        let name = &rest[open + 1..open + close];
        let name = name.strip_prefix('*').unwrap_or(name);
        match params.iter().position(|p| p == name) {
            Some(i) => parts.push(RewritePart::Param(i)),
            None => {
                let known: Vec<&str> = params.iter().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "the route's path has no parameters; use a `template:` path to capture some"
                        .to_owned()
                } else {
                    suggest(name, &known)
                };
                return Err((
                    format!("`{{{name}}}` is not a parameter of this route's path"),
                    hint,
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(RewritePart::Literal(rest.to_owned()));
    }
    Ok(PathRewrite { parts })
}

fn compile_action(
    cx: &mut Ctx<'_>,
    cfg: &RouteConfig,
    node: &Node,
    path: &PathPattern,
    params: &[String],
    upstreams: &HashMap<String, usize>,
) -> Option<Action> {
    if cfg.upstream.is_some() || !cfg.split.is_empty() {
        // usize::MAX: the upstream is declared but invalid; its error is already reported and
        // the config will not be used, but the rest of the route is still checked.
        let resolve = |cx: &mut Ctx<'_>, up: &str, at: Loc| -> Option<usize> {
            let found = upstreams.get(up).copied();
            if found.is_none() {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "define it under `upstreams:`".to_owned()
                } else {
                    suggest(up, &known)
                };
                cx.sink.at(at, format!("unknown upstream `{up}`"), hint);
            }
            found
        };
        let targets: Vec<(usize, u32)> = match &cfg.upstream {
            Some(up) => vec![(resolve(cx, up, loc(node, "upstream"))?, 1)],
            None => {
                let mut list = Vec::new();
                for (i, part) in cfg.split.iter().enumerate() {
                    let at = get(&split_item(node, i), "upstream")
                        .map_or(item_loc(node, "split", i), |n| n.loc);
                    if list
                        .iter()
                        .any(|(_, _, name): &(usize, u32, &str)| *name == part.upstream)
                    {
                        cx.sink.at(
                            at,
                            format!("upstream `{}` appears twice in `split`", part.upstream),
                            "give each upstream one entry with the total weight",
                        );
                        return None;
                    }
                    list.push((
                        resolve(cx, &part.upstream, at)?,
                        part.weight,
                        part.upstream.as_str(),
                    ));
                }
                if list.iter().all(|(_, w, _)| *w == 0) {
                    cx.sink.at(
                        loc(node, "split"),
                        "the weights in `split` are all 0",
                        "give at least one upstream a weight above 0",
                    );
                    return None;
                }
                list.into_iter().map(|(u, w, _)| (u, w)).collect()
            }
        };
        let total_weight = targets.iter().map(|(_, w)| *w).sum();
        let rw = cfg.rewrite.as_ref();
        let rnode = get(node, "rewrite").unwrap_or(node);
        let strip_prefix = match (rw.is_some_and(|r| r.strip_prefix), path) {
            (false, _) => None,
            (true, PathPattern::Prefix(p)) => Some(if p == "/" { 0 } else { p.len() }),
            (true, _) => {
                cx.sink.at(
                    loc(rnode, "strip_prefix"),
                    "`strip_prefix` needs a `prefix:` path match",
                    "use `rewrite.path` with a template to reshape other paths",
                );
                return None;
            }
        };
        if strip_prefix.is_some() && rw.is_some_and(|r| r.path.is_some()) {
            cx.sink.at(
                loc(rnode, "path"),
                "`strip_prefix` and `path` cannot both be set",
                "keep one of them",
            );
            return None;
        }
        let path_rw = match rw.and_then(|r| r.path.as_deref()) {
            Some(p) if !p.starts_with('/') => {
                cx.sink.at(
                    loc(rnode, "path"),
                    format!("rewrite path `{p}` must start with `/`"),
                    format!("write `/{p}`"),
                );
                return None;
            }
            Some(p) => match compile_placeholders(p, params) {
                Ok(r) => Some(r),
                Err((m, h)) => {
                    cx.sink.at(loc(rnode, "path"), m, h);
                    return None;
                }
            },
            None => None,
        };
        let host = match rw.and_then(|r| r.host.as_deref()) {
            Some(h) => match HeaderValue::try_from(h) {
                Ok(v) if !h.is_empty() => Some(v),
                _ => {
                    cx.sink.at(
                        loc(rnode, "host"),
                        format!("invalid host `{h}`"),
                        "use a host name, optionally with `:port`",
                    );
                    return None;
                }
            },
            None => None,
        };
        // Names and values percent-encoded once, here.
        use portico_auth::basic::form_encode;
        let q = rw.and_then(|r| r.query.as_ref());
        let query_set: Vec<(String, String)> = q
            .iter()
            .flat_map(|q| &q.set)
            .map(|(k, v)| (form_encode(k), form_encode(v)))
            .collect();
        let query_remove: Vec<String> = q
            .iter()
            .flat_map(|q| q.remove.iter().chain(q.set.keys()))
            .map(|k| form_encode(k))
            .collect();
        if query_remove.iter().any(String::is_empty) {
            cx.sink.at(
                loc(rnode, "query"),
                "a query parameter name is empty",
                "name each parameter, e.g. `remove: [debug]`",
            );
            return None;
        }
        return Some(Action::Proxy(ProxyAction {
            upstreams: targets.into(),
            total_weight,
            strip_prefix,
            path: path_rw,
            host,
            query_remove,
            query_set,
        }));
    }
    if let Some(r) = &cfg.respond {
        let rnode = get(node, "respond").unwrap_or(node);
        let status = match StatusCode::from_u16(r.status.unwrap_or(200)) {
            Ok(s) if s.as_u16() >= 200 => s,
            _ => {
                cx.sink.at(
                    loc(rnode, "status"),
                    format!("invalid status {}", r.status.unwrap_or(0)),
                    "use a code from 200 to 599",
                );
                return None;
            }
        };
        let mut headers = Vec::new();
        let ct = r
            .content_type
            .as_deref()
            .unwrap_or("text/plain; charset=utf-8");
        match HeaderValue::try_from(ct) {
            Ok(v) => headers.push((http::header::CONTENT_TYPE, v)),
            Err(_) => cx.sink.at(
                loc(rnode, "content_type"),
                "invalid content type",
                "use a media type such as `application/json`",
            ),
        }
        let mut templated = Vec::new();
        headers.extend(header_pairs(
            cx,
            &r.headers,
            get(rnode, "headers").unwrap_or(rnode),
            &mut templated,
            false,
        ));
        if !templated.is_empty() {
            cx.sink.at(
                loc(rnode, "headers"),
                "`%{…}` variables are not available in `respond` headers",
                "use them in a `headers` policy, which runs for every request",
            );
        }
        return Some(Action::Respond(StaticResponse {
            status,
            body: bytes::Bytes::from(r.body.clone().unwrap_or_default()),
            headers,
        }));
    }
    let r = cfg.redirect.as_ref()?;
    let rnode = get(node, "redirect").unwrap_or(node);
    let status = r.status.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        cx.sink.at(
            loc(rnode, "status"),
            format!("{status} is not a redirect status"),
            "use 301, 302, 303, 307 or 308",
        );
        return None;
    }
    match compile_placeholders(&r.to, params) {
        Ok(to) => Some(Action::Redirect(RedirectAction {
            status: StatusCode::from_u16(status).ok()?,
            to,
        })),
        Err((m, h)) => {
            cx.sink.at(loc(rnode, "to"), m, h);
            None
        }
    }
}

/// `%{client_ip}`, `%{request_id}`, `%{route}`, `%{consumer}`, `%{claim.NAME}` in a header
/// value; `None` when the value has none.
fn value_template(v: &str) -> Result<Option<Vec<ValuePart>>, String> {
    if !v.contains("%{") {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut rest = v;
    while let Some(open) = rest.find("%{") {
        if open > 0 {
            parts.push(ValuePart::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed `%{{` in `{v}`"))?;
        parts.push(match &rest[open + 2..open + close] {
            "client_ip" => ValuePart::ClientIp,
            "request_id" => ValuePart::RequestId,
            "route" => ValuePart::Route,
            "consumer" => ValuePart::Consumer,
            other => match other.strip_prefix("claim.") {
                Some(c) if !c.is_empty() => ValuePart::Claim(c.to_owned()),
                _ => return Err(format!("unknown variable `%{{{other}}}`")),
            },
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(ValuePart::Literal(rest.to_owned()));
    }
    Ok(Some(parts))
}

fn header_pairs(
    cx: &mut Ctx<'_>,
    map: &BTreeMap<String, String>,
    node: &Node,
    templated: &mut Vec<(HeaderName, Vec<ValuePart>, bool)>,
    append: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in map {
        let at = get(node, k).map_or(node.loc, |n| n.loc);
        match value_template(v) {
            Ok(None) => {}
            Ok(Some(parts)) => {
                match HeaderName::try_from(k.as_str()) {
                    Ok(n) => templated.push((n, parts, append)),
                    Err(_) => cx.sink.at(
                        at,
                        format!("invalid header name `{k}`"),
                        "use letters, digits and `-`",
                    ),
                }
                continue;
            }
            Err(e) => {
                cx.sink.at(
                    at,
                    e,
                    "variables are %{client_ip}, %{request_id}, %{route}, %{consumer} and %{claim.NAME}",
                );
                continue;
            }
        }
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            (Err(_), _) => cx.sink.at(
                at,
                format!("invalid header name `{k}`"),
                "use letters, digits and `-`",
            ),
            (_, Err(_)) => cx.sink.at(
                at,
                format!("invalid value for header `{k}`"),
                "header values cannot hold control characters or line breaks",
            ),
        }
    }
    out
}

fn compile_header_ops(cx: &mut Ctx<'_>, ops: &HeaderOpsConfig, node: &Node) -> HeaderOps {
    let mut remove = Vec::new();
    for (i, r) in ops.remove.iter().enumerate() {
        match HeaderName::try_from(r.as_str()) {
            Ok(n) => remove.push(n),
            Err(_) => cx.sink.at(
                item_loc(node, "remove", i),
                format!("invalid header name `{r}`"),
                "use letters, digits and `-`",
            ),
        }
    }
    let mut templated = Vec::new();
    HeaderOps {
        set: header_pairs(
            cx,
            &ops.set,
            get(node, "set").unwrap_or(node),
            &mut templated,
            false,
        ),
        add: header_pairs(
            cx,
            &ops.add,
            get(node, "add").unwrap_or(node),
            &mut templated,
            true,
        ),
        remove,
        templated,
    }
}

fn limit_key(cx: &mut Ctx<'_>, k: LimitKeyConfig, node: &Node) -> Option<LimitKey> {
    Some(match k {
        LimitKeyConfig::ClientIp => LimitKey::ClientIp,
        LimitKeyConfig::Route => LimitKey::Route,
        LimitKeyConfig::Consumer => LimitKey::Consumer,
        LimitKeyConfig::Header(h) => match HeaderName::try_from(h.as_str()) {
            Ok(n) => LimitKey::Header(n),
            Err(_) => {
                cx.sink.at(
                    loc(node, "key"),
                    format!("invalid header name `{h}`"),
                    "use letters, digits and `-`",
                );
                return None;
            }
        },
        LimitKeyConfig::Claim(c) if c.is_empty() => {
            cx.sink.at(
                loc(node, "key"),
                "the claim name is empty",
                "name a claim, such as `sub`",
            );
            return None;
        }
        LimitKeyConfig::Claim(c) => LimitKey::Claim(c),
        LimitKeyConfig::Composite(parts) => {
            if parts.len() < 2 {
                cx.sink.at(
                    loc(node, "key"),
                    "a composite key needs at least two parts",
                    "for one part, write it directly, e.g. `key: consumer`",
                );
                return None;
            }
            let mut out = Vec::new();
            for p in parts {
                out.push(limit_key(cx, p, node)?);
            }
            LimitKey::Composite(out)
        }
    })
}

pub(crate) fn compile_policy(cx: &mut Ctx<'_>, p: &PolicyConfig, node: &Node) -> Option<Policy> {
    let before = cx.sink.out.len();
    let policy = match p {
        PolicyConfig::ApiKey(_)
        | PolicyConfig::BasicAuth(_)
        | PolicyConfig::Jwt(_)
        | PolicyConfig::ClientCert(_)
        | PolicyConfig::Introspection(_)
        | PolicyConfig::AnyOf(_)
        | PolicyConfig::Acl(_)
        | PolicyConfig::IpFilter(_)
        | PolicyConfig::Cors(_)
        | PolicyConfig::BodyLimit(_) => crate::auth::compile_policy(cx, p, node)?,
        PolicyConfig::Cache(c) => {
            let max_entries = c.max_entries.unwrap_or(10_000);
            if max_entries == 0 {
                cx.sink.at(
                    loc(node, "max_entries"),
                    "`max_entries` must be at least 1",
                    "remove the policy to cache nothing",
                );
                return None;
            }
            let max_object_bytes = c.max_object_bytes.unwrap_or(1 << 20);
            let key_node = get(node, "key").unwrap_or(node);
            let key_query = match c.key.as_ref().and_then(|k| k.query.as_ref()) {
                None => CacheKeyQuery::All,
                Some(CacheKeyQueryConfig::Word(w)) if w == "all" => CacheKeyQuery::All,
                Some(CacheKeyQueryConfig::Word(w)) if w == "none" => CacheKeyQuery::None,
                Some(CacheKeyQueryConfig::Word(w)) => {
                    cx.sink.at(
                        loc(key_node, "query"),
                        format!("`{w}` is not a query key setting"),
                        "use `all`, `none` or a list of parameter names such as `[page, size]`",
                    );
                    return None;
                }
                Some(CacheKeyQueryConfig::Names(n)) => {
                    let mut n = n.clone();
                    n.sort();
                    n.dedup();
                    CacheKeyQuery::Only(n)
                }
            };
            let mut key_headers = Vec::new();
            for h in c.key.iter().flat_map(|k| &k.headers) {
                match HeaderName::try_from(h.as_str()) {
                    Ok(n) => key_headers.push(n),
                    Err(_) => {
                        cx.sink.at(
                            loc(key_node, "headers"),
                            format!("invalid header name `{h}`"),
                            "use letters, digits and `-`",
                        );
                        return None;
                    }
                }
            }
            Policy::Cache(CachePolicy {
                max_entries,
                max_object_bytes,
                key_query,
                key_headers,
                fingerprint: fnv(
                    format!("cache{max_entries}/{max_object_bytes}").as_bytes(),
                    FNV_START,
                ),
            })
        }
        PolicyConfig::XmlJson(x) => {
            let dir = |d: Option<XmlDirectionConfig>, default: XmlDirection| match d {
                None => default,
                Some(XmlDirectionConfig::JsonToXml) => XmlDirection::JsonToXml,
                Some(XmlDirectionConfig::XmlToJson) => XmlDirection::XmlToJson,
                Some(XmlDirectionConfig::None) => XmlDirection::None,
            };
            let root = x.root.clone().unwrap_or_else(|| "root".into());
            if !portico_translate::xml::is_xml_name(&root) || root.contains(':') {
                cx.sink.at(
                    loc(node, "root"),
                    format!("`{root}` is not an XML element name"),
                    "use letters, digits, `_`, `-` and `.`, starting with a letter",
                );
                return None;
            }
            for prefix in x.namespaces.keys() {
                if !prefix.is_empty()
                    && (!portico_translate::xml::is_xml_name(prefix) || prefix.contains(':'))
                {
                    cx.sink.at(
                        loc(node, "namespaces"),
                        format!("`{prefix}` is not a namespace prefix"),
                        "use letters, digits, `_`, `-` and `.`, or `\"\"` for the default namespace",
                    );
                    return None;
                }
            }
            let max_bytes = x.max_bytes.unwrap_or(1 << 20);
            let max_depth = x.max_depth.unwrap_or(64);
            let max_attributes = x.max_attributes.unwrap_or(256);
            for (key, value) in [
                ("max_bytes", max_bytes),
                ("max_depth", u64::from(max_depth)),
                ("max_attributes", u64::from(max_attributes)),
            ] {
                if value == 0 {
                    cx.sink.at(
                        loc(node, key),
                        "the limit must be at least 1",
                        "leave it out for the default (1048576 bytes, 64 levels, 256 attributes)",
                    );
                    return None;
                }
            }
            Policy::XmlJson(Arc::new(XmlJsonPolicy {
                request: dir(x.request, XmlDirection::JsonToXml),
                response: dir(x.response, XmlDirection::XmlToJson),
                root,
                namespaces: x
                    .namespaces
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                max_bytes,
                limits: portico_translate::xml::Limits {
                    max_depth: max_depth as usize,
                    max_bytes: max_bytes as usize,
                    max_attributes: max_attributes as usize,
                },
            }))
        }
        PolicyConfig::JsonTransform(j) => {
            let remove = if j.remove.is_empty() {
                None
            } else {
                match portico_translate::shape::Fields::parse(j.remove.iter().map(String::as_str)) {
                    Some(f) => Some(f),
                    None => {
                        cx.sink.at(
                            loc(node, "remove"),
                            "`remove` has an empty path",
                            "write dotted paths such as `debug` or `user.password_hash`",
                        );
                        return None;
                    }
                }
            };
            let mut status = Vec::new();
            for (from, to) in &j.status {
                match (StatusCode::from_u16(*from), StatusCode::from_u16(*to)) {
                    (Ok(f), Ok(t)) if (100..600).contains(from) && (200..600).contains(to) => {
                        status.push((f, t))
                    }
                    _ => {
                        cx.sink.at(
                            loc(node, "status"),
                            format!("`{from}: {to}` is not a status rewrite"),
                            "map one HTTP status (100–599) to another (200–599), as in `201: 200`",
                        );
                        return None;
                    }
                }
            }
            Policy::JsonTransform(Arc::new(JsonTransformPolicy {
                sparse_fieldsets: j.sparse_fieldsets,
                remove,
                rename: j
                    .rename
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                set: j.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                status,
                max_bytes: j.max_bytes.unwrap_or(1 << 20),
            }))
        }
        PolicyConfig::RequestDecompression(d) => {
            let max = d.max_bytes.unwrap_or(8 << 20);
            if max == 0 {
                cx.sink.at(
                    loc(node, "max_bytes"),
                    "`max_bytes` must be at least 1",
                    "give the largest decoded body to accept, e.g. 8388608",
                );
                return None;
            }
            Policy::RequestDecompression(max)
        }
        PolicyConfig::Compression(c) => {
            let mut codings = Vec::new();
            for a in &c.algorithms {
                let coding = match a {
                    crate::file::CodingConfig::Br => Coding::Br,
                    crate::file::CodingConfig::Zstd => Coding::Zstd,
                    crate::file::CodingConfig::Gzip => Coding::Gzip,
                };
                if !codings.contains(&coding) {
                    codings.push(coding);
                }
            }
            if codings.is_empty() {
                codings = vec![Coding::Br, Coding::Zstd, Coding::Gzip];
            }
            let mut content_types = Vec::new();
            for (i, t) in c.content_types.iter().enumerate() {
                let t = t.trim().to_ascii_lowercase();
                if t.split_once('/')
                    .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
                {
                    cx.sink.at(
                        item_loc(node, "content_types", i),
                        format!("`{t}` is not a media type"),
                        "write `type/subtype`, or `type/*` for all of a type",
                    );
                    return None;
                }
                content_types.push(t);
            }
            Policy::Compression(Arc::new(CompressionPolicy {
                codings,
                min_bytes: c.min_bytes.unwrap_or(1024),
                content_types,
            }))
        }
        PolicyConfig::ConcurrencyLimit(c) => {
            if c.max_in_flight == 0 {
                cx.sink.at(
                    loc(node, "max_in_flight"),
                    "`max_in_flight` must be at least 1",
                    "to refuse every request, use a route with `respond: { status: 503 }`",
                );
                return None;
            }
            let key = limit_key(cx, c.key.clone().unwrap_or(LimitKeyConfig::Route), node)?;
            let adaptive = match &c.adaptive {
                None => None,
                Some(a) => {
                    let anode = get(node, "adaptive").unwrap_or(node);
                    let min = a.min_in_flight.unwrap_or(1);
                    if key != LimitKey::Route {
                        cx.sink.at(
                            loc(node, "key"),
                            "an `adaptive` cap is kept per route; it cannot be split by key",
                            "remove `key` (or use `key: route`), or drop `adaptive`",
                        );
                        return None;
                    }
                    if a.target_latency.0.is_zero() {
                        cx.sink.at(
                            loc(anode, "target_latency"),
                            "`target_latency` must be greater than 0",
                            "use the latency a healthy upstream stays under, such as `250ms`",
                        );
                        return None;
                    }
                    if min == 0 || min > c.max_in_flight {
                        cx.sink.at(
                            loc(anode, "min_in_flight"),
                            format!(
                                "`min_in_flight` must be between 1 and `max_in_flight` ({})",
                                c.max_in_flight
                            ),
                            "remove it for the default, 1",
                        );
                        return None;
                    }
                    Some((a.target_latency.0, min))
                }
            };
            let id = cx.concurrency_limits;
            cx.concurrency_limits += 1;
            let fingerprint = fnv(
                format!("{key:?}{}{adaptive:?}", c.max_in_flight).as_bytes(),
                FNV_START,
            );
            Policy::ConcurrencyLimit(ConcurrencyPolicy {
                id,
                max_in_flight: c.max_in_flight,
                key,
                adaptive,
                fingerprint,
            })
        }
        PolicyConfig::Headers(h) => Policy::Headers(HeadersPolicy {
            request: compile_header_ops(cx, &h.request, get(node, "request").unwrap_or(node)),
            response: compile_header_ops(cx, &h.response, get(node, "response").unwrap_or(node)),
        }),
        PolicyConfig::RateLimit(r) => {
            if r.limits.is_empty() {
                cx.sink.at(
                    loc(node, "limits"),
                    "`limits` is empty",
                    "add one, such as `{ requests: 100, per: 1m }`",
                );
                return None;
            }
            let mut limits = Vec::new();
            for (i, l) in r.limits.iter().enumerate() {
                let at = item_loc(node, "limits", i);
                let sliding = l.algorithm == Some(LimitAlgorithmConfig::SlidingWindow);
                if sliding && l.burst.is_some() {
                    cx.sink.at(
                        at,
                        "`burst` applies to token-bucket limits, not `sliding_window`",
                        "remove `burst`: a sliding window allows `requests` in any span of `per`",
                    );
                    continue;
                }
                if sliding && l.per.0 < Duration::from_millis(1) {
                    cx.sink.at(
                        at,
                        "a sliding window must be at least 1ms",
                        "use a window such as `1m` or `24h`",
                    );
                    continue;
                }
                let burst = l.burst.unwrap_or(l.requests);
                if l.requests == 0 || burst == 0 || l.per.0.is_zero() {
                    cx.sink.at(
                        at,
                        "a limit needs `requests`, `per` and `burst` above 0",
                        "for example `{ requests: 10, per: 1s, burst: 20 }`",
                    );
                    continue;
                }
                limits.push(Limit {
                    requests: l.requests,
                    per: l.per.0,
                    burst,
                    sliding,
                });
            }
            let key = limit_key(cx, r.key.clone().unwrap_or(LimitKeyConfig::ClientIp), node)?;
            let store = if r.store == Some(LimitStoreConfig::Redis) {
                if !cx.have_redis {
                    cx.sink.at(
                        loc(node, "store"),
                        "`store: redis` needs the top-level `redis` section",
                        "add `redis: { url: \"redis://127.0.0.1:6379\" }`",
                    );
                    return None;
                }
                if r.batch == Some(0) {
                    cx.sink.at(
                        loc(node, "batch"),
                        "`batch` must be at least 1",
                        "remove it for one round trip per request",
                    );
                    return None;
                }
                LimitStore::Redis {
                    fail_open: r.on_store_failure != Some(StoreFailureConfig::FailClosed),
                    batch: r.batch.unwrap_or(1),
                }
            } else {
                for (key, set) in [
                    ("on_store_failure", r.on_store_failure.is_some()),
                    ("batch", r.batch.is_some()),
                ] {
                    if set {
                        cx.sink.at(
                            loc(node, key),
                            format!("`{key}` applies only with `store: redis`"),
                            "remove it, or add `store: redis`",
                        );
                        return None;
                    }
                }
                LimitStore::Local
            };
            let id = cx.rate_limits;
            cx.rate_limits += 1;
            let fingerprint = fnv(format!("{key:?}{limits:?}{store:?}").as_bytes(), FNV_START);
            Policy::RateLimit(RateLimitPolicy {
                id,
                key,
                limits,
                hide_headers: r.hide_headers,
                store,
                fingerprint,
            })
        }
    };
    (cx.sink.out.len() == before).then_some(policy)
}

/// A `rate_limit` policy's counters belong to where it is written: a route's to that route
/// alone, a global one (`route: None`) to all routes together. The fingerprint names the
/// counters (kept across reloads when it is unchanged; part of the keys in Redis), so it takes
/// the route and the policy's place among the `rate_limit` policies there: the same limits
/// written on two routes, or twice on one, never share a budget.
fn scope_rate_limit(p: &mut Policy, route: Option<&str>, nth: &mut usize) {
    if let Policy::RateLimit(rl) = p {
        let scope = match route {
            Some(name) => format!("route {name} #{nth}"),
            None => format!("global #{nth}"),
        };
        rl.fingerprint = fnv(scope.as_bytes(), rl.fingerprint);
        *nth += 1;
    }
}

fn compile_aggregate(
    cx: &mut Ctx<'_>,
    cfg: &crate::file::AggregateConfig,
    node: &Node,
    params: &[String],
    upstreams: &HashMap<String, usize>,
) -> Option<Aggregate> {
    let errors_before = cx.sink.out.len();
    if cfg.backends.is_empty() {
        cx.sink.at(
            loc(node, "backends"),
            "`aggregate` needs at least one backend",
            "list the calls under `backends:`",
        );
        return None;
    }
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    let mut backends = Vec::new();
    for (i, b) in cfg.backends.iter().enumerate() {
        let bnode = get(node, "backends")
            .and_then(|n| match &n.kind {
                NodeKind::Seq(items) => items.get(i),
                _ => None,
            })
            .unwrap_or(node);
        // Names are placeholders' prefixes (`{name.field}`) and the answer's keys: only the
        // characters the docs promise, none that would need quoting or escaping there.
        if b.name.is_empty()
            || !b
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            cx.sink.at(
                loc(bnode, "name"),
                format!("invalid backend name `{}`", b.name),
                "use letters, digits, `-` and `_`",
            );
        } else if names[..i].contains(&b.name.as_str()) {
            cx.sink.at(
                loc(bnode, "name"),
                format!("backend name `{}` appears twice", b.name),
                "names are the keys of the answer; make them unique",
            );
        }
        let upstream = match upstreams.get(&b.upstream) {
            Some(u) => *u,
            None => {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                cx.sink.at(
                    loc(bnode, "upstream"),
                    format!("unknown upstream `{}`", b.upstream),
                    suggest(&b.upstream, &known),
                );
                usize::MAX
            }
        };
        let method = match &b.method {
            None => Method::GET,
            Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    cx.sink.at(
                        loc(bnode, "method"),
                        format!("invalid method `{m}`"),
                        "for example GET or POST",
                    );
                    Method::GET
                }
            },
        };
        if !b.path.starts_with('/') {
            cx.sink.at(
                loc(bnode, "path"),
                format!("backend path `{}` must start with `/`", b.path),
                format!("write `/{}`", b.path),
            );
        }
        let mut parts = Vec::new();
        let mut after = Vec::new();
        let mut rest = b.path.as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(AggregatePart::Literal(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                cx.sink.at(
                    loc(bnode, "path"),
                    format!("unclosed `{{` in `{}`", b.path),
                    "close the placeholder, as in `{id}` or `{user.id}`",
                );
                break;
            };
            let inner = &rest[open + 1..open + close];
            match inner.split_once('.') {
                None => match params.iter().position(|p| p == inner) {
                    Some(i) => parts.push(AggregatePart::Param(i)),
                    None => cx.sink.at(
                        loc(bnode, "path"),
                        format!("`{{{inner}}}` is not a parameter of this route's path"),
                        "parameters come from a `template:` path; use `{backend.field}` for a value from another backend's answer",
                    ),
                },
                Some((other, field)) => match names.iter().position(|n| *n == other) {
                    Some(j) if j == i => cx.sink.at(
                        loc(bnode, "path"),
                        format!("backend `{}` uses its own answer", b.name),
                        "a backend can only use the answers of others",
                    ),
                    Some(j) => {
                        if !after.contains(&j) {
                            after.push(j);
                        }
                        parts.push(AggregatePart::Answer(
                            j,
                            field.split('.').map(str::to_owned).collect(),
                        ));
                    }
                    None => cx.sink.at(
                        loc(bnode, "path"),
                        format!("`{{{inner}}}` names no backend `{other}`"),
                        suggest(other, &names),
                    ),
                },
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(AggregatePart::Literal(rest.to_owned()));
        }
        let mut shaping = Shaping {
            extract: b.extract.clone(),
            rename: b
                .rename
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Shaping::default()
        };
        if b.extract
            .as_deref()
            .is_some_and(|e| e.is_empty() || e.split('.').any(str::is_empty))
        {
            cx.sink.at(
                loc(bnode, "extract"),
                "`extract` must be a dotted path such as `data.user`",
                "names joined by `.`; array indexes are numbers",
            );
        }
        for (key, list) in [("fields", &b.fields), ("exclude", &b.exclude)] {
            if list.is_empty() {
                continue;
            }
            match portico_translate::shape::Fields::parse(list.iter().map(String::as_str)) {
                Some(f) if key == "fields" => shaping.keep = Some(f),
                Some(f) => shaping.drop = Some(f),
                None => cx.sink.at(
                    loc(bnode, key),
                    format!("`{key}` has an empty path"),
                    "write dotted paths such as `id` or `address.city`",
                ),
            }
        }
        backends.push(AggregateBackend {
            cache_ttl: b.cache_ttl.map(|d| d.0).filter(|d| !d.is_zero()),
            shaping,
            name: b.name.as_str().into(),
            upstream,
            method,
            path: parts,
            timeout: b.timeout.map(|d| d.0),
            required: b.required.unwrap_or(true),
            merge: b.merge,
            after,
        });
    }
    // Dependencies must not go round in a circle.
    fn cycle(
        backends: &[AggregateBackend],
        at: usize,
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        if let Some(start) = path.iter().position(|p| *p == at) {
            return Some(path[start..].to_vec());
        }
        path.push(at);
        for d in &backends[at].after {
            if let Some(c) = cycle(backends, *d, path) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    for i in 0..backends.len() {
        if let Some(c) = cycle(&backends, i, &mut Vec::new()) {
            let names: Vec<&str> = c.iter().map(|j| &*backends[*j].name).collect();
            cx.sink.at(
                loc(node, "backends"),
                format!(
                    "backends depend on each other in a circle: {} → {}",
                    names.join(" → "),
                    names[0]
                ),
                "a backend can use only answers that do not depend on its own",
            );
            break;
        }
    }
    let partial_status = match cfg.partial_status.unwrap_or(206) {
        s @ (200 | 206 | 207) => StatusCode::from_u16(s).expect("valid"),
        other => {
            cx.sink.at(
                loc(node, "partial_status"),
                format!("`partial_status` is {other}; it must be 200, 206 or 207"),
                "206 (Partial Content) says clearly that part is missing",
            );
            StatusCode::PARTIAL_CONTENT
        }
    };
    let mut forward_headers = Vec::new();
    for (i, h) in cfg.forward_headers.iter().enumerate() {
        match HeaderName::try_from(h.as_str()) {
            Ok(n) => forward_headers.push(n),
            Err(_) => cx.sink.at(
                item_loc(node, "forward_headers", i),
                format!("invalid header name `{h}`"),
                "header names are tokens such as `authorization`",
            ),
        }
    }
    if cx.sink.out.len() != errors_before {
        return None;
    }
    Some(Aggregate {
        backends,
        partial_status,
        errors_key: cfg.errors_key.clone().unwrap_or_else(|| "_errors".into()),
        pass_through_client_errors: cfg.pass_through_client_errors,
        forward_headers,
        sparse_fieldsets: cfg.sparse_fieldsets.unwrap_or(true),
    })
}
