//! WSDL 1.1 with its XML Schema types, read into what the gateway needs to speak SOAP: the
//! services, their SOAP ports and operations, and the types of each operation's messages.
//!
//! No I/O here: imported and included files are asked of a `fetch` function, given the
//! location resolved against the importing file. Every document is read by
//! [`crate::xml::parse`], so DTDs and entities are refused here too.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::xml::{Element, Limits};

pub const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
pub const SOAP11_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
pub const SOAP12_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// A namespace-qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QName {
    pub ns: String,
    pub name: String,
}

impl fmt::Display for QName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ns.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{{{}}}{}", self.ns, self.name)
        }
    }
}

/// The XSD built-in types, grouped by how their values are written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    String,
    Boolean,
    /// Any of the integer types.
    Integer,
    Decimal,
    /// `float` and `double`.
    Float,
    Date,
    DateTime,
    Time,
    /// Bytes as base64 or hex text; passed as the text.
    Binary,
    /// `anyType` / `anySimpleType`: passed through in the generic mapping.
    Any,
}

impl Builtin {
    fn from_xsd(local: &str) -> Option<Builtin> {
        Some(match local {
            "string" | "normalizedString" | "token" | "anyURI" | "QName" | "NCName" | "Name"
            | "ID" | "IDREF" | "language" | "NMTOKEN" | "duration" | "gYear" | "gYearMonth"
            | "gMonth" | "gMonthDay" | "gDay" | "ENTITY" | "NOTATION" | "IDREFS" | "NMTOKENS" => {
                Builtin::String
            }
            "boolean" => Builtin::Boolean,
            "integer" | "int" | "long" | "short" | "byte" | "nonNegativeInteger"
            | "positiveInteger" | "nonPositiveInteger" | "negativeInteger" | "unsignedLong"
            | "unsignedInt" | "unsignedShort" | "unsignedByte" => Builtin::Integer,
            "decimal" => Builtin::Decimal,
            "float" | "double" => Builtin::Float,
            "date" => Builtin::Date,
            "dateTime" => Builtin::DateTime,
            "time" => Builtin::Time,
            "base64Binary" | "hexBinary" => Builtin::Binary,
            "anyType" | "anySimpleType" => Builtin::Any,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Builtin::String => "string",
            Builtin::Boolean => "boolean",
            Builtin::Integer => "integer",
            Builtin::Decimal => "decimal",
            Builtin::Float => "double",
            Builtin::Date => "date",
            Builtin::DateTime => "dateTime",
            Builtin::Time => "time",
            Builtin::Binary => "binary",
            Builtin::Any => "any",
        }
    }
}

/// Where a type is: built in, named in the schema, or declared inline.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeRef {
    Builtin(Builtin),
    Named(QName),
    Inline(Box<TypeDef>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeDef {
    Complex(ComplexType),
    Simple(SimpleType),
}

/// An element in a sequence (or a global element).
#[derive(Debug, Clone, PartialEq)]
pub struct ElementDecl {
    /// The name as written in documents: namespace empty for unqualified local elements.
    pub name: QName,
    pub ty: TypeRef,
    pub min: u32,
    /// `None`: unbounded.
    pub max: Option<u32>,
    pub nillable: bool,
    /// Written as `ref=` to a global element: its type is filled in once everything is read.
    pub reference: bool,
}

impl ElementDecl {
    pub fn repeated(&self) -> bool {
        self.max != Some(1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttrDecl {
    pub name: String,
    pub ty: TypeRef,
    pub required: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComplexType {
    /// Child elements in order (sequences and choices flattened; a choice's members are
    /// optional). An extended base type's elements come first.
    pub fields: Vec<ElementDecl>,
    pub attrs: Vec<AttrDecl>,
    /// `simpleContent`: the element's text has this type.
    pub text: Option<TypeRef>,
    /// Extension base, resolved into `fields`/`attrs` after loading.
    pub base: Option<QName>,
    /// `xsd:any` present: unknown children are accepted and passed in the generic mapping.
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimpleType {
    /// The built-in type the restriction chain ends in.
    pub base: TypeRef,
    pub enumeration: Vec<String>,
    pub min_inclusive: Option<String>,
    pub max_inclusive: Option<String>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
}

/// Every global element and named type of the schemas a WSDL uses.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub elements: BTreeMap<QName, ElementDecl>,
    pub types: BTreeMap<QName, TypeDef>,
}

impl Schema {
    /// Follows named references to a definition.
    pub fn resolve<'a>(&'a self, t: &'a TypeRef) -> Option<Resolved<'a>> {
        let def = match t {
            TypeRef::Builtin(b) => return Some(Resolved::Builtin(*b)),
            TypeRef::Named(q) => self.types.get(q)?,
            TypeRef::Inline(d) => d.as_ref(),
        };
        Some(match def {
            TypeDef::Complex(c) => Resolved::Complex(c),
            TypeDef::Simple(s) => Resolved::Simple(s),
        })
    }

    /// The built-in type under a simple type's restrictions.
    pub fn builtin_of(&self, t: &TypeRef) -> Builtin {
        let mut t = t.clone();
        for _ in 0..32 {
            match self.resolve(&t) {
                Some(Resolved::Builtin(b)) => return b,
                Some(Resolved::Simple(s)) => t = s.base.clone(),
                _ => return Builtin::Any,
            }
        }
        Builtin::Any
    }

    /// A type's name for people: `integer`, `Person`, `(inline)`.
    pub fn label(&self, t: &TypeRef) -> String {
        match t {
            TypeRef::Builtin(b) => b.label().to_owned(),
            TypeRef::Named(q) => q.name.clone(),
            TypeRef::Inline(_) => "(inline)".to_owned(),
        }
    }
}

pub enum Resolved<'a> {
    Builtin(Builtin),
    Complex(&'a ComplexType),
    Simple(&'a SimpleType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn label(self) -> &'static str {
        match self {
            SoapVersion::V11 => "SOAP 1.1",
            SoapVersion::V12 => "SOAP 1.2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Document,
    Rpc,
}

/// One message part.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    /// `element=`: the part is this global element.
    pub element: Option<QName>,
    /// `type=` (rpc style): the part is an accessor element named after the part.
    pub ty: Option<TypeRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub name: String,
    /// `SOAPAction` (1.1) or the `action` parameter (1.2); may be empty.
    pub action: String,
    pub style: Style,
    /// rpc style: the namespace of the wrapper elements.
    pub rpc_namespace: String,
    pub input: Vec<Part>,
    pub output: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub address: String,
    pub version: SoapVersion,
    pub operations: Vec<Operation>,
    /// Every namespace its envelopes can use (the schemas' and the rpc wrappers'), found once
    /// at load and declared on each request's envelope.
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone)]
pub struct Wsdl {
    pub target_namespace: String,
    pub services: Vec<Service>,
    pub schema: Schema,
}

/// Why a WSDL could not be used, and in which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsdlError {
    pub file: String,
    pub message: String,
}

impl fmt::Display for WsdlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl std::error::Error for WsdlError {}

/// Namespace bindings in scope, innermost last.
#[derive(Clone, Default)]
struct Scope(Vec<(String, String)>);

impl Scope {
    fn enter(&self, el: &Element) -> Scope {
        let mut s = self.clone();
        s.0.extend(el.namespaces.iter().cloned());
        s
    }

    fn qname(&self, value: &str) -> Result<QName, String> {
        let (prefix, name) = value.split_once(':').unwrap_or(("", value));
        let ns = self
            .0
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.clone());
        match ns {
            Some(ns) => Ok(QName {
                ns,
                name: name.to_owned(),
            }),
            None if prefix.is_empty() => Ok(QName {
                ns: String::new(),
                name: name.to_owned(),
            }),
            None => Err(format!(
                "the prefix `{prefix}` in `{value}` is not declared"
            )),
        }
    }
}

/// `location` relative to the document `base` (a path or an `http(s)://` URL). Against a URL
/// the result is always a URL on that server (`/x` and `?xsd=1` included), never a local file.
pub fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    if let Some((scheme, rest)) = base.split_once("://") {
        let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let origin = format!("{scheme}://{}", &rest[..host_end]);
        let path = &rest[host_end..];
        let path_only = path.split('?').next().unwrap_or("");
        return if location.starts_with('/') {
            format!("{origin}{location}")
        } else if location.starts_with('?') {
            format!("{origin}{path_only}{location}")
        } else {
            let dir = path_only.rfind('/').map_or("/", |i| &path_only[..=i]);
            format!("{origin}{dir}{location}")
        };
    }
    if location.starts_with('/') {
        return location.to_owned();
    }
    match base.rfind('/') {
        Some(i) => format!("{}{}", &base[..=i], location),
        None => location.to_owned(),
    }
}

type Fetch<'a> = dyn FnMut(&str) -> Result<Vec<u8>, String> + 'a;

struct Loader<'a, 'f> {
    fetch: &'a mut Fetch<'f>,
    limits: Limits,
    seen: HashSet<String>,
    schema: Schema,
    messages: BTreeMap<QName, Vec<Part>>,
    port_types: BTreeMap<QName, Vec<(String, QName, QName)>>,
    /// Bindings: name → (portType, version, style, operations: name → (action, style, namespace)).
    bindings: BTreeMap<QName, Binding>,
    /// Services: name and ports (name, binding, address).
    services: Vec<(String, Vec<PortRef>)>,
    target_namespace: Option<String>,
}

/// A port as written: name, binding, address.
type PortRef = (String, QName, String);

struct Binding {
    port_type: QName,
    version: SoapVersion,
    operations: Vec<(String, String, Style, String)>,
}

fn err(file: &str, message: impl Into<String>) -> WsdlError {
    WsdlError {
        file: file.to_owned(),
        message: message.into(),
    }
}

fn occurs(v: Option<&str>, default: u32) -> Result<Option<u32>, String> {
    match v {
        None => Ok(Some(default)),
        Some("unbounded") => Ok(None),
        Some(n) => n
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("`{n}` is not an occurrence count")),
    }
}

struct SchemaCtx {
    target: String,
    qualified: bool,
}

impl Loader<'_, '_> {
    fn read(&mut self, location: &str) -> Result<Option<Element>, WsdlError> {
        if !self.seen.insert(location.to_owned()) {
            return Ok(None);
        }
        let bytes = (self.fetch)(location).map_err(|e| err(location, e))?;
        crate::xml::parse(&bytes, &self.limits)
            .map(Some)
            .map_err(|e| err(location, e.to_string()))
    }

    fn type_ref(&self, scope: &Scope, value: &str) -> Result<TypeRef, String> {
        let q = scope.qname(value)?;
        if q.ns == XSD_NS {
            return Builtin::from_xsd(&q.name)
                .map(TypeRef::Builtin)
                .ok_or_else(|| format!("the XML Schema type `{}` is not supported", q.name));
        }
        Ok(TypeRef::Named(q))
    }

    fn schema(
        &mut self,
        el: &Element,
        scope: &Scope,
        file: &str,
        chameleon: Option<&str>,
    ) -> Result<(), WsdlError> {
        let scope = scope.enter(el);
        let cx = SchemaCtx {
            target: el
                .attr(None, "targetNamespace")
                .or(chameleon)
                .unwrap_or("")
                .to_owned(),
            qualified: el.attr(None, "elementFormDefault") == Some("qualified"),
        };
        for c in &el.children {
            if c.ns.as_deref() != Some(XSD_NS) {
                continue;
            }
            let at = |m: String| err(file, format!("<xsd:{}>: {m}", c.name));
            match c.name.as_str() {
                "import" | "include" => {
                    if let Some(loc) = c.attr(None, "schemaLocation") {
                        let loc = resolve_location(file, loc);
                        if let Some(doc) = self.read(&loc)? {
                            let chameleon = (c.name == "include").then_some(cx.target.as_str());
                            self.schema(&doc, &Scope::default(), &loc, chameleon)?;
                        }
                    }
                }
                "element" => {
                    let decl = self.element(c, &scope, &cx, true).map_err(at)?;
                    self.schema.elements.insert(decl.name.clone(), decl);
                }
                "complexType" | "simpleType" => {
                    let name = c
                        .attr(None, "name")
                        .ok_or_else(|| at("a global type needs a name".into()))?;
                    let def = self.type_def(c, &scope, &cx).map_err(at)?;
                    self.schema.types.insert(
                        QName {
                            ns: cx.target.clone(),
                            name: name.to_owned(),
                        },
                        def,
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn element(
        &self,
        el: &Element,
        scope: &Scope,
        cx: &SchemaCtx,
        global: bool,
    ) -> Result<ElementDecl, String> {
        let scope = scope.enter(el);
        let min = occurs(el.attr(None, "minOccurs"), 1)?.unwrap_or(1);
        let max = occurs(el.attr(None, "maxOccurs"), 1)?;
        if let Some(r) = el.attr(None, "ref") {
            let q = scope.qname(r)?;
            return Ok(ElementDecl {
                name: q,
                ty: TypeRef::Builtin(Builtin::Any),
                min,
                max,
                nillable: false,
                reference: true,
            });
        }
        let name = el
            .attr(None, "name")
            .ok_or("an element needs a `name` or a `ref`")?;
        let qualified = global
            || match el.attr(None, "form") {
                Some(f) => f == "qualified",
                None => cx.qualified,
            };
        let ty = if let Some(t) = el.attr(None, "type") {
            self.type_ref(&scope, t)?
        } else if let Some(inline) = el
            .children
            .iter()
            .find(|c| c.name == "complexType" || c.name == "simpleType")
        {
            TypeRef::Inline(Box::new(self.type_def(inline, &scope, cx)?))
        } else {
            TypeRef::Builtin(Builtin::Any)
        };
        Ok(ElementDecl {
            name: QName {
                ns: if qualified {
                    cx.target.clone()
                } else {
                    String::new()
                },
                name: name.to_owned(),
            },
            ty,
            min: if global { 1 } else { min },
            max: if global { Some(1) } else { max },
            nillable: el.attr(None, "nillable") == Some("true"),
            reference: false,
        })
    }

    fn type_def(&self, el: &Element, scope: &Scope, cx: &SchemaCtx) -> Result<TypeDef, String> {
        let scope = scope.enter(el);
        if el.name == "simpleType" {
            return self.simple(el, &scope).map(TypeDef::Simple);
        }
        let mut ct = ComplexType::default();
        self.content(el, &scope, cx, &mut ct, false)?;
        Ok(TypeDef::Complex(ct))
    }

    fn simple(&self, el: &Element, scope: &Scope) -> Result<SimpleType, String> {
        let mut st = SimpleType {
            base: TypeRef::Builtin(Builtin::String),
            enumeration: Vec::new(),
            min_inclusive: None,
            max_inclusive: None,
            min_length: None,
            max_length: None,
        };
        let Some(r) = el.child(Some(XSD_NS), "restriction") else {
            // `list` and `union` are read as text.
            return Ok(st);
        };
        let scope = scope.enter(r);
        if let Some(b) = r.attr(None, "base") {
            st.base = self.type_ref(&scope, b)?;
        }
        for f in &r.children {
            let v = f.attr(None, "value").unwrap_or("").to_owned();
            match f.name.as_str() {
                "enumeration" => st.enumeration.push(v),
                "minInclusive" => st.min_inclusive = Some(v),
                "maxInclusive" => st.max_inclusive = Some(v),
                "minLength" => st.min_length = v.parse().ok(),
                "maxLength" => st.max_length = v.parse().ok(),
                "length" => {
                    st.min_length = v.parse().ok();
                    st.max_length = v.parse().ok();
                }
                _ => {}
            }
        }
        Ok(st)
    }

    /// The particles and attributes of a complex type (or of a group inside one).
    fn content(
        &self,
        el: &Element,
        scope: &Scope,
        cx: &SchemaCtx,
        ct: &mut ComplexType,
        optional: bool,
    ) -> Result<(), String> {
        for c in &el.children {
            if c.ns.as_deref() != Some(XSD_NS) {
                continue;
            }
            let scope = scope.enter(c);
            match c.name.as_str() {
                "sequence" | "all" => {
                    let opt = optional || c.attr(None, "minOccurs") == Some("0");
                    self.content(c, &scope, cx, ct, opt)?;
                }
                "choice" => self.content(c, &scope, cx, ct, true)?,
                "element" => {
                    let mut d = self.element(c, &scope, cx, false)?;
                    if optional {
                        d.min = 0;
                    }
                    ct.fields.push(d);
                }
                "attribute" => {
                    let Some(name) = c.attr(None, "name") else {
                        continue;
                    };
                    let ty = match c.attr(None, "type") {
                        Some(t) => self.type_ref(&scope, t)?,
                        None => match c.child(Some(XSD_NS), "simpleType") {
                            Some(s) => {
                                TypeRef::Inline(Box::new(TypeDef::Simple(self.simple(s, &scope)?)))
                            }
                            None => TypeRef::Builtin(Builtin::String),
                        },
                    };
                    ct.attrs.push(AttrDecl {
                        name: name.to_owned(),
                        ty,
                        required: c.attr(None, "use") == Some("required"),
                    });
                }
                "any" => ct.open = true,
                "complexContent" | "simpleContent" => {
                    let derived = c
                        .child(Some(XSD_NS), "extension")
                        .or_else(|| c.child(Some(XSD_NS), "restriction"));
                    if let Some(d) = derived {
                        let scope = scope.enter(d);
                        if let Some(b) = d.attr(None, "base") {
                            let base = self.type_ref(&scope, b)?;
                            match (c.name.as_str(), base) {
                                ("simpleContent", t) => ct.text = Some(t),
                                (_, TypeRef::Named(q)) if d.name == "extension" => {
                                    ct.base = Some(q)
                                }
                                _ => {}
                            }
                        }
                        self.content(d, &scope, cx, ct, optional)?;
                    }
                }
                "group" | "attributeGroup" => {
                    return Err(format!("`xsd:{}` is not supported yet", c.name));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn definitions(&mut self, el: &Element, file: &str) -> Result<(), WsdlError> {
        if el.ns.as_deref() != Some(WSDL_NS) || el.name != "definitions" {
            return Err(err(
                file,
                format!(
                    "the root element is <{}>, not a WSDL 1.1 <definitions> (WSDL 2.0 is not supported)",
                    el.name
                ),
            ));
        }
        let scope = Scope::default().enter(el);
        let tns = el.attr(None, "targetNamespace").unwrap_or("").to_owned();
        self.target_namespace.get_or_insert_with(|| tns.clone());
        let q = |s: &Scope, v: &str| s.qname(v).map_err(|m| err(file, m));
        for c in &el.children {
            let scope = scope.enter(c);
            if c.ns.as_deref() != Some(WSDL_NS) {
                continue;
            }
            match c.name.as_str() {
                "import" => {
                    if let Some(loc) = c.attr(None, "location") {
                        let loc = resolve_location(file, loc);
                        if let Some(doc) = self.read(&loc)? {
                            if doc.ns.as_deref() == Some(XSD_NS) {
                                self.schema(&doc, &Scope::default(), &loc, None)?;
                            } else {
                                self.definitions(&doc, &loc)?;
                            }
                        }
                    }
                }
                "types" => {
                    for s in &c.children {
                        if s.ns.as_deref() == Some(XSD_NS) && s.name == "schema" {
                            self.schema(s, &scope, file, None)?;
                        }
                    }
                }
                "message" => {
                    let name = c.attr(None, "name").unwrap_or("");
                    let mut parts = Vec::new();
                    for p in c.children.iter().filter(|p| p.name == "part") {
                        let ps = scope.enter(p);
                        parts.push(Part {
                            name: p.attr(None, "name").unwrap_or("").to_owned(),
                            element: p.attr(None, "element").map(|v| q(&ps, v)).transpose()?,
                            ty: p
                                .attr(None, "type")
                                .map(|v| self.type_ref(&ps, v).map_err(|m| err(file, m)))
                                .transpose()?,
                        });
                    }
                    self.messages.insert(
                        QName {
                            ns: tns.clone(),
                            name: name.to_owned(),
                        },
                        parts,
                    );
                }
                "portType" => {
                    let name = c.attr(None, "name").unwrap_or("");
                    let mut ops = Vec::new();
                    for o in c.children.iter().filter(|o| o.name == "operation") {
                        let os = scope.enter(o);
                        let msg = |dir: &str| -> Result<QName, WsdlError> {
                            let m = o
                                .child(Some(WSDL_NS), dir)
                                .and_then(|d| d.attr(None, "message"))
                                .ok_or_else(|| {
                                    err(
                                        file,
                                        format!(
                                            "operation `{}` has no {dir} message (one-way and notification operations are not supported)",
                                            o.attr(None, "name").unwrap_or("")
                                        ),
                                    )
                                })?;
                            q(&os, m)
                        };
                        ops.push((
                            o.attr(None, "name").unwrap_or("").to_owned(),
                            msg("input")?,
                            msg("output")?,
                        ));
                    }
                    self.port_types.insert(
                        QName {
                            ns: tns.clone(),
                            name: name.to_owned(),
                        },
                        ops,
                    );
                }
                "binding" => {
                    let name = c.attr(None, "name").unwrap_or("");
                    let soap =
                        c.children
                            .iter()
                            .find(|b| b.name == "binding")
                            .and_then(|b| match b.ns.as_deref() {
                                Some(SOAP11_BINDING_NS) => Some((SoapVersion::V11, b)),
                                Some(SOAP12_BINDING_NS) => Some((SoapVersion::V12, b)),
                                _ => None,
                            });
                    // HTTP and other bindings are not SOAP: left out.
                    let Some((version, sb)) = soap else { continue };
                    let default_style = match sb.attr(None, "style") {
                        Some("rpc") => Style::Rpc,
                        _ => Style::Document,
                    };
                    let mut ops = Vec::new();
                    for o in c.children.iter().filter(|o| o.name == "operation") {
                        let so = o.children.iter().find(|x| {
                            x.name == "operation"
                                && matches!(
                                    x.ns.as_deref(),
                                    Some(SOAP11_BINDING_NS) | Some(SOAP12_BINDING_NS)
                                )
                        });
                        let style = match so.and_then(|s| s.attr(None, "style")) {
                            Some("rpc") => Style::Rpc,
                            Some(_) => Style::Document,
                            None => default_style,
                        };
                        let body = o
                            .child(Some(WSDL_NS), "input")
                            .and_then(|i| i.children.iter().find(|b| b.name == "body"));
                        if body.and_then(|b| b.attr(None, "use")) == Some("encoded") {
                            return Err(err(
                                file,
                                format!(
                                    "operation `{}` uses SOAP encoding (`use=\"encoded\"`); only literal is supported",
                                    o.attr(None, "name").unwrap_or("")
                                ),
                            ));
                        }
                        ops.push((
                            o.attr(None, "name").unwrap_or("").to_owned(),
                            so.and_then(|s| s.attr(None, "soapAction"))
                                .unwrap_or("")
                                .to_owned(),
                            style,
                            body.and_then(|b| b.attr(None, "namespace"))
                                .unwrap_or("")
                                .to_owned(),
                        ));
                    }
                    let port_type = q(&scope, c.attr(None, "type").unwrap_or(""))?;
                    self.bindings.insert(
                        QName {
                            ns: tns.clone(),
                            name: name.to_owned(),
                        },
                        Binding {
                            port_type,
                            version,
                            operations: ops,
                        },
                    );
                }
                "service" => {
                    let mut ports = Vec::new();
                    for p in c.children.iter().filter(|p| p.name == "port") {
                        let ps = scope.enter(p);
                        let address = p
                            .children
                            .iter()
                            .find(|a| a.name == "address")
                            .and_then(|a| a.attr(None, "location"))
                            .unwrap_or("")
                            .to_owned();
                        ports.push((
                            p.attr(None, "name").unwrap_or("").to_owned(),
                            q(&ps, p.attr(None, "binding").unwrap_or(""))?,
                            address,
                        ));
                    }
                    self.services
                        .push((c.attr(None, "name").unwrap_or("").to_owned(), ports));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads the WSDL at `location` and everything it imports, through `fetch`.
pub fn load(
    location: &str,
    fetch: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    limits: Limits,
) -> Result<Wsdl, WsdlError> {
    let mut l = Loader {
        fetch,
        limits,
        seen: HashSet::new(),
        schema: Schema::default(),
        messages: BTreeMap::new(),
        port_types: BTreeMap::new(),
        bindings: BTreeMap::new(),
        services: Vec::new(),
        target_namespace: None,
    };
    let root = l
        .read(location)?
        .ok_or_else(|| err(location, "read twice"))?;
    l.definitions(&root, location)?;
    patch_references(&mut l.schema).map_err(|m| err(location, m))?;
    flatten_extensions(&mut l.schema).map_err(|m| err(location, m))?;
    let mut services = Vec::new();
    for (name, ports) in &l.services {
        let mut out = Vec::new();
        for (pname, binding, address) in ports {
            let Some(b) = l.bindings.get(binding) else {
                continue;
            };
            let ops = l.port_types.get(&b.port_type).ok_or_else(|| {
                err(
                    location,
                    format!(
                        "binding `{}` names an unknown portType `{}`",
                        binding.name, b.port_type.name
                    ),
                )
            })?;
            let mut operations = Vec::new();
            for (oname, input, output) in ops {
                let (action, style, ns) = b
                    .operations
                    .iter()
                    .find(|(n, ..)| n == oname)
                    .map(|(_, a, s, n)| (a.clone(), *s, n.clone()))
                    .unwrap_or_default_op();
                let parts = |m: &QName| {
                    l.messages.get(m).cloned().ok_or_else(|| {
                        err(
                            location,
                            format!("operation `{oname}` names an unknown message `{}`", m.name),
                        )
                    })
                };
                let op = Operation {
                    name: oname.clone(),
                    action,
                    style,
                    rpc_namespace: ns,
                    input: parts(input)?,
                    output: parts(output)?,
                };
                for p in op.input.iter().chain(&op.output) {
                    if let Some(e) = &p.element
                        && !l.schema.elements.contains_key(e)
                    {
                        return Err(err(
                            location,
                            format!(
                                "operation `{oname}`: part `{}` names the element `{}`, which no schema declares",
                                p.name, e
                            ),
                        ));
                    }
                }
                operations.push(op);
            }
            let mut namespaces = schema_namespaces(&l.schema);
            namespaces.extend(operations.iter().map(|o| o.rpc_namespace.clone()));
            namespaces.remove("");
            out.push(Port {
                name: pname.clone(),
                address: address.clone(),
                version: b.version,
                operations,
                namespaces: namespaces.into_iter().collect(),
            });
        }
        if !out.is_empty() {
            services.push(Service {
                name: name.clone(),
                ports: out,
            });
        }
    }
    if services.is_empty() {
        return Err(err(location, "the WSDL has no service with a SOAP port"));
    }
    Ok(Wsdl {
        target_namespace: l.target_namespace.unwrap_or_default(),
        services,
        schema: l.schema,
    })
}

trait OrDefaultOp {
    fn unwrap_or_default_op(self) -> (String, Style, String);
}

impl OrDefaultOp for Option<(String, Style, String)> {
    fn unwrap_or_default_op(self) -> (String, Style, String) {
        self.unwrap_or((String::new(), Style::Document, String::new()))
    }
}

/// The namespaces of every element the schemas declare, global or local.
fn schema_namespaces(schema: &Schema) -> std::collections::BTreeSet<String> {
    fn walk(t: &TypeDef, set: &mut std::collections::BTreeSet<String>) {
        if let TypeDef::Complex(c) = t {
            for f in &c.fields {
                set.insert(f.name.ns.clone());
                if let TypeRef::Inline(d) = &f.ty {
                    walk(d, set);
                }
            }
        }
    }
    let mut set: std::collections::BTreeSet<String> =
        schema.elements.keys().map(|q| q.ns.clone()).collect();
    for t in schema.types.values() {
        walk(t, &mut set);
    }
    for e in schema.elements.values() {
        if let TypeRef::Inline(d) = &e.ty {
            walk(d, &mut set);
        }
    }
    set
}

/// Gives `ref=` elements the type of the global element they name.
fn patch_references(schema: &mut Schema) -> Result<(), String> {
    fn walk(def: &mut TypeDef, globals: &BTreeMap<QName, ElementDecl>) -> Result<(), String> {
        if let TypeDef::Complex(c) = def {
            for f in &mut c.fields {
                if f.reference {
                    let g = globals.get(&f.name).ok_or_else(|| {
                        format!(
                            "`ref` names the element `{}`, which no schema declares",
                            f.name
                        )
                    })?;
                    f.ty = g.ty.clone();
                    f.nillable = g.nillable;
                    f.reference = false;
                }
                if let TypeRef::Inline(d) = &mut f.ty {
                    walk(d, globals)?;
                }
            }
        }
        Ok(())
    }
    let globals = schema.elements.clone();
    for def in schema.types.values_mut() {
        walk(def, &globals)?;
    }
    for e in schema.elements.values_mut() {
        if let TypeRef::Inline(d) = &mut e.ty {
            walk(d, &globals)?;
        }
    }
    Ok(())
}

/// Copies each extended base type's elements and attributes into the derived type.
fn flatten_extensions(schema: &mut Schema) -> Result<(), String> {
    for _ in 0..16 {
        let mut changed = false;
        let names: Vec<QName> = schema.types.keys().cloned().collect();
        for n in names {
            let Some(TypeDef::Complex(c)) = schema.types.get(&n) else {
                continue;
            };
            let Some(base) = c.base.clone() else { continue };
            let Some(TypeDef::Complex(b)) = schema.types.get(&base).cloned() else {
                return Err(format!(
                    "type `{}` extends `{}`, which no schema declares",
                    n.name, base.name
                ));
            };
            if b.base.is_some() {
                continue; // its own base first
            }
            if let Some(TypeDef::Complex(c)) = schema.types.get_mut(&n) {
                inherit(c, &b);
                c.base = None;
                changed = true;
            }
        }
        if !changed {
            return flatten_inline(schema);
        }
    }
    Err("type extensions nest too deep (or form a cycle)".into())
}

/// A derived type's content: the base's elements and attributes first, then its own.
fn inherit(c: &mut ComplexType, b: &ComplexType) {
    let mut fields = b.fields.clone();
    fields.append(&mut c.fields);
    c.fields = fields;
    let mut attrs = b.attrs.clone();
    attrs.append(&mut c.attrs);
    c.attrs = attrs;
    c.open |= b.open;
}

/// The same for anonymous types (in global elements and in fields), once the named ones are
/// flat.
fn flatten_inline(schema: &mut Schema) -> Result<(), String> {
    fn walk(def: &mut TypeDef, named: &BTreeMap<QName, TypeDef>) -> Result<(), String> {
        let TypeDef::Complex(c) = def else {
            return Ok(());
        };
        if let Some(base) = c.base.take() {
            let Some(TypeDef::Complex(b)) = named.get(&base) else {
                return Err(format!(
                    "a type extends `{}`, which no schema declares",
                    base.name
                ));
            };
            inherit(c, b);
        }
        for f in &mut c.fields {
            if let TypeRef::Inline(d) = &mut f.ty {
                walk(d, named)?;
            }
        }
        Ok(())
    }
    let named = schema.types.clone();
    for def in schema.types.values_mut() {
        if let TypeDef::Complex(c) = def {
            for f in &mut c.fields {
                if let TypeRef::Inline(d) = &mut f.ty {
                    walk(d, &named)?;
                }
            }
        }
    }
    for e in schema.elements.values_mut() {
        if let TypeRef::Inline(d) = &mut e.ty {
            walk(d, &named)?;
        }
    }
    Ok(())
}

impl Wsdl {
    /// A readable summary: services, ports, operations and their message fields.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            out.push_str(&format!("service {}\n", s.name));
            for p in &s.ports {
                out.push_str(&format!(
                    "  port {} ({}) {}\n",
                    p.name,
                    p.version.label(),
                    p.address
                ));
                for o in &p.operations {
                    out.push_str(&format!(
                        "    {}  [{}{}]\n",
                        o.name,
                        match o.style {
                            Style::Document => "document",
                            Style::Rpc => "rpc",
                        },
                        if o.action.is_empty() {
                            String::new()
                        } else {
                            format!(", action \"{}\"", o.action)
                        }
                    ));
                    out.push_str(&format!("      in:  {}\n", self.fields_text(&o.input)));
                    out.push_str(&format!("      out: {}\n", self.fields_text(&o.output)));
                }
            }
        }
        out
    }

    fn fields_text(&self, parts: &[Part]) -> String {
        let mut items = Vec::new();
        for p in parts {
            match (&p.element, &p.ty) {
                (Some(e), _) => match self.schema.elements.get(e) {
                    Some(d) => match self.schema.resolve(&d.ty) {
                        Some(Resolved::Complex(c)) => {
                            for a in &c.attrs {
                                items.push(format!("@{}: {}", a.name, self.schema.label(&a.ty)));
                            }
                            for f in &c.fields {
                                items.push(self.field_text(f));
                            }
                        }
                        _ => items.push(self.field_text(d)),
                    },
                    None => items.push(format!("{}: ?", e.name)),
                },
                (None, Some(t)) => items.push(format!("{}: {}", p.name, self.schema.label(t))),
                _ => {}
            }
        }
        if items.is_empty() {
            "(nothing)".into()
        } else {
            items.join(", ")
        }
    }

    fn field_text(&self, f: &ElementDecl) -> String {
        let mut t = format!("{}: {}", f.name.name, self.schema.label(&f.ty));
        if f.repeated() {
            t.push_str("[]");
        }
        if f.min == 0 || f.nillable {
            t.push('?');
        }
        t
    }

    /// Finds a SOAP port: by service and port name when given, else the only one.
    pub fn port(&self, service: Option<&str>, port: Option<&str>) -> Result<&Port, String> {
        let services: Vec<&Service> = self
            .services
            .iter()
            .filter(|s| service.is_none_or(|n| n == s.name))
            .collect();
        let ports: Vec<&Port> = services
            .iter()
            .flat_map(|s| &s.ports)
            .filter(|p| port.is_none_or(|n| n == p.name))
            .collect();
        match ports.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "no SOAP port matches; the WSDL has {}",
                self.services
                    .iter()
                    .flat_map(|s| s
                        .ports
                        .iter()
                        .map(move |p| format!("{}/{}", s.name, p.name)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            many => Err(format!(
                "{} SOAP ports match ({}); name one with `service` and `port`",
                many.len(),
                many.iter()
                    .map(|p| format!("{} ({})", p.name, p.version.label()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn locations_resolve_against_files_and_urls() {
        use super::resolve_location as r;
        assert_eq!(r("/a/b/c.wsdl", "t.xsd"), "/a/b/t.xsd");
        assert_eq!(r("/a/b/c.wsdl", "/etc/x.xsd"), "/etc/x.xsd");
        assert_eq!(r("http://h:1/s/c.wsdl", "t.xsd"), "http://h:1/s/t.xsd");
        assert_eq!(r("http://h/s/c.wsdl", "/dev/zero"), "http://h/dev/zero");
        assert_eq!(r("http://h/svc?wsdl", "?xsd=1"), "http://h/svc?xsd=1");
        assert_eq!(r("https://h", "t.xsd"), "https://h/t.xsd");
        assert_eq!(r("http://h/a.wsdl", "https://o/t.xsd"), "https://o/t.xsd");
    }
}
