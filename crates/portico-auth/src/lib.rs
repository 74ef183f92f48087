//! Credential checks, free of I/O: API-key digests, password hashes (Basic), JWT verification.
//!
//! The config crate parses credentials into these types at load time, so a bad key or hash is
//! a config error with a location; the proxy crate calls the verifiers per request and does the
//! I/O (JWKS fetching, running slow password hashes off the event loop).

#![forbid(unsafe_code)]

pub mod apikey;
pub mod basic;
pub mod jwt;
pub mod mtls;

/// Why a credential was refused. Logged and counted by `code()`; never shown to the client,
/// which only learns that its credentials were missing or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credential of this kind in the request.
    Missing,
    /// The credential is not in a form this method reads.
    Malformed,
    /// No consumer has this API key or user name / password.
    Unknown,
    /// The signature does not verify.
    BadSignature,
    /// The token's `alg` is not one the issuer is pinned to (includes `none`).
    AlgorithmNotAllowed,
    /// No key with the token's `kid` (after a refresh, for JWKS).
    KeyUnknown,
    Expired,
    NotYetValid,
    IssuerNotAllowed,
    AudienceNotAllowed,
    /// A required claim is absent.
    ClaimMissing,
    /// A claim has a value the policy does not accept.
    ClaimRejected,
    /// The introspection endpoint says the token is not active.
    Inactive,
    /// The key set or introspection endpoint could not be reached.
    Unavailable,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::Missing => "credentials_missing",
            Failure::Malformed => "credentials_malformed",
            Failure::Unknown => "credentials_unknown",
            Failure::BadSignature => "signature_invalid",
            Failure::AlgorithmNotAllowed => "algorithm_not_allowed",
            Failure::KeyUnknown => "key_unknown",
            Failure::Expired => "token_expired",
            Failure::NotYetValid => "token_not_yet_valid",
            Failure::IssuerNotAllowed => "issuer_not_allowed",
            Failure::AudienceNotAllowed => "audience_not_allowed",
            Failure::ClaimMissing => "claim_missing",
            Failure::ClaimRejected => "claim_rejected",
            Failure::Inactive => "token_inactive",
            Failure::Unavailable => "verifier_unavailable",
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
