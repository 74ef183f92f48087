//! The route table: picks the route for a request in time that does not grow with the number of
//! routes on the common path.
//!
//! Hosts are looked up in a hash map (exact names), then in wildcard suffixes (longest first),
//! then in the table of routes without hosts. Within a host's table a matchit radix tree finds the
//! most specific path pattern; its routes, and the prefix routes above it, are pre-sorted at load
//! time, so a request usually checks one or two routes. Only when none of those accepts the
//! request (method, header or query conditions) does the table fall back to a scan in
//! precedence order.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::ir::route::{HostPattern, PathPattern, Route, Segment, Template};

/// What the router needs to know about a request.
pub struct RequestView<'a> {
    /// Lower-case host without port, if the request named one.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
}

pub struct Matched<'r, 'p> {
    pub route: &'r Arc<Route>,
    /// Captured template parameters, in the route template's order.
    pub params: Vec<&'p str>,
}

#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Table>,
    /// (`.example.com`, table), longest suffix first.
    suffix: Vec<(String, Table)>,
    any: Table,
    routes: Vec<Arc<Route>>,
}

#[derive(Default)]
struct Table {
    paths: matchit::Router<usize>,
    /// Per matchit entry: route indexes in the order they are tried.
    entries: Vec<Vec<usize>>,
    patterns: HashMap<String, usize>,
    /// Every route of the table in precedence order, for the fallback scan.
    all: Vec<usize>,
    /// Routes whose pattern matchit could not index; always scanned.
    unindexed: Vec<usize>,
    /// Routes that match the path in any case (`case_sensitive: false`), in precedence order:
    /// kept out of matchit and tested beside what it finds.
    any_case: Vec<usize>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("entries", &self.entries.len())
            .field("all", &self.all)
            .finish()
    }
}

impl Router {
    pub fn build(routes: &[Arc<Route>]) -> Router {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut suffix: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any = Vec::new();
        for r in routes {
            if r.hosts.is_empty() {
                any.push(r.index);
            }
            for h in &r.hosts {
                match h {
                    HostPattern::Exact(name) => {
                        exact.entry(name.clone()).or_default().push(r.index)
                    }
                    HostPattern::Suffix(s) => suffix.entry(s.clone()).or_default().push(r.index),
                }
            }
        }
        let mut suffix: Vec<(String, Table)> = suffix
            .into_iter()
            .map(|(s, ids)| (s, Table::build(routes, &ids)))
            .collect();
        suffix.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Router {
            exact: exact
                .into_iter()
                .map(|(h, ids)| (h, Table::build(routes, &ids)))
                .collect(),
            suffix,
            any: Table::build(routes, &any),
            routes: routes.to_vec(),
        }
    }

    /// The route for a request: most specific host, then most specific path, then most
    /// conditions, then declared order.
    pub fn find<'r, 'p>(&'r self, req: &RequestView<'p>) -> Option<Matched<'r, 'p>> {
        if let Some(host) = req.host {
            if let Some(t) = self.exact.get(host)
                && let Some(m) = t.find(&self.routes, req)
            {
                return Some(m);
            }
            for (sfx, t) in &self.suffix {
                if host.len() > sfx.len()
                    && host.ends_with(sfx.as_str())
                    && let Some(m) = t.find(&self.routes, req)
                {
                    return Some(m);
                }
            }
        }
        self.any.find(&self.routes, req)
    }
}

/// matchit treats `{` and `}` as syntax; literal braces are doubled.
fn escape(s: &str) -> String {
    s.replace('{', "{{").replace('}', "}}")
}

/// The matchit patterns for a route, with parameters renamed by position (`p0`, `p1`, …) so
/// routes that differ only in parameter names share an entry instead of conflicting.
fn patterns(path: &PathPattern) -> Vec<String> {
    match path {
        PathPattern::Any => vec!["/".into(), "/{*p0}".into()],
        // Exact and template routes also take the path with one trailing slash: backends that
        // route `/users/5/admin/` as `/users/5/admin` (Express, Spring, most frameworks) must
        // not be reached through it by a request the route would not have matched.
        PathPattern::Exact(p) if p.ends_with('/') => vec![escape(p)],
        PathPattern::Exact(p) => vec![escape(p), format!("{}/", escape(p))],
        PathPattern::Prefix(p) if p == "/" => vec!["/".into(), "/{*p0}".into()],
        PathPattern::Prefix(p) => vec![
            escape(p),
            format!("{}/", escape(p)),
            format!("{}/{{*p0}}", escape(p)),
        ],
        PathPattern::Template(t) => {
            let n = normalized_template(t);
            match t.segments.last() {
                Some(Segment::CatchAll | Segment::Literal(_)) if n.ends_with('/') => vec![n],
                Some(Segment::CatchAll) => vec![n],
                _ => {
                    let slash = format!("{n}/");
                    vec![n, slash]
                }
            }
        }
    }
}

/// The path a fixed or template pattern matches, with parameters renamed by position: two
/// patterns with the same shape take the same requests (`/pets/{id}` and `/pets/{name}`).
/// `None` for prefixes and the match-all, which overlap other patterns rather than equal them.
pub(crate) fn shape(path: &PathPattern) -> Option<String> {
    match path {
        PathPattern::Exact(_) | PathPattern::Template(_) => patterns(path).into_iter().next(),
        PathPattern::Prefix(_) | PathPattern::Any => None,
    }
}

fn normalized_template(t: &Template) -> String {
    let mut out = String::new();
    let mut n = 0;
    for seg in &t.segments {
        out.push('/');
        match seg {
            Segment::Literal(l) => out.push_str(&escape(l)),
            Segment::Param => {
                out.push_str(&format!("{{p{n}}}"));
                n += 1;
            }
            Segment::CatchAll => {
                out.push_str(&format!("{{*p{n}}}"));
                n += 1;
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Rank of a path kind for the fallback order: lower is more specific.
fn specificity(p: &PathPattern) -> (u8, std::cmp::Reverse<usize>) {
    match p {
        PathPattern::Exact(_) => (0, std::cmp::Reverse(0)),
        PathPattern::Template(t) => (1, std::cmp::Reverse(t.segments.len())),
        PathPattern::Prefix(s) => (2, std::cmp::Reverse(s.len())),
        PathPattern::Any => (3, std::cmp::Reverse(0)),
    }
}

fn prefix_of(p: &PathPattern) -> Option<&str> {
    match p {
        PathPattern::Prefix(s) => Some(s),
        PathPattern::Any => Some("/"),
        _ => None,
    }
}

impl Table {
    fn build(routes: &[Arc<Route>], ids: &[usize]) -> Table {
        let mut t = Table::default();
        let (any_case, ids): (Vec<usize>, Vec<usize>) =
            ids.iter().partition(|&&id| routes[id].path_any_case);
        let ids = &ids[..];
        t.any_case = any_case;
        t.any_case.sort_by_key(|&id| precedence(&routes[id]));
        for &id in ids {
            let mut indexed = true;
            for pat in patterns(&routes[id].path) {
                let entry = match t.patterns.get(&pat) {
                    Some(&e) => e,
                    None => {
                        let e = t.entries.len();
                        if t.paths.insert(pat.clone(), e).is_err() {
                            indexed = false;
                            continue;
                        }
                        t.entries.push(Vec::new());
                        t.patterns.insert(pat, e);
                        e
                    }
                };
                if !t.entries[entry].contains(&id) {
                    t.entries[entry].push(id);
                }
            }
            if !indexed {
                t.unindexed.push(id);
            }
        }
        // Own routes of each entry: exact and template before prefix, then more conditions,
        // then declared order. Then the prefix routes that cover the entry, longest first.
        // A pattern that is only a route's trailing-slash variant ranks after routes for
        // which it is the pattern itself (`/a/` exact before `/a` exact).
        let rank = |id: usize, pat: &str| {
            let r = &routes[id];
            let kind = u8::from(prefix_of(&r.path).is_some());
            let variant = patterns(&r.path).first().is_some_and(|p| p != pat)
                && matches!(r.path, PathPattern::Exact(_) | PathPattern::Template(_));
            (
                kind,
                variant,
                std::cmp::Reverse(r.condition_count()),
                r.index,
            )
        };
        // Prefix routes by their prefix, so the routes covering an entry are found by walking
        // the entry's segment boundaries instead of testing every prefix route (which made
        // 10,000-route configs quadratic to build).
        let mut by_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
        for &id in ids {
            if let Some(p) = prefix_of(&routes[id].path) {
                by_prefix.entry(p).or_default().push(id);
            }
        }
        for (pat, &e) in &t.patterns {
            let list = &mut t.entries[e];
            list.sort_by_key(|&id| rank(id, pat));
            let lead = match pat.find('{') {
                Some(i) if pat[i..].starts_with("{{") => pat.as_str(),
                Some(i) => &pat[..i],
                None => pat.as_str(),
            };
            // Every prefix that covers `lead`: "/", each segment boundary, and `lead` itself.
            let mut covering: Vec<usize> = Vec::new();
            let trimmed = lead.trim_end_matches('/');
            let boundaries = lead
                .match_indices('/')
                .map(|(i, _)| &lead[..i])
                .filter(|s| !s.is_empty());
            for p in std::iter::once("/")
                .chain(boundaries)
                .chain(std::iter::once(trimmed))
            {
                if let Some(ids) = by_prefix.get(p) {
                    for &id in ids {
                        if !list.contains(&id) && !covering.contains(&id) {
                            covering.push(id);
                        }
                    }
                }
            }
            covering.sort_by_key(|&id| {
                let r = &routes[id];
                (
                    std::cmp::Reverse(prefix_of(&r.path).map_or(0, str::len)),
                    std::cmp::Reverse(r.condition_count()),
                    r.index,
                )
            });
            list.extend(covering);
        }
        t.all = ids.to_vec();
        t.all.sort_by_key(|&id| precedence(&routes[id]));
        t
    }

    fn find<'r, 'p>(
        &self,
        routes: &'r [Arc<Route>],
        req: &RequestView<'p>,
    ) -> Option<Matched<'r, 'p>> {
        let found = self.find_indexed(routes, req);
        if self.any_case.is_empty() {
            return found;
        }
        let any_case = self.any_case.iter().find_map(|&id| {
            let r = &routes[id];
            let params = match_path_in(&r.path, req.path, true)?;
            accepts(r, req).then_some(Matched { route: r, params })
        });
        match (found, any_case) {
            (Some(a), Some(b)) if precedence(b.route) < precedence(a.route) => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        }
    }

    fn find_indexed<'r, 'p>(
        &self,
        routes: &'r [Arc<Route>],
        req: &RequestView<'p>,
    ) -> Option<Matched<'r, 'p>> {
        match self.paths.at(req.path) {
            Ok(m) => {
                for &id in &self.entries[*m.value] {
                    let r = &routes[id];
                    if accepts(r, req) {
                        let params = match r.path {
                            PathPattern::Template(_) => m.params.iter().map(|(_, v)| v).collect(),
                            _ => Vec::new(),
                        };
                        return Some(Matched { route: r, params });
                    }
                }
                self.scan(routes, &self.all, req)
            }
            Err(_) if !self.unindexed.is_empty() => self.scan(routes, &self.unindexed, req),
            Err(_) => None,
        }
    }

    fn scan<'r, 'p>(
        &self,
        routes: &'r [Arc<Route>],
        ids: &[usize],
        req: &RequestView<'p>,
    ) -> Option<Matched<'r, 'p>> {
        ids.iter().find_map(|&id| {
            let r = &routes[id];
            let params = match_path(&r.path, req.path)?;
            accepts(r, req).then_some(Matched { route: r, params })
        })
    }
}

/// The order in which routes that all match a request are preferred: more specific path,
/// then more conditions, then declared order.
pub fn precedence(
    r: &Route,
) -> (
    (u8, std::cmp::Reverse<usize>),
    std::cmp::Reverse<usize>,
    usize,
) {
    (
        specificity(&r.path),
        std::cmp::Reverse(r.condition_count()),
        r.index,
    )
}

/// Matches a path against one route's pattern on its own (the fallback scan and tests).
pub fn match_path<'p>(pattern: &PathPattern, path: &'p str) -> Option<Vec<&'p str>> {
    match_path_in(pattern, path, false)
}

/// `match_path`, comparing ASCII letters in any case when `any_case` is set.
pub fn match_path_in<'p>(
    pattern: &PathPattern,
    path: &'p str,
    any_case: bool,
) -> Option<Vec<&'p str>> {
    let eq = |a: &str, b: &str| {
        if any_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern {
        PathPattern::Any => Some(Vec::new()),
        PathPattern::Exact(p) => {
            let bare = match path.strip_suffix('/') {
                Some(b) if !p.ends_with('/') => b,
                _ => path,
            };
            (eq(p, path) || eq(p, bare)).then(Vec::new)
        }
        PathPattern::Prefix(p) => has_prefix_in(path, p, any_case).then(Vec::new),
        PathPattern::Template(t) => {
            let mut params = Vec::new();
            let mut rest = path.strip_prefix('/')?;
            for (i, seg) in t.segments.iter().enumerate() {
                match seg {
                    Segment::CatchAll => {
                        params.push(rest);
                        return Some(params);
                    }
                    _ => {
                        let end = rest.find('/').unwrap_or(rest.len());
                        let part = &rest[..end];
                        match seg {
                            Segment::Literal(l) if eq(l, part) => {}
                            Segment::Param if !part.is_empty() => params.push(part),
                            _ => return None,
                        }
                        rest = &rest[end..];
                        if i + 1 < t.segments.len() {
                            rest = rest.strip_prefix('/')?;
                        }
                    }
                }
            }
            // One trailing slash is taken, as by the router's index.
            (rest.is_empty() || rest == "/").then_some(params)
        }
    }
}

/// Segment-aware prefix test: `/api` covers `/api` and `/api/x`, not `/apix`.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    has_prefix_in(path, prefix, false)
}

fn has_prefix_in(path: &str, prefix: &str, any_case: bool) -> bool {
    if prefix == "/" {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if any_case {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(&b'/'))
}

fn accepts(r: &Route, req: &RequestView<'_>) -> bool {
    unmet(r, req).is_none()
}

/// A route condition a request does not meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet<'r> {
    Method,
    Header(&'r http::HeaderName),
    Query(&'r str),
    Cookie(&'r str),
}

/// The first of a route's conditions (method, headers, query, cookies) the request fails, in
/// the order the router tests them; `None` when it meets them all. The path and host are the
/// router's tables' business. `portico explain` reports this too.
#[inline]
pub fn unmet<'r>(r: &'r Route, req: &RequestView<'_>) -> Option<Unmet<'r>> {
    if !r.methods.is_empty() && !r.methods.iter().any(|m| m == req.method) {
        return Some(Unmet::Method);
    }
    for h in &r.headers {
        // Several values of one header are tested one by one; any may satisfy the condition.
        let mut values = req.headers.get_all(&h.name).iter().peekable();
        let ok = if values.peek().is_none() {
            h.test.accepts(None)
        } else {
            values.any(|v| h.test.accepts(Some(v.to_str().unwrap_or(""))))
        };
        if !ok {
            return Some(Unmet::Header(&h.name));
        }
    }
    for q in &r.query {
        let value = crate::query::get(req.query, &q.name);
        if !q.test.accepts(value.as_deref()) {
            return Some(Unmet::Query(&q.name));
        }
    }
    for c in &r.cookies {
        if !c.test.accepts(cookie(req.headers, &c.name)) {
            return Some(Unmet::Cookie(&c.name));
        }
    }
    None
}

/// The value of a cookie, from any `Cookie` header (`a=1; b=2`).
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_path;
    use crate::file::PathMatchConfig;

    fn shape_of(p: PathMatchConfig) -> Option<String> {
        shape(&compile_path(&p).expect("test path compiles"))
    }

    #[test]
    fn shape_ignores_parameter_names_and_keeps_literals() {
        let t = |s: &str| shape_of(PathMatchConfig::Template(s.into()));
        assert_eq!(t("/pets/{id}").as_deref(), Some("/pets/{p0}"));
        assert_eq!(t("/pets/{id}"), t("/pets/{name}"));
        assert_ne!(t("/pets/{id}"), t("/pets/{id}/toys"));
        assert_eq!(
            shape_of(PathMatchConfig::Exact("/pets".into())).as_deref(),
            Some("/pets")
        );
        assert_eq!(shape_of(PathMatchConfig::Prefix("/pets".into())), None);
    }
}
