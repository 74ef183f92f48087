//! Request validation: a hostile body against schemas that use every kind of keyword, and the
//! same bytes as a query string against parameters of every style.

use std::sync::{Arc, OnceLock};

use portico_contract::{
    Compiler, Dialect, Direction, Limits, OperationRef, RequestContract, RequestParts, SchemaId,
    Schemas, Scratch, compile_operation, finish, validate_json, validate_streaming,
};
use serde_json::json;

const MAX_DEPTH: u32 = 16;
const MAX_ERRORS: usize = 8;

struct Fixture {
    schemas: Arc<Schemas>,
    roots: Vec<SchemaId>,
    query: RequestContract,
    /// `POST /m`, whose body is `multipart/form-data` or a form.
    upload: RequestContract,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": { "/q": { "get": { "parameters": [
                { "name": "n", "in": "query", "schema": { "type": "integer", "maximum": 9 } },
                { "name": "a", "in": "query", "explode": false, "schema": { "type": "array", "items": { "type": "number" } } },
                { "name": "p", "in": "query", "style": "pipeDelimited", "schema": { "type": "array", "items": { "type": "boolean" } } },
                { "name": "d", "in": "query", "style": "deepObject", "schema": { "$ref": "#/components/schemas/Item" } },
                { "name": "o", "in": "query", "explode": false, "schema": { "type": "object", "additionalProperties": { "type": "integer" } } },
                { "name": "j", "in": "query", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Tree" } } } }
            ] } },
            "/m": { "post": { "requestBody": { "content": { "multipart/form-data": { "schema": {
                "type": "object", "required": ["name"], "properties": {
                    "name": { "type": "string", "maxLength": 8 },
                    "n": { "type": "integer" },
                    "tags": { "type": "array", "items": { "type": "boolean" }, "maxItems": 3 },
                    "item": { "$ref": "#/components/schemas/Item" },
                    "trees": { "type": "array", "items": { "$ref": "#/components/schemas/Tree" } },
                    "file": { "type": "string", "format": "binary", "maxLength": 16 } } },
                "encoding": { "file": { "contentType": "application/octet-stream, image/*",
                                        "headers": { "X-Size": { "required": true,
                                            "schema": { "type": "array", "items": { "type": "integer", "minimum": 0 } } } } },
                              "item": { "contentType": "application/json" } } },
                "application/x-www-form-urlencoded": { "schema": { "type": "object", "properties": {
                    "a": { "type": "array", "items": { "type": "integer" }, "maxItems": 4 },
                    "p": { "type": "array", "items": { "type": "boolean" } },
                    "d": { "$ref": "#/components/schemas/Item" },
                    "o": { "type": "object", "additionalProperties": { "type": "integer" } },
                    "j": { "$ref": "#/components/schemas/Tree" } } },
                  "encoding": { "a": { "explode": false }, "p": { "style": "pipeDelimited" },
                                "d": { "style": "deepObject" }, "o": { "explode": false },
                                "j": { "contentType": "application/json" } } } } } } } },
            "components": { "schemas": {
                "Item": { "type": "object", "required": ["sku"], "additionalProperties": false,
                          "properties": { "sku": { "type": "string", "pattern": "^[A-Z]{3}-\\d+$" },
                                          "qty": { "type": "integer", "minimum": 1, "format": "int32" },
                                          "at": { "type": "string", "format": "date-time" } } },
                "Tree": { "type": ["object", "null"], "properties": {
                            "value": { "oneOf": [{ "type": "string", "maxLength": 4 }, { "type": "number", "multipleOf": 0.5 }] },
                            "kids": { "type": "array", "items": { "$ref": "#/components/schemas/Tree" }, "uniqueItems": true } } },
                "Stream": { "type": "object", "required": ["id", "lines"], "maxProperties": 6,
                    "properties": {
                        "id": { "type": "integer", "readOnly": true },
                        "lines": { "type": "array", "minItems": 1, "maxItems": 4, "items": { "$ref": "#/components/schemas/Item" } },
                        "tag": { "enum": ["a", "b", 3, null, true] },
                        "ratio": { "type": "number", "exclusiveMinimum": 0, "maximum": 1.5, "multipleOf": 0.25 },
                        "pair": { "type": "array", "prefixItems": [{ "const": "x" }, { "type": "boolean" }], "items": false },
                        "next": { "$ref": "#/components/schemas/Stream" },
                        "name": { "type": ["string", "null"], "minLength": 2, "format": "uuid" } },
                    "additionalProperties": { "type": "string", "maxLength": 3 } },
                "Mixed": { "anyOf": [
                    { "type": "array", "prefixItems": [{ "const": 1 }], "items": { "enum": ["x", 2, null] }, "contains": { "type": "null" } },
                    { "type": "object", "patternProperties": { "^[a-z]+$": { "type": "boolean" } },
                      "propertyNames": { "maxLength": 8 }, "dependentRequired": { "a": ["b"] }, "minProperties": 1 },
                    { "not": { "type": ["object", "array"] }, "if": { "type": "string" }, "then": { "format": "email" } }
                ] }
            } }
        });
        let mut c = Compiler::new(&doc, Dialect::Oas31);
        let roots = ["Item", "Tree", "Mixed", "Stream"]
            .iter()
            .map(|n| c.schema(&format!("/components/schemas/{n}")))
            .collect();
        let (params, body) = compile_operation(
            &mut c,
            &doc,
            &OperationRef {
                path_item: "/paths/~1q",
                operation: "/paths/~1q/get",
            },
        );
        let (upload_params, upload_body) = compile_operation(
            &mut c,
            &doc,
            &OperationRef {
                path_item: "/paths/~1m",
                operation: "/paths/~1m/post",
            },
        );
        let (schemas, errors) = c.finish();
        assert!(errors.is_empty(), "{errors:?}");
        let limits = Limits {
            max_body: 1 << 20,
            max_depth: MAX_DEPTH,
            max_errors: MAX_ERRORS,
        };
        let schemas = Arc::new(schemas);
        Fixture {
            query: finish(&schemas, params, body, limits),
            upload: finish(&schemas, upload_params, upload_body, limits),
            schemas,
            roots,
        }
    })
}

/// How deep a JSON value nests (a scalar is 0).
/// A JSON document as written: an object keeps every entry, a key written twice included
/// (`serde_json::Value` keeps the last), as the validator checks each.
#[derive(Debug)]
enum Doc {
    Scalar,
    Array(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

impl<'de> serde::Deserialize<'de> for Doc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Doc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Doc, E> {
                Ok(Doc::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Doc, E> {
                Ok(Doc::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Doc, E> {
                Ok(Doc::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Doc, E> {
                Ok(Doc::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Doc, E> {
                Ok(Doc::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::Scalar)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Doc, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Doc::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Doc, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = a.next_entry()? {
                    entries.push(e);
                }
                Ok(Doc::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Doc {
    fn depth(&self) -> u32 {
        match self {
            Doc::Scalar => 0,
            Doc::Array(a) => 1 + a.iter().map(Doc::depth).max().unwrap_or(0),
            Doc::Object(o) => 1 + o.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
        }
    }

    /// Whether a JSON pointer names a value (any of a key's entries may hold the rest).
    fn has(&self, pointer: &str) -> bool {
        let Some(rest) = pointer.strip_prefix('/') else {
            return pointer.is_empty();
        };
        let (seg, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let key = seg.replace("~1", "/").replace("~0", "~");
        match self {
            Doc::Scalar => false,
            Doc::Array(a) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .is_some_and(|v| v.has(tail)),
            Doc::Object(o) => o.iter().any(|(k, v)| *k == key && v.has(tail)),
        }
    }
}

/// Checking never panics. A body is read exactly when serde_json reads it (within the depth
/// limit), and the checker that reads as it goes agrees with the tree checker; the failures
/// are at most the bound, and each one's pointer names a value of the body (a key written
/// twice names both of its values). The same bytes as a query string, as a multipart body and
/// as a form body, are checked without panicking either, their failures bounded too.
pub fn contract_body(data: &[u8]) {
    let f = fixture();
    let mut scratch = Scratch::default();
    let parsed = serde_json::from_slice::<Doc>(data).ok();
    for root in &f.roots {
        let got = validate_json(
            &f.schemas,
            *root,
            data,
            &mut scratch,
            MAX_DEPTH,
            MAX_ERRORS,
            Direction::Request,
        );
        // The checker that reads as it goes says "valid" exactly when the tree checker does.
        if let Some(fast) =
            validate_streaming(&f.schemas, *root, data, MAX_DEPTH, Direction::Request)
        {
            let tree = matches!(&got, Ok(v) if v.is_empty());
            assert_eq!(fast, tree, "streaming and tree checks disagree: {got:?}");
        }
        match (&parsed, got) {
            (Some(v), Ok(violations)) => {
                assert!(violations.len() <= MAX_ERRORS + 1, "{violations:?}");
                for x in &violations {
                    assert!(
                        v.has(&x.pointer),
                        "pointer {} names no value of {v:?}",
                        x.pointer
                    );
                }
            }
            (Some(v), Err(e)) => assert!(
                v.depth() > MAX_DEPTH,
                "serde_json reads {v:?} (depth {}) but the validator does not: {e:?}",
                v.depth()
            ),
            (None, Ok(_)) => panic!("the validator reads what serde_json refuses"),
            (None, Err(_)) => {}
        }
    }
    if let Ok(q) = std::str::from_utf8(data) {
        let headers = http::HeaderMap::new();
        let parts = RequestParts {
            path: &[],
            query: Some(q),
            headers: &headers,
        };
        let mut failures = Vec::new();
        let _ = f
            .query
            .check_head(&parts, false, &mut scratch, &mut failures);
        assert!(failures.len() <= MAX_ERRORS + 1, "{failures:?}");
    }
    // The same bytes as a multipart body with the boundary `B`, and as a form body (some of
    // its fields in their encoding's style).
    for content_type in [
        "multipart/form-data; boundary=B",
        "application/x-www-form-urlencoded",
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        let parts = RequestParts {
            path: &[],
            query: None,
            headers: &headers,
        };
        let mut failures = Vec::new();
        let plan = f
            .upload
            .check_head(&parts, true, &mut scratch, &mut failures);
        let Ok(portico_contract::BodyPlan::Check(check)) = plan else {
            panic!("a {content_type} body is checked: {plan:?} {failures:?}");
        };
        let _ = f
            .upload
            .check_body(check, data, &mut scratch, &mut failures);
        assert!(failures.len() <= MAX_ERRORS + 1, "{failures:?}");
    }
}
