//! A serde `Deserializer` over the node tree, with `${VAR}` expansion of scalars: each list item
//! or map entry can be read on its own, and an error carries the innermost node's location.

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::error::DeError;
use super::node::{Node, NodeKind};

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
