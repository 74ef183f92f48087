//! Mocks: the fixed answer an operation's route gives instead of calling an upstream, taken from
//! the examples of the operation's responses.

use crate::tree::{Loc, Node, NodeKind, suggest};

use super::super::ctx::get;
use super::doc::{Operation, Problem, resolve};

/// What the config asks of a mock: each `None` is chosen from the document.
#[derive(Default)]
pub(super) struct Want<'c> {
    pub status: Option<(u16, Loc)>,
    pub example: Option<(&'c str, Loc)>,
    pub media_type: Option<(&'c str, Loc)>,
}

/// The answer of a mocked operation.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answer {
    pub status: u16,
    pub body: String,
    pub content_type: Option<String>,
}

/// A problem, in the config (what it asks for is not in the document) or in the document.
pub(super) enum Fault {
    Config(Loc, String, String),
    Doc(Problem),
}

fn doc(loc: Loc, msg: impl Into<String>, hint: impl Into<String>) -> Fault {
    Fault::Doc(Problem {
        loc,
        msg: msg.into(),
        hint: hint.into(),
    })
}

fn entries(n: &Node) -> &[(Node, Node)] {
    match &n.kind {
        NodeKind::Map(e) => e,
        _ => &[],
    }
}

fn is_json(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// The media type a mock answers with when the config names none: JSON if there is one, else
/// the first.
fn default_media(content: &Node) -> Option<&(Node, Node)> {
    let e = entries(content);
    e.iter().find(|(k, _)| is_json(&k.key_text())).or(e.first())
}

/// The example of a media type object: `example`, else the first of `examples`, else the
/// schema's `example` (3.0) or first `examples` item (3.1).
fn first_example<'n>(root: &'n Node, media: &'n Node) -> Result<Option<&'n Node>, Fault> {
    if let Some(e) = get(media, "example") {
        return Ok(Some(e));
    }
    if let Some((name, e)) = get(media, "examples").and_then(|e| entries(e).first()) {
        return example_value(root, &name.key_text(), name.loc, e).map(Some);
    }
    let Some(schema) = get(media, "schema") else {
        return Ok(None);
    };
    let schema = resolve(root, schema).map_err(Fault::Doc)?;
    if let Some(e) = get(schema, "example") {
        return Ok(Some(e));
    }
    Ok(match get(schema, "examples").map(|e| &e.kind) {
        Some(NodeKind::Seq(items)) => items.first(),
        _ => None,
    })
}

/// The `value` of an Example Object.
fn example_value<'n>(
    root: &'n Node,
    name: &str,
    at: Loc,
    example: &'n Node,
) -> Result<&'n Node, Fault> {
    let example = resolve(root, example).map_err(Fault::Doc)?;
    match get(example, "value") {
        Some(v) => Ok(v),
        None if get(example, "externalValue").is_some() => Err(doc(
            at,
            format!("mock: the example `{name}` has only an `externalValue`, which is not fetched"),
            "write the example under `value`",
        )),
        None => Err(doc(
            at,
            format!("mock: the example `{name}` has no `value`"),
            "write the example under `value`",
        )),
    }
}

/// Whether a response has an example to answer with.
fn has_example(root: &Node, response: &Node) -> bool {
    let Ok(response) = resolve(root, response) else {
        return false;
    };
    get(response, "content")
        .and_then(default_media)
        .and_then(|(_, m)| resolve(root, m).ok())
        .is_some_and(|m| matches!(first_example(root, m), Ok(Some(_))))
}

/// The status a mock answers with when the config names none: the lowest 2xx with an example,
/// else the lowest 2xx, else `2XX` or `default` (as 200).
fn default_status<'n>(root: &Node, responses: &'n Node) -> Option<(u16, &'n Node)> {
    let mut ok: Vec<(u16, &Node)> = entries(responses)
        .iter()
        .filter_map(|(k, v)| {
            let code = k.key_text().parse::<u16>().ok()?;
            (200..300).contains(&code).then_some((code, v))
        })
        .collect();
    ok.sort_by_key(|(c, _)| *c);
    ok.iter()
        .find(|(_, v)| has_example(root, v))
        .or(ok.first())
        .copied()
        .or_else(|| {
            ["2XX", "default"]
                .iter()
                .find_map(|k| get(responses, k).map(|v| (200, v)))
        })
}

/// The answer of a mocked operation.
pub(super) fn answer(root: &Node, op: &Operation<'_>, want: &Want<'_>) -> Result<Answer, Fault> {
    let Some(responses) = get(op.node, "responses") else {
        return Err(doc(
            op.method_loc,
            "mock: the operation has no `responses`",
            "add `responses:` with an example, or route the operation to an upstream",
        ));
    };
    let responses = resolve(root, responses).map_err(Fault::Doc)?;
    let (status, response) = match want.status {
        Some((code, at)) => {
            let Some((_, r)) = entries(responses)
                .iter()
                .find(|(k, _)| k.key_text() == code.to_string())
            else {
                let codes: Vec<String> = entries(responses)
                    .iter()
                    .map(|(k, _)| k.key_text())
                    .collect();
                return Err(Fault::Config(
                    at,
                    format!("mock: the operation's `responses` have no `{code}`"),
                    format!("it has: {}", codes.join(", ")),
                ));
            };
            (code, r)
        }
        None => default_status(root, responses).ok_or_else(|| {
            doc(
                responses.loc,
                "mock: the operation has no 2xx, `2XX` or `default` response to answer with",
                "add one, or set `mock: { status: … }` in the config",
            )
        })?,
    };
    let response = resolve(root, response).map_err(Fault::Doc)?;
    let content = get(response, "content").filter(|c| !entries(c).is_empty());
    let Some(content) = content else {
        if let Some((_, at)) = want.media_type.or(want.example) {
            return Err(Fault::Config(
                at,
                format!("mock: the `{status}` response has no content"),
                "remove `media_type` and `example`; the mock answers with an empty body".into(),
            ));
        }
        return Ok(Answer {
            status,
            body: String::new(),
            content_type: None,
        });
    };
    let (mt_key, media) = match want.media_type {
        Some((mt, at)) => {
            let found = entries(content).iter().find(|(k, _)| k.key_text() == mt);
            let Some((k, m)) = found else {
                let known: Vec<String> =
                    entries(content).iter().map(|(k, _)| k.key_text()).collect();
                let refs: Vec<&str> = known.iter().map(String::as_str).collect();
                return Err(Fault::Config(
                    at,
                    format!("mock: the `{status}` response has no `{mt}` content"),
                    suggest(mt, &refs),
                ));
            };
            (k, m)
        }
        None => {
            let (k, m) = default_media(content).expect("content is not empty");
            (k, m)
        }
    };
    let mt = mt_key.key_text();
    let media = resolve(root, media).map_err(Fault::Doc)?;
    let example = match want.example {
        Some((name, at)) => {
            let examples = get(media, "examples").map(entries).unwrap_or_default();
            let Some((k, e)) = examples.iter().find(|(k, _)| k.key_text() == name) else {
                let known: Vec<String> = examples.iter().map(|(k, _)| k.key_text()).collect();
                let refs: Vec<&str> = known.iter().map(String::as_str).collect();
                return Err(Fault::Config(
                    at,
                    format!("mock: `{mt}` of the `{status}` response has no example `{name}`"),
                    suggest(name, &refs),
                ));
            };
            example_value(root, name, k.loc, e)?
        }
        None => match first_example(root, media)? {
            Some(e) => e,
            // No example: a JSON answer is made from the schema, the smallest value it takes.
            None if is_json(&mt) && get(media, "schema").is_some() => {
                let schema = get(media, "schema").expect("checked");
                let value = minimal(root, schema, 0).map_err(|(loc, why)| {
                    doc(
                        loc,
                        format!("mock: no example for {status} {mt}, and no value can be made from its schema: {why}"),
                        "add `example:` (or `examples:`) under the media type",
                    )
                })?;
                return Ok(Answer {
                    status,
                    body: serde_json::to_string(&value).expect("JSON values serialize"),
                    content_type: Some(mt),
                });
            }
            None => {
                return Err(doc(
                    mt_key.loc,
                    format!("mock: no example for {status} {mt}"),
                    "add `example:` (or `examples:`) under it, or set `mock: { status: … }` in the config to a response that has one",
                ));
            }
        },
    };
    let body = if is_json(&mt) {
        serde_json::to_string(&example.to_json()).expect("JSON values serialize")
    } else {
        match &example.kind {
            NodeKind::Str(s) => s.clone(),
            _ => {
                return Err(doc(
                    example.loc,
                    format!(
                        "mock: the example for {status} {mt} is {}, and only JSON media types take structured examples",
                        example.type_name()
                    ),
                    "write the example as the text of the body",
                ));
            }
        }
    };
    Ok(Answer {
        status,
        body,
        content_type: Some(mt),
    })
}

/// How deep a made value may nest: a schema whose required properties lead back to itself has
/// no finite value.
const MAX_MADE_DEPTH: u32 = 16;

/// The smallest value a schema takes, for a mock without an example: its `const`, `enum`,
/// `default` or example when it has one; else the required properties of an object, `minItems`
/// items of an array, a string of `minLength` (a sample of its `format`), the least number
/// within the bounds, `false`, `null`. A `pattern` without an example is refused: no value
/// can be promised to match it.
fn minimal(root: &Node, schema: &Node, depth: u32) -> Result<serde_json::Value, (Loc, String)> {
    use serde_json::{Value, json};
    if depth > MAX_MADE_DEPTH {
        return Err((
            schema.loc,
            "its required properties nest without end".into(),
        ));
    }
    let s = resolve(root, schema).map_err(|p| (p.loc, p.msg))?;
    match &s.kind {
        NodeKind::Bool(true) => return Ok(Value::Null),
        NodeKind::Bool(false) => return Err((s.loc, "the schema `false` takes no value".into())),
        NodeKind::Map(_) => {}
        _ => return Err((s.loc, "the schema is not a mapping".into())),
    }
    for key in ["const", "default", "example"] {
        if let Some(v) = get(s, key) {
            return Ok(v.to_json());
        }
    }
    for key in ["enum", "examples"] {
        if let Some(NodeKind::Seq(items)) = get(s, key).map(|n| &n.kind)
            && let Some(first) = items.first()
        {
            return Ok(first.to_json());
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(NodeKind::Seq(items)) = get(s, key).map(|n| &n.kind)
            && let Some(first) = items.first()
        {
            return minimal(root, first, depth + 1);
        }
    }
    // `allOf`: the parts' objects merged (a part that is not an object decides alone).
    let mut merged = serde_json::Map::new();
    if let Some(NodeKind::Seq(parts)) = get(s, "allOf").map(|n| &n.kind) {
        for part in parts {
            match minimal(root, part, depth + 1)? {
                Value::Object(o) => merged.extend(o),
                other if parts.len() == 1 => return Ok(other),
                _ => {}
            }
        }
    }
    let ty = match get(s, "type").map(|t| &t.kind) {
        Some(NodeKind::Str(t)) => t.clone(),
        Some(NodeKind::Seq(ts)) => ts
            .iter()
            .filter_map(Node::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null")
            .to_owned(),
        _ if get(s, "properties").is_some()
            || get(s, "required").is_some()
            || !merged.is_empty() =>
        {
            "object".into()
        }
        _ if get(s, "items").is_some() => "array".into(),
        _ => {
            return Ok(if get(s, "allOf").is_some() {
                Value::Object(merged)
            } else {
                Value::Null
            });
        }
    };
    let number = |k: &str| match get(s, k).map(|n| &n.kind) {
        Some(NodeKind::Int(i)) => Some(*i as f64),
        Some(NodeKind::UInt(u)) => Some(*u as f64),
        Some(NodeKind::Float(f)) => Some(*f),
        _ => None,
    };
    let count = |k: &str| number(k).map_or(0, |n| n.max(0.0) as usize);
    Ok(match ty.as_str() {
        "object" => {
            let mut out = merged;
            if let Some(NodeKind::Seq(required)) = get(s, "required").map(|n| &n.kind) {
                for name in required.iter().filter_map(Node::as_str) {
                    if out.contains_key(name) {
                        continue;
                    }
                    let prop = get(s, "properties").and_then(|p| get(p, name));
                    let v = match prop {
                        Some(p) => minimal(root, p, depth + 1)?,
                        None => Value::Null,
                    };
                    out.insert(name.to_owned(), v);
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = count("minItems").min(64);
            let item = match get(s, "items") {
                Some(i) if n > 0 => minimal(root, i, depth + 1)?,
                _ => Value::Null,
            };
            Value::Array(vec![item; n])
        }
        "string" => {
            if get(s, "pattern").is_some() {
                return Err((s.loc, "it has a `pattern`".into()));
            }
            let sample = match get(s, "format").and_then(Node::as_str) {
                Some("date") => "2024-01-01",
                Some("date-time") => "2024-01-01T00:00:00Z",
                Some("time") => "00:00:00Z",
                Some("uuid") => "00000000-0000-4000-8000-000000000000",
                Some("email") => "user@example.com",
                Some("ipv4") => "192.0.2.1",
                Some("ipv6") => "2001:db8::1",
                Some("uri" | "url") => "https://example.com/",
                Some("hostname") => "example.com",
                _ => "",
            };
            let min = count("minLength").min(4096);
            let mut text = sample.to_owned();
            while text.chars().count() < min {
                text.push('x');
            }
            Value::String(text)
        }
        "integer" | "number" => {
            let integer = ty == "integer";
            let step = number("multipleOf").filter(|m| *m > 0.0);
            let (mut lo, mut lo_open) = (
                number("minimum"),
                get(s, "exclusiveMinimum").is_some_and(|e| matches!(e.kind, NodeKind::Bool(true))),
            );
            if let Some(e) = number("exclusiveMinimum")
                && lo.is_none_or(|l| e >= l)
            {
                (lo, lo_open) = (Some(e), true);
            }
            let mut v = lo.unwrap_or(0.0_f64.min(number("maximum").unwrap_or(0.0)));
            if let Some(m) = step {
                v = (v / m).ceil() * m;
                if lo_open && lo == Some(v) {
                    v += m;
                }
            } else if lo_open && lo == Some(v) {
                v += if integer {
                    1.0
                } else {
                    1e-6_f64.max(v.abs() * 1e-9)
                };
            }
            if integer {
                let v = v.ceil();
                if v.abs() < 9e15 {
                    json!(v as i64)
                } else {
                    json!(v)
                }
            } else if v.fract() == 0.0 && v.abs() < 9e15 {
                json!(v as i64)
            } else {
                json!(v)
            }
        }
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    })
}
