//! XML read into a small tree and mapped to and from JSON, safely.
//!
//! Reading refuses what makes XML dangerous to a gateway: a document type declaration (so no
//! entity is ever defined, expanded or fetched: no XXE, no "billion laughs"), references to
//! entities other than the five predefined ones, nesting deeper than a limit, elements with more
//! attributes than a limit (and more namespace declarations in scope), and documents larger than
//! a limit. Only UTF-8 is read. Reading costs
//! time in proportion to the document's size: attributes are checked for duplicates with a hash
//! set, not by comparing each with every other.
//!
//! The generic JSON mapping (documented in docs/soap.md):
//! - an element with neither attributes nor child elements is its text, as a string;
//! - otherwise an object: attributes as `"@name"`, child elements by name, and the element's
//!   own non-blank text as `"#text"`;
//! - sibling elements with the same name become an array, in document order;
//! - namespace prefixes are dropped, unless siblings share a local name in different
//!   namespaces: those keep their prefix (`"a:item"`, `"b:item"`);
//! - namespace declarations, comments and processing instructions are left out.
//!
//! JSON is written back the same way round (children in key order: JSON objects have none), so
//! a document in this shape survives both trips.

use std::fmt;

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value};

/// Bounds on what is read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Largest document, in bytes.
    pub max_bytes: usize,
    /// Most attributes on one element, namespace declarations included; also the most
    /// namespace declarations in scope at once.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_bytes: 1 << 20,
            max_attributes: 256,
        }
    }
}

/// An element: its namespace, names, attributes, children and text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// Namespace URI, if the element is in one.
    pub ns: Option<String>,
    /// The prefix it was written with (`soap` in `soap:Body`).
    pub prefix: Option<String>,
    pub name: String,
    /// Attributes other than namespace declarations.
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    /// All character data directly inside the element, concatenated.
    pub text: String,
    /// Namespaces declared on this element: (prefix, URI), `""` for the default one. Needed
    /// to resolve QNames in attribute values (`type="tns:Person"`).
    pub namespaces: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attr {
    pub ns: Option<String>,
    pub prefix: Option<String>,
    pub name: String,
    pub value: String,
}

impl Element {
    /// The first child with this local name (and namespace, when given).
    pub fn child(&self, ns: Option<&str>, name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name == name && (ns.is_none() || c.ns.as_deref() == ns))
    }

    /// An attribute's value by local name (and namespace, when given).
    pub fn attr(&self, ns: Option<&str>, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && (ns.is_none() || a.ns.as_deref() == ns))
            .map(|a| a.value.as_str())
    }

    /// The text, without surrounding white space.
    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

/// Why a document was not read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for XmlError {}

fn at(input: &str, offset: usize, message: impl Into<String>) -> XmlError {
    let before = &input.as_bytes()[..offset.min(input.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    XmlError {
        line,
        column,
        message: message.into(),
    }
}

fn resolved(r: ResolveResult<'_>) -> Result<Option<String>, String> {
    match r {
        ResolveResult::Bound(ns) => Ok(Some(String::from_utf8_lossy(ns.as_ref()).into_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(p) => Err(format!(
            "the prefix `{}` is not bound to a namespace",
            String::from_utf8_lossy(&p)
        )),
    }
}

fn prefix_of(qname: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(qname);
    s.split_once(':').map(|(p, _)| p.to_owned())
}

/// Below this many attributes, duplicates are found by comparing names pairwise: cheaper than
/// hashing for the few attributes elements usually have, and bounded.
const PAIRWISE_ATTRIBUTES: usize = 8;

fn start(
    reader: &quick_xml::NsReader<&[u8]>,
    e: &BytesStart<'_>,
    limits: &Limits,
) -> Result<Element, String> {
    let (ns, _) = reader.resolve_element(e.name());
    let mut el = Element {
        ns: resolved(ns)?,
        prefix: prefix_of(e.name().as_ref()),
        name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
        ..Element::default()
    };
    // quick-xml's own duplicate check compares each attribute with every earlier one: quadratic
    // in the attributes of one element. Ours is linear: a hash set past a few attributes.
    let mut names: Vec<&[u8]> = Vec::new();
    let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(|e| e.to_string())?;
        if names.len() == limits.max_attributes {
            return Err(format!(
                "<{}> has more than {} attributes (namespace declarations included)",
                el.name, limits.max_attributes
            ));
        }
        let key = a.key.into_inner();
        let duplicate = if names.len() < PAIRWISE_ATTRIBUTES {
            names.contains(&key)
        } else {
            if seen.is_empty() {
                seen.extend(names.iter().copied());
            }
            !seen.insert(key)
        };
        if duplicate {
            return Err(format!(
                "<{}> has the attribute `{}` twice",
                el.name,
                String::from_utf8_lossy(key)
            ));
        }
        names.push(key);
        let key = a.key.as_ref();
        if key == b"xmlns" || key.starts_with(b"xmlns:") {
            let prefix = key.strip_prefix(b"xmlns:").unwrap_or(b"");
            // Namespaces in XML 1.0 §3: `xmlns:` names a prefix, and `xmlns` is not one. An
            // empty prefix would be written back as a second default namespace (`xmlns`).
            if key.len() > 5 && (prefix.is_empty() || prefix == b"xmlns") {
                return Err(format!(
                    "<{}> declares the namespace prefix `{}`, which is not one",
                    el.name,
                    String::from_utf8_lossy(prefix)
                ));
            }
            let uri = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
            el.namespaces
                .push((String::from_utf8_lossy(prefix).into_owned(), uri));
            continue;
        }
        let (ns, local) = reader.resolve_attribute(a.key);
        let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        el.attrs.push(Attr {
            ns: resolved(ns)?,
            prefix: prefix_of(key),
            name: String::from_utf8_lossy(local.as_ref()).into_owned(),
            value,
        });
    }
    Ok(el)
}

fn too_many_namespaces(limits: &Limits) -> String {
    format!(
        "more than {} namespace declarations are in scope at once",
        limits.max_attributes
    )
}

/// Reads a whole document into its root element.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    let fail = |m: &str| XmlError {
        line: 0,
        column: 0,
        message: m.to_owned(),
    };
    if input.len() > limits.max_bytes {
        return Err(fail(&format!(
            "the document is larger than {} bytes",
            limits.max_bytes
        )));
    }
    let text = std::str::from_utf8(input).map_err(|e| {
        let off = e.valid_up_to();
        let s = std::str::from_utf8(&input[..off]).unwrap_or("");
        at(s, off, "the document is not UTF-8")
    })?;
    let mut reader = quick_xml::NsReader::from_reader(text.as_bytes());
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    // Namespace declarations in scope: each prefixed or unprefixed name is resolved by searching
    // them, so they are bounded like one element's attributes.
    let mut in_scope = 0usize;
    loop {
        let pos = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(x) => x,
            Err(e) => {
                return Err(at(text, reader.error_position() as usize, e.to_string()));
            }
        };
        let err = |m: String| at(text, pos, m);
        match event {
            Event::DocType(_) => {
                return Err(err(
                    "document type declarations (DTDs) are refused: entities are never defined or expanded".into(),
                ));
            }
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                let _ = e;
                return Err(err("content after the root element".into()));
            }
            Event::Start(e) => {
                if stack.len() >= limits.max_depth {
                    return Err(err(format!(
                        "elements nest deeper than {} levels",
                        limits.max_depth
                    )));
                }
                let el = start(&reader, &e, limits).map_err(err)?;
                in_scope += el.namespaces.len();
                if in_scope > limits.max_attributes {
                    return Err(err(too_many_namespaces(limits)));
                }
                stack.push(el);
            }
            Event::Empty(e) => {
                if stack.len() >= limits.max_depth {
                    return Err(err(format!(
                        "elements nest deeper than {} levels",
                        limits.max_depth
                    )));
                }
                let el = start(&reader, &e, limits).map_err(err)?;
                if in_scope + el.namespaces.len() > limits.max_attributes {
                    return Err(err(too_many_namespaces(limits)));
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| err("an end tag without a start".into()))?;
                in_scope -= el.namespaces.len();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.xml_content().map_err(|e| err(e.to_string()))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(err("text outside the root element".into())),
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| err(e.to_string()))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None => return Err(err("CDATA outside the root element".into())),
                }
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(err("an invalid character reference".into())),
                    }
                } else {
                    let name = r.decode().map_err(|e| err(e.to_string()))?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(err(format!(
                                "the entity `&{name};` is not defined (only &lt; &gt; &amp; &apos; &quot; and character references are)"
                            )));
                        }
                    }
                };
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&ch),
                    None => return Err(err("a reference outside the root element".into())),
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(at(
            text,
            text.len(),
            format!("the document ends inside <{}>", open.name),
        ));
    }
    root.ok_or_else(|| at(text, text.len(), "the document has no root element"))
}

/// The key an element or attribute gets among siblings: its local name, or `prefix:name`
/// when siblings share the local name in another namespace (an unprefixed one, in the default
/// namespace, keeps the bare name).
fn keys<'a>(
    items: impl Iterator<Item = (&'a Option<String>, &'a Option<String>, &'a str)> + Clone,
) -> Vec<String> {
    // One pass to find the local names used in more than one namespace, one to name: linear,
    // so a document with many siblings costs what it weighs.
    let mut first_ns: std::collections::HashMap<&str, (&Option<String>, bool)> =
        std::collections::HashMap::new();
    for (ns, _, name) in items.clone() {
        let e = first_ns.entry(name).or_insert((ns, false));
        if e.0 != ns {
            e.1 = true;
        }
    }
    items
        .map(|(_, prefix, name)| match (first_ns[name].1, prefix) {
            (true, Some(p)) => format!("{p}:{name}"),
            _ => name.to_owned(),
        })
        .collect()
}

/// `{ "root": value }` for the document's root element.
pub fn to_json(root: &Element) -> Value {
    let mut m = Map::new();
    m.insert(root.name.clone(), element_json(root));
    Value::Object(m)
}

/// An element's value in the generic mapping.
pub fn element_json(el: &Element) -> Value {
    if el.attrs.is_empty() && el.children.is_empty() {
        return Value::String(el.text.clone());
    }
    let mut m = Map::new();
    let attr_keys = keys(el.attrs.iter().map(|a| (&a.ns, &a.prefix, a.name.as_str())));
    for (a, k) in el.attrs.iter().zip(attr_keys) {
        m.insert(format!("@{k}"), Value::String(a.value.clone()));
    }
    let child_keys = keys(
        el.children
            .iter()
            .map(|c| (&c.ns, &c.prefix, c.name.as_str())),
    );
    for (c, k) in el.children.iter().zip(child_keys) {
        let v = element_json(c);
        // Element values are strings or objects, never arrays: an array means repetition.
        match m.get_mut(&k) {
            Some(Value::Array(list)) => list.push(v),
            Some(prev) => {
                let first = prev.take();
                *prev = Value::Array(vec![first, v]);
            }
            None => {
                m.insert(k, v);
            }
        }
    }
    let text = el.text.trim();
    if !text.is_empty() {
        m.insert("#text".into(), Value::String(text.to_owned()));
    }
    Value::Object(m)
}

/// Why JSON could not be written as XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonToXmlError(pub String);

impl fmt::Display for JsonToXmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonToXmlError {}

/// Whether `s` can name an element or attribute (a prefix allowed).
pub fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && !s.starts_with("xml")
        && s.split(':').count() <= 2
        && !s.ends_with(':')
}

/// Writes JSON in the generic mapping. An object with one key names the root element; any
/// other value is wrapped in `root`. `namespaces` (prefix, URI) are declared on the root, so
/// keys such as `"inv:item"` are written in their namespace.
pub fn from_json(
    v: &Value,
    root: &str,
    namespaces: &[(String, String)],
) -> Result<String, JsonToXmlError> {
    let mut w = quick_xml::Writer::new(Vec::new());
    match v {
        Value::Object(m)
            if m.len() == 1
                && !m.keys().any(|k| k.starts_with(['@', '#']))
                && !m.values().any(Value::is_array) =>
        {
            let (k, v) = m.iter().next().expect("one key");
            write_named(&mut w, k, v, k, namespaces, namespaces)?;
        }
        // One root element always: an array's items become `<item>` children of `root`.
        Value::Array(items) => {
            let mut wrapped = Map::new();
            wrapped.insert("item".into(), Value::Array(items.clone()));
            write_named(
                &mut w,
                root,
                &Value::Object(wrapped),
                root,
                namespaces,
                namespaces,
            )?;
        }
        _ => write_named(&mut w, root, v, root, namespaces, namespaces)?,
    }
    Ok(String::from_utf8(w.into_inner()).expect("written from strings"))
}

/// Whether XML 1.0 can carry `s` (no control characters but tab, newline and carriage
/// return; no U+FFFE or U+FFFF).
pub fn is_xml_text(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// Whether a prefixed name's prefix is declared: XML whose prefixes are not bound is not
/// namespace-well-formed, and no reader (Portico's included) would take it back.
fn check_prefix(name: &str, path: &str, scope: &[(String, String)]) -> Result<(), JsonToXmlError> {
    match name.split_once(':') {
        Some((prefix, _)) if !scope.iter().any(|(p, _)| p == prefix) => {
            Err(JsonToXmlError(format!(
                "`{path}`: the prefix `{prefix}` of `{name}` is not declared (list it in `namespaces`)"
            )))
        }
        _ => Ok(()),
    }
}

/// `namespaces` are declared on this element; `scope` are those declared on the root, which
/// prefixed names may use.
fn write_named(
    w: &mut quick_xml::Writer<Vec<u8>>,
    name: &str,
    v: &Value,
    path: &str,
    namespaces: &[(String, String)],
    scope: &[(String, String)],
) -> Result<(), JsonToXmlError> {
    if let Value::String(s) = v
        && !is_xml_text(s)
    {
        return Err(JsonToXmlError(format!(
            "`{path}`: the text has a character XML cannot carry (a control character)"
        )));
    }
    let declare = |start: &mut BytesStart<'_>| {
        for (prefix, uri) in namespaces {
            let attr = if prefix.is_empty() {
                "xmlns".to_owned()
            } else {
                format!("xmlns:{prefix}")
            };
            start.push_attribute((attr.as_str(), uri.as_str()));
        }
    };
    if !is_xml_name(name) {
        return Err(JsonToXmlError(format!(
            "`{path}`: `{name}` is not a valid XML name"
        )));
    }
    check_prefix(name, path, scope)?;
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_array() {
                    return Err(JsonToXmlError(format!(
                        "`{path}[{i}]`: an array inside an array has no XML form"
                    )));
                }
                write_named(w, name, item, &format!("{path}[{i}]"), namespaces, scope)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            let mut start = BytesStart::new(name);
            declare(&mut start);
            for (k, v) in m {
                if let Some(a) = k.strip_prefix('@') {
                    if !is_xml_name(a) {
                        return Err(JsonToXmlError(format!(
                            "`{path}.{k}`: `{a}` is not a valid XML attribute name"
                        )));
                    }
                    check_prefix(a, &format!("{path}.{k}"), scope)?;
                    let value = scalar(v).ok_or_else(|| {
                        JsonToXmlError(format!(
                            "`{path}.{k}`: an attribute's value must be a string, number or boolean"
                        ))
                    })?;
                    if !is_xml_text(&value) {
                        return Err(JsonToXmlError(format!(
                            "`{path}.{k}`: the value has a character XML cannot carry"
                        )));
                    }
                    start.push_attribute((a, value.as_str()));
                }
            }
            let children: Vec<(&String, &Value)> =
                m.iter().filter(|(k, _)| !k.starts_with('@')).collect();
            if children.is_empty() {
                w.write_event(Event::Empty(start))
                    .map_err(|e| JsonToXmlError(e.to_string()))?;
                return Ok(());
            }
            w.write_event(Event::Start(start.borrow()))
                .map_err(|e| JsonToXmlError(e.to_string()))?;
            for (k, v) in children {
                if k == "#text" {
                    let t = scalar(v).ok_or_else(|| {
                        JsonToXmlError(format!(
                            "`{path}.#text`: text must be a string, number or boolean"
                        ))
                    })?;
                    if !is_xml_text(&t) {
                        return Err(JsonToXmlError(format!(
                            "`{path}.#text`: the text has a character XML cannot carry"
                        )));
                    }
                    w.write_event(Event::Text(BytesText::new(&t)))
                        .map_err(|e| JsonToXmlError(e.to_string()))?;
                } else {
                    write_named(w, k, v, &format!("{path}.{k}"), &[], scope)?;
                }
            }
            w.write_event(Event::End(start.to_end()))
                .map_err(|e| JsonToXmlError(e.to_string()))?;
            Ok(())
        }
        other => {
            let t = scalar(other).expect("scalars");
            let mut start = BytesStart::new(name);
            declare(&mut start);
            if t.is_empty() {
                w.write_event(Event::Empty(start))
            } else {
                w.write_event(Event::Start(start.borrow()))
                    .and_then(|()| w.write_event(Event::Text(BytesText::new(&t))))
                    .and_then(|()| w.write_event(Event::End(start.to_end())))
            }
            .map_err(|e| JsonToXmlError(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(s: &str) -> Result<Element, XmlError> {
        parse(s.as_bytes(), &Limits::default())
    }

    fn attributes(n: usize) -> String {
        let mut s = String::from("<r");
        for i in 0..n {
            s.push_str(&format!(" a{i}=\"{i}\""));
        }
        s + "/>"
    }

    /// Found by the `xml` fuzz target: a prefixed key whose prefix nothing declares was
    /// written as XML that no namespace-aware reader takes back.
    #[test]
    fn prefixes_must_be_declared_to_be_written() {
        let e = from_json(&json!({"oa:irder": {"id": 1}}), "root", &[]).unwrap_err();
        assert!(e.0.contains("prefix `oa`"), "{e}");
        let e = from_json(&json!({"r": {"@p:a": "1"}}), "root", &[]).unwrap_err();
        assert!(e.0.contains("prefix `p`"), "{e}");
        let ns = vec![("oa".to_owned(), "urn:oa".to_owned())];
        let xml = from_json(
            &json!({"oa:order": {"oa:id": 1, "@oa:v": "2"}}),
            "root",
            &ns,
        )
        .unwrap();
        let back = read(&xml).unwrap();
        assert_eq!(back.name, "order");
    }

    #[test]
    fn attributes_past_the_limit_are_refused_and_at_it_read() {
        let at_limit = read(&attributes(256)).unwrap();
        assert_eq!(at_limit.attrs.len(), 256);
        assert_eq!(at_limit.attr(None, "a255"), Some("255"));
        let e = read(&attributes(257)).unwrap_err();
        assert!(e.message.contains("more than 256 attributes"), "{e}");
        assert_eq!((e.line, e.column), (1, 1));
        // Namespace declarations count too.
        let e = read(&format!(
            "<x>\n{}",
            attributes(256).replace("<r", "<r xmlns:p=\"urn:p\"")
        ))
        .unwrap_err();
        assert!(e.message.contains("more than 256"), "{e}");
        assert_eq!((e.line, e.column), (2, 1));
        let small = Limits {
            max_attributes: 2,
            ..Limits::default()
        };
        assert!(parse(b"<r a=\"1\" b=\"2\"/>", &small).is_ok());
        assert!(parse(b"<r a=\"1\" b=\"2\" c=\"3\"/>", &small).is_err());
        // Namespace declarations in scope are bounded by the same number.
        let scoped = "<a xmlns:p=\"urn:p\"><b xmlns:q=\"urn:q\"/><c xmlns:q=\"urn:q\"/></a>";
        assert!(parse(scoped.as_bytes(), &small).is_ok());
        let e = parse(
            b"<a xmlns:p=\"urn:p\"><b xmlns:q=\"urn:q\"><c xmlns:r=\"urn:r\"/></b></a>",
            &small,
        )
        .unwrap_err();
        assert!(
            e.message.contains("more than 2 namespace declarations"),
            "{e}"
        );
        assert_eq!((e.line, e.column), (1, 39));
        // A raised limit: many attributes read, with the duplicate check past the pairwise range.
        let many = Limits {
            max_attributes: 80_000,
            ..Limits::default()
        };
        let doc = attributes(20_000);
        let r = parse(doc.as_bytes(), &many).unwrap();
        assert_eq!(r.attrs.len(), 20_000);
        assert_eq!(to_json(&r)["r"]["@a19999"], "19999");
    }

    #[test]
    fn duplicate_attributes_are_refused() {
        let e = read("<r a=\"1\" b=\"2\" a=\"3\"/>").unwrap_err();
        assert!(e.message.contains("`a` twice"), "{e}");
        // Past the pairwise range, with the hash set.
        let many = attributes(40).replace("/>", " a7=\"again\"/>");
        assert!(read(&many).unwrap_err().message.contains("`a7` twice"));
        let many = attributes(40).replace("/>", " a39=\"again\"/>");
        assert!(read(&many).unwrap_err().message.contains("`a39` twice"));
        let e = read("<r xmlns:p=\"urn:a\" xmlns:p=\"urn:b\"/>").unwrap_err();
        assert!(e.message.contains("`xmlns:p` twice"), "{e}");
        // An empty prefix (found by the `xml` fuzz target) would be written back as a second
        // `xmlns`; `xmlns` itself is reserved.
        let e = read("<r xmlns:=\"urn:a\" xmlns=\"urn:b\"/>").unwrap_err();
        assert!(e.message.contains("which is not one"), "{e}");
        assert!(read("<r xmlns:xmlns=\"urn:a\"/>").is_err());
        // Different names, also in a namespace, are not duplicates.
        assert!(read("<r xmlns:p=\"urn:a\" a=\"1\" p:a=\"2\"/>").is_ok());
    }

    #[test]
    fn dangerous_documents_are_refused_with_a_position() {
        let laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>\n<lolz>&lol2;</lolz>";
        let e = read(laughs).unwrap_err();
        assert!(e.message.contains("DTD"), "{e}");
        assert_eq!(e.line, 2);
        let xxe = "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>";
        assert!(read(xxe).unwrap_err().message.contains("DTD"));
        // Without a DTD an unknown entity is simply undefined.
        let e = read("<r>\n  &x;</r>").unwrap_err();
        assert!(e.message.contains("`&x;` is not defined"), "{e}");
        assert_eq!((e.line, e.column), (2, 3));
        let deep = "<a>".repeat(70) + &"</a>".repeat(70);
        assert!(read(&deep).unwrap_err().message.contains("deeper than 64"));
        let big = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(parse(b"<a>0123456789</a>", &big).is_err());
        assert!(read("<a><b></a>").is_err());
        assert!(
            read("<a/><b/>")
                .unwrap_err()
                .message
                .contains("after the root")
        );
        assert!(read("<a>").unwrap_err().message.contains("ends inside <a>"));
        assert!(read("").unwrap_err().message.contains("no root"));
        assert!(read("<p:a/>").unwrap_err().message.contains("`p`"));
        assert!(parse(b"<a>\xff</a>", &Limits::default()).is_err());
    }

    #[test]
    fn entities_character_references_and_cdata_are_text() {
        let el = read("<a>x &lt; y &amp; &#x41;&#66;<![CDATA[<raw>]]></a>").unwrap();
        assert_eq!(el.text, "x < y & AB<raw>");
    }

    #[test]
    fn json_mapping_follows_the_documented_rules() {
        let el = read(
            r#"<order id="7" xmlns="urn:o" xmlns:x="urn:x"><item>a</item><item>b</item><note lang="en">hi</note><x:item>c</x:item><empty/></order>"#,
        )
        .unwrap();
        assert_eq!(
            to_json(&el),
            json!({"order": {"@id": "7", "item": ["a", "b"], "note": {"@lang": "en", "#text": "hi"}, "x:item": "c", "empty": ""}})
        );
    }

    #[test]
    fn json_is_written_back_as_xml() {
        let v = json!({"order": {"@id": 7, "item": ["a", "b"], "note": {"@lang": "en", "#text": "x<y"}, "n": null, "ok": true}});
        let xml = from_json(&v, "root", &[]).unwrap();
        // JSON objects have no order: children are written in key order.
        assert_eq!(
            xml,
            r#"<order id="7"><item>a</item><item>b</item><n/><note lang="en">x&lt;y</note><ok>true</ok></order>"#
        );
        // One root element always: arrays are wrapped.
        assert_eq!(
            from_json(&json!([1, 2]), "list", &[]).unwrap(),
            "<list><item>1</item><item>2</item></list>"
        );
        assert_eq!(
            from_json(&json!({"a": [1, 2]}), "root", &[]).unwrap(),
            "<root><a>1</a><a>2</a></root>"
        );
        assert_eq!(from_json(&json!([]), "root", &[]).unwrap(), "<root></root>");
        assert!(
            from_json(&json!({"a": "x\u{1}y"}), "r", &[])
                .unwrap_err()
                .0
                .contains("cannot carry")
        );
        assert_eq!(
            from_json(&json!({"a": 1, "b": 2}), "root", &[]).unwrap(),
            "<root><a>1</a><b>2</b></root>"
        );
        assert!(
            from_json(&json!({"bad key": 1}), "r", &[])
                .unwrap_err()
                .0
                .contains("`bad key`")
        );
        assert!(
            from_json(&json!({"a": [[1]]}), "r", &[])
                .unwrap_err()
                .0
                .contains("array inside an array")
        );
        assert!(from_json(&json!({"a": {"@x": {}}}), "r", &[]).is_err());
    }
}
