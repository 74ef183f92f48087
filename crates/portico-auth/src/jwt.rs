//! JWT verification: issuer choice, `alg` pinning, key choice by `kid`, signature and time
//! checks (jsonwebtoken on aws-lc-rs), then the policy's own claim rules.

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

pub use jsonwebtoken::Algorithm;

use crate::Failure;

pub type Claims = Map<String, Value>;

/// A verification key and what it may verify.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    key: DecodingKey,
    family: AlgorithmFamily,
    /// The JWK's `alg`, when it names one: the key then verifies only that algorithm.
    alg: Option<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A shared secret for the HS algorithms.
    pub fn secret(kid: Option<String>, secret: &[u8]) -> Key {
        Key {
            kid,
            key: DecodingKey::from_secret(secret),
            family: AlgorithmFamily::Hmac,
            alg: None,
        }
    }

    /// A PEM public key (or certificate) of whichever type it holds (RSA, EC or Ed25519).
    pub fn pem_any(kid: Option<String>, pem: &[u8]) -> Result<Key, String> {
        let (key, family) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (key, AlgorithmFamily::Rsa),
            Err(e) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (key, AlgorithmFamily::Ec),
                Err(_) => match DecodingKey::from_ed_pem(pem) {
                    Ok(key) => (key, AlgorithmFamily::Ed),
                    Err(_) => {
                        return Err(format!(
                            "not an RSA, EC or Ed25519 public key in PEM form: {e}"
                        ));
                    }
                },
            },
        };
        Ok(Key {
            kid,
            key,
            family,
            alg: None,
        })
    }

    /// The kind of key this is, which decides the algorithms it can verify.
    pub fn family(&self) -> AlgorithmFamily {
        self.family
    }

    /// A PEM public key (or certificate) for `family`.
    pub fn pem(kid: Option<String>, family: AlgorithmFamily, pem: &[u8]) -> Result<Key, String> {
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => return Err("HMAC keys are secrets, not PEM files".into()),
        }
        .map_err(|e| format!("not a {family:?} public key in PEM form: {e}"))?;
        Ok(Key {
            kid,
            key,
            family,
            alg: None,
        })
    }

    fn from_jwk(jwk: &Jwk) -> Option<Key> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // A key set published over HTTP holds public keys; a shared secret there would let
            // anyone who reads the set mint tokens.
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => Some(Algorithm::from_str(&a.to_string()).ok()?),
            None => None,
        };
        Some(Key {
            kid: jwk.common.key_id.clone(),
            key: DecodingKey::from_jwk(jwk).ok()?,
            family,
            alg,
        })
    }

    fn fits(&self, alg: Algorithm) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys of one issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Reads a JWKS document (RFC 7517). Keys this gateway cannot use (encryption keys, shared
    /// secrets, unknown types) are skipped; a document with no usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let keys: Vec<Key> = doc
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|j| Key::from_jwk(&j))
            .collect();
        if keys.is_empty() {
            return Err("the key set has no usable signing key".into());
        }
        Ok(KeySet { keys })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum IssuerKeys {
    Static(Arc<KeySet>),
    /// A JWKS URL, fetched by the proxy; this is its slot.
    Jwks(usize),
}

/// A rule on one claim: its value (or one element, for arrays; or one word, for the
/// space-separated `scope`/`scp` strings) must be one of `accepted`.
#[derive(Debug, Clone)]
pub struct ClaimRule {
    pub claim: String,
    pub accepted: Vec<String>,
}

/// One trusted token issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The `iss` value; `None` accepts tokens without checking `iss` (one issuer only).
    pub iss: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: IssuerKeys,
    /// One validation per key family among `algorithms` (jsonwebtoken requires every algorithm
    /// of a validation to fit the key): RS256 and ES256 from one issuer verify with one each.
    validations: Vec<(AlgorithmFamily, Validation)>,
    leeway: u64,
}

impl Issuer {
    pub fn new(
        iss: Option<String>,
        algorithms: Vec<Algorithm>,
        keys: IssuerKeys,
        audiences: &[String],
        leeway_secs: u64,
        require_exp: bool,
    ) -> Issuer {
        let mut v = Validation::new(algorithms[0]);
        v.leeway = leeway_secs;
        v.validate_nbf = true;
        v.validate_exp = true;
        let mut required = Vec::new();
        if require_exp {
            required.push("exp");
        }
        if let Some(i) = &iss {
            v.set_issuer(&[i]);
            required.push("iss");
        }
        if audiences.is_empty() {
            // Without configured audiences, a token's `aud` is not checked.
            v.validate_aud = false;
        } else {
            v.set_audience(audiences);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        let mut validations: Vec<(AlgorithmFamily, Validation)> = Vec::new();
        for a in &algorithms {
            match validations.iter_mut().find(|(f, _)| *f == a.family()) {
                Some((_, fv)) => fv.algorithms.push(*a),
                None => {
                    let mut fv = v.clone();
                    fv.algorithms = vec![*a];
                    validations.push((a.family(), fv));
                }
            }
        }
        Issuer {
            iss,
            algorithms,
            keys,
            validations,
            leeway: leeway_secs,
        }
    }

    fn validation(&self, family: AlgorithmFamily) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, v)| v)
    }
}

/// What the verifier needs from the caller: the current keys of a JWKS slot.
pub trait KeySource {
    fn jwks(&self, slot: usize) -> Option<Arc<KeySet>>;
}

/// The result of a verification.
#[derive(Debug)]
pub enum Outcome {
    Valid {
        issuer: usize,
        claims: Claims,
    },
    Invalid(Failure),
    /// The token names a `kid` that JWKS slot does not have: the caller may refresh that set
    /// (within its rate limit) and verify again.
    UnknownKid {
        slot: usize,
    },
}

/// Verifies `token` against `issuers` at time `now` (seconds since the epoch).
pub fn verify(token: &str, issuers: &[Issuer], keys: &dyn KeySource, now: u64) -> Outcome {
    match verify_inner(token, issuers, keys, now) {
        Ok(o) => o,
        Err(f) => Outcome::Invalid(f),
    }
}

fn verify_inner(
    token: &str,
    issuers: &[Issuer],
    source: &dyn KeySource,
    now: u64,
) -> Result<Outcome, Failure> {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(_) => return Err(header_failure(token)),
    };
    let index = if issuers.len() == 1 {
        0
    } else {
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        // Read (not trusted yet) only to pick the issuer whose keys will verify the token.
        let payload = token.split('.').nth(1).ok_or(Failure::Malformed)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Failure::Malformed)?;
        let iss = serde_json::from_slice::<Iss>(&bytes)
            .map_err(|_| Failure::Malformed)?
            .iss
            .ok_or(Failure::IssuerNotAllowed)?;
        issuers
            .iter()
            .position(|i| i.iss.as_deref() == Some(iss.as_str()))
            .ok_or(Failure::IssuerNotAllowed)?
    };
    let issuer = &issuers[index];
    if !issuer.algorithms.contains(&header.alg) {
        return Err(Failure::AlgorithmNotAllowed);
    }
    let set = match &issuer.keys {
        IssuerKeys::Static(s) => s.clone(),
        IssuerKeys::Jwks(slot) => source.jwks(*slot).ok_or(Failure::Unavailable)?,
    };
    let mut candidates = set.keys.iter().filter(|k| match &header.kid {
        Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
        None => true,
    });
    let mut tried = false;
    let mut failure = Failure::KeyUnknown;
    for key in candidates.by_ref() {
        // The key's type decides the algorithm family, never the token: an HS token checked
        // against an RSA public key (used as an HMAC secret) is refused here.
        if !key.fits(header.alg) {
            failure = Failure::AlgorithmNotAllowed;
            continue;
        }
        let Some(validation) = issuer.validation(key.family) else {
            failure = Failure::AlgorithmNotAllowed;
            continue;
        };
        tried = true;
        match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
            Ok(data) => {
                let claims = data.claims;
                if let Some(iat) = claims.get("iat") {
                    let Some(iat) = iat.as_f64() else {
                        return Err(Failure::Malformed);
                    };
                    if iat > (now + issuer.leeway) as f64 {
                        return Err(Failure::NotYetValid);
                    }
                }
                return Ok(Outcome::Valid {
                    issuer: index,
                    claims,
                });
            }
            Err(e) => {
                failure = map_error(e.kind());
                // A bad signature may just mean another key of the same kid-less set fits.
                if failure != Failure::BadSignature {
                    return Err(failure);
                }
            }
        }
    }
    if !tried
        && let (Some(_), IssuerKeys::Jwks(slot)) = (&header.kid, &issuer.keys)
        && failure == Failure::KeyUnknown
    {
        return Ok(Outcome::UnknownKid { slot: *slot });
    }
    Err(failure)
}

/// Why a header did not parse: an `alg` outside the supported list (`none` among them) is an
/// algorithm refusal, anything else a malformed token.
fn header_failure(token: &str) -> Failure {
    let Some(head) = token.split('.').next() else {
        return Failure::Malformed;
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('='))
    else {
        return Failure::Malformed;
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.get("alg").is_some_and(|a| a.is_string()) => Failure::AlgorithmNotAllowed,
        _ => Failure::Malformed,
    }
}

fn map_error(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::InvalidSignature => Failure::BadSignature,
        ErrorKind::ExpiredSignature => Failure::Expired,
        ErrorKind::ImmatureSignature => Failure::NotYetValid,
        ErrorKind::InvalidIssuer => Failure::IssuerNotAllowed,
        ErrorKind::InvalidAudience => Failure::AudienceNotAllowed,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => Failure::IssuerNotAllowed,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => Failure::AudienceNotAllowed,
        ErrorKind::MissingRequiredClaim(_) => Failure::ClaimMissing,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Failure::AlgorithmNotAllowed,
        _ => Failure::Malformed,
    }
}

/// Checks required claims and claim rules.
pub fn check_claims(
    claims: &Claims,
    required: &[String],
    rules: &[ClaimRule],
) -> Result<(), Failure> {
    for r in required {
        if claims.get(r).is_none_or(Value::is_null) {
            return Err(Failure::ClaimMissing);
        }
    }
    for rule in rules {
        let Some(v) = claims.get(&rule.claim) else {
            return Err(Failure::ClaimMissing);
        };
        let words = matches!(rule.claim.as_str(), "scope" | "scp");
        if !claim_values(v, words).any(|s| rule.accepted.iter().any(|a| *a == s)) {
            return Err(Failure::ClaimRejected);
        }
    }
    Ok(())
}

/// The values a claim holds, as strings: array elements, the string itself (or, with `words`,
/// each word of a space-separated string such as `scope`), numbers and booleans in their JSON
/// form.
pub fn claim_values(v: &Value, words: bool) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    let items: Vec<std::borrow::Cow<'_, str>> = match v {
        Value::String(s) if !words => vec![s.as_str().into()],
        Value::String(s) => s
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(Into::into)
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|e| match e {
                Value::String(s) => Some(s.as_str().into()),
                Value::Number(_) | Value::Bool(_) => Some(e.to_string().into()),
                _ => None,
            })
            .collect(),
        Value::Number(_) | Value::Bool(_) => vec![v.to_string().into()],
        _ => Vec::new(),
    };
    items.into_iter()
}

/// The token's scopes: `scope` (space-separated, RFC 8693) or `scp` (array or string).
pub fn scopes(claims: &Claims) -> Vec<&str> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|w| !w.is_empty())),
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    out
}

/// A claim's value as header text: strings as they are, anything else as compact JSON.
pub fn claim_header_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(s).map_err(|_| {
        format!("`{s}` is not a supported algorithm; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA")
    })
}

pub fn family(alg: Algorithm) -> AlgorithmFamily {
    alg.family()
}

pub use jsonwebtoken::AlgorithmFamily as Family;

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn read(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../portico-proxy/tests/keys");
        std::fs::read(format!("{dir}/{name}")).unwrap()
    }

    struct NoJwks;
    impl KeySource for NoJwks {
        fn jwks(&self, _: usize) -> Option<Arc<KeySet>> {
            None
        }
    }

    fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        let claims = serde_json::json!({ "sub": "a", "exp": 4_000_000_000u64 });
        jsonwebtoken::encode(&h, &claims, key).unwrap()
    }

    /// Static keys of two types in one issuer: each verifies its own algorithms only.
    #[test]
    fn static_rsa_and_ec_keys_in_one_issuer() {
        let rsa = Key::pem_any(Some("r".into()), &read("rsa.pub")).unwrap();
        let ec = Key::pem_any(None, &read("ec.pub")).unwrap();
        assert_eq!(rsa.family(), AlgorithmFamily::Rsa);
        assert_eq!(ec.family(), AlgorithmFamily::Ec);
        let issuer = Issuer::new(
            None,
            vec![Algorithm::RS256, Algorithm::ES256],
            IssuerKeys::Static(Arc::new(KeySet {
                keys: vec![rsa, ec],
            })),
            &[],
            0,
            true,
        );
        let rsa_key = EncodingKey::from_rsa_pem(&read("rsa.key")).unwrap();
        let ec_key = EncodingKey::from_ec_pem(&read("ec.key")).unwrap();
        let check = |t: String| verify(&t, std::slice::from_ref(&issuer), &NoJwks, 1);
        assert!(matches!(
            check(token(Algorithm::RS256, &rsa_key, Some("r"))),
            Outcome::Valid { .. }
        ));
        assert!(matches!(
            check(token(Algorithm::RS256, &rsa_key, None)),
            Outcome::Valid { .. }
        ));
        assert!(matches!(
            check(token(Algorithm::ES256, &ec_key, None)),
            Outcome::Valid { .. }
        ));
        // An ES256 token naming the RSA key.
        assert!(matches!(
            check(token(Algorithm::ES256, &ec_key, Some("r"))),
            Outcome::Invalid(Failure::AlgorithmNotAllowed)
        ));
        // RS512 fits the RSA key but is not among the issuer's algorithms.
        assert!(matches!(
            check(token(Algorithm::RS512, &rsa_key, None)),
            Outcome::Invalid(Failure::AlgorithmNotAllowed)
        ));
    }
}
