//! External `$ref`s: the files and URLs an OpenAPI document refers to (`schemas/pet.yaml`,
//! `common.yaml#/components/schemas/Error`, `https://…/problem.json`) are read and grafted
//! into the document under [`BUNDLED`], and every reference is rewritten to a local JSON
//! pointer. What comes after (operations, schemas, mocks, the gateway's description) sees one
//! document with local references only.
//!
//! A grafted document keeps its own lines: the index of the document it was read from is kept
//! in the high bits of each node's line (`doc::split` takes it apart), so a problem anywhere is
//! reported in the file that has it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::tree::{Loc, Node, NodeKind};

use super::doc::{self, Problem, SHIFT};

/// The root key the read documents are grafted under, each under its index (`"1"`, `"2"`…).
pub(crate) const BUNDLED: &str = "x-portico-bundled";

/// How many documents one API may be made of, the first included.
pub(crate) const MAX_DOCUMENTS: usize = 64;

/// One document of an API: the name problems are reported under (a path or a URL) and its text.
pub(crate) struct Source {
    pub name: String,
    pub text: String,
}

/// `text` (a message) with each grafted pointer `#/x-portico-bundled/N/…` written as its
/// document writes it: `#/…` in document `here`, `NAME#/…` elsewhere.
pub(crate) fn as_written(text: &str, here: usize, sources: &[Source]) -> String {
    let marker = format!("#/{BUNDLED}/");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&marker) {
        out.push_str(&rest[..at]);
        let after = &rest[at + marker.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let n: usize = after[..digits].parse().unwrap_or(usize::MAX);
        match sources.get(n) {
            Some(s) if digits > 0 => {
                if n != here {
                    out.push_str(&s.name);
                }
                out.push('#');
                rest = &after[digits..];
            }
            _ => {
                out.push_str(&marker);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Reads a document named by a path or an `http(s)://` URL.
pub(crate) type Read<'a> = dyn FnMut(&str) -> Result<Vec<u8>, String> + 'a;

pub(crate) fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Where a reference's document part points, relative to the document `base` it is written
/// in: a canonical path (so one file reached by two spellings is read once), or a URL with its
/// `.` and `..` segments removed. A document read from a URL refers to that server only.
fn target(base: &str, part: &str) -> Result<String, String> {
    if is_url(base) {
        if part.contains("://") && !is_url(part) {
            return Err("a document read from a URL can only refer to http(s) URLs".into());
        }
        return Ok(normalize_url(&portico_translate::wsdl::resolve_location(
            base, part,
        )));
    }
    if is_url(part) {
        return Ok(normalize_url(part));
    }
    if part.contains("://") {
        return Err("only relative paths, absolute paths and http(s) URLs are read".into());
    }
    // A reference is a URI: `my%20pet.yaml` is the file `my pet.yaml`.
    let decoded = percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map_err(|_| "its percent-escapes are not UTF-8".to_owned())?;
    let path = portico_translate::wsdl::resolve_location(base, &decoded);
    std::fs::canonicalize(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| format!("cannot read `{path}`: {e}"))
}

/// `http://h/a/./b/../c.yaml` → `http://h/a/c.yaml`; the query is kept as written.
pub(crate) fn normalize_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let (path, query) = match tail.find('?') {
        Some(q) => tail.split_at(q),
        None => (tail, ""),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let path = if path.is_empty() {
        String::new()
    } else {
        format!("/{}", out.join("/"))
    };
    format!("{scheme}://{host}{path}{query}")
}

/// Adds `shift` to the line of every node of a tree.
fn shift(n: &mut Node, add: u32) {
    n.loc.line |= add;
    match &mut n.kind {
        NodeKind::Seq(items) => items.iter_mut().for_each(|i| shift(i, add)),
        NodeKind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift(k, add);
            shift(v, add);
        }),
        _ => {}
    }
}

/// The documents of one API while they are read.
struct Bundler<'r, 'a> {
    read: &'r mut Read<'a>,
    /// Index of each document by where it was read from; `None` once reading it failed.
    index: HashMap<String, Option<usize>>,
    /// Where each document was read from, the root first.
    locations: Vec<String>,
    /// The documents read and not yet walked.
    pending: Vec<(usize, Node)>,
    sources: Vec<Source>,
    problems: Vec<Problem>,
    /// Whether schemas name themselves (`$id`, `$anchor`: OpenAPI 3.1's JSON Schema).
    scoped: bool,
    /// Each `$id` (resolved) of the documents read: the document and the schema's pointer.
    ids: HashMap<String, (usize, String)>,
    /// Each `$anchor` by its resource (a document's location, or an `$id`) and name.
    anchors: HashMap<(String, String), (usize, String)>,
    /// The `$id` of each document's root, where it has one: the resource its anchors are in.
    root_ids: HashMap<usize, String>,
    /// References not yet followed, by the number their `$ref` is marked with (see
    /// [`DEFERRED`]). Each is tried again as an `$id` once every document the others name is
    /// read, as an `$id` may be in a document read after the reference.
    deferred: HashMap<usize, Deferred>,
    /// The number the next deferred reference is marked with.
    next_mark: usize,
    pass: Pass,
    /// Whether this retrying pass has fetched a URL: one a pass, so that the document
    /// fetched first can declare the `$id` a later URL is.
    fetched: bool,
}

/// A reference put off: its text, where it is, and what reading it gave.
struct Deferred {
    doc: usize,
    text: String,
    /// The problems reading it gave (`None`: a URL not fetched yet).
    problems: Option<Vec<Problem>>,
}

/// What a walk over a document's references does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Rewrites each, reading the documents they name, or puts it off.
    First,
    /// Tries the deferred ones again, and no other.
    Retry,
    /// Gives the deferred ones left their text back, and reports them.
    Restore,
}

/// What a deferred reference's `$ref` holds until it is tried again: this, then its number.
/// A YAML alias repeats its nodes' places, so a place does not name a reference; this does.
const DEFERRED: &str = "\u{0}portico-deferred:";

impl Bundler<'_, '_> {
    /// Puts off the reference `v` of document `i`, written `text`.
    fn defer(&mut self, i: usize, v: &mut Node, text: String, problems: Option<Vec<Problem>>) {
        let k = self.next_mark;
        self.next_mark += 1;
        self.deferred.insert(
            k,
            Deferred {
                doc: i,
                text,
                problems,
            },
        );
        v.kind = NodeKind::Str(format!("{DEFERRED}{k}"));
    }

    /// The index of the document at `location`, reading it the first time.
    fn document(&mut self, location: String, at: Loc, written: &str) -> Option<usize> {
        if let Some(known) = self.index.get(&location) {
            return *known;
        }
        let read = self.load(&location, at, written);
        self.index.insert(location, read);
        read
    }

    fn load(&mut self, location: &str, at: Loc, written: &str) -> Option<usize> {
        let i = self.locations.len();
        if i >= MAX_DOCUMENTS {
            self.problems.push(Problem::new(
                at,
                format!("`{written}` would be document number {} of this API, more than {MAX_DOCUMENTS}", i + 1),
                "bundle the schemas into fewer files",
            ));
            return None;
        }
        let bytes = match (self.read)(location) {
            Ok(b) => b,
            Err(e) => {
                self.problems.push(Problem::new(
                    at,
                    format!("cannot read `{written}` (`{location}`): {e}"),
                    "check the name; it is relative to the document that refers to it",
                ));
                return None;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problems.push(Problem::new(
                at,
                format!("`{location}` is not UTF-8 text"),
                "save the document as UTF-8",
            ));
            return None;
        };
        let tag = (i as u32) << SHIFT;
        let parsed = doc::parse(&text);
        self.sources.push(Source {
            name: location.to_owned(),
            text,
        });
        self.locations.push(location.to_owned());
        match parsed {
            Ok(mut tree) => {
                shift(&mut tree, tag);
                self.index_names(i, &mut tree);
                self.pending.push((i, tree));
                Some(i)
            }
            Err(mut p) => {
                p.loc.line |= tag;
                self.problems.push(p);
                None
            }
        }
    }

    /// Records the `$id`s and `$anchor`s of document `i`.
    fn index_names(&mut self, i: usize, tree: &mut Node) {
        let base = self.locations[i].clone();
        let (ids, anchors, problems, root_ids) = (
            &mut self.ids,
            &mut self.anchors,
            &mut self.problems,
            &mut self.root_ids,
        );
        doc::visit_scoped_mut(tree, &base, self.scoped, &join, &mut |e| match e {
            doc::Scoped::Id { id, pointer, loc } => match ids.entry(id.to_owned()) {
                Entry::Occupied(_) => problems.push(Problem::new(
                    loc,
                    format!("`$id` `{id}` names two schemas"),
                    "give each schema its own `$id`",
                )),
                Entry::Vacant(v) => {
                    if pointer.is_empty() {
                        root_ids.insert(i, id.to_owned());
                    }
                    v.insert((i, pointer.to_owned()));
                }
            },
            doc::Scoped::Anchor {
                base,
                name,
                pointer,
                loc,
            } => match anchors.entry((base.to_owned(), name.to_owned())) {
                Entry::Occupied(_) => problems.push(Problem::new(
                    loc,
                    format!("`$anchor` `{name}` names two schemas of `{base}`"),
                    "give each schema its own anchor",
                )),
                Entry::Vacant(v) => {
                    v.insert((i, pointer.to_owned()));
                }
            },
            doc::Scoped::Ref(..) => {}
        });
    }

    /// Rewrites the references of document `i` to local pointers, reading what they name.
    fn walk(&mut self, i: usize, tree: &mut Node) {
        let base = self.locations[i].clone();
        let scoped = self.scoped;
        doc::visit_scoped_mut(tree, &base, scoped, &join, &mut |e| {
            if let doc::Scoped::Ref(v, base) = e {
                self.rewrite(i, v, base);
            }
        });
    }

    /// Walks the documents that hold deferred references, in the current pass: retrying, the
    /// last read first, so that URLs are fetched depth first, as files are read (a document
    /// fetched may name the one that declares a URL the root names as an `$id`).
    fn walk_deferred(&mut self, root: &mut Node, grafted: &mut [(usize, Node)]) {
        let mut docs: Vec<usize> = self.deferred.values().map(|d| d.doc).collect();
        docs.sort_unstable();
        docs.dedup();
        if self.pass == Pass::Retry {
            docs.reverse();
        }
        for d in docs {
            if d == 0 {
                self.walk(0, root);
            } else if let Some((_, tree)) = grafted.iter_mut().find(|(k, _)| *k == d) {
                self.walk(d, tree);
            }
        }
    }

    /// The resource document `i` is: its root's `$id`, else where it was read from.
    fn resource(&self, i: usize) -> String {
        self.root_ids
            .get(&i)
            .cloned()
            .unwrap_or_else(|| self.locations[i].clone())
    }

    /// One reference of document `i`, whose base URI is `base`, rewritten to a local pointer.
    fn rewrite(&mut self, i: usize, v: &mut Node, base: &str) {
        // A later pass takes only the deferred references, with what reading them gave.
        let mut deferred = None;
        if self.pass != Pass::First {
            let Some(d) = v
                .as_str()
                .and_then(|t| t.strip_prefix(DEFERRED)?.parse::<usize>().ok())
                .and_then(|k| self.deferred.remove(&k))
            else {
                return;
            };
            // Its text back at once: whatever this pass does with it, no marker stays.
            v.kind = NodeKind::Str(d.text);
            if self.pass == Pass::Restore {
                self.problems.extend(d.problems.unwrap_or_default());
                return;
            }
            deferred = Some(d.problems);
        }
        let Some(text) = v.as_str().map(str::to_owned) else {
            return; // Reported by `check_refs`.
        };
        let tried = deferred.flatten();
        let (part, fragment) = text.split_once('#').unwrap_or((&text, ""));
        let anchor = !fragment.is_empty() && !fragment.starts_with('/');
        if anchor && !self.scoped {
            if !part.is_empty() {
                self.problems.push(Problem::new(
                    v.loc,
                    format!(
                        "`$ref` `{text}` names an anchor, which OpenAPI 3.0 schemas do not have"
                    ),
                    "write a pointer such as `schemas.yaml#/components/schemas/Pet`",
                ));
            }
            return; // A local one is reported by `check_refs`.
        }
        // The resource it names: a schema by its `$id`, else a document by where it is. A
        // bare pointer (`#/components/schemas/Pet`) starts at its document's root even inside
        // a schema with an `$id`: OpenAPI documents are written so (JSON Schema alone would
        // start it at that schema).
        let uri = join(base, part);
        let known = if part.is_empty() && !anchor {
            None
        } else {
            self.ids.get(&uri).cloned()
        };
        let (mut j, root, resource) = match known {
            Some((j, pointer)) => (j, pointer, uri),
            None if part.is_empty() => (i, String::new(), self.resource(i)),
            None if self.scoped && self.pass == Pass::First && is_url(&uri) => {
                // A URL may be the `$id` of a schema in a document not read yet: fetched
                // only once every document the other references name is read and it is not.
                self.defer(i, v, text, None);
                return;
            }
            None if tried.is_some() => {
                // Read before, and still no `$id` of that name: kept for the next pass, or
                // for the end, where what reading it gave is the answer.
                self.defer(i, v, text, tried);
                return;
            }
            None => {
                let before = self.problems.len();
                let read = match target(&self.locations[i], part) {
                    Ok(location) => {
                        // Retrying, one URL a pass is fetched (a failed fetch, which declares
                        // no `$id`, does not count): the next pass tries the rest again.
                        let fetch = self.pass == Pass::Retry
                            && is_url(&location)
                            && !self.index.contains_key(&location);
                        if fetch && self.fetched {
                            self.defer(i, v, text, None);
                            return;
                        }
                        let written = part.to_owned();
                        let read = self.document(location, v.loc, &written);
                        self.fetched |= fetch && read.is_some();
                        read
                    }
                    Err(e) => {
                        self.problems.push(Problem::new(
                            v.loc,
                            format!("`$ref` `{text}`: {e}"),
                            "check the name; it is relative to the document that refers to it",
                        ));
                        None
                    }
                };
                match read {
                    Some(j) => (j, String::new(), self.resource(j)),
                    None => {
                        let problems = self.problems.split_off(before);
                        self.defer(i, v, text, Some(problems));
                        return;
                    }
                }
            }
        };
        let pointer = if anchor {
            let name = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
            match self
                .anchors
                .get(&(resource.clone(), name.clone().into_owned()))
            {
                Some((k, pointer)) => {
                    j = *k;
                    pointer.clone()
                }
                None => {
                    self.problems.push(Problem::new(
                        v.loc,
                        format!("`$ref` `{text}`: no schema of `{resource}` has `$anchor: {name}`"),
                        "check the anchor's name, and that the schema with it is inside that resource (its `$id`, or its document)",
                    ));
                    return;
                }
            }
        } else {
            format!("{root}{fragment}")
        };
        let local = if j == 0 {
            format!("#{pointer}")
        } else {
            format!("#/{BUNDLED}/{j}{pointer}")
        };
        v.kind = NodeKind::Str(local);
    }
}

/// `reference` resolved against `base` as a URI reference is (RFC 3986), without reading
/// anything, fragment dropped: how `$id`s name schemas and references find them. Bases are
/// documents' locations (canonical paths, URLs) and `$id`s (which may be any absolute URI,
/// `urn:` ones too).
fn join(base: &str, reference: &str) -> String {
    let reference = reference.split('#').next().unwrap_or("");
    if reference.is_empty() {
        return base.to_owned();
    }
    if has_scheme(reference) {
        return if is_url(reference) {
            normalize_url(reference)
        } else {
            reference.to_owned()
        };
    }
    if is_url(base) {
        return normalize_url(&portico_translate::wsdl::resolve_location(base, reference));
    }
    if has_scheme(base) {
        // A relative reference against a `urn:` (say) has no hierarchy to resolve in.
        return reference.to_owned();
    }
    let decoded = percent_encoding::percent_decode_str(reference).decode_utf8_lossy();
    let path = portico_translate::wsdl::resolve_location(base, &decoded);
    let normal = normalize_url(&format!("file://{path}"));
    normal.strip_prefix("file://").unwrap_or(&normal).to_owned()
}

/// Whether a URI reference starts with a scheme (`https:`, `urn:`).
fn has_scheme(r: &str) -> bool {
    match r.split_once(':') {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// Reads every document `root` refers to, from `location` (a canonical path or a URL), and
/// grafts them in. `sources` holds the root's source and gets one per document read; the
/// returned locations are those read besides the root.
pub(crate) fn bundle(
    root: &mut Node,
    location: &str,
    sources: &mut Vec<Source>,
    read: &mut Read<'_>,
) -> Result<Vec<String>, Vec<Problem>> {
    if let Some(taken) = super::super::ctx::get(root, BUNDLED) {
        return Err(vec![Problem::new(
            taken.loc,
            format!("`{BUNDLED}` is where Portico grafts the documents this one refers to"),
            "rename the key",
        )]);
    }
    let mut b = Bundler {
        read,
        index: HashMap::from([(location.to_owned(), Some(0))]),
        locations: vec![location.to_owned()],
        pending: Vec::new(),
        sources: std::mem::take(sources),
        problems: Vec::new(),
        // `openapi: 3.1` unquoted is a number to YAML: the dialect reads it as written.
        scoped: doc::dialect(root) == portico_contract::Dialect::Oas31,
        ids: HashMap::new(),
        anchors: HashMap::new(),
        root_ids: HashMap::new(),
        deferred: HashMap::new(),
        next_mark: 0,
        pass: Pass::First,
        fetched: false,
    };
    b.index_names(0, root);
    b.walk(0, root);
    let mut grafted = Vec::new();
    loop {
        while let Some((i, mut tree)) = b.pending.pop() {
            b.walk(i, &mut tree);
            grafted.push((i, tree));
        }
        // The references deferred: `$id`s of documents read after them, a URL to fetch now
        // that no document read declares it, or problems. A URL fetched may name more
        // documents: then they are read, and what is still deferred is tried again.
        if b.deferred.is_empty() {
            break;
        }
        b.pass = Pass::Retry;
        b.fetched = false;
        b.walk_deferred(root, &mut grafted);
        b.pass = Pass::First;
        let unfetched = b.deferred.values().any(|d| d.problems.is_none());
        if b.pending.is_empty() && !unfetched {
            break;
        }
    }
    // What is left is reported, each `$ref` given its text back for the checks after this.
    if !b.deferred.is_empty() {
        b.pass = Pass::Restore;
        b.walk_deferred(root, &mut grafted);
        let left: Vec<Problem> = b
            .deferred
            .drain()
            .flat_map(|(_, d)| d.problems.unwrap_or_default())
            .collect();
        b.problems.extend(left);
    }
    *sources = b.sources;
    // Grafted even when some document could not be read, so that the references to those
    // that were are checked like the rest.
    graft(root, grafted);
    if b.problems.is_empty() {
        Ok(b.locations.split_off(1))
    } else {
        Err(b.problems)
    }
}

fn graft(root: &mut Node, mut grafted: Vec<(usize, Node)>) {
    if grafted.is_empty() {
        return;
    }
    grafted.sort_by_key(|(i, _)| *i);
    let at = root.loc;
    let key = |s: String| Node {
        kind: NodeKind::Str(s),
        loc: at,
    };
    let map = grafted
        .into_iter()
        .map(|(i, tree)| (key(i.to_string()), tree))
        .collect();
    if let NodeKind::Map(entries) = &mut root.kind {
        entries.push((
            key(BUNDLED.to_owned()),
            Node {
                kind: NodeKind::Map(map),
                loc: at,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::openapi::doc::split;

    #[test]
    fn urls_lose_dot_segments_and_keep_their_query() {
        assert_eq!(
            normalize_url("http://h/a/./b/../c.yaml"),
            "http://h/a/c.yaml"
        );
        assert_eq!(normalize_url("http://h/../../x"), "http://h/x");
        assert_eq!(normalize_url("http://h/a/b/.."), "http://h/a/");
        assert_eq!(normalize_url("http://h"), "http://h");
        assert_eq!(
            normalize_url("https://h:8080/a/../s.json?v=../1"),
            "https://h:8080/s.json?v=../1"
        );
    }

    #[test]
    fn a_document_read_from_a_url_refers_only_to_urls() {
        let base = "http://127.0.0.1:9/api/openapi.yaml";
        assert_eq!(
            target(base, "schemas/../pet.yaml").unwrap(),
            "http://127.0.0.1:9/api/pet.yaml"
        );
        assert_eq!(
            target(base, "/etc/passwd").unwrap(),
            "http://127.0.0.1:9/etc/passwd"
        );
        assert!(target(base, "file:///etc/passwd").is_err());
        assert!(target("/tmp/x.yaml", "file:///etc/passwd").is_err());
    }

    #[test]
    fn a_location_carries_its_document() {
        let mut n = Node {
            kind: NodeKind::Seq(vec![Node {
                kind: NodeKind::Null,
                loc: Loc { line: 7, column: 3 },
            }]),
            loc: Loc { line: 6, column: 1 },
        };
        shift(&mut n, 5 << SHIFT);
        let NodeKind::Seq(items) = &n.kind else {
            unreachable!()
        };
        assert_eq!(split(items[0].loc), (5, Loc { line: 7, column: 3 }));
        assert_eq!(
            split(Loc { line: 9, column: 2 }),
            (0, Loc { line: 9, column: 2 })
        );
    }
}
