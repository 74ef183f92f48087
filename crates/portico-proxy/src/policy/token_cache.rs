//! Tokens already verified (JWT) or asked about (introspection), so the same token is not
//! verified again on every request.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use portico_auth::jwt;

/// What a verified token granted, remembered so the same token is not verified again.
#[derive(Debug, Clone)]
pub(crate) struct Granted {
    /// `false`: a refused token (introspection said inactive, or a claim rule failed).
    pub(crate) active: bool,
    pub(crate) claims: Option<Arc<jwt::Claims>>,
    pub(crate) consumer: Option<usize>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) scopes: Vec<String>,
    /// Seconds since the epoch after which the entry is void: the token's `exp`, or five
    /// minutes after verification, whichever is first (so a key withdrawn from a JWKS stops
    /// working within five minutes).
    pub(crate) until: u64,
}

/// Verified tokens of one `jwt` or `introspection` policy. An entry is found by a hash of the token's last 64
/// bytes (its signature, unique per token), then compared on the whole token text: a key
/// derived from part of it alone would let a changed payload reuse a verification. Hashing the
/// whole 700-byte token of a typical request cost ~1.3k instructions per request. Two tokens
/// whose tails hash alike share a slot; the later one replaces the earlier (a cache miss,
/// never a wrong hit).
#[derive(Debug)]
pub struct TokenCache {
    pub(crate) capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    entries: std::sync::Mutex<Slots>,
}

/// Cached verifications by slot. The slot is already a keyed hash, so the map does not hash it
/// again.
type Slots = std::collections::HashMap<
    u64,
    (Box<str>, Granted),
    std::hash::BuildHasherDefault<crate::observe::metrics::KeyHasher>,
>;

/// Longest a verified token is trusted without verifying it again.
pub(crate) const TOKEN_CACHE_TTL: u64 = 300;

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            hasher: std::collections::hash_map::RandomState::new(),
            entries: std::sync::Mutex::new(std::collections::HashMap::default()),
        }
    }

    fn slot(&self, token: &str) -> u64 {
        use std::hash::BuildHasher;
        let b = token.as_bytes();
        self.hasher.hash_one(&b[b.len().saturating_sub(64)..])
    }

    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Granted> {
        let slot = self.slot(token);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&slot)
            .filter(|(t, g)| **t == *token && now < g.until)
            .map(|(_, g)| g.clone())
    }

    pub(crate) fn put(&self, token: &str, g: Granted, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let slot = self.slot(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, v)| now < v.until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(slot, (token.into(), g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(consumer: usize, until: u64) -> Granted {
        Granted {
            active: true,
            claims: None,
            consumer: Some(consumer),
            headers: Vec::new(),
            scopes: Vec::new(),
            until,
        }
    }

    /// Tokens that share their last 64 bytes share a slot, but never each other's grant.
    #[test]
    fn token_cache_compares_whole_tokens() {
        let cache = TokenCache::new(10);
        let tail = "s".repeat(64);
        let a = format!("header.payload-a.{tail}");
        let b = format!("header.payload-b.{tail}");
        cache.put(&a, granted(1, 100), 0);
        assert_eq!(cache.get(&a, 50).and_then(|g| g.consumer), Some(1));
        assert!(
            cache.get(&b, 50).is_none(),
            "a changed payload is not a hit"
        );
        assert!(cache.get(&a, 100).is_none(), "expired");
        cache.put(&b, granted(2, 100), 0);
        assert_eq!(cache.get(&b, 50).and_then(|g| g.consumer), Some(2));
        assert!(cache.get(&a, 50).is_none(), "replaced in its slot");
        // Short tokens hash whole.
        cache.put("abc", granted(3, 100), 0);
        assert_eq!(cache.get("abc", 1).and_then(|g| g.consumer), Some(3));
        assert!(cache.get("abd", 1).is_none());
    }
}
