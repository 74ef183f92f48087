//! Cost of each credential check on the request path (cached keys, warm caches).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico_auth::apikey::{KeyStore, digest};
use portico_auth::basic::VerifiedCache;
use portico_auth::jwt::{self, Family, Issuer, IssuerKeys, Key, KeySet, KeySource, Outcome};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../portico-proxy/tests/keys");

struct NoJwks;
impl KeySource for NoJwks {
    fn jwks(&self, _: usize) -> Option<Arc<KeySet>> {
        None
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = serde_json::json!({
        "iss": "https://idp.test", "aud": "api", "sub": "alice",
        "exp": now() + 3600, "iat": now(), "scope": "orders:read orders:write"
    });
    let mut h = Header::new(alg);
    h.kid = Some("k1".into());
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn issuer(alg: Algorithm, key: Key) -> Vec<Issuer> {
    vec![Issuer::new(
        Some("https://idp.test".into()),
        vec![alg],
        IssuerKeys::Static(Arc::new(KeySet { keys: vec![key] })),
        &["api".to_string()],
        30,
        true,
    )]
}

fn bench(c: &mut Criterion) {
    let read = |f: &str| std::fs::read(format!("{KEYS}/{f}")).unwrap();
    let cases = [
        (
            "jwt_rs256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rsa.key")).unwrap(),
            Key::pem(Some("k1".into()), Family::Rsa, &read("rsa.pub")).unwrap(),
        ),
        (
            "jwt_es256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec.key")).unwrap(),
            Key::pem(Some("k1".into()), Family::Ec, &read("ec.pub")).unwrap(),
        ),
        (
            "jwt_eddsa",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed.key")).unwrap(),
            Key::pem(Some("k1".into()), Family::Ed, &read("ed.pub")).unwrap(),
        ),
        (
            "jwt_hs256",
            Algorithm::HS256,
            EncodingKey::from_secret(&[7; 32]),
            Key::secret(Some("k1".into()), &[7; 32]),
        ),
    ];
    for (name, alg, enc, key) in cases {
        let t = token(alg, &enc);
        let iss = issuer(alg, key);
        let n = now();
        assert!(matches!(
            jwt::verify(&t, &iss, &NoJwks, n),
            Outcome::Valid { .. }
        ));
        c.bench_function(name, |b| {
            b.iter(|| black_box(jwt::verify(black_box(&t), &iss, &NoJwks, n)))
        });
    }

    let mut store = KeyStore::default();
    for i in 0..10_000 {
        store
            .insert(digest(format!("key-{i}").as_bytes()), i)
            .unwrap();
    }
    c.bench_function("api_key_find_10k", |b| {
        b.iter(|| black_box(store.find(black_box(b"key-4242"))))
    });

    let cache = VerifiedCache::new([1; 32], Duration::from_secs(300), 10_000);
    cache.put(b"alice", b"correct horse", 0);
    c.bench_function("basic_cached", |b| {
        b.iter(|| black_box(cache.get(black_box(b"alice"), black_box(b"correct horse"))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
