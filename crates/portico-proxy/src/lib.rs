//! Portico's data plane: listeners, the request pipeline, upstream pools, the admin listener,
//! and the reload and drain machinery around them.
//!
//! `unsafe` is denied but for five marked sites, each allowed where it stands with the
//! reason it holds: header values httparse has checked (two), a request id of hex digits, an
//! ASCII check taken as UTF-8, and a box written before it is read (`box_in_place`).

#![deny(unsafe_code)]

mod admin;
pub mod base;
pub mod body;
/// The HTTP/1.1 parsers run on plain bytes, for the fuzz targets and differential tests; the
/// parsers themselves stay private.
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod http1;
mod listen;
pub mod observe;
pub mod pipeline;
pub mod policy;
pub mod runtime;
mod translate;
pub mod upstream;

/// Lets configs name documents (WSDLs) by `http(s)://` URL: they are fetched while the config
/// loads, with the gateway's HTTP client. Call once at start.
pub fn install_url_fetcher() {
    portico_config::set_url_fetcher(upstream::fetch::get_blocking);
}

/// A GET of an `http(s)://` URL from code that is not async (10 s, 16 MiB, 200 only).
pub fn fetch_blocking(url: &str) -> Result<Vec<u8>, String> {
    upstream::fetch::get_blocking(url)
}

pub use gateway::{
    Gateway, GatewayError, StartedFrom, StoreSource, StoreStartError, TargetsError, stored_config,
};
pub use listen::inherited::{adopt as adopt_listeners, unused as unused_inherited_listeners};
pub use listen::settings::ListenError;

impl Gateway {
    /// Binds the admin port and every listener, then starts serving `config`. `config_path` is
    /// the file reloads read. Here rather than in `gateway` because the admin API calls into
    /// the gateway (reload, targets): the gateway knows nothing of it.
    pub async fn start(
        config: portico_config::Config,
        config_path: Option<std::path::PathBuf>,
    ) -> Result<Gateway, GatewayError> {
        let gw = Gateway::open(config, config_path)?;
        if let Some(addr) = gw.admin_configured() {
            let bound = admin::bind(addr, gw.inner().clone())
                .await
                .map_err(GatewayError::Admin)?;
            gw.set_admin_addr(bound);
        }
        gw.bind_listeners().await?;
        gw.start_heartbeats();
        gw.start_audit_summaries();
        gw.start_live_sampler();
        Ok(gw)
    }
}
