//! An OpenAPI operation's parameters and request body compiled into a [`RequestContract`].
//! The schemas go through the document's one [`Compiler`], so components shared by many
//! operations are compiled once.

use std::sync::Arc;

use serde_json::Value;

use crate::request::{BodyRule, In, Limits, MediaRange, Param, PartRule, RequestContract, Style};
use crate::schema::{CompileError, Compiler, Schemas, escape};

/// Where an operation is in its document: JSON pointers to its path item and to itself.
pub struct OperationRef<'a> {
    pub path_item: &'a str,
    pub operation: &'a str,
}

/// The parameters OpenAPI says are not described by a parameter object.
const IGNORED_HEADERS: &[&str] = &["accept", "content-type", "authorization"];

/// Reads the operation's parameters and request body. Its schemas are compiled into
/// `compiler`; the contract is finished by [`finish`] once every operation of the document is.
pub fn compile_operation(
    compiler: &mut Compiler<'_>,
    root: &Value,
    op: &OperationRef<'_>,
) -> (Vec<Param>, Option<BodyRule>) {
    let mut params: Vec<Param> = Vec::new();
    // Path-level parameters first; the operation's replace those with the same name and place.
    for base in [op.path_item, op.operation] {
        let list_ptr = format!("{base}/parameters");
        let Some(list) = root.pointer(&list_ptr).and_then(Value::as_array) else {
            continue;
        };
        for i in 0..list.len() {
            let at = format!("{list_ptr}/{i}");
            let Some((ptr, p)) = follow(compiler, root, &at) else {
                continue;
            };
            if let Some(param) = param(compiler, root, &ptr, p, IGNORED_HEADERS) {
                params.retain(|q| !(q.name == param.name && q.location == param.location));
                params.push(param);
            }
        }
    }
    let body = root
        .pointer(&format!("{}/requestBody", op.operation))
        .map(|_| format!("{}/requestBody", op.operation))
        .and_then(|at| follow(compiler, root, &at))
        .and_then(|(ptr, b)| body(compiler, root, &ptr, b));
    (params, body)
}

/// Reads the operation's `responses`: each status (or range, or `default`) with its media
/// types and their schemas.
pub fn compile_responses(
    compiler: &mut Compiler<'_>,
    root: &Value,
    op: &OperationRef<'_>,
) -> Vec<crate::response::ResponseRule> {
    use crate::response::{ResponseRule, StatusSel};
    let base = format!("{}/responses", op.operation);
    let Some(map) = root.pointer(&base).and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for key in map.keys() {
        let at = format!("{base}/{}", escape(key));
        let Some(status) = StatusSel::of(key) else {
            compiler.push_error(CompileError {
                pointer: at,
                message: format!("`{key}` is not a response status"),
                hint: "use a status code (`200`), a range (`2XX`) or `default`".into(),
            });
            continue;
        };
        let Some((ptr, r)) = follow(compiler, root, &at) else {
            continue;
        };
        let media = match r.get("content").and_then(Value::as_object) {
            None => Box::default(),
            Some(content) => media(compiler, &ptr, content),
        };
        out.push(ResponseRule { status, media });
    }
    out
}

/// The contract of an operation, once the document's schemas are compiled.
pub fn finish(
    schemas: &Arc<Schemas>,
    params: Vec<Param>,
    mut body: Option<BodyRule>,
    limits: Limits,
) -> RequestContract {
    // A form field's style, read as a query parameter's: resolved against its property's
    // schema once, here, rather than per request.
    if let Some(b) = &mut body {
        for ((_, schema), rules) in b.media.iter().zip(b.parts.iter_mut()) {
            for r in rules.iter_mut() {
                r.field = field(schemas, *schema, r);
            }
        }
    }
    RequestContract {
        schemas: schemas.clone(),
        params: params.into_boxed_slice(),
        body,
        limits,
    }
}

/// The query parameter a styled form field is read as: where the body's schema has the
/// property, and, for `deepObject`, where that property is an object (what the style reads).
fn field(schemas: &Schemas, body: Option<crate::schema::SchemaId>, r: &PartRule) -> Option<Param> {
    let f = r.form?;
    let prop = schemas.property(body?, &r.name)?;
    let types = schemas.types(prop);
    let object = types & crate::schema::ty::OBJECT != 0
        && types & (crate::schema::ty::ARRAY | crate::schema::ty::STRING) == 0;
    (f.json || f.style != Style::DeepObject || object).then(|| Param {
        name: r.name.clone(),
        location: In::Query,
        required: false,
        style: f.style,
        explode: f.explode,
        allow_empty: false,
        schema: Some(prop),
        json: f.json,
    })
}

/// Follows `$ref`s from the object at `at` to the object itself.
fn follow<'v>(
    compiler: &mut Compiler<'_>,
    root: &'v Value,
    at: &str,
) -> Option<(String, &'v Value)> {
    let mut ptr = at.to_owned();
    for _ in 0..32 {
        let v = root.pointer(&ptr)?;
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#') {
                Some(frag) => {
                    ptr = percent_encoding::percent_decode_str(frag)
                        .decode_utf8_lossy()
                        .into_owned();
                }
                None => {
                    compiler.push_error(CompileError {
                        pointer: format!("{ptr}/$ref"),
                        message: format!(
                            "`{r}` refers outside the document, which is not supported"
                        ),
                        hint: "copy the object into the document's `components`".into(),
                    });
                    return None;
                }
            },
            None => return Some((ptr, v)),
        }
    }
    None
}

/// A parameter object (or a header object with its `name` and `in` added); a header named in
/// `ignored` is not described by it and gives no parameter.
fn param(
    compiler: &mut Compiler<'_>,
    root: &Value,
    ptr: &str,
    p: &Value,
    ignored: &[&str],
) -> Option<Param> {
    let _ = root;
    let name = p.get("name").and_then(Value::as_str)?;
    let location = match p.get("in").and_then(Value::as_str)? {
        "path" => In::Path,
        "query" => In::Query,
        "header" => In::Header,
        "cookie" => In::Cookie,
        other => {
            compiler.push_error(CompileError {
                pointer: format!("{ptr}/in"),
                message: format!("`{other}` is not a parameter location"),
                hint: "use path, query, header or cookie".into(),
            });
            return None;
        }
    };
    if location == In::Header && ignored.contains(&name.to_ascii_lowercase().as_str()) {
        return None;
    }
    let default_style = match location {
        In::Query | In::Cookie => Style::Form,
        In::Path | In::Header => Style::Simple,
    };
    let style = match p.get("style").and_then(Value::as_str) {
        None => default_style,
        Some(s) => {
            let allowed: &[&str] = match location {
                In::Path => &["simple", "label", "matrix"],
                In::Query => &["form", "spaceDelimited", "pipeDelimited", "deepObject"],
                In::Header => &["simple"],
                In::Cookie => &["form"],
            };
            match Style::of(s).filter(|_| allowed.contains(&s)) {
                Some(st) => st,
                None => {
                    compiler.push_error(CompileError {
                        pointer: format!("{ptr}/style"),
                        message: format!("`{s}` is not a style of {} parameters", location.name()),
                        hint: format!("use one of {}", allowed.join(", ")),
                    });
                    return None;
                }
            }
        }
    };
    let explode = p
        .get("explode")
        .and_then(Value::as_bool)
        .unwrap_or(style == Style::Form);
    let required = location == In::Path || p.get("required") == Some(&Value::Bool(true));
    let allow_empty = p.get("allowEmptyValue") == Some(&Value::Bool(true));
    let (schema, json) = if p.get("schema").is_some() {
        (Some(compiler.schema(&format!("{ptr}/schema"))), false)
    } else if let Some(Value::Object(content)) = p.get("content") {
        match content.iter().next() {
            Some((media, m)) if m.get("schema").is_some() => {
                let essence = media
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                let json = essence == "application/json" || essence.ends_with("+json");
                let s = compiler.schema(&format!("{ptr}/content/{}/schema", escape(media)));
                // A non-JSON content type: the value is read like a styled one.
                (Some(s), json)
            }
            _ => (None, false),
        }
    } else {
        (None, false)
    };
    Some(Param {
        name: name.into(),
        location,
        required,
        style,
        explode,
        allow_empty,
        schema,
        json,
    })
}

fn body(compiler: &mut Compiler<'_>, root: &Value, ptr: &str, b: &Value) -> Option<BodyRule> {
    let content = b.get("content")?.as_object()?;
    let media = media(compiler, ptr, content);
    if media.is_empty() {
        return None;
    }
    // The `encoding` of a multipart or form entry: what each part or field may be.
    let parts = content
        .iter()
        .map(|(m, v)| {
            let essence = crate::request::essence(Some(m));
            let form = match &*essence {
                "multipart/form-data" => false,
                "application/x-www-form-urlencoded" => true,
                _ => return Box::default(),
            };
            let Some(encoding) = v.get("encoding").and_then(Value::as_object) else {
                return Box::default();
            };
            let at = format!("{ptr}/content/{}/encoding", escape(m));
            encoding
                .iter()
                .map(|(name, enc)| {
                    let at = format!("{at}/{}", escape(name));
                    if form {
                        field_rule(compiler, &at, name, enc)
                    } else {
                        part_rule(compiler, root, &at, name, enc)
                    }
                })
                .collect()
        })
        .collect();
    Some(BodyRule {
        required: b.get("required") == Some(&Value::Bool(true)),
        media,
        parts,
    })
}

/// One part's encoding object: the media types it may have (`contentType`) and its own
/// headers (`headers`, header objects, checked as header parameters are).
fn part_rule(
    compiler: &mut Compiler<'_>,
    root: &Value,
    ptr: &str,
    name: &str,
    enc: &Value,
) -> PartRule {
    let types = enc
        .get("contentType")
        .and_then(Value::as_str)
        .map(|list| {
            list.split(',')
                .map(|t| MediaRange(crate::request::essence(Some(t)).into()))
                .filter(|r| !r.0.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut headers = Vec::new();
    if let Some(map) = enc.get("headers").and_then(Value::as_object) {
        for header in map.keys() {
            let Some((hptr, h)) =
                follow(compiler, root, &format!("{ptr}/headers/{}", escape(header)))
            else {
                continue;
            };
            // A header object is a parameter object without its `name` and `in`.
            let mut p = h.clone();
            if let Value::Object(o) = &mut p {
                o.insert("name".into(), header.as_str().into());
                o.insert("in".into(), "header".into());
            }
            // OpenAPI: a part's `Content-Type` is `contentType`'s, not a header object's.
            if let Some(param) = param(compiler, root, &hptr, &p, &["content-type"]) {
                headers.push(param);
            }
        }
    }
    PartRule {
        name: name.into(),
        types,
        headers: headers.into(),
        form: None,
        field: None,
    }
}

/// One field's encoding object in a form body: how its value is written (`style`, `explode`,
/// as a query parameter's), or that it is JSON text (`contentType`). `form` is `None` when
/// it says neither, and the field is read as every other is.
fn field_rule(compiler: &mut Compiler<'_>, ptr: &str, name: &str, enc: &Value) -> PartRule {
    let json = enc
        .get("contentType")
        .and_then(Value::as_str)
        .is_some_and(|list| {
            list.split(',')
                .any(|t| crate::request::is_json(&crate::request::essence(Some(t))))
        });
    const STYLES: &[&str] = &["form", "spaceDelimited", "pipeDelimited", "deepObject"];
    let style = match enc.get("style") {
        None => None,
        Some(v) => match v
            .as_str()
            .and_then(|s| Style::of(s).filter(|_| STYLES.contains(&s)))
        {
            Some(st) => Some(st),
            None => {
                compiler.push_error(CompileError {
                    pointer: format!("{ptr}/style"),
                    message: format!(
                        "`{}` is not a style of a form body's fields",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    ),
                    hint: format!("use one of {}", STYLES.join(", ")),
                });
                None
            }
        },
    };
    let explode = enc.get("explode").and_then(Value::as_bool);
    let form = (json || style.is_some() || explode.is_some())
        .then(|| {
            let style = style.unwrap_or(Style::Form);
            crate::request::FieldStyle {
                style,
                explode: explode.unwrap_or(style == Style::Form),
                json,
            }
        })
        // Exploded `form` is how every field is read already: an array's items repeat the
        // field; an object's properties would be the body's own fields, so it is not one.
        .filter(|f| f.json || !(f.style == Style::Form && f.explode));
    PartRule {
        name: name.into(),
        types: Box::default(),
        headers: Box::default(),
        form,
        field: None,
    }
}

/// The media ranges of a `content` map, with their schemas compiled.
fn media(
    compiler: &mut Compiler<'_>,
    ptr: &str,
    content: &serde_json::Map<String, Value>,
) -> Box<[(MediaRange, Option<crate::schema::SchemaId>)]> {
    content
        .iter()
        .map(|(m, v)| {
            let range = crate::request::essence(Some(m));
            let schema = v
                .get("schema")
                .map(|_| compiler.schema(&format!("{ptr}/content/{}/schema", escape(m))));
            (MediaRange(range.into()), schema)
        })
        .collect()
}
