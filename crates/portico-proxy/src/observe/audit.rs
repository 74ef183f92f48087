//! The audit trail: an append-only JSON Lines file of what changed the gateway (configs
//! applied and refused, state-changing admin requests), each record chained to the one before
//! by SHA-256 and, with a key, authenticated by HMAC-SHA256, so that an edited, removed or
//! reordered record, or a torn last line, is found by [`verify`] (`portico audit verify`).
//!
//! A record is one line: `{"seq":N,"time":"…","kind":"…",<fields>,"prev":"<hex>","hash":"<hex>"}`
//! (and `,"hmac":"<hex>"` before the closing brace with a key). `hash` is the SHA-256 of the
//! line's bytes up to, not including, `,"hash":`; `prev` is the hash of the record before
//! (64 zeros for the first record of a new trail); `hmac` is HMAC-SHA256 over `hash`'s hex.
//! Records are rare (reloads, admin writes): each is written and flushed by the caller, under
//! a lock, so none is lost in a crash after it returns.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The open trail: the file and where its chain stands.
#[derive(Debug)]
pub struct AuditLog {
    pub path: PathBuf,
    key: Option<Vec<u8>>,
    state: Mutex<Chain>,
}

#[derive(Debug)]
struct Chain {
    file: std::fs::File,
    seq: u64,
    prev: String,
}

impl AuditLog {
    /// Opens (or creates) the trail at `path`, continuing the chain of its last record.
    pub fn open(path: &Path, key: Option<Vec<u8>>) -> std::io::Result<AuditLog> {
        let (seq, prev) = match std::fs::File::open(path) {
            Ok(f) => last_link(std::io::BufReader::new(f))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, GENESIS.to_string()),
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            key,
            state: Mutex::new(Chain { file, seq, prev }),
        })
    }

    /// Whether this trail is the one `path` and `key` describe (a reload keeps it then).
    pub fn is(&self, path: &Path, key: Option<&[u8]>) -> bool {
        self.path == path && self.key.as_deref() == key
    }

    /// Appends a record of `kind` with `fields` (an object's members, in order). A failure to
    /// write is logged and counted, never returned: the change it records has happened.
    pub fn record(&self, kind: &str, fields: &[(&str, Value)]) {
        let Ok(mut chain) = self.state.lock() else {
            return;
        };
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
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit trail");
                metrics::counter!("portico_audit_write_errors_total").increment(1);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trail(key: Option<&[u8]>, n: u64) -> (PathBuf, String) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portico-audit-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path, key.map(<[u8]>::to_vec)).unwrap();
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
        let log = AuditLog::open(&path, None).unwrap();
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
}
