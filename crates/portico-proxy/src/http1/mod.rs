//! The HTTP/1.1 wire format, shared by the client connections and the upstream connections.

pub mod codec;
pub mod server;
