//! The one door to the network while a config loads: documents named by URL (a WSDL and its
//! schemas) are read through a function the gateway sets, so this crate needs no HTTP client.

/// Reads a document named by an `http(s)://` URL while a config loads (a WSDL and its
/// schemas). The config crate does no network I/O of its own: the gateway, which owns an HTTP
/// client, sets this once at start.
pub type UrlFetcher = fn(&str) -> Result<Vec<u8>, String>;

static URL_FETCHER: std::sync::OnceLock<UrlFetcher> = std::sync::OnceLock::new();

/// Sets the [`UrlFetcher`]; the first call wins.
pub fn set_url_fetcher(f: UrlFetcher) {
    let _ = URL_FETCHER.set(f);
}

pub(crate) fn fetch_url(url: &str) -> Result<Vec<u8>, String> {
    match URL_FETCHER.get() {
        Some(f) => f(url),
        None => Err("URLs are not fetched here (no HTTP client is set up)".into()),
    }
}
