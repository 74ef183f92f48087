//! `apis` as written: an OpenAPI document whose operations become routes, and the settings
//! that go with them for the whole API, per tag and per operation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration::DurationStr;

use super::policy::PolicyConfig;
use super::route::SplitConfig;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Names the API in messages. Default `api-N` (N counts from 1).
    #[serde(default)]
    pub name: Option<String>,
    /// The OpenAPI 3.0 or 3.1 document, YAML or JSON, relative to the config file.
    pub openapi: String,
    /// The path in front of every operation's path. Default: the path of the document's first
    /// server URL (variables take their defaults); `""` for none.
    #[serde(default)]
    pub base_path: Option<String>,
    /// Send the operation's path upstream without the base path. Default `false`.
    #[serde(default)]
    pub strip_base_path: bool,
    /// Host names the routes match, as a route's `match.hosts`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The upstream that serves the operations (unless a tag or operation names another).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Spread requests over several upstreams by weight, instead of `upstream`.
    #[serde(default)]
    pub split: Vec<SplitConfig>,
    /// Overrides the upstream's `request_timeout` for every operation.
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// Put in front of each operationId to make the route's name. Default `""`.
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// Policies for every operation, after the global ones.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// The policy that enforces a security scheme of the document, by scheme name: `jwt` or
    /// `introspection` for `http bearer`, `oauth2` and `openIdConnect` schemes (required for
    /// those); `api_key`, `basic_auth` or `client_cert` to refine the policy derived from the
    /// document.
    #[serde(default)]
    pub security: BTreeMap<String, PolicyConfig>,
    /// Answer every operation with an example from the document instead of calling an
    /// upstream. Default `false`.
    #[serde(default)]
    pub mock: Option<MockConfig>,
    /// `false`: the document's `security` requirements are not turned into policies for any
    /// operation (unless a tag or operation sets `true`); the API's `policies` must then do
    /// the authentication. Default `true`.
    #[serde(default)]
    pub enforce_security: Option<bool>,
    /// Check each request against its operation's parameters, content types and body schema,
    /// after authentication, and refuse what breaks the contract (400, or 415 for the content
    /// type). Default `true`; a tag or operation may turn it off.
    #[serde(default)]
    pub validate_requests: Option<bool>,
    /// Bounds on request validation.
    #[serde(default)]
    pub validation_limits: Option<ValidationLimits>,
    /// Check the upstream's answers against the operation's `responses` (status, media type,
    /// JSON body): `true`, or `{ sample, enforce }`. Default `false`; a tag or operation may
    /// set its own.
    #[serde(default)]
    pub check_responses: Option<ResponseChecks>,
    /// Settings for the operations with a tag, by tag name.
    #[serde(default)]
    pub tags: BTreeMap<String, ApiOperationConfig>,
    /// Settings for one operation, by operationId.
    #[serde(default)]
    pub operations: BTreeMap<String, ApiOperationConfig>,
}

/// Settings of the operations with a tag, or of one operation. An operation's own win over its
/// tags', which win over the API's.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiOperationConfig {
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub split: Vec<SplitConfig>,
    #[serde(default)]
    pub timeout: Option<DurationStr>,
    /// Appended after the API's policies (tags' in the operation's tag order, then the
    /// operation's).
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    #[serde(default)]
    pub mock: Option<MockConfig>,
    /// Make no route for the operation.
    #[serde(default)]
    pub skip: Option<bool>,
    /// `false` accepts an operation whose `security` requirements the gateway does not
    /// enforce; its `policies` must then do the authentication.
    #[serde(default)]
    pub enforce_security: Option<bool>,
    /// Check requests against the operation's contract. Default: the API's.
    #[serde(default)]
    pub validate_requests: Option<bool>,
    /// Check answers against the operation's `responses`. Default: the API's.
    #[serde(default)]
    pub check_responses: Option<ResponseChecks>,
}

/// `true`, `false`, or how many answers to check and what to do with one that breaks the
/// contract (`{ sample, enforce }`).
pub type ResponseChecks = BoolOr<ResponseCheckSettings>;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseCheckSettings {
    /// The share of answers checked, from 0 to 1. Default 1 (every answer).
    #[serde(default)]
    pub sample: Option<f64>,
    /// `true`: an answer that breaks the contract is replaced by a 502
    /// `upstream_contract_violation`. Default `false`: it is counted and logged, and passes.
    #[serde(default)]
    pub enforce: Option<bool>,
}

/// Bounds on the work of checking one request.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationLimits {
    /// The largest JSON body read for checking, in bytes; a larger one is refused with 413.
    /// Default 1048576 (1 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// How deep arrays and objects may nest in a body, 1 to 100. Default 64.
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// How many failures one refusal lists, 1 to 100. Default 20.
    #[serde(default)]
    pub max_errors: Option<u32>,
}

/// `true`, `false`, or a mapping of settings: the shape of `mock` and `check_responses`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum BoolOr<T> {
    On(bool),
    With(T),
}

// By hand rather than `untagged`: a misspelt key inside the mapping is then reported as that
// key, with a did-you-mean, instead of "did not match any variant".
impl<'de, T: Deserialize<'de>> Deserialize<'de> for BoolOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = BoolOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false` or a mapping of settings")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<BoolOr<T>, E> {
                Ok(BoolOr::On(b))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<BoolOr<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(BoolOr::With)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `true`, `false`, or which response, example and media type to answer with.
pub type MockConfig = BoolOr<MockSettings>;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockSettings {
    /// A key of the operation's `responses`. Default: the lowest 2xx with an example.
    #[serde(default)]
    pub status: Option<u16>,
    /// A name under the media type's `examples`. Default: its `example`, else the first of its
    /// `examples`, else the schema's example.
    #[serde(default)]
    pub example: Option<String>,
    /// A key of the response's `content`. Default: a JSON one, else the first.
    #[serde(default)]
    pub media_type: Option<String>,
}
