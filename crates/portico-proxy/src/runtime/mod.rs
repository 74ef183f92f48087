//! What a request reads: one config generation's state (`state`), and the request's own
//! context as it goes through the pipeline (`ctx`); and the fleet's heartbeats in the shared
//! Redis (`fleet`), and the config kept in Redis (`config_store`).

pub mod config_store;
pub mod ctx;
pub mod fleet;
pub mod state;

pub use ctx::RequestCtx;
pub use state::{Runtime, RuntimeError, TargetOverrides};
