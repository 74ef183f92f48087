//! An OpenAPI 3.0/3.1 document read as located nodes: its version, its `$ref`s, its operations,
//! their base paths and their paths as route templates. Nothing here knows the config: every
//! problem comes back as a [`Problem`] located in the document.

use std::collections::HashMap;

use crate::file::PathMatchConfig;
use crate::tree::{Loc, Node, NodeKind, parse_document};

use super::super::ctx::get;
use super::super::route::compile_path;

/// Something wrong in the document, where it is written and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub loc: Loc,
    pub msg: String,
    pub hint: String,
}

impl Problem {
    pub(crate) fn new(loc: Loc, msg: impl Into<String>, hint: impl Into<String>) -> Self {
        Problem {
            loc,
            msg: msg.into(),
            hint: hint.into(),
        }
    }
}

/// The HTTP methods a path item can hold, as its keys are written.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A document an API is made of besides its first (a file a `$ref` names) keeps its own lines:
/// its index rides in a node's line as `line | index << SHIFT` (255 documents of 16 million
/// lines), so a problem anywhere is reported in the file that has it.
pub(crate) const SHIFT: u32 = 24;

/// Which document a location is in, and where in it.
pub(crate) fn split(loc: Loc) -> (usize, Loc) {
    let index = (loc.line >> SHIFT) as usize;
    let line = loc.line & ((1 << SHIFT) - 1);
    (
        index,
        Loc {
            line,
            column: loc.column,
        },
    )
}

/// How many `$ref`s in a row are followed before the chain is taken for a loop.
const MAX_REF_HOPS: usize = 32;

/// Parses YAML or JSON text (JSON is YAML's flow syntax, so one reader serves both).
pub(crate) fn parse(text: &str) -> Result<Node, Problem> {
    let mut root = parse_document(text).map_err(|e| Problem {
        loc: e.loc.unwrap_or(Loc { line: 1, column: 1 }),
        msg: e.msg,
        hint: e
            .hint
            .unwrap_or_else(|| "fix the document's YAML or JSON syntax".into()),
    })?;
    let lines: Vec<&str> = text.lines().collect();
    yaml12_booleans(&mut root, &lines);
    Ok(root)
}

/// OpenAPI documents are YAML 1.2, where only `true` and `false` are booleans; the config
/// reader also takes YAML 1.1's `y`, `n`, `yes`, `no`, `on` and `off`. Read as written, a
/// property called `y` or an `enum: [yes, no]` stays text.
fn yaml12_booleans(n: &mut Node, lines: &[&str]) {
    match &mut n.kind {
        NodeKind::Bool(_) => {
            let word: String = lines
                .get(n.loc.line.saturating_sub(1) as usize)
                .map(|l| {
                    l.chars()
                        .skip(n.loc.column.saturating_sub(1) as usize)
                        .take_while(char::is_ascii_alphabetic)
                        .collect()
                })
                .unwrap_or_default();
            let lower = word.to_ascii_lowercase();
            if matches!(lower.as_str(), "y" | "n" | "yes" | "no" | "on" | "off") {
                n.kind = NodeKind::Str(word);
            }
        }
        NodeKind::Seq(items) => items.iter_mut().for_each(|i| yaml12_booleans(i, lines)),
        NodeKind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            yaml12_booleans(k, lines);
            yaml12_booleans(v, lines);
        }),
        _ => {}
    }
}

/// The text of a scalar as written: `openapi: 3.1` reads as a number.
fn scalar_text(n: &Node) -> Option<String> {
    match &n.kind {
        NodeKind::Str(s) => Some(s.clone()),
        NodeKind::Float(_) | NodeKind::Int(_) | NodeKind::UInt(_) => Some(n.key_text()),
        _ => None,
    }
}

/// Checks that the document is an OpenAPI 3.0 or 3.1 document.
pub(crate) fn check_version(root: &Node) -> Result<(), Problem> {
    if !matches!(root.kind, NodeKind::Map(_)) {
        return Err(Problem::new(
            root.loc,
            format!(
                "an OpenAPI document must be a mapping, found {}",
                root.type_name()
            ),
            "start the document with `openapi: 3.1.0`",
        ));
    }
    if let Some(v) = get(root, "swagger") {
        return Err(Problem::new(
            v.loc,
            "Swagger 2.0 documents are not read; Portico reads OpenAPI 3.0 and 3.1",
            "convert the document to OpenAPI 3 (for example with swagger2openapi)",
        ));
    }
    let Some(v) = get(root, "openapi") else {
        return Err(Problem::new(
            root.loc,
            "the document has no `openapi` version",
            "start the document with `openapi: 3.1.0` (or the 3.0.x version it follows)",
        ));
    };
    let text = scalar_text(v).unwrap_or_default();
    let known = ["3.0", "3.1"].iter().any(|p| {
        text.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with('.'))
    });
    if !known {
        return Err(Problem::new(
            v.loc,
            format!("unsupported OpenAPI version `{text}`"),
            "Portico reads OpenAPI 3.0.x and 3.1.x documents",
        ));
    }
    Ok(())
}

/// Which JSON Schema the document's schemas are written in (its version is checked).
pub(crate) fn dialect(root: &Node) -> portico_contract::Dialect {
    let text = get(root, "openapi")
        .and_then(scalar_text)
        .unwrap_or_default();
    if text.starts_with("3.0") {
        portico_contract::Dialect::Oas30
    } else {
        portico_contract::Dialect::Oas31
    }
}

/// Where the value at a JSON pointer (`/paths/~1pets/get`, not percent-encoded) is written:
/// the deepest node on the way that exists.
pub(crate) fn locate(root: &Node, pointer: &str) -> Loc {
    let mut n = root;
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        match pointee(n, std::slice::from_ref(&seg)) {
            Some(next) => n = next,
            None => break,
        }
    }
    n.loc
}

/// The JSON pointer of an operation and of its path item.
pub(crate) fn operation_pointers(op: &Operation<'_>) -> (String, String) {
    (op.item_ptr.clone(), op.op_ptr.clone())
}

/// The JSON pointer of the value `node` (written at `pointer`) resolves to: the target of its
/// last `$ref`, or `pointer` itself. Only called on nodes [`resolve`] has followed.
fn resolved_pointer(root: &Node, node: &Node, pointer: String) -> String {
    let mut n = node;
    let mut at = pointer;
    for _ in 0..MAX_REF_HOPS {
        let Some(text) = ref_of(n).and_then(Node::as_str) else {
            break;
        };
        let Ok(segments) = pointer_segments(text) else {
            break;
        };
        let Some(next) = pointee(root, &segments) else {
            break;
        };
        at = segments
            .iter()
            .map(|s| format!("/{}", portico_contract::escape(s)))
            .collect();
        n = next;
    }
    at
}

/// The segments of a local JSON pointer (`#/components/schemas/Pet`), decoded: percent-escapes
/// first (it is a URI fragment), then `~1` → `/` and `~0` → `~`.
fn pointer_segments(reference: &str) -> Result<Vec<String>, String> {
    let fragment = reference
        .strip_prefix('#')
        .ok_or_else(|| format!("`{reference}` is not a local reference"))?;
    if fragment.is_empty() {
        return Ok(Vec::new());
    }
    let Some(path) = fragment.strip_prefix('/') else {
        return Err(format!(
            "`{reference}` is not a JSON pointer (it must start with `#/`)"
        ));
    };
    path.split('/')
        .map(|s| {
            let s = percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map_err(|_| format!("`{reference}` has percent-escapes that are not UTF-8"))?;
            Ok(s.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

fn pointee<'n>(root: &'n Node, segments: &[String]) -> Option<&'n Node> {
    segments.iter().try_fold(root, |n, s| match &n.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.key_text() == *s)
            .map(|e| &e.1),
        NodeKind::Seq(items) => s.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The key and value nodes of `key` in a mapping.
fn entry<'n>(node: &'n Node, key: &str) -> Option<(&'n Node, &'n Node)> {
    match &node.kind {
        NodeKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v)),
        _ => None,
    }
}

/// The `$ref` value node of a mapping that is a reference.
fn ref_of(n: &Node) -> Option<&Node> {
    get(n, "$ref")
}

/// The node a reference resolves to (following chains of references), or `node` itself when
/// it is not a reference.
pub(crate) fn resolve<'n>(root: &'n Node, node: &'n Node) -> Result<&'n Node, Problem> {
    let mut n = node;
    for _ in 0..MAX_REF_HOPS {
        let Some(r) = ref_of(n) else {
            return Ok(n);
        };
        n = follow(root, r)?;
    }
    Err(Problem::new(
        ref_of(node).map_or(node.loc, |r| r.loc),
        format!("more than {MAX_REF_HOPS} `$ref`s in a row (a reference loop?)"),
        "make the chain of references end at a value",
    ))
}

/// The node one `$ref` value points at.
fn follow<'n>(root: &'n Node, r: &'n Node) -> Result<&'n Node, Problem> {
    let Some(text) = r.as_str() else {
        return Err(Problem::new(
            r.loc,
            format!("`$ref` must be a string, found {}", r.type_name()),
            "write a JSON pointer such as `#/components/schemas/Pet`",
        ));
    };
    if !text.starts_with('#') {
        return Err(Problem::new(
            r.loc,
            format!("`$ref` `{text}` names another document, which was not read"),
            "check the name; it is relative to the document that refers to it",
        ));
    }
    let segments = pointer_segments(text).map_err(|m| {
        Problem::new(
            r.loc,
            m,
            "write a JSON pointer such as `#/components/schemas/Pet`",
        )
    })?;
    pointee(root, &segments).ok_or_else(|| {
        Problem::new(
            r.loc,
            format!("unresolved $ref `{text}`"),
            "nothing in this document is at that pointer; check each name (`/` in a name is written `~1`)",
        )
    })
}

/// What the entries of a mapping are, for finding the document's `$ref`s.
#[derive(Clone, Copy, PartialEq)]
enum In {
    /// An object of the specification (or a schema): its keys are keywords.
    Object,
    /// A map whose keys are names (`properties`, `paths`, `components.schemas`...):
    /// its values are objects, whatever they are called.
    Names,
    /// `examples` of a parameter or media type: Example Objects, whose `value` is data.
    Examples,
}

/// What the value under `key` of a mapping of kind `within` is. `None`: literal data (an
/// example, a default, a `const` or an `enum`), where a `$ref` key is the data's own (a stored
/// JSON Schema, say), not a reference of the document's.
fn child(within: In, key: &str, value: &Node) -> Option<In> {
    match within {
        In::Names => Some(In::Object),
        // Each Example Object: everything but its `value`.
        In::Examples => Some(In::Examples),
        In::Object => match key {
            "example" | "default" | "const" | "enum" => None,
            // A schema's `examples` (3.1) is a list of values; a parameter's or a media
            // type's is a map of Example Objects.
            "examples" if matches!(value.kind, NodeKind::Seq(_)) => None,
            "examples" => Some(In::Examples),
            "properties" | "patternProperties" | "$defs" | "definitions" | "paths" | "webhooks"
            | "callbacks" | "responses" | "headers" | "content" | "encoding" | "links"
            | "variables" | "schemas" | "parameters" | "requestBodies" | "securitySchemes"
            | "pathItems" | "dependentSchemas" => Some(if matches!(value.kind, NodeKind::Map(_)) {
                In::Names
            } else {
                In::Object
            }),
            _ => Some(In::Object),
        },
    }
}

/// Calls `f` with every mapping of the document that is a reference (has a `$ref`), outside
/// literal data.
fn visit_refs<'n>(n: &'n Node, within: In, f: &mut impl FnMut(&'n Node)) {
    match &n.kind {
        NodeKind::Map(entries) => {
            // In a map of names, `$ref` is a name (a property called `$ref`).
            if within != In::Names && ref_of(n).is_some() {
                f(n);
            }
            for (k, v) in entries {
                if within == In::Examples {
                    // An Example Object: a reference itself, or fields besides its `value`.
                    if let NodeKind::Map(fields) = &v.kind {
                        if ref_of(v).is_some() {
                            f(v);
                        }
                        for (fk, fv) in fields {
                            if fk.as_str() != Some("value") && fk.as_str() != Some("$ref") {
                                visit_refs(fv, In::Object, f);
                            }
                        }
                    }
                    continue;
                }
                if let Some(next) = child(within, k.as_str().unwrap_or(""), v) {
                    visit_refs(v, next, f);
                }
            }
        }
        NodeKind::Seq(items) => items.iter().for_each(|i| visit_refs(i, In::Object, f)),
        _ => {}
    }
}

/// What [`visit_scoped_mut`] meets, in document order.
pub(crate) enum Scoped<'a> {
    /// A `$ref`'s value, and the base URI it is resolved against: the document's location,
    /// or the `$id` of the innermost schema around it.
    Ref(&'a mut Node, &'a str),
    /// A schema with an `$id`, resolved against the base around it, at `pointer` (`""`: the
    /// document itself).
    Id {
        id: &'a str,
        pointer: &'a str,
        loc: Loc,
    },
    /// A schema with an `$anchor`, `name`, in the resource `base`.
    Anchor {
        base: &'a str,
        name: &'a str,
        pointer: &'a str,
        loc: Loc,
    },
}

/// Walks every reference of the document outside literal data, as [`visit_refs`] finds them,
/// knowing the base URI of each. With `ids` (JSON Schema 2020-12, OpenAPI 3.1), a schema's
/// `$id` opens a new base (resolved by `join(base, id)`) and it and `$anchor`s are reported;
/// without, the base is the document's throughout.
pub(crate) fn visit_scoped_mut(
    n: &mut Node,
    base: &str,
    ids: bool,
    join: &impl Fn(&str, &str) -> String,
    f: &mut impl FnMut(Scoped<'_>),
) {
    struct Walk<'j, J, F> {
        ids: bool,
        join: &'j J,
        f: F,
        /// The pointer to the node being walked, as segments.
        path: Vec<String>,
    }
    impl<J: Fn(&str, &str) -> String, F: FnMut(Scoped<'_>)> Walk<'_, J, F> {
        fn pointer(&self) -> String {
            self.path
                .iter()
                // `%` too: pointers in fragments are percent-decoded when followed.
                .map(|s| {
                    format!(
                        "/{}",
                        s.replace('~', "~0").replace('/', "~1").replace('%', "%25")
                    )
                })
                .collect()
        }

        fn walk(&mut self, n: &mut Node, within: In, base: &str) {
            match &mut n.kind {
                NodeKind::Map(entries) => {
                    let mut own = None;
                    if self.ids && within == In::Object {
                        let text = |k: &str| {
                            entries
                                .iter()
                                .find(|(key, _)| key.as_str() == Some(k))
                                .and_then(|(_, v)| Some((v.as_str()?.to_owned(), v.loc)))
                        };
                        let (id, anchor) = (text("$id"), text("$anchor"));
                        let pointer = self.pointer();
                        if let Some((id, loc)) = id {
                            let id = (self.join)(base, &id);
                            (self.f)(Scoped::Id {
                                id: &id,
                                pointer: &pointer,
                                loc,
                            });
                            own = Some(id);
                        }
                        if let Some((name, loc)) = anchor {
                            (self.f)(Scoped::Anchor {
                                base: own.as_deref().unwrap_or(base),
                                name: &name,
                                pointer: &pointer,
                                loc,
                            });
                        }
                    }
                    let base = own.as_deref().unwrap_or(base);
                    for (k, v) in entries {
                        // A key as its document names it (`200:` is the key "200").
                        let key = k.key_text();
                        if key == "$ref" && within != In::Names {
                            (self.f)(Scoped::Ref(v, base));
                            continue;
                        }
                        self.path.push(key.clone());
                        if within == In::Examples {
                            if let NodeKind::Map(fields) = &mut v.kind {
                                for (fk, fv) in fields {
                                    match fk.as_str() {
                                        Some("$ref") => (self.f)(Scoped::Ref(fv, base)),
                                        Some("value") => {}
                                        _ => {
                                            self.path.push(fk.key_text());
                                            self.walk(fv, In::Object, base);
                                            self.path.pop();
                                        }
                                    }
                                }
                            }
                        } else if let Some(next) = child(within, &key, v) {
                            self.walk(v, next, base);
                        }
                        self.path.pop();
                    }
                }
                NodeKind::Seq(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.path.push(i.to_string());
                        self.walk(item, In::Object, base);
                        self.path.pop();
                    }
                }
                _ => {}
            }
        }
    }
    Walk {
        ids,
        join,
        f,
        path: Vec::new(),
    }
    .walk(n, In::Object, base)
}

/// Every `$ref` in the document that does not resolve, or that starts a loop.
pub(crate) fn check_refs(root: &Node, out: &mut Vec<Problem>) {
    visit_refs(root, In::Object, &mut |n| {
        if let Err(p) = resolve(root, n) {
            out.push(p);
        }
    });
}

/// One operation of the document: a method of a path item.
#[derive(Debug)]
pub(crate) struct Operation<'n> {
    /// Upper case, as in requests.
    pub method: String,
    /// Where the method key is written (conflicts are reported there).
    pub method_loc: Loc,
    /// The path as the document writes it, e.g. `/pets/{petId}`.
    pub path: String,
    pub path_loc: Loc,
    /// The operation's mapping.
    pub node: &'n Node,
    /// The path item (its `servers`).
    pub item: &'n Node,
    /// The JSON pointers of the path item and of the operation, `$ref`s followed.
    pub item_ptr: String,
    pub op_ptr: String,
    pub id: Option<(String, Loc)>,
    pub tags: Vec<(String, Loc)>,
    /// The `security` that applies, the operation's or else the document's: its key and value.
    pub security: Option<(&'n Node, &'n Node)>,
}

fn strings(n: Option<&Node>) -> Vec<(String, Loc)> {
    match n.map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items
            .iter()
            .filter_map(|i| Some((i.as_str()?.to_owned(), i.loc)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The operations under `paths`, in document order. `webhooks` are requests the API sends,
/// not ones it takes, so they make no operations.
pub(crate) fn operations<'n>(root: &'n Node, out: &mut Vec<Problem>) -> Vec<Operation<'n>> {
    let mut ops = Vec::new();
    let Some(paths) = get(root, "paths") else {
        return ops;
    };
    let entries = match &paths.kind {
        NodeKind::Map(e) => e,
        NodeKind::Null => return ops,
        _ => {
            out.push(Problem::new(
                paths.loc,
                format!("`paths` must be a mapping, found {}", paths.type_name()),
                "write `paths:` then `  /pets: { get: { operationId: listPets } }`",
            ));
            return ops;
        }
    };
    for (pk, raw_item) in entries {
        let path = pk.key_text();
        let item = match resolve(root, raw_item) {
            Ok(i) => i,
            // Reported by `check_refs`.
            Err(_) => continue,
        };
        let NodeKind::Map(fields) = &item.kind else {
            out.push(Problem::new(
                item.loc,
                format!(
                    "path item `{path}` must be a mapping, found {}",
                    item.type_name()
                ),
                "write the operations under it: `get: { operationId: … }`",
            ));
            continue;
        };
        for (mk, op_raw) in fields {
            let key = mk.key_text();
            if !METHODS.contains(&key.as_str()) {
                if METHODS.contains(&key.to_ascii_lowercase().as_str()) {
                    out.push(Problem::new(
                        mk.loc,
                        format!("`{key}` is not an OpenAPI method key"),
                        format!(
                            "method keys are lower case: write `{}`",
                            key.to_ascii_lowercase()
                        ),
                    ));
                }
                continue;
            }
            let op = match resolve(root, op_raw) {
                Ok(o) => o,
                Err(_) => continue,
            };
            if !matches!(op.kind, NodeKind::Map(_)) {
                out.push(Problem::new(
                    op.loc,
                    format!(
                        "operation `{key} {path}` must be a mapping, found {}",
                        op.type_name()
                    ),
                    "write `{ operationId: …, responses: … }`",
                ));
                continue;
            }
            let id = match get(op, "operationId") {
                None => None,
                Some(n) => match n.as_str() {
                    Some(s) if !s.is_empty() => Some((s.to_owned(), n.loc)),
                    _ => {
                        out.push(Problem::new(
                            n.loc,
                            format!(
                                "`operationId` must be a non-empty string, found {}",
                                n.type_name()
                            ),
                            "write a name such as `showPetById`",
                        ));
                        None
                    }
                },
            };
            let item_ptr = resolved_pointer(
                root,
                raw_item,
                format!("/paths/{}", portico_contract::escape(&path)),
            );
            let op_ptr = resolved_pointer(root, op_raw, format!("{item_ptr}/{key}"));
            ops.push(Operation {
                item_ptr,
                op_ptr,
                method: key.to_ascii_uppercase(),
                method_loc: mk.loc,
                path: path.clone(),
                path_loc: pk.loc,
                node: op,
                item,
                id,
                tags: strings(get(op, "tags")),
                security: entry(op, "security").or_else(|| entry(root, "security")),
            });
        }
    }
    ops
}

/// A second operation with an `operationId` already used.
pub(crate) fn check_duplicate_ids(ops: &[Operation<'_>], out: &mut Vec<Problem>) {
    let mut seen: HashMap<&str, Loc> = HashMap::new();
    for (id, at) in ops.iter().filter_map(|o| o.id.as_ref()) {
        match seen.get(id.as_str()) {
            Some(first) => {
                let (file, first) = split(*first);
                let whose = if file == 0 {
                    ""
                } else {
                    " of a document this one refers to"
                };
                out.push(Problem::new(
                    *at,
                    format!("duplicate operationId `{id}`"),
                    format!(
                        "operationIds must be unique in a document; the first `{id}` is on line {}{whose}",
                        first.line
                    ),
                ))
            }
            None => {
                seen.insert(id, *at);
            }
        }
    }
}

/// Whether a security requirement list asks for anything (`[]` asks for nothing).
pub(crate) fn requires_security(security: &Node) -> bool {
    matches!(&security.kind, NodeKind::Seq(items) if !items.is_empty())
}

/// The path of the server that applies to an operation: the operation's `servers`, else its
/// path item's, else the document's; `""` when none is written.
pub(crate) fn server_base(root: &Node, op: &Operation<'_>) -> Result<String, Problem> {
    let servers = [op.node, op.item, root]
        .into_iter()
        .filter_map(|n| get(n, "servers"))
        .find(|s| matches!(&s.kind, NodeKind::Seq(i) if !i.is_empty()));
    match servers.map(|s| &s.kind) {
        Some(NodeKind::Seq(items)) => server_path(resolve(root, &items[0])?),
        _ => Ok(String::new()),
    }
}

/// The path part of one Server Object's URL, variables replaced by their defaults and without
/// a trailing `/`.
pub(crate) fn server_path(server: &Node) -> Result<String, Problem> {
    let Some(url_node) = get(server, "url") else {
        return Err(Problem::new(
            server.loc,
            "a server has no `url`",
            "write `url: https://api.example.com/v1`",
        ));
    };
    let Some(url) = url_node.as_str() else {
        return Err(Problem::new(
            url_node.loc,
            format!(
                "a server `url` must be a string, found {}",
                url_node.type_name()
            ),
            "write `url: https://api.example.com/v1`",
        ));
    };
    let mut full = String::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            return Err(Problem::new(
                url_node.loc,
                format!("server URL `{url}` has a `{{` that is never closed"),
                "write variables as `{name}`",
            ));
        };
        let name = &rest[open + 1..open + len];
        let default = get(server, "variables")
            .and_then(|v| get(v, name))
            .and_then(|v| get(v, "default"))
            .and_then(scalar_text);
        let Some(default) = default else {
            return Err(Problem::new(
                url_node.loc,
                format!("server URL `{url}` uses `{{{name}}}`, which has no default"),
                format!(
                    "add `variables: {{ {name}: {{ default: … }} }}` to the server, or set `base_path` in the config"
                ),
            ));
        };
        full.push_str(&rest[..open]);
        full.push_str(&default);
        rest = &rest[open + len + 1..];
    }
    full.push_str(rest);
    let after_authority = match full.find("://") {
        Some(i) => Some(&full[i + 3..]),
        None => full.strip_prefix("//"),
    };
    let path = match after_authority {
        Some(a) => a.find('/').map_or("", |i| &a[i..]),
        None if full.starts_with('/') || full.is_empty() => full.as_str(),
        None => {
            return Err(Problem::new(
                url_node.loc,
                format!(
                    "server URL `{url}` is relative to where the document is served, which the gateway cannot know"
                ),
                "write an absolute URL or a path starting with `/`, or set `base_path` in the config",
            ));
        }
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/').to_owned();
    if !path.is_empty()
        && let Err((msg, hint)) = compile_path(&PathMatchConfig::Exact(path.clone()))
    {
        return Err(Problem::new(
            url_node.loc,
            format!("the path of server URL `{url}`: {msg}"),
            format!("{hint}, or set `base_path` in the config"),
        ));
    }
    Ok(path)
}

/// The route path for `base` + an operation's `path`: `exact` without parameters, otherwise a
/// template with each parameter's name made of letters, digits and `_` (the router ignores
/// the names, and `{pet-id}` is a valid OpenAPI name that a template cannot hold). Also gives
/// the operation's path with those names, for a rewrite without the base.
pub(crate) fn route_path(
    base: &str,
    path: &str,
    at: Loc,
) -> Result<(PathMatchConfig, String), Problem> {
    let skip_hint = "an operation the router cannot express can be left out with `skip: true` under its `operations:` entry in the config, and written as a `routes:` entry instead";
    let mut names: Vec<String> = Vec::new();
    let mut sanitized = String::new();
    for (i, part) in path.split('/').enumerate() {
        if i > 0 {
            sanitized.push('/');
        }
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(inner) if !inner.contains(['{', '}']) => {
                let name: String = inner
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                if names.contains(&name) {
                    return Err(Problem::new(
                        at,
                        format!(
                            "path `{path}`: two parameters are both named `{name}` once made of letters, digits and `_`"
                        ),
                        "rename one of them in the document",
                    ));
                }
                sanitized.push('{');
                sanitized.push_str(&name);
                sanitized.push('}');
                names.push(name);
            }
            _ => sanitized.push_str(part),
        }
    }
    // `/` under a base is the base itself (exact routes also take it with a trailing slash).
    let full = if sanitized == "/" && !base.is_empty() {
        base.to_owned()
    } else {
        format!("{base}{sanitized}")
    };
    let cfg = if names.is_empty() && !full.contains(['{', '}']) {
        PathMatchConfig::Exact(full)
    } else {
        PathMatchConfig::Template(full)
    };
    match compile_path(&cfg) {
        Ok(_) => Ok((cfg, sanitized)),
        Err((msg, hint)) => Err(Problem::new(
            at,
            format!("{msg}; the path is not expressible as a route"),
            format!("{hint}; {skip_hint}"),
        )),
    }
}

#[cfg(test)]
mod yaml12 {
    use super::*;

    #[test]
    fn only_true_and_false_are_booleans() {
        let root =
            parse("properties:\n  y: { enum: [yes, No, on, OFF, n, true, False] }\n  n: {}\n")
                .unwrap();
        let json = root.to_json();
        assert_eq!(
            json,
            serde_json::json!({"properties": {"y": {"enum": ["yes", "No", "on", "OFF", "n", true, false]}, "n": {}}})
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ctx::testing::doc;

    fn problems(text: &str) -> Vec<String> {
        let root = doc(text);
        let mut out = Vec::new();
        if let Err(p) = check_version(&root) {
            out.push(p);
        }
        check_refs(&root, &mut out);
        let ops = operations(&root, &mut out);
        check_duplicate_ids(&ops, &mut out);
        out.iter()
            .map(|p| format!("{}:{}: {}", p.loc.line, p.loc.column, p.msg))
            .collect()
    }

    #[test]
    fn a_ref_inside_data_is_the_datas_and_a_property_named_like_a_keyword_is_a_schema() {
        let text = concat!(
            "openapi: 3.1.0\n",
            "components:\n",
            "  schemas:\n",
            "    Stored:\n",
            "      type: object\n",
            "      example: { $ref: '#/not/a/reference' }\n",
            "      default: { $ref: '#/nor/this' }\n",
            "      examples: [{ $ref: '#/nor/these' }]\n",
            "      properties:\n",
            "        value: { $ref: '#/components/schemas/Missing' }\n",
            "        example: { $ref: '#/components/schemas/AlsoMissing' }\n",
            "  examples:\n",
            "    One: { summary: s, value: { $ref: '#/data' } }\n",
            "    Two: { $ref: '#/components/examples/Gone' }\n",
            "paths: {}\n",
        );
        assert_eq!(
            problems(text),
            [
                "10:24: unresolved $ref `#/components/schemas/Missing`",
                "11:26: unresolved $ref `#/components/schemas/AlsoMissing`",
                "14:18: unresolved $ref `#/components/examples/Gone`",
            ]
        );
    }

    #[test]
    fn pointers_decode_escapes_in_order() {
        assert_eq!(
            pointer_segments("#/paths/~1pets~1{id}/get").unwrap(),
            ["paths", "/pets/{id}", "get"]
        );
        // `~01` is `~1` written literally, not `/`.
        assert_eq!(pointer_segments("#/a~01b").unwrap(), ["a~1b"]);
        assert_eq!(pointer_segments("#/a%20b/%7E1").unwrap(), ["a b", "/"]);
        assert!(pointer_segments("#").unwrap().is_empty());
        assert!(pointer_segments("#a").is_err());
    }

    #[test]
    fn references_resolve_through_maps_lists_and_chains() {
        let root = doc(concat!(
            "openapi: 3.1.0\n",
            "components:\n",
            "  schemas:\n",
            "    A: { $ref: '#/components/schemas/B' }\n",
            "    B: { list: [x, { name: found }] }\n",
            "    C: { $ref: '#/components/schemas/B/list/1' }\n",
        ));
        let a = get(
            get(get(&root, "components").unwrap(), "schemas").unwrap(),
            "A",
        )
        .unwrap();
        let c = get(
            get(get(&root, "components").unwrap(), "schemas").unwrap(),
            "C",
        )
        .unwrap();
        assert!(get(resolve(&root, a).unwrap(), "list").is_some());
        assert_eq!(
            get(resolve(&root, c).unwrap(), "name").unwrap().as_str(),
            Some("found")
        );
    }

    #[test]
    fn bad_references_are_located_at_their_value() {
        let e = problems(concat!(
            "openapi: 3.0.3\n",
            "components:\n",
            "  schemas:\n",
            "    Loop: { $ref: '#/components/schemas/Loop' }\n",
            "    Gone: { $ref: '#/components/schemas/Nope' }\n",
            "    Far: { $ref: 'common.yaml#/Pet' }\n",
        ));
        assert_eq!(
            e,
            [
                "4:19: more than 32 `$ref`s in a row (a reference loop?)",
                "5:19: unresolved $ref `#/components/schemas/Nope`",
                "6:18: `$ref` `common.yaml#/Pet` names another document, which was not read",
            ]
        );
    }

    #[test]
    fn versions_other_than_3_0_and_3_1_are_refused() {
        assert_eq!(
            problems("swagger: '2.0'\npaths: {}\n"),
            ["1:10: Swagger 2.0 documents are not read; Portico reads OpenAPI 3.0 and 3.1"]
        );
        assert_eq!(
            problems("openapi: 4.0.0\n"),
            ["1:10: unsupported OpenAPI version `4.0.0`"]
        );
        assert_eq!(
            problems("openapi: 3.10.0\n"),
            ["1:10: unsupported OpenAPI version `3.10.0`"]
        );
        assert!(problems("openapi: 3.1\n").is_empty());
        assert_eq!(
            problems("info: {}\n"),
            ["1:1: the document has no `openapi` version"]
        );
    }

    #[test]
    fn operations_come_from_method_keys_only() {
        let root = doc(concat!(
            "openapi: 3.1.0\n",
            "security: [{ key: [] }]\n",
            "paths:\n",
            "  /pets:\n",
            "    summary: pets\n",
            "    parameters: []\n",
            "    get: { operationId: listPets, tags: [pets], security: [] }\n",
            "    post: { operationId: createPets }\n",
            "    x-internal: true\n",
            "  /pets/{id}: { $ref: '#/components/pathItems/Pet' }\n",
            "components:\n",
            "  pathItems:\n",
            "    Pet: { delete: { operationId: deletePet } }\n",
            "webhooks:\n",
            "  newPet: { post: { operationId: onNewPet } }\n",
        ));
        let mut out = Vec::new();
        let ops = operations(&root, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let seen: Vec<(&str, &str, &str)> = ops
            .iter()
            .map(|o| {
                (
                    o.method.as_str(),
                    o.path.as_str(),
                    o.id.as_ref().unwrap().0.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("GET", "/pets", "listPets"),
                ("POST", "/pets", "createPets"),
                ("DELETE", "/pets/{id}", "deletePet"),
            ]
        );
        assert_eq!(ops[0].tags[0].0, "pets");
        assert_eq!(ops[0].method_loc, Loc { line: 7, column: 5 });
        // The operation's own `security: []` overrides the document's.
        let (key, value) = ops[0].security.unwrap();
        assert_eq!(
            key.loc,
            Loc {
                line: 7,
                column: 49
            }
        );
        assert!(!requires_security(value));
        let (key, value) = ops[1].security.unwrap();
        assert_eq!(key.loc, Loc { line: 2, column: 1 });
        assert!(requires_security(value));
    }

    #[test]
    fn upper_case_methods_and_duplicate_ids_are_reported() {
        let e = problems(concat!(
            "openapi: 3.0.0\n",
            "paths:\n",
            "  /a:\n",
            "    GET: { operationId: a }\n",
            "    put: { operationId: same }\n",
            "  /b:\n",
            "    put: { operationId: same }\n",
        ));
        assert_eq!(
            e,
            [
                "4:5: `GET` is not an OpenAPI method key",
                "7:25: duplicate operationId `same`",
            ]
        );
    }

    #[test]
    fn servers_give_the_base_path_with_variable_defaults() {
        let base = |server: &str| {
            let root = doc(&format!("s: {server}\n"));
            server_path(get(&root, "s").unwrap()).map_err(|p| p.msg)
        };
        assert_eq!(
            base("{ url: 'https://api.example.com/v1/' }").unwrap(),
            "/v1"
        );
        assert_eq!(base("{ url: 'https://api.example.com' }").unwrap(), "");
        assert_eq!(base("{ url: /api }").unwrap(), "/api");
        assert_eq!(
            base("{ url: 'https://{env}.example.com/{version}', variables: { env: { default: prod }, version: { default: v2, enum: [v1, v2] } } }")
                .unwrap(),
            "/v2"
        );
        assert_eq!(
            base("{ url: 'https://x/{version}' }").unwrap_err(),
            "server URL `https://x/{version}` uses `{version}`, which has no default"
        );
        assert!(base("{ url: v1 }").unwrap_err().contains("is relative"));
        assert!(
            base("{ url: 'https://x/a/../b' }")
                .unwrap_err()
                .contains("canonical")
        );
    }

    #[test]
    fn operation_servers_win_over_path_and_document_servers() {
        let root = doc(concat!(
            "openapi: 3.1.0\n",
            "servers: [{ url: /root }]\n",
            "paths:\n",
            "  /a:\n",
            "    servers: [{ url: /item }]\n",
            "    get: { servers: [{ url: /op }] }\n",
            "    put: {}\n",
            "  /b:\n",
            "    get: {}\n",
        ));
        let ops = operations(&root, &mut Vec::new());
        let bases: Vec<String> = ops.iter().map(|o| server_base(&root, o).unwrap()).collect();
        assert_eq!(bases, ["/op", "/item", "/root"]);
    }

    #[test]
    fn paths_become_exact_paths_or_templates_with_plain_names() {
        let at = Loc { line: 3, column: 3 };
        let p = |base: &str, path: &str| route_path(base, path, at).map(|(p, _)| p);
        assert!(matches!(p("/v1", "/pets").unwrap(), PathMatchConfig::Exact(s) if s == "/v1/pets"));
        assert!(matches!(p("/v1", "/").unwrap(), PathMatchConfig::Exact(s) if s == "/v1"));
        assert!(matches!(p("", "/").unwrap(), PathMatchConfig::Exact(s) if s == "/"));
        assert!(
            matches!(p("", "/pets/{pet-id}/toys/{toy.id}").unwrap(), PathMatchConfig::Template(s) if s == "/pets/{pet_id}/toys/{toy_id}")
        );
        let e = p("", "/a/{x-y}/{x.y}").unwrap_err();
        assert_eq!(e.loc, at);
        assert!(e.msg.contains("both named `x_y`"), "{}", e.msg);
        let e = p("", "/report.{fmt}").unwrap_err();
        assert!(e.msg.contains("mixes text and a parameter"), "{}", e.msg);
        assert!(e.hint.contains("skip: true"), "{}", e.hint);
        assert!(p("", "/a/./b").unwrap_err().msg.contains("canonical"));
    }

    #[test]
    fn minified_tab_indented_json_reads_like_yaml() {
        let json = "{\"openapi\":\"3.0.3\",\"paths\":{\"\\/pets\":{\"get\":{\"operationId\":\"listPets\"}}}}";
        let root = parse(json).unwrap();
        let ops = operations(&root, &mut Vec::new());
        assert_eq!(ops[0].path, "/pets");
        assert_eq!(
            ops[0].method_loc,
            Loc {
                line: 1,
                column: 39
            }
        );
        let tabs =
            "{\n\t\"openapi\": \"3.1.0\",\n\t\"paths\": {\n\t\t\"/a\": {\"get\": {}}\n\t}\n}\n";
        let root = parse(tabs).unwrap();
        assert_eq!(
            operations(&root, &mut Vec::new())[0].path_loc,
            Loc { line: 4, column: 3 }
        );
        let e = parse("{\"openapi\": \"3.1.0\",\n \"paths\": {}\n \"x\": 1}").unwrap_err();
        assert!(e.msg.starts_with("invalid YAML"), "{}", e.msg);
        assert_eq!((e.loc.line, e.loc.column), (3, 2), "{}", e.msg);
    }
}
