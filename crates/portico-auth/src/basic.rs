//! HTTP Basic credentials checked against argon2 or bcrypt hashes.
//!
//! Both hashes are slow on purpose (tens of milliseconds), so a verified user/password pair is
//! remembered for a while under a keyed SHA-256 of the pair. Only successes are remembered:
//! every wrong guess costs the attacker a full hash, and a cache hit needs the right password.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash as Phc, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::Failure;

/// A stored password hash, checked for form when the config loads.
#[derive(Debug, Clone)]
pub enum PasswordHash {
    /// PHC string, `$argon2id$v=19$m=…,t=…,p=…$salt$hash` (also argon2i / argon2d).
    Argon2(String),
    /// Modular crypt, `$2b$12$…` (also `$2a$`, `$2y$`, as written by `htpasswd -B`).
    Bcrypt(String),
}

impl PasswordHash {
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        if s.starts_with("$argon2") {
            let phc = Phc::new(s).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            argon2::Algorithm::try_from(phc.algorithm)
                .map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            argon2::Params::try_from(&phc).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
            if phc.hash.is_none() || phc.salt.is_none() {
                return Err("not a valid argon2 hash: the salt or hash part is missing".into());
            }
            Ok(PasswordHash::Argon2(s.to_owned()))
        } else if s.starts_with("$2") {
            s.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
            Ok(PasswordHash::Bcrypt(s.to_owned()))
        } else {
            Err("passwords are stored as argon2 (`$argon2id$…`) or bcrypt (`$2b$…`) hashes, never in plain text; make one with `portico hash password`".into())
        }
    }

    /// The slow check. Run it off the event loop.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Argon2(s) => Phc::new(s).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password, &h)
                    .is_ok()
            }),
            PasswordHash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }
}

/// An argon2id hash of `password` with the given salt, at argon2's recommended default cost
/// (19 MiB, 2 passes), or at the cheapest legal cost when `cheap` (tests only).
pub fn hash_password(password: &str, salt: &[u8; 16], cheap: bool) -> String {
    let params = if cheap {
        argon2::Params::new(8, 1, 1, None)
    } else {
        Ok(argon2::Params::default())
    }
    .expect("valid argon2 parameters");
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(salt).expect("16 bytes is a valid salt");
    hasher
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing cannot fail with valid parameters")
        .to_string()
}

/// An `Authorization` value for HTTP Basic client authentication as OAuth2 servers expect it
/// (RFC 6749 §2.3.1: id and secret form-encoded, then joined and base64-encoded).
pub fn authorization_value(id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(id), form_encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `application/x-www-form-urlencoded` encoding of one value: unreserved characters as they
/// are, everything else as `%XX`.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits an `Authorization: Basic …` value into user and password.
pub fn parse_authorization(value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let Some(scheme_end) = value.iter().position(|&b| b == b' ') else {
        return Err(Failure::Missing);
    };
    if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Err(Failure::Missing);
    }
    let encoded = value[scheme_end..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| Failure::Malformed)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(Failure::Malformed)?;
    Ok((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// User name → (hash, owner).
#[derive(Debug, Default, Clone)]
pub struct Users {
    users: HashMap<Vec<u8>, (PasswordHash, usize)>,
}

impl Users {
    pub fn insert(&mut self, user: &str, hash: PasswordHash, owner: usize) -> Result<(), usize> {
        if let Some((_, prev)) = self.users.get(user.as_bytes()) {
            return Err(*prev);
        }
        self.users.insert(user.as_bytes().to_vec(), (hash, owner));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The slow path: the user's hash (or, for an unknown user, a decoy of equal cost, so timing
    /// does not tell which user names exist) checked against the password.
    pub fn verify_slow(&self, user: &[u8], password: &[u8]) -> Option<usize> {
        match self.users.get(user) {
            Some((hash, owner)) => hash.verify(password).then_some(*owner),
            None => {
                decoy().verify(password);
                None
            }
        }
    }
}

fn decoy() -> &'static PasswordHash {
    static DECOY: std::sync::OnceLock<PasswordHash> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| PasswordHash::Argon2(hash_password("decoy", &[7; 16], false)))
}

/// Remembers verified user/password pairs for `ttl`, at most `capacity` of them.
#[derive(Debug)]
pub struct VerifiedCache {
    /// Random, drawn when the runtime is built: the cache keys are useless outside it.
    secret: [u8; 32],
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (usize, Instant)>>,
}

impl VerifiedCache {
    pub fn new(secret: [u8; 32], ttl: Duration, capacity: usize) -> VerifiedCache {
        VerifiedCache {
            secret,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user);
        h.update(password);
        h.finalize().into()
    }

    pub fn get(&self, user: &[u8], password: &[u8]) -> Option<usize> {
        let key = self.key(user, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (owner, at) = entries.get(&key)?;
        (at.elapsed() < self.ttl).then_some(*owner)
    }

    pub fn put(&self, user: &[u8], password: &[u8], owner: usize) {
        let key = self.key(user, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: start over rather than grow without bound.
                entries.clear();
            }
        }
        entries.insert(key, (owner, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt_verify() {
        let h = PasswordHash::parse(&hash_password("s3cret", &[1; 16], true)).unwrap();
        assert!(h.verify(b"s3cret"));
        assert!(!h.verify(b"s3creT"));
        // `htpasswd -nbB alice s3cret` style, cost 4.
        let b = bcrypt::hash_with_salt("s3cret", 4, [3; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let h = PasswordHash::parse(&b).unwrap();
        assert!(h.verify(b"s3cret"));
        assert!(!h.verify(b"nope"));
    }

    #[test]
    fn plain_passwords_are_refused() {
        let e = PasswordHash::parse("hunter2").unwrap_err();
        assert!(e.contains("never in plain text"), "{e}");
        assert!(PasswordHash::parse("$argon2id$garbage").is_err());
        assert!(PasswordHash::parse("$2b$xx").is_err());
    }

    #[test]
    fn authorization_header_parsing() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("al:ice:pw")
        );
        let (u, p) = parse_authorization(v.as_bytes()).unwrap();
        assert_eq!((u.as_slice(), p.as_slice()), (&b"al"[..], &b"ice:pw"[..]));
        assert_eq!(parse_authorization(b"Bearer x"), Err(Failure::Missing));
        assert_eq!(parse_authorization(b"Basic !!!"), Err(Failure::Malformed));
        let nocolon = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("x")
        );
        assert_eq!(
            parse_authorization(nocolon.as_bytes()),
            Err(Failure::Malformed)
        );
    }

    #[test]
    fn cache_keeps_successes_only_and_stays_bounded() {
        let c = VerifiedCache::new([9; 32], Duration::from_secs(60), 4);
        assert_eq!(c.get(b"u", b"p"), None);
        c.put(b"u", b"p", 2);
        assert_eq!(c.get(b"u", b"p"), Some(2));
        assert_eq!(c.get(b"u", b"q"), None);
        // The user/password boundary is part of the key: "ab"+"c" is not "a"+"bc".
        c.put(b"ab", b"c", 1);
        assert_eq!(c.get(b"a", b"bc"), None);
        for i in 0..10u8 {
            c.put(&[i], b"p", 0);
        }
        assert!(c.len() <= 4);
    }
}
