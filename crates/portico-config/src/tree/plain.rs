//! The common case of reading a config file: the node tree built straight from the YAML
//! parser's events.
//!
//! serde-saphyr's deserializer is the reference for what a YAML document means (scalar types,
//! anchors and aliases, merge keys, tags, duplicate keys, limits) and for its error messages,
//! but driving it through `Spanned` for every node costs about twice the parse itself: most of
//! a 10,000-route config's load time. Config files almost never use YAML's rarer features, so
//! this reader handles the plain subset — untagged scalars, sequences and mappings, one
//! document — and gives up (`None`) on anything else: a tag, an anchor or alias, a merge key, a
//! directive, a duplicate key, a syntax error, a scalar whose type it cannot tell cheaply
//! without asking serde-saphyr, or a document near the limits. The caller then reads the whole
//! document the reference way, so giving up is always safe; the only thing this module must get
//! right is agreeing with serde-saphyr wherever it does not give up, which the tests below check
//! node by node and location by location against it.

use std::borrow::Cow;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle, Span, StrInput};

use super::node::{Loc, Node, NodeKind};
use super::reference::RawNode;

/// Containers nested deeper than this are left to the reference reader (whose budget allows
/// 64) rather than counted exactly the way it counts them.
const MAX_DEPTH: usize = 60;
/// Likewise for the node budget (2,000,000 there).
const MAX_NODES: usize = 1_500_000;

/// Reads `text` as one plain YAML document, or `None` if it needs the reference reader.
pub(crate) fn read(text: &str) -> Option<Node> {
    let mut options = Options::default();
    options.set_emit_comments(false);
    let mut r = Reader {
        events: Parser::new_from_str_with_options(text, options),
        nodes: 0,
    };
    if !matches!(r.next()?.0, Event::StreamStart) {
        return None;
    }
    // A `%YAML` directive may change what scalars mean: leave it to the reference reader.
    if !matches!(r.next()?.0, Event::DocumentStart(_, None)) {
        return None;
    }
    let (ev, span) = r.next()?;
    let root = r.node(ev, span, 0)?;
    if !matches!(r.next()?.0, Event::DocumentEnd) || !matches!(r.next()?.0, Event::StreamEnd) {
        return None;
    }
    Some(root)
}

struct Reader<'a> {
    events: Parser<'a, StrInput<'a>>,
    nodes: usize,
}

impl<'a> Reader<'a> {
    fn next(&mut self) -> Option<(Event<'a>, Span)> {
        self.events.next()?.ok()
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Option<Node> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return None;
        }
        let loc = Loc {
            line: span.start.line() as u32,
            column: span.start.col() as u32 + 1,
        };
        let kind = match ev {
            // Anchor id 0 means no anchor; no tag.
            Event::Scalar(value, style, 0, None) => scalar(value, style)?,
            Event::SequenceStart(_, 0, None) if depth < MAX_DEPTH => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                NodeKind::Seq(items)
            }
            Event::MappingStart(_, 0, None) if depth < MAX_DEPTH => {
                let mut entries = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    if key.as_str() == Some("<<") {
                        return None; // a merge key, or a key that looks like one
                    }
                    let (ev, span) = self.next()?;
                    let value = self.node(ev, span, depth + 1)?;
                    entries.push((key, value));
                }
                if has_duplicate_keys(&entries)? {
                    return None;
                }
                NodeKind::Map(entries)
            }
            _ => return None,
        };
        Some(Node { kind, loc })
    }
}

/// The type of an untagged scalar, as serde-saphyr's untyped deserialization decides it; `None`
/// when that takes serde-saphyr's own number parsing to tell.
fn scalar(value: Cow<'_, str>, style: ScalarStyle) -> Option<NodeKind> {
    if style != ScalarStyle::Plain {
        // Quoted and block scalars are always strings, even `"null"` or `'8080'`.
        return Some(NodeKind::Str(value.into_owned()));
    }
    let s = value.as_ref();
    let Some(&first) = s.as_bytes().first() else {
        return Some(NodeKind::Null);
    };
    if first.is_ascii_alphabetic() {
        // No integer or YAML float starts with a letter (`inf` and `nan` are strings in YAML;
        // `.inf` and `.nan` start with a dot), so only the null and YAML 1.1 boolean words
        // are not strings.
        return Some(match s {
            "null" | "Null" | "NULL" => NodeKind::Null,
            _ => match yaml11_bool(s) {
                Some(b) => NodeKind::Bool(b),
                None => NodeKind::Str(value.into_owned()),
            },
        });
    }
    if first.is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (first != b'0' || s.len() == 1)
    {
        // A plain decimal: a port, a count, a size. Past u64 is serde-saphyr's to decide.
        return s.parse().ok().map(NodeKind::UInt);
    }
    if !s.bytes().all(could_be_numeric) {
        // `30s`, `10.0.0.0/8`, `/api`, `127.0.0.1:80`: a byte no number or null can contain.
        return Some(NodeKind::Str(value.into_owned()));
    }
    // `1.5`, `-3`, `0x1F`, `1e3`, `~`, `.inf`, `1_000`, `1.2.3`: ask serde-saphyr, on this
    // scalar alone, as the one item of a block sequence (where a plain scalar reads the same
    // as in any block context).
    let item = serde_saphyr::from_str::<RawNode>(&format!("- {s}")).ok()?;
    match item.0 {
        NodeKind::Seq(mut items) if items.len() == 1 => match items.pop()?.kind {
            NodeKind::Seq(_) | NodeKind::Map(_) => None,
            kind => Some(kind),
        },
        _ => None,
    }
}

/// Bytes that can appear in an integer (any radix, signs, underscores), a float (digits, dot,
/// exponent, `.inf`, `.nan` in their spellings) or the null `~`. Anything else makes a plain
/// scalar a string.
fn could_be_numeric(b: u8) -> bool {
    b.is_ascii_hexdigit()
        || matches!(
            b,
            b'+' | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'x'
                | b'X'
                | b'o'
                | b'O'
                | b'i'
                | b'I'
                | b'n'
                | b'N'
        )
}

/// YAML 1.1 booleans, which serde-saphyr accepts by default (`yes`, `Off`, `Y`, ...).
fn yaml11_bool(s: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["true", "yes", "y", "on"];
    const FALSE: [&str; 4] = ["false", "no", "n", "off"];
    if TRUE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if FALSE.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// Whether two keys of a mapping could be the same key; `None` for a key type this reader does
/// not compare. It errs towards "yes" (a string `"11"` and the integer `0xB` count as the same),
/// which only sends a document to the reference reader for its verdict.
fn has_duplicate_keys(entries: &[(Node, Node)]) -> Option<bool> {
    fn text(k: &Node) -> Option<Cow<'_, str>> {
        match &k.kind {
            NodeKind::Str(s) => Some(Cow::Borrowed(s)),
            NodeKind::UInt(n) => Some(Cow::Owned(n.to_string())),
            NodeKind::Int(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }
    if entries.len() <= 16 {
        for (i, (a, _)) in entries.iter().enumerate() {
            let a = text(a)?;
            for (b, _) in &entries[..i] {
                if text(b)? == a {
                    return Some(true);
                }
            }
        }
        return Some(false);
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (k, _) in entries {
        if !seen.insert(text(k)?) {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::reference::parse_document_reference;

    /// Same kinds, same values, same locations, all the way down.
    fn same(a: &Node, b: &Node, path: &str) {
        assert_eq!(a.loc, b.loc, "location of {path}");
        match (&a.kind, &b.kind) {
            (NodeKind::Null, NodeKind::Null) => {}
            (NodeKind::Bool(x), NodeKind::Bool(y)) => assert_eq!(x, y, "{path}"),
            (NodeKind::Int(x), NodeKind::Int(y)) => assert_eq!(x, y, "{path}"),
            (NodeKind::UInt(x), NodeKind::UInt(y)) => assert_eq!(x, y, "{path}"),
            (NodeKind::Float(x), NodeKind::Float(y)) => {
                assert!(x == y || x.is_nan() && y.is_nan(), "{path}: {x} vs {y}")
            }
            (NodeKind::Str(x), NodeKind::Str(y)) => assert_eq!(x, y, "{path}"),
            (NodeKind::Seq(x), NodeKind::Seq(y)) => {
                assert_eq!(x.len(), y.len(), "length of {path}");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    same(x, y, &format!("{path}[{i}]"));
                }
            }
            (NodeKind::Map(x), NodeKind::Map(y)) => {
                assert_eq!(x.len(), y.len(), "length of {path}");
                for ((kx, vx), (ky, vy)) in x.iter().zip(y) {
                    let name = format!("{path}.{}", kx.key_text());
                    same(kx, ky, &format!("key {name}"));
                    same(vx, vy, &name);
                }
            }
            (x, y) => panic!("{path}: {x:?} vs {y:?}"),
        }
    }

    /// Checks the fast reader against the reference; returns whether it read the document.
    fn agrees(text: &str) -> bool {
        let Some(fast) = read(text) else {
            return false;
        };
        match parse_document_reference(text) {
            Ok(reference) => same(&fast, &reference, "$"),
            Err(e) => panic!("the fast reader accepted what serde-saphyr rejects ({e}):\n{text}"),
        }
        true
    }

    #[test]
    fn scalars_get_the_types_serde_saphyr_gives_them() {
        let words = [
            "",
            "~",
            "null",
            "Null",
            "NULL",
            "nULL",
            "true",
            "True",
            "TRUE",
            "tRuE",
            "false",
            "yes",
            "Yes",
            "YES",
            "y",
            "Y",
            "no",
            "No",
            "n",
            "N",
            "on",
            "On",
            "ON",
            "off",
            "Off",
            "OFF",
            "yess",
            "nope",
            "0",
            "00",
            "007",
            "8080",
            "-1",
            "+1",
            "-0",
            "+0",
            "1_000",
            "0x1F",
            "0X1F",
            "0o17",
            "0O17",
            "0b101",
            "0B101",
            "1.5",
            "-1.5",
            ".5",
            "5.",
            "1e3",
            "1E3",
            "1e999",
            "-1e999",
            "1.5e-3",
            ".inf",
            ".Inf",
            ".INF",
            "-.inf",
            "+.inf",
            ".nan",
            ".NaN",
            "-.nan",
            "+.nan",
            "inf",
            "-inf",
            "nan",
            "NaN",
            "infinity",
            "1.2.3",
            "1-2",
            "--",
            "---",
            "...",
            "+",
            "-",
            ".",
            "_",
            "~~",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999999",
            "30s",
            "1.5s",
            "10ms",
            "100KiB",
            "10.0.0.0/8",
            "127.0.0.1:8080",
            "/api/v1",
            "a b",
            "é",
            "0xZZ",
            "0b2",
            "1__0",
            "_1",
            "1_",
            "0x_1",
            "deadbeef",
            "0xdeadbeef",
            "1e",
            "e3",
            "x",
            "o",
            "i",
            "0o",
            "0x",
        ];
        let mut read_fast = 0;
        for w in words {
            for text in [
                format!("k: {w}\n"),
                format!("- {w}\n"),
                format!("{{ k: {w} }}\n"),
            ] {
                read_fast += agrees(&text) as usize;
            }
        }
        // The common words must take the fast path, or this module is dead weight.
        assert!(
            read_fast > 150,
            "only {read_fast} documents took the fast path"
        );
        for w in ["true", "8080", "30s", "null", "/api", "1.5"] {
            assert!(
                read(&format!("k: {w}\n")).is_some(),
                "{w} should be read fast"
            );
        }
    }

    #[test]
    fn structures_and_locations_match_serde_saphyr() {
        let docs = [
            "a: 1\nb:\n  - x\n  - { p: 2, z: [3, 4] }\nc: \"q\"\nd: 'r'\n",
            "routes:\n  - name: a\n    match: { path: { prefix: / } }\n    upstream: u\n",
            "# comment\nk: v # trailing\n\nl:\n  m: |\n    block\n    text\n  o: >\n    folded\n    text\n",
            "k: a\n  continued plain\n",
            "- - - deep\n    - er\n- {}\n- []\n- ''\n- \"\"\n",
            "? complex\n: value\n",
            "---\nk: v\n...\n",
            "k:\n",
            "k: [a, b,\n  c]\n",
            "\u{feff}k: v\n",
            "k: v\r\nl: w\r\n",
            "a:\n  b:\n    c:\n      d: [1, 2, {e: f}]\n",
        ];
        for d in docs {
            assert!(agrees(d), "should take the fast path:\n{d}");
        }
    }

    #[test]
    fn rare_features_go_to_the_reference_reader() {
        for d in [
            "a: &x 1\nb: *x\n",
            "base: &b { k: v }\nother:\n  <<: *b\n  l: w\n",
            "k: !!str 1\n",
            "%YAML 1.1\n---\nk: v\n",
            "a: 1\na: 2\n",
            "11: a\n0xB: b\n",
            "k: [unclosed\n",
            "a: 1\n---\nb: 2\n",
            "true: x\n",
            "# only a comment\n",
        ] {
            assert!(read(d).is_none(), "should be left to serde-saphyr:\n{d}");
        }
        let deep = format!("{}x", "- ".repeat(70));
        assert!(read(&deep).is_none());
    }

    /// Every example and every YAML snippet in the docs reads the same both ways.
    #[test]
    fn shipped_configs_read_the_same_both_ways() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut texts = Vec::new();
        for dir in ["examples", "docs"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("yaml") => texts.push(text),
                    Some("md") => {
                        for block in text.split("```yaml\n").skip(1) {
                            texts.push(block.split("```").next().unwrap().to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        assert!(texts.len() > 20, "found only {} configs", texts.len());
        let fast = texts.iter().filter(|t| agrees(t)).count();
        assert!(
            fast * 10 >= texts.len() * 8,
            "{fast} of {} took the fast path",
            texts.len()
        );
    }
}
