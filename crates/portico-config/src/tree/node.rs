//! The node tree: every value of the document with the line and column it was written at.
//! The readers (`plain.rs`, `reference.rs`) build it; `de.rs` reads it into the file types.

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
        self.json(true)
    }

    /// The node as JSON, every value as written (no `${VAR}` substitution, nothing redacted):
    /// for data taken from a document, such as an OpenAPI example whose keys may well be
    /// called `token`.
    pub fn to_json(&self) -> serde_json::Value {
        self.json(false)
    }

    fn json(&self, redact: bool) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::UInt(i) => Value::from(*i),
            NodeKind::Float(f) => Value::from(*f),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(|n| n.json(redact)).collect()),
            NodeKind::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.key_text();
                    let value =
                        if redact && is_secret_key(&key) && !matches!(v.kind, NodeKind::Null) {
                            Value::String("<redacted>".into())
                        } else {
                            v.json(redact)
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

#[cfg(test)]
mod tests {
    #[test]
    fn to_json_keeps_what_to_redacted_json_hides() {
        let doc = crate::tree::parse_document("token: abc\nlist: [1, 2.5, true, null]\n").unwrap();
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"token": "abc", "list": [1, 2.5, true, null]})
        );
        assert_eq!(
            doc.to_redacted_json(),
            serde_json::json!({"token": "<redacted>", "list": [1, 2.5, true, null]})
        );
    }
}
