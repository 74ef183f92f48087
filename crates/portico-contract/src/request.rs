//! A request checked against an operation's contract: its parameters, read with their
//! `style` and `explode` rules and given the types their schemas ask for, its content type, and
//! its JSON body.

use std::sync::Arc;

use crate::json::{self, Scratch, Span, Tree, V};
use crate::schema::{SchemaId, Schemas, ty};
use crate::validate::{Direction, Run, Violation};

/// Where a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

impl In {
    pub fn name(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

/// How a parameter's array or object is written (OpenAPI's `style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Simple,
    Label,
    Matrix,
    Form,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

impl Style {
    pub fn of(name: &str) -> Option<Style> {
        Some(match name {
            "simple" => Style::Simple,
            "label" => Style::Label,
            "matrix" => Style::Matrix,
            "form" => Style::Form,
            "spaceDelimited" => Style::SpaceDelimited,
            "pipeDelimited" => Style::PipeDelimited,
            "deepObject" => Style::DeepObject,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub struct Param {
    pub name: Box<str>,
    pub location: In,
    pub required: bool,
    pub style: Style,
    pub explode: bool,
    /// `allowEmptyValue`: an empty query value passes.
    pub allow_empty: bool,
    pub schema: Option<SchemaId>,
    /// The value is a JSON text (`content: {application/json: …}`) rather than a styled one.
    pub json: bool,
}

/// A `Content-Type`'s type and subtype, lower case, without parameters (`""` when absent).
pub(crate) fn essence(content_type: Option<&str>) -> std::borrow::Cow<'_, str> {
    let e = content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .trim();
    // Nearly every client writes it in lower case already: no copy then.
    if e.bytes().any(|b| b.is_ascii_uppercase()) {
        e.to_ascii_lowercase().into()
    } else {
        e.into()
    }
}

/// The schema slot of the media range that fits `essence` best, if any fits.
pub(crate) fn best_media<'m>(
    media: &'m [(MediaRange, Option<SchemaId>)],
    essence: &str,
) -> Option<&'m Option<SchemaId>> {
    best_entry(media, essence).map(|i| &media[i].1)
}

/// The index of the media range that fits `essence` best, if any fits (the last of equals).
pub(crate) fn best_entry(media: &[(MediaRange, Option<SchemaId>)], essence: &str) -> Option<usize> {
    media
        .iter()
        .enumerate()
        .map(|(i, (m, _))| (m.fit(essence), i))
        .filter(|(f, _)| *f > 0)
        .max_by_key(|(f, _)| *f)
        .map(|(_, i)| i)
}

/// A media type of `requestBody.content`: `type/subtype`, `type/*` or `*/*`, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange(pub Box<str>);

impl MediaRange {
    /// How well `essence` matches: 3 exactly, 2 by `type/*`, 1 by `*/*`, 0 not at all.
    pub(crate) fn fit(&self, essence: &str) -> u8 {
        let r = &*self.0;
        if r == essence {
            3
        } else if r == "*/*" {
            1
        } else if let Some(t) = r.strip_suffix("/*")
            && essence.split_once('/').is_some_and(|(et, _)| et == t)
        {
            2
        } else {
            0
        }
    }
}

#[derive(Debug)]
pub struct BodyRule {
    pub required: bool,
    /// Media ranges and their schemas (a JSON one's body is checked against it).
    pub media: Box<[(MediaRange, Option<SchemaId>)]>,
    /// For each of `media`, in order: what the entry's `encoding` says of a multipart body's
    /// parts or a form body's fields; empty for other entries.
    pub parts: Box<[Box<[PartRule]>]>,
}

/// What a multipart or form body's `encoding` says of the part or field it names.
#[derive(Debug)]
pub struct PartRule {
    pub name: Box<str>,
    /// `contentType` of a multipart part: the media types the part may have (empty: any).
    pub types: Box<[MediaRange]>,
    /// `headers` of a multipart part: its own headers, each checked as a header parameter is.
    pub headers: Box<[Param]>,
    /// How a form body's field is written, when its encoding says.
    pub form: Option<FieldStyle>,
    /// That field as the query parameter it is read as, once resolved against the body's
    /// schema ([`finish`](crate::finish)): `None` where the field is read as every other.
    pub field: Option<Param>,
}

/// How a form body's field is written: in a query parameter's `style` and `explode`, or as
/// JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldStyle {
    pub style: Style,
    pub explode: bool,
    pub json: bool,
}

/// Bounds on the work of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest body read for checking; a larger one is refused with 413.
    pub max_body: u64,
    pub max_depth: u32,
    pub max_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_depth: 64,
            max_errors: 20,
        }
    }
}

/// What an operation accepts.
#[derive(Debug)]
pub struct RequestContract {
    pub schemas: Arc<Schemas>,
    pub params: Box<[Param]>,
    pub body: Option<BodyRule>,
    pub limits: Limits,
}

/// The parts of a request the contract looks at.
pub struct RequestParts<'a> {
    /// The path's template parameters by name, as they appear in the path (percent-encoded).
    pub path: &'a [(&'a str, &'a str)],
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

/// One failure: where in the request (`body`, `path`, `query`, `header`, `cookie`), the
/// parameter's name, the JSON pointer within the value, and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub location: &'static str,
    pub name: Option<Box<str>>,
    pub pointer: String,
    pub keyword: &'static str,
    pub message: String,
}

/// Why a request was refused: 400, 413 or 415, and every failure found (up to the bound).
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub failures: Vec<Failure>,
}

/// What to do with the body, from the request's head.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyPlan {
    /// Nothing to check in the body.
    Pass,
    /// Read it (up to `Limits::max_body`) and check it.
    Check(BodyCheck),
}

/// A body to check: against which schema, and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCheck {
    pub schema: SchemaId,
    pub kind: BodyKind,
}

/// How a checked body is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON (`application/json`, `…+json`).
    Json,
    /// `application/x-www-form-urlencoded`: its fields are the properties of an object, a
    /// field written several times an array's items where the property is an array.
    Form {
        /// The index in `BodyRule::media` of the entry chosen, whose `encoding` applies.
        entry: usize,
    },
    /// `multipart/form-data`: its parts are the properties of an object, as a form's fields
    /// are; a JSON part (or a part for an object property) is read as JSON.
    Multipart {
        boundary: Box<str>,
        /// The index in `BodyRule::media` of the entry chosen, whose `encoding` applies.
        entry: usize,
    },
}

impl RequestContract {
    /// Checks the head: parameters, and the body's presence and content type. Returns what to
    /// do with the body. `has_body` says whether the request has (or may have) a body.
    pub fn check_head(
        &self,
        parts: &RequestParts<'_>,
        has_body: bool,
        scratch: &mut Scratch,
        failures: &mut Vec<Failure>,
    ) -> Result<BodyPlan, u16> {
        for p in self.params.iter() {
            if failures.len() >= self.limits.max_errors {
                break;
            }
            self.check_param(p, parts, scratch, failures, &mut 0);
        }
        let plan = match &self.body {
            None => BodyPlan::Pass,
            Some(rule) => {
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                match (has_body, content_type) {
                    (false, _) if rule.required => {
                        failures.push(Failure {
                            location: "body",
                            name: None,
                            pointer: String::new(),
                            keyword: "required",
                            message: "a request body is required".into(),
                        });
                        BodyPlan::Pass
                    }
                    (false, _) => BodyPlan::Pass,
                    (true, ct) => {
                        let essence = essence(ct);
                        match best_media(&rule.media, &essence) {
                            None => {
                                let allowed: Vec<&str> =
                                    rule.media.iter().map(|(m, _)| &*m.0).collect();
                                failures.clear();
                                failures.push(Failure {
                                    location: "header",
                                    name: Some("content-type".into()),
                                    pointer: String::new(),
                                    keyword: "content",
                                    message: if essence.is_empty() {
                                        format!(
                                            "the body has no Content-Type; send one of {}",
                                            allowed.join(", ")
                                        )
                                    } else {
                                        format!(
                                            "`{essence}` is not accepted; send one of {}",
                                            allowed.join(", ")
                                        )
                                    },
                                });
                                return Err(415);
                            }
                            Some(Some(s)) if is_json(&essence) => BodyPlan::Check(BodyCheck {
                                schema: *s,
                                kind: BodyKind::Json,
                            }),
                            Some(Some(s)) if essence == "application/x-www-form-urlencoded" => {
                                BodyPlan::Check(BodyCheck {
                                    schema: *s,
                                    kind: BodyKind::Form {
                                        entry: best_entry(&rule.media, &essence).unwrap_or(0),
                                    },
                                })
                            }
                            Some(Some(s)) if essence == "multipart/form-data" => {
                                match ct.and_then(crate::multipart::boundary) {
                                    Some(b) => BodyPlan::Check(BodyCheck {
                                        schema: *s,
                                        kind: BodyKind::Multipart {
                                            boundary: b.into(),
                                            entry: best_entry(&rule.media, &essence).unwrap_or(0),
                                        },
                                    }),
                                    None => {
                                        failures.push(Failure {
                                            location: "header",
                                            name: Some("content-type".into()),
                                            pointer: String::new(),
                                            keyword: "multipart",
                                            message: "`multipart/form-data` needs a `boundary` \
                                                      parameter"
                                                .into(),
                                        });
                                        BodyPlan::Pass
                                    }
                                }
                            }
                            Some(_) => BodyPlan::Pass,
                        }
                    }
                }
            }
        };
        if failures.is_empty() {
            Ok(plan)
        } else {
            Err(400)
        }
    }

    /// Checks a JSON body against the schema [`check_head`](Self::check_head) chose. `Err`
    /// carries the status, 400, with the failures (a body nested deeper than the limit is one,
    /// `maxDepth`).
    pub fn check_body(
        &self,
        check: BodyCheck,
        body: &[u8],
        scratch: &mut Scratch,
        failures: &mut Vec<Failure>,
    ) -> Result<(), u16> {
        let schema = check.schema;
        let rules = |entry: usize| {
            self.body
                .as_ref()
                .and_then(|r| r.parts.get(entry))
                .map_or(&[][..], |t| &t[..])
        };
        match &check.kind {
            BodyKind::Json => {}
            BodyKind::Form { entry } => {
                return self.check_form(schema, rules(*entry), body, scratch, failures);
            }
            BodyKind::Multipart { boundary, entry } => {
                let rules = rules(*entry);
                return self.check_multipart(schema, boundary, rules, body, scratch, failures);
            }
        }
        // Most bodies keep their contract: checked as they are read, when the schema allows,
        // with no tree. Anything else is read into one, which says what is wrong.
        if crate::stream::valid_bytes(
            &self.schemas,
            schema,
            body,
            self.limits.max_depth,
            Direction::Request,
        ) {
            return Ok(());
        }
        if let Err(e) = json::read(body, scratch, self.limits.max_depth) {
            let (keyword, message) = e.failure();
            failures.push(Failure {
                location: "body",
                name: None,
                pointer: String::new(),
                keyword,
                message,
            });
            return Err(400);
        }
        let tree = Tree { body, s: scratch };
        self.check_tree(tree, schema, tree.root(), failures)
    }

    /// Checks a body read into a tree; every failure goes into `failures`.
    fn check_tree(
        &self,
        tree: Tree<'_>,
        schema: SchemaId,
        root: u32,
        failures: &mut Vec<Failure>,
    ) -> Result<(), u16> {
        let mut out = Vec::new();
        // What is left of the bound after failures already found (a multipart part's type).
        let room = self.limits.max_errors.saturating_sub(failures.len()).max(1);
        let mut run = Run::new(tree, &self.schemas, &mut out, room, Direction::Request);
        let ok = run.check(schema, root);
        let exhausted = run.exhausted;
        if ok && !exhausted {
            return Ok(());
        }
        failures.extend(out.into_iter().map(|v| Failure {
            location: "body",
            name: None,
            pointer: v.pointer,
            keyword: v.keyword,
            message: v.message,
        }));
        if exhausted {
            failures.push(Failure {
                location: "body",
                name: None,
                pointer: String::new(),
                keyword: "cost",
                message: "checking the body took more work than allowed".into(),
            });
        }
        Err(400)
    }

    /// A form body: each field a property, typed by its schema as a query parameter is; the
    /// object checked like a JSON body. A property whose `encoding` gives a style (or says
    /// it is JSON) is read as a query parameter written so.
    fn check_form(
        &self,
        schema: SchemaId,
        rules: &[PartRule],
        body: &[u8],
        scratch: &mut Scratch,
        failures: &mut Vec<Failure>,
    ) -> Result<(), u16> {
        scratch.clear();
        let schemas = &*self.schemas;
        let mut fields = Fields::default();
        // The properties read in their style, as query parameters of the body.
        let styled: Vec<&Param> = rules.iter().filter_map(|r| r.field.as_ref()).collect();
        // Whether a field is one a styled property reads: `name`, or a deepObject's
        // `name[key]`.
        let deep = |p: &Param| p.style == Style::DeepObject && !p.json;
        let taken = |k: &str| {
            styled.iter().any(|p| {
                if deep(p) {
                    k.strip_prefix(&*p.name)
                        .and_then(|r| r.strip_prefix('['))
                        .is_some_and(|r| r.ends_with(']'))
                } else {
                    k == &*p.name
                }
            })
        };
        if !styled.is_empty() {
            // A styled value is written once: a second copy would go upstream unread.
            let mut copies = vec![0usize; styled.len()];
            for (k, _) in form_urlencoded::parse(body) {
                for (c, p) in copies.iter_mut().zip(&styled) {
                    if !deep(p) && k == *p.name {
                        *c += 1;
                    }
                }
            }
            let text = String::from_utf8_lossy(body);
            for (p, copies) in styled.iter().zip(copies) {
                if failures.len() >= self.limits.max_errors {
                    return Err(400);
                }
                let name = &*p.name;
                let fail = |keyword, message: String| Failure {
                    location: "body",
                    name: None,
                    pointer: format!("/{}", crate::schema::escape(name)),
                    keyword,
                    message: format!("the field `{name}` {message}"),
                };
                if copies > 1 {
                    failures.push(fail(
                        "style",
                        format!("is written {copies} times; its encoding writes it once"),
                    ));
                    continue;
                }
                let types = p.schema.map_or(0, |s| schemas.types(s));
                match query_value(p, Some(&text), schemas, types, scratch) {
                    None | Some(Ok(Built::Empty)) => {}
                    Some(Ok(Built::Value(id))) => fields.add(name, id, false, scratch),
                    Some(Err(message)) => failures.push(fail(
                        if p.json { "json" } else { "style" },
                        format!("cannot be read: {message}"),
                    )),
                }
            }
            // Values their style cannot read are refused alone, as a JSON part that is not
            // JSON is: the schema's verdict on the rest would repeat them (`required`).
            if !failures.is_empty() {
                return Err(400);
            }
        }
        for (k, v) in form_urlencoded::parse(body) {
            if !styled.is_empty() && taken(&k) {
                continue;
            }
            let prop = schemas.property(schema, &k);
            let types = prop.map_or(0, |p| schemas.types(p));
            let item = types & ty::ARRAY != 0;
            let id = if item {
                scalar(&v, prop.map_or(0, |p| items_of(p, schemas)), scratch)
            } else {
                scalar(&v, types, scratch)
            };
            fields.add(&k, id, item, scratch);
        }
        let root = fields.finish(scratch);
        let checked = self.check_tree(Tree { body, s: scratch }, schema, root, failures);
        if failures.is_empty() {
            checked
        } else {
            Err(400)
        }
    }

    /// A multipart body: each part a property, as a form's fields are. A part is read as
    /// JSON when it says it is JSON, or has no `Content-Type` and its property takes only
    /// objects (OpenAPI's default for such a property); else as text typed by the property's
    /// schema. A file's bytes are a string (invalid UTF-8 replaced). The part's type and its
    /// headers are held to its `encoding`.
    fn check_multipart(
        &self,
        schema: SchemaId,
        boundary: &str,
        rules: &[PartRule],
        body: &[u8],
        scratch: &mut Scratch,
        failures: &mut Vec<Failure>,
    ) -> Result<(), u16> {
        let parts = match crate::multipart::parts(body, boundary) {
            Ok(p) => p,
            Err(m) => {
                failures.push(Failure {
                    location: "body",
                    name: None,
                    pointer: String::new(),
                    keyword: "multipart",
                    message: format!("the body is not multipart/form-data: {m}"),
                });
                return Err(400);
            }
        };
        let rule_of = |name: &str| rules.iter().find(|r| *r.name == *name);
        let max = self.limits.max_errors;
        // Each part's type against its encoding's list. Parts of the wrong type are refused
        // alone, as a body of the wrong type is: what the others hold is not read.
        let mut sent = Vec::with_capacity(parts.len());
        let mut wrong_type = false;
        for part in &parts {
            let allowed = rule_of(&part.name)
                .map(|r| &r.types[..])
                .filter(|t| !t.is_empty());
            let written = essence(Some(&part.content_type));
            // One type listed alone is what a part without a `Content-Type` is taken to be.
            let s = match (&*written, allowed) {
                ("", Some([only])) => std::borrow::Cow::Borrowed(&*only.0),
                _ => written,
            };
            // RFC 7578: a part without a type is text.
            let typed = if s.is_empty() { "text/plain" } else { &s };
            if let Some(allowed) = allowed
                && !allowed.iter().any(|r| r.fit(typed) > 0)
            {
                let list: Vec<&str> = allowed.iter().map(|r| &*r.0).collect();
                failures.push(Failure {
                    location: "body",
                    name: None,
                    pointer: format!("/{}", crate::schema::escape(&part.name)),
                    keyword: "content",
                    message: format!(
                        "the part `{}` is `{typed}`; send one of {}",
                        part.name,
                        list.join(", ")
                    ),
                });
                wrong_type = true;
                if failures.len() >= max {
                    return Err(400);
                }
            }
            sent.push(s);
        }
        if wrong_type {
            return Err(400);
        }
        // Each part's headers that its encoding describes, as header parameters.
        let mut spent = 0;
        for part in &parts {
            let Some(rule) = rule_of(&part.name) else {
                continue;
            };
            let head = RequestParts {
                path: &[],
                query: None,
                headers: &part.headers,
            };
            if spent > crate::validate::MAX_STEPS {
                break;
            }
            for p in rule.headers.iter() {
                if failures.len() >= max {
                    return Err(400);
                }
                let before = failures.len();
                // One budget for every part's headers: a thousand parts do not get a
                // thousand budgets.
                self.check_param(p, &head, scratch, failures, &mut spent);
                for f in &mut failures[before..] {
                    f.location = "body";
                    let within = if f.pointer.is_empty() {
                        String::new()
                    } else {
                        format!(" (at `{}` in its value)", f.pointer)
                    };
                    f.pointer = format!("/{}", crate::schema::escape(&part.name));
                    f.message = format!("in the part `{}`: {}{within}", part.name, f.message);
                }
            }
        }
        if failures.len() >= max {
            return Err(400);
        }
        scratch.clear();
        let schemas = &*self.schemas;
        let mut fields = Fields::default();
        for (part, sent) in parts.iter().zip(&sent) {
            let sent = &**sent;
            let prop = schemas.property(schema, &part.name);
            let types = prop.map_or(0, |p| schemas.types(p));
            let array = types & ty::ARRAY != 0;
            let item_types = if array {
                prop.map_or(0, |p| items_of(p, schemas))
            } else {
                types
            };
            let only_objects = |t: u8| t & ty::OBJECT != 0 && t & !(ty::OBJECT | ty::NULL) == 0;
            let json = is_json(sent) || (sent.is_empty() && !part.file && only_objects(item_types));
            let (id, item) = if json {
                match json_into(&part.data, scratch, self.limits.max_depth) {
                    // A JSON array is the property's value; anything else one of its items.
                    Ok(id) => (
                        id,
                        array && !matches!(scratch.nodes[id as usize], V::Arr(..)),
                    ),
                    Err(m) => {
                        failures.push(Failure {
                            location: "body",
                            name: None,
                            pointer: format!("/{}", crate::schema::escape(&part.name)),
                            keyword: "json",
                            message: format!("the part `{}` is {m}", part.name),
                        });
                        return Err(400);
                    }
                }
            } else {
                let text = String::from_utf8_lossy(&part.data);
                let textual = !part.file && (sent.is_empty() || sent.starts_with("text/"));
                // A file, or bytes of another kind, is a string whatever the schema says.
                let t = if textual { item_types } else { ty::STRING };
                (scalar(&text, t, scratch), array)
            };
            fields.add(&part.name, id, item, scratch);
        }
        let root = fields.finish(scratch);
        let checked = self.check_tree(Tree { body, s: scratch }, schema, root, failures);
        if failures.is_empty() {
            checked
        } else {
            Err(400)
        }
    }

    /// Checks one parameter; `spent` is the step budget already used, and is updated.
    fn check_param(
        &self,
        p: &Param,
        parts: &RequestParts<'_>,
        scratch: &mut Scratch,
        failures: &mut Vec<Failure>,
        spent: &mut u32,
    ) {
        scratch.clear();
        let fail = |failures: &mut Vec<Failure>, keyword: &'static str, message: String| {
            failures.push(Failure {
                location: p.location.name(),
                name: Some(p.name.clone()),
                pointer: String::new(),
                keyword,
                message,
            })
        };
        let schemas = &*self.schemas;
        let types = p.schema.map_or(0, |s| schemas.types(s));
        let built = match p.location {
            In::Query => query_value(p, parts.query, schemas, types, scratch),
            In::Path => parts
                .path
                .iter()
                .find(|(n, _)| *n == &*p.name)
                .map(|(_, raw)| {
                    let text = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                    styled(p, &text, schemas, types, scratch)
                }),
            In::Header => {
                let mut all = parts
                    .headers
                    .get_all(&*p.name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .peekable();
                if all.peek().is_none() {
                    None
                } else {
                    let joined: Vec<&str> = all.collect();
                    let text = joined.join(", ");
                    Some(styled(p, &text, schemas, types, scratch))
                }
            }
            In::Cookie => {
                cookie(parts.headers, &p.name).map(|text| styled(p, &text, schemas, types, scratch))
            }
        };
        let id = match built {
            None => {
                if p.required {
                    fail(
                        failures,
                        "required",
                        format!(
                            "the {} parameter `{}` is required",
                            p.location.name(),
                            p.name
                        ),
                    );
                }
                return;
            }
            Some(Err(message)) => {
                fail(failures, "style", message);
                return;
            }
            Some(Ok(Built::Empty)) => return,
            Some(Ok(Built::Value(id))) => id,
        };
        let Some(schema) = p.schema else { return };
        let tree = Tree {
            body: &[],
            s: scratch,
        };
        let mut out: Vec<Violation> = Vec::new();
        let max = self.limits.max_errors.saturating_sub(failures.len()).max(1);
        let mut run = Run::new(tree, schemas, &mut out, max, Direction::Request).after(*spent);
        let ok = run.check(schema, id);
        let exhausted = run.exhausted;
        *spent = run.spent();
        if !ok {
            failures.extend(out.into_iter().map(|v| Failure {
                location: p.location.name(),
                name: Some(p.name.clone()),
                pointer: v.pointer,
                keyword: v.keyword,
                message: v.message,
            }));
        }
        if exhausted {
            fail(
                failures,
                "cost",
                "checking the parameter took more work than allowed".into(),
            );
        }
    }
}

pub(crate) fn is_json(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json")
}

enum Built {
    /// An empty value that `allowEmptyValue` lets pass.
    Empty,
    Value(u32),
}

/// The query parameter's value as a tree node, or `None` when it is absent.
fn query_value(
    p: &Param,
    query: Option<&str>,
    schemas: &Schemas,
    types: u8,
    scratch: &mut Scratch,
) -> Option<Result<Built, String>> {
    let query = query?;
    let pairs = form_urlencoded::parse(query.as_bytes());
    let name = &*p.name;
    if p.json {
        let (_, v) = pairs.into_iter().find(|(k, _)| k == name)?;
        return Some(json_value(&v, scratch));
    }
    let object = types & ty::OBJECT != 0 && types & (ty::ARRAY | ty::STRING) == 0;
    let array = types & ty::ARRAY != 0;
    if object && p.style == Style::DeepObject {
        // `name[key]=value`.
        let mut entries = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for (k, v) in pairs {
            if let Some(key) = k
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('['))
                .and_then(|r| r.strip_suffix(']'))
            {
                // What OpenAPI's deepObject does not define, and upstreams read each their
                // own way (`a[x][y]` an object under `x`, `a[x]` twice an array), is
                // refused: checked one way, it would be read upstream another.
                if key.contains(['[', ']']) {
                    return Some(Err(format!("`{k}` nests keys, which deepObject does not")));
                }
                if !keys.insert(key.to_owned()) {
                    return Some(Err(format!("`{k}` is written more than once")));
                }
                let prop = p.schema.and_then(|s| schemas.property(s, key));
                let key = scratch.own(key.as_bytes());
                let id = scalar(&v, prop.map_or(0, |s| schemas.types(s)), scratch);
                entries.push((key, id));
            }
        }
        if entries.is_empty() {
            return None;
        }
        return Some(Ok(Built::Value(scratch.object(&entries))));
    }
    if object && p.style == Style::Form && p.explode {
        // Each property is a query parameter of its own: take those the schema names.
        let schema = p.schema?;
        let mut entries = Vec::new();
        for (k, v) in pairs {
            if let Some(prop) = schemas.property(schema, &k) {
                let key = scratch.own(k.as_bytes());
                let id = scalar(&v, schemas.types(prop), scratch);
                entries.push((key, id));
            }
        }
        if entries.is_empty() {
            return None;
        }
        return Some(Ok(Built::Value(scratch.object(&entries))));
    }
    if array && p.style == Style::Form && p.explode {
        let item_types = item_types(p, schemas);
        let mut ids = Vec::new();
        for (k, v) in pairs {
            if k == name {
                ids.push(scalar(&v, item_types, scratch));
            }
        }
        if ids.is_empty() {
            return None;
        }
        return Some(Ok(Built::Value(scratch.array(&ids))));
    }
    let (_, v) = pairs.into_iter().find(|(k, _)| k == name)?;
    if v.is_empty() && p.allow_empty {
        return Some(Ok(Built::Empty));
    }
    Some(styled(p, &v, schemas, types, scratch))
}

/// A parameter written in its style (anything but exploded form and deepObject in a query).
fn styled(
    p: &Param,
    text: &str,
    schemas: &Schemas,
    types: u8,
    scratch: &mut Scratch,
) -> Result<Built, String> {
    if p.json {
        return json_value(text, scratch);
    }
    let name = &*p.name;
    // Take off the style's prefix: `.` for label, `;name=` (or `;name`) for matrix.
    let body: std::borrow::Cow<'_, str> = match p.style {
        Style::Label => text
            .strip_prefix('.')
            .ok_or_else(|| format!("`{text}` does not start with `.` (label style)"))?
            .into(),
        Style::Matrix => {
            let rest = text
                .strip_prefix(';')
                .ok_or_else(|| format!("`{text}` does not start with `;` (matrix style)"))?;
            if p.explode && types & (ty::ARRAY | ty::OBJECT) != 0 {
                rest.into()
            } else {
                match rest.strip_prefix(name) {
                    Some(v) => v.strip_prefix('=').unwrap_or(v).into(),
                    None => {
                        return Err(format!(
                            "`{text}` does not start with `;{name}=` (matrix style)"
                        ));
                    }
                }
            }
        }
        _ => text.into(),
    };
    let array = types & ty::ARRAY != 0;
    let object = types & ty::OBJECT != 0 && !array && types & ty::STRING == 0;
    let sep = match (p.style, p.explode) {
        (Style::SpaceDelimited, _) => ' ',
        (Style::PipeDelimited, _) => '|',
        (Style::Label, true) => '.',
        (Style::Matrix, true) => ';',
        _ => ',',
    };
    if array {
        let item_types = item_types(p, schemas);
        let ids: Vec<u32> = if body.is_empty() {
            Vec::new()
        } else {
            body.split(sep)
                .map(|part| {
                    // Exploded matrix arrays repeat the name: `;id=3;id=4`.
                    let part = if p.style == Style::Matrix && p.explode {
                        part.strip_prefix(name)
                            .and_then(|v| v.strip_prefix('='))
                            .unwrap_or(part)
                    } else {
                        part
                    };
                    let part = if p.location == In::Header {
                        part.trim()
                    } else {
                        part
                    };
                    scalar(part, item_types, scratch)
                })
                .collect()
        };
        return Ok(Built::Value(scratch.array(&ids)));
    }
    if object {
        let schema = p.schema;
        let mut entries = Vec::new();
        if p.explode && p.style != Style::Form {
            // `k=v` pairs.
            for part in body.split(sep).filter(|s| !s.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("`{part}` is not `key=value`"))?;
                let k = if p.location == In::Header {
                    k.trim()
                } else {
                    k
                };
                let prop = schema.and_then(|s| schemas.property(s, k));
                let key = scratch.own(k.as_bytes());
                let id = scalar(v, prop.map_or(0, |s| schemas.types(s)), scratch);
                entries.push((key, id));
            }
        } else {
            // `k,v,k,v` (with the style's separator).
            let parts: Vec<&str> = body.split(sep).collect();
            if !parts.len().is_multiple_of(2) {
                return Err(format!("`{body}` does not pair keys with values"));
            }
            for kv in parts.chunks(2) {
                let k = if p.location == In::Header {
                    kv[0].trim()
                } else {
                    kv[0]
                };
                let prop = schema.and_then(|s| schemas.property(s, k));
                let key = scratch.own(k.as_bytes());
                let id = scalar(kv[1], prop.map_or(0, |s| schemas.types(s)), scratch);
                entries.push((key, id));
            }
        }
        return Ok(Built::Value(scratch.object(&entries)));
    }
    Ok(Built::Value(scalar(&body, types, scratch)))
}

fn item_types(p: &Param, schemas: &Schemas) -> u8 {
    p.schema.map_or(0, |s| items_of(s, schemas))
}

/// The types an array schema's items allow (0 for any), through plain `$ref`s.
fn items_of(mut id: SchemaId, schemas: &Schemas) -> u8 {
    for _ in 0..32 {
        let n = schemas.node(id);
        if let Some(i) = n.items {
            return schemas.types(i);
        }
        match n.reference {
            Some(r) => id = r,
            None => return 0,
        }
    }
    0
}

/// A JSON-text parameter (`content: application/json`), read like a body.
fn json_value(text: &str, scratch: &mut Scratch) -> Result<Built, String> {
    json_into(text.as_bytes(), scratch, 32)
        .map(Built::Value)
        .map_err(|m| format!("the value is {m}"))
}

/// JSON text read into `scratch` beside what it holds; the id of its root, or why it is not
/// JSON ("not JSON: …").
fn json_into(text: &[u8], scratch: &mut Scratch, max_depth: u32) -> Result<u32, String> {
    // The tree's strings must point into the scratch, not into `text`: read it on its own,
    // then copy it in.
    let mut tmp = Scratch::default();
    json::read(text, &mut tmp, max_depth).map_err(|e| match e {
        json::ReadError::Syntax(m) => format!("not JSON: {m}"),
        json::ReadError::TooDeep(d) => format!("nested deeper than {d} levels"),
    })?;
    let tree = Tree {
        body: text,
        s: &tmp,
    };
    Ok(copy(tree, tree.root(), scratch))
}

/// An object built from named fields (a form's, a multipart body's): a field of an array
/// property is an item of that array however often it is written, others are entries.
#[derive(Default)]
struct Fields {
    entries: Vec<(Span, u32)>,
    arrays: Vec<(String, Vec<u32>)>,
}

impl Fields {
    fn add(&mut self, name: &str, id: u32, item: bool, scratch: &mut Scratch) {
        if item {
            match self.arrays.iter_mut().find(|(n, _)| n == name) {
                Some((_, ids)) => ids.push(id),
                None => self.arrays.push((name.to_owned(), vec![id])),
            }
        } else {
            let key = scratch.own(name.as_bytes());
            self.entries.push((key, id));
        }
    }

    /// The object, last in `scratch`.
    fn finish(mut self, scratch: &mut Scratch) -> u32 {
        for (name, ids) in self.arrays {
            let key = scratch.own(name.as_bytes());
            let id = scratch.array(&ids);
            self.entries.push((key, id));
        }
        scratch.object(&self.entries)
    }
}

fn copy(t: Tree<'_>, id: u32, s: &mut Scratch) -> u32 {
    match t.node(id) {
        V::Str(sp) => {
            let sp = s.own(t.bytes(sp));
            s.push(V::Str(sp))
        }
        V::Arr(from, len) => {
            let ids: Vec<u32> = t.items(from, len).iter().map(|i| copy(t, *i, s)).collect();
            s.array(&ids)
        }
        V::Obj(from, len) => {
            let es: Vec<(Span, u32)> = t
                .entries(from, len)
                .iter()
                .map(|(k, v)| {
                    let k = s.own(t.bytes(*k));
                    (k, copy(t, *v, s))
                })
                .collect();
            s.object(&es)
        }
        v => s.push(v),
    }
}

/// A scalar parameter value, given the type its schema asks for when the text reads as one.
fn scalar(text: &str, types: u8, s: &mut Scratch) -> u32 {
    if types & (ty::INTEGER | ty::NUMBER) != 0 && is_json_number(text) {
        if let Ok(u) = text.parse::<u64>() {
            return s.push(V::U(u));
        }
        if let Ok(i) = text.parse::<i64>() {
            return s.push(V::I(i));
        }
        if types & ty::NUMBER != 0
            && let Ok(f) = text.parse::<f64>()
            && f.is_finite()
        {
            return s.push(V::F(f));
        }
    }
    if types & ty::BOOLEAN != 0 {
        match text {
            "true" => return s.push(V::Bool(true)),
            "false" => return s.push(V::Bool(false)),
            _ => {}
        }
    }
    if types & ty::NULL != 0 && text == "null" && types & ty::STRING == 0 {
        return s.push(V::Null);
    }
    let sp = s.own(text.as_bytes());
    s.push(V::Str(sp))
}

/// JSON's number grammar: no `+`, no leading zeros, no `inf` or `NaN`.
fn is_json_number(t: &str) -> bool {
    let b = t.strip_prefix('-').unwrap_or(t).as_bytes();
    let int = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int == 0 || (int > 1 && b[0] == b'0') {
        return false;
    }
    let mut rest = &b[int..];
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    if let Some(r) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let r = r
            .strip_prefix(b"+")
            .or_else(|| r.strip_prefix(b"-"))
            .unwrap_or(r);
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        return n > 0 && n == r.len();
    }
    rest.is_empty()
}

/// The value of a cookie, from every `Cookie` header.
fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k.trim() == name
            {
                return Some(val.trim().to_owned());
            }
        }
    }
    None
}
