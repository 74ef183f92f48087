//! Helpers every layer uses: header parsing and writing.

pub mod conn;
pub mod future;
pub mod headers;
