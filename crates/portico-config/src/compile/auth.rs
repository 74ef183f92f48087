//! Compiling consumers and the identity/access policies (`api_key`, `basic_auth`, `jwt`,
//! `any_of`, `acl`, `ip_filter`, `cors`, `body_limit`).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use portico_auth::jwt::{self, ClaimRule, Family, Issuer, IssuerKeys, Key, KeySet};

use super::ctx::{Ctx, get, item_loc, loc, read_file};
use crate::file::*;
use crate::ir::*;
use crate::tree::{Node, NodeKind};

fn item<'n>(node: &'n Node, key: &str, i: usize) -> &'n Node {
    match get(node, key).map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).unwrap_or(node),
        _ => node,
    }
}

pub(crate) fn compile_consumers(
    cx: &mut Ctx<'_>,
    cfgs: &[ConsumerConfig],
    nodes: &[&Node],
    _server: &Server,
) -> Consumers {
    let mut out = Consumers::default();
    for (c, node) in cfgs.iter().zip(nodes) {
        let index = out.list.len();
        if let Some(&prev) = out.by_name.get(&c.name) {
            cx.sink.at(
                loc(node, "name"),
                format!("duplicate consumer name `{}`", c.name),
                format!(
                    "consumer names must be unique; consumer #{} already uses it",
                    prev + 1
                ),
            );
            continue;
        }
        let Ok(name_value) = HeaderValue::try_from(c.name.as_str()) else {
            cx.sink.at(
                loc(node, "name"),
                "a consumer name must be valid header text",
                "use letters, digits, `-`, `_` and `.`",
            );
            continue;
        };
        for (i, k) in c.api_keys.iter().enumerate() {
            match portico_auth::apikey::parse_digest(k) {
                Ok(d) => {
                    if let Err(other) = out.api_keys.insert(d, index) {
                        cx.sink.at(
                            item_loc(node, "api_keys", i),
                            format!(
                                "this API key is also a key of consumer `{}`",
                                cfgs.get(other).map_or("?", |c| c.name.as_str())
                            ),
                            "a key must identify one consumer; issue a new key",
                        );
                    }
                }
                Err(e) => cx.sink.at(
                    item_loc(node, "api_keys", i),
                    e,
                    "run `portico hash api-key YOUR-KEY` and paste its output",
                ),
            }
        }
        if let Some(b) = &c.basic_auth {
            let bnode = get(node, "basic_auth").unwrap_or(node);
            let user = b.username.clone().unwrap_or_else(|| c.name.clone());
            match portico_auth::basic::PasswordHash::parse(&b.password_hash) {
                Ok(h) => {
                    if let Err(other) = out.users.insert(&user, h, index) {
                        cx.sink.at(
                            loc(bnode, "username"),
                            format!(
                                "user name `{user}` is also used by consumer `{}`",
                                cfgs.get(other).map_or("?", |c| c.name.as_str())
                            ),
                            "Basic user names must be unique",
                        );
                    }
                }
                Err(e) => cx.sink.at(
                    loc(bnode, "password_hash"),
                    e,
                    "run `portico hash password` and paste its output",
                ),
            }
        }
        let groups: Vec<Arc<str>> = c.groups.iter().map(|g| Arc::from(g.as_str())).collect();
        let groups_value = if groups.is_empty() {
            None
        } else {
            match HeaderValue::try_from(c.groups.join(",")) {
                Ok(v) => Some(v),
                Err(_) => {
                    cx.sink.at(
                        loc(node, "groups"),
                        "group names must be valid header text",
                        "use letters, digits, `-`, `_` and `.`",
                    );
                    None
                }
            }
        };
        for (i, n) in c.client_cert_names.iter().enumerate() {
            if let Some(&prev) = out.by_cert_name.get(n) {
                cx.sink.at(
                    item_loc(node, "client_cert_names", i),
                    format!(
                        "certificate name `{n}` also identifies consumer `{}`",
                        cfgs.get(prev).map_or("?", |c| c.name.as_str())
                    ),
                    "a certificate name must identify one consumer",
                );
            } else {
                out.by_cert_name.insert(n.clone(), index);
            }
        }
        out.by_name.insert(c.name.clone(), index);
        out.list.push(Consumer {
            name: Arc::from(c.name.as_str()),
            groups,
            metadata: c.metadata.clone(),
            name_value,
            groups_value,
        });
    }
    cx.have_api_keys = !out.api_keys.is_empty();
    cx.have_users = !out.users.is_empty();
    out
}

pub(crate) fn compile_access_policy(
    cx: &mut Ctx<'_>,
    p: &PolicyConfig,
    node: &Node,
) -> Option<Policy> {
    let before = cx.sink.out.len();
    let policy = match p {
        PolicyConfig::ApiKey(_)
        | PolicyConfig::BasicAuth(_)
        | PolicyConfig::Jwt(_)
        | PolicyConfig::ClientCert(_)
        | PolicyConfig::Introspection(_) => {
            Policy::Auth(AuthPolicy::new(vec![compile_method(cx, p, node)?]))
        }
        PolicyConfig::AnyOf(a) => {
            if a.policies.len() < 2 {
                cx.sink.at(
                    loc(node, "policies"),
                    "`any_of` needs at least two authentication policies",
                    "list two or more of `api_key`, `basic_auth`, `jwt`, `client_cert`, `introspection`; for one, use it directly",
                );
                return None;
            }
            let mut methods = Vec::new();
            for (i, inner) in a.policies.iter().enumerate() {
                let n = item(node, "policies", i);
                match inner {
                    PolicyConfig::ApiKey(_)
                    | PolicyConfig::BasicAuth(_)
                    | PolicyConfig::Jwt(_)
                    | PolicyConfig::ClientCert(_)
                    | PolicyConfig::Introspection(_) => {
                        if let Some(m) = compile_method(cx, inner, n) {
                            methods.push(m);
                        }
                    }
                    _ => cx.sink.at(
                        n.loc,
                        "`any_of` holds only authentication policies",
                        "use `api_key`, `basic_auth`, `jwt` or `client_cert` here; put other policies after the `any_of`",
                    ),
                }
            }
            Policy::Auth(AuthPolicy::new(methods))
        }
        PolicyConfig::Acl(a) => {
            if a.allow.is_empty() && a.deny.is_empty() && a.scopes.is_empty() {
                cx.sink.at(
                    node.loc,
                    "this `acl` has no rule",
                    "add `allow`, `deny` or `scopes`",
                );
                return None;
            }
            let mut methods = Vec::new();
            for (i, m) in a.methods.iter().enumerate() {
                match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => methods.push(m),
                    Err(_) => cx.sink.at(
                        item_loc(node, "methods", i),
                        format!("invalid method `{m}`"),
                        "use a method name such as `GET` or `POST`",
                    ),
                }
            }
            Policy::Acl(AclPolicy {
                allow: a.allow.clone(),
                deny: a.deny.clone(),
                scopes: a.scopes.clone(),
                methods,
            })
        }
        PolicyConfig::IpFilter(f) => {
            if f.allow.is_empty() && f.deny.is_empty() {
                cx.sink.at(
                    node.loc,
                    "this `ip_filter` has no rule",
                    "add `allow` or `deny` networks",
                );
                return None;
            }
            let mut nets = |key: &str, list: &[String]| -> Vec<Cidr> {
                let mut out = Vec::new();
                for (i, t) in list.iter().enumerate() {
                    match Cidr::parse(t) {
                        Some(c) => out.push(c),
                        None => cx.sink.at(
                            item_loc(node, key, i),
                            format!("invalid address or CIDR `{t}`"),
                            "write an address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`)",
                        ),
                    }
                }
                out
            };
            let allow = nets("allow", &f.allow);
            let deny = nets("deny", &f.deny);
            Policy::IpFilter(IpFilterPolicy { allow, deny })
        }
        PolicyConfig::Cors(c) => Policy::Cors(Arc::new(compile_cors(cx, c, node)?)),
        PolicyConfig::BodyLimit(b) => {
            if b.max_bytes == 0 {
                cx.sink.at(
                    loc(node, "max_bytes"),
                    "`max_bytes` must be greater than 0",
                    "to refuse all bodies, match the route on methods without bodies",
                );
                return None;
            }
            Policy::BodyLimit(b.max_bytes)
        }
        PolicyConfig::Headers(_)
        | PolicyConfig::RateLimit(_)
        | PolicyConfig::ConcurrencyLimit(_)
        | PolicyConfig::Compression(_)
        | PolicyConfig::RequestDecompression(_)
        | PolicyConfig::XmlJson(_)
        | PolicyConfig::JsonTransform(_)
        | PolicyConfig::Cache(_) => return None,
    };
    (cx.sink.out.len() == before).then_some(policy)
}

fn header_name(cx: &mut Ctx<'_>, name: &str, node: &Node, key: &str) -> Option<HeaderName> {
    match HeaderName::try_from(name) {
        Ok(h) => Some(h),
        Err(_) => {
            cx.sink.at(
                loc(node, key),
                format!("invalid header name `{name}`"),
                "use letters, digits and `-`",
            );
            None
        }
    }
}

fn realm_challenge(
    cx: &mut Ctx<'_>,
    scheme: &str,
    realm: Option<&str>,
    node: &Node,
) -> HeaderValue {
    let realm = realm.unwrap_or("portico");
    if realm.contains(['"', '\\']) {
        cx.sink.at(
            loc(node, "realm"),
            "the realm cannot contain `\"` or `\\`",
            "use plain words",
        );
    }
    HeaderValue::try_from(format!("{scheme} realm=\"{realm}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

fn compile_method(cx: &mut Ctx<'_>, p: &PolicyConfig, node: &Node) -> Option<AuthMethod> {
    match p {
        PolicyConfig::ApiKey(k) => {
            if !cx.have_api_keys {
                cx.sink.at(
                    node.loc,
                    "`api_key` is used but no consumer has an API key",
                    "add `api_keys: [\"sha256:…\"]` to a consumer (`portico hash api-key KEY` prints one)",
                );
                return None;
            }
            let header = header_name(
                cx,
                k.header.as_deref().unwrap_or("x-api-key"),
                node,
                "header",
            )?;
            if k.query.as_deref() == Some("") {
                cx.sink.at(
                    loc(node, "query"),
                    "`query` cannot be empty",
                    "name the parameter, such as `api_key`",
                );
            }
            Some(AuthMethod::ApiKey(ApiKeyMethod {
                header,
                query: k.query.clone(),
            }))
        }
        PolicyConfig::BasicAuth(b) => {
            if !cx.have_users {
                cx.sink.at(
                    node.loc,
                    "`basic_auth` is used but no consumer has Basic credentials",
                    "add `basic_auth: { password_hash: … }` to a consumer",
                );
                return None;
            }
            let challenge = realm_challenge(cx, "Basic", b.realm.as_deref(), node);
            let slot = cx.slot_for(node);
            Some(AuthMethod::Basic(BasicMethod {
                challenge,
                cache_ttl: b.cache_ttl.map_or(Duration::from_secs(300), |d| d.0),
                slot,
            }))
        }
        PolicyConfig::Jwt(j) => compile_jwt(cx, j, node).map(|m| AuthMethod::Jwt(Box::new(m))),
        PolicyConfig::ClientCert(c) => {
            let forward_header = match &c.forward_header {
                Some(h) => {
                    let h = header_name(cx, h, node, "forward_header")?;
                    if !cx.claim_headers.contains(&h) {
                        cx.claim_headers.push(h.clone());
                    }
                    Some(h)
                }
                None => None,
            };
            Some(AuthMethod::ClientCert(ClientCertMethod { forward_header }))
        }
        PolicyConfig::Introspection(i) => {
            compile_introspection(cx, i, node).map(|m| AuthMethod::Introspection(Box::new(m)))
        }
        _ => None,
    }
}

fn compile_jwt(cx: &mut Ctx<'_>, j: &JwtPolicyConfig, node: &Node) -> Option<JwtMethod> {
    let before = cx.sink.out.len();
    if j.issuers.is_empty() {
        cx.sink.at(
            loc(node, "issuers"),
            "`issuers` is empty",
            "add the issuer whose tokens this route accepts",
        );
        return None;
    }
    let leeway = j.leeway.map_or(30, |d| d.0.as_secs());
    let require_exp = j.require_exp.unwrap_or(true);
    let mut issuers = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, ic) in j.issuers.iter().enumerate() {
        let inode = item(node, "issuers", i);
        match &ic.issuer {
            None if j.issuers.len() > 1 => cx.sink.at(
                inode.loc,
                "with several issuers, each needs `issuer` (the `iss` value that selects it)",
                "add `issuer: https://…`",
            ),
            Some(s) if seen.contains(&s.as_str()) => {
                cx.sink.at(
                    loc(inode, "issuer"),
                    format!("issuer `{s}` is listed twice"),
                    "merge the two entries",
                );
            }
            Some(s) => seen.push(s),
            None => {}
        }
        if ic.algorithms.is_empty() {
            cx.sink.at(
                loc(inode, "algorithms"),
                "`algorithms` is empty",
                "pin the algorithms this issuer signs with, such as `[RS256]`",
            );
            continue;
        }
        let mut algs = Vec::new();
        for (k, a) in ic.algorithms.iter().enumerate() {
            match jwt::parse_algorithm(a) {
                Ok(a) => algs.push(a),
                Err(e) => cx.sink.at(
                    item_loc(inode, "algorithms", k),
                    e,
                    "`none` is never accepted",
                ),
            }
        }
        if algs.is_empty() {
            continue;
        }
        let mut families: Vec<Family> = Vec::new();
        for a in &algs {
            if !families.contains(&jwt::family(*a)) {
                families.push(jwt::family(*a));
            }
        }
        // Public-key algorithms of several kinds (RS256 and ES256, say) mix freely: each key's
        // type decides which of them it verifies. A shared secret never joins public keys.
        let hmac = families.contains(&Family::Hmac);
        if hmac && families.len() > 1 {
            cx.sink.at(
                loc(inode, "algorithms"),
                "HS algorithms (a shared secret) and public-key algorithms cannot be trusted from one issuer",
                "keep only the algorithms this issuer signs with: the HS ones with `secret` keys, or the RS/PS/ES/EdDSA ones with `pem_file` keys or `jwks_url`",
            );
            continue;
        }
        let keys = match (&ic.jwks_url, ic.keys.is_empty()) {
            (Some(_), false) | (None, true) => {
                cx.sink.at(
                    inode.loc,
                    "an issuer needs exactly one of `keys` and `jwks_url`",
                    "give the keys inline (`keys: [{ pem_file: … }]`) or the issuer's JWKS URL",
                );
                continue;
            }
            (Some(url), true) => {
                let ok = (url.starts_with("https://") || url.starts_with("http://"))
                    && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
                if !ok {
                    cx.sink.at(loc(inode, "jwks_url"), format!("`{url}` is not an http(s) URL"), "write the full URL, such as `https://idp.example.com/.well-known/jwks.json`");
                    continue;
                }
                if hmac {
                    cx.sink.at(
                        loc(inode, "jwks_url"),
                        "HS algorithms use a shared secret, which a JWKS URL must not publish",
                        "give the secret in `keys: [{ secret: ${VAR} }]`, or use an asymmetric algorithm",
                    );
                    continue;
                }
                for (key, d) in [
                    ("jwks_refresh", ic.jwks_refresh),
                    ("jwks_min_refresh", ic.jwks_min_refresh),
                ] {
                    if d.is_some_and(|d| d.0 < Duration::from_secs(1)) {
                        cx.sink.at(
                            loc(inode, key),
                            format!("`{key}` must be at least 1s"),
                            "shorter intervals would hammer the identity provider; remove it for the default",
                        );
                    }
                }
                let src = JwksSource {
                    url: url.clone(),
                    refresh: ic.jwks_refresh.map_or(Duration::from_secs(300), |d| d.0),
                    min_refresh: ic.jwks_min_refresh.map_or(Duration::from_secs(30), |d| d.0),
                };
                let slot = match cx.jwks.iter().position(|s| *s == src) {
                    Some(s) => s,
                    None => {
                        cx.jwks.push(src);
                        cx.jwks.len() - 1
                    }
                };
                IssuerKeys::Jwks(slot)
            }
            (None, false) => {
                let mut set = KeySet::default();
                for (k, kc) in ic.keys.iter().enumerate() {
                    let knode = item(inode, "keys", k);
                    // The secret, inline or from its file: `Some(None)` when the file could
                    // not be read (already reported).
                    let (secret_key, secret) = match (&kc.secret, &kc.secret_file) {
                        (Some(_), Some(_)) => {
                            cx.sink.at(
                                loc(knode, "secret_file"),
                                "a key has both `secret` and `secret_file`",
                                "keep one of them",
                            );
                            continue;
                        }
                        (Some(s), None) => ("secret", Some(Some(s.as_bytes().to_vec()))),
                        (None, Some(path)) => {
                            let read =
                                read_file(cx, path, loc(knode, "secret_file")).map(|mut b| {
                                    if b.ends_with(b"\n") {
                                        b.pop();
                                        if b.ends_with(b"\r") {
                                            b.pop();
                                        }
                                    }
                                    b
                                });
                            ("secret_file", Some(read))
                        }
                        (None, None) => ("secret", None),
                    };
                    match (&kc.pem_file, &secret, hmac) {
                        (Some(_), Some(_), _) | (None, None, _) => cx.sink.at(
                            knode.loc,
                            "a key needs exactly one of `pem_file`, `secret` and `secret_file`",
                            "`secret` or `secret_file` for HS algorithms, `pem_file` for the others",
                        ),
                        (None, Some(_), false) => cx.sink.at(
                            loc(knode, secret_key),
                            format!("{} algorithms verify with a public key, not a secret", names(&families)),
                            "give the issuer's public key in `pem_file`",
                        ),
                        (Some(_), None, true) => cx.sink.at(
                            loc(knode, "pem_file"),
                            "HS algorithms verify with a shared secret, not a PEM key",
                            "give the secret in `secret: ${VAR}` or `secret_file`; a public key used as an HMAC secret would let anyone sign tokens",
                        ),
                        (None, Some(None), _) => {}
                        (None, Some(Some(secret)), _) => {
                            if secret.len() < 32 {
                                cx.sink.at(
                                    loc(knode, secret_key),
                                    format!("this HMAC secret is {} bytes; at least 32 are required", secret.len()),
                                    "use a random secret of 32 bytes or more (RFC 7518 §3.2)",
                                );
                            }
                            set.keys.push(Key::secret(kc.kid.clone(), secret));
                        }
                        (Some(path), None, false) => {
                            if let Some(pem) = read_file(cx, path, loc(knode, "pem_file")) {
                                match Key::pem_any(kc.kid.clone(), &pem) {
                                    Ok(k) if families.contains(&k.family()) => set.keys.push(k),
                                    Ok(k) => cx.sink.at(
                                        loc(knode, "pem_file"),
                                        format!("this is {} key, but the issuer's algorithms ({}) need {}", article(k.family()), ic.algorithms.join(", "), names(&families)),
                                        format!("give the issuer's {} key, or add the algorithm this key signs with ({}) to `algorithms`", names(&families), algs_for(k.family())),
                                    ),
                                    Err(e) => cx.sink.at(loc(knode, "pem_file"), e, "give the issuer's public key (`-----BEGIN PUBLIC KEY-----`)"),
                                }
                            }
                        }
                    }
                }
                IssuerKeys::Static(Arc::new(set))
            }
        };
        issuers.push(Issuer::new(
            ic.issuer.clone(),
            algs,
            keys,
            &ic.audiences,
            leeway,
            require_exp,
        ));
    }
    let sources = compile_sources(cx, &j.from, node);
    let rules = claim_rules(&j.claims);
    let forward_claims = compile_forward(cx, &j.forward_claims, node);
    let challenge = realm_challenge(cx, "Bearer", j.realm.as_deref(), node);
    let slot = cx.slot_for(node);
    (cx.sink.out.len() == before).then_some(JwtMethod {
        slot,
        token_cache_size: j.token_cache_size.unwrap_or(10_000),
        forward_token: j.forward_token,
        issuers,
        sources,
        required_claims: j.required_claims.clone(),
        rules,
        consumer_claim: j.consumer_claim.clone(),
        forward_claims,
        challenge,
    })
}

/// The key types `families` need, for messages: `RSA`, `RSA or EC`.
fn names(families: &[Family]) -> String {
    let names: Vec<&str> = families.iter().map(|f| family_name(*f)).collect();
    names.join(" or ")
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Hmac => "HS",
        Family::Rsa => "RSA",
        Family::Ec => "EC",
        Family::Ed => "Ed25519",
    }
}

fn article(f: Family) -> String {
    match f {
        Family::Rsa | Family::Ec => format!("an {}", family_name(f)),
        _ => format!("a {}", family_name(f)),
    }
}

fn algs_for(f: Family) -> &'static str {
    match f {
        Family::Hmac => "HS256/384/512",
        Family::Rsa => "RS256/384/512 or PS256/384/512",
        Family::Ec => "ES256/384",
        Family::Ed => "EdDSA",
    }
}

fn claim_rules(claims: &std::collections::BTreeMap<String, Vec<String>>) -> Vec<ClaimRule> {
    claims
        .iter()
        .map(|(claim, accepted)| ClaimRule {
            claim: claim.clone(),
            accepted: accepted.clone(),
        })
        .collect()
}

fn compile_sources(cx: &mut Ctx<'_>, from: &[TokenSourceConfig], node: &Node) -> Vec<TokenSource> {
    let mut sources = Vec::new();
    for (i, s) in from.iter().enumerate() {
        let at = item_loc(node, "from", i);
        sources.push(match s {
            TokenSourceConfig::Header(h) if h.eq_ignore_ascii_case("authorization") => {
                TokenSource::Bearer
            }
            TokenSourceConfig::Header(h) => match HeaderName::try_from(h.as_str()) {
                Ok(h) => TokenSource::Header(h),
                Err(_) => {
                    cx.sink.at(
                        at,
                        format!("invalid header name `{h}`"),
                        "use letters, digits and `-`",
                    );
                    continue;
                }
            },
            TokenSourceConfig::Cookie(c) => TokenSource::Cookie(c.clone()),
            TokenSourceConfig::Query(q) => TokenSource::Query(q.clone()),
        });
    }
    if sources.is_empty() {
        sources.push(TokenSource::Bearer);
    }
    sources
}

fn compile_forward(
    cx: &mut Ctx<'_>,
    map: &std::collections::BTreeMap<String, String>,
    node: &Node,
) -> Vec<(String, HeaderName)> {
    let mut out = Vec::new();
    let fnode = get(node, "forward_claims").unwrap_or(node);
    for (claim, header) in map {
        if let Some(h) = header_name(cx, header, fnode, claim) {
            if !cx.claim_headers.contains(&h) {
                cx.claim_headers.push(h.clone());
            }
            out.push((claim.clone(), h));
        }
    }
    out
}

fn compile_introspection(
    cx: &mut Ctx<'_>,
    c: &IntrospectionPolicyConfig,
    node: &Node,
) -> Option<IntrospectionMethod> {
    let before = cx.sink.out.len();
    let ok = (c.url.starts_with("https://") || c.url.starts_with("http://"))
        && c.url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        cx.sink.at(
            loc(node, "url"),
            format!("`{}` is not an http(s) URL", c.url),
            "write the endpoint's full URL, such as `https://idp.example.com/oauth2/introspect`",
        );
    }
    if c.client_id.is_empty() || c.client_secret.is_empty() {
        cx.sink.at(node.loc, "`client_id` and `client_secret` must not be empty", "give the credentials the gateway uses at the authorization server; `${VAR}` keeps the secret out of the file");
    }
    let authorization = HeaderValue::try_from(portico_auth::basic::authorization_value(
        &c.client_id,
        &c.client_secret,
    ))
    .ok();
    let timeout = c.timeout.map_or(Duration::from_secs(2), |d| d.0);
    if timeout.is_zero() {
        cx.sink.at(
            loc(node, "timeout"),
            "`timeout` must be greater than 0",
            "remove it for the default, 2s",
        );
    }
    let sources = compile_sources(cx, &c.from, node);
    let forward_claims = compile_forward(cx, &c.forward_claims, node);
    let rules = claim_rules(&c.claims);
    let challenge = realm_challenge(cx, "Bearer", c.realm.as_deref(), node);
    let slot = cx.slot_for(node);
    (cx.sink.out.len() == before).then_some(IntrospectionMethod {
        slot,
        url: c.url.clone(),
        authorization: authorization?,
        sources,
        timeout,
        cache_size: c.cache_size.unwrap_or(10_000),
        cache_ttl: c.cache_ttl.map_or(Duration::from_secs(60), |d| d.0),
        rules,
        consumer_claim: c.consumer_claim.clone(),
        forward_claims,
        challenge,
    })
}

fn compile_cors(cx: &mut Ctx<'_>, c: &CorsPolicyConfig, node: &Node) -> Option<CorsPolicy> {
    if c.origins.is_empty() {
        cx.sink.at(
            loc(node, "origins"),
            "`origins` is empty",
            "list the web origins allowed, such as `https://app.example.com`, or `*`",
        );
        return None;
    }
    let mut any_origin = false;
    let mut origins = Vec::new();
    let mut origin_suffixes = Vec::new();
    for (i, o) in c.origins.iter().enumerate() {
        let o = o.to_ascii_lowercase();
        if o == "*" {
            any_origin = true;
        } else if let Some((scheme, rest)) = o.split_once("://") {
            if let Some(suffix) = rest.strip_prefix("*.") {
                origin_suffixes.push((format!("{scheme}://"), format!(".{suffix}")));
            } else if rest.is_empty() || rest.contains('/') {
                cx.sink.at(item_loc(node, "origins", i), format!("`{o}` is not an origin"), "an origin is scheme, host and optional port, without a path: `https://app.example.com`");
            } else {
                origins.push(o);
            }
        } else {
            cx.sink.at(
                item_loc(node, "origins", i),
                format!("`{o}` is not an origin"),
                "write it with its scheme, such as `https://app.example.com`, or `*`",
            );
        }
    }
    if any_origin && c.credentials {
        cx.sink.at(
            loc(node, "credentials"),
            "`credentials: true` cannot be combined with origin `*`",
            "list the origins that may send credentials",
        );
    }
    let methods = if c.methods.is_empty() {
        "GET, HEAD, POST".to_owned()
    } else {
        for (i, m) in c.methods.iter().enumerate() {
            if Method::from_bytes(m.as_bytes()).is_err() {
                cx.sink.at(
                    item_loc(node, "methods", i),
                    format!("invalid method `{m}`"),
                    "use a method name such as `PUT`",
                );
            }
        }
        c.methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list = |cx: &mut Ctx<'_>, key: &str, items: &[String]| -> Option<HeaderValue> {
        if items.is_empty() {
            return None;
        }
        for (i, h) in items.iter().enumerate() {
            if HeaderName::try_from(h.as_str()).is_err() {
                cx.sink.at(
                    item_loc(node, key, i),
                    format!("invalid header name `{h}`"),
                    "use letters, digits and `-`",
                );
            }
        }
        HeaderValue::try_from(items.join(", ")).ok()
    };
    let headers = list(cx, "headers", &c.headers);
    let expose_headers = list(cx, "expose_headers", &c.expose_headers);
    let max_age = c.max_age.map_or(600, |d| d.0.as_secs());
    Some(CorsPolicy {
        any_origin,
        origins,
        origin_suffixes,
        methods: HeaderValue::try_from(methods).ok()?,
        headers,
        expose_headers,
        credentials: c.credentials,
        max_age: HeaderValue::from(max_age),
    })
}
