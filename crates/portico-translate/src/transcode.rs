//! REST/JSON ↔ gRPC: which method a request calls, the protobuf message it becomes, and the
//! JSON its answer becomes.
//!
//! Everything that can be looked up once is looked up when the transcoder is built: methods,
//! their `google.api.http` bindings with parsed templates, the descriptors of bound fields.
//! Per request: a scan of the route's bindings, one JSON parse, one protobuf encode; on the
//! way back one decode and one JSON write (prost-reflect does both mappings, proto3 JSON rules
//! and well-known types included).

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};

mod describe;

use crate::grpc;
use crate::template::{Template, percent_decode};

/// How a transcoder behaves, from the route's config.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these services (full names); empty: all in the descriptor set.
    pub services: Vec<String>,
    /// `POST /package.Service/Method` with the whole message as JSON, for every method.
    pub call_by_name: bool,
    /// Write fields that hold their default value (0, "", false, empty lists).
    pub emit_defaults: bool,
    /// Query parameters that name no field are ignored instead of refused.
    pub ignore_unknown_query: bool,
}

/// One gRPC method a request may call.
#[derive(Debug)]
pub struct Method {
    pub desc: MethodDescriptor,
    /// `/package.Service/Method`, the HTTP/2 path of the call.
    pub path: http::uri::PathAndQuery,
}

#[derive(Debug)]
enum BodyRule {
    /// No body: every field comes from the path and the query.
    None,
    /// `body: "*"`: the body is the message (minus path-bound fields); no query.
    Whole,
    /// `body: "field"`: the body is that field.
    Field(FieldDescriptor),
}

#[derive(Debug)]
struct Binding {
    method: usize,
    http_method: http::Method,
    template: Template,
    body: BodyRule,
    /// The JSON name of the `response_body` field: answer with that field of the response
    /// instead of the whole message.
    response_json: Option<String>,
}

pub struct Transcoder {
    pool: DescriptorPool,
    methods: Vec<Method>,
    /// Most specific template first.
    bindings: Vec<Binding>,
    by_name: HashMap<String, usize>,
    options: Options,
    write: SerializeOptions,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder")
            .field("methods", &self.methods.len())
            .field("bindings", &self.bindings.len())
            .finish()
    }
}

/// The call a request maps to.
#[derive(Debug)]
pub struct Call<'t> {
    pub method: &'t Method,
    index: usize,
    binding: Option<usize>,
    vars: Vec<(Vec<String>, String)>,
}

/// What a response stream needs to turn each message into JSON, without borrowing the
/// transcoder.
#[derive(Debug, Clone, Copy)]
pub struct CallKey {
    method: usize,
    binding: Option<usize>,
}

impl Call<'_> {
    pub fn key(&self) -> CallKey {
        CallKey {
            method: self.index,
            binding: self.binding,
        }
    }

    /// Streams the client sends (client or bidirectional streaming).
    pub fn is_client_streaming(&self) -> bool {
        self.method.desc.is_client_streaming()
    }

    pub fn is_server_streaming(&self) -> bool {
        self.method.desc.is_server_streaming()
    }

    pub fn is_streaming(&self) -> bool {
        self.method.desc.is_client_streaming() || self.method.desc.is_server_streaming()
    }
}

/// Why a request maps to no call, or to no valid message.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// No binding for this path.
    NotFound,
    /// The path has bindings, for other HTTP methods.
    MethodNotAllowed,
    /// The JSON or a parameter does not fit the message; `field` is where, when known.
    Invalid {
        detail: String,
        field: Option<String>,
    },
}

impl Transcoder {
    /// Reads a `FileDescriptorSet` (as `protoc --include_imports --descriptor_set_out` writes
    /// it). Errors name the method they concern.
    pub fn new(descriptor_set: &[u8], options: Options) -> Result<Transcoder, Vec<String>> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| vec![format!("not a valid descriptor set: {e}")])?;
        Self::from_pool(pool, options)
    }

    pub fn from_pool(pool: DescriptorPool, options: Options) -> Result<Transcoder, Vec<String>> {
        let mut errors = Vec::new();
        for s in &options.services {
            if pool.get_service_by_name(s).is_none() {
                let known: Vec<String> =
                    pool.services().map(|s| s.full_name().to_owned()).collect();
                errors.push(format!(
                    "service `{s}` is not in the descriptor set (it has: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        let http_ext = pool.get_extension_by_name("google.api.http");
        let mut methods = Vec::new();
        let mut bindings = Vec::new();
        let mut by_name = HashMap::new();
        for service in pool.services() {
            if !options.services.is_empty()
                && !options.services.iter().any(|s| s == service.full_name())
            {
                continue;
            }
            for m in service.methods() {
                let path = format!("/{}/{}", service.full_name(), m.name());
                let Ok(pq) = http::uri::PathAndQuery::try_from(path.as_str()) else {
                    errors.push(format!("method `{}`: unusable name", m.full_name()));
                    continue;
                };
                let index = methods.len();
                by_name.insert(path, index);
                if let Some(ext) = &http_ext {
                    let opts = m.options();
                    if opts.has_extension(ext)
                        && let prost_reflect::Value::Message(rule) = &*opts.get_extension(ext)
                    {
                        read_rule(&m, index, rule, true, &mut bindings, &mut errors);
                    }
                }
                methods.push(Method { desc: m, path: pq });
            }
        }
        // Two methods on one method + template: the second would never be reached.
        for (i, a) in bindings.iter().enumerate() {
            if let Some(b) = bindings[..i]
                .iter()
                .find(|b| b.http_method == a.http_method && b.template == a.template)
            {
                errors.push(format!(
                    "methods `{}` and `{}` both bind {} to the same path template",
                    methods[b.method].desc.full_name(),
                    methods[a.method].desc.full_name(),
                    a.http_method
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        bindings.sort_by_key(|b| std::cmp::Reverse(b.template.specificity()));
        let write = SerializeOptions::new()
            .skip_default_fields(!options.emit_defaults)
            .stringify_64_bit_integers(true);
        Ok(Transcoder {
            pool,
            methods,
            bindings,
            by_name,
            options,
            write,
        })
    }

    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The call for a request's method and path (`path` without the query).
    pub fn route(&self, method: &http::Method, path: &str) -> Result<Call<'_>, RequestError> {
        let mut other_method = false;
        for (i, b) in self.bindings.iter().enumerate() {
            if let Some(vars) = b.template.matches(path) {
                if b.http_method != *method {
                    other_method = true;
                    continue;
                }
                return Ok(Call {
                    method: &self.methods[b.method],
                    index: b.method,
                    binding: Some(i),
                    vars: vars.into_iter().map(|(f, v)| (f.to_vec(), v)).collect(),
                });
            }
        }
        if self.options.call_by_name
            && let Some(&m) = self.by_name.get(path)
        {
            if *method != http::Method::POST {
                return Err(RequestError::MethodNotAllowed);
            }
            return Ok(Call {
                method: &self.methods[m],
                index: m,
                binding: None,
                vars: Vec::new(),
            });
        }
        Err(if other_method {
            RequestError::MethodNotAllowed
        } else {
            RequestError::NotFound
        })
    }

    /// The request message, framed for gRPC: path variables, then the query (unless the body
    /// is the whole message), then the body.
    pub fn request(
        &self,
        call: &Call<'_>,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Bytes, RequestError> {
        let input = call.method.desc.input();
        let rule = call.binding.map(|i| &self.bindings[i].body);
        let parse_body = |body: &[u8]| -> Result<Value, RequestError> {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Object(Map::new()));
            }
            serde_json::from_slice(body).map_err(|e| RequestError::Invalid {
                detail: format!("the body is not valid JSON: {e}"),
                field: None,
            })
        };
        let mut root = match rule {
            // Called by name: the body is the message.
            None | Some(BodyRule::Whole) => parse_body(body)?,
            Some(BodyRule::None) => Value::Object(Map::new()),
            Some(BodyRule::Field(f)) => {
                let mut m = Map::new();
                m.insert(f.json_name().to_owned(), parse_body(body)?);
                Value::Object(m)
            }
        };
        if !root.is_object() {
            return Err(RequestError::Invalid {
                detail: format!("the body must be a JSON object for `{}`", input.full_name()),
                field: None,
            });
        }
        for (path, value) in &call.vars {
            set_path(&mut root, &input, path, value, false)?;
        }
        if matches!(rule, Some(BodyRule::None | BodyRule::Field(_)))
            && let Some(q) = query
        {
            let bound: Vec<&Vec<String>> = call.vars.iter().map(|(p, _)| p).collect();
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| percent_decode(&s.replace('+', " "), false);
                let (Some(k), Some(v)) = (decode(k), decode(v)) else {
                    return Err(RequestError::Invalid {
                        detail: format!("query parameter `{pair}` is not valid percent-encoding"),
                        field: None,
                    });
                };
                let path: Vec<String> = k.split('.').map(str::to_owned).collect();
                if bound.contains(&&path) {
                    continue;
                }
                match set_path(&mut root, &input, &path, &v, true) {
                    Err(RequestError::Invalid {
                        field: Some(_),
                        detail,
                    }) if self.options.ignore_unknown_query && detail.starts_with("no field") => {}
                    r => r?,
                }
            }
        }
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(&root, &mut track);
        let msg = DynamicMessage::deserialize_with_options(
            input.clone(),
            de,
            &DeserializeOptions::new().deny_unknown_fields(true),
        )
        .map_err(|e| {
            let path = track.path().to_string();
            RequestError::Invalid {
                detail: format!("{e}"),
                field: (path != ".").then_some(path),
            }
        })?;
        Ok(grpc::frame(&msg.encode_to_vec()))
    }

    /// The JSON for a unary response body (gRPC-framed).
    pub fn response(&self, call: &Call<'_>, body: &[u8]) -> Result<Vec<u8>, String> {
        let msgs = grpc::messages(body)?;
        let [one] = msgs.as_slice() else {
            return Err(format!("expected one response message, got {}", msgs.len()));
        };
        self.message_json(call.key(), one)
    }

    /// One encoded response message as JSON (each message of a stream goes through here).
    pub fn message_json(&self, key: CallKey, encoded: &[u8]) -> Result<Vec<u8>, String> {
        let msg = DynamicMessage::decode(self.methods[key.method].desc.output(), encoded)
            .map_err(|e| format!("undecodable response message: {e}"))?;
        let mut out = Vec::with_capacity(128);
        let picked = key
            .binding
            .and_then(|i| self.bindings[i].response_json.as_deref());
        match picked {
            None => {
                let mut ser = serde_json::Serializer::new(&mut out);
                msg.serialize_with_options(&mut ser, &self.write)
                    .map_err(|e| e.to_string())?;
            }
            Some(name) => {
                // Written whole, then the field taken: prost-reflect writes messages, not
                // loose field values. Defaults are kept so an empty field still answers.
                let opts = self.write.clone().skip_default_fields(false);
                let mut v = msg
                    .serialize_with_options(serde_json::value::Serializer, &opts)
                    .map_err(|e| e.to_string())?;
                let field = v.get_mut(name).map(Value::take).unwrap_or(Value::Null);
                serde_json::to_writer(&mut out, &field).map_err(|e| e.to_string())?;
            }
        }
        Ok(out)
    }

    /// The details of a `grpc-status-details-bin` value as JSON: `google.rpc.Status` with each
    /// `Any` written as its message when the type is in the descriptor set.
    pub fn status_details(&self, bin: &[u8]) -> Option<Value> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(
                bin.strip_suffix(b"==")
                    .or(bin.strip_suffix(b"="))
                    .unwrap_or(bin),
            )
            .ok()?;
        let status = grpc::Status::decode(raw.as_slice()).ok()?;
        let details = status
            .details
            .iter()
            .map(|any| {
                let name = any.type_url.rsplit('/').next().unwrap_or_default();
                let decoded = self
                    .pool
                    .get_message_by_name(name)
                    .and_then(|d| DynamicMessage::decode(d, any.value.as_slice()).ok())
                    .and_then(|m| {
                        m.serialize_with_options(serde_json::value::Serializer, &self.write)
                            .ok()
                    });
                match decoded {
                    Some(Value::Object(mut o)) => {
                        o.insert("@type".into(), Value::String(any.type_url.clone()));
                        Value::Object(o)
                    }
                    _ => serde_json::json!({
                        "@type": any.type_url,
                        "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
                    }),
                }
            })
            .collect::<Vec<_>>();
        Some(Value::Array(details))
    }
}

/// Reads one `HttpRule` (and its `additional_bindings`, one level deep as the spec allows).
fn read_rule(
    m: &MethodDescriptor,
    index: usize,
    rule: &DynamicMessage,
    top: bool,
    out: &mut Vec<Binding>,
    errors: &mut Vec<String>,
) {
    let name = m.full_name();
    let text = |f: &str| -> Option<String> {
        rule.has_field_by_name(f)
            .then(|| rule.get_field_by_name(f))
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let mut pattern = None;
    for (field, verb) in [
        ("get", http::Method::GET),
        ("put", http::Method::PUT),
        ("post", http::Method::POST),
        ("delete", http::Method::DELETE),
        ("patch", http::Method::PATCH),
    ] {
        if let Some(p) = text(field) {
            pattern = Some((verb, p));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(prost_reflect::Value::Message(c)) = rule.get_field_by_name("custom").as_deref()
    {
        let kind = c
            .get_field_by_name("kind")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let path = c
            .get_field_by_name("path")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match http::Method::from_bytes(kind.as_bytes()) {
            Ok(verb) => pattern = Some((verb, path)),
            Err(_) => errors.push(format!(
                "method `{name}`: custom HTTP method `{kind}` is not a valid method name"
            )),
        }
    }
    if let Some((verb, path)) = pattern {
        match Template::parse(&path) {
            Err(e) => errors.push(format!("method `{name}`: {e}")),
            Ok(template) => {
                let input = m.input();
                let mut ok = true;
                for f in template.fields() {
                    if let Err(e) = resolve(&input, f, false) {
                        errors.push(format!("method `{name}`: path template `{path}`: {e}"));
                        ok = false;
                    }
                }
                let body = match text("body").as_deref() {
                    None | Some("") => BodyRule::None,
                    Some("*") => BodyRule::Whole,
                    Some(b) => match input.get_field_by_name(b) {
                        Some(f) if template.fields().any(|p| p.len() == 1 && p[0] == b) => {
                            errors.push(format!("method `{name}`: `body: \"{b}\"` is also bound by the path template"));
                            ok = false;
                            BodyRule::Field(f)
                        }
                        Some(f) => BodyRule::Field(f),
                        None => {
                            errors.push(format!(
                                "method `{name}`: `body: \"{b}\"` names no field of `{}`",
                                input.full_name()
                            ));
                            ok = false;
                            BodyRule::None
                        }
                    },
                };
                let response_json = match text("response_body").as_deref() {
                    None | Some("") => None,
                    Some(r) => match m.output().get_field_by_name(r) {
                        Some(f) => Some(f.json_name().to_owned()),
                        None => {
                            errors.push(format!(
                                "method `{name}`: `response_body: \"{r}\"` names no field of `{}`",
                                m.output().full_name()
                            ));
                            ok = false;
                            None
                        }
                    },
                };
                if ok {
                    out.push(Binding {
                        method: index,
                        http_method: verb,
                        template,
                        body,
                        response_json,
                    });
                }
            }
        }
    } else if top || rule.fields().next().is_some() {
        errors.push(format!("method `{name}`: `google.api.http` rule without a pattern (get, put, post, delete, patch or custom)"));
    }
    if rule.has_field_by_name("additional_bindings")
        && let Some(prost_reflect::Value::List(extra)) =
            rule.get_field_by_name("additional_bindings").as_deref()
    {
        if !top && !extra.is_empty() {
            errors.push(format!(
                "method `{name}`: `additional_bindings` may not nest"
            ));
            return;
        }
        for e in extra {
            if let prost_reflect::Value::Message(r) = e {
                read_rule(m, index, r, false, out, errors);
            }
        }
    }
}

/// The field at `path` in `msg`: every step but the last a singular message field; the last a
/// field a path or query string can set (a scalar, an enum, or a well-known type written as
/// a string; repeated only from the query).
fn resolve(
    msg: &MessageDescriptor,
    path: &[String],
    repeated_ok: bool,
) -> Result<FieldDescriptor, String> {
    let mut cur = msg.clone();
    for (i, name) in path.iter().enumerate() {
        let f = cur
            .get_field_by_name(name)
            .or_else(|| cur.get_field_by_json_name(name))
            .ok_or_else(|| format!("no field `{name}` in `{}`", cur.full_name()))?;
        let last = i + 1 == path.len();
        if last {
            if f.is_map() || (f.is_list() && !repeated_ok) {
                return Err(format!(
                    "field `{}` is a {}; it cannot be set from a path or query",
                    path.join("."),
                    if f.is_map() { "map" } else { "list" }
                ));
            }
            if let Kind::Message(m) = f.kind()
                && !is_scalar_like(&m)
            {
                return Err(format!(
                    "field `{}` is a message (`{}`); only scalar fields can be set from a path or query",
                    path.join("."),
                    m.full_name()
                ));
            }
            return Ok(f);
        }
        match f.kind() {
            Kind::Message(m) if !f.is_list() && !f.is_map() => cur = m,
            _ => {
                return Err(format!(
                    "field `{name}` in `{}` is not a message, so `{}` goes nowhere",
                    cur.full_name(),
                    path.join(".")
                ));
            }
        }
    }
    Err("empty field path".into())
}

/// Well-known types whose JSON form is a string or a number.
fn is_scalar_like(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Sets `path` in the JSON being built to `text`, typed by the field it names. Query values for
/// repeated fields accumulate.
fn set_path(
    root: &mut Value,
    msg: &MessageDescriptor,
    path: &[String],
    text: &str,
    from_query: bool,
) -> Result<(), RequestError> {
    let dotted = path.join(".");
    let field = resolve(msg, path, from_query).map_err(|detail| RequestError::Invalid {
        detail,
        field: Some(dotted.clone()),
    })?;
    let typed = typed(&field, text).map_err(|detail| RequestError::Invalid {
        detail,
        field: Some(dotted.clone()),
    })?;
    // Walk (creating) the objects along the path, by JSON names.
    let mut cur = root;
    let mut desc = msg.clone();
    for (i, name) in path.iter().enumerate() {
        let f = desc
            .get_field_by_name(name)
            .or_else(|| desc.get_field_by_json_name(name))
            .expect("resolved above");
        let obj = cur.as_object_mut().ok_or_else(|| RequestError::Invalid {
            detail: format!(
                "`{}` is set both as a value and as an object",
                path[..i].join(".")
            ),
            field: Some(dotted.clone()),
        })?;
        // Accept the body having used either name for the field.
        let key = if obj.contains_key(f.name()) {
            f.name()
        } else {
            f.json_name()
        }
        .to_owned();
        if i + 1 == path.len() {
            if f.is_list() {
                match obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                    Value::Array(a) => a.push(typed),
                    _ => {
                        return Err(RequestError::Invalid {
                            detail: format!("`{dotted}` is a list"),
                            field: Some(dotted),
                        });
                    }
                }
            } else {
                obj.insert(key, typed);
            }
            return Ok(());
        }
        cur = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if let Kind::Message(m) = f.kind() {
            desc = m;
        }
    }
    Ok(())
}

/// The JSON value for `text` in a field of this type, as proto3 JSON expects it.
fn typed(f: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let kind = match f.kind() {
        Kind::Message(m) => match m.get_field_by_name("value").map(|v| v.kind()) {
            // Wrappers take the JSON of the wrapped value.
            Some(k)
                if m.full_name().ends_with("Value")
                    && m.full_name().starts_with("google.protobuf.") =>
            {
                k
            }
            // Timestamp, Duration, FieldMask: strings.
            _ => return Ok(Value::String(text.to_owned())),
        },
        k => k,
    };
    Ok(match kind {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("`{text}` is not a boolean (true or false)")),
        },
        Kind::Enum(_) => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text.to_owned()),
        },
        // Numbers go as strings: proto3 JSON accepts both, and strings keep 64-bit values exact.
        _ => Value::String(text.to_owned()),
    })
}
