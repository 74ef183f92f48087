//! JWT verification with a fixed HS256 key.

use std::sync::{Arc, OnceLock};

use portico_auth::Failure;
use portico_auth::jwt::{
    Algorithm, ClaimRule, Issuer, IssuerKeys, Key, KeySet, KeySource, Outcome, check_claims,
    scopes, verify,
};

const SECRET: &[u8] = b"an-hmac-secret-of-more-than-32-bytes!!";
/// The time the checks run at (2023-11-14), so expiry in the corpora does not age.
const NOW: u64 = 1_700_000_000;

struct NoJwks;

impl KeySource for NoJwks {
    fn jwks(&self, _: usize) -> Option<Arc<KeySet>> {
        None
    }
}

/// One issuer without an `iss` check; two issuers picked by `iss`, with audiences.
fn issuers() -> &'static [Vec<Issuer>; 2] {
    static I: OnceLock<[Vec<Issuer>; 2]> = OnceLock::new();
    I.get_or_init(|| {
        let keys = IssuerKeys::Static(Arc::new(KeySet {
            keys: vec![
                Key::secret(None, SECRET),
                Key::secret(Some("k2".into()), SECRET),
            ],
        }));
        let one = vec![Issuer::new(
            None,
            vec![Algorithm::HS256],
            keys.clone(),
            &[],
            30,
            false,
        )];
        let two = vec![
            Issuer::new(
                Some("a".into()),
                vec![Algorithm::HS256],
                keys.clone(),
                &["api".into()],
                0,
                true,
            ),
            Issuer::new(
                Some("b".into()),
                vec![Algorithm::HS256, Algorithm::HS384],
                keys,
                &[],
                0,
                false,
            ),
        ];
        [one, two]
    })
}

/// Verifying any text never panics, and only a token signed with the key is valid. When the
/// input is a JSON object, it is signed as claims with the key: that token's signature always
/// verifies (whatever else is wrong with its claims), and valid claims go through the claim
/// rules without a panic.
pub fn jwt(data: &[u8]) {
    let text = crate::text(data);
    for set in issuers() {
        if let Outcome::Valid { claims, .. } = verify(text.trim(), set, &NoJwks, NOW) {
            let signed = text.trim().rsplit_once('.').map(|(s, _)| s).unwrap_or("");
            let header = jsonwebtoken::decode_header(text.trim()).expect("a valid token's header");
            let sig = jsonwebtoken::crypto::sign(
                signed.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(SECRET),
                header.alg,
            )
            .expect("signs");
            assert!(
                text.trim().ends_with(&sig),
                "valid without the key's signature"
            );
            rules(&claims);
        }
    }
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return;
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("claims encode");
    for set in issuers() {
        match verify(&token, set, &NoJwks, NOW) {
            Outcome::Valid { claims, .. } => rules(&claims),
            Outcome::Invalid(f) => assert!(
                !matches!(
                    f,
                    Failure::BadSignature | Failure::KeyUnknown | Failure::AlgorithmNotAllowed
                ),
                "{f:?} for a token signed with the key: {token}"
            ),
            Outcome::UnknownKid { .. } => panic!("no kid was sent"),
        }
    }
}

fn rules(claims: &portico_auth::jwt::Claims) {
    let rules = [
        ClaimRule {
            claim: "scope".into(),
            accepted: vec!["read".into()],
        },
        ClaimRule {
            claim: "roles".into(),
            accepted: vec!["admin".into()],
        },
    ];
    let _ = check_claims(claims, &["sub".into()], &rules);
    let _ = scopes(claims);
}
