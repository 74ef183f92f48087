//! A JSON text read once into a flat tree that borrows its strings from the text.
//!
//! serde_json does the reading (tokens, escapes, UTF-8, numbers); this module only records
//! what it visits. Values live in one `Vec` and containers hold ranges of a second and third,
//! so reading a body allocates nothing once the [`Scratch`] has grown to the bodies it sees:
//! building a `serde_json::Value` instead costs ~6× the read itself (one allocation per string,
//! array and object), more than the whole validation budget.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A string: a byte range of the body, or of [`Scratch::text`] when it had escapes (or came
/// from a request parameter).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub from: u32,
    pub len: u32,
    pub own: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum V {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Str(Span),
    /// Element ids in `items[from..from + len]`.
    Arr(u32, u32),
    /// Entries in `entries[from..from + len]`.
    Obj(u32, u32),
}

/// Buffers reused from one document to the next.
#[derive(Default, Debug)]
pub struct Scratch {
    pub(crate) nodes: Vec<V>,
    pub(crate) items: Vec<u32>,
    pub(crate) entries: Vec<(Span, u32)>,
    pub(crate) text: Vec<u8>,
    stack_items: Vec<u32>,
    stack_entries: Vec<(Span, u32)>,
    too_deep: bool,
}

/// Buffers grown past this many entries by one large document are let go afterwards.
const KEEP: usize = 1 << 14;

impl Scratch {
    pub(crate) fn clear(&mut self) {
        for v in [&mut self.items, &mut self.stack_items] {
            v.clear();
            if v.capacity() > KEEP {
                v.shrink_to(KEEP);
            }
        }
        for v in [&mut self.entries, &mut self.stack_entries] {
            v.clear();
            if v.capacity() > KEEP {
                v.shrink_to(KEEP);
            }
        }
        self.nodes.clear();
        if self.nodes.capacity() > KEEP {
            self.nodes.shrink_to(KEEP);
        }
        self.text.clear();
        if self.text.capacity() > KEEP * 8 {
            self.text.shrink_to(KEEP * 8);
        }
        self.too_deep = false;
    }

    pub(crate) fn push(&mut self, v: V) -> u32 {
        self.nodes.push(v);
        (self.nodes.len() - 1) as u32
    }

    /// Copies `s` into the text buffer.
    pub(crate) fn own(&mut self, s: &[u8]) -> Span {
        let from = self.text.len() as u32;
        self.text.extend_from_slice(s);
        Span {
            from,
            len: s.len() as u32,
            own: true,
        }
    }

    /// Appends a finished array of the given element ids.
    pub(crate) fn array(&mut self, ids: &[u32]) -> u32 {
        let from = self.items.len() as u32;
        self.items.extend_from_slice(ids);
        self.push(V::Arr(from, ids.len() as u32))
    }

    /// Appends a finished object of the given entries.
    pub(crate) fn object(&mut self, es: &[(Span, u32)]) -> u32 {
        let from = self.entries.len() as u32;
        self.entries.extend_from_slice(es);
        self.push(V::Obj(from, es.len() as u32))
    }
}

/// Why a body is not a JSON document the validator reads.
#[derive(Debug)]
pub enum ReadError {
    /// Not JSON: serde_json's message, with its line and column.
    Syntax(String),
    /// Nested deeper than the limit.
    TooDeep(u32),
}

impl ReadError {
    /// The keyword and message of a failure for a body that could not be read.
    pub(crate) fn failure(self) -> (&'static str, String) {
        match self {
            ReadError::Syntax(m) => ("json", format!("the body is not JSON: {m}")),
            ReadError::TooDeep(d) => (
                "maxDepth",
                format!("the body nests arrays and objects deeper than {d} levels"),
            ),
        }
    }
}

/// A read document: the body, and the scratch holding its tree.
#[derive(Clone, Copy)]
pub(crate) struct Tree<'a> {
    pub body: &'a [u8],
    pub s: &'a Scratch,
}

impl<'a> Tree<'a> {
    pub fn bytes(&self, sp: Span) -> &'a [u8] {
        let src = if sp.own { &self.s.text[..] } else { self.body };
        &src[sp.from as usize..(sp.from + sp.len) as usize]
    }

    pub fn node(&self, id: u32) -> V {
        self.s.nodes[id as usize]
    }

    pub fn items(&self, from: u32, len: u32) -> &'a [u32] {
        &self.s.items[from as usize..(from + len) as usize]
    }

    pub fn entries(&self, from: u32, len: u32) -> &'a [(Span, u32)] {
        &self.s.entries[from as usize..(from + len) as usize]
    }

    /// The root: containers are pushed after their members, so the root comes last.
    pub fn root(&self) -> u32 {
        (self.s.nodes.len() - 1) as u32
    }
}

/// Reads `body` into `scratch` (cleared first).
pub(crate) fn read(body: &[u8], scratch: &mut Scratch, max_depth: u32) -> Result<(), ReadError> {
    scratch.clear();
    // One UTF-8 check of the whole body, after which serde_json reads it as text and takes
    // its strings without checking each again (per string, the check cost as much as the
    // tree; over the whole body it runs eight bytes at a time).
    let text = std::str::from_utf8(body).map_err(|e| {
        ReadError::Syntax(format!(
            "the body is not UTF-8 (an invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let base = body.as_ptr() as usize;
    let r = Builder {
        s: scratch,
        base,
        end: base + body.len(),
        depth: 0,
        max_depth,
    }
    .deserialize(&mut de)
    .and_then(|_| de.end());
    match r {
        Ok(()) => Ok(()),
        Err(_) if scratch.too_deep => Err(ReadError::TooDeep(max_depth)),
        Err(e) => Err(ReadError::Syntax(e.to_string())),
    }
}

struct Builder<'s> {
    s: &'s mut Scratch,
    base: usize,
    end: usize,
    depth: u32,
    max_depth: u32,
}

impl Builder<'_> {
    fn span(&mut self, v: &str, borrowed: bool) -> Span {
        let p = v.as_ptr() as usize;
        if borrowed && p >= self.base && p + v.len() <= self.end {
            Span {
                from: (p - self.base) as u32,
                len: v.len() as u32,
                own: false,
            }
        } else {
            self.s.own(v.as_bytes())
        }
    }

    /// The seed of a member: the depth is checked when a member is there to read, so an
    /// empty container at the limit is accepted.
    fn deeper(&mut self) -> Builder<'_> {
        Builder {
            s: self.s,
            base: self.base,
            end: self.end,
            depth: self.depth + 1,
            max_depth: self.max_depth,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Builder<'_> {
    type Value = u32;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        if self.depth > self.max_depth {
            self.s.too_deep = true;
            return Err(de::Error::custom("too deep"));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Builder<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<u32, E> {
        Ok(self.s.push(V::Null))
    }
    fn visit_bool<E>(self, b: bool) -> Result<u32, E> {
        Ok(self.s.push(V::Bool(b)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<u32, E> {
        Ok(self.s.push(V::U(n)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<u32, E> {
        Ok(self.s.push(V::I(n)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<u32, E> {
        Ok(self.s.push(V::F(n)))
    }
    fn visit_borrowed_str<E>(mut self, v: &'de str) -> Result<u32, E> {
        let sp = self.span(v, true);
        Ok(self.s.push(V::Str(sp)))
    }
    fn visit_str<E>(mut self, v: &str) -> Result<u32, E> {
        let sp = self.span(v, false);
        Ok(self.s.push(V::Str(sp)))
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<u32, A::Error> {
        let mark = self.s.stack_items.len();
        loop {
            let inner = self.deeper();
            match seq.next_element_seed(inner)? {
                Some(id) => self.s.stack_items.push(id),
                None => break,
            }
        }
        let from = self.s.items.len() as u32;
        let len = (self.s.stack_items.len() - mark) as u32;
        let s = &mut *self.s;
        s.items.extend_from_slice(&s.stack_items[mark..]);
        s.stack_items.truncate(mark);
        Ok(s.push(V::Arr(from, len)))
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<u32, A::Error> {
        let mark = self.s.stack_entries.len();
        loop {
            let key = match map.next_key_seed(Key {
                b: Builder {
                    s: self.s,
                    base: self.base,
                    end: self.end,
                    depth: self.depth,
                    max_depth: self.max_depth,
                },
            })? {
                Some(k) => k,
                None => break,
            };
            let inner = self.deeper();
            let id = map.next_value_seed(inner)?;
            self.s.stack_entries.push((key, id));
        }
        let from = self.s.entries.len() as u32;
        let len = (self.s.stack_entries.len() - mark) as u32;
        let s = &mut *self.s;
        s.entries.extend_from_slice(&s.stack_entries[mark..]);
        s.stack_entries.truncate(mark);
        Ok(s.push(V::Obj(from, len)))
    }
}

/// An object's key, as a span.
struct Key<'s> {
    b: Builder<'s>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Span;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Span, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Span;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(mut self, v: &'de str) -> Result<Span, E> {
        Ok(self.b.span(v, true))
    }
    fn visit_str<E>(mut self, v: &str) -> Result<Span, E> {
        Ok(self.b.span(v, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_from_the_body_unless_they_had_escapes() {
        let body = br#"{"a": "plain", "b\n": ["x\"y", 1, -2, 2.5, null, true, {}]}"#;
        let mut s = Scratch::default();
        read(body, &mut s, 64).unwrap();
        let t = Tree { body, s: &s };
        let V::Obj(f, n) = t.node(t.root()) else {
            panic!("not an object")
        };
        let es = t.entries(f, n);
        assert_eq!(es.len(), 2);
        assert_eq!(t.bytes(es[0].0), b"a");
        assert!(!es[0].0.own);
        assert_eq!(t.bytes(es[1].0), b"b\n");
        assert!(es[1].0.own);
        let V::Str(sp) = t.node(es[0].1) else {
            panic!()
        };
        assert_eq!(t.bytes(sp), b"plain");
        let V::Arr(f, n) = t.node(es[1].1) else {
            panic!()
        };
        let ids = t.items(f, n);
        assert_eq!(ids.len(), 7);
        let V::Str(sp) = t.node(ids[0]) else { panic!() };
        assert_eq!(t.bytes(sp), b"x\"y");
        assert!(matches!(t.node(ids[1]), V::U(1)));
        assert!(matches!(t.node(ids[2]), V::I(-2)));
        assert!(matches!(t.node(ids[3]), V::F(f) if f == 2.5));
        assert!(matches!(t.node(ids[6]), V::Obj(_, 0)));
    }

    #[test]
    fn depth_over_the_limit_and_trailing_text_are_refused() {
        let mut s = Scratch::default();
        assert!(read(b"[[[1]]]", &mut s, 3).is_ok());
        assert!(matches!(
            read(b"[[[[1]]]]", &mut s, 3),
            Err(ReadError::TooDeep(3))
        ));
        assert!(read(b"[[[[]]]]", &mut s, 3).is_ok());
        assert!(read(br#"{"a":{"b":{"c":{}}}}"#, &mut s, 3).is_ok());
        assert!(matches!(
            read(br#"{"a":{"b":{"c":{"d":1}}}}"#, &mut s, 3),
            Err(ReadError::TooDeep(3))
        ));
        assert!(matches!(
            read(b"{} x", &mut s, 3),
            Err(ReadError::Syntax(_))
        ));
        assert!(matches!(read(b"", &mut s, 3), Err(ReadError::Syntax(_))));
    }
}
