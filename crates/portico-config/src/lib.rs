//! Portico's configuration: the file format, its validation with precise locations, and the
//! compiled runtime form the proxy reads through an atomic pointer.

#![forbid(unsafe_code)]

pub mod canon;
pub mod compile;
mod config;
pub mod dates;
pub mod describe;
pub mod diag;
pub mod diff;
pub mod duration;
pub mod explain;
mod fetch;
pub mod file;
pub mod ir;
pub mod query;
pub mod router;
pub mod tree;

use std::path::Path;

pub use compile::{DEFAULT_ADMIN, parse_target_url};
pub use config::{ApiDocument, Config};
pub use diag::{Diagnostic, Diagnostics};
pub use fetch::{UrlFetcher, set_url_fetcher};
pub use ir::*;

/// Loads a config file, expanding `${VAR}` from the process environment.
pub fn load_file(path: &Path) -> Result<Config, Diagnostics> {
    let name = path.display().to_string();
    let text = match compile::read_bounded(path)
        .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
    {
        Ok(t) => t,
        Err(e) => {
            return Err(Diagnostics(vec![Diagnostic {
                file: name,
                loc: None,
                message: format!("cannot read the config file: {e}"),
                hint: Some("check the path given with `-c`".into()),
                source_line: None,
            }]));
        }
    };
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    load_str(&name, &text, base, &|k| std::env::var(k).ok())
}

/// Compiles config text. `source` names it in diagnostics.
pub fn load_str(
    source: &str,
    text: &str,
    base_dir: &Path,
    env: tree::Env<'_>,
) -> Result<Config, Diagnostics> {
    compile::compile(source, text, base_dir, env)
}

/// The config's hash as `Config::hash` has it: of the text as written, before `${VAR}` is
/// expanded (so every node of a fleet shows the same hash for the same file).
pub fn text_hash(text: &str) -> String {
    compile::text_hash(text)
}

/// The JSON Schema of the config file, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(file::FileConfig)).unwrap_or_default()
}
