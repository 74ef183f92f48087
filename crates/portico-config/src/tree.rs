//! A YAML document as a tree of located nodes, and a serde `Deserializer` over it.
//!
//! serde stops at the first error. To report every mistake in a file at once we first read the
//! whole document into [`Node`]s (serde-saphyr gives each node its line and column), then
//! deserialize each list item or map entry on its own and keep going after a failure. Every error
//! carries the location of the innermost node that caused it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

/// A 1-based line and column in the config file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub line: u32,
    pub column: u32,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The key text of a map key node (YAML allows scalar keys of any type).
    pub fn key_text(&self) -> String {
        match &self.kind {
            NodeKind::Str(s) => s.clone(),
            NodeKind::Int(i) => i.to_string(),
            NodeKind::UInt(i) => i.to_string(),
            NodeKind::Bool(b) => b.to_string(),
            NodeKind::Float(f) => f.to_string(),
            NodeKind::Null => "null".into(),
            NodeKind::Seq(_) | NodeKind::Map(_) => "<complex key>".into(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) | NodeKind::UInt(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The node as JSON, with strings as written (no `${VAR}` substitution) and the values of
    /// secret-looking keys replaced, for display on the admin port.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::UInt(i) => Value::from(*i),
            NodeKind::Float(f) => Value::from(*f),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => {
                Value::Array(items.iter().map(Node::to_redacted_json).collect())
            }
            NodeKind::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.key_text();
                    let value = if is_secret_key(&key) && !matches!(v.kind, NodeKind::Null) {
                        Value::String("<redacted>".into())
                    } else {
                        v.to_redacted_json()
                    };
                    out.insert(key, value);
                }
                Value::Object(out)
            }
        }
    }
}

/// Keys whose values are never shown, even when written literally in the file.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "authorization",
        "cookie",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

// ---------------------------------------------------------------------------------------------
// Reading the YAML document into nodes.

pub(crate) struct RawNode(pub(crate) NodeKind);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

fn located(s: Spanned<RawNode>) -> Node {
    Node {
        kind: s.value.0,
        loc: Loc {
            line: s.referenced.line() as u32,
            column: s.referenced.column() as u32,
        },
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawNode;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Null))
    }
    fn visit_none<E>(self) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawNode, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::UInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<RawNode, E> {
        Ok(RawNode(NodeKind::Str(v)))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawNode>>()? {
            items.push(located(item));
        }
        Ok(RawNode(NodeKind::Seq(items)))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawNode>>()? {
            let value = map.next_value::<Spanned<RawNode>>()?;
            entries.push((located(key), located(value)));
        }
        Ok(RawNode(NodeKind::Map(entries)))
    }
}

/// Parses YAML text into a node tree. Syntax errors come back with their location.
pub fn parse_document(text: &str) -> Result<Node, DeError> {
    if text.trim().is_empty() {
        return Ok(Node {
            kind: NodeKind::Map(Vec::new()),
            loc: Loc { line: 1, column: 1 },
        });
    }
    if let Some(root) = crate::plain_yaml::read(text) {
        return Ok(root);
    }
    parse_document_reference(text)
}

/// [`parse_document`] through serde-saphyr's deserializer alone: every YAML feature, and its
/// error messages.
pub(crate) fn parse_document_reference(text: &str) -> Result<Node, DeError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_depth: 64, max_nodes: 2_000_000 },
    };
    match serde_saphyr::from_str_with_options::<Spanned<RawNode>>(text, options) {
        Ok(root) => Ok(located(root)),
        Err(e) => {
            let loc = e.location().map(|l| Loc {
                line: l.line() as u32,
                column: l.column() as u32,
            });
            // The rendered message repeats the location and a snippet; keep only the first line.
            let msg = e.without_snippet().to_string();
            let msg = msg.lines().next().unwrap_or("invalid YAML").to_string();
            Err(DeError {
                msg: format!("invalid YAML: {msg}"),
                loc,
                hint: None,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Separates a custom error's message from its hint, for `Deserialize` impls that know one.
pub const HINT: &str = "\n\thint: ";

#[derive(Debug, Clone)]
pub struct DeError {
    pub msg: String,
    pub loc: Option<Loc>,
    pub hint: Option<String>,
}

impl DeError {
    pub fn at(mut self, loc: Loc) -> Self {
        if self.loc.is_none() {
            self.loc = Some(loc);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    /// A message may carry its hint after [`HINT`].
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let msg = msg.to_string();
        let (msg, hint) = match msg.split_once(HINT) {
            Some((m, h)) => (m.to_owned(), Some(h.to_owned())),
            None => (msg, None),
        };
        DeError {
            msg,
            loc: None,
            hint,
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = exp.to_string();
        let want = match exp.as_str() {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
            other => other,
        };
        DeError {
            msg: format!("invalid value: {unexp}, expected {want}"),
            loc: None,
            hint: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            msg: format!("unknown key `{field}`"),
            loc: None,
            hint: Some(suggest(field, expected)),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            msg: format!("unknown value `{variant}`"),
            loc: None,
            hint: Some(suggest(variant, expected)),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            msg: format!("missing required key `{field}`"),
            loc: None,
            hint: Some(format!("add `{field}:` to this mapping")),
        }
    }
}

/// "did you mean `x`?" when a candidate is close, else the list of valid names.
pub fn suggest(got: &str, expected: &[&str]) -> String {
    let best = expected
        .iter()
        .map(|e| (edit_distance(got, e), *e))
        .filter(|(d, e)| *d <= (e.len().max(got.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, e)) => format!("did you mean `{e}`?"),
        None if expected.is_empty() => "remove it".to_string(),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// Edit distance over bytes, counting a swap of neighbours as one edit (`brust` → `burst`);
/// names here are short ASCII identifiers.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(!a[i - 1].eq_ignore_ascii_case(&b[j - 1]));
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1
                && j > 1
                && a[i - 1].eq_ignore_ascii_case(&b[j - 2])
                && a[i - 2].eq_ignore_ascii_case(&b[j - 1])
            {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

// ---------------------------------------------------------------------------------------------
// Environment substitution.

/// Expands `${VAR}` and `${VAR:-default}`; `$${` stays a literal `${`.
pub fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, DeError> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(DeError {
                    msg: "unterminated `${` in value".into(),
                    loc: None,
                    hint: Some("close it with `}`, or write `$${` for a literal `${`".into()),
                });
            };
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(DeError {
                    msg: format!("invalid variable name `{name}` in `${{...}}`"),
                    loc: None,
                    hint: Some("use letters, digits and `_`, as in `${API_TOKEN}`".into()),
                });
            }
            match (env(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(DeError {
                        msg: format!("environment variable `{name}` is not set"),
                        loc: None,
                        hint: Some(format!("set it, or give a default: `${{{name}:-value}}`")),
                    });
                }
                (Some(v), None) => out.push_str(&v),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The Deserializer over nodes.

pub type Env<'e> = &'e dyn Fn(&str) -> Option<String>;

#[derive(Clone, Copy)]
pub struct NodeDe<'a, 'e> {
    pub node: &'a Node,
    pub env: Env<'e>,
}

impl<'a, 'e> NodeDe<'a, 'e> {
    pub fn new(node: &'a Node, env: Env<'e>) -> Self {
        NodeDe { node, env }
    }

    fn string(&self) -> Result<Option<String>, DeError> {
        match &self.node.kind {
            NodeKind::Str(s) => substitute(s, self.env)
                .map(Some)
                .map_err(|e| e.at(self.node.loc)),
            _ => Ok(None),
        }
    }

    fn invalid_type(&self, exp: &str) -> DeError {
        DeError {
            msg: format!("expected {exp}, found {}", self.node.type_name()),
            loc: Some(self.node.loc),
            hint: None,
        }
    }
}

/// Deserializes `T` from a node, locating any error.
pub fn from_node<T: de::DeserializeOwned>(node: &Node, env: Env<'_>) -> Result<T, DeError> {
    T::deserialize(NodeDe::new(node, env)).map_err(|e| e.at(node.loc))
}

macro_rules! number {
    ($method:ident, $visit:ident, $ty:ty, $what:literal) => {
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            // A string such as "${PORT}" becomes a number once substituted.
            if let Some(s) = self.string()? {
                let n: $ty = s.trim().parse().map_err(|_| DeError {
                    msg: format!(
                        "expected {}, found `{}`",
                        $what,
                        self.node.as_str().unwrap_or_default()
                    ),
                    loc: Some(self.node.loc),
                    hint: None,
                })?;
                return v.$visit::<DeError>(n).map_err(|e| e.at(self.node.loc));
            }
            self.deserialize_any(v)
        }
    };
}

impl<'de> Deserializer<'de> for NodeDe<'_, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let loc = self.node.loc;
        let r = match &self.node.kind {
            NodeKind::Null => v.visit_unit(),
            NodeKind::Bool(b) => v.visit_bool(*b),
            NodeKind::Int(i) => v.visit_i64(*i),
            NodeKind::UInt(i) => v.visit_u64(*i),
            NodeKind::Float(f) => v.visit_f64(*f),
            NodeKind::Str(_) => v.visit_string(self.string()?.unwrap_or_default()),
            NodeKind::Seq(items) => v.visit_seq(SeqAccess {
                items: items.iter(),
                env: self.env,
            }),
            NodeKind::Map(entries) => v.visit_map(MapAccess {
                first: None,
                skip: None,
                entries: entries.iter(),
                value: None,
                env: self.env,
            }),
        };
        r.map_err(|e| e.at(loc))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if let Some(s) = self.string()? {
            return match s.trim() {
                "true" => v.visit_bool(true),
                "false" => v.visit_bool(false),
                _ => Err(self.invalid_type("`true` or `false`")),
            };
        }
        self.deserialize_any(v)
    }

    number!(deserialize_u8, visit_u8, u8, "an integer from 0 to 255");
    number!(
        deserialize_u16,
        visit_u16,
        u16,
        "an integer from 0 to 65535"
    );
    number!(deserialize_u32, visit_u32, u32, "a non-negative integer");
    number!(deserialize_u64, visit_u64, u64, "a non-negative integer");
    number!(deserialize_i8, visit_i8, i8, "an integer");
    number!(deserialize_i16, visit_i16, i16, "an integer");
    number!(deserialize_i32, visit_i32, i32, "an integer");
    number!(deserialize_i64, visit_i64, i64, "an integer");
    number!(deserialize_f32, visit_f32, f32, "a number");
    number!(deserialize_f64, visit_f64, f64, "a number");

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.kind {
            NodeKind::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
        .map_err(|e| e.at(self.node.loc))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Str(_) => self.deserialize_any(v),
            // Scalars written without quotes (`version: 2`) are accepted where text is expected.
            NodeKind::Int(_) | NodeKind::UInt(_) | NodeKind::Float(_) | NodeKind::Bool(_) => v
                .visit_string::<DeError>(self.node.key_text())
                .map_err(|e| e.at(self.node.loc)),
            _ => Err(self.invalid_type("a string")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_string(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // YAML 1.1 reads unquoted on/off/yes/no as booleans, keys included.
        if let NodeKind::Bool(b) = self.node.kind {
            return Err(DeError {
                msg: format!("this key is read as the boolean `{b}`"),
                loc: Some(self.node.loc),
                hint: Some("YAML reads unquoted `on`, `off`, `yes` and `no` as booleans; quote the key, as in `\"on\":`".into()),
            });
        }
        self.deserialize_string(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Seq(_) => self.deserialize_any(v),
            _ => Err(self.invalid_type("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Map(_) => self.deserialize_any(v),
            _ => Err(self.invalid_type("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        if let (TYPE_FIRST, NodeKind::Map(entries)) = (name, &self.node.kind) {
            let first = entries.iter().find(|(k, _)| k.as_str() == Some("type"));
            return v
                .visit_map(MapAccess {
                    first,
                    skip: first,
                    entries: entries.iter(),
                    value: None,
                    env: self.env,
                })
                .map_err(|e| e.at(self.node.loc));
        }
        self.deserialize_map(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
            .map_err(|e| e.at(self.node.loc))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let loc = self.node.loc;
        match &self.node.kind {
            NodeKind::Str(_) => {
                let s = self.string()?.unwrap_or_default();
                v.visit_enum(s.into_deserializer())
                    .map_err(|e: DeError| e.at(loc))
            }
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                v.visit_enum(EnumAccess {
                    key,
                    value,
                    env: self.env,
                })
                .map_err(|e| e.at(loc))
            }
            NodeKind::Map(entries) if entries.len() > 1 => Err(DeError {
                msg: format!(
                    "expected exactly one of {}, found {} keys",
                    variants.join(" / "),
                    entries.len()
                ),
                loc: Some(loc),
                hint: Some("keep one of them".into()),
            }),
            _ => Err(DeError {
                msg: format!("expected one of {}", variants.join(" / ")),
                loc: Some(loc),
                hint: None,
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct tuple tuple_struct ignored_any
    }
}

struct SeqAccess<'a, 'e> {
    items: std::slice::Iter<'a, Node>,
    env: Env<'e>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe::new(node, self.env))
                .map(Some)
                .map_err(|e| e.at(node.loc)),
            None => Ok(None),
        }
    }
}

/// The name of a struct whose mapping is handed over with its `type` entry first, wherever it
/// was written: how `type`-tagged enums are read without buffering (see `file::PolicyConfig`).
pub const TYPE_FIRST: &str = "$portico::type_first";

struct MapAccess<'a, 'e> {
    /// An entry handed over before the others...
    first: Option<&'a (Node, Node)>,
    /// ...and then skipped among them.
    skip: Option<&'a (Node, Node)>,
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    env: Env<'e>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let next = match self.first.take() {
            Some(first) => Some(first),
            None => self
                .entries
                .find(|e| !self.skip.is_some_and(|f| std::ptr::eq(f, *e))),
        };
        match next {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(NodeDe::new(k, self.env))
                    .map(Some)
                    .map_err(|e| e.at(k.loc))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self.value.take().expect("value requested before key");
        seed.deserialize(NodeDe::new(node, self.env))
            .map_err(|e| e.at(node.loc))
    }
}

struct EnumAccess<'a, 'e> {
    key: &'a Node,
    value: &'a Node,
    env: Env<'e>,
}

impl<'de, 'a, 'e> de::EnumAccess<'de> for EnumAccess<'a, 'e> {
    type Error = DeError;
    type Variant = NodeDe<'a, 'e>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let tag = seed
            .deserialize(NodeDe::new(self.key, self.env))
            .map_err(|e| e.at(self.key.loc))?;
        Ok((tag, NodeDe::new(self.value, self.env)))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_, '_> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.node.kind {
            NodeKind::Null => Ok(()),
            _ => Err(self.invalid_type("no value")),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self).map_err(|e| e.at(self.node.loc))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn nodes_carry_line_and_column() {
        let doc = parse_document("a: 1\nlist:\n  - x: hello\n").unwrap();
        let NodeKind::Map(entries) = &doc.kind else {
            panic!("not a map")
        };
        let (_, list) = &entries[1];
        let NodeKind::Seq(items) = &list.kind else {
            panic!("not a seq")
        };
        let NodeKind::Map(item) = &items[0].kind else {
            panic!("not a map")
        };
        assert_eq!(item[0].1.loc, Loc { line: 3, column: 8 });
    }

    #[test]
    fn syntax_error_is_located() {
        let err = parse_document("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.msg.starts_with("invalid YAML"), "{}", err.msg);
        assert!(err.loc.is_some());
    }

    #[test]
    fn unknown_field_suggests_closest() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            upstream: String,
            timeout: Option<u32>,
        }
        let doc = parse_document("upstream: a\ntimout: 3\n").unwrap();
        let err = from_node::<S>(&doc, &no_env).unwrap_err();
        assert_eq!(err.msg, "unknown key `timout`");
        assert_eq!(err.hint.as_deref(), Some("did you mean `timeout`?"));
        assert_eq!(err.loc, Some(Loc { line: 2, column: 1 }));
    }

    #[test]
    fn env_substitution() {
        let env = |k: &str| (k == "PORT").then(|| "8080".to_string());
        assert_eq!(substitute("${PORT}", &env).unwrap(), "8080");
        assert_eq!(substitute("x${MISSING:-d}y", &env).unwrap(), "xdy");
        assert_eq!(substitute("$${PORT}", &env).unwrap(), "${PORT}");
        assert_eq!(substitute("cost $5", &env).unwrap(), "cost $5");
        let err = substitute("${NOPE}", &env).unwrap_err();
        assert!(err.msg.contains("`NOPE` is not set"));
        assert!(substitute("${BAD", &env).is_err());
        // Numbers can come from the environment.
        let doc = parse_document("port: ${PORT}\n").unwrap();
        #[derive(Deserialize)]
        struct P {
            port: u16,
        }
        assert_eq!(from_node::<P>(&doc, &env).unwrap().port, 8080);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("prefix", "prefx"), 1);
        assert_eq!(edit_distance("brust", "burst"), 1);
        assert_eq!(
            suggest("prefx", &["exact", "prefix", "template"]),
            "did you mean `prefix`?"
        );
        assert_eq!(
            suggest("zzz", &["exact", "prefix"]),
            "expected one of: exact, prefix"
        );
    }
}
