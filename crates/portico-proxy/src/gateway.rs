//! The running gateway: its listeners, the current runtime, reload (from the file, the
//! watcher or the admin API) and drain.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use portico_config::Config;
use tokio::sync::{Notify, watch};

use crate::listen::accept::{self, ListenerHandle};
use crate::listen::serving::Serving;
use crate::runtime::Runtime;
use crate::runtime::config_store::{ConfigStore, StoreUrl, StoredConfig};

/// Why the gateway could not start, or could not apply a config. A refused config leaves the
/// running one in place.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config file has errors, each with its location.
    #[error("{0}")]
    Config(#[from] portico_config::Diagnostics),
    /// Reading the config file was cut short (its task failed).
    #[error("loading the config failed: {0}")]
    Load(#[from] tokio::task::JoinError),
    /// A reload to a config without listeners: it would stop serving every client at once.
    #[error(
        "{source_name}: the new config has no listeners; a reload never closes every listener (is the file empty or half-written? write the new file beside it and rename it over the old one)"
    )]
    NoListeners { source_name: String },
    /// A listener could not be set up or bound.
    #[error(transparent)]
    Listen(#[from] crate::listen::settings::ListenError),
    /// What the runtime is built from could not be set up: the access log, Redis, an
    /// upstream's TLS roots.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The admin port could not be set up or bound.
    #[error("admin port: {0}")]
    Admin(String),
    /// `reload_file` or `watch_file` on a gateway started without a file.
    #[error("this gateway was not started from a file; nothing to reload")]
    NoFile,
    /// The config file's folder cannot be watched.
    #[error("cannot watch the config file: {0}")]
    Watch(#[from] notify::Error),
    /// The config store could not be read, or its current version was refused before.
    #[error("config store: {0}")]
    Store(String),
}

/// Shared by every task of one gateway.
pub struct Inner {
    /// What the listeners and their connections share.
    pub(crate) shared: Arc<Serving>,
    /// Also serialises reloads.
    listeners: tokio::sync::Mutex<Vec<ListenerHandle>>,
    pub(crate) draining: AtomicBool,
    pub(crate) prometheus: PrometheusHandle,
    pub(crate) last_reload_error: Mutex<Option<String>>,
    /// Targets set through the admin API; changed only under the `listeners` lock.
    pub(crate) target_overrides: Mutex<crate::runtime::TargetOverrides>,
    config_path: Option<PathBuf>,
    /// Whether the admin API may write the config file (`--admin-writes-file`).
    admin_writes_file: AtomicBool,
    /// The config store this node follows, when it runs from one (`--config redis://…`).
    pub(crate) store: std::sync::OnceLock<Arc<StoreSource>>,
    admin: std::sync::OnceLock<SocketAddr>,
    admin_configured: Option<SocketAddr>,
    /// The configs this node applied, oldest first (at most `HISTORY`), for the admin API.
    pub(crate) history: Mutex<std::collections::VecDeque<AppliedVersion>>,
    /// This node's name in the fleet, and when it started.
    pub(crate) node_id: String,
    pub(crate) started: std::time::SystemTime,
    /// The generation of each config applied by a reload, for the file watcher.
    reloads: watch::Sender<u64>,
}

/// A running gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Gateway {
        Gateway { inner }
    }

    /// Builds the first runtime from `config`. `config_path` is the file reloads read. Nothing
    /// is bound yet: the crate root's `Gateway::start` binds the admin port (the admin API sits
    /// above the gateway and calls into it), then [`Gateway::bind_listeners`].
    pub(crate) fn open(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<Gateway, GatewayError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let prometheus = crate::observe::metrics::install();
        let admin_configured = config.admin;
        let started = std::time::SystemTime::now();
        let node_id = config
            .server
            .node_id
            .clone()
            .unwrap_or_else(|| crate::runtime::fleet::default_node_id(started));
        let runtime = Runtime::build(config, None, 1, &Default::default())?;
        crate::translate::grpc::start_reflections(&runtime);
        if let Some(a) = &runtime.audit {
            a.record(
                "start",
                &[
                    ("version", env!("CARGO_PKG_VERSION").into()),
                    ("config_source", runtime.config.source.as_str().into()),
                    ("config_hash", runtime.config.hash.as_str().into()),
                ],
            );
        }
        let first = AppliedVersion::of(&runtime, "start");
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            shared: Arc::new(Serving {
                runtime: ArcSwap::from_pointee(runtime),
                active_connections: AtomicUsize::new(0),
                connections_idle: Notify::new(),
                shutdown,
                per_ip: Mutex::new(Default::default()),
                live: Default::default(),
            }),
            listeners: tokio::sync::Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            prometheus,
            last_reload_error: Mutex::new(None),
            target_overrides: Mutex::new(Default::default()),
            config_path,
            admin_writes_file: AtomicBool::new(false),
            store: std::sync::OnceLock::new(),
            history: Mutex::new(std::collections::VecDeque::new()),
            admin: std::sync::OnceLock::new(),
            admin_configured,
            node_id,
            reloads: watch::channel(0).0,
            started,
        });
        inner.remember(first);
        Ok(Gateway { inner })
    }

    /// The admin port's configured address, to bind at start.
    pub(crate) fn admin_configured(&self) -> Option<SocketAddr> {
        self.inner.admin_configured
    }

    /// Records where the admin port was bound.
    pub(crate) fn set_admin_addr(&self, bound: SocketAddr) {
        let _ = self.inner.admin.set(bound);
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Binds every listener of the current config and starts serving.
    pub(crate) async fn bind_listeners(&self) -> Result<(), GatewayError> {
        let cfg = self.inner.shared.runtime.load_full().config.clone();
        let mut handles = Vec::new();
        for l in &cfg.listeners {
            handles.push(accept::bind(l, &cfg.server, &self.inner.shared).await?);
        }
        *self.inner.listeners.lock().await = handles;
        record_config_metrics(None, &cfg, 1);
        Ok(())
    }

    /// The address each listener is bound to, by name (useful with port 0).
    pub async fn listener_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.inner
            .listeners
            .lock()
            .await
            .iter()
            .map(|h| (h.spec.name.clone(), h.local))
            .collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin.get().copied()
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.inner.shared.runtime.load_full()
    }

    /// Applies a validated config: binds new listeners first (any failure leaves everything as
    /// it was), then swaps the runtime atomically, then closes listeners that are gone. Returns
    /// notes about settings that need a restart.
    pub async fn apply(&self, config: Config) -> Result<Vec<String>, GatewayError> {
        self.apply_from(config, "api").await
    }

    /// [`Gateway::apply`], recording in the audit trail where the config came from
    /// (`file_watch`, `signal`, `admin`, `api`) and what it changed, or why it was refused.
    pub async fn apply_from(
        &self,
        config: Config,
        source: &str,
    ) -> Result<Vec<String>, GatewayError> {
        self.apply_recorded(config, source, Vec::new()).await
    }

    /// [`Gateway::apply_from`] with more fields for the audit record (a stored version's
    /// author and note).
    async fn apply_recorded(
        &self,
        config: Config,
        source: &str,
        extra: Vec<(&'static str, serde_json::Value)>,
    ) -> Result<Vec<String>, GatewayError> {
        let previous = self.inner.shared.runtime.load_full();
        let result = self.apply_inner(config).await;
        match &result {
            Ok(notes) => {
                let now = self.inner.shared.runtime.load_full();
                self.inner.remember(AppliedVersion::of(&now, source));
                if let Some(a) = &now.audit {
                    let mut fields = applied_fields(source, &previous, &now, notes);
                    fields.extend(extra);
                    a.record("config_applied", &fields);
                }
            }
            Err(e) => refused(&previous, source, e),
        }
        result
    }

    async fn apply_inner(&self, config: Config) -> Result<Vec<String>, GatewayError> {
        let mut listeners = self.inner.listeners.lock().await;
        let previous = self.inner.shared.runtime.load_full();
        // An empty or truncated file is valid YAML and a valid config: applied, it would stop
        // serving every client at once. No reload does that; stopping is the process's job.
        if config.listeners.is_empty() && !previous.config.listeners.is_empty() {
            return Err(GatewayError::NoListeners {
                source_name: config.source.to_string(),
            });
        }
        let mut notes = Vec::new();
        if config.admin != self.inner.admin_configured {
            notes.push(format!(
                "admin address changed to {}; it takes effect after a restart",
                config.admin.map_or("off".to_string(), |a| a.to_string())
            ));
        }
        let fingerprint = |c: &Config| c.admin_access.tls.as_ref().map(|t| t.fingerprint);
        if fingerprint(&config) != fingerprint(&previous.config) {
            notes.push("admin.tls changed; it takes effect after a restart".to_string());
        }
        // Targets set through the admin API outlive file reloads (they are shown on `/config`
        // and `/upstreams`); those of upstreams the file no longer has are dropped.
        let mut overrides = self
            .inner
            .target_overrides
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        overrides.retain(|name, targets| {
            match config.upstreams.iter().find(|u| &*u.name == name) {
                None => {
                    notes.push(format!("upstream `{name}` is gone; its targets set through the admin API are dropped"));
                    false
                }
                Some(up) => match check_targets(up, targets) {
                    Ok(()) => {
                        notes.push(format!("upstream `{name}` keeps the targets set through the admin API, not the file's (DELETE /upstreams/{name}/targets returns to the file's)"));
                        true
                    }
                    Err(e) => {
                        notes.push(format!("upstream `{name}`: the targets set through the admin API no longer fit ({e}); the file's apply"));
                        false
                    }
                },
            }
        });
        let runtime = Runtime::build(config, Some(&previous), previous.generation + 1, &overrides)?;
        crate::translate::grpc::start_reflections(&runtime);
        let cfg = runtime.config.clone();

        // New listeners and new settings for kept ones, prepared before anything changes.
        let mut added = Vec::new();
        let mut updates = Vec::new();
        for l in &cfg.listeners {
            match listeners.iter().position(|h| h.spec.addr == l.addr) {
                Some(i) => updates.push((
                    i,
                    Arc::new(crate::listen::settings::Settings::new(l, &cfg.server)?),
                    l.clone(),
                )),
                None => match accept::bind(l, &cfg.server, &self.inner.shared).await {
                    Ok(h) => added.push(h),
                    Err(e) => {
                        for h in &added {
                            let _ = h.stop.send(true);
                        }
                        return Err(e.into());
                    }
                },
            }
        }
        for (i, settings, spec) in updates {
            listeners[i].settings.store(settings);
            listeners[i].spec = spec;
        }
        self.inner.shared.runtime.store(Arc::new(runtime));
        self.inner.reloads.send_replace(previous.generation + 1);
        let kept: Vec<SocketAddr> = cfg.listeners.iter().map(|l| l.addr).collect();
        listeners.retain(|h| {
            let keep = kept.contains(&h.spec.addr);
            if !keep {
                tracing::info!(listener = %h.spec.name, address = %h.local, "listener removed");
                let _ = h.stop.send(true);
            }
            keep
        });
        listeners.extend(added);
        record_config_metrics(Some(&previous.config), &cfg, previous.generation + 1);
        if let Ok(mut e) = self.inner.last_reload_error.lock() {
            *e = None;
        }
        if let Ok(mut o) = self.inner.target_overrides.lock() {
            *o = overrides;
            record_override_metrics(&o);
        }
        Ok(notes)
    }

    /// Replaces an upstream's targets without touching the file (`Some`), or returns it to the
    /// file's targets (`None`). In-flight requests finish on the pool they started with; the
    /// targets kept keep their health state. The change survives file reloads until undone.
    pub async fn set_targets(
        &self,
        upstream: &str,
        targets: Option<Vec<portico_config::Target>>,
    ) -> Result<(), TargetsError> {
        let _serialised = self.inner.listeners.lock().await;
        let current = self.inner.shared.runtime.load_full();
        let Some(up) = current
            .config
            .upstreams
            .iter()
            .find(|u| &*u.name == upstream)
        else {
            return Err(TargetsError::UnknownUpstream);
        };
        let mut overrides = self
            .inner
            .target_overrides
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        match targets {
            Some(t) => {
                check_targets(up, &t).map_err(TargetsError::Invalid)?;
                overrides.insert(upstream.to_owned(), t);
            }
            None => {
                overrides.remove(upstream);
            }
        }
        let runtime = current
            .with_overrides(&overrides)
            .map_err(|e| TargetsError::Invalid(e.to_string()))?;
        let generation = runtime.generation;
        self.inner.shared.runtime.store(Arc::new(runtime));
        ::metrics::gauge!("portico_config_generation").set(generation as f64);
        if let Ok(mut o) = self.inner.target_overrides.lock() {
            *o = overrides;
            record_override_metrics(&o);
        }
        tracing::warn!(
            upstream,
            generation,
            "upstream targets changed through the admin API"
        );
        Ok(())
    }

    /// Re-reads the config file and applies it. A file with errors is rejected whole and the
    /// running config stays; the errors are returned, logged and shown on `/config`.
    pub async fn reload_file(&self) -> Result<Vec<String>, GatewayError> {
        self.reload_file_from("api").await
    }

    /// [`Gateway::reload_file`], naming in the audit trail what asked for it (`file_watch`,
    /// `signal`, `admin`).
    pub async fn reload_file_from(&self, source: &str) -> Result<Vec<String>, GatewayError> {
        if let Some(store) = self.inner.store.get().cloned() {
            return self
                .check_store(&store, &format!("store_{source}"), true)
                .await;
        }
        let Some(path) = self.inner.config_path.clone() else {
            return Err(GatewayError::NoFile);
        };
        // Loading reads files (and fetches WSDLs named by URL): off the request threads.
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || portico_config::load_file(&file)).await?;
        let result = match loaded {
            Ok(cfg) => self.apply_from(cfg, source).await,
            Err(d) => {
                let e = GatewayError::Config(d);
                refused(&self.inner.shared.runtime.load_full(), source, &e);
                Err(e)
            }
        };
        self.report_reload(&path.display().to_string(), &result);
        result
    }

    /// Counts and logs a reload's outcome; a refusal becomes the last reload error.
    fn report_reload(&self, from: &str, result: &Result<Vec<String>, GatewayError>) {
        match result {
            Ok(notes) => {
                ::metrics::counter!("portico_config_reloads_total", "result" => "success")
                    .increment(1);
                tracing::info!(
                    from,
                    generation = self.inner.shared.runtime.load().generation,
                    "config reloaded"
                );
                for n in notes {
                    tracing::warn!("{n}");
                }
            }
            Err(e) => {
                ::metrics::counter!("portico_config_reloads_total", "result" => "failure")
                    .increment(1);
                tracing::error!(
                    from,
                    "config reload rejected; the running config stays:\n{e}"
                );
                if let Ok(mut last) = self.inner.last_reload_error.lock() {
                    *last = Some(e.to_string());
                }
            }
        }
    }

    /// Follows a config store: applies each new version as it is pushed (announced on the
    /// store's channel, and checked every `poll` whatever happens to the announcements), and
    /// `SIGHUP` or `POST /reload` check it at once. Call once, after `start`.
    pub fn follow_store(&self, source: StoreSource) {
        let source = Arc::new(source);
        if self.inner.store.set(source.clone()).is_err() {
            return;
        }
        ::metrics::gauge!("portico_config_store_up").set(if source.is_up() { 1.0 } else { 0.0 });
        ::metrics::gauge!("portico_config_store_version")
            .set(source.applied.load(Ordering::Relaxed) as f64);
        let gw = self.clone();
        let mut stop = self.inner.shared.shutdown.subscribe();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut announcements = None;
            loop {
                if announcements.is_none() {
                    announcements = source.store.subscribe().await.map(|p| p.into_on_message());
                    // A push made before the subscription was in place (since the config was
                    // loaded, or while the connection was down) was announced to nobody.
                    if announcements.is_some() {
                        let _ = gw.check_store(&source, "store_watch", false).await;
                    }
                }
                let announced = async {
                    match announcements.as_mut() {
                        Some(a) => a.next().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    got = announced => {
                        if !got {
                            // The subscription's connection is gone: made again next round.
                            announcements = None;
                        }
                    }
                    () = tokio::time::sleep(source.poll) => {}
                    _ = stop.changed() => return,
                }
                let _ = gw.check_store(&source, "store_watch", false).await;
            }
        });
    }

    /// Reads the store's current version and applies it when it is not what runs. `forced`
    /// (a reload asked for by a signal or the admin API) tries a version refused before again.
    async fn check_store(
        &self,
        source: &StoreSource,
        asked_by: &str,
        forced: bool,
    ) -> Result<Vec<String>, GatewayError> {
        // One check at a time: the watcher and a reload (or a rollback) that see the same new
        // version apply it once.
        let _one = source.checking.lock().await;
        let store = &source.store;
        let head = match store.head().await {
            Ok(h) => h,
            Err(e) => {
                source.mark_down(e.detail());
                return Err(GatewayError::Store(e.to_string()));
            }
        };
        source.mark_up();
        let Some(head) = head else {
            return Ok(Vec::new());
        };
        let current = head.0;
        if source.is_applied(&head) {
            return Ok(Vec::new());
        }
        if !forced
            && source
                .refused
                .lock()
                .is_ok_and(|r| r.as_ref() == Some(&head))
        {
            return Err(GatewayError::Store(format!(
                "version {current} was refused; the node stays on its last good config"
            )));
        }
        let doc = match store.get(Some(current)).await {
            Ok(Some(d)) => d,
            // Replaced between the two reads: the next check takes the newer one.
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                source.mark_down(e.detail());
                return Err(GatewayError::Store(e.to_string()));
            }
        };
        // The same text again (a push of an unchanged file, or the cached copy this node
        // started from): nothing to apply.
        if doc.hash == self.inner.shared.runtime.load().config.hash {
            source.applied(current, &doc.hash, &doc.text);
            return Ok(Vec::new());
        }
        let hash = doc.hash.clone();
        let name = stored_name(store.url(), current);
        let mut who = vec![("pushed_by", doc.author.as_str().into())];
        if let Some(n) = &doc.note {
            who.push(("note", n.as_str().into()));
        }
        let text = doc.text;
        let base = source.base_dir.clone();
        let (loaded, text) = tokio::task::spawn_blocking(move || {
            let c = portico_config::load_str(&name, &text, &base, &|k| std::env::var(k).ok());
            (c, text)
        })
        .await?;
        let result = match loaded {
            Ok(cfg) => self.apply_recorded(cfg, asked_by, who).await,
            Err(d) => {
                let e = GatewayError::Config(d);
                refused(&self.inner.shared.runtime.load_full(), asked_by, &e);
                Err(e)
            }
        };
        match &result {
            Ok(_) => source.applied(current, &hash, &text),
            Err(_) => {
                if let Ok(mut r) = source.refused.lock() {
                    *r = Some((current, hash));
                }
            }
        }
        self.report_reload(&stored_name(store.url(), current), &result);
        result
    }

    /// Reloads when the config file changes. Watches the folder, not the file: editors replace
    /// files on save and Kubernetes swaps a symlink.
    ///
    /// A file must never be applied half-written: a writer that rewrites the file in place
    /// (templating, `cat >`, a network file system) makes it valid but incomplete for a while,
    /// and a policy near its end would be missing. So a burst of events that wrote into the
    /// file itself is applied only once the writer has closed it and nothing has changed for
    /// `server.reload_settle`. A burst that only renamed or linked a complete file into place
    /// (the safe way to update a config) is applied after a short pause.
    pub fn watch_file(&self) -> Result<(), GatewayError> {
        use notify::Watcher;
        let Some(path) = self.inner.config_path.clone() else {
            return Ok(());
        };
        fn folder(p: &Path) -> PathBuf {
            p.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        }
        // The files whose change reloads: the config and the documents it read (its OpenAPI
        // documents), which a reload reads again. The documents are the running config's,
        // so they are looked up again after each reload.
        fn followed(path: &Path, gw: &Gateway) -> Vec<PathBuf> {
            let mut files = vec![path.to_path_buf()];
            files.extend(
                gw.inner
                    .shared
                    .runtime
                    .load()
                    .config
                    .documents
                    .iter()
                    .cloned(),
            );
            files
        }
        fn names(files: &[PathBuf]) -> HashSet<std::ffi::OsString> {
            files
                .iter()
                .filter_map(|f| f.file_name().map(std::ffi::OsStr::to_os_string))
                .collect()
        }
        fn read_all(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
            files.iter().map(|f| std::fs::read(f).ok()).collect()
        }
        let mut files = followed(&path, self);
        let ours = Arc::new(Mutex::new(names(&files)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watched_names = ours.clone();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(e) = ev
                && is_change(&e.kind)
            {
                let names = watched_names.lock().unwrap_or_else(|e| e.into_inner());
                let ours = e
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
                let _ = tx.send(Burst::of(&e.kind, ours));
            }
        })?;
        let mut folders: HashSet<PathBuf> = HashSet::new();
        for f in &files {
            let dir = folder(f);
            if !folders.contains(&dir) {
                // The config's own folder must be watched; a document's is watched if it can be.
                match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                    Ok(()) => {}
                    Err(e) if *f == path => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e, "cannot watch a document's folder; reload with SIGHUP or POST /reload after changing it")
                    }
                }
                folders.insert(dir);
            }
        }
        // The contents a change is compared with, read before returning: a change made as
        // soon as this returns is then seen as a change (read in the task, it could already
        // be the new contents, and the reload would be skipped).
        let mut last = read_all(&files);
        let gw = self.clone();
        // Any reload (this watcher's, SIGHUP, the admin API, a config write) may name other
        // documents: the followed files and folders are brought up to date after each.
        let mut reloads = self.inner.reloads.subscribe();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    first = rx.recv() => match first {
                        Some(b) => b,
                        None => return,
                    },
                    changed = reloads.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let current = followed(&path, &gw);
                        if current != files {
                            for f in &current[1..] {
                                let dir = folder(f);
                                if folders.insert(dir.clone())
                                    && let Err(e) =
                                        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)
                                {
                                    tracing::warn!(file = %f.display(), error = %e, "cannot watch a document's folder; reload with SIGHUP or POST /reload after changing it");
                                }
                            }
                            *ours.lock().unwrap_or_else(|e| e.into_inner()) = names(&current);
                            files = current;
                            // What the reload read, as near as can be told.
                            last = read_all(&files);
                        }
                        continue;
                    }
                };
                let mut burst = first;
                let started = tokio::time::Instant::now();
                loop {
                    let settle = gw.inner.shared.runtime.load().config.server.reload_settle;
                    let quiet = if burst.wrote_in_place {
                        settle
                    } else {
                        Duration::from_millis(150)
                    };
                    match tokio::time::timeout(quiet, rx.recv()).await {
                        Ok(Some(next)) => burst.add(next),
                        Ok(None) => return,
                        // A writer still holding the file open gets more time, up to a bound:
                        // a file kept open for writing forever must not block reloads.
                        Err(_) if burst.open_for_write && started.elapsed() < MAX_WRITER_WAIT => {}
                        Err(_) => break,
                    }
                }
                if burst.open_for_write {
                    tracing::warn!(file = %path.display(), "a followed file has been open for writing for {}s; reading it anyway", MAX_WRITER_WAIT.as_secs());
                }
                let now = read_all(&files);
                if now[0].is_some() && now != last {
                    last = now;
                    let _ = gw.reload_file_from("file_watch").await;
                }
            }
        });
        Ok(())
    }

    /// Publishes this node's heartbeat to the shared Redis every `redis.heartbeat_interval`,
    /// and reads the fleet's to count drifted nodes (`portico_config_drift_nodes`). Follows
    /// reloads (a config that adds or removes `redis` starts or stops it); withdraws the
    /// heartbeat at shutdown.
    pub(crate) fn start_heartbeats(&self) {
        let gw = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let rt = gw.inner.shared.runtime.load_full();
                let interval = rt.config.redis.as_ref().and_then(|r| r.heartbeat_interval);
                let (Some(store), Some(interval)) = (rt.redis.clone(), interval) else {
                    drop(rt);
                    if gw.inner.draining.load(Ordering::Acquire) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                if gw.inner.draining.load(Ordering::Acquire) {
                    let _ = crate::runtime::fleet::withdraw(&store, &gw.inner.node_id).await;
                    return;
                }
                let hb = gw.heartbeat(&rt);
                drop(rt);
                match crate::runtime::fleet::publish(&store, &hb, interval * 3).await {
                    Ok(()) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("heartbeats reach redis again");
                        }
                        if let Ok(v) = crate::runtime::fleet::view(&store).await {
                            ::metrics::gauge!("portico_config_drift_nodes").set(v.drifted as f64);
                            ::metrics::gauge!("portico_fleet_nodes").set(v.nodes.len() as f64);
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot publish the heartbeat to redis; this node is missing from GET /cluster until it can");
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Drains the routes' live counters into the live view once a second.
    pub(crate) fn start_live_sampler(&self) {
        let gw = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                if gw.inner.draining.load(Ordering::Acquire) {
                    return;
                }
                gw.sample_live();
            }
        });
    }

    /// Drains the current second into the live view (the sampler's step; tests call it to
    /// close a second without waiting).
    #[doc(hidden)]
    pub fn sample_live(&self) {
        let rt = self.inner.shared.runtime.load_full();
        let now = crate::runtime::fleet::unix_ms(std::time::SystemTime::now()) / 1000;
        self.inner.shared.live.sample(
            now,
            rt.route_metrics.iter().map(|m| (&m.name, &*m.live)),
            rt.pools.iter().flat_map(|p| {
                p.live_counters()
                    .map(move |(target, c)| (&p.spec.name, target, c))
            }),
            &rt.live_unrouted,
        );
    }

    /// Writes the audit trail's security summary and checkpoint every `audit.summary_interval`
    /// (following reloads; `shutdown` writes a last one).
    pub(crate) fn start_audit_summaries(&self) {
        let gw = self.clone();
        tokio::spawn(async move {
            loop {
                let interval = gw.audit_summary_interval();
                tokio::time::sleep(interval.unwrap_or(Duration::from_secs(1))).await;
                if gw.inner.draining.load(Ordering::Acquire) {
                    return;
                }
                if interval.is_some() {
                    gw.write_audit_summary();
                }
            }
        });
    }

    /// The running config's `audit.summary_interval` (`None`: no audit trail, or no summaries).
    fn audit_summary_interval(&self) -> Option<Duration> {
        let rt = self.inner.shared.runtime.load();
        rt.audit.as_ref().and_then(|a| a.summary_interval())
    }

    /// Writes the security summary (refusals since the last one, key-set changes) and a
    /// checkpoint to the audit trail now, if there is one.
    #[doc(hidden)]
    pub fn write_audit_summary(&self) {
        let rt = self.inner.shared.runtime.load_full();
        let Some(audit) = &rt.audit else {
            return;
        };
        let key_sets: Vec<(String, Vec<String>)> = rt
            .auth
            .jwks
            .iter()
            .filter_map(|c| {
                let set = c.current()?;
                let mut kids: Vec<String> = set
                    .keys
                    .iter()
                    .map(|k| k.kid.clone().unwrap_or_default())
                    .collect();
                kids.sort();
                Some((c.source.url.clone(), kids))
            })
            .collect();
        audit.summarize(&key_sets);
    }

    /// This node's heartbeat as it stands.
    pub(crate) fn heartbeat(&self, rt: &Runtime) -> crate::runtime::fleet::Heartbeat {
        crate::runtime::fleet::Heartbeat {
            id: self.inner.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            config_hash: rt.config.hash.clone(),
            config_source: rt.config.source.clone(),
            generation: rt.generation,
            loaded_at: crate::observe::access_log::rfc3339(rt.loaded_at),
            loaded_at_ms: crate::runtime::fleet::unix_ms(rt.loaded_at),
            started_at: crate::observe::access_log::rfc3339(self.inner.started),
            uptime_s: self.inner.started.elapsed().map_or(0, |d| d.as_secs()),
            last_reload_error: self
                .inner
                .last_reload_error
                .lock()
                .ok()
                .and_then(|e| e.clone()),
            admin: self.inner.admin.get().map(|a| a.to_string()),
        }
    }

    /// Records an admin request that changes state (or tried to) in the audit trail.
    pub(crate) fn audit_admin(&self, method: &str, path: &str, peer: SocketAddr, status: u16) {
        if let Some(a) = &self.inner.shared.runtime.load().audit {
            a.record(
                "admin",
                &[
                    ("method", method.into()),
                    ("path", path.into()),
                    ("client", peer.to_string().into()),
                    ("status", status.into()),
                ],
            );
        }
    }

    /// Stops accepting, lets in-flight requests finish up to the drain timeout, then returns
    /// the number of connections still open (0 when the drain completed).
    pub async fn shutdown(&self) -> usize {
        self.inner.draining.store(true, Ordering::Release);
        // Out of the fleet at once, not when the heartbeat expires.
        let store = self.inner.shared.runtime.load().redis.clone();
        if let Some(store) = store {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                crate::runtime::fleet::withdraw(&store, &self.inner.node_id),
            )
            .await;
        }
        let deadline = self.inner.shared.runtime.load().config.server.drain_timeout;
        for h in self.inner.listeners.lock().await.iter() {
            let _ = h.stop.send(true);
        }
        let _ = self.inner.shared.shutdown.send(true);
        let wait = async {
            loop {
                let idle = self.inner.shared.connections_idle.notified();
                if self.inner.shared.active_connections.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        // The refusals counted since the last summary are not lost with the process.
        if self.audit_summary_interval().is_some() {
            self.write_audit_summary();
        }
        self.inner.shared.active_connections.load(Ordering::Acquire)
    }
}

/// How many applied configs a node remembers for `GET /config/versions`.
const HISTORY: usize = 20;

/// A config this node applied: its generation, hash, where it came from, who asked, when,
/// and its text (shown redacted only).
#[derive(Debug, Clone)]
pub(crate) struct AppliedVersion {
    pub generation: u64,
    pub hash: String,
    pub source: String,
    pub applied_by: String,
    pub time: std::time::SystemTime,
    pub text: Arc<str>,
    /// The config store's version, when it came from one.
    pub store_version: Option<u64>,
}

impl AppliedVersion {
    fn of(rt: &Runtime, applied_by: &str) -> AppliedVersion {
        AppliedVersion {
            generation: rt.generation,
            hash: rt.config.hash.clone(),
            source: rt.config.source.clone(),
            applied_by: applied_by.to_owned(),
            time: rt.loaded_at,
            text: rt.config.text.clone(),
            // A stored version is named `redis://…#v<N>` (`stored_name`); a file path is
            // never read as one.
            store_version: rt
                .config
                .source
                .starts_with("redis://")
                .then(|| rt.config.source.rsplit_once("#v"))
                .flatten()
                .and_then(|(_, v)| v.parse().ok()),
        }
    }

    /// What the admin API shows of it (never the text: it holds secrets).
    pub(crate) fn summary(&self, current: u64) -> serde_json::Value {
        serde_json::json!({
            "generation": self.generation,
            "current": self.generation == current,
            "hash": self.hash,
            "source": self.source,
            "applied_by": self.applied_by,
            "applied_at": crate::observe::access_log::rfc3339(self.time),
            "store_version": self.store_version,
        })
    }

    /// The config with its secrets masked.
    pub(crate) fn redacted(&self) -> serde_json::Value {
        portico_config::tree::parse_document(&self.text)
            .map_or(serde_json::Value::Null, |root| root.to_redacted_json())
    }
}

impl Inner {
    fn remember(&self, v: AppliedVersion) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(v);
        }
    }

    /// The remembered configs, oldest first.
    pub(crate) fn versions(&self) -> Vec<AppliedVersion> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Why a rollback through the admin API was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigWriteError {
    #[error("generation {0} is not among the configs this node remembers (GET /config/versions)")]
    Unknown(u64),
    #[error(
        "this node runs from the file `{0}` and the admin API may not write it: change the file (from version control) and reload, or start the node with --admin-writes-file"
    )]
    RunsFromFile(String),
    #[error(
        "this node runs from a config given by its embedder; apply the config through the same API"
    )]
    NoSource,
    #[error("the config does not load here, so it was not written:\n{0}")]
    DoesNotLoad(portico_config::Diagnostics),
    #[error("loading the config was interrupted; nothing was written")]
    Interrupted,
    #[error(
        "the running config is {running}, not the one the write was based on (If-Match); read GET /config again"
    )]
    Stale { running: String },
    #[error("writing `{path}`: {error}; the file and the running config are unchanged")]
    File { path: String, error: std::io::Error },
    #[error(transparent)]
    Push(#[from] crate::runtime::config_store::PushError),
}

/// Where an admin write went, and whether this node applied it.
pub(crate) enum Written {
    /// Stored as the config store's next version (every node follows).
    Pushed {
        version: u64,
        applied: Result<Vec<String>, GatewayError>,
    },
    /// Written to the node's config file, then applied.
    File {
        path: String,
        applied: Result<Vec<String>, GatewayError>,
    },
}

impl Gateway {
    /// Lets the admin API (`PUT /config`, `POST /config/rollback`) write the config file this
    /// node runs from (`portico run --admin-writes-file`): written whole and atomically, then
    /// applied, so the file and the running config stay the same. Without it, a node that
    /// runs from a file refuses config writes: it would run what the file does not say.
    pub fn allow_admin_file_writes(&self) {
        self.inner.admin_writes_file.store(true, Ordering::Release);
    }

    /// Writes the config of `generation` again as this node's config (see
    /// [`Gateway::write_config`]).
    pub(crate) async fn rollback_to(
        &self,
        generation: u64,
        who: &str,
    ) -> Result<Written, ConfigWriteError> {
        let old = self
            .inner
            .versions()
            .into_iter()
            .find(|v| v.generation == generation)
            .ok_or(ConfigWriteError::Unknown(generation))?;
        let note = match old.store_version {
            Some(v) => format!("rollback to version {v} (generation {generation} on {who})"),
            None => format!("rollback to generation {generation} on {who}"),
        };
        self.write_config(old.text.to_string(), who, Some(note), None)
            .await
    }

    /// Makes `text` this node's config where its config comes from: the config store's next
    /// version (applied here at once; the other nodes follow the push), or, with
    /// [`Gateway::allow_admin_file_writes`], the config file (then applied). It is loaded first,
    /// exactly as a reload would load it: a config that does not load is written nowhere.
    /// `expect_hash`, when given, must be the running config's hash (a write based on what
    /// was read).
    pub(crate) async fn write_config(
        &self,
        text: String,
        who: &str,
        note: Option<String>,
        expect_hash: Option<&str>,
    ) -> Result<Written, ConfigWriteError> {
        if let Some(h) = expect_hash {
            let running = self.inner.shared.runtime.load().config.hash.to_string();
            if h != running {
                return Err(ConfigWriteError::Stale { running });
            }
        }
        let store = self.inner.store.get().cloned();
        let (name, base) = match (&store, &self.inner.config_path) {
            (Some(source), _) => ("admin write".to_string(), source.base_dir.clone()),
            (None, Some(p)) if self.inner.admin_writes_file.load(Ordering::Acquire) => {
                (p.display().to_string(), config_dir(p).to_path_buf())
            }
            (None, Some(p)) => {
                return Err(ConfigWriteError::RunsFromFile(p.display().to_string()));
            }
            (None, None) => return Err(ConfigWriteError::NoSource),
        };
        // Loaded before it is written: a config that does not load here would be refused by
        // every node (and a file that does not load stops the next start).
        let checked = text.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            portico_config::load_str(&name, &checked, &base, &|k| std::env::var(k).ok())
        })
        .await;
        let cfg = match loaded {
            Ok(Ok(cfg)) => cfg,
            Ok(Err(d)) => return Err(ConfigWriteError::DoesNotLoad(d)),
            Err(_) => return Err(ConfigWriteError::Interrupted),
        };
        if let Some(source) = store {
            let current = source
                .store
                .version()
                .await
                .map_err(crate::runtime::config_store::PushError::Store)?;
            let doc = stored_config(text, who.to_owned(), note);
            // `keep: 0`: nothing is pruned here; the next `portico push` prunes to its `--keep`.
            let version = source.store.push(&doc, Some(current), 0).await?;
            let applied = self.check_store(&source, "store_admin", true).await;
            return Ok(Written::Pushed { version, applied });
        }
        let path = self.inner.config_path.clone().expect("checked above");
        let target = path.clone();
        let wrote =
            tokio::task::spawn_blocking(move || write_atomically(&target, text.as_bytes(), true))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("interrupted")));
        if let Err(error) = wrote {
            return Err(ConfigWriteError::File {
                path: path.display().to_string(),
                error,
            });
        }
        let mut extra = vec![("author", serde_json::json!(who))];
        if let Some(n) = &note {
            extra.push(("note", serde_json::json!(n)));
        }
        let applied = self.apply_recorded(cfg, "admin_write", extra).await;
        self.report_reload(&path.display().to_string(), &applied);
        Ok(Written::File {
            path: path.display().to_string(),
            applied,
        })
    }
}

/// The directory a config file's relative paths are read from (and where it is replaced).
fn config_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, never a
/// part: written to `PATH.tmp` (made anew, so a left-over file or a link there is not
/// followed), flushed to disk, renamed over `path`, the directory flushed. The file is
/// readable by its owner only (a config holds secrets), or, with `keep_mode`, has the mode of
/// the file it replaces.
fn write_atomically(path: &Path, bytes: &[u8], keep_mode: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        if keep_mode && let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(config_dir(path)) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// How a stored version is named in diagnostics, logs and `/config`.
fn stored_name(url: &StoreUrl, version: u64) -> String {
    format!("{}#v{version}", url.shown())
}

/// A node's link to its config store: the version it runs, and whether the store answers.
pub struct StoreSource {
    store: ConfigStore,
    /// Where each applied version is copied, to start from when the store is down.
    cache: Option<PathBuf>,
    poll: Duration,
    /// What relative paths in a stored config are relative to.
    base_dir: PathBuf,
    /// The version running; 0 when it runs from the cached copy.
    applied: std::sync::atomic::AtomicU64,
    /// The hash of the version running (with `applied`, what the store's head is compared
    /// with).
    applied_hash: Mutex<String>,
    /// The last version refused, with its hash: not tried again until another is pushed (or
    /// a reload is asked for).
    refused: Mutex<Option<(u64, String)>>,
    /// `None` while the store answers; else since when it has not, and why.
    down: Mutex<Option<(std::time::SystemTime, String)>>,
    /// Held while the store is checked and a version applied.
    checking: tokio::sync::Mutex<()>,
}

/// How the config a node starts with was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartedFrom {
    /// The store's current version.
    Store(u64),
    /// The cached copy, because the store could not be read (the reason).
    Cache(String),
}

/// Why a node could not start from its config store.
#[derive(Debug, thiserror::Error)]
pub enum StoreStartError {
    #[error(transparent)]
    Setup(#[from] crate::policy::redis_limit::RedisSetupError),
    #[error("{0}; and there is no cached copy to start from{1}")]
    NoCopy(String, String),
    #[error(
        "{url}: no config is stored at key `{key}`; push one with `portico push -c FILE --to {url}`"
    )]
    Empty { url: String, key: String },
    #[error("{0}")]
    Config(portico_config::Diagnostics),
    #[error("loading the config failed: {0}")]
    Load(#[from] tokio::task::JoinError),
}

impl StoreSource {
    /// Opens the store and loads the config to start with: the current version, else (the
    /// store cannot be read, or its version does not load) the cached copy. Each version
    /// loaded from the store is copied to `cache`.
    pub async fn load(
        url: StoreUrl,
        cache: Option<PathBuf>,
        poll: Duration,
        base_dir: PathBuf,
    ) -> Result<(Config, StoreSource, StartedFrom), StoreStartError> {
        let store = ConfigStore::open(url)?;
        let source = StoreSource {
            store,
            cache,
            poll,
            base_dir,
            applied: Default::default(),
            applied_hash: Mutex::new(String::new()),
            refused: Mutex::new(None),
            down: Mutex::new(None),
            checking: tokio::sync::Mutex::new(()),
        };
        let compile = |name: String, text: String, base: PathBuf| {
            tokio::task::spawn_blocking(move || {
                portico_config::load_str(&name, &text, &base, &|k| std::env::var(k).ok())
            })
        };
        let unusable = match source.store.get(None).await {
            Ok(Some(doc)) => {
                let name = stored_name(source.store.url(), doc.version);
                match compile(name, doc.text.clone(), source.base_dir.clone()).await? {
                    Ok(cfg) => {
                        source.applied(doc.version, &doc.hash, &doc.text);
                        return Ok((cfg, source, StartedFrom::Store(doc.version)));
                    }
                    Err(d) => {
                        if let Ok(mut r) = source.refused.lock() {
                            *r = Some((doc.version, doc.hash.clone()));
                        }
                        StoreStartError::Config(d)
                    }
                }
            }
            Ok(None) => {
                return Err(StoreStartError::Empty {
                    url: source.store.url().shown().to_owned(),
                    key: source.store.url().key().to_owned(),
                });
            }
            Err(e) => {
                // Down from the start: said once by the caller, with what it starts from.
                if let Ok(mut down) = source.down.lock() {
                    *down = Some((std::time::SystemTime::now(), e.detail().to_owned()));
                }
                ::metrics::gauge!("portico_config_store_up").set(0.0);
                StoreStartError::NoCopy(e.to_string(), String::new())
            }
        };
        let Some(path) = source.cache.clone() else {
            return Err(unusable);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                return Err(match unusable {
                    StoreStartError::NoCopy(why, _) => {
                        StoreStartError::NoCopy(why, format!(" (`{}`: {e})", path.display()))
                    }
                    other => other,
                });
            }
        };
        let name = format!(
            "{} (cached copy of {})",
            path.display(),
            source.store.url().shown()
        );
        let reason = unusable.to_string();
        match compile(name, text, source.base_dir.clone()).await? {
            Ok(cfg) => Ok((cfg, source, StartedFrom::Cache(reason))),
            Err(d) => Err(StoreStartError::Config(d)),
        }
    }

    /// Whether the store's head (version, hash) is what runs.
    fn is_applied(&self, head: &(u64, String)) -> bool {
        self.applied.load(Ordering::Relaxed) == head.0
            && self.applied_hash.lock().is_ok_and(|h| *h == head.1)
    }

    /// Whether the store answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.down.lock().map(|d| d.is_none()).unwrap_or(true)
    }

    /// The store's URL (without its password), the version running (0: the cached copy), and
    /// since when and why the store does not answer.
    pub fn status(&self) -> serde_json::Value {
        let down = self.down.lock().ok().and_then(|d| d.clone());
        serde_json::json!({
            "url": self.store.url().shown(),
            "key": self.store.url().key(),
            "version": self.applied.load(Ordering::Relaxed),
            "reachable": down.is_none(),
            "unreachable_since": down.as_ref().map(|(t, _)| crate::observe::access_log::rfc3339(*t)),
            "error": down.map(|(_, e)| e),
        })
    }

    /// One line for `/readyz` when the store does not answer.
    pub(crate) fn readiness_note(&self) -> Option<String> {
        let down = self.down.lock().ok().and_then(|d| d.clone())?;
        Some(format!(
            "config store {} unreachable since {} ({}); serving version {} until it answers",
            self.store.url().shown(),
            crate::observe::access_log::rfc3339(down.0),
            down.1,
            match self.applied.load(Ordering::Relaxed) {
                0 => "from the cached copy".to_string(),
                v => v.to_string(),
            }
        ))
    }

    fn mark_down(&self, error: &str) {
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        if down.is_none() {
            tracing::error!(
                store = self.store.url().shown(),
                error,
                "config store unreachable; serving the last good config"
            );
            ::metrics::gauge!("portico_config_store_up").set(0.0);
            *down = Some((std::time::SystemTime::now(), error.to_owned()));
        }
    }

    fn mark_up(&self) {
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        if down.take().is_some() {
            tracing::warn!(
                store = self.store.url().shown(),
                "config store reachable again"
            );
            ::metrics::gauge!("portico_config_store_up").set(1.0);
        }
    }

    /// Records `version` as running and copies its text to the cache (replaced whole,
    /// readable by the owner only: a config holds secrets).
    fn applied(&self, version: u64, hash: &str, text: &str) {
        self.applied.store(version, Ordering::Relaxed);
        if let Ok(mut h) = self.applied_hash.lock() {
            hash.clone_into(&mut h);
        }
        ::metrics::gauge!("portico_config_store_version").set(version as f64);
        let Some(path) = &self.cache else {
            return;
        };
        if let Err(e) = write_atomically(path, text.as_bytes(), false) {
            tracing::warn!(cache = %path.display(), error = %e, "cannot write the config's cached copy");
        }
    }
}

/// A pushed config, ready to store: its text, hash, author, time and note.
pub fn stored_config(text: String, author: String, note: Option<String>) -> StoredConfig {
    StoredConfig {
        version: 0,
        hash: portico_config::text_hash(&text),
        author,
        time: crate::observe::access_log::rfc3339(std::time::SystemTime::now()),
        note,
        text,
    }
}

fn record_config_metrics(previous: Option<&Config>, cfg: &Config, generation: u64) {
    if let Some(p) = previous.filter(|p| p.hash != cfg.hash) {
        ::metrics::gauge!("portico_config_info", "hash" => p.hash.clone()).set(0.0);
    }
    ::metrics::gauge!("portico_config_generation").set(generation as f64);
    ::metrics::gauge!("portico_config_info", "hash" => cfg.hash.clone()).set(1.0);
}

/// Why the admin API refused a target change.
#[derive(Debug)]
pub enum TargetsError {
    UnknownUpstream,
    Invalid(String),
}

/// Whether `targets` can serve `up` as its settings stand.
fn check_targets(
    up: &portico_config::Upstream,
    targets: &[portico_config::Target],
) -> Result<(), String> {
    if targets.is_empty() {
        return Err("an upstream needs at least one target".into());
    }
    if up
        .health_check
        .as_ref()
        .is_some_and(|h| h.grpc_service.is_some())
        && targets
            .iter()
            .any(|t| t.scheme == portico_config::Scheme::Http)
    {
        return Err(
            "this upstream has gRPC health checks, which need `h2c://` or `https://` targets"
                .into(),
        );
    }
    Ok(())
}

fn record_override_metrics(o: &crate::runtime::TargetOverrides) {
    ::metrics::gauge!("portico_admin_target_overrides").set(o.len() as f64);
}

/// How long the watcher waits for a writer that keeps the config file open.
const MAX_WRITER_WAIT: Duration = Duration::from_secs(60);

/// What a burst of file-system events did to the config file.
#[derive(Debug, Clone, Copy, Default)]
struct Burst {
    /// Data was written into the file itself (not renamed into place).
    wrote_in_place: bool,
    /// The last write into the file has not been followed by its close.
    open_for_write: bool,
}

impl Burst {
    fn of(kind: &notify::EventKind, ours: bool) -> Burst {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode, ModifyKind};
        let mut b = Burst::default();
        if !ours {
            return b;
        }
        match kind {
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                b.wrote_in_place = true;
                // Only inotify reports closes; elsewhere the settle time alone must do.
                b.open_for_write = cfg!(target_os = "linux");
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => b.wrote_in_place = true,
            _ => {}
        }
        b
    }

    fn add(&mut self, next: Burst) {
        self.wrote_in_place |= next.wrote_in_place;
        // A close after the writes ends them; a write after a close starts another.
        self.open_for_write = if next.open_for_write {
            true
        } else if next.wrote_in_place {
            false
        } else {
            self.open_for_write
        };
    }
}

/// Whether a file-system event in the config's folder may have changed the config. Reading
/// the file is itself an event (open, access, close-without-write): counting those made the
/// watcher re-read the config every 150 ms forever.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Any
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// What a config change did, for the audit trail: its source and hashes, the generation, and
/// the routes and upstreams added and removed (by name).
fn applied_fields(
    source: &str,
    before: &Runtime,
    after: &Runtime,
    notes: &[String],
) -> Vec<(&'static str, serde_json::Value)> {
    fn names<'a>(items: impl Iterator<Item = &'a str>) -> std::collections::BTreeSet<&'a str> {
        items.collect()
    }
    let diff = |old: std::collections::BTreeSet<&str>, new: std::collections::BTreeSet<&str>| {
        (
            new.difference(&old)
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            old.difference(&new)
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
    };
    let (routes_added, routes_removed) = diff(
        names(before.config.routes.iter().map(|r| &*r.name)),
        names(after.config.routes.iter().map(|r| &*r.name)),
    );
    let (upstreams_added, upstreams_removed) = diff(
        names(before.config.upstreams.iter().map(|u| &*u.name)),
        names(after.config.upstreams.iter().map(|u| &*u.name)),
    );
    vec![
        ("source", source.into()),
        ("config_source", after.config.source.as_str().into()),
        ("config_hash", after.config.hash.as_str().into()),
        ("previous_hash", before.config.hash.as_str().into()),
        ("generation", after.generation.into()),
        ("routes_added", routes_added.into()),
        ("routes_removed", routes_removed.into()),
        ("upstreams_added", upstreams_added.into()),
        ("upstreams_removed", upstreams_removed.into()),
        ("notes", notes.to_vec().into()),
    ]
}

/// Records a refused config in the running config's audit trail.
fn refused(current: &Runtime, source: &str, e: &GatewayError) {
    if let Some(a) = &current.audit {
        let mut error = e.to_string();
        if error.len() > 2000 {
            let mut cut = 2000;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
            error.push('…');
        }
        a.record(
            "config_refused",
            &[
                ("source", source.into()),
                ("running_hash", current.config.hash.as_str().into()),
                ("error", error.into()),
            ],
        );
    }
}

#[cfg(test)]
mod watch_tests {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn reading_the_config_is_not_a_change() {
        assert!(!super::is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!super::is_change(&EventKind::Access(AccessKind::Read)));
        assert!(!super::is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(super::is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(super::is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(super::is_change(&EventKind::Modify(ModifyKind::Any)));
        assert!(super::is_change(&EventKind::Create(CreateKind::File)));
        assert!(super::is_change(&EventKind::Remove(RemoveKind::File)));
    }
}
