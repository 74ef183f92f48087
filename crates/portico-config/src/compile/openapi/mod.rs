//! `apis`: routes from OpenAPI documents.
//!
//! - `doc.rs` — the document: version, `$ref`s, operations, base paths, route paths.

// Wired into `compile` with the `apis` section.
#[allow(dead_code)]
pub(super) mod doc;
