//! The request pipeline: from a parsed request to the response written back.

pub mod handle;
