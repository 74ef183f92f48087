//! Identity and access: API keys, Basic, JWT (static keys and JWKS), any_of, ACLs, scopes,
//! IP filters, CORS, size limits. Tokens are minted with jsonwebtoken, never by hand.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portico_testkit::*;
use serde_json::json;

use crate::{SECRET, claims, config, empty, encoding_key, keys, mint, now, pem, req};

async fn call(gw: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = req(method, &gw.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&client(false, &[]), b.body(empty()).unwrap()).await
}

fn consumers() -> String {
    let alice_key = portico_auth::apikey::digest_string("alice-key-1");
    let bob_key = portico_auth::apikey::digest_string("bob-key-1");
    let alice_pw = portico_auth::basic::hash_password("alice-pw", &[1; 16], true);
    format!(
        "consumers:\n  - name: alice\n    groups: [admins, staff]\n    api_keys: [\"{alice_key}\"]\n    basic_auth: {{ password_hash: \"{alice_pw}\" }}\n  - name: bob\n    groups: [staff]\n    api_keys: [\"{bob_key}\"]\n"
    )
}

fn gw_config(up: &Upstream, policies: &str) -> String {
    config(&format!(
        "{}upstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - name: api\n    upstream: u\n    policies:\n{policies}",
        consumers(),
        up.url()
    ))
}

fn assert_401(got: &Got, challenge: &str) {
    assert_eq!(got.status, 401, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/problem+json"));
    let body = got.json();
    assert_eq!(body["code"], "unauthorized");
    // The same words whatever was wrong: nothing tells a guesser which part failed.
    assert_eq!(
        body["detail"],
        "Valid credentials are required; none were given or those given were not accepted."
    );
    let all: Vec<&str> = got
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(all.iter().any(|c| c.starts_with(challenge)), "{all:?}");
}

#[tokio::test]
async fn api_keys_identify_consumers_and_never_travel_upstream() {
    let up = echo_server().await;
    let gw = gateway(
        &gw_config(&up, "      - type: api_key\n        query: api_key\n")
            .replace("name: api\n", "name: keys\n"),
    )
    .await;
    // Header key; a client-sent consumer header is replaced, never trusted.
    let got = call(
        &gw,
        "GET",
        "/x",
        &[
            ("x-api-key", "alice-key-1"),
            ("x-consumer-name", "root"),
            ("x-consumer-groups", "admins"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = got.json();
    assert_eq!(seen["headers"]["x-consumer-name"], "alice");
    assert!(
        seen["headers"]["x-api-key"].is_null(),
        "the key stays at the gateway"
    );
    assert_eq!(seen["headers"]["x-consumer-groups"], "admins,staff");
    // Query key: accepted, then removed before the upstream sees the URI.
    let got = call(&gw, "GET", "/x?a=1&api_key=bob%2Dkey%2D1&b=2", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/x?a=1&b=2");
    assert_eq!(got.json()["headers"]["x-consumer-name"], "bob");
    // The name is read decoded, as the upstream reads it: a second spelling of the
    // parameter (`api%5Fkey`, `api_key` to any form decoder) goes no further than the first.
    for uri in [
        "/x?api%5Fkey=bob-key-1&api_key=alice-key-1&b=2",
        "/x?api_key=bob-key-1&api%5fkey=alice-key-1&b=2",
    ] {
        let got = call(&gw, "GET", uri, &[]).await;
        assert_eq!(got.status, 200, "{uri}");
        assert_eq!(got.json()["uri"], "/x?b=2", "{uri}");
        assert_eq!(got.json()["headers"]["x-consumer-name"], "bob", "{uri}");
    }

    let hits = up.hits();
    for headers in [
        vec![],
        vec![("x-api-key", "alice-key-2")],
        vec![("x-api-key", "")],
        vec![("x-consumer-name", "alice")],
    ] {
        let got = call(&gw, "GET", "/x", &headers).await;
        assert_401(&got, "ApiKey");
    }
    assert_eq!(up.hits(), hits, "refused requests never reach the upstream");
    let metrics = get(&gw.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(
            "portico_auth_failures_total{route=\"keys\",reason=\"credentials_unknown\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("{route=\"keys\",reason=\"credentials_missing\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn basic_auth_checks_argon2_and_bcrypt_hashes() {
    let up = echo_server().await;
    let bcrypt = bcrypt_hash("carol-pw");
    let yaml = gw_config(&up, "      - type: basic_auth\n        realm: staff area\n").replace(
        "consumers:\n",
        &format!("consumers:\n  - name: carol\n    basic_auth: {{ username: carol, password_hash: \"{bcrypt}\" }}\n"),
    );
    let gw = gateway(&yaml).await;
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    for _ in 0..3 {
        // Repeats hit the verified-credentials cache.
        let got = call(
            &gw,
            "GET",
            "/",
            &[("authorization", &basic("alice", "alice-pw"))],
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["headers"]["x-consumer-name"], "alice");
        assert!(got.json()["headers"]["authorization"].is_null());
    }
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &basic("carol", "carol-pw"))],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-consumer-name"], "carol");
    for bad in [
        basic("alice", "alice-PW"),
        basic("nobody", "alice-pw"),
        basic("carol", "alice-pw"),
        "Basic !!!".into(),
        "Bearer x".into(),
    ] {
        let got = call(&gw, "GET", "/", &[("authorization", &bad)]).await;
        assert_401(&got, "Basic realm=\"staff area\"");
    }
}

fn bcrypt_hash(pw: &str) -> String {
    // `htpasswd -nbB` writes `$2y$`; cost 4 keeps the test fast.
    bcrypt::hash_with_salt(pw, 4, [3; 16])
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

fn jwt_route(up: &Upstream, issuer_yaml: &str, extra: &str) -> String {
    gw_config(
        up,
        &format!("      - type: jwt\n        issuers:\n{issuer_yaml}{extra}"),
    )
}

fn static_issuers() -> String {
    let k = keys();
    format!(
        "          - issuer: https://idp.test\n            algorithms: [RS256, PS256]\n            audiences: [api]\n            keys: [{{ kid: r1, pem_file: \"{k}/rsa.pub\" }}]\n          - issuer: https://hs.test\n            algorithms: [HS256, HS512]\n            keys: [{{ secret: \"{SECRET}\" }}]\n          - issuer: https://ec.test\n            algorithms: [ES256]\n            keys: [{{ pem_file: \"{k}/ec.pub\" }}]\n          - issuer: https://ed.test\n            algorithms: [EdDSA]\n            keys: [{{ pem_file: \"{k}/ed.pub\" }}]\n"
    )
}

#[tokio::test]
async fn jwt_accepts_each_algorithm_and_refuses_every_bad_token() {
    let up = echo_server().await;
    let gw = gateway(&jwt_route(
        &up,
        &static_issuers(),
        "        leeway: 5s\n        forward_claims: { sub: x-user-id }\n        consumer_claim: sub\n",
    )
    .replace("name: api\n", "name: tokens\n"))
    .await;
    let bearer = |t: &str| format!("Bearer {t}");
    let good = [
        mint(Algorithm::RS256, "rsa.key", Some("r1"), claims(json!({}))),
        mint(Algorithm::PS256, "rsa.key", Some("r1"), claims(json!({}))),
        mint(
            Algorithm::HS256,
            SECRET,
            None,
            claims(json!({"iss": "https://hs.test", "aud": null})),
        ),
        mint(
            Algorithm::HS512,
            SECRET,
            None,
            claims(json!({"iss": "https://hs.test", "aud": null})),
        ),
        mint(
            Algorithm::ES256,
            "ec.key",
            None,
            claims(json!({"iss": "https://ec.test", "aud": null})),
        ),
        mint(
            Algorithm::EdDSA,
            "ed.key",
            None,
            claims(json!({"iss": "https://ed.test", "aud": null})),
        ),
    ];
    for t in &good {
        let got = call(
            &gw,
            "GET",
            "/",
            &[("authorization", &bearer(t)), ("x-user-id", "mallory")],
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(
            got.json()["headers"]["x-user-id"],
            "alice",
            "claim forwarded, spoofed copy gone"
        );
        assert_eq!(got.json()["headers"]["x-consumer-name"], "alice");
        assert!(
            got.json()["headers"]["authorization"].is_null(),
            "the token stays at the gateway"
        );
    }

    // HS256 signed with the RSA public key's bytes: the classic algorithm-confusion forgery.
    let pubkey = String::from_utf8(pem("rsa.pub")).unwrap();
    let confused = mint(Algorithm::HS256, &pubkey, Some("r1"), claims(json!({})));
    let mut tampered = mint(Algorithm::RS256, "rsa.key", Some("r1"), claims(json!({})));
    let mut payload: Vec<&str> = tampered.split('.').collect();
    use base64::Engine;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(claims(json!({"sub": "admin"})).to_string());
    payload[1] = &forged;
    tampered = payload.join(".");
    let none = {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"none","typ":"JWT"}"#);
        let c =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
        format!("{h}.{c}.")
    };
    let cases = [
        (
            "expired",
            mint(
                Algorithm::RS256,
                "rsa.key",
                Some("r1"),
                claims(json!({"exp": now() - 60})),
            ),
            "token_expired",
        ),
        (
            "not yet valid",
            mint(
                Algorithm::RS256,
                "rsa.key",
                Some("r1"),
                claims(json!({"nbf": now() + 600})),
            ),
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            mint(
                Algorithm::RS256,
                "rsa.key",
                Some("r1"),
                claims(json!({"iat": now() + 600})),
            ),
            "token_not_yet_valid",
        ),
        (
            "no exp",
            mint(
                Algorithm::RS256,
                "rsa.key",
                Some("r1"),
                claims(json!({"exp": null})),
            ),
            "claim_missing",
        ),
        (
            "wrong audience",
            mint(
                Algorithm::RS256,
                "rsa.key",
                Some("r1"),
                claims(json!({"aud": "other"})),
            ),
            "audience_not_allowed",
        ),
        (
            "wrong issuer",
            mint(
                Algorithm::RS256,
                "rsa.key",
                Some("r1"),
                claims(json!({"iss": "https://evil.test"})),
            ),
            "issuer_not_allowed",
        ),
        (
            "wrong key",
            mint(Algorithm::RS256, "rsa2.key", Some("r1"), claims(json!({}))),
            "signature_invalid",
        ),
        (
            "unknown kid",
            mint(Algorithm::RS256, "rsa.key", Some("r9"), claims(json!({}))),
            "key_unknown",
        ),
        ("tampered", tampered, "signature_invalid"),
        ("alg none", none, "algorithm_not_allowed"),
        ("HS/RS confusion", confused, "algorithm_not_allowed"),
        (
            "alg not pinned",
            mint(Algorithm::RS512, "rsa.key", Some("r1"), claims(json!({}))),
            "algorithm_not_allowed",
        ),
        ("garbage", "not.a.jwt".into(), "credentials_malformed"),
    ];
    for (what, token, _reason) in &cases {
        let got = call(&gw, "GET", "/", &[("authorization", &bearer(token))]).await;
        assert_eq!(got.status, 401, "{what}: {}", got.text());
        assert_401(&got, "Bearer realm=\"portico\", error=\"invalid_token\"");
    }
    let got = call(&gw, "GET", "/", &[]).await;
    assert_401(&got, "Bearer realm=\"portico\"");
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer realm=\"portico\""),
        "no error code without a token"
    );
    let metrics = get(&gw.admin_url("/metrics")).await.text();
    for (what, _, reason) in &cases {
        assert!(
            metrics.contains(&format!("route=\"tokens\",reason=\"{reason}\"")),
            "{what}: {reason} not counted\n{metrics}"
        );
    }
    assert_eq!(up.hits(), good.len());
}

#[tokio::test]
async fn jwt_claim_rules_sources_and_scopes() {
    let up = echo_server().await;
    let k = keys();
    let gw = gateway(&gw_config(
        &up,
        &format!("      - type: jwt\n        issuers: [{{ algorithms: [RS256], keys: [{{ pem_file: \"{k}/rsa.pub\" }}] }}]\n        from: [{{ header: authorization }}, {{ cookie: session }}, {{ query: access_token }}]\n        required_claims: [email]\n        claims: {{ role: [admin, ops] }}\n      - type: acl\n        scopes: [orders:write]\n        methods: [POST]\n"),
    ))
    .await;
    let t = |c: serde_json::Value| mint(Algorithm::RS256, "rsa.key", None, claims(c));
    let ok = t(json!({"email": "a@x", "role": ["ops"], "scope": "orders:read orders:write"}));
    let read_only = t(json!({"email": "a@x", "role": "admin", "scope": "orders:read"}));
    assert_eq!(
        call(
            &gw,
            "GET",
            "/",
            &[("authorization", &format!("Bearer {ok}"))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        call(
            &gw,
            "GET",
            "/",
            &[("cookie", &format!("a=b; session={ok}"))]
        )
        .await
        .status,
        200
    );
    let got = call(&gw, "GET", &format!("/p?access_token={ok}&x=1"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/p?x=1", "the token left the query");
    assert_eq!(
        call(
            &gw,
            "POST",
            "/",
            &[("authorization", &format!("Bearer {ok}"))]
        )
        .await
        .status,
        200
    );
    // GET needs no scope; POST needs orders:write.
    assert_eq!(
        call(
            &gw,
            "GET",
            "/",
            &[("authorization", &format!("Bearer {read_only}"))]
        )
        .await
        .status,
        200
    );
    let got = call(
        &gw,
        "POST",
        "/",
        &[("authorization", &format!("Bearer {read_only}"))],
    )
    .await;
    assert_eq!(got.status, 403);
    assert_eq!(got.json()["code"], "forbidden");
    assert_eq!(
        got.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"orders:write\"")
    );
    for bad in [
        t(json!({"role": "admin"})),
        t(json!({"email": "a@x", "role": "user"})),
        t(json!({"email": "a@x"})),
        t(json!({"email": "a@x", "role": "guest admin"})),
    ] {
        assert_eq!(
            call(
                &gw,
                "GET",
                "/",
                &[("authorization", &format!("Bearer {bad}"))]
            )
            .await
            .status,
            401
        );
    }
}

/// A JWKS endpoint whose document can be swapped, counting fetches.
struct Jwks {
    up: Upstream,
    doc: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

fn jwk(key_file: &str, kid: &str) -> serde_json::Value {
    let enc = EncodingKey::from_rsa_pem(&pem(key_file)).unwrap();
    let mut j = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    j["kid"] = json!(kid);
    j
}

async fn jwks_server(keys: serde_json::Value) -> Jwks {
    let doc = Arc::new(Mutex::new(json!({ "keys": keys }).to_string()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (d, f) = (doc.clone(), fetches.clone());
    let up = serve(move |_req| {
        let (d, f) = (d.clone(), f.clone());
        async move {
            f.fetch_add(1, Ordering::SeqCst);
            let body = d.lock().unwrap().clone();
            http::Response::new(full(body))
        }
    })
    .await;
    Jwks { up, doc, fetches }
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_and_unknown_kid_floods_are_bounded() {
    let up = echo_server().await;
    let jwks = jwks_server(json!([jwk("rsa.key", "k1")])).await;
    // The audit trail records the key set's changes and the refusals (summaries written on
    // demand here: `summary_interval: 0s` turns the periodic ones off).
    let trail = temp_dir("jwks-audit").join("audit.jsonl");
    let gw = gateway(&format!(
        "{}audit: {{ path: \"{}\", summary_interval: 0s }}\n",
        jwt_route(
            &up,
            &format!(
                "          - issuer: https://idp.test\n            algorithms: [RS256]\n            jwks_url: \"{}/jwks.json\"\n            jwks_min_refresh: 1s\n",
                jwks.up.url()
            ),
            "",
        ),
        trail.display()
    ))
    .await;
    let call_with = |kid: &str, key: &str| {
        let t = mint(Algorithm::RS256, key, Some(kid), claims(json!({})));
        let gw = &gw;
        async move {
            call(gw, "GET", "/", &[("authorization", &format!("Bearer {t}"))])
                .await
                .status
        }
    };
    assert_eq!(call_with("k1", "rsa.key").await, 200);
    gw.gw.write_audit_summary();

    // A flood of made-up kids: at most one extra fetch per `jwks_min_refresh`.
    let before = jwks.fetches.load(Ordering::SeqCst);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let t = mint(
            Algorithm::RS256,
            "rsa.key",
            Some(&format!("bogus-{i}")),
            claims(json!({})),
        );
        let url = gw.url("/");
        set.spawn(async move {
            send(
                &client(false, &[]),
                Request::get(url)
                    .header("authorization", format!("Bearer {t}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .status
        });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 401);
    }
    let extra = jwks.fetches.load(Ordering::SeqCst) - before;
    assert!(extra <= 1, "50 unknown kids caused {extra} fetches");

    // Rotation: the provider adds k2 and signs with it; the first k2 token triggers a fetch.
    *jwks.doc.lock().unwrap() =
        json!({ "keys": [jwk("rsa.key", "k1"), jwk("rsa2.key", "k2")] }).to_string();
    // Past `jwks_min_refresh` on the gateway's clock.
    gw.gw
        .runtime()
        .clock
        .advance(std::time::Duration::from_millis(1100));
    assert_eq!(call_with("k2", "rsa2.key").await, 200);
    assert_eq!(call_with("k1", "rsa.key").await, 200);
    // A k2 token signed with the wrong key still fails.
    assert_eq!(call_with("k2", "rsa.key").await, 401);
    gw.gw.write_audit_summary();

    // The provider goes down: the keys already fetched keep working.
    jwks.up.stop_and_wait().await;
    // Past `jwks_min_refresh`, so the unknown k3 sends the gateway to the provider again.
    gw.gw
        .runtime()
        .clock
        .advance(std::time::Duration::from_millis(1100));
    assert_eq!(call_with("k1", "rsa.key").await, 200);
    assert_eq!(call_with("k3", "rsa.key").await, 401);

    // The trail: the key set when first seen, its rotation, and every refusal counted (a
    // request is counted as its response ends, which can be just after the client has it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let records = loop {
        gw.gw.write_audit_summary();
        let records: Vec<serde_json::Value> = std::fs::read_to_string(&trail)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let refused: u64 = records
            .iter()
            .filter(|r| r["kind"] == "security_summary")
            .map(|r| r["refused"].as_u64().unwrap())
            .sum();
        if refused >= 52 {
            assert_eq!(refused, 52);
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{refused} refusals counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let changes: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["kind"] == "key_set_changed")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["first_seen"], true);
    assert_eq!(changes[0]["key_ids"], json!(["k1"]));
    assert_eq!(changes[1]["added"], json!(["k2"]));
    assert!(changes[1]["url"].as_str().unwrap().ends_with("/jwks.json"));
    let summary = records
        .iter()
        .find(|r| r["kind"] == "security_summary")
        .unwrap();
    assert_eq!(summary["refusals"][0]["status"], 401);
    assert!(summary["refusals"][0]["reason"].is_string());
    assert!(portico_proxy::observe::audit::verify_file(&trail, None).is_ok());
}

/// A JWK for `key_file` without `alg` (as many providers publish them): only the key's type
/// limits the algorithms it verifies.
fn jwk_any_alg(alg: Algorithm, key_file: &str, kid: &str) -> serde_json::Value {
    let mut j = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg, key_file), alg).unwrap(),
    )
    .unwrap();
    j["kid"] = json!(kid);
    j.as_object_mut().unwrap().remove("alg");
    j
}

#[tokio::test]
async fn one_jwks_with_rsa_and_ec_keys_verifies_rs256_and_es256() {
    let up = echo_server().await;
    let jwks = jwks_server(json!([
        jwk_any_alg(Algorithm::RS256, "rsa.key", "r1"),
        jwk_any_alg(Algorithm::ES256, "ec.key", "e1"),
    ]))
    .await;
    let gw = gateway(&jwt_route(
        &up,
        &format!(
            "          - issuer: https://idp.test\n            algorithms: [RS256, ES256]\n            jwks_url: \"{}/jwks.json\"\n",
            jwks.up.url()
        ),
        "",
    ))
    .await;
    let status = |alg: Algorithm, key: &str, kid: Option<&str>| {
        let t = mint(alg, key, kid, claims(json!({})));
        let gw = &gw;
        async move {
            let got = call(gw, "GET", "/", &[("authorization", &format!("Bearer {t}"))]).await;
            if got.status == 401 {
                assert_401(&got, "Bearer");
            }
            got.status
        }
    };
    // Each key verifies the tokens of its own type, chosen by `kid`.
    assert_eq!(status(Algorithm::RS256, "rsa.key", Some("r1")).await, 200);
    assert_eq!(status(Algorithm::ES256, "ec.key", Some("e1")).await, 200);
    // Without a `kid`, the keys whose type fits the token's `alg` are tried.
    assert_eq!(status(Algorithm::RS256, "rsa.key", None).await, 200);
    assert_eq!(status(Algorithm::ES256, "ec.key", None).await, 200);
    // An ES256 token naming the RSA key's kid: an RSA key never verifies ES256.
    assert_eq!(status(Algorithm::ES256, "ec.key", Some("r1")).await, 401);
    // And an RS256 token naming the EC key's kid.
    assert_eq!(status(Algorithm::RS256, "rsa.key", Some("e1")).await, 401);
    // PS256 fits the RSA key but is not in the issuer's list.
    assert_eq!(status(Algorithm::PS256, "rsa.key", Some("r1")).await, 401);
    assert_eq!(status(Algorithm::PS256, "rsa.key", None).await, 401);
    // The classic confusion: HS256 "signed" with the RSA public key as the secret.
    let public = String::from_utf8(pem("rsa.pub")).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("r1".into());
    let forged = jsonwebtoken::encode(
        &h,
        &claims(json!({})),
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_401(&got, "Bearer");
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn unreachable_jwks_fails_closed_with_503() {
    let up = echo_server().await;
    let dead = jwks_server(json!([])).await;
    let url = dead.up.url();
    dead.up.stop_and_wait().await;
    let gw = gateway(&jwt_route(
        &up,
        &format!("          - algorithms: [RS256]\n            jwks_url: \"{url}/jwks\"\n"),
        "",
    ))
    .await;
    let t = mint(Algorithm::RS256, "rsa.key", Some("k1"), claims(json!({})));
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(got.json()["code"], "auth_unavailable");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn any_of_acl_groups_and_consumer_rate_limits() {
    let up = echo_server().await;
    let gw = gateway(&gw_config(
        &up,
        &format!(
            "      - type: any_of\n        policies:\n          - type: api_key\n          - type: jwt\n            issuers: [{{ algorithms: [HS256], keys: [{{ secret: \"{SECRET}\" }}] }}]\n            consumer_claim: sub\n      - type: acl\n        allow: [staff]\n        deny: [banned]\n      - type: acl\n        allow: [admins]\n        methods: [DELETE]\n      - type: rate_limit\n        key: consumer\n        limits: [{{ requests: 3, per: 1m }}]\n"
        ),
    ))
    .await;
    let t = mint(
        Algorithm::HS256,
        SECRET,
        None,
        claims(json!({"aud": null, "sub": "bob"})),
    );
    let stranger = mint(
        Algorithm::HS256,
        SECRET,
        None,
        claims(json!({"aud": null, "sub": "nobody"})),
    );
    assert_eq!(
        call(&gw, "GET", "/", &[("x-api-key", "alice-key-1")])
            .await
            .status,
        200
    );
    assert_eq!(
        call(&gw, "DELETE", "/", &[("x-api-key", "alice-key-1")])
            .await
            .status,
        200
    );
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &format!("Bearer {t}"))],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-consumer-name"], "bob");
    let got = call(&gw, "DELETE", "/", &[("x-api-key", "bob-key-1")]).await;
    assert_eq!(got.status, 403, "bob is not an admin");
    assert_eq!(got.json()["code"], "forbidden");
    // A valid token whose subject is no consumer has no groups.
    assert_eq!(
        call(
            &gw,
            "GET",
            "/",
            &[("authorization", &format!("Bearer {stranger}"))]
        )
        .await
        .status,
        403
    );
    // Neither method: both challenges offered.
    let got = call(&gw, "GET", "/", &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.headers.get_all("www-authenticate").iter().count(), 2);
    // Per-consumer limit: alice has used 2 of 3. Bob's refused DELETE never reached the limiter
    // (the ACL runs first), so he has used 1.
    assert_eq!(
        call(&gw, "GET", "/", &[("x-api-key", "alice-key-1")])
            .await
            .status,
        200
    );
    let got = call(&gw, "GET", "/", &[("x-api-key", "alice-key-1")]).await;
    assert_eq!(got.status, 429, "alice's own limit");
    assert_eq!(
        call(&gw, "GET", "/", &[("x-api-key", "bob-key-1")])
            .await
            .status,
        200,
        "bob's budget is separate"
    );
}

#[tokio::test]
async fn ip_filter_uses_the_resolved_client_address() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "server: {{ trusted_proxies: [\"127.0.0.1\"] }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: ip_filter\n        allow: [\"10.0.0.0/8\", \"2001:db8::/32\", \"127.0.0.1\"]\n        deny: [\"10.6.6.0/24\"]\n",
        up.url()
    )))
    .await;
    assert_eq!(call(&gw, "GET", "/", &[]).await.status, 200);
    assert_eq!(
        call(&gw, "GET", "/", &[("x-forwarded-for", "10.1.2.3")])
            .await
            .status,
        200
    );
    assert_eq!(
        call(&gw, "GET", "/", &[("x-forwarded-for", "2001:db8::7")])
            .await
            .status,
        200
    );
    for ip in ["10.6.6.6", "192.168.1.1", "2001:db9::1"] {
        let got = call(&gw, "GET", "/", &[("x-forwarded-for", ip)]).await;
        assert_eq!(got.status, 403, "{ip}");
        assert_eq!(got.json()["code"], "forbidden");
    }
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn cors_preflights_are_answered_before_auth() {
    let up = echo_server().await;
    let yaml = gw_config(
        &up,
        "      - type: cors\n        origins: [\"https://app.example.com\", \"https://*.example.org\"]\n        methods: [GET, PUT]\n        expose_headers: [x-request-id]\n        credentials: true\n        max_age: 1h\n      - type: api_key\n",
    )
    .replace("    upstream: u\n", "    upstream: u\n    match: { methods: [GET, PUT] }\n");
    let gw = gateway(&yaml).await;
    let got = call(
        &gw,
        "OPTIONS",
        "/items",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type, x-api-key"),
        ],
    )
    .await;
    assert_eq!(got.status, 204);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(got.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        got.header("access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(got.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(got.header("access-control-max-age"), Some("3600"));
    assert_eq!(up.hits(), 0, "preflights are answered by the gateway");
    let got = call(
        &gw,
        "OPTIONS",
        "/items",
        &[
            ("origin", "https://a.b.example.org"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(got.status, 204);
    let got = call(
        &gw,
        "OPTIONS",
        "/items",
        &[
            ("origin", "https://evil.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(got.status, 403);
    assert!(got.header("access-control-allow-origin").is_none());
    // Actual requests: CORS headers on success and on the 401, so the page can read it.
    let got = call(
        &gw,
        "GET",
        "/items",
        &[
            ("origin", "https://app.example.com"),
            ("x-api-key", "alice-key-1"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        got.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(got.headers.get_all("vary").iter().any(|v| v == "Origin"));
    let got = call(
        &gw,
        "GET",
        "/items",
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let got = call(
        &gw,
        "GET",
        "/items",
        &[("origin", "https://evil.com"), ("x-api-key", "alice-key-1")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn body_and_uri_limits() {
    let up = echo_server().await;
    let gw = gateway(&config(&format!(
        "server: {{ max_uri_bytes: 100 }}\nupstreams:\n  u: {{ targets: [\"{}\"] }}\nroutes:\n  - upstream: u\n    policies:\n      - type: body_limit\n        max_bytes: 1000\n",
        up.url()
    )))
    .await;
    let c = client(false, &[]);
    let post = |body: Vec<u8>| req("POST", &gw.url("/")).body(Full::from(body)).unwrap();
    assert_eq!(send(&c, post(vec![b'a'; 1000])).await.status, 200);
    let got = send(&c, post(vec![b'a'; 1001])).await;
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["code"], "payload_too_large");
    // Chunked, no length: cut off when it passes the limit.
    let head = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_string();
    let mut raw_req = head.into_bytes();
    for _ in 0..3 {
        raw_req.extend_from_slice(b"190\r\n");
        raw_req.extend_from_slice(&[b'b'; 400]);
        raw_req.extend_from_slice(b"\r\n");
    }
    raw_req.extend_from_slice(b"0\r\n\r\n");
    let out = raw(gw.addr, &raw_req).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let long = format!("/{}", "x".repeat(100));
    let got = get(&gw.url(&long)).await;
    assert_eq!(got.status, 414);
    assert_eq!(got.json()["code"], "uri_too_long");
    assert_eq!(get(&gw.url(&long[..99])).await.status, 200);
}

/// An RFC 7662 endpoint: `good-*` tokens are active (with scope, username and exp), anything
/// else inactive; requests without the gateway's client credentials get 401.
async fn introspection_server() -> (Upstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = serve(move |req: http::Request<hyper::body::Incoming>| {
        let c = c.clone();
        async move {
            use http_body_util::BodyExt;
            c.fetch_add(1, Ordering::SeqCst);
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            let form = String::from_utf8(req.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            use base64::Engine;
            let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("gateway:s%26cret"));
            if auth.as_deref() != Some(expected.as_str()) {
                let mut r = http::Response::new(full("{\"error\":\"invalid_client\"}"));
                *r.status_mut() = http::StatusCode::UNAUTHORIZED;
                return r;
            }
            let token = form
                .split('&')
                .find_map(|p| p.strip_prefix("token="))
                .unwrap_or("")
                .to_owned();
            let body = if token.starts_with("good-") {
                let exp = if token == "good-expired" { now() - 5 } else { now() + 600 };
                json!({"active": true, "username": "alice", "scope": "orders:read", "exp": exp, "client_id": "web"})
            } else {
                json!({"active": false})
            };
            http::Response::new(full(body.to_string()))
        }
    })
    .await;
    (up, calls)
}

#[tokio::test]
async fn introspection_checks_opaque_tokens_and_caches_answers() {
    let up = echo_server().await;
    let (idp, calls) = introspection_server().await;
    let gw = gateway(&gw_config(
        &up,
        &format!(
            "      - type: introspection\n        url: \"{}/introspect\"\n        client_id: gateway\n        client_secret: \"s&cret\"\n        consumer_claim: username\n        forward_claims: {{ client_id: x-client-id }}\n      - type: acl\n        scopes: [orders:read]\n",
            idp.url()
        ),
    ))
    .await;
    let bearer = |t: &str| format!("Bearer {t}");
    for _ in 0..3 {
        let got = call(&gw, "GET", "/", &[("authorization", &bearer("good-1"))]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["headers"]["x-consumer-name"], "alice");
        assert_eq!(got.json()["headers"]["x-client-id"], "web");
        assert!(got.json()["headers"]["authorization"].is_null());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "answers are cached");
    for _ in 0..2 {
        let got = call(&gw, "GET", "/", &[("authorization", &bearer("revoked-1"))]).await;
        assert_401(&got, "Bearer realm=\"portico\", error=\"invalid_token\"");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "inactive answers are cached too"
    );
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &bearer("good-expired"))],
    )
    .await;
    assert_eq!(
        got.status, 401,
        "an active answer with a past exp is not trusted"
    );
    let got = call(&gw, "GET", "/", &[]).await;
    assert_401(&got, "Bearer realm=\"portico\"");
    assert_eq!(up.hits(), 3);

    // Wrong client credentials at the endpoint: the gateway cannot check tokens → 503.
    let gw2 = gateway(&gw_config(
        &up,
        &format!(
            "      - type: introspection\n        url: \"{}/introspect\"\n        client_id: gateway\n        client_secret: wrong\n",
            idp.url()
        ),
    ))
    .await;
    let got = call(&gw2, "GET", "/", &[("authorization", &bearer("good-2"))]).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["code"], "auth_unavailable");
}

#[tokio::test]
async fn rate_limits_keyed_by_claim_and_composite_keys() {
    let up = echo_server().await;
    let gw = gateway(&gw_config(
        &up,
        &format!(
            "      - type: jwt\n        issuers: [{{ algorithms: [HS256], keys: [{{ secret: \"{SECRET}\" }}] }}]\n      - type: rate_limit\n        key: {{ composite: [{{ claim: tenant }}, {{ header: x-app }}] }}\n        limits: [{{ requests: 1, per: 1m }}]\n"
        ),
    ))
    .await;
    let token = |tenant: &str| {
        mint(
            Algorithm::HS256,
            SECRET,
            None,
            claims(json!({"aud": null, "tenant": tenant})),
        )
    };
    let (a, b) = (token("acme"), token("globex"));
    let send_as = |t: String, app: &'static str| {
        let gw = &gw;
        async move {
            call(
                gw,
                "GET",
                "/",
                &[("authorization", &format!("Bearer {t}")), ("x-app", app)],
            )
            .await
            .status
        }
    };
    assert_eq!(send_as(a.clone(), "web").await, 200);
    assert_eq!(
        send_as(a.clone(), "web").await,
        429,
        "same tenant, same app"
    );
    assert_eq!(
        send_as(a.clone(), "mobile").await,
        200,
        "same tenant, other app"
    );
    assert_eq!(send_as(b.clone(), "web").await, 200, "other tenant");
    // A second token of the same tenant shares the tenant's budget.
    let a2 = mint(
        Algorithm::HS256,
        SECRET,
        None,
        claims(json!({"aud": null, "tenant": "acme", "sub": "bob"})),
    );
    assert_eq!(send_as(a2, "web").await, 429);
}

#[tokio::test]
async fn header_policies_render_token_claims() {
    let up = echo_server().await;
    let k = keys();
    let gw = gateway(&gw_config(
        &up,
        &format!("      - type: jwt\n        issuers: [{{ algorithms: [RS256], keys: [{{ pem_file: \"{k}/rsa.pub\" }}] }}]\n      - type: headers\n        request:\n          set: {{ x-tenant: \"t=%{{claim.tenant}}\", x-level: \"%{{claim.level}}\", x-missing: \"[%{{claim.nope}}]\" }}\n        response:\n          set: {{ x-served-for: \"%{{claim.sub}}\" }}\n"),
    ))
    .await;
    let token = mint(
        Algorithm::RS256,
        "rsa.key",
        None,
        claims(json!({"tenant": "acme", "level": 3})),
    );
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let h = &got.json()["headers"];
    assert_eq!(h["x-tenant"], "t=acme");
    assert_eq!(h["x-level"], "3", "non-string claims are rendered as JSON");
    assert_eq!(h["x-missing"], "[]", "an absent claim renders empty");
    assert_eq!(got.header("x-served-for"), Some("alice"));
}

/// `any_of` offers each distinct challenge once: three `jwt` policies with one realm send one
/// `Bearer` challenge, a fourth with its own realm another.
#[tokio::test]
async fn any_of_sends_each_distinct_challenge_once() {
    let up = echo_server().await;
    let jwt = |secret: &str, realm: &str| {
        format!(
            "          - type: jwt\n            issuers: [{{ algorithms: [HS256], keys: [{{ secret: \"{secret}\" }}] }}]\n{realm}"
        )
    };
    let gw = gateway(&gw_config(
        &up,
        &format!(
            "      - type: any_of\n        policies:\n{}{}{}{}",
            jwt(SECRET, ""),
            jwt("a-second-hmac-secret-of-more-than-32-bytes", ""),
            jwt("a-third-hmac-secret-of-more-than-32-bytes!", ""),
            jwt(
                "a-fourth-hmac-secret-of-more-than-32-bytes",
                "            realm: partners\n"
            ),
        ),
    ))
    .await;
    let challenges = |got: &Got| -> Vec<String> {
        got.headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let got = call(&gw, "GET", "/", &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        challenges(&got),
        ["Bearer realm=\"portico\"", "Bearer realm=\"partners\""]
    );
    // A token none accepts: the same, each with `error="invalid_token"`.
    let wrong = mint(
        Algorithm::HS256,
        "not-any-of-the-four-secrets-but-long-enough",
        None,
        claims(json!({})),
    );
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &format!("Bearer {wrong}"))],
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(
        challenges(&got),
        [
            "Bearer realm=\"portico\", error=\"invalid_token\"",
            "Bearer realm=\"partners\", error=\"invalid_token\""
        ]
    );
    // Any of the three accepts its own token.
    let ok = mint(
        Algorithm::HS256,
        "a-third-hmac-secret-of-more-than-32-bytes!",
        None,
        claims(json!({"aud": null})),
    );
    let got = call(
        &gw,
        "GET",
        "/",
        &[("authorization", &format!("Bearer {ok}"))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
}
