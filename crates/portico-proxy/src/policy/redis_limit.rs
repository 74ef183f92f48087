//! Shared rate-limit counters in Redis: one Lua script per request takes one unit from every
//! limit of a policy atomically (all or none), with Redis's own clock, so every instance sees
//! the same counters. GCRA: each key holds a "theoretical arrival time" (TAT, µs); a request is
//! allowed when `max(TAT, now) + T - burst·T <= now`, and moves TAT forward by `T`.
//!
//! The connection is a redis-rs `ConnectionManager` (one multiplexed connection, reconnected in
//! the background). Each call is bounded by `redis.timeout`; a failure flips the store to
//! "down" (logged once, counted) until a call succeeds again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portico_config::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// All limits of one policy, in one atomic step. KEYS: one per limit. ARGV: per limit a kind
/// and two numbers — `0, T, burst` for a token bucket (GCRA: the key holds the theoretical
/// arrival time), `1, window, requests` for a sliding window (a hash: window index, current and
/// previous counts) — then the units wanted (1, or the policy's `batch`).
/// Grants as many units as every limit has, up to the units wanted: `{granted, 0,
/// remaining...}`, or `{0, wait_us, index of the limit that refused}` when not even one is there.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local want = tonumber(ARGV[3 * n + 1])
local state = {}
local grant = want
local wait = 0
local tightest = -1
for i = 1, n do
  local kind = tonumber(ARGV[3 * i - 2])
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  local available
  local w
  if kind == 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    available = math.floor((now + b * a - tat) / a)
    w = tat + a - b * a - now
    state[i] = tat
  else
    local idx = math.floor(now / a)
    local elapsed = now - idx * a
    local h = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
    local widx = tonumber(h[1] or '-1')
    local cur = tonumber(h[2] or '0')
    local prev = tonumber(h[3] or '0')
    if widx == idx - 1 then prev = cur; cur = 0 elseif widx ~= idx then prev = 0; cur = 0 end
    local est = prev * (1 - elapsed / a) + cur
    available = math.floor(b - est)
    if cur + 1 > b then
      w = a - elapsed + math.max(0, a * (1 - (b - 1) / cur))
    elseif prev > 0 then
      w = math.max(1000, a * (1 - (b - 1 - cur) / prev) - elapsed)
    else
      w = 1000
    end
    state[i] = {idx, cur, prev, est}
  end
  if available < grant then grant = available end
  if available < 1 and (tightest < 0 or w > wait) then wait = w; tightest = i - 1 end
end
if grant < 1 then return {0, math.ceil(math.max(wait, 1)), tightest} end
local out = {grant, 0}
for i = 1, n do
  local kind = tonumber(ARGV[3 * i - 2])
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  if kind == 0 then
    local new_tat = state[i] + grant * a
    local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', ttl_ms)
    out[#out + 1] = math.floor((b * a - (new_tat - now)) / a)
  else
    local s = state[i]
    redis.call('HSET', KEYS[i], 'w', string.format('%.0f', s[1]), 'c', s[2] + grant, 'p', s[3])
    redis.call('PEXPIRE', KEYS[i], math.ceil(2 * a / 1000) + 1000)
    out[#out + 1] = math.max(0, math.floor(b - s[4] - grant))
  end
end
return out
"#;

pub struct RedisStore {
    pub settings: RedisSettings,
    conn: Conn,
    script: redis::Script,
    up: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redact(&self.settings.url))
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

enum Conn {
    /// One server: a multiplexed connection, reconnected in the background.
    Single(ConnectionManager),
    /// Redis Cluster: connected on first use (the client follows slot moves and node
    /// failures itself); a failed attempt is retried on the next request.
    Cluster(Box<ClusterConn>),
    /// Through Sentinel: the primary is looked up on first use, and again after any failed
    /// call (a failover moves it).
    Sentinel(Box<SentinelConn>),
}

struct SentinelConn {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    conn: std::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl SentinelConn {
    async fn get(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let c = self.client.lock().await.get_async_connection().await?;
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn forget(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

struct ClusterConn {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
}

pub enum Taken {
    /// `granted` units (at least 1), and what remains per limit after them.
    Allowed { granted: u32, remaining: Vec<u32> },
    /// Refused: wait this long; the index of the limit that refused.
    Limited(Duration, usize),
}

/// Why the Redis client could not be set up (the URLs; no connection is made yet).
#[derive(Debug, thiserror::Error)]
#[error("redis {kind}`{url}`: {source}")]
pub struct RedisSetupError {
    /// `sentinel `, `cluster ` or empty.
    kind: &'static str,
    /// The URL without its password.
    url: String,
    #[source]
    source: redis::RedisError,
}

impl RedisStore {
    /// Builds the store; the connection is made on first use, not here, so a gateway starts
    /// (and fails open or closed) while Redis is down.
    pub fn new(settings: RedisSettings) -> Result<Arc<RedisStore>, RedisSetupError> {
        let failed = |kind: &'static str| {
            let url = redact(&settings.url);
            move |source| RedisSetupError { kind, url, source }
        };
        let connect_timeout = settings.timeout.max(Duration::from_millis(200));
        let conn = if let Some((nodes, master)) = &settings.sentinel {
            let client = redis::sentinel::SentinelClient::build(
                nodes.iter().map(String::as_str).collect(),
                master.clone(),
                None,
                redis::sentinel::SentinelServerType::Master,
            )
            .map_err(failed("sentinel "))?;
            Conn::Sentinel(Box::new(SentinelConn {
                client: tokio::sync::Mutex::new(client),
                conn: std::sync::Mutex::new(None),
            }))
        } else if settings.cluster_nodes.is_empty() {
            let client = redis::Client::open(settings.url.as_str()).map_err(failed(""))?;
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, cfg).map_err(failed(""))?)
        } else {
            let client = redis::cluster::ClusterClient::builder(
                settings.cluster_nodes.iter().map(String::as_str),
            )
            .connection_timeout(connect_timeout)
            .response_timeout(settings.timeout)
            .retries(1)
            .build()
            .map_err(failed("cluster "))?;
            Conn::Cluster(Box::new(ClusterConn {
                client,
                conn: tokio::sync::OnceCell::new(),
            }))
        };
        Ok(Arc::new(RedisStore {
            settings,
            conn,
            script: redis::Script::new(SCRIPT),
            up: AtomicBool::new(true),
        }))
    }

    /// One script call for all `params` (T µs, burst) of a policy and `key`, asking for `want`
    /// units.
    pub async fn take(
        &self,
        policy: &str,
        fingerprint: u64,
        key: &str,
        params: &[(u8, u64, u32)],
        want: u32,
    ) -> Result<Taken, ()> {
        let mut inv = self.script.prepare_invoke();
        for (i, (kind, a, b)) in params.iter().enumerate() {
            // The `{…}` hash tag keeps a key's limits in one Redis Cluster slot.
            inv.key(format!(
                "{}rl:{fingerprint:x}:{{{key}}}:{i}",
                self.settings.key_prefix
            ));
            inv.arg(*kind).arg(*a).arg(*b);
        }
        inv.arg(want.max(1));
        let started = Instant::now();
        let result = tokio::time::timeout(self.settings.timeout, async {
            match &self.conn {
                Conn::Single(c) => inv.invoke_async::<Vec<i64>>(&mut c.clone()).await,
                Conn::Cluster(cc) => {
                    let c = cc
                        .conn
                        .get_or_try_init(|| cc.client.get_async_connection())
                        .await?;
                    inv.invoke_async::<Vec<i64>>(&mut c.clone()).await
                }
                Conn::Sentinel(sc) => {
                    let mut c = sc.get().await?;
                    let r = inv.invoke_async::<Vec<i64>>(&mut c).await;
                    if r.is_err() {
                        sc.forget();
                    }
                    r
                }
            }
        })
        .await;
        if result.is_err()
            && let Conn::Sentinel(sc) = &self.conn
        {
            sc.forget();
        }
        metrics::histogram!("portico_redis_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(Ok(v)) => {
                self.mark_up(policy);
                return Ok(match v.as_slice() {
                    [g, _, rest @ ..] if *g >= 1 => Taken::Allowed {
                        granted: u32::try_from(*g).unwrap_or(1),
                        remaining: rest
                            .iter()
                            .map(|r| (*r).clamp(0, i64::from(u32::MAX)) as u32)
                            .collect(),
                    },
                    [_, wait, rest @ ..] => Taken::Limited(
                        Duration::from_micros((*wait).max(0) as u64),
                        rest.first().map_or(0, |i| (*i).max(0) as usize),
                    ),
                    _ => {
                        self.mark_down(policy, "unexpected script answer".into());
                        return Err(());
                    }
                });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.settings.timeout),
        };
        self.mark_down(policy, error);
        Err(())
    }

    fn mark_up(&self, policy: &str) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::warn!(url = %redact(&self.settings.url), policy, "redis is back: rate limits are shared again");
            metrics::gauge!("portico_redis_up").set(1.0);
        }
    }

    fn mark_down(&self, policy: &str, error: String) {
        metrics::counter!("portico_redis_errors_total").increment(1);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(url = %redact(&self.settings.url), policy, %error, "redis unavailable: rate limits fall back to each policy's on_store_failure");
            metrics::gauge!("portico_redis_up").set(0.0);
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The key prefix every key of this gateway starts with.
    pub fn key_prefix(&self) -> &str {
        &self.settings.key_prefix
    }

    /// Runs a pipeline on the same connection as the limits, within the same timeout (for the
    /// fleet's heartbeats, which are not rate-limit decisions: they do not flip `is_up`).
    pub async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, String> {
        let result = tokio::time::timeout(
            self.settings.timeout.max(Duration::from_millis(500)),
            async {
                match &self.conn {
                    Conn::Single(c) => pipe.query_async::<T>(&mut c.clone()).await,
                    Conn::Cluster(cc) => {
                        let c = cc
                            .conn
                            .get_or_try_init(|| cc.client.get_async_connection())
                            .await?;
                        pipe.query_async::<T>(&mut c.clone()).await
                    }
                    Conn::Sentinel(sc) => {
                        let mut c = sc.get().await?;
                        let r = pipe.query_async::<T>(&mut c).await;
                        if r.is_err() {
                            sc.forget();
                        }
                        r
                    }
                }
            },
        )
        .await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_redis_cannot_read_is_a_typed_error_without_its_password() {
        let settings = RedisSettings {
            url: "redis://user:s3cret@host:notaport/0".into(),
            cluster_nodes: Vec::new(),
            sentinel: None,
            timeout: Duration::from_millis(50),
            key_prefix: "portico:".into(),
            heartbeat_interval: None,
        };
        let e = RedisStore::new(settings).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("redis `redis://…@host:notaport/0`"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the redis error is kept as the source"
        );
    }
}
