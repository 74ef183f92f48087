//! The generic XML↔JSON mapping against golden files: each `NAME.xml` reads as `NAME.json`,
//! and that JSON written back as XML reads as the same JSON again.

use portico_translate::xml::{Limits, from_json, parse, to_json};

#[test]
fn golden_documents_map_both_ways() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/xml");
    let mut seen = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    names.sort();
    // Prefixes used by the golden documents, declared when JSON is written back.
    let ns = [
        ("inv".to_owned(), "urn:inventory".to_owned()),
        ("ext".to_owned(), "urn:ext".to_owned()),
    ];
    for xml_path in names {
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(xml_path.with_extension("json")).unwrap(),
        )
        .unwrap();
        let xml = std::fs::read(&xml_path).unwrap();
        let got = to_json(&parse(&xml, &Limits::default()).unwrap());
        assert_eq!(got, want, "{}", xml_path.display());
        let written = from_json(&want, "root", &ns).unwrap();
        let again = to_json(&parse(written.as_bytes(), &Limits::default()).unwrap());
        assert_eq!(
            again,
            want,
            "{} written back as {written}",
            xml_path.display()
        );
        seen += 1;
    }
    assert!(seen >= 4, "golden files found: {seen}");
}
