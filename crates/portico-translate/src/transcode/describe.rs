//! The JSON side of a transcoded gRPC service as an OpenAPI 3.1 fragment: one operation per
//! `google.api.http` binding (and per method, `POST /package.Service/Method`, when calls by
//! name are on), with the messages as schemas in the proto3 JSON mapping that the transcoder
//! reads and writes.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::{Binding, BodyRule, Transcoder};
use crate::template::Template;

/// Messages that proto3's JSON mapping writes as something other than an object.
fn well_known(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["1.5s"] })
        }
        "google.protobuf.FieldMask" => json!({ "type": "string", "examples": ["name,author.id"] }),
        "google.protobuf.Struct" => json!({ "type": "object" }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array" }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        "google.protobuf.Any" => json!({
            "type": "object",
            "required": ["@type"],
            "properties": { "@type": { "type": "string" } }
        }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => {
            json!({ "type": ["number", "null"] })
        }
        "google.protobuf.Int64Value" => json!({ "type": ["string", "null"], "format": "int64" }),
        "google.protobuf.UInt64Value" => json!({ "type": ["string", "null"], "format": "uint64" }),
        "google.protobuf.Int32Value" => json!({ "type": ["integer", "null"], "format": "int32" }),
        "google.protobuf.UInt32Value" => {
            json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 4294967295u64 })
        }
        "google.protobuf.BoolValue" => json!({ "type": ["boolean", "null"] }),
        "google.protobuf.StringValue" => json!({ "type": ["string", "null"] }),
        "google.protobuf.BytesValue" => json!({ "type": ["string", "null"], "format": "byte" }),
        _ => return None,
    })
}

/// Collects the schemas of the messages the operations use, each once.
struct Schemas {
    done: Map<String, Value>,
    todo: Vec<MessageDescriptor>,
}

impl Schemas {
    fn message(&mut self, m: &MessageDescriptor) -> Value {
        if let Some(s) = well_known(m.full_name()) {
            return s;
        }
        let name = m.full_name().to_owned();
        if !self.done.contains_key(&name) && !self.todo.iter().any(|t| t.full_name() == name) {
            self.todo.push(m.clone());
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// A field's value: a list, a map or one value of its kind.
    fn field(&mut self, f: &FieldDescriptor) -> Value {
        if f.is_map()
            && let Kind::Message(entry) = f.kind()
        {
            return json!({
                "type": "object",
                "additionalProperties": self.single(&entry.map_entry_value_field()),
            });
        }
        let one = self.single(f);
        if f.is_list() {
            json!({ "type": "array", "items": one })
        } else {
            one
        }
    }

    fn single(&mut self, f: &FieldDescriptor) -> Value {
        match f.kind() {
            Kind::Double => json!({ "type": "number", "format": "double" }),
            Kind::Float => json!({ "type": "number", "format": "float" }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({ "type": "integer", "minimum": 0, "maximum": 4294967295u64 })
            }
            // Written as strings, as proto3's JSON mapping says; read as strings or numbers.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({ "type": "string", "format": "int64" })
            }
            Kind::Uint64 | Kind::Fixed64 => json!({ "type": "string", "format": "uint64" }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({ "type": "string", "format": "byte" }),
            Kind::Enum(e) => json!({
                "type": "string",
                "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
            }),
            Kind::Message(m) => self.message(&m),
        }
    }

    /// Every message reached, as an object of its fields by their JSON names.
    fn finish(mut self) -> Map<String, Value> {
        while let Some(m) = self.todo.pop() {
            let mut props = Map::new();
            for f in m.fields() {
                let s = self.field(&f);
                props.insert(f.json_name().to_owned(), s);
            }
            self.done.insert(
                m.full_name().to_owned(),
                json!({ "type": "object", "properties": props }),
            );
        }
        self.done
    }
}

/// An OpenAPI path for a template: each variable one `{field.path}` parameter (with the
/// segments it takes, when more than one), each unbound wildcard one too, and the `:verb`.
fn openapi_path(t: &Template) -> (String, Vec<(String, Option<String>)>) {
    let (segments, verb, vars) = t.parts();
    let mut path = String::new();
    let mut params = Vec::new();
    let mut i = 0;
    let mut unnamed = 0;
    while i < segments.len() {
        path.push('/');
        if let Some((field, _, end)) = vars.iter().find(|(_, start, _)| *start == i) {
            let name = field.join(".");
            let end = (*end).min(segments.len());
            let taken: Vec<&str> = segments[i..end].iter().map(|s| s.as_str()).collect();
            let pattern = (taken != ["*"]).then(|| taken.join("/"));
            path.push_str(&format!("{{{name}}}"));
            params.push((name, pattern));
            i = end.max(i + 1);
            continue;
        }
        match segments[i].as_str() {
            "*" | "**" => {
                unnamed += 1;
                let name = format!("_{unnamed}");
                path.push_str(&format!("{{{name}}}"));
                params.push((name, Some(segments[i].clone())));
            }
            lit => path.push_str(lit),
        }
        i += 1;
    }
    if path.is_empty() {
        path.push('/');
    }
    if let Some(v) = verb {
        path.push(':');
        path.push_str(v);
    }
    (path, params)
}

/// The schema of the field at a dotted path of a message, if it is there.
fn field_at(schemas: &mut Schemas, m: &MessageDescriptor, path: &str) -> Value {
    let mut msg = m.clone();
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let Some(f) = msg.get_field_by_name(p) else {
            return json!({ "type": "string" });
        };
        if i + 1 == parts.len() {
            return schemas.field(&f);
        }
        match f.kind() {
            Kind::Message(next) => msg = next,
            _ => return json!({ "type": "string" }),
        }
    }
    json!({ "type": "string" })
}

impl Transcoder {
    /// The operations this transcoder answers, as OpenAPI `paths` and `components.schemas`
    /// (message schemas named by their full proto name). `operation_id` names an operation
    /// from its method's full name.
    pub fn openapi(&self, operation_id: &dyn Fn(&str) -> String) -> Value {
        let mut schemas = Schemas {
            done: Map::new(),
            todo: Vec::new(),
        };
        let mut paths: Map<String, Value> = Map::new();
        let mut add = |path: String, method: &str, op: Value| {
            let item = paths
                .entry(path)
                .or_insert_with(|| Value::Object(Map::new()));
            if item.get(method).is_none() {
                item[method] = op;
            }
        };
        for b in &self.bindings {
            let (path, method, op) = self.binding_operation(b, &mut schemas, operation_id);
            add(path, method, op);
        }
        if self.options.call_by_name {
            for m in &self.methods {
                let mut op = self.operation(m, &mut schemas, operation_id, "byName");
                let input = m.desc.input();
                op["requestBody"] = self.body(m, schemas.message(&input));
                add(m.path.path().to_owned(), "post", op);
            }
        }
        json!({ "paths": paths, "components": { "schemas": schemas.finish() } })
    }

    /// What every operation of a method has: its id, summary, tags and answer.
    fn operation(
        &self,
        m: &super::Method,
        schemas: &mut Schemas,
        operation_id: &dyn Fn(&str) -> String,
        suffix: &str,
    ) -> Value {
        let output = m.desc.output();
        let answer = schemas.message(&output);
        let (content, description) = if m.desc.is_server_streaming() {
            (
                json!({
                    "application/x-ndjson": { "schema": answer },
                    "text/event-stream": { "schema": { "type": "string" } }
                }),
                "The method's answers: one message per line (NDJSON), or per server-sent event.",
            )
        } else {
            (
                json!({ "application/json": { "schema": answer } }),
                "The method's answer.",
            )
        };
        let id = operation_id(m.desc.full_name());
        json!({
            "operationId": if suffix.is_empty() { id } else { format!("{id}.{suffix}") },
            "summary": format!("gRPC `{}`", m.desc.full_name()),
            "tags": [m.desc.parent_service().full_name()],
            "responses": { "200": { "description": description, "content": content } }
        })
    }

    /// The request body: NDJSON for a client stream, JSON otherwise.
    fn body(&self, m: &super::Method, schema: Value) -> Value {
        if m.desc.is_client_streaming() {
            json!({
                "required": true,
                "description": "The client stream: one message per line.",
                "content": { "application/x-ndjson": { "schema": schema } }
            })
        } else {
            json!({ "content": { "application/json": { "schema": schema } } })
        }
    }

    fn binding_operation(
        &self,
        b: &Binding,
        schemas: &mut Schemas,
        operation_id: &dyn Fn(&str) -> String,
    ) -> (String, &'static str, Value) {
        let m = &self.methods[b.method];
        let input = m.desc.input();
        let (path, vars) = openapi_path(&b.template);
        let method = match b.http_method.as_str() {
            "GET" => "get",
            "PUT" => "put",
            "POST" => "post",
            "DELETE" => "delete",
            "PATCH" => "patch",
            "HEAD" => "head",
            "OPTIONS" => "options",
            _ => "trace",
        };
        // Several bindings of one method (additional_bindings) need ids of their own.
        let suffix = if self
            .bindings
            .iter()
            .filter(|o| o.method == b.method)
            .count()
            > 1
        {
            format!(
                "{method}{}",
                path.replace(['/', '{', '}', ':', '.', '*'], "_")
            )
        } else {
            String::new()
        };
        let mut op = self.operation(m, schemas, operation_id, &suffix);
        let mut params: Vec<Value> = Vec::new();
        for (name, pattern) in &vars {
            let mut schema = if name.starts_with('_') {
                json!({ "type": "string" })
            } else {
                field_at(schemas, &input, name)
            };
            let mut p = json!({ "name": name, "in": "path", "required": true });
            if let Some(pat) = pattern {
                // Several segments, `/` included, as the template's pattern says.
                schema = json!({ "type": "string" });
                p["description"] = format!("Segments matching `{pat}` (`/` included).").into();
            }
            p["schema"] = schema;
            params.push(p);
        }
        let bound: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        let body_field = match &b.body {
            BodyRule::Field(f) => Some(f.name().to_owned()),
            _ => None,
        };
        if !matches!(b.body, BodyRule::Whole) {
            // The message's other plain fields are read from the query.
            for f in input.fields() {
                // Message fields (`a.b=` in the query) are left out: they are rare.
                if f.is_map()
                    || bound.contains(&f.name())
                    || bound.contains(&f.json_name())
                    || body_field.as_deref() == Some(f.name())
                    || matches!(f.kind(), Kind::Message(_))
                {
                    continue;
                }
                let schema = schemas.field(&f);
                let mut p = json!({ "name": f.json_name(), "in": "query", "schema": schema });
                if f.is_list() {
                    p["explode"] = true.into();
                }
                params.push(p);
            }
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        match &b.body {
            BodyRule::None => {}
            BodyRule::Whole => op["requestBody"] = self.body(m, schemas.message(&input)),
            BodyRule::Field(f) => op["requestBody"] = self.body(m, schemas.field(f)),
        }
        if let Some(field) = &b.response_json {
            let output = m.desc.output();
            if let Some(f) = output.fields().find(|f| f.json_name() == field) {
                let s = schemas.field(&f);
                op["responses"]["200"]["content"] = json!({ "application/json": { "schema": s } });
            }
        }
        (path, method, op)
    }
}
