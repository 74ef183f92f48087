//! Policies: identity and access, rate and concurrency limits, caching, compression, JSON reshaping.

pub mod access;
pub mod auth;
pub mod cache;
pub(crate) mod compress;
pub mod concurrency;
pub mod cors;
pub(crate) mod json_transform;
pub mod jwks;
pub mod ratelimit;
pub mod redis_limit;
pub mod sliding;
pub mod state;
pub mod token_cache;
