//! `consumers` and the identity and access policies as written (`api_key`, `basic_auth`, `jwt`,
//! `introspection`, `client_cert`, `acl`, `ip_filter`, `cors`). `any_of`, which lists other
//! policies, stays with [`PolicyConfig`](super::PolicyConfig).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Unique name; sent upstream in the consumer header and usable as a rate-limit key.
    pub name: String,
    /// Groups, for `acl` policies.
    #[serde(default)]
    pub groups: Vec<String>,
    /// API keys as SHA-256 digests, `sha256:<hex>` (`portico hash api-key KEY` prints one).
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Basic-auth credentials.
    #[serde(default)]
    pub basic_auth: Option<BasicCredentialConfig>,
    /// Client-certificate names that identify this consumer: a SAN URI (such as a SPIFFE ID),
    /// a SAN DNS name, or the subject common name.
    #[serde(default)]
    pub client_cert_names: Vec<String>,
    /// Free-form labels, shown on the admin port; not sent anywhere.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredentialConfig {
    /// User name. Default: the consumer's name.
    #[serde(default)]
    pub username: Option<String>,
    /// An argon2 (`$argon2id$…`) or bcrypt (`$2b$…`) hash (`portico hash password` prints one).
    pub password_hash: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyPolicyConfig {
    /// Header that carries the key. Default `X-API-Key`.
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter that may carry the key instead; removed before the request goes upstream.
    #[serde(default)]
    pub query: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthPolicyConfig {
    /// Realm in the `WWW-Authenticate` challenge. Default `portico`.
    #[serde(default)]
    pub realm: Option<String>,
    /// How long a verified user/password pair is remembered, so a busy client is not
    /// re-hashed per request. Default `5m`; `0s` turns the cache off.
    #[serde(default)]
    pub cache_ttl: Option<DurationStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicyConfig {
    /// Trusted issuers; a token is checked against the one named by its `iss`.
    pub issuers: Vec<JwtIssuerConfig>,
    /// Where the token is read, tried in order. Default: `Authorization: Bearer`.
    #[serde(default)]
    pub from: Vec<TokenSourceConfig>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default `30s`.
    #[serde(default)]
    pub leeway: Option<DurationStr>,
    /// Refuse tokens without `exp`. Default `true`.
    #[serde(default)]
    pub require_exp: Option<bool>,
    /// Claims that must be present.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim rules: the claim's value (or one of its elements or space-separated words) must be
    /// one of the listed values, e.g. `{ role: [admin, ops] }`.
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
    /// A claim whose value names a consumer (e.g. `sub`); that consumer is then identified.
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Send the token upstream in the header it came in. Default `false`: the header is
    /// removed once the token is accepted.
    #[serde(default)]
    pub forward_token: bool,
    /// How many verified tokens are remembered, so a client reusing its token is not
    /// re-verified per request. An entry lasts until the token's `exp` or 5 minutes, whichever
    /// comes first. Default 10000; 0 turns the cache off.
    #[serde(default)]
    pub token_cache_size: Option<usize>,
    /// Claims sent upstream as headers, e.g. `{ sub: X-User-Id }`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Realm in the `WWW-Authenticate` challenge. Default `portico`.
    #[serde(default)]
    pub realm: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// The `iss` value. Required when the policy has more than one issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Algorithms this issuer signs with; tokens with any other `alg` are refused.
    pub algorithms: Vec<String>,
    /// Accepted `aud` values; when set, the token's `aud` must contain one.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Keys given in the config. Exactly one of `keys` and `jwks_url`.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// URL of the issuer's JWKS, fetched in the background.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again. Default `5m`.
    #[serde(default)]
    pub jwks_refresh: Option<DurationStr>,
    /// Least time between fetches caused by tokens with an unknown `kid`. Default `30s`.
    #[serde(default)]
    pub jwks_min_refresh: Option<DurationStr>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id, matched against the token's `kid`.
    #[serde(default)]
    pub kid: Option<String>,
    /// PEM file with a public key (RS/PS, ES, EdDSA algorithms).
    #[serde(default)]
    pub pem_file: Option<String>,
    /// A shared secret (HS algorithms); use `${VAR}` to keep it out of the file.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the shared secret (HS algorithms), read at load, relative to the config
    /// file; one trailing newline is ignored.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// One place a token may be.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSourceConfig {
    /// A header; for `Authorization` the `Bearer` scheme is required and stripped.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter; removed before the request goes upstream.
    Query(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionPolicyConfig {
    /// The introspection endpoint, `https://…` (or `http://` to a local address).
    pub url: String,
    /// The gateway's client id at the authorization server (sent with HTTP Basic).
    pub client_id: String,
    /// The gateway's client secret; use `${VAR}` to keep it out of the file.
    pub client_secret: String,
    /// Where the token is read, tried in order. Default: `Authorization: Bearer`.
    #[serde(default)]
    pub from: Vec<TokenSourceConfig>,
    /// Time allowed for the endpoint to answer. Default `2s`.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// How many answers are remembered. Default 10000; 0 asks the endpoint for every request.
    #[serde(default)]
    pub cache_size: Option<usize>,
    /// Longest an answer is remembered; an active token's entry also ends at its `exp`.
    /// Default `60s`.
    #[serde(default)]
    pub cache_ttl: Option<DurationStr>,
    /// Claim rules on the introspection response, as for `jwt` (`scope` is read word by word).
    #[serde(default)]
    pub claims: BTreeMap<String, Vec<String>>,
    /// A response field whose value names a consumer (e.g. `client_id` or `username`).
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Response fields sent upstream as headers, e.g. `{ username: X-User }`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Realm in the `WWW-Authenticate` challenge. Default `portico`.
    #[serde(default)]
    pub realm: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertPolicyConfig {
    /// Send the certificate's hash, subject and names upstream in this header.
    #[serde(default)]
    pub forward_header: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AclPolicyConfig {
    /// The consumer must be in one of these groups.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The consumer must be in none of these groups.
    #[serde(default)]
    pub deny: Vec<String>,
    /// The token must carry all these scopes (`scope` or `scp` claim).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Apply only to these methods. Default: all.
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpFilterPolicyConfig {
    /// Only these networks may pass (CIDRs or addresses). Empty: all not denied.
    #[serde(default)]
    pub allow: Vec<String>,
    /// These networks are refused, even when also allowed.
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicyConfig {
    /// Allowed origins (`https://app.example.com`), `*.example.com` style wildcards, or `*`.
    pub origins: Vec<String>,
    /// Allowed methods. Default `GET, HEAD, POST`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed request headers. Default: those the preflight asks for.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers the browser may expose to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials. Not allowed with origin `*`. Default `false`.
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight answer. Default `10m`.
    #[serde(default)]
    pub max_age: Option<DurationStr>,
}
