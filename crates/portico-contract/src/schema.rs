//! Schemas compiled once, when the config loads: every keyword parsed and checked, every
//! `$ref` resolved to a node, every `pattern` compiled. What the validator cannot enforce is an
//! error here, located by a JSON pointer into the document, never a silent gap.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

/// Which JSON Schema a document's schemas are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAPI 3.0's Schema Object: draft 4's keywords (boolean `exclusiveMinimum`), `nullable`,
    /// and `$ref` that replaces its siblings.
    Oas30,
    /// OpenAPI 3.1: JSON Schema 2020-12.
    Oas31,
}

/// A compiled schema, an index into [`Schemas`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SchemaId(pub(crate) u32);

pub(crate) mod ty {
    pub const NULL: u8 = 1;
    pub const BOOLEAN: u8 = 2;
    pub const OBJECT: u8 = 4;
    pub const ARRAY: u8 = 8;
    pub const NUMBER: u8 = 16;
    pub const STRING: u8 = 32;
    pub const INTEGER: u8 = 64;

    pub fn name(t: u8) -> &'static str {
        match t {
            NULL => "null",
            BOOLEAN => "boolean",
            OBJECT => "object",
            ARRAY => "array",
            NUMBER => "number",
            STRING => "string",
            _ => "integer",
        }
    }

    pub fn of(name: &str) -> Option<u8> {
        Some(match name {
            "null" => NULL,
            "boolean" => BOOLEAN,
            "object" => OBJECT,
            "array" => ARRAY,
            "number" => NUMBER,
            "string" => STRING,
            "integer" => INTEGER,
            _ => return None,
        })
    }
}

/// The formats that are checked; others are annotations only, as JSON Schema allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Int32,
    Int64,
    Date,
    DateTime,
    Time,
    Uuid,
    Ipv4,
    Ipv6,
    Email,
}

impl Format {
    fn of(name: &str) -> Option<Format> {
        Some(match name {
            "int32" => Format::Int32,
            "int64" => Format::Int64,
            "date" => Format::Date,
            "date-time" => Format::DateTime,
            "time" => Format::Time,
            "uuid" => Format::Uuid,
            "ipv4" => Format::Ipv4,
            "ipv6" => Format::Ipv6,
            "email" => Format::Email,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Int32 => "int32",
            Format::Int64 => "int64",
            Format::Date => "date",
            Format::DateTime => "date-time",
            Format::Time => "time",
            Format::Uuid => "uuid",
            Format::Ipv4 => "ipv4",
            Format::Ipv6 => "ipv6",
            Format::Email => "email",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound {
    pub value: f64,
    pub exclusive: bool,
    /// The bound exactly, when it is written as an integer: integers beyond 2^53 are compared
    /// with it rather than with the rounded `value`.
    pub int: Option<i128>,
}

#[derive(Debug)]
pub(crate) struct Pattern {
    pub re: Regex,
    pub source: Box<str>,
}

/// Property names.
pub(crate) type Names = Box<[Box<str>]>;

#[derive(Debug, Default)]
pub(crate) struct Node {
    /// `false`: nothing is valid.
    pub never: bool,
    /// Allowed types as `ty` bits; 0 for any.
    pub types: u8,
    /// OpenAPI 3.0's `nullable: true`: `null` is valid whatever the other keywords say.
    pub nullable: bool,
    pub read_only: bool,
    pub write_only: bool,
    pub enumeration: Option<Box<[Value]>>,
    pub constant: Option<Value>,
    // Strings.
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<Pattern>,
    pub format: Option<Format>,
    // Numbers.
    pub minimum: Option<Bound>,
    pub maximum: Option<Bound>,
    pub multiple_of: Option<f64>,
    // Objects.
    pub properties: Box<[(Box<[u8]>, SchemaId)]>,
    /// The [`Name`] of each of `properties`, in the same order.
    pub names: Box<[Name]>,
    pub pattern_properties: Box<[(Pattern, SchemaId)]>,
    pub additional: Option<SchemaId>,
    pub required: Box<[Box<str>]>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub property_names: Option<SchemaId>,
    pub dependent_required: Box<[(Box<str>, Names)]>,
    pub dependent_schemas: Box<[(Box<str>, SchemaId)]>,
    // Arrays.
    pub prefix_items: Box<[SchemaId]>,
    pub items: Option<SchemaId>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub contains: Option<SchemaId>,
    pub min_contains: u64,
    pub max_contains: Option<u64>,
    // Applicators.
    pub reference: Option<SchemaId>,
    pub all_of: Box<[SchemaId]>,
    pub any_of: Box<[SchemaId]>,
    pub one_of: Box<[SchemaId]>,
    pub not: Option<SchemaId>,
    pub condition: Option<(SchemaId, Option<SchemaId>, Option<SchemaId>)>,
    /// Which groups of keywords the node has (`has::*`), so a check skips the others at once.
    pub has: u8,
    /// For each entry of `required` that is also in `properties`, the bit of its index there
    /// (when there are at most 64 properties): an object's keys mark the properties they match,
    /// and one comparison finds what is missing.
    pub required_bits: u64,
    /// Whether `required` is covered by `required_bits` alone.
    pub required_by_bits: bool,
}

pub(crate) mod has {
    pub const APPLICATORS: u8 = 1;
    pub const ENUM_CONST: u8 = 2;
    pub const STRING: u8 = 4;
    pub const NUMBER: u8 = 8;
    pub const OBJECT: u8 = 16;
    pub const ARRAY: u8 = 32;
}

/// A property name reduced to its length and two words of its bytes, so that an object's
/// key is matched against a schema's few names by comparing integers, without a branch per
/// byte or per name. Every byte of a name up to 16 bytes long is in the words (the words of
/// longer names hold only its ends, so those are compared in full too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name {
    len: u64,
    head: u64,
    tail: u64,
}

impl Name {
    /// Names longer than this are compared byte by byte after their `Name`s agree.
    pub const WHOLE: usize = 16;

    pub fn of(b: &[u8]) -> Name {
        let n = b.len();
        let w8 = |s: &[u8]| u64::from_le_bytes(s[..8].try_into().unwrap_or_default());
        let w4 = |s: &[u8]| u64::from(u32::from_le_bytes(s[..4].try_into().unwrap_or_default()));
        // Overlapping loads of the first and last bytes cover the name whichever its length.
        let (head, tail) = if n >= 8 {
            (w8(b), w8(&b[n - 8..]))
        } else if n >= 4 {
            (w4(b), w4(&b[n - 4..]))
        } else if n > 0 {
            (
                u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
                0,
            )
        } else {
            (0, 0)
        };
        Name {
            len: n as u64,
            head,
            tail,
        }
    }

    /// Equal, as far as the words go: the same name when it is at most [`Self::WHOLE`] long.
    #[inline]
    pub fn like(self, other: Name) -> bool {
        (self.len ^ other.len) | (self.head ^ other.head) | (self.tail ^ other.tail) == 0
    }
}

/// Every schema compiled from one document, which `$ref`s link by index.
#[derive(Debug)]
pub struct Schemas {
    pub(crate) nodes: Vec<Node>,
    pub(crate) dialect: Dialect,
    /// Which schemas the checker that reads as it goes can take.
    pub(crate) plan: Plan,
}

impl Schemas {
    pub(crate) fn node(&self, id: SchemaId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The types a schema allows, through plain `$ref`s; 0 for any.
    pub(crate) fn types(&self, mut id: SchemaId) -> u8 {
        for _ in 0..32 {
            let n = self.node(id);
            if n.types != 0 {
                // `nullable: true` lets `null` through too: a parameter reading `null` is one.
                return n.types | if n.nullable { ty::NULL } else { 0 };
            }
            match n.reference {
                Some(r) => id = r,
                None => return 0,
            }
        }
        0
    }

    /// Whether a schema, through its `$ref`s and `allOf`s, says `readOnly` (`write` false) or
    /// `writeOnly` (`write` true).
    pub(crate) fn says_only(&self, id: SchemaId, write: bool, depth: u32) -> bool {
        let n = self.node(id);
        if (write && n.write_only) || (!write && n.read_only) {
            return true;
        }
        depth < 16
            && n.reference
                .iter()
                .chain(n.all_of.iter())
                .any(|s| self.says_only(*s, write, depth + 1))
    }

    /// Whether `id` is an object schema with this property, and the property's schema.
    pub(crate) fn property(&self, mut id: SchemaId, name: &str) -> Option<SchemaId> {
        for _ in 0..32 {
            let n = self.node(id);
            if let Some((_, s)) = n.properties.iter().find(|(k, _)| &**k == name.as_bytes()) {
                return Some(*s);
            }
            id = n.reference?;
        }
        None
    }
}

/// What the check while reading (`stream.rs`) knows of each schema, computed once when the
/// schemas are finished.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Whether values can be checked against the schema, and everything it leads to, as they
    /// are read.
    streams: Vec<bool>,
}

/// Whether a node checks a value only through its `$ref` (what else it says, `readOnly`
/// say, is about the property, not the value).
pub(crate) fn passes_through(n: &Node) -> bool {
    n.reference.is_some() && n.has == 0 && n.types == 0 && !n.nullable && !n.never
}

/// Whether a node, taken alone, can be checked value by value.
fn local(n: &Node) -> bool {
    let scalar = |v: &serde_json::Value| !v.is_array() && !v.is_object();
    (n.reference.is_none() || passes_through(n))
        && n.has & has::APPLICATORS == 0
        && n.pattern_properties.is_empty()
        && n.property_names.is_none()
        && n.dependent_required.is_empty()
        && n.dependent_schemas.is_empty()
        && !n.unique_items
        && n.contains.is_none()
        && (n.required.is_empty() || n.required_by_bits)
        && n.enumeration
            .as_ref()
            .is_none_or(|list| list.iter().all(scalar))
        && n.constant.as_ref().is_none_or(scalar)
}

/// The schemas a node checks values against (its members' and its reference's).
fn children(n: &Node) -> impl Iterator<Item = SchemaId> + '_ {
    n.reference
        .into_iter()
        .chain(n.properties.iter().map(|(_, s)| *s))
        .chain(n.additional)
        .chain(n.items)
        .chain(n.prefix_items.iter().copied())
}

impl Plan {
    pub(crate) fn new(nodes: &[Node]) -> Plan {
        let mut streams: Vec<bool> = nodes.iter().map(local).collect();
        // A schema streams when all it leads to does: take away, until nothing changes, every
        // schema with a child that does not.
        loop {
            let mut changed = false;
            for (i, n) in nodes.iter().enumerate() {
                if streams[i] && children(n).any(|c| !streams[c.0 as usize]) {
                    streams[i] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Plan { streams }
    }

    pub(crate) fn streams(&self, id: SchemaId) -> bool {
        self.streams.get(id.0 as usize).copied().unwrap_or(false)
    }
}

/// A schema the validator cannot use, located by a JSON pointer into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub pointer: String,
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} (at #{}; {})", self.message, self.pointer, self.hint)
    }
}

/// Compiles the schemas of one document. Each schema is compiled once, however many operations
/// and `$ref`s use it.
pub struct Compiler<'a> {
    root: &'a Value,
    dialect: Dialect,
    nodes: Vec<Node>,
    by_pointer: HashMap<String, SchemaId>,
    /// Regexes by source: documents repeat the same patterns.
    patterns: HashMap<String, Regex>,
    errors: Vec<CompileError>,
}

/// The keywords of JSON Schema 2020-12 that assert something the validator does not check.
/// A document that uses them is refused rather than half-checked.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "unevaluatedProperties",
        "use `additionalProperties` in the schema that lists the properties",
    ),
    (
        "unevaluatedItems",
        "use `items` (after `prefixItems`) instead",
    ),
    ("$dynamicRef", "use a plain `$ref`"),
    ("$recursiveRef", "use a plain `$ref`"),
];

impl<'a> Compiler<'a> {
    pub fn new(root: &'a Value, dialect: Dialect) -> Self {
        Compiler {
            root,
            dialect,
            nodes: Vec::new(),
            by_pointer: HashMap::new(),
            patterns: HashMap::new(),
            errors: Vec::new(),
        }
    }

    /// The schema at `pointer` (a JSON pointer into the document, `""` for the root).
    pub fn schema(&mut self, pointer: &str) -> SchemaId {
        if let Some(id) = self.by_pointer.get(pointer) {
            return *id;
        }
        let id = SchemaId(self.nodes.len() as u32);
        self.nodes.push(Node::default());
        self.by_pointer.insert(pointer.to_owned(), id);
        let node = match self.root.pointer(pointer) {
            Some(v) => self.compile(v, pointer),
            None => {
                self.error(pointer, "no schema here", "fix the reference");
                Node::default()
            }
        };
        self.nodes[id.0 as usize] = node;
        id
    }

    /// The problems found so far.
    pub fn errors(&self) -> &[CompileError] {
        &self.errors
    }

    /// Every schema compiled, and every problem found.
    pub fn finish(mut self) -> (Schemas, Vec<CompileError>) {
        link(&mut self.nodes);
        (
            Schemas {
                plan: Plan::new(&self.nodes),
                nodes: self.nodes,
                dialect: self.dialect,
            },
            self.errors,
        )
    }

    /// Records a problem found outside a schema (in a parameter object, say).
    pub fn push_error(&mut self, e: CompileError) {
        self.errors.push(e);
    }

    fn error(&mut self, pointer: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(CompileError {
            pointer: pointer.to_owned(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn child(&mut self, pointer: &str, key: &str) -> SchemaId {
        let p = format!("{pointer}/{}", escape(key));
        self.schema(&p)
    }

    fn children(&mut self, v: &Value, pointer: &str, key: &str) -> Box<[SchemaId]> {
        match v.get(key) {
            None => Box::default(),
            Some(Value::Array(list)) if !list.is_empty() => (0..list.len())
                .map(|i| self.schema(&format!("{pointer}/{key}/{i}")))
                .collect(),
            Some(_) => {
                self.error(
                    &format!("{pointer}/{key}"),
                    format!("`{key}` must be a non-empty list of schemas"),
                    "write a list",
                );
                Box::default()
            }
        }
    }

    fn count(&mut self, v: &Value, pointer: &str, key: &str) -> Option<u64> {
        let x = v.get(key)?;
        match x.as_u64().or_else(|| {
            x.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e18)
                .map(|f| f as u64)
        }) {
            Some(n) => Some(n),
            None => {
                self.error(
                    &format!("{pointer}/{key}"),
                    format!("`{key}` must be a non-negative integer"),
                    "write a whole number, 0 or more",
                );
                None
            }
        }
    }

    fn number(&mut self, v: &Value, pointer: &str, key: &str) -> Option<f64> {
        self.exact(v, pointer, key).map(|(f, _)| f)
    }

    /// A number keyword, and its exact value when it is an integer.
    fn exact(&mut self, v: &Value, pointer: &str, key: &str) -> Option<(f64, Option<i128>)> {
        let x = v.get(key)?;
        let int = x
            .as_i64()
            .map(i128::from)
            .or_else(|| x.as_u64().map(i128::from));
        match x.as_f64() {
            Some(n) => Some((n, int)),
            None => {
                self.error(
                    &format!("{pointer}/{key}"),
                    format!("`{key}` must be a number"),
                    "write a number",
                );
                None
            }
        }
    }

    fn pattern(&mut self, source: &str, pointer: &str) -> Option<Pattern> {
        if let Some(re) = self.patterns.get(source) {
            return Some(Pattern {
                re: re.clone(),
                source: source.into(),
            });
        }
        match regex::RegexBuilder::new(&ascii_classes(source))
            .size_limit(1 << 20)
            .build()
        {
            Ok(re) => {
                self.patterns.insert(source.to_owned(), re.clone());
                Some(Pattern {
                    re,
                    source: source.into(),
                })
            }
            Err(e) => {
                let why = e.to_string();
                let why = why.lines().last().unwrap_or("").trim().to_owned();
                self.error(
                    pointer,
                    format!("the pattern `{source}` cannot be compiled: {why}"),
                    "patterns are compiled by Rust's regex crate, which has no look-around or \
                     back-references; rewrite the pattern, or turn request validation off for \
                     the operation",
                );
                None
            }
        }
    }

    fn compile(&mut self, v: &Value, pointer: &str) -> Node {
        let map = match v {
            Value::Bool(b) => {
                return Node {
                    never: !b,
                    ..Node::default()
                };
            }
            Value::Object(m) => m,
            _ => {
                self.error(
                    pointer,
                    format!(
                        "a schema must be an object{}",
                        match self.dialect {
                            Dialect::Oas31 => " or a boolean",
                            Dialect::Oas30 => "",
                        }
                    ),
                    "write the schema as a mapping",
                );
                return Node::default();
            }
        };
        let mut n = Node::default();
        if let Some(r) = map.get("$ref") {
            match r.as_str() {
                Some(r) if r.starts_with('#') => match decode_fragment(r) {
                    Some(target) => n.reference = Some(self.schema(&target)),
                    None => self.error(
                        &format!("{pointer}/$ref"),
                        format!("`{r}` is not a JSON pointer"),
                        "write `#/components/schemas/Name`",
                    ),
                },
                Some(r) => self.error(
                    &format!("{pointer}/$ref"),
                    format!("`{r}` refers outside the document, which is not supported"),
                    "copy the schema into the document's `components/schemas`",
                ),
                None => self.error(
                    &format!("{pointer}/$ref"),
                    "`$ref` must be a string",
                    "write `#/components/schemas/Name`",
                ),
            }
            // In OpenAPI 3.0 a reference object's siblings are ignored.
            if self.dialect == Dialect::Oas30 {
                return n;
            }
        }
        for (k, hint) in UNSUPPORTED {
            if map.contains_key(*k) {
                self.error(
                    &format!("{pointer}/{}", escape(k)),
                    format!("`{k}` is not supported by the request validator"),
                    *hint,
                );
            }
        }
        match map.get("type") {
            None => {}
            Some(Value::String(t)) => match ty::of(t) {
                Some(b) => n.types = b,
                None => self.error(
                    &format!("{pointer}/type"),
                    format!("`{t}` is not a JSON Schema type"),
                    "use null, boolean, object, array, number, string or integer",
                ),
            },
            Some(Value::Array(ts)) if self.dialect == Dialect::Oas31 || !ts.is_empty() => {
                for (i, t) in ts.iter().enumerate() {
                    match t.as_str().and_then(ty::of) {
                        Some(b) => n.types |= b,
                        None => self.error(
                            &format!("{pointer}/type/{i}"),
                            format!("{t} is not a JSON Schema type"),
                            "use null, boolean, object, array, number, string or integer",
                        ),
                    }
                }
            }
            Some(_) => self.error(
                &format!("{pointer}/type"),
                "`type` must be a type name or a list of them",
                "write `type: string`",
            ),
        }
        if n.types & ty::NUMBER != 0 {
            // Every integer is a number.
            n.types |= ty::INTEGER;
        }
        // OpenAPI 3.0's `nullable`, honoured in 3.1 documents too: many were converted from 3.0
        // and keep it, and ignoring it would refuse the nulls their authors allow.
        if map.get("nullable") == Some(&Value::Bool(true)) {
            n.nullable = true;
        }
        n.read_only = map.get("readOnly") == Some(&Value::Bool(true));
        n.write_only = map.get("writeOnly") == Some(&Value::Bool(true));
        match map.get("enum") {
            None => {}
            Some(Value::Array(list)) => n.enumeration = Some(list.clone().into_boxed_slice()),
            Some(_) => self.error(
                &format!("{pointer}/enum"),
                "`enum` must be a list",
                "write a list of the allowed values",
            ),
        }
        n.constant = map.get("const").cloned();
        n.min_length = self.count(v, pointer, "minLength");
        n.max_length = self.count(v, pointer, "maxLength");
        if let Some(p) = map.get("pattern") {
            match p.as_str() {
                Some(src) => n.pattern = self.pattern(src, &format!("{pointer}/pattern")),
                None => self.error(
                    &format!("{pointer}/pattern"),
                    "`pattern` must be a string",
                    "write a regular expression",
                ),
            }
        }
        n.format = map
            .get("format")
            .and_then(Value::as_str)
            .and_then(Format::of);
        // Numbers: draft 4 (OpenAPI 3.0) makes `exclusiveMinimum` a flag on `minimum`;
        // 2020-12 makes it a bound of its own.
        let (min, max) = (
            self.exact(v, pointer, "minimum"),
            self.exact(v, pointer, "maximum"),
        );
        match self.dialect {
            Dialect::Oas30 => {
                let flag = |k: &str| map.get(k) == Some(&Value::Bool(true));
                n.minimum = min.map(|(value, int)| Bound {
                    value,
                    exclusive: flag("exclusiveMinimum"),
                    int,
                });
                n.maximum = max.map(|(value, int)| Bound {
                    value,
                    exclusive: flag("exclusiveMaximum"),
                    int,
                });
            }
            Dialect::Oas31 => {
                let (emin, emax) = (
                    self.exact(v, pointer, "exclusiveMinimum"),
                    self.exact(v, pointer, "exclusiveMaximum"),
                );
                n.minimum = tighter(min, emin, |a, b| a > b);
                n.maximum = tighter(max, emax, |a, b| a < b);
            }
        }
        if let Some(m) = self.number(v, pointer, "multipleOf") {
            if m > 0.0 {
                n.multiple_of = Some(m);
            } else {
                self.error(
                    &format!("{pointer}/multipleOf"),
                    "`multipleOf` must be greater than 0",
                    "write a positive number",
                );
            }
        }
        // Objects.
        if let Some(props) = map.get("properties") {
            match props {
                Value::Object(m) => {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    let base = format!("{pointer}/properties");
                    n.properties = keys
                        .iter()
                        .map(|k| {
                            let id = self.child(&base, k);
                            (k.as_bytes().into(), id)
                        })
                        .collect();
                    n.names = keys.iter().map(|k| Name::of(k.as_bytes())).collect();
                }
                _ => self.error(
                    &format!("{pointer}/properties"),
                    "`properties` must be a mapping of names to schemas",
                    "write a mapping",
                ),
            }
        }
        for (k, what) in [
            ("patternProperties", "a mapping of patterns to schemas"),
            (
                "dependentRequired",
                "a mapping of property names to lists of names",
            ),
            ("dependentSchemas", "a mapping of property names to schemas"),
        ] {
            if map.get(k).is_some_and(|v| !v.is_object()) {
                self.error(
                    &format!("{pointer}/{k}"),
                    format!("`{k}` must be {what}"),
                    "write a mapping",
                );
            }
        }
        if let Some(f) = map.get("format")
            && !f.is_string()
        {
            self.error(
                &format!("{pointer}/format"),
                "`format` must be a string",
                "write a format name such as `date-time`",
            );
        }
        if let Some(Value::Object(m)) = map.get("patternProperties") {
            let keys: Vec<String> = m.keys().cloned().collect();
            let base = format!("{pointer}/patternProperties");
            let mut out = Vec::new();
            for k in keys {
                let at = format!("{base}/{}", escape(&k));
                if let Some(p) = self.pattern(&k, &at) {
                    let id = self.schema(&at);
                    out.push((p, id));
                }
            }
            n.pattern_properties = out.into_boxed_slice();
        }
        if map.contains_key("additionalProperties") {
            n.additional = Some(self.child(pointer, "additionalProperties"));
        }
        match map.get("required") {
            None => {}
            Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
                n.required = list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(Into::into)
                    .collect();
            }
            Some(_) => self.error(
                &format!("{pointer}/required"),
                "`required` must be a list of property names",
                "write a list of strings",
            ),
        }
        n.min_properties = self.count(v, pointer, "minProperties");
        n.max_properties = self.count(v, pointer, "maxProperties");
        if map.contains_key("propertyNames") {
            n.property_names = Some(self.child(pointer, "propertyNames"));
        }
        if let Some(Value::Object(m)) = map.get("dependentRequired") {
            n.dependent_required = m
                .iter()
                .map(|(k, v)| {
                    let list: Names = match v.as_array() {
                        Some(l) if l.iter().all(Value::is_string) => {
                            l.iter().filter_map(Value::as_str).map(Into::into).collect()
                        }
                        _ => {
                            self.error(
                                &format!("{pointer}/dependentRequired/{}", escape(k)),
                                format!("`dependentRequired.{k}` must be a list of property names"),
                                "write a list of strings",
                            );
                            Box::default()
                        }
                    };
                    (k.as_str().into(), list)
                })
                .collect();
        }
        if let Some(Value::Object(m)) = map.get("dependentSchemas") {
            let keys: Vec<String> = m.keys().cloned().collect();
            let base = format!("{pointer}/dependentSchemas");
            n.dependent_schemas = keys
                .iter()
                .map(|k| (k.as_str().into(), self.child(&base, k)))
                .collect();
        }
        // Arrays: 2020-12's `prefixItems` + `items`; draft 4's list form of `items` +
        // `additionalItems`.
        match (self.dialect, map.get("items")) {
            (_, None) => {}
            (Dialect::Oas30, Some(Value::Array(_))) => {
                n.prefix_items = self.children(v, pointer, "items");
                if map.contains_key("additionalItems") {
                    n.items = Some(self.child(pointer, "additionalItems"));
                }
            }
            (_, Some(_)) => n.items = Some(self.child(pointer, "items")),
        }
        if self.dialect == Dialect::Oas31 && map.contains_key("prefixItems") {
            n.prefix_items = self.children(v, pointer, "prefixItems");
        }
        n.min_items = self.count(v, pointer, "minItems");
        n.max_items = self.count(v, pointer, "maxItems");
        n.unique_items = map.get("uniqueItems") == Some(&Value::Bool(true));
        if map.contains_key("contains") {
            n.contains = Some(self.child(pointer, "contains"));
            n.min_contains = self.count(v, pointer, "minContains").unwrap_or(1);
            n.max_contains = self.count(v, pointer, "maxContains");
        }
        // Applicators.
        n.all_of = self.children(v, pointer, "allOf");
        n.any_of = self.children(v, pointer, "anyOf");
        n.one_of = self.children(v, pointer, "oneOf");
        if map.contains_key("not") {
            n.not = Some(self.child(pointer, "not"));
        }
        if map.contains_key("if") {
            let i = self.child(pointer, "if");
            let t = map
                .contains_key("then")
                .then(|| self.child(pointer, "then"));
            let e = map
                .contains_key("else")
                .then(|| self.child(pointer, "else"));
            n.condition = Some((i, t, e));
        }
        n
    }
}

/// Whether a node is a `$ref` and nothing else.
fn pure_ref(n: &Node) -> Option<SchemaId> {
    let r = n.reference?;
    let alone = !n.never
        && n.types == 0
        && !n.nullable
        && !n.read_only
        && !n.write_only
        && n.enumeration.is_none()
        && n.constant.is_none()
        && n.min_length.is_none()
        && n.max_length.is_none()
        && n.pattern.is_none()
        && n.format.is_none()
        && n.minimum.is_none()
        && n.maximum.is_none()
        && n.multiple_of.is_none()
        && n.properties.is_empty()
        && n.pattern_properties.is_empty()
        && n.additional.is_none()
        && n.required.is_empty()
        && n.min_properties.is_none()
        && n.max_properties.is_none()
        && n.property_names.is_none()
        && n.dependent_required.is_empty()
        && n.dependent_schemas.is_empty()
        && n.prefix_items.is_empty()
        && n.items.is_none()
        && n.min_items.is_none()
        && n.max_items.is_none()
        && !n.unique_items
        && n.contains.is_none()
        && n.all_of.is_empty()
        && n.any_of.is_empty()
        && n.one_of.is_empty()
        && n.not.is_none()
        && n.condition.is_none();
    alone.then_some(r)
}

/// Makes the compiled nodes quick to check: links that go through a node that is only a
/// `$ref` go to its target instead (a chain of them too, a loop of them is left as it is),
/// and each node learns which groups of keywords it has and which of its properties are
/// required.
fn link(nodes: &mut [Node]) {
    let targets: Vec<Option<SchemaId>> = nodes.iter().map(pure_ref).collect();
    let end = |mut id: SchemaId| {
        for _ in 0..32 {
            match targets[id.0 as usize] {
                Some(next) if next != id => id = next,
                _ => return id,
            }
        }
        id
    };
    let fix = |id: &mut SchemaId| *id = end(*id);
    for n in nodes.iter_mut() {
        // A node's own `$ref` is kept: it is what makes a pure-reference node check anything.
        if let Some(r) = n.reference.as_mut() {
            fix(r);
        }
        n.properties.iter_mut().for_each(|(_, s)| fix(s));
        n.pattern_properties.iter_mut().for_each(|(_, s)| fix(s));
        n.dependent_schemas.iter_mut().for_each(|(_, s)| fix(s));
        n.prefix_items.iter_mut().for_each(fix);
        n.all_of.iter_mut().for_each(fix);
        n.any_of.iter_mut().for_each(fix);
        n.one_of.iter_mut().for_each(fix);
        for s in [
            &mut n.additional,
            &mut n.property_names,
            &mut n.items,
            &mut n.contains,
            &mut n.not,
        ]
        .into_iter()
        .flatten()
        {
            fix(s);
        }
        if let Some((i, t, e)) = n.condition.as_mut() {
            fix(i);
            if let Some(t) = t {
                fix(t);
            }
            if let Some(e) = e {
                fix(e);
            }
        }
        let mut h = 0;
        if !n.all_of.is_empty()
            || !n.any_of.is_empty()
            || !n.one_of.is_empty()
            || n.not.is_some()
            || n.condition.is_some()
        {
            h |= has::APPLICATORS;
        }
        if n.enumeration.is_some() || n.constant.is_some() {
            h |= has::ENUM_CONST;
        }
        if n.min_length.is_some()
            || n.max_length.is_some()
            || n.pattern.is_some()
            || n.format.is_some()
        {
            h |= has::STRING;
        }
        if n.minimum.is_some()
            || n.maximum.is_some()
            || n.multiple_of.is_some()
            || n.format.is_some()
        {
            h |= has::NUMBER;
        }
        if !n.properties.is_empty()
            || !n.pattern_properties.is_empty()
            || n.additional.is_some()
            || !n.required.is_empty()
            || n.min_properties.is_some()
            || n.max_properties.is_some()
            || n.property_names.is_some()
            || !n.dependent_required.is_empty()
            || !n.dependent_schemas.is_empty()
        {
            h |= has::OBJECT;
        }
        if !n.prefix_items.is_empty()
            || n.items.is_some()
            || n.min_items.is_some()
            || n.max_items.is_some()
            || n.unique_items
            || n.contains.is_some()
        {
            h |= has::ARRAY;
        }
        n.has = h;
        if n.properties.len() <= 64 {
            let mut bits = 0u64;
            let mut all = true;
            for r in n.required.iter() {
                match n.properties.iter().position(|(k, _)| **k == *r.as_bytes()) {
                    Some(i) => bits |= 1 << i,
                    None => all = false,
                }
            }
            n.required_bits = bits;
            n.required_by_bits = all;
        }
    }
}

type Exact = (f64, Option<i128>);

/// The tighter of an inclusive and an exclusive bound.
fn tighter(
    inclusive: Option<Exact>,
    exclusive: Option<Exact>,
    beyond: fn(f64, f64) -> bool,
) -> Option<Bound> {
    let bound = |(value, int): Exact, exclusive| Bound {
        value,
        exclusive,
        int,
    };
    match (inclusive, exclusive) {
        (None, None) => None,
        (Some(i), None) => Some(bound(i, false)),
        (None, Some(e)) => Some(bound(e, true)),
        (Some(i), Some(e)) => Some(if beyond(i.0, e.0) {
            bound(i, false)
        } else {
            bound(e, true)
        }),
    }
}

/// A pattern with ECMA-262's ASCII meaning of `\d`, `\w` and `\b`, which JSON Schema
/// specifies, where Rust's regex crate would take every Unicode digit and letter: `^\d+$`
/// must not let Arabic-Indic digits through to an upstream that parses ASCII.
fn ascii_classes(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 8);
    let mut in_class = false;
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('d' | 'D' | 'w' | 'W' | 'b' | 'B')) => {
                    let text = match (in_class, e) {
                        (false, 'd') => "[0-9]",
                        (false, 'D') => "[^0-9]",
                        (false, 'w') => "[0-9A-Za-z_]",
                        (false, 'W') => "[^0-9A-Za-z_]",
                        (false, 'b') => "(?-u:\\b)",
                        (false, _) => "(?-u:\\B)",
                        (true, 'd') => "0-9",
                        (true, 'w') => "0-9A-Za-z_",
                        // `[\D]`, `[\W]` and `[\b]` keep the regex crate's meaning.
                        (true, _) => {
                            out.push('\\');
                            out.push(e);
                            continue;
                        }
                    };
                    out.push_str(text);
                }
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` right after `[` or `[^` is a literal.
                let rest = chars.as_str();
                if let Some(r) = rest.strip_prefix('^') {
                    out.push('^');
                    chars = r.chars();
                }
                if chars.as_str().starts_with(']') {
                    out.push(']');
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// A key as a JSON pointer segment.
pub fn escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1").into()
    } else {
        key.into()
    }
}

/// `#/a/b%20c` as the pointer `/a/b c` (a fragment is percent-encoded).
fn decode_fragment(r: &str) -> Option<String> {
    let frag = r.strip_prefix('#')?;
    let decoded = percent_encoding::percent_decode_str(frag)
        .decode_utf8()
        .ok()?
        .into_owned();
    (decoded.is_empty() || decoded.starts_with('/')).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::ascii_classes;

    #[test]
    fn perl_classes_take_their_ascii_meaning() {
        assert_eq!(ascii_classes(r"^\d+$"), "^[0-9]+$");
        assert_eq!(ascii_classes(r"[\d.]+\w"), "[0-9.]+[0-9A-Za-z_]");
        assert_eq!(ascii_classes(r"\\d\bx"), r"\\d(?-u:\b)x");
        assert_eq!(ascii_classes(r"[]\d][^]\w]"), "[]0-9][^]0-9A-Za-z_]");
        assert_eq!(ascii_classes(r"[\D]é\.\s"), r"[\D]é\.\s");
        let re = regex::Regex::new(&ascii_classes(r"^\d+$")).unwrap();
        assert!(re.is_match("123"));
        assert!(!re.is_match("\u{661}\u{662}"));
    }
}
