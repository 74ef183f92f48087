//! Helpers every layer uses: header parsing and writing, the connection's info, the clock.

pub mod clock;
pub mod conn;
pub mod future;
pub mod headers;
