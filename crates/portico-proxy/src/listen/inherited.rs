//! Listening sockets handed to the process when it started (systemd socket activation,
//! `LISTEN_FDS`, or any supervisor that does the same), used instead of binding.
//!
//! A socket that outlives the process that accepts on it is what makes an upgrade lose
//! nothing: the supervisor keeps it open, connections that arrive while no process accepts
//! wait in its queue, and a new process (the new binary) accepts on the very same socket, the
//! old one's queue included. A listener, or the admin port, whose address is an inherited
//! socket's takes that socket; any other binds as usual.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

static INHERITED: Mutex<Vec<TcpListener>> = Mutex::new(Vec::new());

/// Keeps `sockets` for the listeners to take. Call once, before the gateway starts.
pub fn adopt(sockets: Vec<TcpListener>) {
    if let Ok(mut held) = INHERITED.lock() {
        held.extend(sockets);
    }
}

/// The inherited socket listening on `addr`, if there is one (each is taken once).
pub(crate) fn take(addr: SocketAddr) -> Option<TcpListener> {
    let mut held = INHERITED.lock().ok()?;
    let i = held
        .iter()
        .position(|s| s.local_addr().is_ok_and(|a| a == addr))?;
    Some(held.swap_remove(i))
}

/// The addresses of the inherited sockets no listener took (said once the gateway runs: a
/// socket the config does not name is a mistake in the unit or the config).
pub fn unused() -> Vec<SocketAddr> {
    INHERITED
        .lock()
        .map(|held| held.iter().filter_map(|s| s.local_addr().ok()).collect())
        .unwrap_or_default()
}

/// Binds `addr` for tokio: the inherited socket on that address, else a new one.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match take(addr) {
        Some(s) => {
            s.set_nonblocking(true)?;
            tracing::info!(address = %addr, "listening on an inherited socket");
            tokio::net::TcpListener::from_std(s)
        }
        None => tokio::net::TcpListener::bind(addr).await,
    }
}
