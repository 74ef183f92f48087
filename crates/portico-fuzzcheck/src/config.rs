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
