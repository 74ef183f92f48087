//! The request pipeline: from a parsed request to the response written back.

pub mod forward;
pub mod handle;
pub mod policies;
pub mod request;
pub mod respond;
