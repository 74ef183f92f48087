//! The gateway's own OpenAPI 3.1 description: every route it exposes, as clients see it.
//!
//! - A route made from an `apis` operation is that operation, as its document writes it; the
//!   document's components come along under the API's name (`orders.Order` for `Order` of the
//!   API `orders`), and every `$ref` and security requirement is renamed to match.
//! - A `soap` route is its JSON side (the same operations `GET /openapi/ROUTE` describes).
//! - Any other route is described as far as its match says: path (a prefix route as the
//!   prefix, marked `x-portico-match: prefix`), methods, path parameters.
//!
//! Onto each operation the gateway adds what it does itself: the security schemes its
//! policies enforce, `429` with the `RateLimit` headers where a `rate_limit` applies, `413`
//! where a `body_limit` does, `400`/`415` where requests are validated, `401`/`403` where
//! credentials are asked for, and `502`/`503`/`504`, all as RFC 9457 problem documents.

use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::ir::{AuthMethod, PathPattern, Policy, Route};

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The description of every route of `cfg`.
pub fn openapi(cfg: &Config) -> Value {
    openapi_with(cfg, &|_| None)
}

/// [`openapi`] on a running gateway, which also knows the methods of `grpc_transcode` routes
/// that learn them by server reflection: `reflected` gives a route's, once fetched.
pub fn openapi_with(
    cfg: &Config,
    reflected: &dyn Fn(&Route) -> Option<std::sync::Arc<portico_translate::Transcoder>>,
) -> Value {
    let mut components = Map::new();
    components.insert("schemas".into(), json!({ "Problem": problem_schema() }));
    components.insert("responses".into(), gateway_responses());
    components.insert(
        "headers".into(),
        json!({
            "RateLimit": { "description": "The tightest limit's remaining quota and reset (draft-ietf-httpapi-ratelimit-headers).", "schema": { "type": "string" } },
            "RateLimit-Policy": { "description": "The limits that apply.", "schema": { "type": "string" } },
            "Retry-After": { "description": "Seconds until a request may be tried again.", "schema": { "type": "integer", "minimum": 0 } }
        }),
    );
    let mut schemes = Map::new();
    // What the documents' `$ref`s to other files read, under each API's name.
    let mut bundled = Map::new();
    // The imported documents' components, each under its API's name.
    for api in &cfg.apis {
        let prefix = format!("{}.", component_name(&api.name));
        if let Some(b) = api.root.get(BUNDLED) {
            bundled.insert(component_name(&api.name), renamed(b, &prefix));
        }
        let Some(comps) = api.root.get("components").and_then(Value::as_object) else {
            continue;
        };
        for (kind, entries) in comps {
            let Some(entries) = entries.as_object() else {
                continue;
            };
            let target = if kind == "securitySchemes" {
                &mut schemes
            } else {
                components
                    .entry(kind.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("a map")
            };
            for (name, v) in entries {
                target.insert(format!("{prefix}{name}"), renamed(v, &prefix));
            }
        }
    }
    let mut paths = Map::new();
    for r in &cfg.routes {
        if let Some(s) = &r.soap {
            soap(r, s, &mut paths, &mut components);
            continue;
        }
        if let Some(tr) = r
            .transcode
            .as_ref()
            .and_then(|t| t.transcoder.clone().or_else(|| reflected(r)))
        {
            grpc(r, &tr, cfg, &mut paths, &mut components, &mut schemes);
            continue;
        }
        let (path, catch_all) = match openapi_path(&r.path) {
            Some(p) => p,
            None => continue,
        };
        let imported = r.operation.as_ref().and_then(|(api, pointer)| {
            let doc = cfg.apis.get(*api)?;
            let op = doc.root.pointer(pointer)?;
            Some((doc, op))
        });
        let methods: Vec<String> = if r.methods.is_empty() {
            METHODS.iter().map(|m| (*m).to_owned()).collect()
        } else {
            r.methods
                .iter()
                .map(|m| m.as_str().to_ascii_lowercase())
                .collect()
        };
        let several = methods.len() > 1;
        for m in methods {
            if !METHODS.contains(&m.as_str()) {
                continue;
            }
            let mut op = match imported {
                Some((doc, op)) => {
                    let prefix = format!("{}.", component_name(&doc.name));
                    let mut op = renamed(op, &prefix);
                    // The document's own default security, where the operation has none.
                    if op.get("security").is_none()
                        && let Some(sec) = doc.root.get("security")
                    {
                        op["security"] = renamed_security(sec, &prefix);
                    }
                    if let Some(sec) = op.get("security").cloned() {
                        op["security"] = renamed_security(&sec, &prefix);
                    }
                    // Path-level parameters, which the merged path item does not keep.
                    let item_ptr = doc_item_pointer(&r.operation.as_ref().expect("imported").1);
                    if let Some(Value::Array(ps)) =
                        doc.root.pointer(&format!("{item_ptr}/parameters"))
                        && let Some(o) = op.as_object_mut()
                    {
                        let own = o.entry("parameters").or_insert_with(|| json!([]));
                        if let Some(list) = own.as_array_mut() {
                            for p in ps {
                                let p = renamed(p, &prefix);
                                let same = |q: &Value| {
                                    q.get("name") == p.get("name") && q.get("in") == p.get("in")
                                };
                                if !list.iter().any(same) {
                                    list.push(p);
                                }
                            }
                        }
                    }
                    op
                }
                None => plain_operation(r, catch_all),
            };
            add_gateway(&mut op, r, cfg, &mut schemes);
            if let Some(o) = op.as_object_mut() {
                // Unique per operation, as OpenAPI asks: a route of several methods is
                // several operations.
                let id = if several {
                    format!("{}.{m}", r.name)
                } else {
                    r.name.to_string()
                };
                o.insert("operationId".into(), id.into());
                if catch_all || matches!(r.path, PathPattern::Prefix(_)) {
                    o.insert("x-portico-match".into(), "prefix".into());
                }
            }
            let item = paths
                .entry(path.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            // A later route with the same path and method is reached only when an earlier one's
            // conditions do not hold: the first describes it.
            if item.get(&m).is_none() {
                item[m.as_str()] = op;
            }
        }
    }
    if !schemes.is_empty() {
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    let servers: Vec<Value> = cfg
        .listeners
        .iter()
        .map(|l| {
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            json!({ "url": format!("{scheme}://{}", l.addr), "description": format!("listener `{}`", l.name) })
        })
        .collect();
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Portico gateway",
            "version": cfg.hash,
            "description": format!("Every route of the config `{}`, with what the gateway adds to each.", cfg.source),
        },
        "servers": servers,
        "paths": paths,
        "components": components,
    });
    if !bundled.is_empty() {
        doc[BUNDLED] = Value::Object(bundled);
    }
    doc
}

/// The path item pointer of an operation pointer (`/paths/~1pets/get` → `/paths/~1pets`).
fn doc_item_pointer(op: &str) -> &str {
    op.rsplit_once('/').map_or(op, |(item, _)| item)
}

/// A component name made of the characters OpenAPI allows (`^[a-zA-Z0-9.\-_]+$`).
fn component_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A copy of `v` with every local component `$ref` pointing at the renamed component.
fn renamed(v: &Value, prefix: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => Value::String(rename_ref(r, prefix)),
                        _ => renamed(v, prefix),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| renamed(v, prefix)).collect()),
        other => other.clone(),
    }
}

/// The key of an imported document under which the files its `$ref`s name are grafted.
const BUNDLED: &str = "x-portico-bundled";

/// `#/components/schemas/Order` → `#/components/schemas/orders.Order`, and
/// `#/x-portico-bundled/1/…` → `#/x-portico-bundled/orders/1/…`.
fn rename_ref(r: &str, prefix: &str) -> String {
    if let Some(rest) = r
        .strip_prefix("#/")
        .and_then(|r| r.strip_prefix(BUNDLED))
        .and_then(|r| r.strip_prefix('/'))
    {
        return format!("#/{BUNDLED}/{}/{rest}", prefix.trim_end_matches('.'));
    }
    let Some(rest) = r.strip_prefix("#/components/") else {
        return r.to_owned();
    };
    match rest.split_once('/') {
        Some((kind, name)) => format!("#/components/{kind}/{prefix}{name}"),
        None => r.to_owned(),
    }
}

fn renamed_security(sec: &Value, prefix: &str) -> Value {
    match sec {
        Value::Array(reqs) => Value::Array(
            reqs.iter()
                .map(|req| match req {
                    Value::Object(m) => Value::Object(
                        m.iter()
                            .map(|(k, v)| {
                                let k = if k.starts_with(prefix) {
                                    k.clone()
                                } else {
                                    format!("{prefix}{k}")
                                };
                                (k, v.clone())
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The OpenAPI path of a route's match, and whether it ends in a catch-all.
fn openapi_path(p: &PathPattern) -> Option<(String, bool)> {
    match p {
        PathPattern::Any => Some(("/".into(), true)),
        PathPattern::Exact(e) => Some((e.clone(), false)),
        PathPattern::Prefix(p) => Some((p.clone(), false)),
        PathPattern::Template(t) => {
            let catch_all = t.source.contains("{*");
            Some((t.source.replace("{*", "{"), catch_all))
        }
    }
}

fn plain_operation(r: &Route, catch_all: bool) -> Value {
    let params: Vec<Value> = match &r.path {
        PathPattern::Template(t) => t
            .params
            .iter()
            .map(|n| json!({ "name": n, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect(),
        _ => Vec::new(),
    };
    let mut op = json!({
        "summary": format!("Route `{}`", r.name),
        "responses": { "default": { "description": "The upstream's answer, as it gives it." } },
    });
    if !params.is_empty() {
        op["parameters"] = params.into();
    }
    if catch_all {
        op["description"] =
            "The last path parameter takes the rest of the path, slashes included.".into();
    }
    op
}

/// The gateway's own answers and security, added to an operation.
fn add_gateway(op: &mut Value, r: &Route, cfg: &Config, schemes: &mut Map<String, Value>) {
    let mut security: Vec<Value> = Vec::new();
    let (mut auth, mut limited, mut sized) = (false, false, false);
    for p in cfg.global_policies.iter().chain(r.policies.iter()) {
        match p {
            Policy::Auth(a) => {
                auth = true;
                // Any one method suffices: one requirement per method.
                for m in &a.methods {
                    let (name, scheme) = match m {
                        AuthMethod::ApiKey(k) => (
                            format!("gateway.apiKey.{}", k.header),
                            json!({ "type": "apiKey", "in": "header", "name": k.header.as_str() }),
                        ),
                        AuthMethod::Basic(_) => (
                            "gateway.basic".into(),
                            json!({ "type": "http", "scheme": "basic" }),
                        ),
                        AuthMethod::Jwt(_) | AuthMethod::Introspection(_) => (
                            "gateway.bearer".into(),
                            json!({ "type": "http", "scheme": "bearer" }),
                        ),
                        AuthMethod::ClientCert(_) => {
                            ("gateway.mutualTLS".into(), json!({ "type": "mutualTLS" }))
                        }
                    };
                    schemes.entry(name.clone()).or_insert(scheme);
                    security.push(json!({ name: [] }));
                }
            }
            Policy::Acl(_) => auth = true,
            Policy::RateLimit(_) => limited = true,
            Policy::BodyLimit(_) => sized = true,
            _ => {}
        }
    }
    let Some(o) = op.as_object_mut() else { return };
    if !security.is_empty() && o.get("security").is_none() {
        o.insert("security".into(), security.into());
    }
    let responses = o
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("an object");
    let mut add = |code: &str, name: &str| {
        responses
            .entry(code.to_owned())
            .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
    };
    if auth {
        add("401", "Unauthorized");
        add("403", "Forbidden");
    }
    if limited {
        add("429", "RateLimited");
    }
    if sized {
        add("413", "PayloadTooLarge");
    }
    if r.contract.as_ref().is_some_and(|c| c.request.is_some()) {
        add("400", "RequestInvalid");
        add("415", "UnsupportedMediaType");
    }
    add("502", "BadGateway");
    add("503", "ServiceUnavailable");
    add("504", "GatewayTimeout");
}

fn soap(
    r: &Route,
    s: &crate::ir::SoapRoute,
    paths: &mut Map<String, Value>,
    components: &mut Map<String, Value>,
) {
    let doc = portico_translate::openapi::document(
        &s.wsdl.schema,
        &s.port,
        &s.prefix,
        &format!("{} (Portico route `{}`)", s.port.name, r.name),
        &s.bindings
            .iter()
            .map(|b| (b.operation, b.method.as_str(), b.path.as_str()))
            .collect::<Vec<_>>(),
    );
    let prefix = format!("{}.", component_name(&r.name));
    if let Some(Value::Object(ps)) = doc.get("paths") {
        for (p, item) in ps {
            paths
                .entry(p.clone())
                .or_insert_with(|| renamed(item, &prefix));
        }
    }
    add_components(&doc, &prefix, components);
}

/// A generated document's components, each under `prefix` (a route's name), with their
/// references renamed to match.
fn add_components(doc: &Value, prefix: &str, components: &mut Map<String, Value>) {
    let Some(Value::Object(comps)) = doc.get("components") else {
        return;
    };
    for (kind, entries) in comps {
        if let (Some(target), Some(entries)) = (
            components
                .entry(kind.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut(),
            entries.as_object(),
        ) {
            for (name, v) in entries {
                target.insert(format!("{prefix}{name}"), renamed(v, prefix));
            }
        }
    }
}

/// A `grpc_transcode` route whose methods are known (from its descriptor set, or fetched by
/// reflection on a running gateway): its methods, as their `google.api.http` bindings (and
/// calls by name) expose them, with the gateway's additions. (Before reflection has answered,
/// and in `portico openapi -c`, a route with `reflection` is described as a plain one.)
fn grpc(
    r: &Route,
    tr: &portico_translate::Transcoder,
    cfg: &Config,
    paths: &mut Map<String, Value>,
    components: &mut Map<String, Value>,
    schemes: &mut Map<String, Value>,
) {
    let prefix = format!("{}.", component_name(&r.name));
    let doc = tr.openapi(&|method| format!("{}.{method}", r.name));
    if let Some(Value::Object(ps)) = doc.get("paths") {
        for (p, item) in ps {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (m, op) in ops {
                let mut op = renamed(op, &prefix);
                add_gateway(&mut op, r, cfg, schemes);
                let item = paths
                    .entry(p.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if item.get(m).is_none() {
                    item[m.as_str()] = op;
                }
            }
        }
    }
    add_components(&doc, &prefix, components);
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document, as the gateway writes its own errors.",
        "required": ["type", "title", "status", "code"],
        "properties": {
            "type": { "type": "string", "description": "`urn:portico:problem:<code>`." },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "code": { "type": "string", "description": "The gateway's error code (docs/errors.md)." },
            "request_id": { "type": "string" },
            "errors": {
                "type": "array",
                "description": "For `request_invalid` and `upstream_contract_violation`: each failure.",
                "items": { "type": "object", "properties": {
                    "in": { "type": "string" }, "name": { "type": "string" },
                    "pointer": { "type": "string" }, "keyword": { "type": "string" },
                    "detail": { "type": "string" } } }
            }
        }
    })
}

fn gateway_responses() -> Value {
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
        })
    };
    let mut limited = problem("A rate limit is spent (`rate_limited`).");
    limited["headers"] = json!({
        "RateLimit": { "$ref": "#/components/headers/RateLimit" },
        "RateLimit-Policy": { "$ref": "#/components/headers/RateLimit-Policy" },
        "Retry-After": { "$ref": "#/components/headers/Retry-After" }
    });
    json!({
        "RequestInvalid": problem("The request breaks the operation's contract (`request_invalid`)."),
        "UnsupportedMediaType": problem("The body's media type is not one the operation takes (`unsupported_media_type`)."),
        "Unauthorized": problem("Credentials are missing or wrong (`unauthorized`)."),
        "Forbidden": problem("The credentials do not allow this request (`forbidden`)."),
        "PayloadTooLarge": problem("The body is larger than the route accepts (`payload_too_large`)."),
        "RateLimited": limited,
        "BadGateway": problem("The upstream failed or answered outside its contract."),
        "ServiceUnavailable": problem("No upstream target is available, or a limit's store is down."),
        "GatewayTimeout": problem("The upstream did not answer within the route's timeout."),
    })
}
