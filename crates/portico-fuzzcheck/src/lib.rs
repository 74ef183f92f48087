//! The properties Portico's fuzz targets check, one function per target. The targets in
//! `fuzz/` (nightly, cargo-fuzz) call them on generated inputs; `tests/corpora.rs` (stable,
//! `cargo test`) calls them on every committed corpus file, so the corpora are checked on
//! every run without a fuzzer. A check panics when a property does not hold.

use std::path::PathBuf;

pub mod config;
pub mod contract;
pub mod h1;
pub mod jwt;
pub mod paths;
pub mod router;
pub mod trace;
pub mod transcode;
pub mod xml;

/// A target's check: panics when a property does not hold.
pub type Check = fn(&[u8]);

/// Every target: its name (the file under `fuzz/fuzz_targets/` and the folder under
/// `fuzz/corpus/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("h1_request_head", h1::request_head),
    ("h1_response_head", h1::response_head),
    ("path_canon", paths::path_canon),
    ("router", router::router),
    ("config_load", config::config_load),
    ("openapi_load", config::openapi_load),
    ("xml", xml::xml),
    ("transcode", transcode::transcode),
    ("jwt", jwt::jwt),
    ("trace_context", trace::trace_context),
    ("contract_body", contract::contract_body),
];

/// Where the committed corpora are: `fuzz/corpus/<target>/`.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Text for the checks that read strings: the input when it is UTF-8, else its lossy form (so
/// the fuzzer's byte mutations still reach the parser).
pub(crate) fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
