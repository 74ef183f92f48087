//! The fleet: every node that shares a Redis publishes a heartbeat (its id, version, config
//! hash and generation, last reload error, uptime) that expires after three intervals, and
//! reads everyone's to say which nodes run a config other than the fleet's newest (drift).
//!
//! The heartbeats are one key per node, `<prefix>{fleet}:node:<id>` with a TTL, and a set of
//! ids, `<prefix>{fleet}:nodes`: the `{fleet}` hash tag keeps them in one Redis Cluster slot,
//! so the set and every node's key are read in one pipeline.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::policy::redis_limit::RedisStore;

/// One node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub id: String,
    pub version: String,
    pub config_hash: String,
    pub config_source: String,
    pub generation: u64,
    /// When the node applied its config (RFC 3339).
    pub loaded_at: String,
    /// Unix time of `loaded_at`, in milliseconds (to find the newest).
    pub loaded_at_ms: u64,
    pub started_at: String,
    pub uptime_s: u64,
    pub last_reload_error: Option<String>,
    pub admin: Option<String>,
}

/// What `GET /cluster` shows: every live node, the newest config, and who differs from it.
#[derive(Debug, Serialize)]
pub struct FleetView {
    /// The config hash of the node that applied its config last.
    pub newest_hash: Option<String>,
    pub nodes: Vec<NodeView>,
    /// How many nodes run another config than `newest_hash`.
    pub drifted: usize,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Runs another config than the fleet's newest.
    pub drift: bool,
}

fn set_key(store: &RedisStore) -> String {
    format!("{}{{fleet}}:nodes", store.key_prefix())
}

fn node_key(store: &RedisStore, id: &str) -> String {
    format!("{}{{fleet}}:node:{id}", store.key_prefix())
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This machine's host name (`portico` when it has none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "portico".into())
}

/// This node's default id: its host name and its start time (milliseconds), and a count
/// after the first gateway of a process (tests and embedders run several).
pub fn default_node_id(started: SystemTime) -> String {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let host = host_name();
    match n {
        0 => format!("{host}-{}", unix_ms(started)),
        n => format!("{host}-{}-{}", unix_ms(started), n + 1),
    }
}

/// Publishes `hb`, alive for `ttl`.
pub async fn publish(store: &RedisStore, hb: &Heartbeat, ttl: Duration) -> Result<(), String> {
    let json = serde_json::to_string(hb).map_err(|e| e.to_string())?;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(node_key(store, &hb.id))
        .arg(json)
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(set_key(store))
        .arg(&hb.id)
        .ignore();
    store.run::<()>(&pipe).await
}

/// Removes this node's heartbeat (at shutdown), so it leaves the fleet at once.
pub async fn withdraw(store: &RedisStore, id: &str) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.cmd("DEL")
        .arg(node_key(store, id))
        .ignore()
        .cmd("SREM")
        .arg(set_key(store))
        .arg(id)
        .ignore();
    store.run::<()>(&pipe).await
}

/// Every live node's heartbeat, and the drift among them. Ids whose heartbeat expired are
/// removed from the set.
pub async fn view(store: &RedisStore) -> Result<FleetView, String> {
    let mut pipe = redis::pipe();
    pipe.cmd("SMEMBERS").arg(set_key(store));
    let (ids,): (Vec<String>,) = store.run(&pipe).await?;
    let mut nodes = Vec::new();
    if !ids.is_empty() {
        let mut pipe = redis::pipe();
        let mut mget = redis::cmd("MGET");
        for id in &ids {
            mget.arg(node_key(store, id));
        }
        pipe.add_command(mget);
        let (values,): (Vec<Option<String>>,) = store.run(&pipe).await?;
        let mut gone = Vec::new();
        for (id, v) in ids.iter().zip(values) {
            match v.and_then(|v| serde_json::from_str::<Heartbeat>(&v).ok()) {
                Some(hb) => nodes.push(hb),
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("SREM").arg(set_key(store)).arg(gone).ignore();
            let _ = store.run::<()>(&pipe).await;
        }
    }
    Ok(drift(nodes))
}

/// Marks every node whose config differs from the one applied last in the fleet.
pub fn drift(mut nodes: Vec<Heartbeat>) -> FleetView {
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let newest_hash = nodes
        .iter()
        .max_by_key(|n| (n.loaded_at_ms, n.generation))
        .map(|n| n.config_hash.clone());
    let nodes: Vec<NodeView> = nodes
        .into_iter()
        .map(|hb| NodeView {
            drift: newest_hash.as_deref() != Some(hb.config_hash.as_str()),
            heartbeat: hb,
        })
        .collect();
    FleetView {
        drifted: nodes.iter().filter(|n| n.drift).count(),
        newest_hash,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(id: &str, hash: &str, loaded_at_ms: u64) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            version: "0".into(),
            config_hash: hash.into(),
            config_source: "f".into(),
            generation: 1,
            loaded_at: String::new(),
            loaded_at_ms,
            started_at: String::new(),
            uptime_s: 0,
            last_reload_error: None,
            admin: None,
        }
    }

    #[test]
    fn the_newest_config_decides_who_drifted() {
        let v = drift(vec![
            hb("b", "h1", 10),
            hb("a", "h1", 20),
            hb("c", "h2", 30),
        ]);
        assert_eq!(v.newest_hash.as_deref(), Some("h2"));
        assert_eq!(v.drifted, 2);
        let ids: Vec<(&str, bool)> = v
            .nodes
            .iter()
            .map(|n| (n.heartbeat.id.as_str(), n.drift))
            .collect();
        assert_eq!(ids, [("a", true), ("b", true), ("c", false)]);
        assert_eq!(drift(vec![]).drifted, 0);
        assert_eq!(drift(vec![hb("a", "h", 1), hb("b", "h", 2)]).drifted, 0);
    }
}
