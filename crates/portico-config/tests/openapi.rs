//! `apis`: routes from OpenAPI documents, and every way a document or its config can be wrong.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderValue, Method};
use portico_config::router::RequestView;
use portico_config::{Action, Config, Diagnostics, load_str};

fn env(k: &str) -> Option<String> {
    (k == "PETS").then(|| "http://127.0.0.1:9000".into())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../portico-testkit/openapi")
}

/// A fresh folder holding `files`, for configs that name documents written in the test.
fn folder(files: &[(&str, &str)]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portico-openapi-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

const UPSTREAMS: &str = "upstreams:\n  pets: { targets: [\"${PETS}\"] }\n  admin: { targets: [\"http://127.0.0.1:9001\"] }\n";

fn load_in(dir: &Path, config: &str) -> Result<Config, Diagnostics> {
    load_str("portico.yaml", config, dir, &env)
}

fn load(config: &str) -> Config {
    load_in(&fixtures(), config).unwrap_or_else(|e| panic!("{e}"))
}

/// Every diagnostic as `file:line:col: message`, files by their name only.
fn located(r: Result<Config, Diagnostics>) -> Vec<String> {
    let d = match r {
        Ok(_) => panic!("expected errors"),
        Err(d) => d,
    };
    d.0.iter()
        .map(|d| {
            let file = Path::new(&d.file).file_name().unwrap().to_string_lossy();
            let l = d.loc.unwrap_or_default();
            format!("{file}:{}:{}: {}", l.line, l.column, d.message)
        })
        .collect()
}

/// The errors of a config naming one document, `doc.yaml`, with `extra` config after it.
fn doc_errors(doc: &str, extra: &str) -> Vec<String> {
    let dir = folder(&[("doc.yaml", doc)]);
    let config = format!("{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n{extra}");
    located(load_in(&dir, &config))
}

fn hints(r: Result<Config, Diagnostics>) -> Vec<String> {
    let Err(d) = r else { panic!("expected errors") };
    d.0.into_iter()
        .map(|d| d.hint.unwrap_or_default())
        .collect()
}

fn route<'a>(
    c: &'a Config,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<(&'a str, Vec<String>)> {
    let view = RequestView {
        host: None,
        path,
        method: &method,
        headers,
        query: None,
    };
    c.router.find(&view).map(|m| {
        (
            &*m.route.name,
            m.params.iter().map(|s| s.to_string()).collect(),
        )
    })
}

fn get(c: &Config, path: &str) -> Option<String> {
    route(c, Method::GET, path, &HeaderMap::new()).map(|(n, _)| n.to_owned())
}

fn by_name<'a>(c: &'a Config, name: &str) -> &'a portico_config::Route {
    c.routes
        .iter()
        .find(|r| &*r.name == name)
        .unwrap_or_else(|| panic!("no route `{name}`"))
}

fn proxy(r: &portico_config::Route) -> &portico_config::ProxyAction {
    match &r.action {
        Action::Proxy(p) => p,
        other => panic!("not a proxy: {other:?}"),
    }
}

fn rendered_rewrite(r: &portico_config::Route, params: &[&str]) -> Option<String> {
    proxy(r).path.as_ref().map(|p| {
        let mut out = String::new();
        p.render(params, &mut out);
        out
    })
}

fn upstream_name<'a>(c: &'a Config, r: &portico_config::Route) -> &'a str {
    &c.upstreams[proxy(r).upstreams[0].0].name
}

#[test]
fn operations_become_routes_under_the_server_path() {
    let c = load(&format!(
        "{UPSTREAMS}apis:\n  - openapi: petstore.yaml\n    upstream: pets\n"
    ));
    let names: Vec<&str> = c.routes.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "listPets",
            "createPets",
            "showPetById",
            "deletePet",
            "GET /v1/health"
        ]
    );
    let none = HeaderMap::new();
    assert_eq!(get(&c, "/v1/pets").as_deref(), Some("listPets"));
    assert_eq!(
        route(&c, Method::POST, "/v1/pets", &none),
        Some(("createPets", vec![]))
    );
    assert_eq!(
        route(&c, Method::GET, "/v1/pets/42", &none),
        Some(("showPetById", vec!["42".to_owned()]))
    );
    assert_eq!(
        route(&c, Method::DELETE, "/v1/pets/42", &none),
        Some(("deletePet", vec!["42".to_owned()]))
    );
    assert_eq!(route(&c, Method::PUT, "/v1/pets/42", &none), None);
    assert_eq!(get(&c, "/pets"), None);
    assert_eq!(get(&c, "/v1/pets/42/toys"), None);
    assert_eq!(get(&c, "/v1/health").as_deref(), Some("GET /v1/health"));
    let list = by_name(&c, "listPets");
    assert_eq!(upstream_name(&c, list), "pets");
    assert_eq!(rendered_rewrite(list, &[]), None);
}

#[test]
fn json_and_yaml_documents_give_the_same_routes() {
    let summary = |doc: &str| {
        let c = load(&format!(
            "{UPSTREAMS}apis:\n  - openapi: {doc}\n    upstream: pets\n"
        ));
        c.routes
            .iter()
            .map(|r| format!("{} {:?} {:?}", r.name, r.methods, r.path))
            .collect::<Vec<_>>()
    };
    let yaml = summary("petstore.yaml");
    assert_eq!(yaml.len(), 5);
    assert_eq!(yaml, summary("petstore.json"));
}

#[test]
fn the_config_base_path_wins_and_can_be_stripped() {
    let c = load(&format!(
        "{UPSTREAMS}apis:\n  - openapi: petstore.yaml\n    upstream: pets\n    base_path: /store\n    strip_base_path: true\n"
    ));
    assert_eq!(get(&c, "/store/pets").as_deref(), Some("listPets"));
    assert_eq!(get(&c, "/v1/pets"), None);
    let show = by_name(&c, "showPetById");
    assert_eq!(rendered_rewrite(show, &["7"]).as_deref(), Some("/pets/7"));
    // No base path at all: the document's paths as they are, nothing to strip.
    let c = load(&format!(
        "{UPSTREAMS}apis:\n  - openapi: petstore.yaml\n    upstream: pets\n    base_path: \"\"\n    strip_base_path: true\n"
    ));
    assert_eq!(get(&c, "/pets/3").as_deref(), Some("showPetById"));
    assert_eq!(rendered_rewrite(by_name(&c, "showPetById"), &["3"]), None);
}

#[test]
fn settings_resolve_operation_then_tag_then_api() {
    let c = load(&format!(
        "{UPSTREAMS}apis:
  - openapi: petstore.yaml
    upstream: pets
    timeout: 5s
    name_prefix: store.
    policies: [{{ type: headers, request: {{ set: {{ x-api: pets }} }} }}]
    tags:
      admin: {{ upstream: admin, policies: [{{ type: headers, request: {{ set: {{ x-tag: admin }} }} }}] }}
    operations:
      showPetById: {{ timeout: 2s }}
      deletePet: {{ policies: [{{ type: headers, request: {{ set: {{ x-op: delete }} }} }}] }}
      createPets: {{ skip: true }}
"
    ));
    let names: Vec<&str> = c.routes.iter().map(|r| &*r.name).collect();
    assert_eq!(
        names,
        [
            "store.listPets",
            "store.showPetById",
            "store.deletePet",
            "store.GET /v1/health"
        ]
    );
    let list = by_name(&c, "store.listPets");
    assert_eq!(list.timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(upstream_name(&c, list), "pets");
    let show = by_name(&c, "store.showPetById");
    assert_eq!(show.timeout, Some(std::time::Duration::from_secs(2)));
    let delete = by_name(&c, "store.deletePet");
    assert_eq!(upstream_name(&c, delete), "admin");
    // The API's policy, then the tag's, then the operation's.
    assert_eq!(delete.policies.len(), 3, "{:?}", delete.policies);
    let order: Vec<String> = delete
        .policies
        .iter()
        .map(|p| format!("{p:?}"))
        .map(|p| {
            ["x-api", "x-tag", "x-op"]
                .into_iter()
                .find(|h| p.contains(h))
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert_eq!(order, ["x-api", "x-tag", "x-op"]);
    assert_eq!(by_name(&c, "store.listPets").policies.len(), 1);
    assert_eq!(get(&c, "/v1/pets").as_deref(), Some("store.listPets"));
    assert_eq!(
        route(&c, Method::POST, "/v1/pets", &HeaderMap::new()),
        None,
        "createPets is skipped"
    );
}

#[test]
fn hand_written_routes_win_where_they_are_more_specific() {
    let c = load(&format!(
        "{UPSTREAMS}routes:
  - name: mine
    match: {{ path: {{ exact: /v1/pets/mine }} }}
    upstream: admin
  - name: beta
    match:
      path: {{ template: \"/v1/pets/{{id}}\" }}
      methods: [GET]
      headers: [{{ name: x-beta, exact: \"1\" }}]
    upstream: admin
apis:
  - openapi: petstore.yaml
    upstream: pets
"
    ));
    assert_eq!(get(&c, "/v1/pets/mine").as_deref(), Some("mine"));
    assert_eq!(get(&c, "/v1/pets/5").as_deref(), Some("showPetById"));
    let mut beta = HeaderMap::new();
    beta.insert("x-beta", HeaderValue::from_static("1"));
    assert_eq!(
        route(&c, Method::GET, "/v1/pets/5", &beta).map(|(n, _)| n),
        Some("beta")
    );
    // Generated routes come after every hand-written one.
    assert!(by_name(&c, "listPets").index > by_name(&c, "beta").index);
}

const MINI: &str = "openapi: 3.1.0
paths:
  /pets:
    get:
      operationId: listPets
      tags: [pets]
";

#[test]
fn document_errors_are_located_in_the_document() {
    // A `$ref` that points nowhere, and one to another file.
    let errors = doc_errors(
        "openapi: 3.1.0
paths:
  /pets:
    get:
      operationId: listPets
      parameters:
        - $ref: '#/components/parameters/limt'
        - $ref: 'common.yaml#/limit'
components:
  parameters:
    limit: { name: limit, in: query }
",
        "",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        errors[0],
        "doc.yaml:7:17: unresolved $ref `#/components/parameters/limt`"
    );
    assert!(
        errors[1].starts_with("doc.yaml:8:17: `$ref` `common.yaml#/limit`: cannot read `")
            && errors[1].ends_with("/common.yaml`: No such file or directory (os error 2)"),
        "{errors:#?}"
    );
    // The same operationId twice.
    assert_eq!(
        doc_errors(
            "openapi: 3.1.0
paths:
  /pets:
    get: { operationId: pets }
  /dogs:
    get: { operationId: pets }
",
            ""
        ),
        ["doc.yaml:6:25: duplicate operationId `pets`"]
    );
    // Two templates that take the same requests.
    let e = doc_errors(
        "openapi: 3.1.0
paths:
  /pets/{id}:
    get: { operationId: byId }
  /pets/{name}:
    get: { operationId: byName }
    put: { operationId: rename }
",
        "",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "doc.yaml:6:5: operation `byName` takes the same requests as route `byId` at /"
        ) && e[0].ends_with("/doc.yaml:4:5"),
        "{e:?}"
    );
    // A parameter inside a segment.
    let e = doc_errors(
        "openapi: 3.0.0\npaths:\n  /report.{fmt}:\n    get: { operationId: report }\n",
        "",
    );
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "doc.yaml:3:3: `report.{fmt}` in `/report.{fmt}` mixes text and a parameter"
        ),
        "{e:?}"
    );
    assert_eq!(
        doc_errors("swagger: \"2.0\"\npaths: {}\n", ""),
        ["doc.yaml:1:10: Swagger 2.0 documents are not read; Portico reads OpenAPI 3.0 and 3.1"]
    );
    // A server variable without a default, reported once for all the operations under it.
    assert_eq!(
        doc_errors(
            "openapi: 3.1.0\nservers: [{ url: 'https://x/{v}' }]\npaths:\n  /a: { get: {}, put: {} }\n",
            ""
        ),
        ["doc.yaml:2:18: server URL `https://x/{v}` uses `{v}`, which has no default"]
    );
    let e = doc_errors("openapi: 3.1.0\npaths:\n  /pets: {get: {}\n", "");
    assert_eq!(e.len(), 1);
    assert_eq!(
        e,
        ["doc.yaml:3:10: invalid YAML: unclosed bracket '{' at line 3, column 10"]
    );
}

#[test]
fn a_partial_segment_can_be_skipped() {
    let dir = folder(&[(
        "doc.yaml",
        "openapi: 3.0.0\npaths:\n  /report.{fmt}:\n    get: { operationId: report }\n  /pets:\n    get: { operationId: listPets }\n",
    )]);
    let c = load_in(
        &dir,
        &format!(
            "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    operations: {{ report: {{ skip: true }} }}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(get(&c, "/pets").as_deref(), Some("listPets"));
}

const KEY_HASH: &str = "sha256:abababababababababababababababababababababababababababababababab";

/// A consumer with an API key and Basic credentials, for the chains that need one.
fn consumers() -> String {
    format!(
        "consumers:\n  - {{ name: ann, api_keys: [\"{KEY_HASH}\"], basic_auth: {{ password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$0BNiK9JqRCRymRkdpQ5Ldw$ElDBZrbJxTNJIKlZu/VlldW6mAuAuoIk15BEuPiXGt8\" }} }}\n"
    )
}

const JWT: &str = "{ type: jwt, issuers: [{ issuer: https://idp.test, algorithms: [HS256], keys: [{ secret: an-hmac-secret-of-more-than-32-bytes!! }] }] }";

/// The document's schemes, for the security tests; `paths` follows.
const SCHEMES: &str = "components:
  securitySchemes:
    key: { type: apiKey, in: header, name: X-Key }
    qkey: { type: apiKey, in: query, name: token }
    basic: { type: http, scheme: basic }
    bearer: { type: http, scheme: Bearer }
    oauth:
      type: oauth2
      flows: { clientCredentials: { tokenUrl: https://idp.test/token, scopes: { read: r, write: w } } }
    oidc: { type: openIdConnect, openIdConnectUrl: https://idp.test/.well-known/openid-configuration }
    mtls: { type: mutualTLS }
";

/// A document with one operation `op` requiring `security`, its config with `extra` under
/// the API, and the consumers the key and Basic policies need.
fn secured(security: &str, extra: &str) -> (PathBuf, String) {
    let doc = format!(
        "openapi: 3.1.0\n{SCHEMES}paths:\n  /a:\n    get:\n      operationId: op\n      security: {security}\n"
    );
    let dir = folder(&[("doc.yaml", &doc)]);
    let config = format!(
        "{UPSTREAMS}{}apis:\n  - openapi: doc.yaml\n    upstream: pets\n{extra}",
        consumers()
    );
    (dir, config)
}

fn secured_ok(security: &str, extra: &str) -> Vec<String> {
    let (dir, config) = secured(security, extra);
    let c = load_in(&dir, &config).unwrap_or_else(|e| panic!("{e}"));
    chain(by_name(&c, "op"))
}

fn secured_errors(security: &str, extra: &str) -> Vec<String> {
    let (dir, config) = secured(security, extra);
    located(load_in(&dir, &config))
}

fn secured_hints(security: &str, extra: &str) -> Vec<String> {
    let (dir, config) = secured(security, extra);
    hints(load_in(&dir, &config))
}

/// A route's policies in words: each authentication method with its settings, `acl` scopes.
fn chain(r: &portico_config::Route) -> Vec<String> {
    use portico_config::{AuthMethod, Policy};
    r.policies
        .iter()
        .map(|p| match p {
            Policy::Auth(a) => {
                let methods: Vec<String> = a
                    .methods
                    .iter()
                    .map(|m| match m {
                        AuthMethod::ApiKey(k) => {
                            format!("api_key({}, {:?})", k.header, k.query)
                        }
                        AuthMethod::Basic(_) => "basic".into(),
                        AuthMethod::Jwt(j) => format!("jwt({})", j.issuers.len()),
                        AuthMethod::ClientCert(_) => "client_cert".into(),
                        AuthMethod::Introspection(i) => format!("introspection({})", i.url),
                    })
                    .collect();
                methods.join(" | ")
            }
            Policy::Acl(a) => format!("acl{:?}", a.scopes),
            Policy::RateLimit(_) => "rate_limit".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn api_keys_and_basic_come_from_the_document() {
    assert_eq!(secured_ok("[{ key: [] }]", ""), ["api_key(x-key, None)"]);
    assert_eq!(
        secured_ok("[{ qkey: [] }]", ""),
        ["api_key(x-api-key, Some(\"token\"))"]
    );
    // A config entry refines the derived policy; the document's name fills what it leaves out.
    assert_eq!(
        secured_ok(
            "[{ key: [] }]",
            "    security:\n      key: { type: api_key, query: k }\n"
        ),
        ["api_key(x-key, Some(\"k\"))"]
    );
    assert_eq!(secured_ok("[{ basic: [] }]", ""), ["basic"]);
    assert_eq!(secured_ok("[{ mtls: [] }]", ""), ["client_cert"]);
    // The security-derived policies come before the API's own.
    assert_eq!(
        secured_ok(
            "[{ basic: [] }]",
            "    policies: [{ type: rate_limit, key: consumer, limits: [{ requests: 5, per: 1s }] }]\n"
        ),
        ["basic", "rate_limit"]
    );
}

#[test]
fn tokens_are_checked_by_the_configs_policy_and_scopes_by_an_acl() {
    let jwt = format!("    security:\n      bearer: {JWT}\n      oauth: {JWT}\n");
    assert_eq!(secured_ok("[{ bearer: [] }]", &jwt), ["jwt(1)"]);
    assert_eq!(
        secured_ok("[{ oauth: [read, write] }]", &jwt),
        ["jwt(1)", "acl[\"read\", \"write\"]"]
    );
    assert_eq!(
        secured_ok(
            "[{ oidc: [read] }]",
            "    security:\n      oidc: { type: introspection, url: https://idp.test/introspect, client_id: gw, client_secret: s }\n"
        ),
        [
            "introspection(https://idp.test/introspect)",
            "acl[\"read\"]"
        ]
    );
}

#[test]
fn requirements_combine_with_and_and_or() {
    let jwt = format!("    security:\n      bearer: {JWT}\n      oauth: {JWT}\n");
    // One requirement of several schemes: all of them, and one acl with every scope.
    assert_eq!(
        secured_ok("[{ key: [], oauth: [read], bearer: [write, read] }]", &jwt),
        [
            "api_key(x-key, None)",
            "jwt(1)",
            "jwt(1)",
            "acl[\"read\", \"write\"]"
        ]
    );
    // Several requirements: any one of them, then the scopes they share.
    assert_eq!(
        secured_ok("[{ key: [] }, { basic: [] }]", &jwt),
        ["api_key(x-key, None) | basic"]
    );
    assert_eq!(
        secured_ok("[{ oauth: [read] }, { bearer: [read] }]", &jwt),
        ["jwt(1) | jwt(1)", "acl[\"read\"]"]
    );
    // `security: []` asks for nothing, and `enforce_security: false` opts out.
    assert_eq!(secured_ok("[]", ""), Vec::<String>::new());
    assert_eq!(
        secured_ok(
            "[{ oauth: [read] }]",
            "    operations: { op: { enforce_security: false, policies: [{ type: api_key }] } }\n"
        ),
        ["api_key(x-api-key, None)"]
    );
}

#[test]
fn unenforceable_requirements_are_located_in_the_document() {
    let doc_with = |scheme: &str, security: &str| {
        doc_errors(
            &format!(
                "openapi: 3.1.0\ncomponents:\n  securitySchemes:\n    s:\n{scheme}paths:\n  /a:\n    get:\n      operationId: op\n      security: {security}\n"
            ),
            "",
        )
    };
    assert_eq!(
        doc_with(
            "      type: apiKey\n      in: cookie\n      name: sid\n",
            "[{ s: [] }]"
        ),
        ["doc.yaml:6:11: API keys in a cookie are not enforced by the gateway"]
    );
    assert_eq!(
        doc_with("      type: http\n      scheme: digest\n", "[{ s: [] }]"),
        ["doc.yaml:6:15: HTTP authentication scheme `digest` is not enforced by the gateway"]
    );
    // The problem of a scheme shared through the document's `security` is told once.
    let e = doc_errors(
        "openapi: 3.1.0\nsecurity: [{ s: [] }]\ncomponents:\n  securitySchemes:\n    s: { type: http, scheme: hoba }\npaths:\n  /a:\n    get: { operationId: a }\n  /b:\n    get: { operationId: b }\n",
        "",
    );
    assert_eq!(
        e,
        ["doc.yaml:5:30: HTTP authentication scheme `hoba` is not enforced by the gateway"]
    );

    let jwt = format!("    security:\n      oauth: {JWT}\n      bearer: {JWT}\n");
    // The operation's `security` is on line 17, its value from column 17.
    assert_eq!(
        secured_errors("[{ oauth: [] }, {}]", &jwt),
        [
            "doc.yaml:17:33: an empty requirement `{}` makes authentication optional, which the gateway does not enforce"
        ]
    );
    assert!(secured_hints("[{ oauth: [] }, {}]", &jwt)[0].contains("`enforce_security: false`"));
    assert_eq!(
        secured_errors("[{ oauth: [read] }, { bearer: [write] }]", &jwt),
        ["doc.yaml:17:37: the alternatives ask for different scopes ([read] and [write])"]
    );
    assert_eq!(
        secured_errors("[{ key: [admin] }]", ""),
        ["doc.yaml:17:25: security scheme `key` is given scopes, and its credentials carry none"]
    );
    assert_eq!(
        secured_errors("[{ kye: [] }]", ""),
        [
            "doc.yaml:17:20: security scheme `kye` is not declared under `components.securitySchemes`"
        ]
    );
    assert_eq!(secured_hints("[{ kye: [] }]", ""), ["did you mean `key`?"]);
    assert_eq!(
        secured_errors("[{ key: [], basic: [] }, { oauth: [] }]", &jwt),
        [
            "doc.yaml:17:18: an alternative that requires several schemes at once cannot be one of several alternatives"
        ]
    );
    // A token scheme without its policy in the config: the hint gives the YAML to add.
    assert_eq!(
        secured_errors("[{ oauth: [read] }]", ""),
        [
            "doc.yaml:17:20: security scheme `oauth` (oauth2) needs a `jwt` or `introspection` policy under `security:` of API `api-1` in the config"
        ]
    );
    let hint = &secured_hints("[{ oauth: [read] }]", "")[0];
    assert!(
        hint.contains("`security: { oauth: { type: jwt, issuers: [")
            && hint.contains("https://idp.test/token"),
        "{hint}"
    );
    assert!(
        secured_hints("[{ oidc: [] }]", "")[0]
            .contains("https://idp.test/.well-known/openid-configuration")
    );
    assert_eq!(
        secured_errors("[{ bearer: [] }]", "").len(),
        1,
        "http bearer needs an entry too"
    );
}

#[test]
fn security_entries_of_the_config_are_checked_at_their_key() {
    // The config's `security:` entries are on line 10 (after the upstreams, the consumer and
    // the API's first keys).
    assert_eq!(
        secured_errors(
            "[{ key: [] }]",
            "    security:\n      bearr: { type: api_key }\n"
        ),
        ["portico.yaml:10:7: the document has no security scheme `bearr`"]
    );
    assert_eq!(
        secured_hints(
            "[{ key: [] }]",
            "    security:\n      bearr: { type: api_key }\n"
        ),
        ["did you mean `bearer`?"]
    );
    assert_eq!(
        secured_errors(
            "[{ bearer: [] }]",
            "    security:\n      bearer: { type: api_key }\n"
        ),
        [
            "portico.yaml:10:7: security scheme `bearer` cannot be enforced by a policy of type `api_key`"
        ]
    );
    assert_eq!(
        secured_hints(
            "[{ bearer: [] }]",
            "    security:\n      bearer: { type: api_key }\n"
        ),
        ["give it a policy of type `jwt` or `introspection`"]
    );
    // An error inside the entry is located in the config too.
    let e = secured_errors(
        "[{ bearer: [] }]",
        "    security:\n      bearer: { type: jwt, issuers: [] }\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("portico.yaml:10:"), "{e:?}");
}

#[test]
fn config_errors_are_located_in_the_config() {
    // Names under `operations:` and `tags:` that the document does not have.
    let dir = folder(&[("doc.yaml", MINI)]);
    let config = format!(
        "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    operations: {{ listPet: {{ timeout: 1s }} }}\n    tags: {{ pet: {{ timeout: 1s }} }}\n"
    );
    assert_eq!(
        located(load_in(&dir, &config)),
        [
            "portico.yaml:7:19: the document has no operationId `listPet`",
            "portico.yaml:8:13: the document has no tag `pet`",
        ]
    );
    assert_eq!(
        hints(load_in(&dir, &config)),
        ["did you mean `listPets`?", "did you mean `pets`?"]
    );
    // A document that is not there.
    let e = located(load_in(
        &dir,
        &format!("{UPSTREAMS}apis:\n  - openapi: nope.yaml\n    upstream: pets\n"),
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("portico.yaml:5:14: cannot read `") && e[0].contains("nope.yaml"),
        "{e:?}"
    );
    // No upstream for an operation.
    let e = located(load_in(
        &dir,
        &format!("{UPSTREAMS}apis:\n  - openapi: doc.yaml\n"),
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("portico.yaml:5:5: operation `listPets` of API `api-1` (")
            && e[0].ends_with("doc.yaml:4:5) has no upstream"),
        "{e:?}"
    );
    // An upstream that does not exist, reported where the config names it.
    assert_eq!(
        located(load_in(
            &dir,
            &format!("{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pet\n")
        )),
        ["portico.yaml:6:15: unknown upstream `pet`"]
    );
    // A policy of the API, reported at its key in the config.
    assert_eq!(
        located(load_in(
            &dir,
            &format!(
                "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    policies: [{{ type: cors, max_age: 1 }}]\n"
            )
        )),
        ["portico.yaml:7:39: invalid duration `1`"]
    );
    assert_eq!(
        located(load_in(
            &dir,
            &format!(
                "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    base_path: /v1/\n"
            )
        )),
        ["portico.yaml:7:16: `base_path` `/v1/` ends with `/`"]
    );
    assert_eq!(
        located(load_in(
            &dir,
            &format!(
                "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    securty: {{}}\n"
            )
        )),
        ["portico.yaml:7:5: unknown key `securty`"]
    );
}

#[test]
fn tags_that_disagree_are_reported_at_both() {
    let dir = folder(&[(
        "doc.yaml",
        "openapi: 3.1.0\npaths:\n  /a:\n    get: { operationId: a, tags: [one, two] }\n    put: { operationId: b, tags: [one, two] }\n",
    )]);
    let config = format!(
        "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    tags:\n      one: {{ timeout: 1s }}\n      two: {{ timeout: 2s }}\n"
    );
    let e = located(load_in(&dir, &config));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("portico.yaml:8:12: tags `one` and `two` of operation `a`"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("portico.yaml:9:12: tags `one` and `two` of operation `a`"),
        "{e:?}"
    );
    // The operation's own setting decides.
    let c = load_in(
        &dir,
        &format!("{config}    operations: {{ a: {{ timeout: 3s }}, b: {{ timeout: 3s }} }}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        by_name(&c, "a").timeout,
        Some(std::time::Duration::from_secs(3))
    );
}

#[test]
fn route_names_must_not_clash() {
    let dir = folder(&[("doc.yaml", MINI), ("other.yaml", MINI)]);
    let e = located(load_in(
        &dir,
        &format!(
            "{UPSTREAMS}routes:\n  - {{ name: listPets, upstream: pets, match: {{ path: {{ exact: /x }} }} }}\napis:\n  - openapi: doc.yaml\n    upstream: pets\n"
        ),
    ));
    assert_eq!(
        e,
        [
            "doc.yaml:5:20: route name `listPets` is already taken, by the route at portico.yaml:5:13"
        ]
    );
    let e = located(load_in(
        &dir,
        &format!(
            "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n  - openapi: other.yaml\n    upstream: pets\n    name_prefix: other.\n    base_path: /other\n  - openapi: other.yaml\n    upstream: pets\n    base_path: /third\n"
        ),
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "other.yaml:5:20: route name `listPets` is already taken, by the route at "
        ) && e[0].ends_with("doc.yaml:4:5"),
        "{e:?}"
    );
}

#[test]
fn a_conflict_with_a_hand_written_route_is_reported_in_the_document() {
    let dir = folder(&[("doc.yaml", MINI)]);
    let e = located(load_in(
        &dir,
        &format!(
            "{UPSTREAMS}routes:\n  - name: old\n    match: {{ path: {{ exact: /pets }}, methods: [GET, POST] }}\n    upstream: pets\napis:\n  - openapi: doc.yaml\n    upstream: pets\n"
        ),
    ));
    assert_eq!(
        e,
        [
            "doc.yaml:4:5: operation `listPets` takes the same requests as route `old` at portico.yaml:5:5"
        ]
    );
}

#[test]
fn config_errors_come_before_document_errors() {
    let dir = folder(&[(
        "doc.yaml",
        "openapi: 3.1.0\npaths:\n  /a:\n    get: { operationId: a }\n    put: { operationId: a }\n",
    )]);
    let e = located(load_in(
        &dir,
        &format!(
            "apis:\n  - openapi: doc.yaml\n    upstream: pets\n{UPSTREAMS}  bad: {{ targets: [nope] }}\n"
        ),
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("portico.yaml:7:"), "{e:?}");
    assert_eq!(e[1], "doc.yaml:5:25: duplicate operationId `a`");
}

fn respond(r: &portico_config::Route) -> (u16, String, String) {
    match &r.action {
        Action::Respond(s) => (
            s.status.as_u16(),
            String::from_utf8(s.body.to_vec()).unwrap(),
            s.headers
                .iter()
                .find(|(k, _)| k == http::header::CONTENT_TYPE)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
        ),
        other => panic!("not a mock: {other:?}"),
    }
}

#[test]
fn mocks_answer_with_the_documents_examples() {
    let c = load("apis:\n  - openapi: petstore.yaml\n    mock: true\n");
    let pet = r#"{"id":1,"name":"Rex","tag":"dog"}"#;
    assert_eq!(
        respond(by_name(&c, "listPets")),
        (200, format!("[{pet}]"), "application/json".into())
    );
    assert_eq!(
        respond(by_name(&c, "createPets")),
        (
            201,
            r#"{"id":2,"name":"Tom"}"#.into(),
            "application/json".into()
        )
    );
    // Through the response's `$ref`.
    assert_eq!(
        respond(by_name(&c, "showPetById")),
        (200, pet.into(), "application/json".into())
    );
    assert_eq!(respond(by_name(&c, "deletePet")).0, 204);
    assert_eq!(respond(by_name(&c, "deletePet")).1, "");
    assert_eq!(
        respond(by_name(&c, "GET /v1/health")),
        (200, "ok".into(), "text/plain".into())
    );
    // Per operation: one mocked, the others proxied; `mock: false` turns the API's off.
    let c = load(&format!(
        "{UPSTREAMS}apis:\n  - openapi: petstore.yaml\n    upstream: pets\n    operations:\n      createPets: {{ mock: {{ status: 201, example: created, media_type: application/json }} }}\n"
    ));
    assert_eq!(respond(by_name(&c, "createPets")).0, 201);
    assert_eq!(upstream_name(&c, by_name(&c, "listPets")), "pets");
    let c = load(&format!(
        "{UPSTREAMS}apis:\n  - openapi: petstore.yaml\n    upstream: pets\n    mock: true\n    operations: {{ listPets: {{ mock: false }} }}\n"
    ));
    assert_eq!(upstream_name(&c, by_name(&c, "listPets")), "pets");
    assert_eq!(respond(by_name(&c, "showPetById")).0, 200);
}

#[test]
fn mock_settings_that_the_document_lacks_are_config_errors() {
    let r = |ops: &str| {
        load_in(
            &fixtures(),
            &format!(
                "apis:\n  - openapi: petstore.yaml\n    mock: true\n    operations:\n      {ops}\n"
            ),
        )
    };
    assert_eq!(
        located(r("createPets: { mock: { status: 200 } }")),
        [
            "portico.yaml:5:37: mock: the operation's `responses` have no `200` (operation `createPets`)"
        ]
    );
    assert_eq!(
        hints(r("createPets: { mock: { status: 200 } }")),
        ["it has: 201"]
    );
    assert_eq!(
        located(r("createPets: { mock: { example: craeted } }")),
        [
            "portico.yaml:5:38: mock: `application/json` of the `201` response has no example `craeted` (operation `createPets`)"
        ]
    );
    assert_eq!(
        hints(r("createPets: { mock: { example: craeted } }")),
        ["did you mean `created`?"]
    );
    assert_eq!(
        located(r("createPets: { mock: { media_type: text/xml } }")),
        [
            "portico.yaml:5:41: mock: the `201` response has no `text/xml` content (operation `createPets`)"
        ]
    );
}

#[test]
fn mocks_without_an_example_are_document_errors() {
    let e = doc_errors(
        "openapi: 3.1.0
paths:
  /a:
    get:
      operationId: a
      responses:
        '200':
          description: no example, and a schema no value can be made for
          content:
            application/json:
              schema: { type: string, pattern: '^x' }
  /b:
    get:
      operationId: b
      responses:
        '200':
          description: only a URL
          content:
            application/json:
              examples:
                far: { externalValue: 'https://example.com/b.json' }
  /c:
    get:
      operationId: c
      responses:
        '200':
          description: text
          content:
            text/plain:
              example: { not: text }
  /d:
    get:
      operationId: d
      responses:
        '404': { description: missing }
",
        "    mock: true\n",
    );
    assert_eq!(
        e,
        [
            "doc.yaml:11:23: mock: no example for 200 application/json, and no value can be made from its schema: it has a `pattern`",
            "doc.yaml:21:17: mock: the example `far` has only an `externalValue`, which is not fetched",
            "doc.yaml:30:24: mock: the example for 200 text/plain is a mapping, and only JSON media types take structured examples",
            "doc.yaml:35:9: mock: the operation has no 2xx, `2XX` or `default` response to answer with",
        ]
    );
}

#[test]
fn a_misspelt_mock_key_is_a_config_error() {
    let r = || {
        load_in(
            &fixtures(),
            "apis:\n  - openapi: petstore.yaml\n    mock: { statu: 201 }\n",
        )
    };
    assert_eq!(located(r()), ["portico.yaml:3:13: unknown key `statu`"]);
    assert_eq!(hints(r()), ["did you mean `status`?"]);
    let e = located(load_in(
        &fixtures(),
        "apis:\n  - openapi: petstore.yaml\n    mock: yes please\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("portico.yaml:3:11: "), "{e:?}");
}

#[test]
fn schemas_the_validator_cannot_enforce_are_located_in_the_document() {
    let doc = "openapi: 3.1.0
paths:
  /pets:
    post:
      operationId: addPet
      requestBody:
        content:
          application/json:
            schema: { $ref: '#/components/schemas/Pet' }
    put:
      operationId: putPet
      requestBody:
        content:
          application/json:
            schema: { $ref: '#/components/schemas/Pet' }
components:
  schemas:
    Pet:
      type: object
      unevaluatedProperties: false
      properties:
        name: { type: string, pattern: '^(?!admin)' }
        age: { type: integr, minimum: 0 }
        tags: { type: array, minItems: -1 }
";
    let errors = doc_errors(doc, "");
    // Each problem once, though two operations use the schema.
    assert_eq!(
        errors,
        [
            "doc.yaml:20:30: `unevaluatedProperties` is not supported by the request validator (at #/components/schemas/Pet/unevaluatedProperties)",
            "doc.yaml:22:40: the pattern `^(?!admin)` cannot be compiled: error: look-around, including look-ahead and look-behind, is not supported (at #/components/schemas/Pet/properties/name/pattern)",
            "doc.yaml:23:22: `integr` is not a JSON Schema type (at #/components/schemas/Pet/properties/age/type)",
            "doc.yaml:24:40: `minItems` must be a non-negative integer (at #/components/schemas/Pet/properties/tags/minItems)",
        ],
        "{errors:#?}"
    );
    // The way out: no validation for the operations that use it.
    let dir = folder(&[("doc.yaml", doc)]);
    let config = format!(
        "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    validate_requests: false\n"
    );
    let c = load_in(&dir, &config).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.routes.iter().all(|r| r.contract.is_none()));
}

#[test]
fn validation_settings_are_checked_and_apply_per_operation() {
    let doc = "openapi: 3.0.3
paths:
  /pets:
    get:
      operationId: listPets
      tags: [read]
      parameters:
        - { name: limit, in: query, style: matrix, schema: { type: integer } }
    post:
      operationId: addPet
      requestBody: { content: { application/x-www-form-urlencoded: { encoding: { ids: { style: matrix, explode: false } } } } }
";
    let errors = doc_errors(
        doc,
        "    validation_limits: { max_depth: 0, max_errors: 101, max_body_bytes: 0 }\n",
    );
    assert_eq!(
        errors,
        [
            "portico.yaml:7:37: `max_depth` must be from 1 to 100, not 0",
            "portico.yaml:7:52: `max_errors` must be from 1 to 100, not 101",
            "portico.yaml:7:73: `max_body_bytes` must be at least 1",
            "doc.yaml:8:44: `matrix` is not a style of query parameters (at #/paths/~1pets/get/parameters/0/style)",
            "doc.yaml:11:96: `matrix` is not a style of a form body's fields (at #/paths/~1pets/post/requestBody/content/application~1x-www-form-urlencoded/encoding/ids/style)",
        ],
        "{errors:#?}"
    );
    // Off by tag, on for the rest.
    let fixed = doc.replace("style: matrix, ", "");
    let dir = folder(&[("doc.yaml", &fixed)]);
    let config = format!(
        "{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n    tags:\n      read: {{ validate_requests: false }}\n"
    );
    let c = load_in(&dir, &config).unwrap_or_else(|e| panic!("{e}"));
    let by = |n: &str| c.routes.iter().find(|r| &*r.name == n).unwrap();
    assert!(by("listPets").contract.is_none());
    assert!(by("addPet").contract.is_some());
}

/// Documents published in packages (portico-testkit/openapi/real, with their sources and
/// licences): every operation becomes a route whose requests are checked.
#[test]
fn published_documents_load_with_every_operation_checked() {
    let real = fixtures().join("real");
    for (file, operations) in [
        ("openapi-core-petstore-3.0.0.yaml", 8),
        ("scalar-galaxy-3.1.1.json", 10),
        ("readme-api-v1-legacy-3.0.2.json", 36),
        ("readme-api-v2-3.1.0.json", 54),
    ] {
        let config = format!(
            "{UPSTREAMS}apis:\n  - openapi: \"{file}\"\n    upstream: pets\n    enforce_security: false\n"
        );
        let c = match load_in(&real, &config) {
            Ok(c) => c,
            Err(e) => panic!("{file}: {e}"),
        };
        let checked = c.routes.iter().filter(|r| r.contract.is_some()).count();
        assert_eq!(checked, operations, "{file}");
    }
}

#[test]
fn response_checks_are_checked_when_the_config_loads() {
    let doc = "openapi: 3.1.0
paths:
  /pets:
    get:
      operationId: listPets
      responses:
        '2XY': { description: nothing }
        '200':
          description: the pets
          content:
            application/json:
              schema: { type: array, items: { type: strin } }
";
    let errors = doc_errors(doc, "    check_responses: { sample: 2, enforce: true }\n");
    assert_eq!(
        errors,
        ["portico.yaml:7:32: `sample` must be from 0 to 1, not 2"],
        "{errors:#?}"
    );
    let errors = doc_errors(doc, "    check_responses: { enforce: true, sampel: 1 }\n");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("unknown key `sampel`"), "{errors:#?}");
    // The document's problems, once the settings are right.
    let errors = doc_errors(
        doc,
        "    validate_requests: false\n    check_responses: true\n",
    );
    assert_eq!(
        errors,
        [
            "doc.yaml:7:16: `2XY` is not a response status (at #/paths/~1pets/get/responses/2XY)",
            "doc.yaml:12:53: `strin` is not a JSON Schema type (at #/paths/~1pets/get/responses/200/content/application~1json/schema/items/type)",
        ],
        "{errors:#?}"
    );
}

#[test]
fn mocks_without_an_example_answer_the_smallest_value_of_their_schema() {
    let doc = "openapi: 3.1.0
paths:
  /order:
    get:
      operationId: order
      responses:
        '200':
          description: an order, made from its schema
          content:
            application/json:
              schema: { $ref: '#/components/schemas/Order' }
components:
  schemas:
    Order:
      type: object
      required: [id, placed, state, lines, customer, total, note]
      properties:
        id: { type: integer, exclusiveMinimum: 10 }
        placed: { type: string, format: date-time }
        state: { enum: [open, shipped] }
        lines: { type: array, minItems: 2, items: { $ref: '#/components/schemas/Line' } }
        customer: { allOf: [{ $ref: '#/components/schemas/Named' }, { required: [email], properties: { email: { type: string, format: email } } }] }
        total: { type: number, minimum: 0.5, multipleOf: 0.25 }
        note: { type: [string, 'null'], minLength: 3 }
        ignored: { type: string }
    Line:
      type: object
      required: [sku, qty]
      properties:
        sku: { type: string, default: ABC-1 }
        qty: { type: integer, minimum: 1 }
    Named:
      type: object
      required: [name]
      properties: { name: { type: string, minLength: 1 } }
";
    let dir = folder(&[("doc.yaml", doc)]);
    let c = load_in(
        &dir,
        &format!("{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    mock: true\n    validate_requests: false\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let route = c.routes.iter().find(|r| &*r.name == "order").unwrap();
    let (status, body, ct) = respond(route);
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "id": 11, "placed": "2024-01-01T00:00:00Z", "state": "open",
            "lines": [{"sku": "ABC-1", "qty": 1}, {"sku": "ABC-1", "qty": 1}],
            "customer": {"name": "x", "email": "user@example.com"},
            "total": 0.5, "note": "xxx"
        })
    );
    // What was made is what the schema takes.
    let root: serde_json::Value =
        serde_json::to_value(serde_saphyr::from_str::<serde_json::Value>(doc).unwrap()).unwrap();
    let mut compiler = portico_contract::Compiler::new(&root, portico_contract::Dialect::Oas31);
    let id = compiler.schema("/components/schemas/Order");
    let (schemas, errors) = compiler.finish();
    assert!(errors.is_empty(), "{errors:?}");
    let failures = portico_contract::validate_json(
        &schemas,
        id,
        body.as_bytes(),
        &mut portico_contract::Scratch::default(),
        64,
        20,
        portico_contract::Direction::Response,
    )
    .unwrap();
    assert_eq!(failures, []);
}

/// `portico-testkit/openapi/split`: path items, parameters, responses and schemas in other
/// files, referring back to the root and to each other, and to themselves.
#[test]
fn a_document_split_across_files_loads_as_one() {
    let split = fixtures().join("split");
    let c = load_in(
        &split,
        &format!("{UPSTREAMS}apis:\n  - {{ name: shop, openapi: openapi.yaml, upstream: pets }}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let place = by_name(&c, "placeOrder");
    let get_order = by_name(&c, "getOrder");
    assert!(place.contract.as_ref().unwrap().request.is_some());
    assert!(get_order.contract.as_ref().unwrap().request.is_some());
    assert_eq!(get(&c, "/shop/orders/o-1").as_deref(), Some("getOrder"));
    // Every file is followed for reloads, each once (`order.yaml` is named three ways).
    let mut names: Vec<String> = c
        .documents
        .iter()
        .map(|p| {
            let p = p.canonicalize().unwrap();
            p.strip_prefix(split.canonicalize().unwrap())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "openapi.yaml",
            "parameters.yaml",
            "paths/orders.yaml",
            "schemas/customer.yaml",
            "schemas/order.yaml",
            "schemas/problem.json"
        ],
        "{:?}",
        c.documents
    );
    // The operation is described from the file that holds it; the description's references
    // all resolve.
    let doc = portico_config::describe::openapi(&c);
    let post = &doc["paths"]["/shop/orders"]["post"];
    assert_eq!(post["operationId"], "placeOrder");
    let schema_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    assert!(
        schema_ref.starts_with("#/x-portico-bundled/shop/"),
        "{schema_ref}"
    );
    let order = doc.pointer(&schema_ref[1..]).unwrap();
    assert_eq!(order["required"], serde_json::json!(["id", "lines"]));
    let mut dangling = Vec::new();
    fn walk(root: &serde_json::Value, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| match (k.as_str(), v) {
                ("$ref", serde_json::Value::String(r))
                    if !r.starts_with('#') || root.pointer(&r[1..]).is_none() =>
                {
                    out.push(r.clone())
                }
                _ => walk(root, v, out),
            }),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(root, v, out)),
            _ => {}
        }
    }
    walk(&doc, &doc, &mut dangling);
    assert_eq!(dangling, Vec::<String>::new());
}

#[test]
fn problems_in_referred_files_are_located_in_those_files() {
    let root = "openapi: 3.1.0
paths:
  /a:
    $ref: a.yaml
  /b:
    post:
      operationId: b
      requestBody:
        content:
          application/json:
            schema: { $ref: 'schemas.yaml#/Thing' }
";
    let a = "get:
  operationId: a
  parameters:
    - $ref: missing.yaml#/P
    - $ref: 'schemas.yaml#Anchor'
    - $ref: 'file:///etc/passwd'
";
    let schemas = "Thing:
  type: object
  properties:
    n: { type: integr }
    m: { $ref: '#/Nowhere' }
    k: { $ref: broken.yaml }
";
    let broken = "type: [object\n";
    let dir = folder(&[
        ("doc.yaml", root),
        ("a.yaml", a),
        ("schemas.yaml", schemas),
        ("broken.yaml", broken),
    ]);
    let config = format!("{UPSTREAMS}apis:\n  - openapi: doc.yaml\n    upstream: pets\n");
    let errors = located(load_in(&dir, &config));
    let missing = dir.join("missing.yaml");
    assert_eq!(
        errors,
        [
            format!(
                "a.yaml:4:13: `$ref` `missing.yaml#/P`: cannot read `{}`: No such file or directory (os error 2)",
                missing.display()
            ),
            format!(
                "a.yaml:5:13: `$ref` `schemas.yaml#Anchor`: no schema of `{}` has `$anchor: Anchor`",
                std::fs::canonicalize(dir.join("schemas.yaml")).unwrap().display()
            ),
            "a.yaml:6:13: `$ref` `file:///etc/passwd`: only relative paths, absolute paths and http(s) URLs are read".into(),
            // Reported once every document is read: the name might have been an `$id`.
            "broken.yaml:1:7: invalid YAML: unclosed bracket '[' at line 1, column 7".into(),
            // What did read is checked all the same.
            "schemas.yaml:5:16: unresolved $ref `#/Nowhere`".into(),
            "schemas.yaml:6:16: `$ref` `broken.yaml` names another document, which was not read".into(),
        ],
        "{errors:#?}"
    );
    // Once every file reads, what is wrong inside them is found, each in its own file.
    std::fs::write(dir.join("a.yaml"), "get: { operationId: a }\n").unwrap();
    std::fs::write(dir.join("broken.yaml"), "type: object\n").unwrap();
    let errors = located(load_in(&dir, &config));
    assert_eq!(
        errors,
        ["schemas.yaml:5:16: unresolved $ref `#/Nowhere`"],
        "{errors:#?}"
    );
    std::fs::write(
        dir.join("schemas.yaml"),
        schemas.replace("#/Nowhere", "#/Thing"),
    )
    .unwrap();
    let errors = located(load_in(&dir, &config));
    assert_eq!(
        errors,
        ["schemas.yaml:4:16: `integr` is not a JSON Schema type (at #/Thing/properties/n/type)"],
        "{errors:#?}"
    );
}

/// `explain` names a route's operation, how its contract is held, and what this request's
/// head gets from it.
#[test]
fn explain_shows_the_contract_and_checks_the_head() {
    let c = load(&format!(
        "{UPSTREAMS}apis:\n  - {{ name: orders, openapi: orders.yaml, upstream: pets, enforce_security: false, check_responses: {{ sample: 0.5 }} }}\n"
    ));
    let explain = |uri: &str| {
        portico_config::explain::explain(
            &c,
            &portico_config::explain::Request {
                listener: None,
                method: Method::GET,
                uri: uri.parse().unwrap(),
                headers: HeaderMap::new(),
            },
        )
    };
    let v = explain("/orders?limit=0&status=open,lost");
    let contract = &v["contract"];
    assert_eq!(contract["operation"]["api"], "orders");
    assert_eq!(contract["operation"]["pointer"], "#/paths/~1orders/get");
    assert_eq!(contract["check_responses"]["sample"], 0.5);
    let head = &contract["validate_requests"]["this_request"];
    assert_eq!(head["refused"], 400, "{v:#}");
    let failures: Vec<(&str, &str)> = head["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["in"].as_str().unwrap(), f["keyword"].as_str().unwrap()))
        .collect();
    assert_eq!(failures, [("query", "minimum"), ("query", "enum")]);
    let text = portico_config::explain::text(&v);
    assert!(
        text.contains("contract  requests checked; this head is refused with 400"),
        "{text}"
    );
    assert!(
        text.contains("contract  answers checked (sample 0.5, counted and logged)"),
        "{text}"
    );
    let ok = explain("/orders?limit=5");
    assert_eq!(
        ok["contract"]["validate_requests"]["this_request"],
        "passes; no body is checked"
    );
}

/// `explain` says how the body a request announces will be checked: JSON, form or
/// multipart, and a multipart type without its boundary is refused at the head.
#[test]
fn explain_says_how_each_kind_of_body_is_checked() {
    let doc = "openapi: 3.1.0\npaths:\n  /things:\n    post:\n      requestBody:\n        content:\n          application/json: { schema: { type: object } }\n          application/x-www-form-urlencoded: { schema: { type: object } }\n          multipart/form-data: { schema: { type: object } }\n      responses: { '200': { description: ok } }\n";
    let dir = folder(&[("doc.yaml", doc)]);
    let c = load_in(
        &dir,
        &format!("{UPSTREAMS}apis:\n  - {{ openapi: doc.yaml, upstream: pets }}\n"),
    )
    .expect("the config loads");
    let head = |content_type: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", content_type.parse().unwrap());
        let v = portico_config::explain::explain(
            &c,
            &portico_config::explain::Request {
                listener: None,
                method: Method::POST,
                uri: "/things".parse().unwrap(),
                headers,
            },
        );
        v["contract"]["validate_requests"]["this_request"].clone()
    };
    assert_eq!(
        head("application/json"),
        "passes; the JSON body is checked against its schema"
    );
    assert_eq!(
        head("application/x-www-form-urlencoded"),
        "passes; the form body is checked against its schema"
    );
    assert_eq!(
        head("multipart/form-data; boundary=x"),
        "passes; the multipart body's parts are checked against its schema"
    );
    let refused = head("multipart/form-data");
    assert_eq!(refused["refused"], 400, "{refused:#}");
    assert_eq!(
        refused["failures"][0]["keyword"], "multipart",
        "{refused:#}"
    );
}

/// The failures (pointer, keyword) of a JSON body sent to the route's operation.
fn body_failures(c: &Config, route: &str, body: &str) -> Vec<(String, &'static str)> {
    let rc = by_name(c, route)
        .contract
        .as_ref()
        .and_then(|c| c.request.as_ref())
        .expect("the route checks requests");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let parts = portico_contract::RequestParts {
        path: &[],
        query: None,
        headers: &headers,
    };
    let mut s = portico_contract::Scratch::default();
    let mut f = Vec::new();
    match rc.check_head(&parts, true, &mut s, &mut f) {
        Ok(portico_contract::BodyPlan::Check(b)) => {
            let _ = rc.check_body(b, body.as_bytes(), &mut s, &mut f);
        }
        other => panic!("{other:?} {f:?}"),
    }
    f.into_iter().map(|f| (f.pointer, f.keyword)).collect()
}

/// In OpenAPI 3.1, schemas are found by `$id` (absolute, or relative to the document or the
/// schema around it) and by `$anchor` within their resource, as JSON Schema 2020-12 says.
#[test]
fn references_by_id_and_anchor_find_their_schemas() {
    // `3.1` unquoted, a number to YAML, is OpenAPI 3.1 all the same.
    let doc = "openapi: 3.1
paths:
  /orders:
    post:
      operationId: create
      requestBody: { content: { application/json: { schema: { $ref: 'https://example.com/schemas/order' } } } }
  /lines:
    post:
      operationId: line
      requestBody: { content: { application/json: { schema: { $ref: 'https://example.com/schemas/order#line' } } } }
  /notes:
    post:
      operationId: note
      requestBody: { content: { application/json: { schema: { $ref: '#note' } } } }
  /money:
    post:
      operationId: money
      requestBody: { content: { application/json: { schema: { $ref: 'types/money' } } } }
  /pets:
    post:
      operationId: pet
      requestBody: { content: { application/json: { schema: { $ref: 'pet.yaml#petName' } } } }
  /dogs:
    post:
      operationId: dog
      requestBody: { content: { application/json: { schema: { $ref: 'dog.yaml#Dog' } } } }
  /codes:
    post:
      operationId: code
      requestBody: { content: { application/json: { schema: { $ref: '#code' } } } }
  /offers:
    post:
      operationId: offer
      requestBody: { content: { application/json: { schema: { $ref: 'urn:example:offer' } } } }
components:
  schemas:
    # Names that are not plain in a pointer: an integer to YAML, and one with `%` and `/`.
    200: { $anchor: code, type: integer, maximum: 299 }
    50%/off: { $id: 'urn:example:offer', type: string, maxLength: 2 }
    Order:
      $id: https://example.com/schemas/order
      type: object
      required: [lines]
      properties:
        lines: { type: array, items: { $ref: '#line' } }
        total: { $ref: money }
      $defs:
        line:
          $anchor: line
          type: object
          required: [sku]
          properties: { sku: { type: string, minLength: 3 } }
        money: { $id: money, type: integer, minimum: 0 }
    Note: { $anchor: note, type: string, maxLength: 5 }
    Money: { $id: types/money, type: number, maximum: 10 }
";
    let pet = "Pet:\n  type: object\n  properties:\n    name: { $anchor: petName, type: string, pattern: '^[A-Z]' }\n";
    // A document whose root has an `$id`: its anchors are in that resource, and its file
    // name still reaches them.
    let dog = "$id: https://example.com/dogs\n$defs:\n  dog: { $anchor: Dog, type: string, minLength: 2 }\n";
    let dir = folder(&[("doc.yaml", doc), ("pet.yaml", pet), ("dog.yaml", dog)]);
    let c = load_in(
        &dir,
        &format!("{UPSTREAMS}apis:\n  - {{ openapi: doc.yaml, upstream: pets }}\n"),
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let f = |route: &str, body: &str| body_failures(&c, route, body);
    assert_eq!(f("create", r#"{"lines":[{"sku":"ABC"}],"total":5}"#), []);
    assert_eq!(
        f("create", r#"{"lines":[{"sku":"ab"}],"total":-1}"#),
        [
            ("/lines/0/sku".to_owned(), "minLength"),
            ("/total".to_owned(), "minimum")
        ]
    );
    assert_eq!(
        f("line", r#"{"sku":"x"}"#),
        [("/sku".to_owned(), "minLength")]
    );
    assert_eq!(
        f("note", r#""far too long""#),
        [(String::new(), "maxLength")]
    );
    assert_eq!(f("money", "11"), [(String::new(), "maximum")]);
    assert_eq!(f("pet", r#""rex""#), [(String::new(), "pattern")]);
    assert_eq!(f("pet", r#""Rex""#), []);
    assert_eq!(f("dog", r#""x""#), [(String::new(), "minLength")]);
    assert_eq!(f("code", "300"), [(String::new(), "maximum")]);
    assert_eq!(f("code", "200"), []);
    assert_eq!(f("offer", r#""abc""#), [(String::new(), "maxLength")]);
}

/// An anchor or `$id` that names nothing, or names two schemas, is a located error; in
/// OpenAPI 3.0, whose schemas have neither, an anchor is refused.
#[test]
fn references_by_id_and_anchor_that_cannot_be_followed_are_located() {
    let doc = "openapi: 3.1.0
paths:
  /a:
    post:
      operationId: a
      requestBody: { content: { application/json: { schema: { $ref: '#nowhere' } } } }
components:
  schemas:
    One: { $id: 'urn:x:thing', type: string }
    Two: { $id: 'urn:x:thing', type: string }
    Three: { $anchor: twice, type: string }
    Four: { $anchor: twice, type: string }
";
    let errors = located(load_in(
        &folder(&[("doc.yaml", doc)]),
        &format!("{UPSTREAMS}apis:\n  - {{ openapi: doc.yaml, upstream: pets }}\n"),
    ));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("doc.yaml:6:69: `$ref` `#nowhere`: no schema of `")
            && errors[0].ends_with("doc.yaml` has `$anchor: nowhere`"),
        "{errors:#?}"
    );
    assert_eq!(
        errors[1],
        "doc.yaml:10:17: `$id` `urn:x:thing` names two schemas"
    );
    assert!(
        errors[2].starts_with("doc.yaml:12:22: `$anchor` `twice` names two schemas of `"),
        "{errors:#?}"
    );
}

/// The config of one API, `doc.yaml`, among `files` written to a fresh folder.
fn api(files: &[(&str, &str)]) -> Config {
    let dir = folder(files);
    let config = format!("{UPSTREAMS}apis:\n  - {{ openapi: doc.yaml, upstream: pets }}\n");
    load_in(&dir, &config).unwrap_or_else(|d| panic!("{d:?}"))
}

/// The documents "fetched" from `http://127.0.0.1:9/…` by this binary's tests, and the URLs
/// asked for. The fetcher is set once a process, so every test shares it, each under its
/// own path.
static FETCHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn fetch(url: &str) -> Result<Vec<u8>, String> {
    FETCHED.lock().unwrap().push(url.to_owned());
    let doc = match url.strip_prefix("http://127.0.0.1:9") {
        // Had the `$id`s been fetched, their references would take short strings.
        Some("/t/name" | "/t/money" | "/u/b") => "type: string\nmaxLength: 2\n",
        Some("/u/a") => "type: object\nproperties:\n  x: { $ref: more }\n",
        Some("/u/more") => "$id: http://127.0.0.1:9/u/b\ntype: integer\nmaximum: 10\n",
        Some("/v/n") => "type: integer\nmaximum: 10\n",
        _ => return Err("not found".into()),
    };
    Ok(doc.as_bytes().to_vec())
}

/// The URLs fetched so far under `prefix`.
fn fetched(prefix: &str) -> Vec<String> {
    let all = FETCHED.lock().unwrap();
    all.iter()
        .filter(|u| u.starts_with(prefix))
        .cloned()
        .collect()
}

/// A URL that is the `$id` of a schema in a document read after the reference names that
/// schema, and is not fetched; a URL that no document declares is fetched.
#[test]
fn urls_declared_as_ids_are_not_fetched() {
    portico_config::set_url_fetcher(fetch);
    let doc = "openapi: 3.1.0
paths:
  /money:
    post:
      operationId: money
      requestBody: { content: { application/json: { schema: { $ref: 'http://127.0.0.1:9/t/money' } } } }
  /other:
    post:
      operationId: other
      requestBody: { content: { application/json: { schema: { $ref: 'money.yaml' } } } }
  /name:
    post:
      operationId: name
      requestBody: { content: { application/json: { schema: { $ref: 'http://127.0.0.1:9/t/name' } } } }
";
    let money = "$id: http://127.0.0.1:9/t/money\ntype: integer\nmaximum: 10\n";
    let c = api(&[("doc.yaml", doc), ("money.yaml", money)]);
    assert_eq!(
        body_failures(&c, "money", "11"),
        [(String::new(), "maximum")]
    );
    assert_eq!(
        body_failures(&c, "name", "\"abc\""),
        [(String::new(), "maxLength")]
    );
    assert_eq!(
        fetched("http://127.0.0.1:9/t/"),
        ["http://127.0.0.1:9/t/name"]
    );
}

/// URLs are fetched one at a time, the documents fetched last first: a document fetched for
/// one reference may name the one that declares another reference's URL as an `$id`.
#[test]
fn urls_are_fetched_depth_first() {
    portico_config::set_url_fetcher(fetch);
    let doc = "openapi: 3.1.0
paths:
  /a:
    post:
      operationId: a
      requestBody: { content: { application/json: { schema: { $ref: 'http://127.0.0.1:9/u/a' } } } }
  /b:
    post:
      operationId: b
      requestBody: { content: { application/json: { schema: { $ref: 'http://127.0.0.1:9/u/b' } } } }
";
    let c = api(&[("doc.yaml", doc)]);
    assert_eq!(body_failures(&c, "b", "11"), [(String::new(), "maximum")]);
    assert_eq!(
        fetched("http://127.0.0.1:9/u/"),
        ["http://127.0.0.1:9/u/a", "http://127.0.0.1:9/u/more"]
    );
}

/// A YAML alias repeats its nodes' places in the file, so two references in one aliased
/// block share a place: each is still followed once, the local one and the URL.
#[test]
fn references_in_a_yaml_alias_are_each_followed() {
    portico_config::set_url_fetcher(fetch);
    let doc = "openapi: 3.1.0
paths:
  /b:
    post:
      operationId: b
      requestBody: { content: { application/json: { schema: { $ref: 'types.yaml#/$defs/pair' } } } }
  /c:
    post:
      operationId: c
      requestBody: { content: { application/json: { schema: { $ref: 'types.yaml#/$defs/again' } } } }
";
    let types = "$defs:
  S: { type: string, minLength: 3 }
  pair: &p { type: array, prefixItems: [{ $ref: '#/$defs/S' }, { $ref: 'http://127.0.0.1:9/v/n' }] }
  again: *p
";
    let c = api(&[("doc.yaml", doc), ("types.yaml", types)]);
    for op in ["b", "c"] {
        assert_eq!(
            body_failures(&c, op, r#"["x", 11]"#),
            [("/0".to_owned(), "minLength"), ("/1".to_owned(), "maximum")],
            "{op}"
        );
    }
}

/// A `$ref` by the `$id` of a schema in a document read only by a later reference finds it
/// once every document is read; one that names nothing still reports what reading it gave.
#[test]
fn references_by_id_find_schemas_of_documents_read_after_them() {
    let doc = "openapi: 3.1.0
paths:
  /money:
    post:
      operationId: money
      requestBody: { content: { application/json: { schema: { $ref: 'types/money' } } } }
  /other:
    post:
      operationId: other
      requestBody: { content: { application/json: { schema: { $ref: 'money.yaml' } } } }
";
    let money = "$id: types/money\ntype: integer\nmaximum: 10\n";
    let dir = folder(&[("doc.yaml", doc), ("money.yaml", money)]);
    let config = format!("{UPSTREAMS}apis:\n  - {{ openapi: doc.yaml, upstream: pets }}\n");
    let c = load_in(&dir, &config).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(
        body_failures(&c, "money", "11"),
        [(String::new(), "maximum")]
    );
    assert_eq!(
        body_failures(&c, "other", "11"),
        [(String::new(), "maximum")]
    );
    // Without the document that has the `$id`, the reference is a file that cannot be read.
    std::fs::write(
        dir.join("doc.yaml"),
        doc.replace("$ref: 'money.yaml'", "type: object"),
    )
    .unwrap();
    let errors = located(load_in(&dir, &config));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("doc.yaml:6:69: `$ref` `types/money`: cannot read"),
        "{errors:#?}"
    );
}
