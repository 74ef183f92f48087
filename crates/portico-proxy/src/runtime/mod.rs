//! What a request reads: one config generation's state (`state`), and the request's own
//! context as it goes through the pipeline (`ctx`).

pub mod ctx;
pub mod state;

pub use ctx::RequestCtx;
pub use state::{Runtime, RuntimeError, TargetOverrides};
