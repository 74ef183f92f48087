//! Listeners: accepting connections, TLS, and serving HTTP/1.1 and HTTP/2 on them.

pub mod accept;
pub mod h1;
pub mod h2;
pub mod inherited;
pub mod serving;
pub mod settings;
pub mod tls;
