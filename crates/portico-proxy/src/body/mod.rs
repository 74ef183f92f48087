//! The bodies the gateway reads and writes, and the answers it writes itself.
//!
//! One enum ([`Body`]) carries every body the gateway sends, upstream or to a client, so no
//! request or response is boxed. Files here import each other directly, never through this
//! module: `unified` (the enum) sits on `client`, `upstream`, `limits` and `error`; `problem`
//! on `unified`.

pub mod client;
pub mod error;
pub mod limits;
pub mod problem;
pub mod unified;
pub mod upstream;

pub use client::{ClientBody, ReadError, read_client_body};
pub use error::BodyError;
pub use limits::{BodyStats, Declared, IdleTimer, RateFloor};
pub use unified::{Body, ChannelBody};
pub use upstream::UpstreamBody;
