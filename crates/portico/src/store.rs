//! The commands that work on a config store (`redis://…`): push, rollback, history, and the
//! store's side of validate and diff.

use std::path::Path;
use std::process::ExitCode;

use portico_proxy::runtime::config_store::{ConfigStore, PushError, StoreUrl, StoredConfig};

/// Opens the store named by `url` and runs `f` on a small runtime of its own.
fn with_store<T>(
    url: &str,
    f: impl AsyncFnOnce(&ConfigStore) -> Result<T, String>,
) -> Result<T, String> {
    let url = StoreUrl::parse(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // Inside the runtime: the Redis client spawns its reconnection task when made.
        let store = ConfigStore::open(url).map_err(|e| e.to_string())?;
        f(&store).await
    })
}

/// A stored version and what it compiles to.
type Loaded = (
    StoredConfig,
    Result<portico_config::Config, portico_config::Diagnostics>,
);

/// The store's current version, compiled as a node would (relative paths from the working
/// directory, `${VAR}` from this environment).
async fn load_current(store: &ConfigStore) -> Result<Loaded, String> {
    let doc = store
        .get(None)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "{}: no config is stored at key `{}`",
                store.url().shown(),
                store.url().key()
            )
        })?;
    let name = format!("{}#v{}", store.url().shown(), doc.version);
    let compiled =
        portico_config::load_str(&name, &doc.text, Path::new("."), &|k| std::env::var(k).ok());
    Ok((doc, compiled))
}

/// `portico validate -c redis://…`: the store's current version.
pub fn validate(url: &str) -> ExitCode {
    match with_store(url, async |s| load_current(s).await) {
        Ok((doc, Ok(cfg))) => {
            outln!(
                "{}#v{}: valid ({} listeners, {} upstreams, {} routes; pushed by {} at {})",
                url_shown(url),
                doc.version,
                cfg.listeners.len(),
                cfg.upstreams.len(),
                cfg.routes.len(),
                doc.author,
                doc.time
            );
            ExitCode::SUCCESS
        }
        Ok((_, Err(d))) => {
            errln!("{d}");
            ExitCode::FAILURE
        }
        Err(e) => {
            errln!("portico: {e}");
            ExitCode::from(2)
        }
    }
}

fn url_shown(url: &str) -> String {
    StoreUrl::parse(url).map_or_else(
        |_| portico_proxy::runtime::config_store::redact(url),
        |u| u.shown().to_owned(),
    )
}

/// The settings of a push.
pub struct Push<'a> {
    pub to: &'a str,
    pub author: Option<String>,
    pub expect_version: Option<u64>,
    pub keep: u32,
}

/// `portico push`: validates the file, then stores it as the next version unless another push
/// got there first. Exit 0 when pushed (or already current), 1 when the file has errors or a
/// push raced it, 2 when the store cannot be used.
pub fn push(file: &Path, p: Push<'_>) -> ExitCode {
    let cfg = match portico_config::load_file(file) {
        Ok(c) => c,
        Err(d) => {
            errln!("{d}");
            errln!("portico: nothing pushed: fix the config first");
            return ExitCode::FAILURE;
        }
    };
    let author = p
        .author
        .unwrap_or_else(portico_proxy::runtime::config_store::default_author);
    let doc = portico_proxy::stored_config(cfg.text.to_string(), author, None);
    store_next(p.to, doc, p.expect_version, p.keep)
}

/// Writes `doc` as the version after `expected` (the current one when `None`), saying what
/// happened.
fn store_next(to: &str, doc: StoredConfig, expected: Option<u64>, keep: u32) -> ExitCode {
    let result = with_store(to, async |s| {
        let expected = match expected {
            Some(v) => v,
            None => s.version().await.map_err(|e| e.to_string())?,
        };
        if expected > 0
            && let Some(current) = s.get(Some(expected)).await.map_err(|e| e.to_string())?
            && current.hash == doc.hash
        {
            return Ok(Err(expected));
        }
        match s.push(&doc, Some(expected), keep).await {
            Ok(v) => Ok(Ok(v)),
            Err(PushError::Conflict { expected, current }) => Err(format!(
                "another push made version {current} while this one expected version {expected}; nothing was written (see `portico history --from {}`, then push again)",
                s.url().shown()
            )),
            Err(PushError::Store(e)) => Err(e.to_string()),
        }
    });
    match result {
        Ok(Ok(v)) => {
            outln!("pushed version {v} ({}) to {}", doc.hash, url_shown(to));
            ExitCode::SUCCESS
        }
        Ok(Err(v)) => {
            outln!(
                "version {v} is already this config ({}); nothing pushed",
                doc.hash
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.starts_with("another push") => {
            errln!("portico: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            errln!("portico: {e}");
            ExitCode::from(2)
        }
    }
}

/// `portico rollback`: stores an earlier version's text as the next version (the history
/// stays linear: a rollback is a push, with a note saying what it restores).
pub fn rollback(to: &str, version: Option<u64>, author: Option<String>, keep: u32) -> ExitCode {
    let found = with_store(to, async |s| {
        let current = s.version().await.map_err(|e| e.to_string())?;
        let wanted = match version {
            Some(v) => v,
            None if current > 1 => current - 1,
            None => return Err("there is no earlier version to roll back to".to_string()),
        };
        let old = s
            .get(Some(wanted))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("version {wanted} is not kept (see `portico history --from {to}`)")
            })?;
        Ok((current, old))
    });
    let (current, old) = match found {
        Ok(f) => f,
        Err(e) => {
            errln!("portico: {e}");
            return ExitCode::from(2);
        }
    };
    // The old text is loaded before it is stored again: a config valid then may not be now
    // (a file it names is gone, a variable it reads is unset).
    let name = format!("{}#v{}", url_shown(to), old.version);
    if let Err(d) =
        portico_config::load_str(&name, &old.text, Path::new("."), &|k| std::env::var(k).ok())
    {
        errln!("{d}");
        errln!(
            "portico: version {} no longer loads; nothing pushed",
            old.version
        );
        return ExitCode::FAILURE;
    }
    let author = author.unwrap_or_else(portico_proxy::runtime::config_store::default_author);
    let note = Some(format!("rollback to version {}", old.version));
    let doc = portico_proxy::stored_config(old.text, author, note);
    store_next(to, doc, Some(current), keep)
}

/// `portico history`: the kept versions, newest first.
pub fn history(from: &str, json: bool) -> ExitCode {
    match with_store(from, async |s| {
        let current = s.version().await.map_err(|e| e.to_string())?;
        Ok((current, s.history().await.map_err(|e| e.to_string())?))
    }) {
        Ok((current, versions)) => {
            if json {
                let list: Vec<serde_json::Value> = versions
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "version": v.version,
                            "current": v.version == current,
                            "hash": v.hash,
                            "author": v.author,
                            "time": v.time,
                            "note": v.note,
                        })
                    })
                    .collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else if versions.is_empty() {
                outln!("{}: nothing stored", url_shown(from));
            } else {
                for v in &versions {
                    outln!(
                        "{}{:>5}  {}  {}  {}{}",
                        if v.version == current { "*" } else { " " },
                        v.version,
                        v.time,
                        v.hash,
                        v.author,
                        v.note
                            .as_deref()
                            .map(|n| format!("  ({n})"))
                            .unwrap_or_default()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("portico: {e}");
            ExitCode::from(2)
        }
    }
}

/// The store's current config, for `portico diff --from`: its name, hash and redacted form.
pub fn current_for_diff(from: &str) -> Result<(String, String, serde_json::Value), String> {
    let (doc, compiled) = with_store(from, async |s| load_current(s).await)?;
    let name = format!("{}#v{}", url_shown(from), doc.version);
    match compiled {
        Ok(cfg) => Ok((name, cfg.hash.clone(), cfg.redacted())),
        Err(d) => Err(d.to_string()),
    }
}
