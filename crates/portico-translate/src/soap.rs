//! SOAP envelopes from JSON and JSON from SOAP envelopes, typed by the WSDL's schema.
//!
//! The JSON side of an operation is its input message: for document/literal (wrapped or not)
//! the fields of the part's element, for rpc/literal the parts by name. Values are checked
//! against the schema on the way in (unknown fields, types, enumerations, ranges, required
//! fields), each error naming the JSON path. On the way out, values are typed by the schema
//! (numbers, booleans, `null` for `xsi:nil`, arrays for repeatable elements even with one
//! item), and a Fault (1.1 or 1.2) becomes a [`Fault`].

use std::fmt;

use quick_xml::events::{BytesStart, BytesText, Event};
use serde_json::{Map, Number, Value};

use crate::wsdl::{
    Builtin, ElementDecl, Operation, Port, Resolved, Schema, SimpleType, SoapVersion, Style,
    TypeRef,
};
use crate::xml::{Element, Limits};

pub const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const PASSWORD_TEXT: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";

/// A WS-Security UsernameToken sent in every request's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameToken {
    pub username: String,
    pub password: String,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub body: String,
    pub content_type: String,
    /// The `SOAPAction` header (SOAP 1.1 only; 1.2 carries it in the content type).
    pub soap_action: Option<String>,
}

/// A JSON value the schema does not accept, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

fn field_err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Prefixes for the namespaces a request uses, declared once on the envelope.
struct Prefixes<'a>(&'a [String]);

impl Prefixes<'_> {
    fn of(&self, ns: &str) -> Option<String> {
        self.0
            .iter()
            .position(|n| n == ns)
            .map(|i| format!("ns{i}"))
    }

    fn name(&self, ns: &str, local: &str) -> String {
        match self.of(ns) {
            Some(p) if !ns.is_empty() => format!("{p}:{local}"),
            _ => local.to_owned(),
        }
    }
}

type Writer = quick_xml::Writer<Vec<u8>>;

fn w_err(e: impl fmt::Display) -> FieldError {
    field_err("", format!("writing XML: {e}"))
}

/// A complex type that only wraps a repeated element (`<phones><string/>…</phones>`): its
/// JSON form is the plain array of the items.
fn wrapped_item<'a>(schema: &'a Schema, t: &'a TypeRef) -> Option<&'a ElementDecl> {
    match schema.resolve(t)? {
        Resolved::Complex(c) if c.attrs.is_empty() && c.text.is_none() && c.fields.len() == 1 => {
            let f = &c.fields[0];
            f.repeated().then_some(f)
        }
        _ => None,
    }
}

fn scalar_text(schema: &Schema, ty: &TypeRef, v: &Value, path: &str) -> Result<String, FieldError> {
    let builtin = schema.builtin_of(ty);
    let text = match (builtin, v) {
        (_, Value::Array(_) | Value::Object(_)) if builtin != Builtin::Any => {
            return Err(field_err(
                path,
                format!("expected a {} value, not {}", builtin.label(), kind(v)),
            ));
        }
        (Builtin::Boolean, Value::Bool(b)) => b.to_string(),
        (Builtin::Boolean, Value::String(s))
            if matches!(s.as_str(), "true" | "false" | "1" | "0") =>
        {
            s.clone()
        }
        (Builtin::Boolean, _) => {
            return Err(field_err(
                path,
                format!("expected true or false, not {}", kind(v)),
            ));
        }
        (Builtin::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        (Builtin::Integer, Value::String(s))
            if {
                let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            } =>
        {
            s.clone()
        }
        (Builtin::Integer, _) => {
            return Err(field_err(
                path,
                format!("expected an integer, not {}", kind(v)),
            ));
        }
        (Builtin::Decimal | Builtin::Float, Value::Number(n)) => n.to_string(),
        (Builtin::Decimal | Builtin::Float, Value::String(s))
            if s.trim().parse::<f64>().is_ok() =>
        {
            s.trim().to_owned()
        }
        (Builtin::Decimal | Builtin::Float, _) => {
            return Err(field_err(
                path,
                format!("expected a number, not {}", kind(v)),
            ));
        }
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::Bool(b)) => b.to_string(),
        (_, other) => other.to_string(),
    };
    if !crate::xml::is_xml_text(&text) {
        return Err(field_err(
            path,
            "has a character XML cannot carry (a control character)",
        ));
    }
    // Facets of the simple types along the way.
    let mut t = ty.clone();
    for _ in 0..16 {
        match schema.resolve(&t) {
            Some(Resolved::Simple(st)) => {
                check_facets(st, builtin, &text, path)?;
                t = st.base.clone();
            }
            _ => break,
        }
    }
    Ok(text)
}

fn check_facets(
    st: &SimpleType,
    builtin: Builtin,
    text: &str,
    path: &str,
) -> Result<(), FieldError> {
    if !st.enumeration.is_empty() && !st.enumeration.iter().any(|e| e == text) {
        return Err(field_err(
            path,
            format!("`{text}` is not one of {}", st.enumeration.join(", ")),
        ));
    }
    let num = |s: &str| s.trim().parse::<f64>().ok();
    if matches!(
        builtin,
        Builtin::Integer | Builtin::Decimal | Builtin::Float
    ) && let Some(x) = num(text)
    {
        if let Some(min) = st.min_inclusive.as_deref().and_then(num)
            && x < min
        {
            return Err(field_err(
                path,
                format!("{text} is below the minimum {min}"),
            ));
        }
        if let Some(max) = st.max_inclusive.as_deref().and_then(num)
            && x > max
        {
            return Err(field_err(
                path,
                format!("{text} is above the maximum {max}"),
            ));
        }
    }
    let len = text.chars().count();
    if st.min_length.is_some_and(|m| len < m) || st.max_length.is_some_and(|m| len > m) {
        return Err(field_err(
            path,
            format!(
                "the length {len} is outside {}..{}",
                st.min_length.unwrap_or(0),
                st.max_length.map_or("".into(), |m| m.to_string())
            ),
        ));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Out<'a> {
    schema: &'a Schema,
    prefixes: &'a Prefixes<'a>,
    w: Writer,
}

impl Out<'_> {
    /// Writes `v` as the element(s) `d` describes.
    fn element(
        &mut self,
        d: &ElementDecl,
        v: Option<&Value>,
        path: &str,
    ) -> Result<(), FieldError> {
        let v = match v {
            None if d.min > 0 && !d.repeated() => {
                return Err(field_err(path, "is required"));
            }
            None => return Ok(()),
            Some(v) => v,
        };
        if d.repeated() {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            if (items.len() as u64) < u64::from(d.min) {
                return Err(field_err(path, format!("needs at least {} items", d.min)));
            }
            if let Some(max) = d.max
                && items.len() as u64 > u64::from(max)
            {
                return Err(field_err(path, format!("takes at most {max} items")));
            }
            for (i, item) in items.into_iter().enumerate() {
                self.one(d, item, &format!("{path}[{i}]"))?;
            }
            return Ok(());
        }
        if v.is_array() && wrapped_item(self.schema, &d.ty).is_none() {
            return Err(field_err(path, "takes one value, not an array"));
        }
        self.one(d, v, path)
    }

    fn one(&mut self, d: &ElementDecl, v: &Value, path: &str) -> Result<(), FieldError> {
        let name = self.prefixes.name(&d.name.ns, &d.name.name);
        let mut start = BytesStart::new(name.as_str());
        if v.is_null() {
            if !d.nillable {
                return Err(field_err(path, "may not be null"));
            }
            start.push_attribute(("xsi:nil", "true"));
            return self.w.write_event(Event::Empty(start)).map_err(w_err);
        }
        match self.schema.resolve(&d.ty) {
            Some(Resolved::Complex(c)) => {
                // A wrapper of a repeated item takes the plain array.
                if let (Some(item), Value::Array(_)) = (wrapped_item(self.schema, &d.ty), v) {
                    self.w
                        .write_event(Event::Start(start.borrow()))
                        .map_err(w_err)?;
                    self.element(item, Some(v), path)?;
                    return self
                        .w
                        .write_event(Event::End(start.to_end()))
                        .map_err(w_err);
                }
                let Value::Object(m) = v else {
                    return Err(field_err(
                        path,
                        format!("expected an object, not {}", kind(v)),
                    ));
                };
                for a in &c.attrs {
                    let val = m.get(&a.name).or_else(|| m.get(&format!("@{}", a.name)));
                    match val {
                        Some(val) => {
                            let t = scalar_text(self.schema, &a.ty, val, &join(path, &a.name))?;
                            start.push_attribute((a.name.as_str(), t.as_str()));
                        }
                        None if a.required => {
                            return Err(field_err(&join(path, &a.name), "is required"));
                        }
                        None => {}
                    }
                }
                if !c.open {
                    for k in m.keys() {
                        let known = c.fields.iter().any(|f| &f.name.name == k)
                            || c.attrs
                                .iter()
                                .any(|a| &a.name == k || format!("@{}", a.name) == *k)
                            || (k == "#text" && c.text.is_some());
                        if !known {
                            let expected: Vec<&str> = c
                                .fields
                                .iter()
                                .map(|f| f.name.name.as_str())
                                .chain(c.attrs.iter().map(|a| a.name.as_str()))
                                .collect();
                            return Err(field_err(
                                &join(path, k),
                                format!(
                                    "is not a field here (expected {})",
                                    if expected.is_empty() {
                                        "none".to_owned()
                                    } else {
                                        expected.join(", ")
                                    }
                                ),
                            ));
                        }
                    }
                }
                self.w
                    .write_event(Event::Start(start.borrow()))
                    .map_err(w_err)?;
                if let Some(t) = &c.text
                    && let Some(val) = m.get("#text")
                {
                    let text = scalar_text(self.schema, t, val, &join(path, "#text"))?;
                    self.w
                        .write_event(Event::Text(BytesText::new(&text)))
                        .map_err(w_err)?;
                }
                for f in &c.fields {
                    self.element(f, m.get(&f.name.name), &join(path, &f.name.name))?;
                }
                self.w
                    .write_event(Event::End(start.to_end()))
                    .map_err(w_err)
            }
            Some(Resolved::Builtin(Builtin::Any)) if v.is_object() => {
                // Free-form content: the generic mapping, inside this element.
                let inner =
                    crate::xml::from_json(v, "value", &[]).map_err(|e| field_err(path, e.0))?;
                self.w
                    .write_event(Event::Start(start.borrow()))
                    .map_err(w_err)?;
                self.w.get_mut().extend_from_slice(inner.as_bytes());
                self.w
                    .write_event(Event::End(start.to_end()))
                    .map_err(w_err)
            }
            _ => {
                let text = scalar_text(self.schema, &d.ty, v, path)?;
                self.w
                    .write_event(Event::Start(start.borrow()))
                    .map_err(w_err)?;
                self.w
                    .write_event(Event::Text(BytesText::new(&text)))
                    .map_err(w_err)?;
                self.w
                    .write_event(Event::End(start.to_end()))
                    .map_err(w_err)
            }
        }
    }
}

fn env_ns(v: SoapVersion) -> &'static str {
    match v {
        SoapVersion::V11 => SOAP11_ENV,
        SoapVersion::V12 => SOAP12_ENV,
    }
}

/// Builds the request envelope for `op` from the client's JSON.
pub fn request(
    schema: &Schema,
    port: &Port,
    op: &Operation,
    json: &Value,
    token: Option<&UsernameToken>,
) -> Result<Envelope, FieldError> {
    let empty = Map::new();
    let obj = match json {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(field_err(
                "",
                format!("the body must be a JSON object, not {}", kind(other)),
            ));
        }
    };
    let prefixes = Prefixes(&port.namespaces);
    let mut out = Out {
        schema,
        prefixes: &prefixes,
        w: quick_xml::Writer::new(Vec::new()),
    };
    let mut env = BytesStart::new("soapenv:Envelope");
    env.push_attribute(("xmlns:soapenv", env_ns(port.version)));
    env.push_attribute(("xmlns:xsi", XSI));
    for (i, ns) in prefixes.0.iter().enumerate() {
        env.push_attribute((format!("xmlns:ns{i}").as_str(), ns.as_str()));
    }
    out.w
        .write_event(Event::Start(env.borrow()))
        .map_err(w_err)?;
    if let Some(t) = token {
        out.w.get_mut().extend_from_slice(
            format!(
                "<soapenv:Header><wsse:Security xmlns:wsse=\"{WSSE}\"><wsse:UsernameToken><wsse:Username>{}</wsse:Username><wsse:Password Type=\"{PASSWORD_TEXT}\">{}</wsse:Password></wsse:UsernameToken></wsse:Security></soapenv:Header>",
                quick_xml::escape::escape(t.username.as_str()),
                quick_xml::escape::escape(t.password.as_str()),
            )
            .as_bytes(),
        );
    }
    out.w
        .write_event(Event::Start(BytesStart::new("soapenv:Body")))
        .map_err(w_err)?;
    match op.style {
        Style::Document => {
            let elements: Vec<&ElementDecl> = op
                .input
                .iter()
                .filter_map(|p| p.element.as_ref())
                .filter_map(|e| schema.elements.get(e))
                .collect();
            match elements.as_slice() {
                // The usual case: one element whose fields are the JSON object's keys.
                [one] => out.element(one, Some(&Value::Object(obj.clone())), "")?,
                many => {
                    for k in obj.keys() {
                        if !many.iter().any(|e| &e.name.name == k) {
                            return Err(field_err(k, "is not a part of this operation"));
                        }
                    }
                    for e in many {
                        out.element(e, obj.get(&e.name.name), &e.name.name)?;
                    }
                }
            }
        }
        Style::Rpc => {
            let wrapper = prefixes.name(&op.rpc_namespace, &op.name);
            let start = BytesStart::new(wrapper.as_str());
            out.w
                .write_event(Event::Start(start.borrow()))
                .map_err(w_err)?;
            for k in obj.keys() {
                if !op.input.iter().any(|p| &p.name == k) {
                    return Err(field_err(k, "is not a part of this operation"));
                }
            }
            for p in &op.input {
                let d = match (&p.element, &p.ty) {
                    (Some(e), _) => schema.elements.get(e).cloned(),
                    (None, Some(t)) => Some(ElementDecl {
                        name: crate::wsdl::QName {
                            ns: String::new(),
                            name: p.name.clone(),
                        },
                        ty: t.clone(),
                        min: 1,
                        max: Some(1),
                        nillable: true,
                        reference: false,
                    }),
                    _ => None,
                };
                if let Some(d) = d {
                    out.element(&d, obj.get(&p.name), &p.name)?;
                }
            }
            out.w
                .write_event(Event::End(start.to_end()))
                .map_err(w_err)?;
        }
    }
    out.w
        .write_event(Event::End(BytesStart::new("soapenv:Body").to_end()))
        .map_err(w_err)?;
    out.w.write_event(Event::End(env.to_end())).map_err(w_err)?;
    let body = String::from_utf8(out.w.into_inner()).expect("written from strings");
    Ok(match port.version {
        SoapVersion::V11 => Envelope {
            body,
            content_type: "text/xml; charset=utf-8".into(),
            soap_action: Some(format!("\"{}\"", op.action)),
        },
        SoapVersion::V12 => Envelope {
            body,
            content_type: if op.action.is_empty() {
                "application/soap+xml; charset=utf-8".into()
            } else {
                format!(
                    "application/soap+xml; charset=utf-8; action=\"{}\"",
                    op.action
                )
            },
            soap_action: None,
        },
    })
}

/// A SOAP Fault, 1.1 or 1.2, in one shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The code without its prefix: `Client.DivideByZero`, `Sender`, `Server`.
    pub code: String,
    /// SOAP 1.2 subcodes, outermost first.
    pub subcodes: Vec<String>,
    pub reason: String,
    pub actor: Option<String>,
    /// The detail's content in the generic mapping (`null` without one).
    pub detail: Value,
}

impl Fault {
    /// Whether the sender (the client, through the gateway) is to blame.
    pub fn is_client(&self) -> bool {
        let head = self.code.split('.').next().unwrap_or("");
        head == "Client" || head == "Sender"
    }
}

/// What an answer held.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    Fault(Fault),
}

fn strip_prefix(s: &str) -> String {
    let s = s.trim();
    s.split_once(':').map_or(s, |(_, l)| l).to_owned()
}

fn fault(f: &Element, version: SoapVersion) -> Fault {
    let text = |e: Option<&Element>| e.map(|e| e.trimmed_text().to_owned());
    match version {
        SoapVersion::V11 => Fault {
            code: strip_prefix(&text(f.child(None, "faultcode")).unwrap_or_default()),
            subcodes: Vec::new(),
            reason: text(f.child(None, "faultstring")).unwrap_or_default(),
            actor: text(f.child(None, "faultactor")).filter(|s| !s.is_empty()),
            detail: f
                .child(None, "detail")
                .map(detail_json)
                .unwrap_or(Value::Null),
        },
        SoapVersion::V12 => {
            let code = f.child(Some(SOAP12_ENV), "Code");
            let mut subcodes = Vec::new();
            let mut sub = code.and_then(|c| c.child(Some(SOAP12_ENV), "Subcode"));
            while let Some(s) = sub {
                if let Some(v) = s.child(Some(SOAP12_ENV), "Value") {
                    subcodes.push(strip_prefix(v.trimmed_text()));
                }
                sub = s.child(Some(SOAP12_ENV), "Subcode");
            }
            Fault {
                code: strip_prefix(
                    &text(code.and_then(|c| c.child(Some(SOAP12_ENV), "Value")))
                        .unwrap_or_default(),
                ),
                subcodes,
                reason: text(
                    f.child(Some(SOAP12_ENV), "Reason")
                        .and_then(|r| r.child(Some(SOAP12_ENV), "Text")),
                )
                .unwrap_or_default(),
                actor: text(f.child(Some(SOAP12_ENV), "Role")).filter(|s| !s.is_empty()),
                detail: f
                    .child(Some(SOAP12_ENV), "Detail")
                    .map(detail_json)
                    .unwrap_or(Value::Null),
            }
        }
    }
}

fn detail_json(d: &Element) -> Value {
    if d.children.is_empty() {
        let t = d.trimmed_text();
        return if t.is_empty() {
            Value::Null
        } else {
            Value::String(t.to_owned())
        };
    }
    crate::xml::element_json(d)
}

/// Reads the upstream's envelope: the output message as typed JSON, or its Fault.
pub fn response(
    schema: &Schema,
    port: &Port,
    op: &Operation,
    body: &[u8],
    limits: &Limits,
) -> Result<Reply, String> {
    let root = crate::xml::parse(body, limits).map_err(|e| e.to_string())?;
    let ns = env_ns(port.version);
    if root.name != "Envelope" || root.ns.as_deref() != Some(ns) {
        let other = match root.ns.as_deref() {
            Some(SOAP11_ENV) => " (a SOAP 1.1 envelope)",
            Some(SOAP12_ENV) => " (a SOAP 1.2 envelope)",
            _ => "",
        };
        return Err(format!(
            "the answer is <{}>{other}, not a {} Envelope",
            root.name,
            port.version.label()
        ));
    }
    let body = root
        .child(Some(ns), "Body")
        .ok_or("the envelope has no Body")?;
    if let Some(f) = body.child(Some(ns), "Fault") {
        return Ok(Reply::Fault(fault(f, port.version)));
    }
    let mut out = Map::new();
    match op.style {
        Style::Document => {
            let expected: Vec<&ElementDecl> = op
                .output
                .iter()
                .filter_map(|p| p.element.as_ref().and_then(|e| schema.elements.get(e)))
                .collect();
            if !expected.is_empty()
                && !expected
                    .iter()
                    .any(|d| body.child(None, &d.name.name).is_some())
            {
                return Err(format!(
                    "the Body holds {}, not the operation's answer <{}>",
                    body.children
                        .first()
                        .map_or("nothing".to_owned(), |c| format!("<{}>", c.name)),
                    expected[0].name.name
                ));
            }
            for p in &op.output {
                let Some(decl) = p.element.as_ref().and_then(|e| schema.elements.get(e)) else {
                    continue;
                };
                let Some(el) = body.child(None, &decl.name.name) else {
                    continue;
                };
                let v = read(schema, decl, el);
                if op.output.len() == 1 {
                    return Ok(Reply::Ok(v));
                }
                out.insert(decl.name.name.clone(), v);
            }
        }
        Style::Rpc => {
            let wrapper = body.children.first().ok_or("the Body is empty")?;
            for p in &op.output {
                let Some(el) = wrapper.child(None, &p.name) else {
                    continue;
                };
                let v = match (&p.element, &p.ty) {
                    (Some(e), _) => schema
                        .elements
                        .get(e)
                        .map_or_else(|| crate::xml::element_json(el), |d| read(schema, d, el)),
                    (None, Some(t)) => read_typed(schema, t, el),
                    _ => crate::xml::element_json(el),
                };
                out.insert(p.name.clone(), v);
            }
        }
    }
    Ok(Reply::Ok(Value::Object(out)))
}

fn is_nil(el: &Element) -> bool {
    el.attr(Some(XSI), "nil")
        .is_some_and(|v| v == "true" || v == "1")
}

fn read(schema: &Schema, d: &ElementDecl, el: &Element) -> Value {
    read_typed(schema, &d.ty, el)
}

fn typed_scalar(schema: &Schema, ty: &TypeRef, text: &str) -> Value {
    match schema.builtin_of(ty) {
        Builtin::Boolean => match text.trim() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        Builtin::Integer => match text.trim().parse::<i64>() {
            Ok(n) => Value::Number(n.into()),
            // Beyond 64 bits: kept exact, as text.
            Err(_) => Value::String(text.trim().to_owned()),
        },
        Builtin::Decimal | Builtin::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(text.trim().to_owned()), Value::Number),
        _ => Value::String(text.to_owned()),
    }
}

fn read_typed(schema: &Schema, ty: &TypeRef, el: &Element) -> Value {
    if is_nil(el) {
        return Value::Null;
    }
    match schema.resolve(ty) {
        Some(Resolved::Complex(c)) => {
            if let Some(item) = wrapped_item(schema, ty) {
                return Value::Array(
                    el.children
                        .iter()
                        .filter(|x| x.name == item.name.name)
                        .map(|x| read(schema, item, x))
                        .collect(),
                );
            }
            let mut m = Map::new();
            for a in &c.attrs {
                if let Some(v) = el.attr(None, &a.name) {
                    let key = if c.fields.iter().any(|f| f.name.name == a.name) {
                        format!("@{}", a.name)
                    } else {
                        a.name.clone()
                    };
                    m.insert(key, typed_scalar(schema, &a.ty, v));
                }
            }
            if let Some(t) = &c.text {
                m.insert("#text".into(), typed_scalar(schema, t, &el.text));
            }
            for f in &c.fields {
                let found: Vec<&Element> = el
                    .children
                    .iter()
                    .filter(|x| x.name == f.name.name)
                    .collect();
                if f.repeated() {
                    m.insert(
                        f.name.name.clone(),
                        Value::Array(found.iter().map(|x| read(schema, f, x)).collect()),
                    );
                } else if let Some(x) = found.first() {
                    m.insert(f.name.name.clone(), read(schema, f, x));
                }
            }
            // Children the schema does not name are kept, in the generic mapping.
            for x in &el.children {
                if !c.fields.iter().any(|f| f.name.name == x.name) && !m.contains_key(&x.name) {
                    m.insert(x.name.clone(), crate::xml::element_json(x));
                }
            }
            Value::Object(m)
        }
        Some(Resolved::Builtin(Builtin::Any)) | None if !el.children.is_empty() => {
            crate::xml::element_json(el)
        }
        _ => typed_scalar(schema, ty, &el.text),
    }
}
