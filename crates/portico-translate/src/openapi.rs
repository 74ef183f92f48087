//! An OpenAPI 3.0 document for the JSON side of a SOAP port, so client teams can generate SDKs
//! for what the gateway exposes. The schemas follow the same mapping as [`crate::soap`]:
//! repeatable elements and array wrappers are arrays, `nillable` is `nullable`, `minOccurs` ≥ 1
//! is `required`, attributes are plain properties.

use serde_json::{Map, Value, json};

use crate::wsdl::{
    Builtin, ElementDecl, Operation, Port, Resolved, Schema, Style, TypeDef, TypeRef,
};

fn builtin_schema(b: Builtin) -> Value {
    match b {
        Builtin::String | Builtin::Any => json!({"type": "string"}),
        Builtin::Boolean => json!({"type": "boolean"}),
        Builtin::Integer => json!({"type": "integer"}),
        Builtin::Decimal | Builtin::Float => json!({"type": "number"}),
        Builtin::Date => json!({"type": "string", "format": "date"}),
        Builtin::DateTime => json!({"type": "string", "format": "date-time"}),
        Builtin::Time => json!({"type": "string", "format": "time"}),
        Builtin::Binary => json!({"type": "string", "format": "byte"}),
    }
}

struct Gen<'a> {
    schema: &'a Schema,
    /// Named types used, emitted under `components.schemas`.
    used: Vec<crate::wsdl::QName>,
    /// Named array wrappers being inlined: one that contains itself becomes a `$ref`.
    inlining: Vec<crate::wsdl::QName>,
}

impl Gen<'_> {
    fn type_schema(&mut self, t: &TypeRef) -> Value {
        let recursive = matches!(t, TypeRef::Named(q) if self.inlining.contains(q));
        if !recursive && let Some(item) = wrapped(self.schema, t) {
            if let TypeRef::Named(q) = t {
                self.inlining.push(q.clone());
            }
            let items = self.element_one(item);
            if matches!(t, TypeRef::Named(_)) {
                self.inlining.pop();
            }
            return json!({"type": "array", "items": items});
        }
        match t {
            TypeRef::Builtin(b) => builtin_schema(*b),
            TypeRef::Named(q) => {
                if !self.schema.types.contains_key(q) {
                    return json!({});
                }
                if !self.used.contains(q) {
                    self.used.push(q.clone());
                }
                json!({"$ref": format!("#/components/schemas/{}", q.name)})
            }
            TypeRef::Inline(d) => self.def_schema(d),
        }
    }

    fn def_schema(&mut self, d: &TypeDef) -> Value {
        match d {
            TypeDef::Simple(s) => {
                let mut v = builtin_schema(self.schema.builtin_of(&s.base));
                let o = v.as_object_mut().expect("object");
                if !s.enumeration.is_empty() {
                    o.insert("enum".into(), json!(s.enumeration));
                }
                let num = |x: &Option<String>| x.as_deref().and_then(|x| x.parse::<f64>().ok());
                if let Some(m) = num(&s.min_inclusive) {
                    o.insert("minimum".into(), json!(m));
                }
                if let Some(m) = num(&s.max_inclusive) {
                    o.insert("maximum".into(), json!(m));
                }
                if let Some(m) = s.min_length {
                    o.insert("minLength".into(), json!(m));
                }
                if let Some(m) = s.max_length {
                    o.insert("maxLength".into(), json!(m));
                }
                v
            }
            TypeDef::Complex(c) => {
                let mut props = Map::new();
                let mut required = Vec::new();
                for a in &c.attrs {
                    let key = if c.fields.iter().any(|f| f.name.name == a.name) {
                        format!("@{}", a.name)
                    } else {
                        a.name.clone()
                    };
                    props.insert(key.clone(), self.type_schema(&a.ty));
                    if a.required {
                        required.push(key);
                    }
                }
                if let Some(t) = &c.text {
                    props.insert("#text".into(), self.type_schema(t));
                }
                for f in &c.fields {
                    props.insert(f.name.name.clone(), self.element_value(f));
                    if f.min > 0 && !f.repeated() {
                        required.push(f.name.name.clone());
                    }
                }
                let mut o = json!({"type": "object", "properties": props});
                if !required.is_empty() {
                    o["required"] = json!(required);
                }
                if !c.open {
                    o["additionalProperties"] = json!(false);
                }
                o
            }
        }
    }

    /// The JSON schema of one occurrence of an element (`null` included when nillable).
    fn element_one(&mut self, d: &ElementDecl) -> Value {
        let one = self.type_schema(&d.ty);
        if !d.nillable {
            return one;
        }
        match one {
            Value::Object(mut o) if !o.contains_key("$ref") => {
                o.insert("nullable".into(), json!(true));
                Value::Object(o)
            }
            other => json!({"allOf": [other], "nullable": true}),
        }
    }

    /// The JSON schema of an element's value, arrays and nulls included.
    fn element_value(&mut self, d: &ElementDecl) -> Value {
        let one = self.element_one(d);
        if d.repeated() {
            let mut a = json!({"type": "array", "items": one});
            if d.min > 0 {
                a["minItems"] = json!(d.min);
            }
            if let Some(m) = d.max {
                a["maxItems"] = json!(m);
            }
            return a;
        }
        one
    }

    fn message(&mut self, op: &Operation, output: bool) -> Value {
        let parts = if output { &op.output } else { &op.input };
        let elements: Vec<&ElementDecl> = parts
            .iter()
            .filter_map(|p| p.element.as_ref())
            .filter_map(|e| self.schema.elements.get(e))
            .collect();
        if op.style == Style::Document && elements.len() == 1 {
            return self.type_schema(&elements[0].ty);
        }
        let mut props = Map::new();
        for p in parts {
            let v = match (&p.element, &p.ty) {
                (Some(e), _) => match self.schema.elements.get(e) {
                    Some(d) => self.element_value(d),
                    None => json!({}),
                },
                (None, Some(t)) => self.type_schema(t),
                _ => json!({}),
            };
            let key = match (op.style, &p.element) {
                (Style::Document, Some(e)) => e.name.clone(),
                _ => p.name.clone(),
            };
            props.insert(key, v);
        }
        json!({"type": "object", "properties": props})
    }
}

fn wrapped<'a>(schema: &'a Schema, t: &'a TypeRef) -> Option<&'a ElementDecl> {
    match schema.resolve(t)? {
        Resolved::Complex(c) if c.attrs.is_empty() && c.text.is_none() && c.fields.len() == 1 => {
            let f = &c.fields[0];
            f.repeated().then_some(f)
        }
        _ => None,
    }
}

/// An operation bound to another method and path: (operation index, method, path after the
/// prefix with `{name}` segments).
pub type Binding<'a> = (usize, &'a str, &'a str);

/// The input fields of a document-style operation with one part: (name, schema).
fn input_fields(g: &mut Gen<'_>, op: &Operation) -> Vec<(String, Value)> {
    let Some(d) = op
        .input
        .iter()
        .filter_map(|p| p.element.as_ref())
        .find_map(|e| g.schema.elements.get(e))
    else {
        return Vec::new();
    };
    let Some(Resolved::Complex(c)) = g.schema.resolve(&d.ty) else {
        return Vec::new();
    };
    let fields: Vec<ElementDecl> = c.fields.clone();
    fields
        .iter()
        .map(|f| (f.name.name.clone(), g.element_value(f)))
        .collect()
}

/// The document for `port`'s operations as `POST {prefix}/{Operation}`, plus `bindings`.
pub fn document(
    schema: &Schema,
    port: &Port,
    prefix: &str,
    title: &str,
    bindings: &[Binding<'_>],
) -> Value {
    let mut g = Gen {
        schema,
        used: Vec::new(),
        inlining: Vec::new(),
    };
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let responses = |output: Value| {
        json!({
            "200": {"description": "The operation's answer.", "content": {"application/json": {"schema": output}}},
            "400": {"description": "The request does not fit the operation (`invalid_soap_request`), or the service answered with a Client/Sender fault (`soap_fault`).", "content": {"application/problem+json": {"schema": problem}}},
            "502": {"description": "The service failed (a Server/Receiver fault, or no readable answer).", "content": {"application/problem+json": {"schema": problem}}},
        })
    };
    let mut paths = Map::new();
    for op in &port.operations {
        let input = g.message(op, false);
        let output = g.message(op, true);
        paths.insert(
            format!("{prefix}/{}", op.name),
            json!({"post": {
                "operationId": op.name,
                "summary": format!("{} ({})", op.name, port.version.label()),
                "requestBody": {"required": false, "content": {"application/json": {"schema": input}}},
                "responses": responses(output),
            }}),
        );
    }
    for (i, (index, method, path)) in bindings.iter().enumerate() {
        let Some(op) = port.operations.get(*index) else {
            continue;
        };
        let method = method.to_ascii_lowercase();
        let fields = input_fields(&mut g, op);
        let in_path: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let mut parameters = Vec::new();
        for (name, schema) in &fields {
            if in_path.contains(&name.as_str()) {
                parameters
                    .push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
            } else if !matches!(method.as_str(), "post" | "put" | "patch") {
                parameters.push(
                    json!({"name": name, "in": "query", "required": false, "schema": schema}),
                );
            }
        }
        let mut item = json!({
            "operationId": format!("{}_{}", op.name, i + 1),
            "summary": format!("{} ({})", op.name, port.version.label()),
            "parameters": parameters,
            "responses": responses(g.message(op, true)),
        });
        if matches!(method.as_str(), "post" | "put" | "patch") {
            item["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": g.message(op, false)}}});
        }
        let entry = paths
            .entry(format!("{prefix}{path}"))
            .or_insert_with(|| json!({}));
        entry[method.as_str()] = item;
    }
    // Named types, including those the first ones refer to.
    let mut schemas = Map::new();
    let mut i = 0;
    while i < g.used.len() {
        let q = g.used[i].clone();
        if let Some(def) = schema.types.get(&q) {
            let s = g.def_schema(def);
            schemas.insert(q.name.clone(), s);
        }
        i += 1;
    }
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 9457 problem details; SOAP faults add faultcode, subcodes, faultstring, faultactor and faultdetail.",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "code": {"type": "string"}, "request_id": {"type": "string"},
                "field": {"type": "string"}, "faultcode": {"type": "string"},
                "subcodes": {"type": "array", "items": {"type": "string"}},
                "faultstring": {"type": "string"}, "faultactor": {"type": "string"}, "faultdetail": {}
            }
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1", "description": format!("JSON endpoints for the SOAP port `{}` ({}), generated by Portico from its WSDL.", port.name, port.version.label())},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
