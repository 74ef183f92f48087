//! The config kept in Redis, for a fleet that runs one config: `portico push` writes it,
//! every node started with `--config redis://…` reads it, watches it and applies each new
//! version as a file reload would (a refused one leaves the node on its last good config).
//!
//! One Redis hash holds everything, so a push is one atomic script on one key (and one
//! Redis Cluster slot):
//!
//! | field | value |
//! |---|---|
//! | `version` | the current version, counted from 1 |
//! | `hash` | the current version's config hash (with `version`, what nodes poll: a store that
//! |  | lost its data and counts from 1 again still shows a new config as new) |
//! | `v:<n>` | version `n`: JSON `{hash, author, time, note, text}` |
//!
//! A push names the version it replaces; when another push got there first the script
//! refuses it, and the pusher is told which version now stands. The last `keep` versions are
//! kept for rollback. Each push publishes the new version on `<key>:changed`; nodes also
//! check the version every poll interval, which is what Sentinel and Cluster deployments
//! and a missed message rely on.

use std::sync::Arc;
use std::time::Duration;

use portico_config::RedisSettings;
use serde::{Deserialize, Serialize};

use crate::policy::redis_limit::{RedisSetupError, RedisStore};

/// Where a config is kept: the Redis server(s) and the hash's key.
///
/// `redis://[user:password@]host:port[,host:port…][/db]?key=K[&sentinel=NAME][&cluster=true]
/// [&timeout=2s]`: several hosts are Sentinels (with `sentinel`, the primary's name) or a
/// Cluster's seed nodes (with `cluster=true`).
#[derive(Debug, Clone)]
pub struct StoreUrl {
    settings: RedisSettings,
    key: String,
    /// The URL without its password, for logs and diagnostics.
    shown: String,
}

/// The key used when the URL names none.
pub const DEFAULT_KEY: &str = "portico:config";

impl StoreUrl {
    /// Whether `s` names a store rather than a file.
    pub fn is_store(s: &str) -> bool {
        s.starts_with("redis://") || s.starts_with("rediss://")
    }

    pub fn parse(s: &str) -> Result<StoreUrl, String> {
        let rest = match s.strip_prefix("redis://") {
            Some(r) => r,
            None if s.starts_with("rediss://") => {
                return Err(
                    "`rediss://` (Redis over TLS) is not supported for the config store; use `redis://` on a trusted network, or a TLS tunnel".into(),
                );
            }
            None => return Err(format!("`{s}` is not a `redis://` URL")),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
        let (auth, hosts) = match authority.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, authority),
        };
        let hosts: Vec<&str> = hosts.split(',').collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(format!("`{}`: no host", redact(s)));
        }
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err(format!(
                "`{}`: the database after the host is not a number (percent-encode `/`, `?` and `@` in a password)",
                redact(s)
            ));
        }
        let mut key = DEFAULT_KEY.to_owned();
        let mut sentinel = None;
        let mut cluster = false;
        let mut timeout = Duration::from_secs(2);
        for (k, v) in portico_config::query::pairs(query) {
            match &*k {
                "key" if !v.is_empty() => key = v.into_owned(),
                "sentinel" if !v.is_empty() => sentinel = Some(v.into_owned()),
                "cluster" => cluster = v == "true" || v == "1",
                "timeout" => {
                    timeout = portico_config::duration::parse_duration(&v)
                        .map_err(|e| format!("`{}`: timeout: {e}", redact(s)))?;
                }
                other => {
                    // A name with an `@` may be part of a password cut at a `?`: not echoed.
                    let other = if other.contains('@') { "…" } else { other };
                    return Err(format!(
                        "`{}`: unknown or empty parameter `{other}` (known: key, sentinel, cluster, timeout)",
                        redact(s)
                    ));
                }
            }
        }
        if cluster && sentinel.is_some() {
            return Err(format!(
                "`{}`: `cluster` and `sentinel` exclude each other",
                redact(s)
            ));
        }
        if sentinel.is_some() && (auth.is_some() || !db.is_empty()) {
            return Err(format!(
                "`{}`: a password or database with `sentinel` is not supported: the primary found through Sentinel is reached without them (use database 0 and a primary without a password, or a single server's URL)",
                redact(s)
            ));
        }
        if hosts.len() > 1 && !cluster && sentinel.is_none() {
            return Err(format!(
                "`{}`: several hosts are Sentinels or Cluster nodes: add `&sentinel=NAME` or `&cluster=true`",
                redact(s)
            ));
        }
        let node = |h: &str| match auth {
            Some(a) => format!("redis://{a}@{h}"),
            None => format!("redis://{h}"),
        };
        let url = if db.is_empty() || cluster {
            node(hosts[0])
        } else {
            format!("{}/{db}", node(hosts[0]))
        };
        let settings = RedisSettings {
            url,
            cluster_nodes: if cluster {
                hosts.iter().map(|h| node(h)).collect()
            } else {
                Vec::new()
            },
            sentinel: sentinel.map(|name| (hosts.iter().map(|h| node(h)).collect(), name)),
            timeout,
            key_prefix: String::new(),
            heartbeat_interval: None,
        };
        Ok(StoreUrl {
            settings,
            key,
            shown: redact(s),
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The URL without its credentials, for logs and errors: everything between the scheme and
/// the last `@` is hidden, wherever that `@` is (a password with an unencoded `/` or `?` is
/// hidden too, and a key with an `@` is shown shortened rather than risk a password).
pub fn redact(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_owned();
    };
    match url.rfind('@') {
        Some(at) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// One stored version of the config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredConfig {
    /// Not stored in the document: the field's name says it.
    #[serde(skip)]
    pub version: u64,
    /// The config's hash, as `Config::hash` computes it (what heartbeats and `/config` show).
    pub hash: String,
    /// Who pushed it (`--author`, else the user and host name).
    pub author: String,
    /// When it was pushed (RFC 3339).
    pub time: String,
    /// Why: a rollback says which version it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The config's text, as written (`${VAR}` expanded by each node when it loads it).
    pub text: String,
}

/// A store that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: {error}")]
    Unreachable { url: String, error: String },
    #[error(
        "{url}: version {version} is not a stored config ({error}); was the key written by something else?"
    )]
    Corrupt {
        url: String,
        version: u64,
        error: String,
    },
}

impl StoreError {
    /// What went wrong, without the URL (for places that name the store already).
    pub fn detail(&self) -> &str {
        match self {
            StoreError::Unreachable { error, .. } | StoreError::Corrupt { error, .. } => error,
        }
    }
}

/// Why a push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Another push replaced the version this one meant to replace.
    #[error(
        "version {current} was pushed while this push expected version {expected}; nothing was written (look at `portico history`, then push again)"
    )]
    Conflict { expected: u64, current: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The push, atomic on the one key: compare the version, write the next, drop the oldest
/// beyond `keep`, announce it. ARGV: expected version (empty: any), document, keep, channel,
/// the config's hash.
const PUSH: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[1] ~= '' and cur ~= tonumber(ARGV[1]) then return {0, cur} end
local new = cur + 1
redis.call('HSET', KEYS[1], 'version', new, 'hash', ARGV[5], 'v:' .. new, ARGV[2])
local keep = tonumber(ARGV[3])
if keep > 0 then
  local oldest = new - keep
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local n = tonumber(string.match(f, '^v:(%d+)$'))
    if n and n <= oldest then redis.call('HDEL', KEYS[1], f) end
  end
end
redis.call('PUBLISH', ARGV[4], new)
return {1, new}
";

/// A connection to one store.
pub struct ConfigStore {
    redis: Arc<RedisStore>,
    url: StoreUrl,
}

impl ConfigStore {
    /// Sets up the client; no connection is made until the first call.
    pub fn open(url: StoreUrl) -> Result<ConfigStore, RedisSetupError> {
        Ok(ConfigStore {
            redis: RedisStore::new(url.settings.clone())?,
            url,
        })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The channel pushes are announced on.
    pub fn channel(&self) -> String {
        format!("{}:changed", self.url.key)
    }

    fn unreachable(&self, error: String) -> StoreError {
        StoreError::Unreachable {
            url: self.url.shown.clone(),
            error,
        }
    }

    /// The current version; 0 when nothing was ever pushed.
    pub async fn version(&self) -> Result<u64, StoreError> {
        Ok(self.head().await?.map_or(0, |(v, _)| v))
    }

    /// The current version and its config's hash, in one small read (what nodes poll).
    pub async fn head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let mut p = redis::pipe();
        p.cmd("HMGET").arg(&self.url.key).arg("version").arg("hash");
        let ((v, h),): ((Option<u64>, Option<String>),) =
            self.redis.run(&p).await.map_err(|e| self.unreachable(e))?;
        Ok(v.map(|v| (v, h.unwrap_or_default())))
    }

    /// One version (`None`: the current one); `Ok(None)` when it is not kept.
    pub async fn get(&self, version: Option<u64>) -> Result<Option<StoredConfig>, StoreError> {
        let version = match version {
            Some(v) => v,
            None => match self.version().await? {
                0 => return Ok(None),
                v => v,
            },
        };
        let mut p = redis::pipe();
        p.cmd("HGET").arg(&self.url.key).arg(format!("v:{version}"));
        let (doc,): (Option<String>,) =
            self.redis.run(&p).await.map_err(|e| self.unreachable(e))?;
        let Some(doc) = doc else {
            return Ok(None);
        };
        let mut c: StoredConfig = serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
            url: self.url.shown.clone(),
            version,
            error: e.to_string(),
        })?;
        c.version = version;
        Ok(Some(c))
    }

    /// Every kept version, newest first.
    pub async fn history(&self) -> Result<Vec<StoredConfig>, StoreError> {
        let mut p = redis::pipe();
        p.cmd("HGETALL").arg(&self.url.key);
        let (all,): (Vec<(String, String)>,) =
            self.redis.run(&p).await.map_err(|e| self.unreachable(e))?;
        let mut out = Vec::new();
        for (field, doc) in all {
            let Some(version) = field.strip_prefix("v:").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let mut c: StoredConfig =
                serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
                    url: self.url.shown.clone(),
                    version,
                    error: e.to_string(),
                })?;
            c.version = version;
            out.push(c);
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.version));
        Ok(out)
    }

    /// Writes `config` as the next version if the current one is still `expected` (`None`:
    /// whatever it is), keeping the last `keep` versions (0: pruning nothing). Returns the
    /// new version.
    pub async fn push(
        &self,
        config: &StoredConfig,
        expected: Option<u64>,
        keep: u32,
    ) -> Result<u64, PushError> {
        let doc = serde_json::to_string(config).map_err(|e| self.unreachable(e.to_string()))?;
        let mut p = redis::pipe();
        p.cmd("EVAL")
            .arg(PUSH)
            .arg(1)
            .arg(&self.url.key)
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(doc)
            .arg(keep)
            .arg(self.channel())
            .arg(&config.hash);
        let ((ok, version),): ((i64, u64),) =
            self.redis.run(&p).await.map_err(|e| self.unreachable(e))?;
        if ok == 1 {
            Ok(version)
        } else {
            Err(PushError::Conflict {
                expected: expected.unwrap_or(0),
                current: version,
            })
        }
    }

    /// A subscription to pushes, for a single server (Sentinel and Cluster deployments rely on
    /// polling). `None` when it cannot be made now.
    pub(crate) async fn subscribe(&self) -> Option<redis::aio::PubSub> {
        if self.url.settings.sentinel.is_some() || !self.url.settings.cluster_nodes.is_empty() {
            return None;
        }
        let client = redis::Client::open(self.url.settings.url.as_str()).ok()?;
        let mut ps = tokio::time::timeout(self.url.settings.timeout, client.get_async_pubsub())
            .await
            .ok()?
            .ok()?;
        ps.subscribe(self.channel()).await.ok()?;
        Some(ps)
    }
}

/// `user@host` of this process, for a push's author.
pub fn default_author() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = crate::runtime::fleet::host_name();
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_servers_the_key_and_hide_the_password() {
        let u = StoreUrl::parse("redis://:s3cret@10.0.0.1:6380/2?key=prod:cfg").unwrap();
        assert_eq!(u.key(), "prod:cfg");
        assert_eq!(u.settings.url, "redis://:s3cret@10.0.0.1:6380/2");
        assert_eq!(u.shown(), "redis://…@10.0.0.1:6380/2?key=prod:cfg");
        let d = StoreUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(d.key(), DEFAULT_KEY);
        let s = StoreUrl::parse("redis://a:26379,b:26379?sentinel=main&key=k").unwrap();
        assert_eq!(
            s.settings.sentinel,
            Some((
                vec!["redis://a:26379".to_string(), "redis://b:26379".to_string()],
                "main".to_string()
            ))
        );
        let c = StoreUrl::parse("redis://a:7000,b:7001?cluster=true").unwrap();
        assert_eq!(c.settings.cluster_nodes.len(), 2);
        assert_eq!(
            StoreUrl::parse("redis://h?timeout=250ms")
                .unwrap()
                .settings
                .timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("rediss://h", "not supported"),
            ("http://h", "not a `redis://` URL"),
            ("redis://", "no host"),
            ("redis://:pw@h/x", "not a number"),
            (
                "redis://:pw@h?colour=red",
                "unknown or empty parameter `colour`",
            ),
            ("redis://:pw@a,b", "add `&sentinel=NAME` or `&cluster=true`"),
            ("redis://:pw@a,b?cluster=1&sentinel=m", "exclude each other"),
            ("redis://:pw@h?timeout=soon", "timeout"),
            ("redis://:pw@a,b?sentinel=m", "not supported"),
            ("redis://a,b/3?sentinel=m", "not supported"),
            // Malformed credentials are never echoed.
            ("redis://:p/w@h?x=1", "not a number"),
            ("redis://:p?w@h", "unknown or empty parameter"),
        ] {
            let e = StoreUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pw"), "{url}: {e}");
            assert!(!e.contains("w@") && !e.contains("p/w"), "{url}: {e}");
        }
    }
}
