//! The XML reader and the generic XML <-> JSON mapping.

use portico_translate::xml::{Limits, from_json, parse, to_json};
use serde_json::Value;

/// Reading never panics. A document read maps to JSON; when that JSON can be written back as
/// XML, the XML written is readable, and one more trip changes nothing (the mapping is stable
/// once normalised). JSON input written as XML is readable too.
pub fn xml(data: &[u8]) {
    let limits = Limits::default();
    if let Ok(root) = parse(data, &limits) {
        let json = to_json(&root);
        if let Ok(written) = from_json(&json, &root.name, &root.namespaces) {
            let again = parse(written.as_bytes(), &limits)
                .unwrap_or_else(|e| panic!("unreadable XML written: {e}: {written}"));
            let json2 = to_json(&again);
            let written2 = from_json(&json2, &again.name, &again.namespaces)
                .unwrap_or_else(|e| panic!("normalised JSON not writable: {e}: {json2}"));
            let json3 = to_json(&parse(written2.as_bytes(), &limits).expect("readable"));
            assert_eq!(json3, json2, "{written} / {written2}");
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data)
        && let Ok(written) = from_json(&v, "root", &[])
    {
        parse(written.as_bytes(), &limits)
            .unwrap_or_else(|e| panic!("unreadable XML written from JSON: {e}: {written}"));
    }
}
