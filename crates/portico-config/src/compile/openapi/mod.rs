//! `apis`: the operations of OpenAPI documents as routes.
//!
//! Each operation becomes a config node shaped like a `routes:` entry, read into a
//! [`RouteConfig`] and compiled by the same `compile_route` as a hand-written route, so
//! upstreams, timeouts and policies are checked in one place. The parts of that node taken
//! from the config are copies of the config's nodes, so their errors point at the config; the
//! rest is located at the config's `openapi:` value. Problems in the document are reported in
//! the document, at the line and column where they are written.
//!
//! - `doc.rs` — the document: version, `$ref`s, operations, base paths, route paths.
//! - `mock.rs` — the answer of a mocked operation, from the examples of its responses.
//! - `security.rs` — an operation's `security` requirements as the policies that enforce them.

mod bundle;
mod doc;
mod mock;
mod security;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::Method;

use crate::file::{ApiConfig, MockConfig, PathMatchConfig, RouteConfig};
use crate::ir::{HostPattern, Policy, Route, Upstream};
use crate::router::shape;
use crate::tree::{Loc, Node, NodeKind, from_node, suggest};

use super::ctx::{Ctx, get, loc, read_file, resolve};
use super::route::compile_route;
use doc::{Operation, Problem};

/// The routes compiled before the APIs', which their routes and names must not clash with.
pub(super) struct Earlier<'a> {
    pub names: &'a HashMap<String, Loc>,
    /// The config location of each route in `routes`, by index.
    pub locs: &'a [Loc],
}

/// The documents read for one `apis` entry (its own first, then those its `$ref`s name), by
/// the names they are reported under.
struct Doc {
    sources: Vec<bundle::Source>,
}

impl Doc {
    fn err(&self, cx: &mut Ctx<'_>, p: Problem) {
        let (i, at) = doc::split(p.loc);
        let s = self.sources.get(i).unwrap_or(&self.sources[0]);
        let msg = bundle::as_written(&p.msg, i, &self.sources);
        cx.sink
            .error_in(&s.name, &s.text, Some(at), msg, Some(p.hint));
    }

    fn at(&self, l: Loc) -> String {
        let (i, at) = doc::split(l);
        let s = self.sources.get(i).unwrap_or(&self.sources[0]);
        format!("{}:{}:{}", s.name, at.line, at.column)
    }
}

/// A route that a generated one must not shadow or be shadowed by: same hosts, same path shape.
struct Taken {
    name: Arc<str>,
    methods: Vec<Method>,
    /// Header, query or cookie conditions: such a route overrides on purpose.
    conditional: bool,
    at: String,
}

type ShapeKey = (String, bool, String);

fn shape_key(r: &Route) -> Option<ShapeKey> {
    let mut hosts: Vec<String> = r
        .hosts
        .iter()
        .map(|h| match h {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(s) => format!("*{s}"),
        })
        .collect();
    hosts.sort();
    Some((hosts.join(","), r.path_any_case, shape(&r.path)?))
}

/// Compiles the operations of every `apis` entry into routes appended to `routes`.
#[allow(clippy::too_many_arguments)]
pub(super) fn compile_apis(
    cx: &mut Ctx<'_>,
    apis: &[ApiConfig],
    nodes: &[(usize, &Node)],
    earlier: Earlier<'_>,
    routes: &mut Vec<Arc<Route>>,
    upstreams: &HashMap<String, usize>,
    upstream_specs: &[Arc<Upstream>],
    global_policies: &[Policy],
) {
    let mut taken: HashMap<ShapeKey, Vec<Taken>> = HashMap::new();
    for r in routes.iter() {
        if let Some(k) = shape_key(r) {
            let l = earlier.locs.get(r.index).copied().unwrap_or_default();
            taken.entry(k).or_default().push(Taken {
                name: r.name.clone(),
                methods: r.methods.clone(),
                conditional: !(r.headers.is_empty() && r.query.is_empty() && r.cookies.is_empty()),
                at: format!("{}:{}:{}", cx.sink.file, l.line, l.column),
            });
        }
    }
    let mut generated: HashMap<String, String> = HashMap::new();
    let mut state = State {
        earlier,
        taken,
        generated: &mut generated,
        upstreams,
        upstream_specs,
        global_policies,
    };
    // Policies copied from one config node into several operations share their state.
    cx.shared_slots = Some(HashMap::new());
    for (cfg, (number, node)) in apis.iter().zip(nodes) {
        label_policies(cx, cfg, *number, node);
        compile_api(cx, &mut state, cfg, *number, node, routes);
    }
    cx.shared_slots = None;
    cx.shared_labels.clear();
}

/// Names each policy of an API, its tags and its operations by what it belongs to, for the
/// scope of a shared `rate_limit` (its counters' identity across reloads and in Redis).
fn label_policies(cx: &mut Ctx<'_>, cfg: &ApiConfig, number: usize, node: &Node) {
    let api = cfg.name.clone().unwrap_or_else(|| format!("api-{number}"));
    let mut label = |owner: String, n: &Node| {
        if let Some(NodeKind::Seq(items)) = get(n, "policies").map(|p| &p.kind) {
            for (i, item) in items.iter().enumerate() {
                cx.shared_labels.insert(
                    (item.loc.line, item.loc.column),
                    format!("{owner} policies[{i}]"),
                );
            }
        }
    };
    label(format!("api {api}"), node);
    for (group, what) in [("tags", "tag"), ("operations", "operation")] {
        if let Some(NodeKind::Map(entries)) = get(node, group).map(|g| &g.kind) {
            for (k, v) in entries {
                label(format!("api {api} {what} {}", k.key_text()), v);
            }
        }
    }
}

/// An operation's contract, finished once the document's schemas are all compiled.
struct Pending {
    route: usize,
    request: Option<(
        Vec<portico_contract::Param>,
        Option<portico_contract::BodyRule>,
    )>,
    /// The documented responses, the share of answers checked, and whether to enforce.
    responses: Option<(Vec<portico_contract::ResponseRule>, f64, bool)>,
    path_names: Box<[Box<str>]>,
}

/// The `check_responses` chosen for an operation: `Some((sample, enforce))` when on.
fn response_checks(cx: &mut Ctx<'_>, set: Option<&(&str, Node)>) -> Option<(f64, bool)> {
    let (_, value) = set?;
    match from_node::<crate::file::ResponseChecks>(value, cx.env) {
        Ok(crate::file::ResponseChecks::On(false)) => None,
        Ok(crate::file::ResponseChecks::On(true)) => Some((1.0, false)),
        Ok(crate::file::ResponseChecks::With(w)) => {
            let sample = w.sample.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&sample) {
                let at = get(value, "sample").map_or(value.loc, |n| n.loc);
                cx.sink.at(
                    at,
                    format!("`sample` must be from 0 to 1, not {sample}"),
                    "write the share of answers to check: 1 for all, 0.01 for one in a hundred",
                );
                return None;
            }
            Some((sample, w.enforce.unwrap_or(false)))
        }
        Err(e) => {
            cx.sink.de(e);
            None
        }
    }
}

/// The names of a path's `{parameters}`, in order, as the document writes them.
fn template_names(path: &str) -> Box<[Box<str>]> {
    path.split('/')
        .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
        .map(Into::into)
        .collect()
}

/// The API's `validation_limits`, checked, with their defaults.
fn validation_limits(cx: &mut Ctx<'_>, cfg: &ApiConfig, node: &Node) -> portico_contract::Limits {
    let mut l = portico_contract::Limits::default();
    let Some(v) = &cfg.validation_limits else {
        return l;
    };
    let at = get(node, "validation_limits");
    let key_at = |k: &str| at.and_then(|a| get(a, k)).map_or(node.loc, |n| n.loc);
    if let Some(b) = v.max_body_bytes {
        if b == 0 {
            cx.sink.at(
                key_at("max_body_bytes"),
                "`max_body_bytes` must be at least 1",
                "write the largest body to check, in bytes (default 1048576)",
            );
        }
        l.max_body = b;
    }
    if let Some(d) = v.max_depth {
        if !(1..=100).contains(&d) {
            cx.sink.at(
                key_at("max_depth"),
                format!("`max_depth` must be from 1 to 100, not {d}"),
                "the default is 64",
            );
        }
        l.max_depth = d;
    }
    if let Some(e) = v.max_errors {
        if !(1..=100).contains(&e) {
            cx.sink.at(
                key_at("max_errors"),
                format!("`max_errors` must be from 1 to 100, not {e}"),
                "the default is 20",
            );
        }
        l.max_errors = e as usize;
    }
    l
}

struct State<'a, 'g> {
    earlier: Earlier<'a>,
    taken: HashMap<ShapeKey, Vec<Taken>>,
    /// Names of the generated routes so far, with where their operation is written.
    generated: &'g mut HashMap<String, String>,
    upstreams: &'a HashMap<String, usize>,
    upstream_specs: &'a [Arc<Upstream>],
    global_policies: &'a [Policy],
}

fn compile_api(
    cx: &mut Ctx<'_>,
    st: &mut State<'_, '_>,
    cfg: &ApiConfig,
    number: usize,
    node: &Node,
    routes: &mut Vec<Arc<Route>>,
) {
    let api_name = cfg.name.clone().unwrap_or_else(|| format!("api-{number}"));
    let doc_at = loc(node, "openapi");
    let remote = bundle::is_url(&cfg.openapi);
    let (location, bytes) = if remote {
        match crate::fetch::fetch_url(&cfg.openapi) {
            // Named as its references would name it, so one back to it reads nothing again.
            Ok(b) => (bundle::normalize_url(&cfg.openapi), b),
            Err(e) => {
                cx.sink.at(
                    doc_at,
                    format!("cannot fetch `{}`: {e}", cfg.openapi),
                    "check the URL; the document is fetched when the config loads and on every reload",
                );
                return;
            }
        }
    } else {
        let Some(bytes) = read_file(cx, &cfg.openapi, doc_at) else {
            return;
        };
        let full = resolve(cx, &cfg.openapi);
        // Followed by the file watcher with the config: a reload reads the document again.
        if !cx.documents.contains(&full) {
            cx.documents.push(full.clone());
        }
        let canonical = std::fs::canonicalize(&full).unwrap_or(full);
        (canonical.display().to_string(), bytes)
    };
    let file = if remote {
        location.clone()
    } else {
        resolve(cx, &cfg.openapi).display().to_string()
    };
    let Ok(text) = String::from_utf8(bytes) else {
        cx.sink.at(
            doc_at,
            format!("`{file}` is not UTF-8 text"),
            "save the OpenAPI document as UTF-8",
        );
        return;
    };
    let mut doc = Doc {
        sources: vec![bundle::Source { name: file, text }],
    };
    let mut root = match doc::parse(&doc.sources[0].text) {
        Ok(r) => r,
        Err(p) => return doc.err(cx, p),
    };
    // The files and URLs its `$ref`s name, grafted in; files are followed by the watcher too.
    let mut read = |at: &str| -> Result<Vec<u8>, String> {
        if bundle::is_url(at) {
            crate::fetch::fetch_url(at)
        } else {
            super::ctx::read_bounded(std::path::Path::new(at)).map_err(|e| e.to_string())
        }
    };
    match bundle::bundle(&mut root, &location, &mut doc.sources, &mut read) {
        Ok(read) => {
            for r in read.into_iter().filter(|r| !bundle::is_url(r)) {
                let p = std::path::PathBuf::from(r);
                if !cx.documents.contains(&p) {
                    cx.documents.push(p);
                }
            }
        }
        Err(mut problems) => {
            // Local references are checked too; a reference that was not read is told once.
            let mut local = Vec::new();
            doc::check_refs(&root, &mut local);
            local.retain(|p| !problems.iter().any(|q| q.loc == p.loc));
            problems.extend(local);
            for p in problems {
                doc.err(cx, p);
            }
            return;
        }
    }
    if let Err(p) = doc::check_version(&root) {
        return doc.err(cx, p);
    }
    let mut problems = Vec::new();
    doc::check_refs(&root, &mut problems);
    let ops = doc::operations(&root, &mut problems);
    doc::check_duplicate_ids(&ops, &mut problems);

    let base_override = cfg.base_path.as_deref().and_then(|b| {
        let ok = check_base_path(b);
        if let Err((msg, hint)) = &ok {
            cx.sink
                .at(loc(node, "base_path"), msg.clone(), hint.clone());
        }
        ok.ok()
    });
    check_names(cx, node, "operations", &ops, |o| {
        o.id.iter().map(|(id, _)| id.clone()).collect()
    });
    let declared_tags: Vec<String> = match get(&root, "tags").map(|t| &t.kind) {
        Some(NodeKind::Seq(items)) => items
            .iter()
            .filter_map(|t| get(t, "name")?.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    check_names(cx, node, "tags", &ops, |o| {
        o.tags
            .iter()
            .map(|(t, _)| t.clone())
            .chain(declared_tags.iter().cloned())
            .collect()
    });
    let schemes = security::Schemes::read(cx, &root, node);
    if !problems.is_empty() {
        for p in problems {
            doc.err(cx, p);
        }
        return;
    }
    if cfg.base_path.is_some() && base_override.is_none() {
        return;
    }

    let limits = validation_limits(cx, cfg, node);
    // Every operation's schemas go through one compiler, so shared components compile once.
    let json = Arc::new(root.to_json());
    let api_index = cx.apis.len();
    cx.apis.push(crate::config::ApiDocument {
        name: api_name.clone(),
        root: json.clone(),
    });
    let mut compiler = portico_contract::Compiler::new(&json, doc::dialect(&root));
    let mut contracts: Vec<Pending> = Vec::new();

    let mut tag_clashes = HashSet::new();
    let mut server_problems = HashSet::new();
    let mut security_problems = HashSet::new();
    for op in &ops {
        let levels = Levels::of(node, op);
        let scalar = |cx: &mut Ctx<'_>, clashes: &mut HashSet<_>, keys: &[&'static str]| {
            levels.pick(cx, clashes, &doc, op, keys)
        };
        let skip = scalar(cx, &mut tag_clashes, &["skip"]);
        if flag(cx, skip.as_ref()) == Some(true) {
            continue;
        }
        let enforce = scalar(cx, &mut tag_clashes, &["enforce_security"]);
        let enforce = flag(cx, enforce.as_ref());
        // Security-derived policies come first: the API's, tags' and operation's own policies
        // (a `rate_limit` keyed by consumer, an `acl` by group) may rely on the identity.
        let mut secured: Vec<Node> = Vec::new();
        if let Some((_, value)) = op.security
            && doc::requires_security(value)
            && enforce != Some(false)
        {
            match schemes.policies(&api_name, value, doc_at) {
                Ok(nodes) => secured = nodes,
                Err(found) => {
                    // Operations share the document's `security`: each problem is told once.
                    for p in found {
                        if security_problems.insert((p.loc.line, p.loc.column, p.msg.clone())) {
                            doc.err(cx, p);
                        }
                    }
                    continue;
                }
            }
        }
        let base = match &base_override {
            Some(b) => b.clone(),
            None => match doc::server_base(&root, op) {
                Ok(b) => b,
                Err(p) => {
                    // Operations share servers: their URL's problem is reported once.
                    if server_problems.insert((p.loc.line, p.loc.column)) {
                        doc.err(cx, p);
                    }
                    continue;
                }
            },
        };
        let (path, op_path) = match doc::route_path(&base, &op.path, op.path_loc) {
            Ok(p) => p,
            Err(p) => {
                doc.err(cx, p);
                continue;
            }
        };
        let mock_set = scalar(cx, &mut tag_clashes, &["mock"]);
        let answer = match mock_answer(cx, &doc, &root, op, mock_set.as_ref()) {
            Ok(a) => a,
            Err(()) => continue,
        };
        let target = scalar(cx, &mut tag_clashes, &["upstream", "split"]);
        let target = match (answer, target) {
            (Some(a), _) => Serve::Mock(a),
            (None, Some(t)) => Serve::Proxy(t),
            (None, None) => {
                let msg = format!(
                    "{} of API `{api_name}` ({}) has no upstream",
                    describe(op),
                    doc.at(op.method_loc)
                );
                cx.sink.at(node.loc, msg, NO_UPSTREAM_HINT);
                continue;
            }
        };
        let timeout = scalar(cx, &mut tag_clashes, &["timeout"]);

        let name_prefix = cfg.name_prefix.as_deref().unwrap_or("");
        let name = match &op.id {
            Some((id, _)) => format!("{name_prefix}{id}"),
            None => format!("{name_prefix}{} {}", op.method, path_text(&path)),
        };
        let name_at = op.id.as_ref().map_or(op.method_loc, |(_, l)| *l);
        let other = st
            .earlier
            .names
            .get(&name)
            .map(|l| format!("{}:{}:{}", cx.sink.file, l.line, l.column))
            .or_else(|| st.generated.get(&name).cloned());
        if let Some(other) = other {
            doc.err(
                cx,
                Problem {
                    loc: name_at,
                    msg: format!("route name `{name}` is already taken, by the route at {other}"),
                    hint: format!(
                        "set `name_prefix` for API `{api_name}` in the config to keep its route names apart"
                    ),
                },
            );
            continue;
        }

        let synth = Synth { at: doc_at };
        let mut route_node = vec![(
            "match",
            synth.map([
                get(node, "hosts").map(|h| ("hosts", h.clone())),
                Some((
                    "path",
                    synth.map([Some(match &path {
                        PathMatchConfig::Exact(p) => ("exact", synth.str(p)),
                        PathMatchConfig::Template(p) | PathMatchConfig::Prefix(p) => {
                            ("template", synth.str(p))
                        }
                    })]),
                )),
                Some((
                    "methods",
                    Node {
                        kind: NodeKind::Seq(vec![synth.str(&op.method)]),
                        loc: doc_at,
                    },
                )),
            ]),
        )];
        match &target {
            Serve::Proxy(t) => {
                route_node.push(t.clone());
                if let Some(t) = timeout {
                    route_node.push(t);
                }
            }
            Serve::Mock(a) => {
                let status = Node {
                    kind: NodeKind::Int(i64::from(a.status)),
                    loc: doc_at,
                };
                route_node.push((
                    "respond",
                    synth.map([
                        Some(("status", status)),
                        Some(("body", synth.str(&a.body))),
                        a.content_type
                            .as_deref()
                            .map(|c| ("content_type", synth.str(c))),
                    ]),
                ));
            }
        }
        if matches!(target, Serve::Proxy(_)) && cfg.strip_base_path && !base.is_empty() {
            route_node.push(("rewrite", synth.map([Some(("path", synth.str(&op_path)))])));
        }
        let policies: Vec<Node> = secured
            .into_iter()
            .chain(levels.policies().cloned())
            .collect();
        if !policies.is_empty() {
            route_node.push((
                "policies",
                Node {
                    kind: NodeKind::Seq(policies),
                    loc: doc_at,
                },
            ));
        }
        let route_node = synth.map(route_node.into_iter().map(Some));
        let route_cfg = match from_node::<RouteConfig>(&route_node, cx.env) {
            Ok(r) => r,
            Err(e) => {
                cx.sink.de(e);
                continue;
            }
        };
        let Some(route) = compile_route(
            cx,
            routes.len(),
            name.clone(),
            &route_cfg,
            &route_node,
            st.upstreams,
            st.upstream_specs,
            st.global_policies,
        ) else {
            continue;
        };
        let here = doc.at(op.method_loc);
        if let Some(key) = shape_key(&route) {
            let same = st.taken.entry(key).or_default();
            let method = &route.methods[0];
            if let Some(t) = same
                .iter()
                .find(|t| !t.conditional && (t.methods.is_empty() || t.methods.contains(method)))
            {
                doc.err(
                    cx,
                    Problem {
                        loc: op.method_loc,
                        msg: format!(
                            "{} takes the same requests as route `{}` at {}",
                            describe(op),
                            t.name,
                            t.at
                        ),
                        hint: "one of the two would never be reached: remove one, `skip: true` the operation in the config, or give the `routes:` entry a header or query condition".into(),
                    },
                );
                continue;
            }
            same.push(Taken {
                name: route.name.clone(),
                methods: route.methods.clone(),
                conditional: false,
                at: here.clone(),
            });
        }
        st.generated.insert(name, here);
        let mut route = route;
        route.operation = Some((api_index, doc::operation_pointers(op).1.into()));
        let validate = scalar(cx, &mut tag_clashes, &["validate_requests"]);
        let validate = flag(cx, validate.as_ref()) != Some(false);
        let responses = scalar(cx, &mut tag_clashes, &["check_responses"]);
        let responses = response_checks(cx, responses.as_ref());
        if validate || responses.is_some() {
            let (item, operation) = doc::operation_pointers(op);
            let at = portico_contract::OperationRef {
                path_item: &item,
                operation: &operation,
            };
            let request =
                validate.then(|| portico_contract::compile_operation(&mut compiler, &json, &at));
            let responses = responses.map(|(sample, enforce)| {
                (
                    portico_contract::compile_responses(&mut compiler, &json, &at),
                    sample,
                    enforce,
                )
            });
            contracts.push(Pending {
                route: routes.len(),
                request,
                responses,
                path_names: template_names(&op.path),
            });
        }
        routes.push(Arc::new(route));
    }
    let (schemas, errors) = compiler.finish();
    if !errors.is_empty() {
        let mut seen = HashSet::new();
        for e in errors {
            // Operations share components: each problem is told once.
            if seen.insert((e.pointer.clone(), e.message.clone())) {
                doc.err(
                    cx,
                    Problem {
                        loc: doc::locate(&root, &e.pointer),
                        msg: format!("{} (at #{})", e.message, e.pointer),
                        hint: format!(
                            "{}; or set `validate_requests: false` for the operations that use it",
                            e.hint
                        ),
                    },
                );
            }
        }
        return;
    }
    let schemas = Arc::new(schemas);
    for p in contracts {
        let contract = crate::ir::Contract {
            request: p
                .request
                .map(|(params, body)| portico_contract::finish(&schemas, params, body, limits)),
            response: p
                .responses
                .map(|(rules, sample, enforce)| crate::ir::ResponseCheck {
                    contract: portico_contract::ResponseContract {
                        schemas: schemas.clone(),
                        responses: rules.into_boxed_slice(),
                        max_body: limits.max_body,
                        max_depth: limits.max_depth,
                        max_errors: limits.max_errors,
                    },
                    sample,
                    enforce,
                }),
            path_names: p.path_names,
        };
        if let Some(r) = routes.get_mut(p.route).and_then(Arc::get_mut) {
            r.contract = Some(Arc::new(contract));
        }
    }
}

/// What an operation's route does: proxy to its upstream, or answer with its mock.
enum Serve {
    Proxy((&'static str, Node)),
    Mock(mock::Answer),
}

/// The answer of an operation whose `mock` is on; `Err` when that failed (reported).
fn mock_answer(
    cx: &mut Ctx<'_>,
    doc: &Doc,
    root: &Node,
    op: &Operation<'_>,
    set: Option<&(&str, Node)>,
) -> Result<Option<mock::Answer>, ()> {
    let Some((_, node)) = set else {
        return Ok(None);
    };
    let cfg = match from_node::<MockConfig>(node, cx.env) {
        Ok(c) => c,
        Err(e) => {
            cx.sink.de(e);
            return Err(());
        }
    };
    let want = match &cfg {
        MockConfig::On(false) => return Ok(None),
        MockConfig::On(true) => mock::Want::default(),
        MockConfig::With(m) => mock::Want {
            status: m.status.map(|s| (s, loc(node, "status"))),
            example: m.example.as_deref().map(|e| (e, loc(node, "example"))),
            media_type: m
                .media_type
                .as_deref()
                .map(|t| (t, loc(node, "media_type"))),
        },
    };
    match mock::answer(root, op, &want) {
        Ok(a) => Ok(Some(a)),
        Err(mock::Fault::Config(at, msg, hint)) => {
            cx.sink.at(at, format!("{msg} ({})", describe(op)), hint);
            Err(())
        }
        Err(mock::Fault::Doc(p)) => {
            doc.err(cx, p);
            Err(())
        }
    }
}

const NO_UPSTREAM_HINT: &str = "set `upstream` (or `split`) for the API, or for the operation under `operations:` or its tag under `tags:`; or `mock: true`";

/// How an operation is named in messages.
fn describe(op: &Operation<'_>) -> String {
    match &op.id {
        Some((id, _)) => format!("operation `{id}`"),
        None => format!("operation `{} {}`", op.method, op.path),
    }
}

fn path_text(p: &PathMatchConfig) -> &str {
    match p {
        PathMatchConfig::Exact(s) | PathMatchConfig::Template(s) | PathMatchConfig::Prefix(s) => s,
    }
}

/// A `base_path` from the config: `""`, or a canonical path without parameters or a final `/`.
fn check_base_path(b: &str) -> Result<String, (String, String)> {
    if b.is_empty() {
        return Ok(String::new());
    }
    if b.contains(['{', '}']) {
        return Err((
            format!("`base_path` `{b}` contains `{{`"),
            "a base path is fixed text; write the value the clients use".into(),
        ));
    }
    if b.len() > 1 && b.ends_with('/') {
        return Err((
            format!("`base_path` `{b}` ends with `/`"),
            format!("write `{}`", b.trim_end_matches('/')),
        ));
    }
    if b == "/" {
        return Err((
            "`base_path` `/` would double the first slash of every path".into(),
            "write `base_path: \"\"` for no base path".into(),
        ));
    }
    super::route::compile_path(&PathMatchConfig::Exact(b.to_owned()))?;
    Ok(b.to_owned())
}

/// Keys of the config's `operations:` or `tags:` that name nothing in the document.
fn check_names(
    cx: &mut Ctx<'_>,
    node: &Node,
    key: &str,
    ops: &[Operation<'_>],
    names: impl Fn(&Operation<'_>) -> Vec<String>,
) {
    let Some(NodeKind::Map(entries)) = get(node, key).map(|n| &n.kind) else {
        return;
    };
    let mut known: Vec<String> = ops.iter().flat_map(&names).collect();
    known.sort();
    known.dedup();
    let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
    let what = if key == "tags" { "tag" } else { "operationId" };
    for (k, _) in entries {
        let name = k.key_text();
        if !known.contains(&name) {
            let hint = if known.is_empty() {
                format!("the document's operations have no {what}s; remove `{name}`")
            } else {
                suggest(&name, &known_refs)
            };
            cx.sink
                .at(k.loc, format!("the document has no {what} `{name}`"), hint);
        }
    }
}

/// A boolean setting read from the level that sets it.
fn flag(cx: &mut Ctx<'_>, set: Option<&(&str, Node)>) -> Option<bool> {
    let (_, value) = set?;
    match from_node::<bool>(value, cx.env) {
        Ok(b) => Some(b),
        Err(e) => {
            cx.sink.de(e);
            None
        }
    }
}

/// Where an operation's settings come from, most specific first: its `operations:` entry, the
/// `tags:` entries of its tags in its order, the API.
struct Levels<'n> {
    op: Option<&'n Node>,
    tags: Vec<(String, &'n Node)>,
    api: &'n Node,
}

impl<'n> Levels<'n> {
    fn of(api: &'n Node, op: &Operation<'_>) -> Self {
        let op_node = op
            .id
            .as_ref()
            .and_then(|(id, _)| get(api, "operations").and_then(|o| get(o, id)));
        let tags = op
            .tags
            .iter()
            .filter_map(|(t, _)| Some((t.clone(), get(get(api, "tags")?, t)?)))
            .collect();
        Levels {
            op: op_node,
            tags,
            api,
        }
    }

    /// The first of `keys` set at the most specific level, as a copy of its config node. Two
    /// tags that set it differently, with nothing more specific deciding, are an error at both.
    fn pick(
        &self,
        cx: &mut Ctx<'_>,
        clashes: &mut HashSet<(String, String, String)>,
        doc: &Doc,
        op: &Operation<'_>,
        keys: &[&'static str],
    ) -> Option<(&'static str, Node)> {
        let set_in = |n: &'n Node| {
            keys.iter()
                .find_map(|k| get(n, k).filter(|v| !is_empty(v)).map(|v| (*k, v)))
        };
        let owned = |(k, v): (&'static str, &Node)| (k, v.clone());
        if let Some(found) = self.op.and_then(set_in) {
            return Some(owned(found));
        }
        let mut chosen: Option<(&str, &'static str, &Node, &Node)> = None;
        for (tag, tnode) in &self.tags {
            let Some((k, v)) = set_in(tnode) else {
                continue;
            };
            match chosen {
                None => chosen = Some((tag, k, v, tnode)),
                Some((first, fk, fv, fnode)) => {
                    if fk != k || fv.to_json() != v.to_json() {
                        let clash = (first.to_owned(), tag.clone(), keys[0].to_owned());
                        if clashes.insert(clash) {
                            let msg = format!(
                                "tags `{first}` and `{tag}` of {} ({}) set `{}` differently",
                                describe(op),
                                doc.at(op.method_loc),
                                keys.join("`/`")
                            );
                            let hint = "set it for the operation under `operations:`, or in only one of the tags".to_owned();
                            cx.sink.at(fnode.loc, msg.clone(), hint.clone());
                            cx.sink.at(tnode.loc, msg, hint);
                        }
                    }
                }
            }
        }
        if let Some((_, k, v, _)) = chosen {
            return Some(owned((k, v)));
        }
        set_in(self.api).map(owned)
    }

    /// The policy nodes in chain order: the API's, the tags', the operation's.
    fn policies(&self) -> impl Iterator<Item = &'n Node> + '_ {
        std::iter::once(self.api)
            .chain(self.tags.iter().map(|(_, n)| *n))
            .chain(self.op)
            .filter_map(|n| match get(n, "policies").map(|p| &p.kind) {
                Some(NodeKind::Seq(items)) => Some(items.iter()),
                _ => None,
            })
            .flatten()
    }
}

/// A value that sets nothing: `null` or an empty list (`split: []`).
fn is_empty(n: &Node) -> bool {
    match &n.kind {
        NodeKind::Null => true,
        NodeKind::Seq(items) => items.is_empty(),
        _ => false,
    }
}

/// Builds the nodes of a synthesized route, located at the config's `openapi:` value.
struct Synth {
    at: Loc,
}

impl Synth {
    /// A string from the document, kept as written: `${` would otherwise be read as a
    /// variable when the node is deserialized.
    fn str(&self, s: &str) -> Node {
        Node {
            kind: NodeKind::Str(s.replace("${", "$${")),
            loc: self.at,
        }
    }

    fn map<'k>(&self, entries: impl IntoIterator<Item = Option<(&'k str, Node)>>) -> Node {
        Node {
            kind: NodeKind::Map(
                entries
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        (
                            Node {
                                kind: NodeKind::Str(k.to_owned()),
                                loc: v.loc,
                            },
                            v,
                        )
                    })
                    .collect(),
            ),
            loc: self.at,
        }
    }
}
