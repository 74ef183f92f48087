//! The fast path: a body checked while serde_json reads it, with no tree, against a schema
//! whose every keyword decides on the value in front of it (no alternatives to try, no second
//! look at a value, no set of keys to keep).
//!
//! It only ever answers "valid". A failure, a body nested too deep, text that is not JSON, a
//! check past the step budget: all end the read at once, and the caller then reads the body
//! into a tree and checks it with [`crate::validate`], which says what is wrong. So a request
//! that breaks its contract costs one aborted read more, and one that keeps it costs one read
//! and no tree. The two must agree on every verdict; the differential and suite tests, and the
//! `contract_body` fuzz target, hold them to it.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::json::V;
use crate::schema::{Name, Node, SchemaId, Schemas, has, passes_through, ty};
use crate::validate::{self, Direction, MAX_STEPS};

/// Whether `text` is valid against `schema`, checked as it is read, when the schema
/// [`streams`](crate::schema::Plan::streams). `false` means "not known to be valid": read it into a tree.
pub(crate) fn valid(
    schemas: &Schemas,
    schema: SchemaId,
    text: &str,
    max_depth: u32,
    direction: Direction,
) -> bool {
    if !schemas.plan.streams(schema) {
        return false;
    }
    let cx = Cx {
        schemas,
        max_depth,
        direction,
        steps: std::cell::Cell::new(0),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Check {
        cx: &cx,
        schema: Some(schema),
        depth: 0,
    };
    seed.deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// What every value's check shares.
struct Cx<'a> {
    schemas: &'a Schemas,
    max_depth: u32,
    direction: Direction,
    /// The tree checker's count of schema visits, kept the same way.
    steps: std::cell::Cell<u32>,
}

/// [`valid`] for a body of bytes, which must be UTF-8 to be.
pub(crate) fn valid_bytes(
    schemas: &Schemas,
    schema: SchemaId,
    body: &[u8],
    max_depth: u32,
    direction: Direction,
) -> bool {
    schemas.plan.streams(schema)
        && std::str::from_utf8(body)
            .is_ok_and(|text| valid(schemas, schema, text, max_depth, direction))
}

/// The seed of one value: small, as serde passes it by value at every level.
#[derive(Clone, Copy)]
struct Check<'a> {
    cx: &'a Cx<'a>,
    /// `None`: any value (still read, and held to the depth limit).
    schema: Option<SchemaId>,
    depth: u32,
}

fn no<E: de::Error>() -> E {
    E::custom("")
}

impl<'a> Check<'a> {
    /// The node that decides, after the pure references on the way (each a step, as in the
    /// tree checker). `Err` when the step budget runs out.
    fn node<E: de::Error>(&mut self) -> Result<Option<&'a Node>, E> {
        let Some(mut id) = self.schema else {
            return Ok(None);
        };
        loop {
            let steps = self.cx.steps.get() + 1;
            self.cx.steps.set(steps);
            if steps > MAX_STEPS {
                return Err(no());
            }
            let n = self.cx.schemas.node(id);
            match n.reference {
                Some(r) if passes_through(n) => id = r,
                _ => return Ok(Some(n)),
            }
        }
    }

    /// A member's seed: one level deeper.
    fn member(&self, schema: Option<SchemaId>) -> Check<'a> {
        Check {
            cx: self.cx,
            schema,
            depth: self.depth + 1,
        }
    }

    /// The checks every scalar gets: `false`, `nullable`, `type`, `enum` and `const`.
    /// `Ok(None)`: valid already (a `null` a nullable schema takes).
    fn scalar<E: de::Error>(&mut self, v: V, text: Option<&str>) -> Result<Option<&'a Node>, E> {
        let Some(n) = self.node()? else {
            return Ok(None);
        };
        if n.never {
            return Err(no());
        }
        if n.nullable && matches!(v, V::Null) {
            return Ok(None);
        }
        if !validate::type_ok(n.types, v) {
            return Err(no());
        }
        if n.has & has::ENUM_CONST != 0 {
            let equal = |e: &serde_json::Value| match (v, e) {
                (V::Null, serde_json::Value::Null) => true,
                (V::Bool(a), serde_json::Value::Bool(b)) => a == *b,
                (V::U(_) | V::I(_) | V::F(_), serde_json::Value::Number(b)) => {
                    validate::num_eq(v, b)
                }
                (V::Str(_), serde_json::Value::String(b)) => text == Some(b.as_str()),
                _ => false,
            };
            if n.enumeration.as_ref().is_some_and(|l| !l.iter().any(equal))
                || n.constant.as_ref().is_some_and(|c| !equal(c))
            {
                return Err(no());
            }
        }
        Ok(Some(n))
    }

    fn string<E: de::Error>(mut self, text: &str) -> Result<(), E> {
        let span = crate::json::Span {
            from: 0,
            len: 0,
            own: false,
        };
        if let Some(n) = self.scalar(V::Str(span), Some(text))?
            && n.has & has::STRING != 0
            && !validate::string_ok(n, text.as_bytes())
        {
            return Err(no());
        }
        Ok(())
    }

    fn number<E: de::Error>(mut self, v: V) -> Result<(), E> {
        if let Some(n) = self.scalar(v, None)?
            && n.has & has::NUMBER != 0
            && !validate::number_ok(n, v)
        {
            return Err(no());
        }
        Ok(())
    }

    /// The `type`, `false` and `nullable` checks of a container.
    fn container<E: de::Error>(&mut self, t: u8) -> Result<Option<&'a Node>, E> {
        let Some(n) = self.node()? else {
            return Ok(None);
        };
        if n.never || (n.types != 0 && n.types & t == 0) {
            return Err(no());
        }
        // `enum` and `const` of a container take only scalars ([`local`]): a container is
        // none of them.
        if n.has & has::ENUM_CONST != 0 {
            return Err(no());
        }
        Ok(Some(n))
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > self.cx.max_depth {
            return Err(no());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.scalar(V::Null, None).map(|_| ())
    }
    fn visit_bool<E: de::Error>(mut self, b: bool) -> Result<(), E> {
        self.scalar(V::Bool(b), None).map(|_| ())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.number(V::U(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.number(V::I(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        self.number(V::F(n))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.string(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let n = self
            .container(ty::ARRAY)?
            .filter(|n| n.has & has::ARRAY != 0);
        let mut count = 0u64;
        loop {
            let schema = n.and_then(|n| match n.prefix_items.get(count as usize) {
                Some(s) => Some(*s),
                None => n.items,
            });
            if seq.next_element_seed(self.member(schema))?.is_none() {
                break;
            }
            count += 1;
        }
        if let Some(n) = n
            && (n.min_items.is_some_and(|m| count < m) || n.max_items.is_some_and(|m| count > m))
        {
            return Err(no());
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let n = self
            .container(ty::OBJECT)?
            .filter(|n| n.has & has::OBJECT != 0);
        let mut count = 0u64;
        let mut seen = 0u64;
        loop {
            let key = match n {
                Some(n) => map.next_key_seed(Key(n))?,
                // Any key: only read.
                None => map.next_key::<de::IgnoredAny>()?.map(|_| Known::Other),
            };
            let schema = match (key, n) {
                (None, _) => break,
                (Some(_), None) => None,
                (Some(Known::Property(i)), Some(n)) => {
                    if i < 64 {
                        seen |= 1 << i;
                    }
                    Some(n.properties[i].1)
                }
                (Some(Known::Other), Some(n)) => match n.additional {
                    Some(extra) if self.cx.schemas.node(extra).never => return Err(no()),
                    extra => extra,
                },
            };
            map.next_value_seed(self.member(schema))?;
            count += 1;
        }
        if let Some(n) = n {
            if n.min_properties.is_some_and(|m| count < m)
                || n.max_properties.is_some_and(|m| count > m)
            {
                return Err(no());
            }
            let mut missing = n.required_bits & !seen;
            while missing != 0 {
                let i = missing.trailing_zeros() as usize;
                missing &= missing - 1;
                // `readOnly` properties are not required of requests, `writeOnly` ones not of
                // answers.
                let write = self.cx.direction == Direction::Response;
                if !self.cx.schemas.says_only(n.properties[i].1, write, 0) {
                    return Err(no());
                }
            }
        }
        Ok(())
    }
}

/// What an object's key names.
enum Known {
    /// The property at this index of `properties`.
    Property(usize),
    Other,
}

struct Key<'a>(&'a Node);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Known;
    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Known, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Known;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    #[inline]
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Known, E> {
        let v = v.as_bytes();
        let names = &self.0.names;
        let at = if v.len() <= Name::WHOLE && names.len() <= 16 {
            // Every name compared, with no early exit: a handful of integer comparisons cost
            // less than the mispredicted branches of a search that stops at the match.
            let k = Name::of(v);
            let mut found = 0;
            for (i, name) in names.iter().enumerate() {
                found |= usize::from(name.like(k)) * (i + 1);
            }
            found.checked_sub(1)
        } else {
            self.0.properties.iter().position(|(k, _)| **k == *v)
        };
        Ok(match at {
            Some(i) => Known::Property(i),
            None => Known::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalars at the edges of what JSON allows (escapes, lone surrogates, raw control
    /// characters, numbers out of a double's range) get the tree's verdict.
    #[test]
    fn edge_scalars_get_the_trees_verdict() {
        let doc = serde_json::json!({ "components": { "schemas": {
            "S": { "type": "string" },
            "Short": { "type": "string", "maxLength": 2 },
            "A": { "type": "string", "const": "A" },
            "N": { "type": "number" },
            "I": { "type": "integer" },
            "Obj": { "type": "object", "properties": {
                "s": { "type": "string" }, "n": { "type": "number" }, "b": { "type": "boolean" },
                "z": { "type": ["null", "integer"], "maximum": 3 } } }
        } } });
        let mut compiler = crate::Compiler::new(&doc, crate::Dialect::Oas31);
        let ids: Vec<_> = ["S", "Short", "A", "N", "I", "Obj"]
            .iter()
            .map(|n| compiler.schema(&format!("/components/schemas/{n}")))
            .collect();
        let (schemas, errors) = compiler.finish();
        assert!(errors.is_empty(), "{errors:?}");
        let cases: &[(usize, &str, bool)] = &[
            (0, r#""plain""#, true),
            (0, r#""tab\tand \u00e9""#, true),
            (0, r#""\ud800""#, false),
            (0, r#""\ud83d\ude00""#, true),
            (0, "\"raw\ttab\"", false),
            (0, "7", false),
            (0, "null", false),
            (0, "{}", false),
            (1, r#""\u00e9\u00e9""#, true),
            (1, r#""\u00e9\u00e9\u00e9""#, false),
            (2, r#""\u0041""#, true),
            (2, r#""B""#, false),
            (3, "12.5", true),
            (3, "-0", true),
            (3, "1e400", false),
            (3, "1e308", true),
            (3, r#""1""#, false),
            (3, "[1]", false),
            (4, "1.0", true),
            (4, "1.5", false),
            (4, "-9223372036854775809", true),
            (5, r#"{"s":"x","n":1,"b":true,"z":null}"#, true),
            (5, r#"{"z":4}"#, false),
            (5, r#"{"z":3.0}"#, true),
            (5, r#"{"b":1}"#, false),
            (5, r#"{"n":1E999}"#, false),
        ];
        for &(schema, body, expected) in cases {
            let id = ids[schema];
            let tree = crate::validate_json(
                &schemas,
                id,
                body.as_bytes(),
                &mut crate::Scratch::default(),
                64,
                20,
                Direction::Request,
            )
            .is_ok_and(|v| v.is_empty());
            let streamed =
                crate::validate_streaming(&schemas, id, body.as_bytes(), 64, Direction::Request);
            assert_eq!(tree, expected, "{body}: the tree checker");
            assert_eq!(streamed, Some(expected), "{body}: the streaming checker");
        }
    }
}
