//! The official JSON Schema Test Suite (tests/suite/) for the keywords the validator
//! implements: draft 2020-12 in the OpenAPI 3.1 dialect, draft 4 in the 3.0 dialect.
//!
//! Groups whose schema needs what the validator deliberately does not do (identifiers and
//! references by URI, the meta-schema, `unevaluated*`) are left out by the reason listed in
//! `OUT_OF_SCOPE`, and the number left out is pinned, so a change that drops more is noticed.

use portico_contract::{Compiler, Dialect, Direction, Scratch, validate_json, validate_streaming};
use serde_json::Value;

/// What a group's schema uses that puts it outside the validator, by the text that shows it.
const OUT_OF_SCOPE: &[(&str, &str)] = &[
    ("\"$id\"", "identifiers and references by URI"),
    ("\"id\"", "identifiers and references by URI (draft 4)"),
    ("\"$anchor\"", "references by anchor"),
    ("json-schema.org", "the meta-schema"),
    (
        "unevaluated",
        "unevaluatedProperties/Items (refused when compiling)",
    ),
    ("\"$defs\": {\"\": ", "empty-named definitions"),
];

fn run(dir: &str, dialect: Dialect, expect_skipped: usize) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/suite")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut passed, mut skipped, mut streamed) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut scratch = Scratch::default();
    for f in files {
        let groups: Vec<Value> = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let file = f.file_name().unwrap().to_string_lossy().into_owned();
        for g in groups {
            // Every 2020-12 schema names its dialect; only references to the meta-schema matter.
            let mut schema = g["schema"].clone();
            if let Some(m) = schema.as_object_mut() {
                m.remove("$schema");
            }
            let schema = &schema;
            let text = schema.to_string();
            let tests = g["tests"].as_array().unwrap();
            if OUT_OF_SCOPE.iter().any(|(t, _)| text.contains(t)) {
                skipped += tests.len();
                continue;
            }
            let mut c = Compiler::new(schema, dialect);
            let id = c.schema("");
            let (schemas, errors) = c.finish();
            if !errors.is_empty() {
                failures.push(format!(
                    "{file}: {}: schema refused: {errors:?}",
                    g["description"]
                ));
                continue;
            }
            for t in tests {
                let data = serde_json::to_vec(&t["data"]).unwrap();
                let want = t["valid"].as_bool().unwrap();
                let got = validate_json(
                    &schemas,
                    id,
                    &data,
                    &mut scratch,
                    64,
                    100,
                    Direction::Request,
                )
                .unwrap();
                // The checker that reads as it goes, where it takes the schema, agrees.
                if let Some(fast) = validate_streaming(&schemas, id, &data, 64, Direction::Request)
                {
                    streamed += 1;
                    if fast != got.is_empty() {
                        failures.push(format!(
                            "{file}: {} / {}: the streaming check says valid={fast}, the tree {got:?}",
                            g["description"], t["description"]
                        ));
                    }
                }
                if got.is_empty() == want {
                    passed += 1;
                } else {
                    failures.push(format!(
                        "{file}: {} / {}: want valid={want}, got {got:?}",
                        g["description"], t["description"]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        passed + failures.len(),
        failures.join("\n")
    );
    assert!(passed > 300, "only {passed} cases ran");
    assert!(
        streamed > 150,
        "only {streamed} cases went through the streaming check"
    );
    assert_eq!(
        skipped, expect_skipped,
        "cases left out by OUT_OF_SCOPE changed ({passed} passed)"
    );
}

#[test]
fn draft_2020_12_in_the_openapi_3_1_dialect() {
    run("draft2020-12", Dialect::Oas31, 49);
}

#[test]
fn draft_4_in_the_openapi_3_0_dialect() {
    run("draft4", Dialect::Oas30, 16);
}
