//! Reading a document the reference way, through serde-saphyr's deserializer: every YAML
//! feature (tags, anchors and aliases, merge keys, …) and serde-saphyr's own error messages.
//! `plain.rs` is the fast path; this is what it falls back to.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::error::DeError;
use super::node::{Loc, Node, NodeKind};

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
