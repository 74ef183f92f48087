//! Upstreams: connection pools, load balancing, health, DNS, and plain fetches.

pub mod balance;
pub mod call;
pub mod dns;
pub(crate) mod fetch;
pub mod pool;
