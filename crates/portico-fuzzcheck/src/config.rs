//! Loading a config from arbitrary text.

/// `load_str` never panics; every diagnostic has a message, and a location inside the text or
/// (for a problem of the file as a whole) a hint.
pub fn config_load(data: &[u8]) {
    let text = crate::text(data);
    let env = |k: &str| (k == "PORT").then(|| "8080".to_owned());
    let Err(diags) = portico_config::load_str(
        "fuzz.yaml",
        &text,
        std::path::Path::new("/nonexistent"),
        &env,
    ) else {
        return;
    };
    assert!(!diags.is_empty(), "an error without diagnostics");
    // YAML ends lines at CR, LF or CRLF (`str::lines` knows no lone CR).
    let lines = text.replace("\r\n", "\n").matches(['\r', '\n']).count() + 1;
    for d in &diags.0 {
        assert!(!d.message.trim().is_empty(), "{d:?}");
        match d.loc {
            Some(l) => assert!(
                l.line >= 1 && (l.line as usize) <= lines + 1,
                "line {} of {lines}: {d}",
                l.line
            ),
            None => assert!(
                d.hint.as_deref().is_some_and(|h| !h.trim().is_empty()),
                "no location and no hint: {d}"
            ),
        }
    }
}

/// A config whose `apis` item names an OpenAPI document made of the input: loading never
/// panics; every diagnostic has a message, and one located in the document is on one of its
/// lines. The document is written to a folder of this process's, once per input (the config
/// reads documents from files); one input at a time, since the corpus tests may run targets
/// on several threads.
pub fn openapi_load(data: &[u8]) {
    use std::sync::{Mutex, OnceLock};
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("portico-fuzz-openapi-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a scratch folder");
        d
    });
    let text = crate::text(data);
    let doc = dir.join("doc.yaml");
    std::fs::write(&doc, text.as_bytes()).expect("the document written");
    let config = "upstreams:\n  u: { targets: [\"http://127.0.0.1:9\"] }\n\
                  apis:\n  - openapi: doc.yaml\n    upstream: u\n";
    let Err(diags) = portico_config::load_str("fuzz.yaml", config, dir, &|_| None) else {
        return;
    };
    assert!(!diags.is_empty(), "an error without diagnostics");
    let lines = text.replace("\r\n", "\n").matches(['\r', '\n']).count() + 1;
    for d in &diags.0 {
        assert!(!d.message.trim().is_empty(), "{d:?}");
        if d.file.ends_with("doc.yaml")
            && let Some(l) = d.loc
        {
            assert!(
                l.line >= 1 && (l.line as usize) <= lines + 1,
                "line {} of {lines}: {d}",
                l.line
            );
        }
    }
}
