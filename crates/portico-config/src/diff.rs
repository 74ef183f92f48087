//! What differs between two configs, by what an operator thinks in: routes and APIs (by name),
//! upstreams, consumers, global policies, and the other sections. It compares the redacted
//! trees ([`Config::redacted`](crate::Config::redacted)): secrets are masked on both sides, so a
//! change of a secret alone is not shown (the config hashes still differ).

use serde_json::Value;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `routes`, `apis`, `upstreams`, `consumers`, `policies`, or another top-level key.
    pub section: String,
    /// The item (a route's or upstream's name, `#2` for a global policy); empty for a whole
    /// section.
    pub item: String,
    pub kind: Kind,
    /// For a changed item, the keys whose values differ.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.kind {
            Kind::Added => '+',
            Kind::Removed => '-',
            Kind::Changed => '~',
        };
        write!(f, "{}: {sign}", self.section)?;
        if !self.item.is_empty() {
            write!(f, " {}", self.item)?;
        }
        if !self.keys.is_empty() {
            write!(f, " ({})", self.keys.join(", "))?;
        }
        Ok(())
    }
}

/// The differences from `from` (say, the running config) to `to` (say, the file).
pub fn diff(from: &Value, to: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let (a, b) = (
        from.as_object().unwrap_or(&empty),
        to.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        match key.as_str() {
            "routes" => items(
                &mut out,
                key,
                named_list(x, "route"),
                named_list(y, "route"),
            ),
            "consumers" => items(
                &mut out,
                key,
                named_list(x, "consumer"),
                named_list(y, "consumer"),
            ),
            // An OpenAPI document's routes are named in the document; in the config an API is
            // an item of its own (`api-N` when unnamed, as the gateway calls it).
            "apis" => items(&mut out, key, named_list(x, "api"), named_list(y, "api")),
            "upstreams" => items(&mut out, key, object(x), object(y)),
            "policies" => items(&mut out, key, numbered(x), numbered(y)),
            _ if x == y => {}
            _ => out.push(Change {
                section: key.clone(),
                item: String::new(),
                kind: match (x, y) {
                    (None, Some(_)) => Kind::Added,
                    (Some(_), None) => Kind::Removed,
                    _ => Kind::Changed,
                },
                keys: changed_keys(x, y),
            }),
        }
    }
    out
}

/// Items of a section by name, in file order.
type Items<'a> = Vec<(String, &'a Value)>;

fn items(out: &mut Vec<Change>, section: &str, from: Items<'_>, to: Items<'_>) {
    let change = |item: &str, kind, keys| Change {
        section: section.to_string(),
        item: item.to_string(),
        kind,
        keys,
    };
    for (name, v) in &from {
        match to.iter().find(|(n, _)| n == name) {
            None => out.push(change(name, Kind::Removed, Vec::new())),
            Some((_, w)) if v != w => {
                out.push(change(name, Kind::Changed, changed_keys(Some(v), Some(w))))
            }
            Some(_) => {}
        }
    }
    for (name, _) in &to {
        if !from.iter().any(|(n, _)| n == name) {
            out.push(change(name, Kind::Added, Vec::new()));
        }
    }
}

/// A list whose items are named by `name` (routes default to `route-N`, as the gateway
/// names them).
fn named_list<'a>(v: Option<&'a Value>, default: &str) -> Items<'a> {
    v.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, item)| {
                    let name = item["name"]
                        .as_str()
                        .map_or_else(|| format!("{default}-{}", i + 1), str::to_owned);
                    (name, item)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn object(v: Option<&Value>) -> Items<'_> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

/// Global policies: by position and type (`#1 rate_limit`).
fn numbered(v: Option<&Value>) -> Items<'_> {
    v.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    let kind = p["type"].as_str().unwrap_or("?");
                    (format!("#{} {kind}", i + 1), p)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The keys of two mappings whose values differ (empty when either is not a mapping).
fn changed_keys(x: Option<&Value>, y: Option<&Value>) -> Vec<String> {
    let (Some(Value::Object(a)), Some(Value::Object(b))) = (x, y) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Value {
        crate::tree::parse_document(text)
            .expect("YAML")
            .to_redacted_json()
    }

    fn lines(from: &str, to: &str) -> Vec<String> {
        diff(&tree(from), &tree(to))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_table_of_config_pairs() {
        let base = "upstreams:\n  users: { targets: [\"http://a:1\"] }\n  orders: { targets: [\"http://b:1\"] }\nroutes:\n  - name: users\n    upstream: users\n  - upstream: orders\npolicies:\n  - { type: cors, allow_origins: [\"*\"] }\nconsumers:\n  - { name: app, api_keys: [\"sha256:00\"] }\n";
        let cases: &[(&str, &str, &[&str])] = &[
            (base, base, &[]),
            // Comments and formatting are no difference.
            (base, &format!("# a comment\n{base}"), &[]),
            (
                base,
                &base.replace(
                    "    upstream: users\n",
                    "    upstream: users\n    timeout: 5s\n",
                ),
                &["routes: ~ users (timeout)"],
            ),
            // Unnamed routes are known by position, as the gateway names them (`route-2`).
            (
                base,
                &base.replace("  - upstream: orders\n", ""),
                &["routes: - route-2"],
            ),
            (
                base,
                &base.replace(
                    "  - upstream: orders\n",
                    "  - upstream: orders\n  - name: new\n    upstream: users\n",
                ),
                &["routes: + new"],
            ),
            (
                base,
                &base.replace("http://b:1", "http://b:2"),
                &["upstreams: ~ orders (targets)"],
            ),
            (
                base,
                &base.replace("[\"*\"]", "[\"https://x\"]"),
                &["policies: ~ #1 cors (allow_origins)"],
            ),
            (
                base,
                &format!("{base}server: {{ x_forwarded: false }}\n"),
                &["server: +"],
            ),
            (
                &format!("{base}server: {{ x_forwarded: false }}\n"),
                &format!("{base}server: {{ x_forwarded: true }}\n"),
                &["server: ~ (x_forwarded)"],
            ),
            // A secret changed: masked on both sides, so not shown here (the hashes differ).
            (
                &format!("{base}redis: {{ url: \"redis://h:6379\", password: one }}\n"),
                &format!("{base}redis: {{ url: \"redis://h:6379\", password: two }}\n"),
                &[],
            ),
            (
                base,
                &base.replace("{ name: app,", "{ name: web,"),
                &["consumers: - app", "consumers: + web"],
            ),
            // APIs by name, unnamed ones by position (`api-2`).
            (
                &format!(
                    "{base}apis:\n  - {{ name: pets, openapi: pets.yaml, upstream: users }}\n  - {{ openapi: toys.yaml, upstream: users }}\n"
                ),
                &format!(
                    "{base}apis:\n  - {{ name: pets, openapi: pets.yaml, upstream: orders }}\n"
                ),
                &["apis: ~ pets (upstream)", "apis: - api-2"],
            ),
        ];
        for (from, to, want) in cases {
            assert_eq!(lines(from, to), *want, "{to}");
        }
    }
}
