//! API keys: the config holds only SHA-256 digests (`sha256:<hex>`); a presented key is hashed
//! and looked up by digest, then compared in constant time.
//!
//! Looking up by digest leaks nothing useful through timing: an attacker who learns how far a
//! lookup got learns about the digest of their guess, not about any stored key.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub type Sha256Digest = [u8; 32];

/// Parses `sha256:<64 hex digits>`.
pub fn parse_digest(s: &str) -> Result<Sha256Digest, String> {
    let Some(hex) = s.strip_prefix("sha256:") else {
        return Err(format!(
            "`{}` is not a key digest; API keys are stored as `sha256:<hex>` (make one with `portico hash api-key`)",
            redact(s)
        ));
    };
    if hex.len() != 64 {
        return Err(format!(
            "a SHA-256 digest has 64 hex digits, this one has {}",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let hi = hex_val(pair[0]);
        let lo = hex_val(pair[1]);
        match (hi, lo) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return Err("the digest has a character that is not a hex digit".into()),
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A short, safe view of a value that may be a secret, for error messages.
fn redact(s: &str) -> String {
    let head: String = s.chars().take(4).collect();
    if s.chars().count() > 4 {
        format!("{head}…")
    } else {
        head
    }
}

pub fn digest(key: &[u8]) -> Sha256Digest {
    Sha256::digest(key).into()
}

/// Whether `key` hashes to `digest`, compared in constant time.
pub fn matches(key: &[u8], digest: &Sha256Digest) -> bool {
    bool::from(self::digest(key).ct_eq(digest))
}

/// `sha256:<hex>` of a key, for putting in the config.
pub fn digest_string(key: &str) -> String {
    format!("sha256:{}", crate::hex(&digest(key.as_bytes())))
}

/// Digest → owner (a consumer index).
#[derive(Debug, Default, Clone)]
pub struct KeyStore {
    keys: HashMap<Sha256Digest, usize>,
}

impl KeyStore {
    /// Adds a key; returns the existing owner if the digest is already taken.
    pub fn insert(&mut self, digest: Sha256Digest, owner: usize) -> Result<(), usize> {
        match self.keys.insert(digest, owner) {
            Some(prev) if prev != owner => {
                self.keys.insert(digest, prev);
                Err(prev)
            }
            _ => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The owner of `key`, if any.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let d = digest(key);
        let (stored, owner) = self.keys.get_key_value(&d)?;
        bool::from(stored.ct_eq(&d)).then_some(*owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_and_find() {
        let s = digest_string("k-123");
        assert!(s.starts_with("sha256:") && s.len() == 71);
        let mut store = KeyStore::default();
        store.insert(parse_digest(&s).unwrap(), 3).unwrap();
        assert_eq!(store.find(b"k-123"), Some(3));
        assert_eq!(store.find(b"k-124"), None);
        assert_eq!(store.insert(parse_digest(&s).unwrap(), 4), Err(3));
        assert_eq!(store.find(b"k-123"), Some(3));
    }

    #[test]
    fn bad_digests_are_explained_without_echoing_the_secret() {
        let e = parse_digest("my-very-secret-key").unwrap_err();
        assert!(e.contains("sha256:") && !e.contains("secret"), "{e}");
        assert!(parse_digest("sha256:abc").unwrap_err().contains("64"));
        let bad = format!("sha256:{}", "g".repeat(64));
        assert!(parse_digest(&bad).unwrap_err().contains("hex"));
        let upper = digest_string("x")
            .to_uppercase()
            .replace("SHA256", "sha256");
        assert!(parse_digest(&upper).is_ok());
    }
}
