//! Reshaping JSON for lean clients: keep only some fields, drop some, rename, take a
//! sub-object. Paths are dotted (`address.city`); through an array they apply to every
//! element, so `orders.total` keeps the `total` of each order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A set of dotted paths as a tree: `{a: {b: {}}, c: {}}` for `a.b, c`. An empty subtree
/// means "this whole field".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(BTreeMap<String, Fields>);

impl Fields {
    /// From dotted paths; `None` when a path is empty or has an empty segment.
    pub fn parse<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<Fields> {
        let mut root = Fields::default();
        for p in paths {
            let p = p.trim();
            if p.is_empty() || p.split('.').any(str::is_empty) {
                return None;
            }
            let mut cur = &mut root;
            let mut whole = false;
            for seg in p.split('.') {
                if whole {
                    break;
                }
                let existed = cur.0.contains_key(seg);
                let next = cur.0.entry(seg.to_owned()).or_default();
                // `a` and `a.b`: `a` already keeps everything under it.
                if existed && next.0.is_empty() {
                    whole = true;
                }
                cur = next;
            }
            if !whole {
                cur.0.clear();
            }
        }
        Some(root)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only these fields.
    pub fn keep(&self, v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.retain(|k, _| self.0.contains_key(k));
                for (k, sub) in o.iter_mut() {
                    if let Some(t) = self.0.get(k)
                        && !t.is_empty()
                    {
                        t.keep(sub);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|e| self.keep(e)),
            _ => {}
        }
    }

    /// Removes these fields.
    pub fn drop_from(&self, v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, t) in &self.0 {
                    if t.is_empty() {
                        o.remove(k);
                    } else if let Some(sub) = o.get_mut(k) {
                        t.drop_from(sub);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|e| self.drop_from(e)),
            _ => {}
        }
    }
}

/// The value at a dotted path (object keys, array indexes), taken out of `v`.
pub fn extract(v: Value, path: &str) -> Option<Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(mut o) => o.remove(seg)?,
            Value::Array(mut a) => {
                let i: usize = seg.parse().ok()?;
                if i >= a.len() {
                    return None;
                }
                a.swap_remove(i)
            }
            _ => return None,
        };
    }
    Some(cur)
}

/// Renames top-level keys of an object (of each element of an array).
pub fn rename(v: &mut Value, renames: &[(String, String)]) {
    match v {
        Value::Object(o) => {
            let mut out = Map::with_capacity(o.len());
            for (k, val) in std::mem::take(o) {
                let k = renames
                    .iter()
                    .find(|(from, _)| *from == k)
                    .map_or(k, |(_, to)| to.clone());
                out.insert(k, val);
            }
            *o = out;
        }
        Value::Array(a) => a.iter_mut().for_each(|e| rename(e, renames)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_drop_extract_rename() {
        let doc = json!({
            "id": 1, "name": "Ada", "secret": "x",
            "address": {"city": "Paris", "zip": "75001"},
            "orders": [{"id": 1, "total": 3, "items": [1]}, {"id": 2, "total": 4}]
        });
        let mut v = doc.clone();
        Fields::parse(["id", "address.city", "orders.total"])
            .unwrap()
            .keep(&mut v);
        assert_eq!(
            v,
            json!({"id": 1, "address": {"city": "Paris"}, "orders": [{"total": 3}, {"total": 4}]})
        );
        let mut v = doc.clone();
        Fields::parse(["secret", "orders.items"])
            .unwrap()
            .drop_from(&mut v);
        assert!(v.get("secret").is_none() && v["orders"][0].get("items").is_none());
        assert_eq!(v["orders"][0]["total"], 3);
        // `a` and `a.b` together keep all of `a`.
        let mut v = doc.clone();
        Fields::parse(["address", "address.city"])
            .unwrap()
            .keep(&mut v);
        assert_eq!(v, json!({"address": {"city": "Paris", "zip": "75001"}}));
        assert_eq!(extract(doc.clone(), "address.city"), Some(json!("Paris")));
        assert_eq!(extract(doc.clone(), "orders.1.id"), Some(json!(2)));
        assert_eq!(extract(doc.clone(), "nope"), None);
        let mut v = json!([{"name": "a", "x": 1}]);
        rename(&mut v, &[("name".into(), "full_name".into())]);
        assert_eq!(v, json!([{"full_name": "a", "x": 1}]));
        assert!(Fields::parse(["a..b"]).is_none());
    }
}
