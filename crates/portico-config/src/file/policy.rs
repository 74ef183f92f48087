//! Policies as written: [`PolicyConfig`], selected by `type` and read by hand so that errors
//! keep their location, and every policy that is not about identity or access.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

use super::auth::{
    AclPolicyConfig, ApiKeyPolicyConfig, BasicAuthPolicyConfig, ClientCertPolicyConfig,
    CorsPolicyConfig, IntrospectionPolicyConfig, IpFilterPolicyConfig, JwtPolicyConfig,
};

/// `Deserialize` for [`PolicyConfig`]: the `type` entry is read first (the config tree hands
/// it over first when asked for [`crate::tree::TYPE_FIRST`]), then the rest of the mapping is
/// read straight into the variant's struct, so an error in it is reported at its key.
macro_rules! policy_types {
    ($($tag:literal => $variant:ident($ty:ty),)*) => {
        /// Every policy `type`.
        pub const POLICY_TYPES: &[&str] = &[$($tag),*];

        impl<'de> Deserialize<'de> for PolicyConfig {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

                /// The `type` value, refused at its own position when it names no policy.
                struct Tag;
                impl<'de> DeserializeSeed<'de> for Tag {
                    type Value = String;
                    fn deserialize<D: serde::Deserializer<'de>>(
                        self,
                        d: D,
                    ) -> Result<String, D::Error> {
                        let t = String::deserialize(d)?;
                        if POLICY_TYPES.contains(&t.as_str()) {
                            Ok(t)
                        } else {
                            Err(de::Error::unknown_variant(&t, POLICY_TYPES))
                        }
                    }
                }

                struct Policy;
                impl<'de> Visitor<'de> for Policy {
                    type Value = PolicyConfig;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a policy: a mapping with `type`")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PolicyConfig, A::Error> {
                        match map.next_key::<String>()? {
                            Some(k) if k == "type" => {}
                            _ => return Err(de::Error::missing_field("type")),
                        }
                        let tag = map.next_value_seed(Tag)?;
                        let rest = de::value::MapAccessDeserializer::new(map);
                        match tag.as_str() {
                            $($tag => <$ty>::deserialize(rest).map(PolicyConfig::$variant),)*
                            other => Err(de::Error::unknown_variant(other, POLICY_TYPES)),
                        }
                    }
                }

                d.deserialize_struct(crate::tree::TYPE_FIRST, &["type"], Policy)
            }
        }
    };
}

/// A policy in the chain, selected by `type`. Read by hand (below), not with serde's
/// internally tagged enums, which buffer the mapping and so lose where each key was written.
#[derive(Debug, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Add, set or remove headers on the request and the response.
    Headers(HeadersPolicyConfig),
    /// Limit request rates per key, on this gateway instance.
    RateLimit(RateLimitPolicyConfig),
    /// Require an API key of a consumer.
    ApiKey(ApiKeyPolicyConfig),
    /// Require HTTP Basic credentials of a consumer.
    BasicAuth(BasicAuthPolicyConfig),
    /// Require a valid JWT from a trusted issuer.
    Jwt(JwtPolicyConfig),
    /// Require a verified TLS client certificate (mutual TLS).
    ClientCert(ClientCertPolicyConfig),
    /// Check opaque tokens at the issuer's OAuth2 introspection endpoint (RFC 7662).
    Introspection(IntrospectionPolicyConfig),
    /// Require any one of several authentication methods (the first that succeeds wins).
    AnyOf(AnyOfPolicyConfig),
    /// Allow or deny by consumer group and required token scopes.
    Acl(AclPolicyConfig),
    /// Allow or deny by client address (after `trusted_proxies`).
    IpFilter(IpFilterPolicyConfig),
    /// Cross-origin resource sharing: answer preflights, add CORS response headers.
    Cors(CorsPolicyConfig),
    /// Refuse request bodies larger than a limit with 413.
    BodyLimit(BodyLimitPolicyConfig),
    /// Cap requests in flight per key; more get 503 at once instead of queueing.
    ConcurrencyLimit(ConcurrencyLimitPolicyConfig),
    /// Compress responses (gzip, brotli, zstd) as the client's `Accept-Encoding` allows.
    Compression(CompressionPolicyConfig),
    /// Decode compressed request bodies (gzip, deflate, brotli, zstd) before they go upstream.
    RequestDecompression(RequestDecompressionPolicyConfig),
    /// Reshape JSON responses: client sparse fieldsets, removed, renamed and added fields,
    /// status rewrites.
    JsonTransform(JsonTransformPolicyConfig),
    /// Convert bodies between XML and JSON (the generic mapping), in either direction.
    XmlJson(XmlJsonPolicyConfig),
    /// Keep cacheable responses in memory and answer from there while they are fresh.
    Cache(CachePolicyConfig),
}

policy_types! {
    "headers" => Headers(HeadersPolicyConfig),
    "rate_limit" => RateLimit(RateLimitPolicyConfig),
    "api_key" => ApiKey(ApiKeyPolicyConfig),
    "basic_auth" => BasicAuth(BasicAuthPolicyConfig),
    "jwt" => Jwt(JwtPolicyConfig),
    "client_cert" => ClientCert(ClientCertPolicyConfig),
    "introspection" => Introspection(IntrospectionPolicyConfig),
    "any_of" => AnyOf(AnyOfPolicyConfig),
    "acl" => Acl(AclPolicyConfig),
    "ip_filter" => IpFilter(IpFilterPolicyConfig),
    "cors" => Cors(CorsPolicyConfig),
    "body_limit" => BodyLimit(BodyLimitPolicyConfig),
    "concurrency_limit" => ConcurrencyLimit(ConcurrencyLimitPolicyConfig),
    "compression" => Compression(CompressionPolicyConfig),
    "request_decompression" => RequestDecompression(RequestDecompressionPolicyConfig),
    "json_transform" => JsonTransform(JsonTransformPolicyConfig),
    "xml_json" => XmlJson(XmlJsonPolicyConfig),
    "cache" => Cache(CachePolicyConfig),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePolicyConfig {
    /// Most responses kept. Default 10000.
    #[serde(default)]
    pub max_entries: Option<u64>,
    /// Largest response body kept, in bytes. Default 1048576.
    #[serde(default)]
    pub max_object_bytes: Option<u64>,
    /// What tells two requests' answers apart besides method, host and path.
    #[serde(default)]
    pub key: Option<CacheKeyConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheKeyConfig {
    /// Query parameters in the key: `all` (default), `none`, or a list of names (their order
    /// in the request then does not matter).
    #[serde(default)]
    pub query: Option<CacheKeyQueryConfig>,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CacheKeyQueryConfig {
    Word(String),
    Names(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonTransformPolicyConfig {
    /// Let clients keep only some fields with `?fields=a,b.c`. Default `false`.
    #[serde(default)]
    pub sparse_fieldsets: bool,
    /// Remove these fields (dotted paths; through arrays they apply to each element).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Rename top-level fields: `{ old: new }`.
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// Set top-level fields to these JSON values.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, serde_json::Value>,
    /// Answer with another status: `{ 201: 200 }`.
    #[serde(default)]
    pub status: std::collections::BTreeMap<u16, u16>,
    /// Largest body reshaped (bytes); larger ones, and bodies without a length, pass as they
    /// are. Default 1048576.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompressionPolicyConfig {
    /// Codings offered, in order of preference when the client likes several equally.
    /// Default `[br, zstd, gzip]`.
    #[serde(default)]
    pub algorithms: Vec<CodingConfig>,
    /// Bodies whose `Content-Length` is below this many bytes are sent as they are. Default
    /// 1024.
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// Media types compressed (`text/*` covers every `text/` type). Default: text types,
    /// JSON, JavaScript, XML, SVG, and `+json`/`+xml` types.
    #[serde(default)]
    pub content_types: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlJsonPolicyConfig {
    /// What happens to request bodies: `json_to_xml` (default), `xml_to_json` or `none`.
    #[serde(default)]
    pub request: Option<XmlDirectionConfig>,
    /// What happens to response bodies: `xml_to_json` (default), `json_to_xml` or `none`.
    #[serde(default)]
    pub response: Option<XmlDirectionConfig>,
    /// Root element for JSON that is not an object with a single key. Default `root`.
    #[serde(default)]
    pub root: Option<String>,
    /// Namespace prefixes declared on the root of XML written from JSON, e.g.
    /// `{ inv: "urn:inventory" }` (`""` for the default namespace).
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Largest body converted, in bytes. Default 1048576.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Deepest XML nesting read. Default 64.
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// Most attributes on one XML element (namespace declarations included), and most
    /// namespace declarations in scope at once. Default 256.
    #[serde(default)]
    pub max_attributes: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum XmlDirectionConfig {
    JsonToXml,
    XmlToJson,
    None,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestDecompressionPolicyConfig {
    /// Largest decoded body, in bytes; past it the request fails with 413. Default 8388608.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CodingConfig {
    Br,
    Zstd,
    Gzip,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimitPolicyConfig {
    /// Requests allowed in flight at once for one key (from the request head until the
    /// response body ends).
    pub max_in_flight: u32,
    /// Who shares the cap: `route`, `client_ip`, `consumer` or `{ header: NAME }`. Default
    /// `route`.
    #[serde(default)]
    pub key: Option<LimitKeyConfig>,
    /// Lower the cap while requests take longer than a target, and raise it back when they
    /// are fast again (load shedding). Key `route` only.
    #[serde(default)]
    pub adaptive: Option<AdaptiveConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Request duration (head to end of response) above which the cap shrinks.
    pub target_latency: DurationStr,
    /// The cap never goes below this. Default 1.
    #[serde(default)]
    pub min_in_flight: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnyOfPolicyConfig {
    /// Two or more of `api_key`, `basic_auth`, `jwt`, `client_cert`, `introspection`.
    pub policies: Vec<PolicyConfig>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyLimitPolicyConfig {
    /// Largest request body accepted, in bytes.
    pub max_bytes: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicyConfig {
    /// Who is limited: `client_ip`, `route`, or `{ header: NAME }`. Default `client_ip`.
    #[serde(default)]
    pub key: Option<LimitKeyConfig>,
    /// One or more limits, all enforced (e.g. a per-second burst and a daily quota).
    pub limits: Vec<LimitConfig>,
    /// Leave out the `RateLimit` and `RateLimit-Policy` response headers. Default `false`.
    #[serde(default)]
    pub hide_headers: bool,
    /// Where counters live: `local` (this instance) or `redis` (shared by every instance using
    /// the top-level `redis`). Default `local`.
    #[serde(default)]
    pub store: Option<LimitStoreConfig>,
    /// With `store: redis`, what happens when Redis cannot answer in time: `fail_open` (serve,
    /// limiting on this instance's own counters) or `fail_closed` (503). Default `fail_open`.
    #[serde(default)]
    pub on_store_failure: Option<StoreFailureConfig>,
    /// With `store: redis`, units taken from Redis at a time per key (a lease spent locally for
    /// up to 1 s): fewer round trips, at the cost of a key's units sitting with one instance.
    /// Never admits more than the limit. Default 1 (a round trip per request).
    #[serde(default)]
    pub batch: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitStoreConfig {
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailureConfig {
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LimitKeyConfig {
    ClientIp,
    Route,
    /// The authenticated consumer (requests without one share one anonymous bucket).
    Consumer,
    Header(String),
    /// A claim of the token a `jwt` or `introspection` policy accepted earlier in the chain
    /// (requests without one share the empty key).
    Claim(String),
    /// Several keys together, e.g. `{ composite: [consumer, route] }`.
    Composite(Vec<LimitKeyConfig>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The window, e.g. `1s`, `1m`, `24h`.
    pub per: DurationStr,
    /// Requests allowed at once before the rate applies. Default: `requests`. Token-bucket
    /// limits only.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `token_bucket` (GCRA: refills continuously, allows `burst` at once) or `sliding_window`
    /// (at most `requests` in any span of `per`, for quotas). Default `token_bucket`.
    #[serde(default)]
    pub algorithm: Option<LimitAlgorithmConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitAlgorithmConfig {
    TokenBucket,
    SlidingWindow,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersPolicyConfig {
    /// Changes to the request sent upstream.
    #[serde(default)]
    pub request: HeaderOpsConfig,
    /// Changes to the response sent to the client.
    #[serde(default)]
    pub response: HeaderOpsConfig,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsConfig {
    /// Replace these headers (or add them when absent).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}
