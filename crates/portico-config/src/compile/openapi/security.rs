//! An operation's `security` requirements as the policy nodes that enforce them: API keys and
//! Basic straight from the document, bearer tokens through the `jwt` or `introspection` policy
//! the config gives for the scheme, scopes through one `acl`.

use std::collections::HashMap;

use crate::tree::{Loc, Node, NodeKind, suggest};

use super::super::ctx::{Ctx, get};
use super::Synth;
use super::doc::{self, Problem};

/// The way out of any requirement that cannot be mapped, named in every such hint.
const WAY_OUT: &str = "or set `enforce_security: false` for the operation (under `operations:` or its tag in the config) and authenticate with its own `policies`";

/// A scheme of `components.securitySchemes` and the policy that enforces it.
struct Scheme<'n> {
    kind: Kind,
    /// The config's `security.<name>` entry.
    entry: Option<&'n Node>,
    /// Whether that entry has a type that fits the scheme (checked once, at the config key).
    entry_ok: bool,
}

enum Kind {
    /// `apiKey` in a header (`true`) or in the query (`false`), under this name.
    ApiKey {
        header: bool,
        name: String,
    },
    Basic,
    /// `http bearer`, `oauth2` or `openIdConnect`: a token the config's policy checks. `what`
    /// names the scheme in messages; `url` is where the document says its tokens come from.
    Token {
        what: String,
        url: Option<String>,
    },
    MutualTls,
    /// A scheme the gateway cannot enforce, or one written wrong.
    Bad(Problem),
}

impl Kind {
    /// The policy types a config entry for the scheme may have.
    fn entry_types(&self) -> &'static [&'static str] {
        match self {
            Kind::ApiKey { .. } => &["api_key"],
            Kind::Basic => &["basic_auth"],
            Kind::Token { .. } => &["jwt", "introspection"],
            Kind::MutualTls => &["client_cert"],
            Kind::Bad(_) => &[],
        }
    }

    /// Whether the scheme's tokens carry scopes (API keys, Basic and certificates do not).
    fn scoped(&self) -> bool {
        matches!(self, Kind::Token { .. })
    }
}

/// The document's security schemes, with the config's `security:` entries checked against
/// them: a key naming no scheme, or an entry of a type that cannot enforce its scheme, is
/// reported at the config key.
pub(super) struct Schemes<'n> {
    by_name: HashMap<String, Scheme<'n>>,
}

impl<'n> Schemes<'n> {
    pub(super) fn read(cx: &mut Ctx<'_>, root: &'n Node, api: &'n Node) -> Self {
        let mut by_name = HashMap::new();
        if let Some(NodeKind::Map(entries)) = get(root, "components")
            .and_then(|c| get(c, "securitySchemes"))
            .map(|s| &s.kind)
        {
            for (k, v) in entries {
                // Unresolved `$ref`s were reported by the `$ref` walk before this runs.
                let kind = match doc::resolve(root, v) {
                    Ok(s) => kind(s),
                    Err(p) => Kind::Bad(p),
                };
                by_name.insert(
                    k.key_text(),
                    Scheme {
                        kind,
                        entry: None,
                        entry_ok: false,
                    },
                );
            }
        }
        let mut names: Vec<&str> = by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut entries = Vec::new();
        if let Some(NodeKind::Map(items)) = get(api, "security").map(|s| &s.kind) {
            for (k, v) in items {
                let name = k.key_text();
                let Some(scheme) = by_name.get(&name) else {
                    let hint = if names.is_empty() {
                        format!("the document declares no `securitySchemes`; remove `{name}`")
                    } else {
                        suggest(&name, &names)
                    };
                    cx.sink.at(
                        k.loc,
                        format!("the document has no security scheme `{name}`"),
                        hint,
                    );
                    continue;
                };
                let allowed = scheme.kind.entry_types();
                let ty = get(v, "type").and_then(Node::as_str).unwrap_or("");
                let ok = allowed.is_empty() || allowed.contains(&ty);
                if !ok {
                    cx.sink.at(
                        k.loc,
                        format!(
                            "security scheme `{name}` cannot be enforced by a policy of type `{ty}`"
                        ),
                        format!(
                            "give it a policy of type {}",
                            allowed
                                .iter()
                                .map(|t| format!("`{t}`"))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    );
                }
                entries.push((name, v, ok));
            }
        }
        for (name, v, ok) in entries {
            if let Some(s) = by_name.get_mut(&name) {
                s.entry = Some(v);
                s.entry_ok = ok;
            }
        }
        Schemes { by_name }
    }

    /// The policy nodes that enforce `security` (an operation's or the document's), in chain
    /// order. `Err` holds the document's problems; it is empty when the fault is a config
    /// entry already reported at its key.
    pub(super) fn policies(
        &self,
        api_name: &str,
        security: &Node,
        at: Loc,
    ) -> Result<Vec<Node>, Vec<Problem>> {
        let NodeKind::Seq(alternatives) = &security.kind else {
            return Err(vec![Problem {
                loc: security.loc,
                msg: format!(
                    "`security` must be a list of requirements, found {}",
                    security.type_name()
                ),
                hint: "write `security: [{ schemeName: [] }]`, or `security: []` for none".into(),
            }]);
        };
        let mut problems = Vec::new();
        let mut config_fault = false;
        // Each alternative: its policy nodes (one per scheme) and its scopes.
        let mut alts: Vec<(Loc, Vec<Node>, Vec<String>)> = Vec::new();
        for alt in alternatives {
            let NodeKind::Map(reqs) = &alt.kind else {
                problems.push(Problem {
                    loc: alt.loc,
                    msg: format!(
                        "a security requirement must be a mapping of scheme names to scopes, found {}",
                        alt.type_name()
                    ),
                    hint: "write `{ schemeName: [] }`".into(),
                });
                continue;
            };
            if reqs.is_empty() {
                problems.push(Problem {
                    loc: alt.loc,
                    msg: "an empty requirement `{}` makes authentication optional, which the gateway does not enforce".into(),
                    hint: format!(
                        "a request without credentials would pass, and one with wrong credentials would be refused, which no policy chain expresses; remove `{{}}` to require authentication, {WAY_OUT}"
                    ),
                });
                continue;
            }
            let mut nodes = Vec::new();
            let mut scopes = Vec::new();
            for (k, v) in reqs {
                let name = k.key_text();
                let Some(scheme) = self.by_name.get(&name) else {
                    let mut known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    problems.push(Problem {
                        loc: k.loc,
                        msg: format!(
                            "security scheme `{name}` is not declared under `components.securitySchemes`"
                        ),
                        hint: if known.is_empty() {
                            format!("declare it under `components.securitySchemes`, {WAY_OUT}")
                        } else {
                            suggest(&name, &known)
                        },
                    });
                    continue;
                };
                let wanted: Vec<String> = match &v.kind {
                    NodeKind::Seq(items) => items.iter().map(Node::key_text).collect(),
                    _ => {
                        problems.push(Problem {
                            loc: v.loc,
                            msg: format!(
                                "the scopes of `{name}` must be a list, found {}",
                                v.type_name()
                            ),
                            hint: "write `[]` for none".into(),
                        });
                        continue;
                    }
                };
                if !wanted.is_empty() && !scheme.kind.scoped() {
                    problems.push(Problem {
                        loc: v.loc,
                        msg: format!(
                            "security scheme `{name}` is given scopes, and its credentials carry none"
                        ),
                        hint: format!(
                            "only `oauth2`, `openIdConnect` and `http bearer` tokens carry scopes the gateway can check; write `{name}: []` and check roles with an `acl` under the operation's `policies` (`allow: [group]`), {WAY_OUT}"
                        ),
                    });
                    continue;
                }
                for s in wanted {
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                match self.node(api_name, &name, scheme, k.loc, at) {
                    Ok(Some(n)) => nodes.push(n),
                    Ok(None) => config_fault = true,
                    Err(p) => problems.push(p),
                }
            }
            alts.push((alt.loc, nodes, scopes));
        }
        if !problems.is_empty() || config_fault {
            return Err(problems);
        }
        let synth = Synth { at };
        let mut out = Vec::new();
        let scopes = if let [(_, nodes, scopes)] = alts.as_mut_slice() {
            out.append(nodes);
            std::mem::take(scopes)
        } else {
            // `any_of` holds single authentication policies: an alternative of several schemes
            // (all of them required) has no place in it.
            for (l, nodes, _) in &alts {
                if nodes.len() > 1 {
                    problems.push(Problem {
                        loc: *l,
                        msg: "an alternative that requires several schemes at once cannot be one of several alternatives".into(),
                        hint: format!(
                            "the gateway offers a choice between single schemes (`any_of`); split the document's requirement so that each alternative names one scheme, {WAY_OUT}"
                        ),
                    });
                }
            }
            let first = &alts[0].2;
            let mut sorted_first = first.clone();
            sorted_first.sort();
            for (l, _, s) in &alts[1..] {
                let mut sorted = s.clone();
                sorted.sort();
                if sorted != sorted_first {
                    problems.push(Problem {
                        loc: *l,
                        msg: format!(
                            "the alternatives ask for different scopes ([{}] and [{}])",
                            first.join(", "),
                            s.join(", ")
                        ),
                        hint: format!(
                            "the gateway checks one set of scopes whichever alternative authenticated; give every alternative the same scopes, {WAY_OUT}"
                        ),
                    });
                }
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            let scopes = alts[0].2.clone();
            let methods: Vec<Node> = alts.into_iter().flat_map(|(_, n, _)| n).collect();
            out.push(synth.map([
                Some(("type", synth.str("any_of"))),
                Some((
                    "policies",
                    Node {
                        kind: NodeKind::Seq(methods),
                        loc: at,
                    },
                )),
            ]));
            scopes
        };
        if !scopes.is_empty() {
            let scopes = scopes.iter().map(|s| synth.str(s)).collect();
            out.push(synth.map([
                Some(("type", synth.str("acl"))),
                Some((
                    "scopes",
                    Node {
                        kind: NodeKind::Seq(scopes),
                        loc: at,
                    },
                )),
            ]));
        }
        Ok(out)
    }

    /// The policy node for one scheme named at `req` in a requirement; `Ok(None)` when its
    /// config entry has the wrong type (reported at the config already).
    fn node(
        &self,
        api_name: &str,
        name: &str,
        scheme: &Scheme<'_>,
        req: Loc,
        at: Loc,
    ) -> Result<Option<Node>, Problem> {
        if scheme.entry.is_some() && !scheme.entry_ok {
            return Ok(None);
        }
        // Located at the config entry when there is one, so that the checks of the policy
        // (and of the consumers it needs) point at the config.
        let synth = Synth {
            at: scheme.entry.map_or(at, |e| e.loc),
        };
        let typed = |ty: &str| synth.map([Some(("type", synth.str(ty)))]);
        Ok(Some(match (&scheme.kind, scheme.entry) {
            (Kind::Bad(p), _) => return Err(p.clone()),
            (Kind::ApiKey { header, name }, entry) => {
                let key = if *header { "header" } else { "query" };
                let mut n = entry.cloned().unwrap_or_else(|| typed("api_key"));
                if get(&n, key).is_none()
                    && let NodeKind::Map(items) = &mut n.kind
                {
                    items.push((
                        Node {
                            kind: NodeKind::Str(key.to_owned()),
                            loc: synth.at,
                        },
                        synth.str(name),
                    ));
                }
                n
            }
            (Kind::Basic, entry) => entry.cloned().unwrap_or_else(|| typed("basic_auth")),
            (Kind::MutualTls, entry) => entry.cloned().unwrap_or_else(|| typed("client_cert")),
            (Kind::Token { .. }, Some(entry)) => entry.clone(),
            (Kind::Token { what, url }, None) => {
                let source = match url {
                    Some(u) => format!(
                        " (the document names {u}; take the issuer and JWKS URL from there)"
                    ),
                    None => String::new(),
                };
                return Err(Problem {
                    loc: req,
                    msg: format!(
                        "security scheme `{name}` ({what}) needs a `jwt` or `introspection` policy under `security:` of API `{api_name}` in the config"
                    ),
                    hint: format!(
                        "add to the API in the config: `security: {{ {name}: {{ type: jwt, issuers: [{{ issuer: https://idp.example.com, algorithms: [RS256], jwks_url: https://idp.example.com/jwks.json }}] }} }}` (or `type: introspection`){source}; {WAY_OUT}"
                    ),
                });
            }
        }))
    }
}

/// What a declared scheme is, from its `type` and the keys that go with it.
fn kind(s: &Node) -> Kind {
    let text = |k: &str| get(s, k).and_then(Node::as_str);
    let missing = |k: &str, what: &str| {
        Kind::Bad(Problem {
            loc: s.loc,
            msg: format!("this {what}security scheme has no `{k}`"),
            hint: format!("add `{k}`, as OpenAPI requires"),
        })
    };
    let Some(ty) = text("type") else {
        return missing("type", "");
    };
    match ty {
        "apiKey" => {
            let Some(name) = text("name") else {
                return missing("name", "apiKey ");
            };
            match text("in") {
                Some("header") => Kind::ApiKey {
                    header: true,
                    name: name.to_owned(),
                },
                Some("query") => Kind::ApiKey {
                    header: false,
                    name: name.to_owned(),
                },
                Some("cookie") => Kind::Bad(Problem {
                    loc: get(s, "in").map_or(s.loc, |n| n.loc),
                    msg: "API keys in a cookie are not enforced by the gateway".into(),
                    hint: format!(
                        "the `api_key` policy reads a header or a query parameter; move the key to `in: header`, {WAY_OUT}"
                    ),
                }),
                Some(other) => Kind::Bad(Problem {
                    loc: get(s, "in").map_or(s.loc, |n| n.loc),
                    msg: format!("`in: {other}` is not a place for an API key"),
                    hint: "write `in: header`, `in: query` or `in: cookie`".into(),
                }),
                None => missing("in", "apiKey "),
            }
        }
        "http" => match text("scheme").map(str::to_ascii_lowercase).as_deref() {
            Some("basic") => Kind::Basic,
            Some("bearer") => Kind::Token {
                what: "http bearer".into(),
                url: None,
            },
            Some(other) => Kind::Bad(Problem {
                loc: get(s, "scheme").map_or(s.loc, |n| n.loc),
                msg: format!("HTTP authentication scheme `{other}` is not enforced by the gateway"),
                hint: format!("the gateway enforces `basic` and `bearer`; {WAY_OUT}"),
            }),
            None => missing("scheme", "http "),
        },
        "oauth2" => Kind::Token {
            what: "oauth2".into(),
            url: token_url(s),
        },
        "openIdConnect" => Kind::Token {
            what: "openIdConnect".into(),
            url: text("openIdConnectUrl").map(str::to_owned),
        },
        "mutualTLS" => Kind::MutualTls,
        other => Kind::Bad(Problem {
            loc: get(s, "type").map_or(s.loc, |n| n.loc),
            msg: format!("unknown security scheme type `{other}`"),
            hint: "OpenAPI's types are `apiKey`, `http`, `oauth2`, `openIdConnect` and `mutualTLS`"
                .into(),
        }),
    }
}

/// The first `tokenUrl` (or `authorizationUrl`) of an oauth2 scheme's flows.
fn token_url(s: &Node) -> Option<String> {
    let NodeKind::Map(flows) = &get(s, "flows")?.kind else {
        return None;
    };
    flows.iter().find_map(|(_, f)| {
        get(f, "tokenUrl")
            .or_else(|| get(f, "authorizationUrl"))
            .and_then(Node::as_str)
            .map(str::to_owned)
    })
}
