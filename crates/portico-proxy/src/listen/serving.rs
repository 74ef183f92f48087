//! What the listeners and every connection on them share with the gateway.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};

use crate::runtime::Runtime;

/// Shared by the gateway, its listeners and their connections.
pub struct Serving {
    /// The config a new request starts with; swapped whole on reload.
    pub(crate) runtime: ArcSwap<Runtime>,
    /// Open client connections; drain waits for them.
    pub(crate) active_connections: AtomicUsize,
    /// Signalled when the last connection closes.
    pub(crate) connections_idle: Notify,
    /// Set to `true` to drain: listeners stop accepting, connections finish and close.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Open client connections per peer address, for `server.max_connections_per_ip`; only
    /// kept while that limit is set.
    pub(crate) per_ip: Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
    /// The last 15 minutes of traffic (kept across reloads).
    pub(crate) live: crate::observe::live::LiveStats,
}
