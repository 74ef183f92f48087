//! The audit trail: an append-only JSON Lines file of what changed the gateway (configs
//! applied and refused, state-changing admin requests), each record chained to the one before
//! by SHA-256 and, with a key, authenticated by HMAC-SHA256, so that an edited, removed or
//! reordered record, or a torn last line, is found by [`verify`] (`portico audit verify`).
//!
//! A record is one line: `{"seq":N,"time":"…","kind":"…",<fields>,"prev":"<hex>","hash":"<hex>"}`
//! (and `,"hmac":"<hex>"` before the closing brace with a key). `hash` is the SHA-256 of the
//! line's bytes up to, not including, `,"hash":`; `prev` is the hash of the record before
//! (64 zeros for the first record of a new trail); `hmac` is HMAC-SHA256 over `hash`'s hex.
//! Records are rare (reloads, admin writes, one summary per interval): each is written and
//! flushed by the caller, under a lock, so none is lost in a crash after it returns.
//!
//! With `max_bytes` the trail rotates itself: the file is renamed to `<path>.1` (older ones
//! shift up to `<path>.<keep>`, the oldest is removed) and the chain goes on in a new file whose
//! first record, `continued`, names the file before it; its `prev` is that file's last hash, so
//! `verify_files` checks a trail across its files. Refusals (401, 403, 429) are counted by
//! consumer, reason and status as requests end, and written as one `security_summary` per
//! interval with key-set changes and a `checkpoint`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// At most this many (consumer, reason, status) counts are kept per summary interval; the
/// refusals beyond them are counted together (a flood of made-up consumers stays bounded).
const MAX_REFUSAL_KEYS: usize = 1000;

/// A refusal's consumer (`None`: none identified), reason and status. The consumer is the
/// request's own shared name: counting a refusal clones a pointer, it allocates nothing.
type RefusalKey = (Option<Arc<str>>, &'static str, u16);

/// The open trail: the file and where its chain stands.
#[derive(Debug)]
pub struct AuditLog {
    pub path: PathBuf,
    key: Option<Vec<u8>>,
    /// `audit.summary_interval` in milliseconds; 0 for none.
    summary_ms: std::sync::atomic::AtomicU64,
    state: Mutex<Chain>,
    /// Refusals since the last summary, by (consumer, reason, status), and those beyond
    /// `MAX_REFUSAL_KEYS`.
    refusals: Mutex<(HashMap<RefusalKey, u64>, u64)>,
    /// The key ids of each key set (by URL) at the last summary.
    key_sets: Mutex<HashMap<String, Vec<String>>>,
}

#[derive(Debug)]
struct Chain {
    file: std::fs::File,
    seq: u64,
    prev: String,
    /// The file's size, for rotation.
    size: u64,
    /// Rotate at this size (`None`: never), keeping this many rotated files: settings a
    /// reload may change without reopening the trail.
    max_bytes: Option<u64>,
    keep: u32,
}

impl AuditLog {
    /// Opens (or creates) the trail `settings` name, continuing the chain of its last record
    /// (or, when the file is missing or empty after a rotation, of the newest rotated file).
    pub fn open(settings: &portico_config::Audit) -> std::io::Result<AuditLog> {
        let path = &settings.path;
        let mut link = None;
        for candidate in [path.clone(), rotated(path, 1)] {
            match std::fs::File::open(&candidate) {
                Ok(f) => {
                    let found = last_link(std::io::BufReader::new(f))?;
                    if found.0 > 0 {
                        link = Some(found);
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let (seq, prev) = link.unwrap_or((0, GENESIS.to_string()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(AuditLog {
            path: path.clone(),
            key: settings.hmac_key.clone(),
            summary_ms: std::sync::atomic::AtomicU64::new(summary_ms(settings)),
            state: Mutex::new(Chain {
                file,
                seq,
                prev,
                size,
                max_bytes: settings.max_bytes,
                keep: settings.keep.max(1),
            }),
            refusals: Mutex::new((HashMap::new(), 0)),
            key_sets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether this trail is the one `settings` describe: the same file and key (a reload
    /// keeps it then, with [`AuditLog::update`] for the rest).
    pub fn is(&self, settings: &portico_config::Audit) -> bool {
        self.path == settings.path && self.key == settings.hmac_key
    }

    /// Takes a reload's rotation and summary settings, keeping the open file, its chain and
    /// the refusals counted so far.
    pub fn update(&self, settings: &portico_config::Audit) {
        if let Ok(mut chain) = self.state.lock() {
            chain.max_bytes = settings.max_bytes;
            chain.keep = settings.keep.max(1);
        }
        self.summary_ms
            .store(summary_ms(settings), std::sync::atomic::Ordering::Relaxed);
    }

    /// How often a security summary is written (`None`: never).
    pub fn summary_interval(&self) -> Option<std::time::Duration> {
        match self.summary_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        }
    }

    /// Counts a refused request (401, 403, 429) for the next security summary.
    pub fn count_refusal(&self, consumer: Option<&Arc<str>>, reason: &'static str, status: u16) {
        let Ok(mut r) = self.refusals.lock() else {
            return;
        };
        let (counts, others) = &mut *r;
        let key = (consumer.cloned(), reason, status);
        if let Some(n) = counts.get_mut(&key) {
            *n += 1;
        } else if counts.len() < MAX_REFUSAL_KEYS {
            counts.insert(key, 1);
        } else {
            *others += 1;
        }
    }

    /// Writes what happened since the last summary: refusals by consumer, reason and status
    /// (a `security_summary`, when there were any), each key set whose key ids changed
    /// (`key_set_changed`, with the ids added and removed; a set seen for the first time is
    /// recorded too), and a `checkpoint`.
    pub fn summarize(&self, key_sets: &[(String, Vec<String>)]) {
        let (counts, others) = match self.refusals.lock() {
            Ok(mut r) => (std::mem::take(&mut r.0), std::mem::take(&mut r.1)),
            Err(_) => (HashMap::new(), 0),
        };
        if !counts.is_empty() || others > 0 {
            let mut list: Vec<_> = counts.into_iter().collect();
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let total: u64 = list.iter().map(|(_, n)| n).sum::<u64>() + others;
            let refusals: Vec<Value> = list
                .iter()
                .map(|((consumer, reason, status), n)| {
                    serde_json::json!({
                        "consumer": consumer.as_deref(),
                        "reason": reason,
                        "status": status,
                        "count": n,
                    })
                })
                .collect();
            self.record(
                "security_summary",
                &[
                    ("refused", total.into()),
                    ("refusals", Value::Array(refusals)),
                    ("other_refusals", others.into()),
                ],
            );
        }
        if let Ok(mut seen) = self.key_sets.lock() {
            for (url, kids) in key_sets {
                let before = seen.get(url);
                if before == Some(kids) {
                    continue;
                }
                let old: &[String] = before.map_or(&[], Vec::as_slice);
                let added: Vec<&String> = kids.iter().filter(|k| !old.contains(k)).collect();
                let removed: Vec<&String> = old.iter().filter(|k| !kids.contains(k)).collect();
                self.record(
                    "key_set_changed",
                    &[
                        ("url", url.as_str().into()),
                        ("first_seen", before.is_none().into()),
                        ("key_ids", serde_json::json!(kids)),
                        ("added", serde_json::json!(added)),
                        ("removed", serde_json::json!(removed)),
                    ],
                );
                seen.insert(url.clone(), kids.clone());
            }
        }
        let seq = self.state.lock().map(|c| c.seq).unwrap_or(0);
        self.record("checkpoint", &[("records_before", seq.into())]);
    }

    /// Appends a record of `kind` with `fields` (an object's members, in order), then rotates
    /// the file when it has reached `max_bytes`, all under the chain's lock (so two writers
    /// never rotate one file twice). A failure to write is logged and counted, never
    /// returned: the change it records has happened.
    pub fn record(&self, kind: &str, fields: &[(&str, Value)]) {
        let Ok(mut chain) = self.state.lock() else {
            return;
        };
        if self.append(&mut chain, kind, fields)
            && chain.max_bytes.is_some_and(|max| chain.size >= max)
        {
            self.rotate(&mut chain);
        }
    }

    /// Writes one record at the end of the chain; whether it was written.
    fn append(&self, chain: &mut Chain, kind: &str, fields: &[(&str, Value)]) -> bool {
        let seq = chain.seq + 1;
        let mut body = format!(
            "{{\"seq\":{seq},\"time\":\"{}\",\"kind\":{}",
            crate::observe::access_log::rfc3339(std::time::SystemTime::now()),
            Value::from(kind)
        );
        for (k, v) in fields {
            body.push(',');
            body.push_str(&Value::from(*k).to_string());
            body.push(':');
            body.push_str(&v.to_string());
        }
        body.push_str(",\"prev\":\"");
        body.push_str(&chain.prev);
        body.push('"');
        let hash = hex(&Sha256::digest(body.as_bytes()));
        let mut line = body;
        line.push_str(",\"hash\":\"");
        line.push_str(&hash);
        line.push('"');
        if let Some(key) = &self.key {
            line.push_str(",\"hmac\":\"");
            line.push_str(&hmac_hex(key, &hash));
            line.push('"');
        }
        line.push_str("}\n");
        let written = chain
            .file
            .write_all(line.as_bytes())
            .and_then(|()| chain.file.flush());
        match written {
            Ok(()) => {
                chain.seq = seq;
                chain.prev = hash;
                chain.size += line.len() as u64;
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit trail");
                metrics::counter!("portico_audit_write_errors_total").increment(1);
                false
            }
        }
    }

    /// Moves the file to `<path>.1` (shifting the older ones up, dropping the oldest) and
    /// goes on in a new file, whose first record names the one before.
    fn rotate(&self, chain: &mut Chain) {
        let keep = chain.keep.max(1);
        let _ = std::fs::remove_file(rotated(&self.path, keep));
        for i in (1..keep).rev() {
            let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        let moved = std::fs::rename(&self.path, rotated(&self.path, 1)).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        });
        match moved {
            Ok(f) => {
                chain.file = f;
                chain.size = 0;
            }
            Err(e) => {
                // The chain goes on in the file that could not be moved.
                tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit trail");
                metrics::counter!("portico_audit_write_errors_total").increment(1);
                return;
            }
        }
        let from = rotated(&self.path, 1).display().to_string();
        self.append(chain, "continued", &[("from", from.into())]);
    }
}

/// `audit.summary_interval` in milliseconds, 0 for none.
fn summary_ms(settings: &portico_config::Audit) -> u64 {
    settings.summary_interval.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// `<path>.<n>`: a rotated file.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// The sequence number and hash of the last complete record of a trail.
fn last_link(r: impl BufRead) -> std::io::Result<(u64, String)> {
    let mut last = (0, GENESIS.to_string());
    for line in r.lines() {
        let line = line?;
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && let (Some(seq), Some(hash)) = (v["seq"].as_u64(), v["hash"].as_str())
        {
            last = (seq, hash.to_string());
        }
    }
    Ok(last)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    crate::observe::trace::write_hex(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn hmac_hex(key: &[u8], hash_hex: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(hash_hex.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// What a trail that verified holds.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// The first record's `prev`: zeros for a trail that starts a chain, else the hash that
    /// ends the file before it (a rotated trail).
    pub first_prev: String,
    pub last_seq: u64,
    pub last_hash: String,
}

/// Why a trail does not verify: the line (from 1) and what is wrong there.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct Broken {
    pub line: usize,
    pub what: String,
}

/// Checks every record of a trail: each line whole, its hash its own, its `prev` the hash of
/// the line before, its `seq` one more, and, with `key`, its HMAC.
pub fn verify(text: &str, key: Option<&[u8]>) -> Result<Verified, Broken> {
    let mut out: Option<Verified> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        let broken = |what: String| Broken { line: n, what };
        let Some(line) = line.strip_suffix('\n') else {
            return Err(broken(
                "the last record is cut off (no line end): the file was truncated or a write was torn".into(),
            ));
        };
        let v: Value = serde_json::from_str(line)
            .map_err(|e| broken(format!("not a JSON record ({e}): edited or truncated")))?;
        let Some(at) = line.find(",\"hash\":\"") else {
            return Err(broken("the record has no hash".into()));
        };
        let (Some(seq), Some(prev), Some(hash)) =
            (v["seq"].as_u64(), v["prev"].as_str(), v["hash"].as_str())
        else {
            return Err(broken("the record lacks `seq`, `prev` or `hash`".into()));
        };
        if hex(&Sha256::digest(&line.as_bytes()[..at])) != hash {
            return Err(broken(
                "the record was edited: its hash does not match its contents".into(),
            ));
        }
        if let Some(key) = key {
            match v["hmac"].as_str() {
                Some(m) if m == hmac_hex(key, hash) => {}
                Some(_) => {
                    return Err(broken(
                        "the HMAC does not match: the record was rewritten without the key, or the key is not this trail's".into(),
                    ));
                }
                None => return Err(broken("the record has no HMAC".into())),
            }
        }
        match &mut out {
            None => {
                out = Some(Verified {
                    records: 1,
                    first_prev: prev.to_string(),
                    last_seq: seq,
                    last_hash: hash.to_string(),
                });
            }
            Some(o) => {
                if prev != o.last_hash {
                    return Err(broken(format!(
                        "`prev` is not the hash of the record before (seq {}): a record was removed, inserted or moved",
                        o.last_seq
                    )));
                }
                if seq != o.last_seq + 1 {
                    return Err(broken(format!(
                        "seq {seq} follows seq {}: a record was removed or moved",
                        o.last_seq
                    )));
                }
                o.records += 1;
                o.last_seq = seq;
                o.last_hash = hash.to_string();
            }
        }
    }
    out.ok_or(Broken {
        line: 0,
        what: "the trail is empty".into(),
    })
}

/// [`verify`] on a file.
pub fn verify_file(path: &Path, key: Option<&[u8]>) -> Result<Verified, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    verify(&text, key).map_err(|b| format!("{}:{}: {}", path.display(), b.line, b.what))
}

/// [`verify_file`] on the files of one trail, oldest first (`audit.jsonl.2 audit.jsonl.1
/// audit.jsonl`): each must also continue the one before it, its first record linked to the
/// other's last and numbered next. Returns what the whole verifies as.
pub fn verify_files(paths: &[PathBuf], key: Option<&[u8]>) -> Result<Verified, String> {
    let mut whole: Option<Verified> = None;
    for p in paths {
        let v = verify_file(p, key)?;
        whole = Some(match whole {
            None => v,
            Some(before) => {
                if v.first_prev != before.last_hash {
                    return Err(format!(
                        "{}:1: does not continue the file before it (its first record follows another hash than seq {}'s): a file is missing, or they are out of order",
                        p.display(),
                        before.last_seq
                    ));
                }
                if v.last_seq != before.last_seq + v.records {
                    return Err(format!(
                        "{}:1: its records are not numbered on from seq {}",
                        p.display(),
                        before.last_seq
                    ));
                }
                Verified {
                    records: before.records + v.records,
                    first_prev: before.first_prev,
                    last_seq: v.last_seq,
                    last_hash: v.last_hash,
                }
            }
        });
    }
    whole.ok_or_else(|| "no file given".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(path: &Path, key: Option<&[u8]>) -> portico_config::Audit {
        portico_config::Audit {
            path: path.to_path_buf(),
            hmac_key: key.map(<[u8]>::to_vec),
            max_bytes: None,
            keep: 5,
            summary_interval: None,
        }
    }

    fn fresh_path() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portico-audit-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("audit.jsonl")
    }

    fn trail(key: Option<&[u8]>, n: u64) -> (PathBuf, String) {
        let path = fresh_path();
        let log = AuditLog::open(&settings(&path, key)).unwrap();
        for i in 0..n {
            log.record(
                "config_applied",
                &[
                    ("source", json!("file_watch")),
                    ("generation", json!(i + 2)),
                    ("note", json!("quote \" and ,\"hash\":\" inside")),
                ],
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    #[test]
    fn a_trail_verifies_and_continues_its_chain_when_reopened() {
        let (path, text) = trail(None, 3);
        let v = verify(&text, None).unwrap();
        assert_eq!((v.records, v.last_seq), (3, 3));
        assert_eq!(v.first_prev, GENESIS);
        // Reopened (a restart): the chain goes on.
        let log = AuditLog::open(&settings(&path, None)).unwrap();
        log.record("start", &[]);
        let text = std::fs::read_to_string(&path).unwrap();
        let v = verify(&text, None).unwrap();
        assert_eq!((v.records, v.last_seq), (4, 4));
    }

    #[test]
    fn every_kind_of_tampering_is_found_and_located() {
        let key = b"audit-key";
        let (_, text) = trail(Some(key), 5);
        assert!(verify(&text, Some(key)).is_ok());
        let lines: Vec<&str> = text.lines().collect();
        let join = |l: &[&str]| l.iter().map(|s| format!("{s}\n")).collect::<String>();
        // An edited value.
        let edited = text.replacen("file_watch", "admin_api", 1);
        assert_eq!(verify(&edited, Some(key)).unwrap_err().line, 1);
        // A record removed, two swapped.
        let removed = join(&[lines[0], lines[1], lines[3], lines[4]]);
        let e = verify(&removed, Some(key)).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let swapped = join(&[lines[0], lines[2], lines[1], lines[3], lines[4]]);
        assert_eq!(verify(&swapped, Some(key)).unwrap_err().line, 2);
        // A torn last line, and a cut mid-record.
        let torn = &text[..text.len() - 1];
        assert_eq!(verify(torn, Some(key)).unwrap_err().line, 5);
        let cut = &text[..text.len() - 20];
        assert_eq!(verify(cut, Some(key)).unwrap_err().line, 5);
        // A record rewritten with a fresh hash but without the key: the HMAC gives it away.
        let forged = {
            let body_end = lines[4].find(",\"hash\":\"").unwrap();
            let body = lines[4][..body_end].replace("file_watch", "forged");
            let hash = hex(&Sha256::digest(body.as_bytes()));
            let line = format!(
                "{body},\"hash\":\"{hash}\",\"hmac\":\"{}\"}}",
                "0".repeat(64)
            );
            join(&[lines[0], lines[1], lines[2], lines[3], &line])
        };
        let e = verify(&forged, Some(key)).unwrap_err();
        assert!(e.what.contains("HMAC"), "{e}");
        assert_eq!(e.line, 5);
        // Without the key the forgery is a valid last record: the key is what protects it.
        assert!(verify(&forged, None).is_ok());
        // The wrong key.
        assert!(verify(&text, Some(b"other")).is_err());
        assert_eq!(verify("", None).unwrap_err().line, 0);
    }

    #[test]
    fn a_trail_rotates_itself_and_verifies_across_its_files() {
        let path = fresh_path();
        let key = b"0123456789abcdef";
        let mut cfg = settings(&path, Some(key));
        cfg.max_bytes = Some(4096);
        cfg.keep = 2;
        let log = AuditLog::open(&cfg).unwrap();
        for i in 0..60 {
            log.record("admin", &[("n", json!(i)), ("pad", json!("x".repeat(100)))]);
        }
        let files = [rotated(&path, 2), rotated(&path, 1), path.clone()];
        // Two rotated files kept; older ones removed.
        assert!(files.iter().all(|f| f.exists()));
        assert!(!rotated(&path, 3).exists());
        for f in &files[..2] {
            let size = std::fs::metadata(f).unwrap().len();
            assert!(
                (4096..4096 + 400).contains(&size),
                "{}: {size}",
                f.display()
            );
        }
        let whole = verify_files(&files, Some(key)).unwrap();
        assert_eq!(whole.last_seq, log.state.lock().unwrap().seq);
        // The newest file starts with where it came from.
        let first = std::fs::read_to_string(&path).unwrap();
        let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "continued");
        assert!(first["from"].as_str().unwrap().ends_with("audit.jsonl.1"));
        // Out of order, or with a file missing: said, with the file.
        let e = verify_files(&[files[1].clone(), files[0].clone()], Some(key)).unwrap_err();
        assert!(e.contains("does not continue the file before it"), "{e}");
        let e = verify_files(&[files[0].clone(), files[2].clone()], Some(key)).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        // Reopened after a rotation (a restart), the chain goes on from the files.
        drop(log);
        let log = AuditLog::open(&cfg).unwrap();
        log.record("start", &[]);
        assert!(verify_files(&files, Some(key)).is_ok());
    }

    #[test]
    fn the_summary_counts_refusals_and_key_set_changes_then_checkpoints() {
        let path = fresh_path();
        let log = AuditLog::open(&settings(&path, None)).unwrap();
        for _ in 0..3 {
            log.count_refusal(Some(&Arc::from("acme")), "rate_limited", 429);
        }
        log.count_refusal(None, "missing_credentials", 401);
        let set = |kids: &[&str]| {
            vec![(
                "https://idp/jwks".to_string(),
                kids.iter().map(|k| k.to_string()).collect(),
            )]
        };
        log.summarize(&set(&["k1"]));
        // Nothing refused and nothing changed: only a checkpoint.
        log.summarize(&set(&["k1"]));
        log.summarize(&set(&["k1", "k2"]));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(verify(&text, None).is_ok());
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = records
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "security_summary",
                "key_set_changed",
                "checkpoint",
                "checkpoint",
                "key_set_changed",
                "checkpoint"
            ]
        );
        assert_eq!(records[0]["refused"], 4);
        assert_eq!(
            records[0]["refusals"][0],
            json!({"consumer": "acme", "reason": "rate_limited", "status": 429, "count": 3})
        );
        assert_eq!(records[0]["refusals"][1]["consumer"], Value::Null);
        assert_eq!(records[1]["first_seen"], true);
        assert_eq!(records[4]["added"], json!(["k2"]));
        assert_eq!(records[4]["removed"], json!([]));
        assert_eq!(records[2]["records_before"], 2);
    }

    #[test]
    fn refusal_counts_stay_bounded_under_made_up_consumers() {
        let path = fresh_path();
        let log = AuditLog::open(&settings(&path, None)).unwrap();
        for i in 0..(MAX_REFUSAL_KEYS + 50) {
            log.count_refusal(Some(&Arc::from(format!("c{i}"))), "bad_credentials", 401);
        }
        log.summarize(&[]);
        let text = std::fs::read_to_string(&path).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first["refusals"].as_array().unwrap().len(),
            MAX_REFUSAL_KEYS
        );
        assert_eq!(first["other_refusals"], 50);
        assert_eq!(first["refused"], MAX_REFUSAL_KEYS as u64 + 50);
    }

    #[test]
    fn writers_at_the_size_limit_rotate_once() {
        let path = fresh_path();
        let mut cfg = settings(&path, None);
        cfg.max_bytes = Some(4096);
        cfg.keep = 50;
        let log = std::sync::Arc::new(AuditLog::open(&cfg).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..60 {
                        log.record(
                            "admin",
                            &[
                                ("t", json!(t)),
                                ("n", json!(i)),
                                ("pad", json!("y".repeat(60))),
                            ],
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut files: Vec<PathBuf> = (1..=50)
            .rev()
            .map(|n| rotated(&path, n))
            .filter(|f| f.exists())
            .collect();
        files.push(path.clone());
        assert!(files.len() > 3, "{files:?}");
        // No empty file, and the whole chain verifies across the files.
        let whole = verify_files(&files, None).unwrap();
        assert_eq!(whole.last_seq, log.state.lock().unwrap().seq);
    }
}
