//! A YAML document as a tree of located nodes, and a serde `Deserializer` over it.
//!
//! serde stops at the first error. To report every mistake in a file at once we first read the
//! whole document into [`Node`]s (serde-saphyr gives each node its line and column), then
//! deserialize each list item or map entry on its own and keep going after a failure. Every error
//! carries the location of the innermost node that caused it.
//!
//! The parts, each depending only on those above it:
//!
//! - `node.rs` — [`Loc`], [`Node`], [`NodeKind`]: the tree itself.
//! - `error.rs` — [`DeError`], [`HINT`], [`suggest`]: what reading the tree can end with.
//! - `reference.rs` — the tree read through serde-saphyr's deserializer (every YAML feature).
//! - `plain.rs` — the tree read straight from the parser's events, for the plain subset of
//!   YAML that config files use; it gives up on anything else, and the reference reader takes
//!   over.
//! - `de.rs` — [`from_node`]: a serde `Deserializer` over the tree, with `${VAR}` expansion.
//! - this file — [`parse_document`], which picks the reader, and the re-exports.

mod de;
mod error;
mod node;
mod plain;
mod reference;

pub use de::{Env, NodeDe, TYPE_FIRST, from_node, substitute};
pub use error::{DeError, HINT, edit_distance, suggest};
pub use node::{Loc, Node, NodeKind};
use reference::parse_document_reference;

/// Parses YAML text into a node tree. Syntax errors come back with their location.
pub fn parse_document(text: &str) -> Result<Node, DeError> {
    if text.trim().is_empty() {
        return Ok(Node {
            kind: NodeKind::Map(Vec::new()),
            loc: Loc { line: 1, column: 1 },
        });
    }
    if let Some(root) = plain::read(text) {
        return Ok(root);
    }
    parse_document_reference(text)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

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
}
