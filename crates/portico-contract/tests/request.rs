//! Requests checked against operations: every parameter style and location, content types,
//! bodies, and the bounds.

use std::sync::Arc;

use portico_contract::{
    BodyPlan, Compiler, Dialect, Failure, Limits, OperationRef, RequestContract, RequestParts,
    Scratch, compile_operation, finish,
};
use serde_json::{Value, json};

/// The contract of `paths./t.<method>` in a document with the given operation.
fn contract(op: Value, dialect: Dialect) -> RequestContract {
    let doc = json!({
        "openapi": if dialect == Dialect::Oas30 { "3.0.3" } else { "3.1.0" },
        "paths": { "/t": { "post": op } },
        "components": { "schemas": {
            "Qty": { "type": "integer", "minimum": 1 },
            "Item": { "type": "object", "required": ["sku", "qty", "id"],
                      "properties": { "sku": { "type": "string", "pattern": "^[A-Z]{3}-[0-9]+$" },
                                      "qty": { "$ref": "#/components/schemas/Qty" },
                                      "id": { "type": "integer", "readOnly": true } } }
        },
        "headers": {
            "Checksum": { "required": true,
                          "schema": { "type": "string", "pattern": "^[0-9a-f]{8}$" } }
        } }
    });
    let mut c = Compiler::new(&doc, dialect);
    let (params, body) = compile_operation(
        &mut c,
        &doc,
        &OperationRef {
            path_item: "/paths/~1t",
            operation: "/paths/~1t/post",
        },
    );
    let (schemas, errors) = c.finish();
    assert!(errors.is_empty(), "{errors:?}");
    finish(&Arc::new(schemas), params, body, Limits::default())
}

struct Req<'a> {
    path: Vec<(&'a str, &'a str)>,
    query: Option<&'a str>,
    headers: http::HeaderMap,
    body: Option<&'a str>,
    /// Bytes sent instead of `body` (which must then be set), for bodies that are not UTF-8.
    raw: Option<&'a [u8]>,
}

fn req<'a>() -> Req<'a> {
    Req {
        path: Vec::new(),
        query: None,
        headers: http::HeaderMap::new(),
        body: None,
        raw: None,
    }
}

impl<'a> Req<'a> {
    fn query(mut self, q: &'a str) -> Self {
        self.query = Some(q);
        self
    }
    fn path(mut self, n: &'a str, v: &'a str) -> Self {
        self.path.push((n, v));
        self
    }
    fn header(mut self, n: &'static str, v: &str) -> Self {
        self.headers.append(n, v.parse().unwrap());
        self
    }
    fn json(mut self, b: &'a str) -> Self {
        self.headers
            .insert("content-type", "application/json".parse().unwrap());
        self.body = Some(b);
        self
    }

    /// The failures (status and list) of checking this request; empty when it passes.
    fn check(&self, c: &RequestContract) -> (u16, Vec<Failure>) {
        let parts = RequestParts {
            path: &self.path,
            query: self.query,
            headers: &self.headers,
        };
        let mut s = Scratch::default();
        let mut f = Vec::new();
        match c.check_head(&parts, self.body.is_some(), &mut s, &mut f) {
            Err(status) => (status, f),
            Ok(BodyPlan::Pass) => (200, f),
            Ok(BodyPlan::Check(schema)) => {
                let bytes = self.raw.unwrap_or_else(|| self.body.unwrap().as_bytes());
                match c.check_body(schema, bytes, &mut s, &mut f) {
                    Ok(()) => (200, f),
                    Err(status) => (status, f),
                }
            }
        }
    }
}

fn ok(c: &RequestContract, r: Req<'_>) {
    let (status, f) = r.check(c);
    assert_eq!(status, 200, "{f:#?}");
}

/// Checks the refusal: status, and (location, pointer, keyword) of each failure.
fn refused(c: &RequestContract, r: Req<'_>, status: u16, want: &[(&str, &str, &str)]) {
    let (got, f) = r.check(c);
    assert_eq!(got, status, "{f:#?}");
    let seen: Vec<(&str, &str, &str)> = f
        .iter()
        .map(|f| (f.location, f.pointer.as_str(), f.keyword))
        .collect();
    assert_eq!(seen, want, "{f:#?}");
}

fn param(name: &str, location: &str, schema: Value, extra: Value) -> Value {
    let mut p = json!({ "name": name, "in": location, "schema": schema });
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    p
}

#[test]
fn query_scalars_take_their_schema_type() {
    let c = contract(
        json!({ "parameters": [
            param("limit", "query", json!({"type": "integer", "maximum": 100}), json!({"required": true})),
            param("ratio", "query", json!({"type": "number"}), json!({})),
            param("on", "query", json!({"type": "boolean"}), json!({})),
            param("q", "query", json!({"type": "string", "minLength": 2}), json!({})),
        ]}),
        Dialect::Oas31,
    );
    ok(&c, req().query("limit=10&ratio=0.5&on=true&q=ab"));
    ok(&c, req().query("limit=100&q=%C3%A9t%C3%A9"));
    refused(&c, req(), 400, &[("query", "", "required")]);
    refused(
        &c,
        req().query("limit=101"),
        400,
        &[("query", "", "maximum")],
    );
    refused(&c, req().query("limit=ten"), 400, &[("query", "", "type")]);
    // JSON's number grammar: no `+`, no leading zeros, no `NaN`.
    refused(&c, req().query("limit=+5"), 400, &[("query", "", "type")]);
    refused(&c, req().query("limit=05"), 400, &[("query", "", "type")]);
    refused(
        &c,
        req().query("limit=1&ratio=NaN"),
        400,
        &[("query", "", "type")],
    );
    refused(
        &c,
        req().query("limit=1&on=yes"),
        400,
        &[("query", "", "type")],
    );
    refused(
        &c,
        req().query("limit=1&q=a"),
        400,
        &[("query", "", "minLength")],
    );
    // Every failure at once.
    refused(
        &c,
        req().query("limit=x&on=1&q=a"),
        400,
        &[
            ("query", "", "type"),
            ("query", "", "type"),
            ("query", "", "minLength"),
        ],
    );
}

#[test]
fn query_arrays_in_every_style() {
    let ids = json!({"type": "array", "items": {"type": "integer"}, "maxItems": 3});
    let cases = [
        (
            json!({}),
            "id=1&id=2&id=3",
            "id=1&id=x",
            "id=1&id=2&id=3&id=4",
        ),
        (
            json!({"explode": false}),
            "id=1,2,3",
            "id=1,x",
            "id=1,2,3,4",
        ),
        (
            json!({"style": "spaceDelimited", "explode": false}),
            "id=1%202%203",
            "id=1%20x",
            "id=1%202%203%204",
        ),
        (
            json!({"style": "pipeDelimited", "explode": false}),
            "id=1|2|3",
            "id=1|x",
            "id=1|2|3|4",
        ),
    ];
    for (style, good, bad_item, too_many) in cases {
        let c = contract(
            json!({ "parameters": [param("id", "query", ids.clone(), style.clone())] }),
            Dialect::Oas31,
        );
        ok(&c, req().query(good));
        refused(&c, req().query(bad_item), 400, &[("query", "/1", "type")]);
        refused(&c, req().query(too_many), 400, &[("query", "", "maxItems")]);
    }
}

#[test]
fn query_objects_exploded_and_deep() {
    let point = json!({"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "additionalProperties": false});
    // form, exploded: the properties are parameters of their own; other names are other
    // parameters, not extra properties.
    let c = contract(
        json!({ "parameters": [param("p", "query", point.clone(), json!({}))] }),
        Dialect::Oas31,
    );
    ok(&c, req().query("x=1&y=2&other=z"));
    refused(&c, req().query("x=a"), 400, &[("query", "/x", "type")]);
    // form, not exploded: `k,v,k,v`.
    let c = contract(
        json!({ "parameters": [param("p", "query", point.clone(), json!({"explode": false}))] }),
        Dialect::Oas31,
    );
    ok(&c, req().query("p=x,1,y,2"));
    refused(&c, req().query("p=y,2"), 400, &[("query", "", "required")]);
    refused(&c, req().query("p=x,1,y"), 400, &[("query", "", "style")]);
    // deepObject: `p[x]=1`; an unknown key is an extra property.
    let c = contract(
        json!({ "parameters": [param("p", "query", point, json!({"style": "deepObject"}))] }),
        Dialect::Oas31,
    );
    ok(&c, req().query("p%5Bx%5D=1&p[y]=2"));
    refused(
        &c,
        req().query("p[x]=1&p[z]=3"),
        400,
        &[("query", "/z", "additionalProperties")],
    );
    // A key written twice, or nested, would be read upstream another way: refused.
    refused(
        &c,
        req().query("p[x]=1&p[y]=2&p[x]=9"),
        400,
        &[("query", "", "style")],
    );
    refused(
        &c,
        req().query("p[x][0]=1&p[y]=2"),
        400,
        &[("query", "", "style")],
    );
}

#[test]
fn a_nullable_parameter_takes_null() {
    let c = contract(
        json!({ "parameters": [param("n", "query", json!({"type": "integer", "nullable": true}), json!({}))] }),
        Dialect::Oas30,
    );
    ok(&c, req().query("n=null"));
    ok(&c, req().query("n=4"));
    refused(&c, req().query("n=nil"), 400, &[("query", "", "type")]);
}

#[test]
fn empty_values_pass_only_when_allowed() {
    let c = contract(
        json!({ "parameters": [
            param("a", "query", json!({"type": "integer"}), json!({"allowEmptyValue": true})),
            param("b", "query", json!({"type": "integer"}), json!({})),
        ]}),
        Dialect::Oas30,
    );
    ok(&c, req().query("a="));
    refused(&c, req().query("b="), 400, &[("query", "", "type")]);
}

#[test]
fn path_parameters_in_simple_label_and_matrix_style() {
    let int = json!({"type": "integer", "minimum": 1});
    let list = json!({"type": "array", "items": {"type": "integer"}});
    let obj = json!({"type": "object", "properties": {"r": {"type": "integer"}}});
    let cases: Vec<(Value, Value, &str, &str)> = vec![
        (int.clone(), json!({}), "5", "0"),
        (int.clone(), json!({"style": "label"}), ".5", ".0"),
        (int.clone(), json!({"style": "matrix"}), ";id=5", ";id=0"),
        (list.clone(), json!({}), "3,4,5", "3,x"),
        (list.clone(), json!({"style": "label"}), ".3,4", ".3,x"),
        (
            list.clone(),
            json!({"style": "label", "explode": true}),
            ".3.4",
            ".3.x",
        ),
        (
            list.clone(),
            json!({"style": "matrix"}),
            ";id=3,4",
            ";id=3,x",
        ),
        (
            list.clone(),
            json!({"style": "matrix", "explode": true}),
            ";id=3;id=4",
            ";id=3;id=x",
        ),
        (obj.clone(), json!({}), "r,100", "r,x"),
        (obj.clone(), json!({"explode": true}), "r=100", "r=x"),
        (
            obj.clone(),
            json!({"style": "matrix", "explode": true}),
            ";r=100",
            ";r=x",
        ),
    ];
    for (schema, style, good, bad) in cases {
        let c = contract(
            json!({ "parameters": [param("id", "path", schema.clone(), style.clone())] }),
            Dialect::Oas31,
        );
        ok(&c, req().path("id", good));
        let (status, f) = req().path("id", bad).check(&c);
        assert_eq!(status, 400, "{schema} {style} {bad}: {f:?}");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].location, "path");
    }
    // Percent-encoded in the path, decoded before the check.
    let c = contract(
        json!({ "parameters": [param("id", "path", json!({"type": "string", "pattern": "^a b$"}), json!({}))] }),
        Dialect::Oas31,
    );
    ok(&c, req().path("id", "a%20b"));
    // A label without its dot is a style failure.
    let c = contract(
        json!({ "parameters": [param("id", "path", int, json!({"style": "label"}))] }),
        Dialect::Oas31,
    );
    refused(&c, req().path("id", "5"), 400, &[("path", "", "style")]);
}

#[test]
fn headers_and_cookies() {
    let c = contract(
        json!({ "parameters": [
            param("X-Rate", "header", json!({"type": "integer", "maximum": 10}), json!({"required": true})),
            param("X-Tags", "header", json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}}), json!({})),
            param("session", "cookie", json!({"type": "string", "format": "uuid"}), json!({})),
            // Described by the media types and the security schemes, not by parameters.
            param("Content-Type", "header", json!({"type": "string", "enum": ["never"]}), json!({})),
        ]}),
        Dialect::Oas31,
    );
    ok(
        &c,
        req()
            .header("x-rate", "3")
            .header("x-tags", "a, b")
            .header("x-tags", "a"),
    );
    ok(
        &c,
        req().header("x-rate", "3").header(
            "cookie",
            "theme=dark; session=123e4567-e89b-12d3-a456-426614174000",
        ),
    );
    refused(&c, req(), 400, &[("header", "", "required")]);
    refused(
        &c,
        req().header("x-rate", "11"),
        400,
        &[("header", "", "maximum")],
    );
    refused(
        &c,
        req().header("x-rate", "1").header("x-tags", "a,c"),
        400,
        &[("header", "/1", "enum")],
    );
    refused(
        &c,
        req().header("x-rate", "1").header("cookie", "session=nope"),
        400,
        &[("cookie", "", "format")],
    );
}

#[test]
fn json_content_parameters_are_read_as_json() {
    let c = contract(
        json!({ "parameters": [{ "name": "filter", "in": "query",
            "content": { "application/json": { "schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}} } } }] }),
        Dialect::Oas31,
    );
    ok(&c, req().query("filter=%7B%22n%22%3A1%7D"));
    refused(
        &c,
        req().query("filter=%7B%22n%22%3A%22x%22%7D"),
        400,
        &[("query", "/n", "type")],
    );
    refused(
        &c,
        req().query("filter=%7Bnope"),
        400,
        &[("query", "", "style")],
    );
}

#[test]
fn operation_parameters_replace_path_item_ones() {
    let doc = json!({
        "openapi": "3.1.0",
        "paths": { "/t": {
            "parameters": [param("v", "query", json!({"type": "integer"}), json!({"required": true}))],
            "post": { "parameters": [param("v", "query", json!({"type": "string"}), json!({}))] }
        } }
    });
    let mut c = Compiler::new(&doc, Dialect::Oas31);
    let (params, body) = compile_operation(
        &mut c,
        &doc,
        &OperationRef {
            path_item: "/paths/~1t",
            operation: "/paths/~1t/post",
        },
    );
    let (schemas, _) = c.finish();
    let c = finish(&Arc::new(schemas), params, body, Limits::default());
    assert_eq!(c.params.len(), 1);
    ok(&c, req());
    ok(&c, req().query("v=text"));
}

#[test]
fn bodies_by_content_type() {
    let c = contract(
        json!({ "requestBody": { "required": true, "content": {
            "application/json": { "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}, "minItems": 1} },
            "text/*": {}
        } } }),
        Dialect::Oas31,
    );
    // `id` is required but `readOnly`: answered, not sent, so not required of requests.
    ok(&c, req().json(r#"[{"sku": "ABC-1", "qty": 2}]"#));
    refused(
        &c,
        req().json(r#"[{"sku": "abc", "qty": 0}, {"qty": "2"}]"#),
        400,
        &[
            ("body", "/0/sku", "pattern"),
            ("body", "/0/qty", "minimum"),
            ("body", "/1", "required"),
            ("body", "/1/qty", "type"),
        ],
    );
    refused(&c, req().json("[]"), 400, &[("body", "", "minItems")]);
    refused(&c, req().json("[{"), 400, &[("body", "", "json")]);
    refused(&c, req(), 400, &[("body", "", "required")]);
    // Text passes unchecked; a media type the operation does not take is 415.
    let mut r = req();
    r.headers
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r.body = Some("hello");
    ok(&c, r);
    let mut r = req();
    r.headers
        .insert("content-type", "application/xml".parse().unwrap());
    r.body = Some("<a/>");
    refused(&c, r, 415, &[("header", "", "content")]);
    let mut r = req();
    r.body = Some("{}");
    refused(&c, r, 415, &[("header", "", "content")]);
    // `+json` media types are JSON; parameters on the content type are ignored.
    let c = contract(
        json!({ "requestBody": { "content": { "application/merge-patch+json": { "schema": {"type": "object", "maxProperties": 1} } } } }),
        Dialect::Oas31,
    );
    let mut r = req();
    r.headers.insert(
        "content-type",
        "Application/Merge-Patch+JSON; charset=utf-8"
            .parse()
            .unwrap(),
    );
    r.body = Some(r#"{"a": 1, "b": 2}"#);
    refused(&c, r, 400, &[("body", "", "maxProperties")]);
    // Not required, not sent: nothing to check.
    ok(&c, req());
}

#[test]
fn openapi_3_0_nullable_and_boolean_exclusive_bounds() {
    let c = contract(
        json!({ "requestBody": { "content": { "application/json": { "schema": {
            "type": "object", "properties": {
                "n": {"type": "integer", "nullable": true, "minimum": 0, "exclusiveMinimum": true},
                "s": {"type": "string"}
            } } } } } }),
        Dialect::Oas30,
    );
    ok(&c, req().json(r#"{"n": null, "s": "x"}"#));
    ok(&c, req().json(r#"{"n": 1}"#));
    refused(
        &c,
        req().json(r#"{"n": 0}"#),
        400,
        &[("body", "/n", "minimum")],
    );
    refused(
        &c,
        req().json(r#"{"s": null}"#),
        400,
        &[("body", "/s", "type")],
    );
}

#[test]
fn failures_are_bounded_and_depth_is_limited() {
    let doc = json!({
        "openapi": "3.1.0",
        "paths": { "/t": { "post": { "requestBody": { "content": { "application/json": { "schema": {
            "type": "array", "items": {"type": "integer"} } } } } } } }
    });
    let mut c = Compiler::new(&doc, Dialect::Oas31);
    let (params, body) = compile_operation(
        &mut c,
        &doc,
        &OperationRef {
            path_item: "/paths/~1t",
            operation: "/paths/~1t/post",
        },
    );
    let (schemas, _) = c.finish();
    let limits = Limits {
        max_body: 1 << 20,
        max_depth: 4,
        max_errors: 3,
    };
    let c = finish(&Arc::new(schemas), params, body, limits);
    let (status, f) = req().json(r#"["a", "b", "c", "d", "e"]"#).check(&c);
    assert_eq!(status, 400);
    assert_eq!(f.len(), 3, "{f:?}");
    let (status, f) = req().json("[[[[[1]]]]]").check(&c);
    assert_eq!(status, 400);
    assert_eq!(f[0].keyword, "maxDepth");
}

#[test]
fn messages_say_what_is_wrong() {
    let c = contract(
        json!({ "requestBody": { "content": { "application/json": { "schema": {"$ref": "#/components/schemas/Item"} } } } }),
        Dialect::Oas31,
    );
    let (_, f) = req().json(r#"{"sku": 5, "qty": 0, "x~y/z": 1}"#).check(&c);
    let msgs: Vec<String> = f
        .iter()
        .map(|f| format!("{} {}", f.pointer, f.message))
        .collect();
    assert_eq!(
        msgs,
        [
            "/sku expected string, got integer",
            "/qty must be at least 1"
        ]
    );
    let c = contract(
        json!({ "requestBody": { "content": { "application/json": { "schema": {
            "type": "object", "additionalProperties": false, "properties": {"a": {"enum": ["x", "y"]}} } } } } }),
        Dialect::Oas31,
    );
    let (_, f) = req().json(r#"{"a": "z", "x~y/z": 1}"#).check(&c);
    let msgs: Vec<String> = f
        .iter()
        .map(|f| format!("{} {}", f.pointer, f.message))
        .collect();
    assert_eq!(
        msgs,
        [
            "/a must be one of \"x\", \"y\"",
            "/x~0y~1z the property `x~y/z` is not allowed"
        ]
    );
}

#[test]
fn form_bodies_are_objects_of_their_fields() {
    let c = contract(
        json!({ "requestBody": { "required": true, "content": {
            "application/x-www-form-urlencoded": { "schema": {
                "type": "object",
                "required": ["name", "age"],
                "additionalProperties": false,
                "properties": {
                    "name": { "type": "string", "minLength": 2 },
                    "age": { "type": "integer", "minimum": 0 },
                    "vip": { "type": "boolean" },
                    "tags": { "type": "array", "items": { "type": "integer" }, "maxItems": 2 }
                }
            } }
        } } }),
        Dialect::Oas31,
    );
    // Fields typed by their schema; a repeated field is an array's items.
    ok(&c, form("name=Ada+L&age=36&vip=true&tags=1&tags=2"));
    ok(&c, form("age=0&name=%C3%A9t%C3%A9"));
    refused(
        &c,
        form("name=A&age=-1&vip=yes&tags=1&tags=x&tags=3&extra=1"),
        400,
        &[
            ("body", "/name", "minLength"),
            ("body", "/age", "minimum"),
            ("body", "/vip", "type"),
            ("body", "/extra", "additionalProperties"),
            ("body", "/tags", "maxItems"),
            ("body", "/tags/1", "type"),
        ],
    );
    refused(
        &c,
        form("vip=false"),
        400,
        &[("body", "", "required"), ("body", "", "required")],
    );
}

/// A request with a form body.
fn form(body: &'static str) -> Req<'static> {
    let mut r = req();
    r.headers.insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    r.body = Some(body);
    r
}

/// A form body's `encoding` says how a field is written: in a query parameter's `style` and
/// `explode`, or as JSON (`contentType`); fields without one are read as before.
#[test]
fn form_encoding_styles_are_read() {
    let c = contract(
        json!({ "requestBody": { "content": {
            "application/x-www-form-urlencoded": {
                "schema": { "type": "object", "additionalProperties": false, "properties": {
                    "ids": { "type": "array", "items": { "type": "integer" }, "maxItems": 3 },
                    "tags": { "type": "array", "items": { "type": "string", "minLength": 2 } },
                    "filter": { "type": "object", "additionalProperties": false,
                                "properties": { "min": { "type": "integer" },
                                                "max": { "type": "integer", "maximum": 9 } } },
                    "meta": { "type": "object", "required": ["v"] },
                    "plain": { "type": "array", "items": { "type": "integer" } }
                } },
                "encoding": {
                    "ids": { "style": "form", "explode": false },
                    "tags": { "style": "pipeDelimited" },
                    "filter": { "style": "deepObject", "explode": true },
                    "meta": { "contentType": "text/plain, application/json" },
                    "ghost": { "style": "pipeDelimited" }
                }
            }
        } } }),
        Dialect::Oas31,
    );
    ok(
        &c,
        form(
            "ids=1,2,3&tags=ab|cd&filter[min]=1&filter[max]=5&meta=%7B%22v%22%3A1%7D&plain=1&plain=2",
        ),
    );
    refused(
        &c,
        form("ids=1,x,3,4&tags=ab|c&filter[max]=10&filter[other]=1&meta=%7B%7D&plain=y"),
        400,
        // The fields an encoding describes come first, sorted by name.
        &[
            ("body", "/filter/max", "maximum"),
            ("body", "/filter/other", "additionalProperties"),
            ("body", "/ids", "maxItems"),
            ("body", "/ids/1", "type"),
            ("body", "/meta", "required"),
            ("body", "/tags/1", "minLength"),
            ("body", "/plain/0", "type"),
        ],
    );
    // A JSON field that is not JSON is named by its pointer; such failures, and a styled
    // field written twice, are listed alone.
    refused(
        &c,
        form("meta=%7Bv&plain=y"),
        400,
        &[("body", "/meta", "json")],
    );
    refused(
        &c,
        form("ids=1,2&ids=3&tags=ab&tags=cd"),
        400,
        &[("body", "/ids", "style"), ("body", "/tags", "style")],
    );
    // What deepObject does not define, and upstreams read their own ways, is refused: a key
    // written twice, a key nested in another.
    refused(
        &c,
        form("filter[min]=1&filter[min]=2"),
        400,
        &[("body", "/filter", "style")],
    );
    refused(
        &c,
        form("filter[min][x]=1"),
        400,
        &[("body", "/filter", "style")],
    );
    // Fields a style does not read are read as fields: a deepObject property written
    // plainly, and a name the schema does not have.
    refused(
        &c,
        form("filter=junk&ghost=a|b"),
        400,
        &[
            ("body", "/filter", "type"),
            ("body", "/ghost", "additionalProperties"),
        ],
    );
}

/// A `multipart/form-data` body of (name, part headers, content) parts.
fn multipart(parts: &[(&str, &str, &str)]) -> String {
    let mut b = String::new();
    for (name, headers, content) in parts {
        b.push_str(&format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"{headers}\r\n\r\n{content}\r\n"
        ));
    }
    b.push_str("--XyZ--\r\n");
    b
}

#[test]
fn multipart_bodies_are_objects_of_their_parts() {
    let c = contract(
        json!({ "requestBody": { "required": true, "content": {
            "multipart/form-data": { "schema": {
                "type": "object",
                "required": ["name", "photo"],
                "additionalProperties": false,
                "properties": {
                    "name": { "type": "string", "minLength": 2 },
                    "age": { "type": "integer", "minimum": 0 },
                    "tags": { "type": "array", "items": { "type": "integer" }, "maxItems": 2 },
                    "address": { "type": "object", "required": ["city"],
                                 "properties": { "city": { "type": "string" } } },
                    "items": { "type": "array", "items": { "$ref": "#/components/schemas/Item" } },
                    "photo": { "type": "string", "format": "binary", "maxLength": 64 }
                }
            } }
        } } }),
        Dialect::Oas31,
    );
    let send = |body: String, content_type: &str| {
        let mut r = req();
        r.headers
            .insert("content-type", content_type.parse().unwrap());
        r.body = Some(Box::leak(body.into_boxed_str()));
        r
    };
    let form =
        |parts: &[(&str, &str, &str)]| send(multipart(parts), "multipart/form-data; boundary=XyZ");
    let file = "; filename=\"a.png\"\r\nContent-Type: image/png";
    // Text parts typed by their schema, a repeated part an array's items, an object
    // property's part read as JSON (no Content-Type needed), a JSON part as JSON, a file a
    // string.
    ok(
        &c,
        form(&[
            ("name", "", "Ada"),
            ("age", "", "36"),
            ("tags", "", "1"),
            ("tags", "", "2"),
            ("address", "", r#"{"city":"London"}"#),
            (
                "items",
                "\r\nContent-Type: application/json",
                r#"[{"sku":"ABC-1","qty":2}]"#,
            ),
            ("photo", file, "\u{89}PNG not really"),
        ]),
    );
    // A JSON part that is one item of an array property.
    ok(
        &c,
        form(&[
            ("name", "", "Ada"),
            (
                "items",
                "\r\nContent-Type: application/json",
                r#"{"sku":"ABC-1","qty":2}"#,
            ),
            ("photo", file, "x"),
        ]),
    );
    refused(
        &c,
        form(&[
            ("name", "", "A"),
            ("age", "", "-1"),
            ("tags", "", "1"),
            ("tags", "", "x"),
            ("tags", "", "3"),
            ("address", "", r#"{"town":"London"}"#),
            (
                "items",
                "\r\nContent-Type: application/json",
                r#"[{"sku":"abc","qty":0}]"#,
            ),
            ("extra", "", "1"),
            ("photo", file, &"x".repeat(65)),
        ]),
        400,
        &[
            ("body", "/name", "minLength"),
            ("body", "/age", "minimum"),
            ("body", "/address", "required"),
            ("body", "/items/0/sku", "pattern"),
            ("body", "/items/0/qty", "minimum"),
            ("body", "/extra", "additionalProperties"),
            ("body", "/photo", "maxLength"),
            ("body", "/tags", "maxItems"),
            ("body", "/tags/1", "type"),
        ],
    );
    refused(
        &c,
        form(&[("age", "", "1")]),
        400,
        &[("body", "", "required"), ("body", "", "required")],
    );
    // A JSON part that is not JSON is named by its pointer.
    refused(
        &c,
        form(&[("name", "", "Ada"), ("address", "", "{city")]),
        400,
        &[("body", "/address", "json")],
    );
    // A JSON part must be UTF-8, as JSON is: bad bytes are refused, not replaced.
    let mut bad = form(&[
        ("name", "", "Ada"),
        ("address", "", r#"{"city":"Lon@don"}"#),
    ]);
    let raw: &'static [u8] = Box::leak(
        bad.body
            .unwrap()
            .replace('@', "\u{1}")
            .into_bytes()
            .into_iter()
            .map(|b| if b == 1 { 0xFF } else { b })
            .collect::<Vec<u8>>()
            .into_boxed_slice(),
    );
    bad.raw = Some(raw);
    refused(&c, bad, 400, &[("body", "/address", "json")]);
    // Parts are bounded.
    let many: Vec<(&str, &str, &str)> = std::iter::once(("name", "", "Ada"))
        .chain(std::iter::repeat_n(
            ("tags", "", "1"),
            portico_contract::MAX_PARTS,
        ))
        .collect();
    refused(&c, form(&many), 400, &[("body", "", "multipart")]);
    // Not multipart with this boundary, no boundary at all, a part without a name.
    refused(
        &c,
        send("no parts here".into(), "multipart/form-data; boundary=XyZ"),
        400,
        &[("body", "", "multipart")],
    );
    refused(
        &c,
        send(multipart(&[("name", "", "Ada")]), "multipart/form-data"),
        400,
        &[("header", "", "multipart")],
    );
    refused(
        &c,
        send(
            "--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--\r\n".into(),
            "multipart/form-data; boundary=XyZ",
        ),
        400,
        &[("body", "", "multipart")],
    );
}

/// `encoding.<part>.headers` describes a part's own headers, each checked as a header
/// parameter is (a header object may be a `$ref`); a part's `Content-Type` there is ignored.
#[test]
fn multipart_encoding_headers_are_checked() {
    let c = contract(
        json!({ "requestBody": { "content": {
            "multipart/form-data": {
                "schema": { "type": "object", "properties": {
                    "photo": { "type": "string", "format": "binary" },
                    "note": { "type": "string", "maxLength": 3 }
                } },
                "encoding": {
                    "photo": { "headers": {
                        "X-Checksum": { "$ref": "#/components/headers/Checksum" },
                        "X-Parts": { "schema": { "type": "array",
                                                 "items": { "type": "integer", "maximum": 9 } } },
                        "Content-Type": { "required": true, "schema": { "const": "never" } }
                    } }
                }
            }
        } } }),
        Dialect::Oas31,
    );
    let send = |parts: &[(&str, &str, &str)]| {
        let mut r = req();
        r.headers.insert(
            "content-type",
            "multipart/form-data; boundary=XyZ".parse().unwrap(),
        );
        r.body = Some(Box::leak(multipart(parts).into_boxed_str()));
        r
    };
    let png = "; filename=\"a.png\"\r\nContent-Type: image/png";
    ok(
        &c,
        send(&[
            (
                "photo",
                &format!("{png}\r\nX-Checksum: 0badf00d\r\nX-Parts: 1,2"),
                "PNG",
            ),
            ("note", "", "ok"),
        ]),
    );
    // A part that is absent has no headers to check.
    ok(&c, send(&[("note", "", "ok")]));
    // The required header missing, an array header's item too large, and the body's own
    // failures after them.
    let (status, f) = send(&[
        ("photo", &format!("{png}\r\nX-Parts: 1,12"), "PNG"),
        ("note", "", "long"),
    ])
    .check(&c);
    assert_eq!(status, 400, "{f:#?}");
    let seen: Vec<(&str, Option<&str>, &str, &str)> = f
        .iter()
        .map(|f| (f.location, f.name.as_deref(), f.pointer.as_str(), f.keyword))
        .collect();
    assert_eq!(
        seen,
        [
            ("body", Some("X-Checksum"), "/photo", "required"),
            ("body", Some("X-Parts"), "/photo", "maximum"),
            ("body", None, "/note", "maxLength"),
        ],
        "{f:#?}"
    );
    assert!(
        f[0].message.starts_with("in the part `photo`: "),
        "{}",
        f[0].message
    );
    assert!(
        f[1].message.ends_with("(at `/1` in its value)"),
        "{}",
        f[1].message
    );
    refused(
        &c,
        send(&[("photo", &format!("{png}\r\nX-Checksum: nothex!!"), "PNG")]),
        400,
        &[("body", "/photo", "pattern")],
    );
}

/// The headers of all parts share one work budget: a body of many parts, each with a long
/// list in a described header, runs out of it and is refused with `cost`, where each part
/// alone would be cheap.
#[test]
fn multipart_part_headers_share_one_budget() {
    let c = contract(
        json!({ "requestBody": { "content": {
            "multipart/form-data": {
                "schema": { "type": "object", "properties": {
                    "n": { "type": "array", "items": { "type": "string" } }
                } },
                "encoding": { "n": { "headers": { "X-Sizes": { "schema": {
                    "type": "array", "items": { "type": "integer", "minimum": 0 } } } } } }
            }
        } } }),
        Dialect::Oas31,
    );
    let send = |parts: usize, items: usize| {
        let header = format!("\r\nX-Sizes: {}", vec!["1"; items].join(","));
        let all: Vec<(&str, &str, &str)> =
            std::iter::repeat_n(("n", header.as_str(), "x"), parts).collect();
        let mut r = req();
        r.headers.insert(
            "content-type",
            "multipart/form-data; boundary=XyZ".parse().unwrap(),
        );
        r.body = Some(Box::leak(multipart(&all).into_boxed_str()));
        r
    };
    ok(&c, send(10, 300));
    let (status, f) = send(portico_contract::MAX_PARTS, 300).check(&c);
    assert_eq!(status, 400, "{f:#?}");
    assert_eq!(
        f.iter()
            .map(|f| (f.pointer.as_str(), f.keyword))
            .collect::<Vec<_>>(),
        [("/n", "cost")],
        "{f:#?}"
    );
}

/// `encoding.<part>.contentType` lists the types a part may have; a part without a
/// `Content-Type` is taken to be the one type listed alone, or `text/plain`.
#[test]
fn multipart_encoding_names_the_types_of_parts() {
    let c = contract(
        json!({ "requestBody": { "content": {
            "multipart/form-data": {
                "schema": { "type": "object", "properties": {
                    "photo": { "type": "string", "format": "binary" },
                    "meta": { "type": "array", "items": { "type": "integer" } },
                    "note": { "type": "string", "maxLength": 3 }
                } },
                "encoding": {
                    "photo": { "contentType": "image/png, image/jpeg" },
                    "meta": { "contentType": "application/json" }
                }
            }
        } } }),
        Dialect::Oas31,
    );
    let send = |parts: &[(&str, &str, &str)]| {
        let mut r = req();
        r.headers.insert(
            "content-type",
            "multipart/form-data; boundary=XyZ".parse().unwrap(),
        );
        r.body = Some(Box::leak(multipart(parts).into_boxed_str()));
        r
    };
    let png = "; filename=\"a.png\"\r\nContent-Type: image/png";
    // `meta` has no Content-Type: it is JSON, the one type its encoding lists.
    ok(
        &c,
        send(&[
            ("photo", png, "PNG"),
            ("meta", "", "[1,2]"),
            ("note", "", "ok"),
        ]),
    );
    refused(
        &c,
        send(&[
            (
                "photo",
                "; filename=\"a.gif\"\r\nContent-Type: image/gif",
                "GIF",
            ),
            ("meta", "", "[1,\"x\"]"),
            ("note", "", "long"),
        ]),
        400,
        &[("body", "/photo", "content")],
    );
    // The contents of parts of the right type are checked once every type is right.
    refused(
        &c,
        send(&[
            ("photo", png, "PNG"),
            ("meta", "", "[1,\"x\"]"),
            ("note", "", "long"),
        ]),
        400,
        &[("body", "/meta/1", "type"), ("body", "/note", "maxLength")],
    );
    // A type multer cannot parse is still the type written, not an untyped part.
    refused(
        &c,
        send(&[("photo", "\r\nContent-Type: text/html;x", "<b>")]),
        400,
        &[("body", "/photo", "content")],
    );
    // A part with no type where the encoding lists several is text/plain, which is not one.
    refused(
        &c,
        send(&[("photo", "", "PNG")]),
        400,
        &[("body", "/photo", "content")],
    );
}
