//! Our validator against the `jsonschema` crate on the same instances: they must agree on
//! valid/invalid, except for the disagreements listed in `EXPLAINED`, each with its reason.
//! An explained disagreement that stops disagreeing fails the test as much as a new one, so the
//! list stays true.
//!
//! Two corpora:
//! - documents: every schema of `components/schemas` of the published 3.1 documents, their
//!   JSON request bodies written inline, the schemas of `orders.yaml` (written out in JSON below:
//!   the crate has no YAML reader). Instances are the documents' own `example`/`examples`/
//!   `default` values, an instance built from each schema (required properties only, and every
//!   property), and single changes of the latter. With them, one schema per checked string
//!   format with near misses of its grammar (`FORMAT_CASES`), and the places where
//!   implementations are known to part (`EDGES`).
//! - the JSON Schema Test Suite's draft 2020-12 files, less the groups `tests/suite.rs` leaves
//!   out.
//!
//! Formats: `jsonschema` asserts formats here, as Portico does for int32, int64, date,
//! date-time, time, uuid, ipv4, ipv6 and email. Of those, `jsonschema` has no int32/int64, so
//! no out-of-range integer is generated for them. Formats Portico leaves as annotations (uri,
//! hostname, …) are not given invalid values on purpose: instances are built with valid ones.
//!
//! Run with `--nocapture` for the counts.

use std::collections::{BTreeMap, HashSet};

use portico_contract::{
    Compiler, Dialect, Direction, SchemaId, Schemas, Scratch, validate_json, validate_streaming,
};
use serde_json::{Map, Value, json};

const READ_ONLY: &str = "OpenAPI: a `readOnly` property is answered, not sent, so Portico \
    does not require it of requests; JSON Schema has no direction and requires it";

const READ_ONLY_ONE_OF: &str = "OpenAPI: `id` is `readOnly`, so for Portico the Planet \
    alternative of `oneOf` matches without it (the Satellite one does not: `type` is a planet's); \
    JSON Schema requires `id`, and no alternative matches";

const NULLABLE: &str = "OpenAPI 3.0's `nullable: true`, which Portico honours in 3.1 documents \
    (many were converted from 3.0 and keep it); JSON Schema 2020-12 has no such keyword";

const EMAIL: &str = "email grammar: Portico takes `local@domain` without quoted local parts or \
    address literals (docs/openapi.md); jsonschema takes RFC 5321's whole grammar";

/// Disagreements, by case id, and why each is not a failure of the test.
const EXPLAINED: &[(&str, &str)] = &[
    ("galaxy/Planet/drop:id", READ_ONLY),
    ("galaxy/Satellite/drop:orbit.planet.id", READ_ONLY),
    ("galaxy/CelestialBody/drop:id", READ_ONLY_ONE_OF),
    ("readme/POST /changelogs/nullable:author.id", NULLABLE),
    ("edges/readOnly-by-ref/absent", READ_ONLY),
    ("formats/email/quoted-local", EMAIL),
    ("formats/email/address-literal", EMAIL),
    (
        "edges/space/bom",
        "regex dialect: ECMA-262's `\\s` takes U+FEFF; Rust's (Unicode White_Space) does not",
    ),
    (
        "edges/dot/cr",
        "regex dialect: ECMA-262's `.` matches no line terminator (\\n, \\r, U+2028, U+2029); \
         Rust's only leaves out \\n",
    ),
    (
        "edges/dot/line-separator",
        "regex dialect: ECMA-262's `.` matches no line terminator (\\n, \\r, U+2028, U+2029); \
         Rust's only leaves out \\n",
    ),
];

/// Schemas of the corpus that our compiler refuses, so nothing is compared for them.
const REFUSED: &[(&str, &str)] = &[(
    "galaxy/PaginatedResource",
    "`$dynamicRef` is refused when compiling: a generic schema bound by `$dynamicAnchor`",
)];

/// What a suite group's schema uses that puts it outside the validator, as in tests/suite.rs.
const OUT_OF_SCOPE: &[&str] = &[
    "\"$id\"",
    "\"$anchor\"",
    "json-schema.org",
    "unevaluated",
    "\"$defs\": {\"\": ",
];

// ---------------------------------------------------------------------------------------------
// Comparing.

struct Disagreement {
    id: String,
    instance: Value,
    ours: Vec<String>,
    theirs: Vec<String>,
}

#[derive(Default)]
struct Tally {
    cases: usize,
    /// Cases the checker that reads as it goes took, and agreed on with the tree checker.
    streamed: usize,
    agreed: usize,
    ids: HashSet<String>,
    disagreements: Vec<Disagreement>,
    refused: Vec<(String, String)>,
    scratch: Scratch,
}

/// One schema, compiled by both validators.
struct Subject<'a> {
    id: &'a str,
    schemas: &'a Schemas,
    schema: SchemaId,
    reference: &'a jsonschema::Validator,
}

impl Tally {
    fn compare(&mut self, s: &Subject<'_>, label: &str, instance: &Value) {
        let id = format!("{}/{label}", s.id);
        assert!(self.ids.insert(id.clone()), "two cases are named {id}");
        self.cases += 1;
        let body = serde_json::to_vec(instance).unwrap();
        let ours = validate_json(
            s.schemas,
            s.schema,
            &body,
            &mut self.scratch,
            64,
            100,
            Direction::Request,
        )
        .unwrap_or_else(|e| panic!("{id}: {e:?}"));
        // The checker that reads as it goes, where it takes the schema, agrees with the tree.
        if let Some(fast) = validate_streaming(s.schemas, s.schema, &body, 64, Direction::Request) {
            self.streamed += 1;
            assert_eq!(
                fast,
                ours.is_empty(),
                "{id}: streaming and tree checks disagree: {ours:?}"
            );
        }
        let theirs: Vec<String> = s
            .reference
            .iter_errors(instance)
            .map(|e| format!("{:?}: {e}", e.instance_path().as_str()))
            .collect();
        if ours.is_empty() == theirs.is_empty() {
            self.agreed += 1;
        } else {
            self.disagreements.push(Disagreement {
                id,
                instance: instance.clone(),
                ours: ours
                    .iter()
                    .map(|v| format!("{:?} {}: {}", v.pointer, v.keyword, v.message))
                    .collect(),
                theirs,
            });
        }
    }

    /// Fails unless the disagreements among ids starting with one of `prefixes` are exactly the
    /// explained ones.
    fn finish(self, corpus: &str, prefixes: &[&str]) {
        let ours = |id: &str| prefixes.iter().any(|p| id.starts_with(p));
        let explained: BTreeMap<&str, &str> = EXPLAINED
            .iter()
            .copied()
            .filter(|(id, _)| ours(id))
            .collect();
        assert_eq!(
            explained.len(),
            EXPLAINED.iter().filter(|(id, _)| ours(id)).count(),
            "EXPLAINED names a case twice"
        );
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for d in &self.disagreements {
            seen.insert(d.id.as_str());
            if explained.contains_key(d.id.as_str()) {
                continue;
            }
            problems.push(format!(
                "{}\n  instance: {}\n  portico:    {}\n  jsonschema: {}",
                d.id,
                d.instance,
                if d.ours.is_empty() {
                    "valid".to_owned()
                } else {
                    d.ours.join("; ")
                },
                if d.theirs.is_empty() {
                    "valid".to_owned()
                } else {
                    d.theirs.join("; ")
                },
            ));
        }
        for id in explained.keys() {
            if !seen.contains(id) {
                problems.push(if self.ids.contains(*id) {
                    format!("{id}: explained, but the validators now agree")
                } else {
                    format!("{id}: explained, but no case has this id")
                });
            }
        }
        let got: Vec<&str> = self.refused.iter().map(|(id, _)| id.as_str()).collect();
        let want: Vec<&str> = REFUSED
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| ours(id))
            .collect();
        if got != want {
            problems.push(format!(
                "schemas refused by our compiler: {:#?}, expected {want:?}",
                self.refused
            ));
        }
        for p in prefixes.iter().filter(|_| prefixes.len() > 1) {
            let cases = self.ids.iter().filter(|id| id.starts_with(p)).count();
            let differ = self
                .disagreements
                .iter()
                .filter(|d| d.id.starts_with(p))
                .count();
            println!(
                "{corpus}: {p}: {cases} cases, {} agree, {differ} disagree",
                cases - differ
            );
        }
        println!(
            "{corpus}: {} cases, {} agree, {} disagree ({} explained); {} also streamed",
            self.cases,
            self.agreed,
            self.disagreements.len(),
            explained.len(),
            self.streamed
        );
        assert!(
            problems.is_empty(),
            "{corpus}: {} of {} cases disagree; unexplained or stale:\n\n{}",
            self.disagreements.len(),
            self.cases,
            problems.join("\n\n")
        );
    }
}

/// The reference validator for `schema`, with `components` beside it for `$ref`s to resolve.
fn reference(schema: &Value, components: Option<&Value>) -> jsonschema::Validator {
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/$defs/subject",
        "$defs": { "subject": schema },
    });
    if let Some(c) = components {
        root["components"] = c.clone();
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("jsonschema refuses {schema}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Building instances: enough of the schema's meaning to make a valid value and values one change
// away from it, not a validator.

/// A schema's keywords with its `$ref` and `allOf` folded in.
fn flat(root: &Value, s: &Value) -> Map<String, Value> {
    flat_at(root, s, 0)
}

fn flat_at(root: &Value, s: &Value, depth: u32) -> Map<String, Value> {
    let Some(m) = s.as_object() else {
        return Map::new();
    };
    let mut out: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| *k != "$ref" && *k != "allOf")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if depth > 16 {
        return out;
    }
    if let Some(target) = m
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| root.pointer(p))
    {
        merge(&mut out, flat_at(root, target, depth + 1));
    }
    for sub in m
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        merge(&mut out, flat_at(root, sub, depth + 1));
    }
    out
}

/// `flat` with the first alternative of `oneOf`/`anyOf` folded in: the one an instance follows.
fn first_alternative(root: &Value, s: &Value) -> Map<String, Value> {
    let mut out = flat(root, s);
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alts)) = out.remove(key)
            && let Some(first) = alts.first()
        {
            merge(&mut out, first_alternative(root, first));
        }
    }
    out
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (k.as_str(), into.get_mut(&k), v) {
            ("properties", Some(Value::Object(p)), Value::Object(more)) => {
                for (pk, pv) in more {
                    p.entry(pk).or_insert(pv);
                }
            }
            ("required", Some(Value::Array(r)), Value::Array(more)) => {
                for x in more {
                    if !r.contains(&x) {
                        r.push(x);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn type_names(f: &Map<String, Value>) -> Option<Vec<String>> {
    match f.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

/// The type names a schema allows; empty for any.
fn types(root: &Value, s: &Value) -> Vec<String> {
    let f = flat(root, s);
    if let Some(t) = type_names(&f) {
        return t;
    }
    // Each alternative's types, when every alternative names them.
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alts)) = f.get(key) {
            let mut all = Vec::new();
            for a in alts {
                let t = types(root, a);
                if t.is_empty() {
                    return Vec::new();
                }
                all.extend(t);
            }
            return all;
        }
    }
    let members: Vec<&Value> = match (f.get("const"), f.get("enum")) {
        (Some(c), _) => vec![c],
        (_, Some(Value::Array(e))) => e.iter().collect(),
        _ => return Vec::new(),
    };
    members.iter().map(|v| kind(v).to_owned()).collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() && n.as_f64().is_some_and(|f| f.fract() != 0.0) => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn allows(types: &[String], v: &Value) -> bool {
    let k = kind(v);
    types.is_empty()
        || types
            .iter()
            .any(|t| t == k || (t == "number" && k == "integer"))
}

/// A value of a type the schema does not allow.
fn wrong_value(root: &Value, s: &Value) -> Option<Value> {
    let t = types(root, s);
    if t.is_empty() {
        return None;
    }
    [
        json!(12345),
        json!("12345"),
        json!(true),
        json!({}),
        json!([]),
    ]
    .into_iter()
    .find(|c| !allows(&t, c))
}

/// A number as JSON writes it: integral values without a fraction.
fn num(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn count(f: &Map<String, Value>, key: &str) -> Option<usize> {
    f.get(key).and_then(Value::as_u64).map(|n| n as usize)
}

fn bound(f: &Map<String, Value>, key: &str) -> Option<f64> {
    f.get(key).and_then(Value::as_f64)
}

/// Values of the formats, valid for both validators.
fn format_sample(format: &str) -> Option<&'static str> {
    Some(match format {
        "email" => "a@example.com",
        "date-time" => "2024-01-02T03:04:05Z",
        "date" => "2024-01-02",
        "time" => "03:04:05Z",
        "uuid" => "123e4567-e89b-12d3-a456-426614174000",
        "ipv4" => "192.0.2.1",
        "ipv6" => "2001:db8::1",
        "uri" | "iri" | "uri-reference" | "iri-reference" | "url" => "https://example.com",
        "hostname" => "example.com",
        _ => return None,
    })
}

/// The string formats both validators check: the only ones given invalid values.
const CHECKED_FORMATS: &[&str] = &["email", "date-time", "date", "time", "uuid", "ipv4", "ipv6"];

/// Strings tried in turn for a `pattern`: the documents' patterns are matched by one of them.
const PATTERN_SAMPLES: &[&str] = &[
    "x",
    "stable",
    "1.0.0",
    "v1.0",
    "ABC-12",
    "/images/0123456789abcdef01234567",
    "/branches/stable/categories/guides/x",
    "/branches/stable/guides/x",
    "/branches/stable/apis/x.json",
    "#abc",
];

/// Strings tried in turn for a value that does not match a `pattern`.
const PATTERN_MISSES: &[&str] = &["", "!", "~~ ~~", "é"];

fn pattern(f: &Map<String, Value>) -> Option<regex::Regex> {
    f.get("pattern")
        .and_then(Value::as_str)
        .and_then(|p| regex::Regex::new(p).ok())
}

/// How deep optional properties are filled in: the documents' schemas nest each other.
const FULL_DEPTH: u32 = 3;

/// A value `s` should accept: its required properties only, or (`full`) every property down to
/// `FULL_DEPTH`.
fn build(root: &Value, s: &Value, depth: u32, full: bool) -> Value {
    let f = first_alternative(root, s);
    if let Some(c) = f.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(e)) = f.get("enum")
        && let Some(v) = e.iter().find(|v| !v.is_null()).or(e.first())
    {
        return v.clone();
    }
    let named = type_names(&f).unwrap_or_else(|| types(root, s));
    let t = named.iter().find(|t| *t != "null").map(String::as_str);
    let t = t.unwrap_or(
        if ["properties", "required", "additionalProperties"]
            .iter()
            .any(|k| f.contains_key(*k))
        {
            "object"
        } else if ["items", "prefixItems", "minItems"]
            .iter()
            .any(|k| f.contains_key(*k))
        {
            "array"
        } else if ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
            .iter()
            .any(|k| f.contains_key(*k))
        {
            "number"
        } else if named.iter().any(|t| t == "null") {
            "null"
        } else {
            "string"
        },
    );
    match t {
        "null" => Value::Null,
        "boolean" => json!(true),
        "integer" | "number" => {
            let integer = t == "integer";
            let step = if integer { 1.0 } else { 0.5 };
            let mut x = 1.0;
            let lo = bound(&f, "minimum").map(|v| (v, false));
            let lo = lo.or(bound(&f, "exclusiveMinimum").map(|v| (v, true)));
            let hi = bound(&f, "maximum").map(|v| (v, false));
            let hi = hi.or(bound(&f, "exclusiveMaximum").map(|v| (v, true)));
            if let Some((b, ex)) = lo
                && (x < b || (ex && x <= b))
            {
                x = if ex { b.floor() + step } else { b };
            }
            if let Some((b, ex)) = hi
                && (x > b || (ex && x >= b))
            {
                x = if ex { b.ceil() - step } else { b };
            }
            if let Some(m) = bound(&f, "multipleOf") {
                x = (x / m).ceil() * m;
            }
            num(x)
        }
        "string" => {
            let mut s = f
                .get("format")
                .and_then(Value::as_str)
                .and_then(format_sample)
                .unwrap_or("x")
                .to_owned();
            if let Some(re) = pattern(&f)
                && !re.is_match(&s)
                && let Some(p) = PATTERN_SAMPLES.iter().find(|p| re.is_match(p))
            {
                s = (*p).to_owned();
            }
            let n = s.chars().count();
            if let Some(min) = count(&f, "minLength")
                && n < min
            {
                s.extend(std::iter::repeat_n('a', min - n));
            }
            if let Some(max) = count(&f, "maxLength") {
                s = s.chars().take(max).collect();
            }
            json!(s)
        }
        "array" => {
            let mut n = count(&f, "minItems").unwrap_or(0);
            if full && depth < FULL_DEPTH {
                n = n.max(1);
            }
            if let Some(max) = count(&f, "maxItems") {
                n = n.min(max);
            }
            let prefix = f.get("prefixItems").and_then(Value::as_array);
            let items = f.get("items");
            let mut out = Vec::new();
            for i in 0..n {
                match prefix.and_then(|p| p.get(i)).or(items) {
                    Some(s) => out.push(build(root, s, depth + 1, full)),
                    None if i < count(&f, "minItems").unwrap_or(0) => out.push(json!("x")),
                    None => break,
                }
            }
            Value::Array(out)
        }
        "object" => {
            let required: Vec<&str> = f
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut out = Map::new();
            if depth > 12 {
                return Value::Object(out);
            }
            if let Some(Value::Object(props)) = f.get("properties") {
                for (k, ps) in props {
                    if required.contains(&k.as_str()) || (full && depth < FULL_DEPTH) {
                        out.insert(k.clone(), build(root, ps, depth + 1, full));
                    }
                }
            }
            for r in required {
                out.entry(r).or_insert_with(|| json!("x"));
            }
            Value::Object(out)
        }
        _ => json!("x"),
    }
}

/// A single change to an instance: the value at a JSON pointer replaced (or added to its
/// object), or removed.
enum Edit {
    Set(String, Value),
    Remove(String),
}

fn apply(base: &Value, edit: &Edit) -> Value {
    let mut v = base.clone();
    let (pointer, new) = match edit {
        Edit::Set(p, x) => (p, Some(x)),
        Edit::Remove(p) => (p, None),
    };
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return new.cloned().unwrap_or(Value::Null);
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match (v.pointer_mut(parent), new) {
        (Some(Value::Object(m)), Some(x)) => {
            m.insert(last, x.clone());
        }
        (Some(Value::Object(m)), None) => {
            m.remove(&last);
        }
        (Some(Value::Array(a)), Some(x)) => {
            let i: usize = last.parse().unwrap();
            if i < a.len() {
                a[i] = x.clone();
            } else {
                a.push(x.clone());
            }
        }
        (Some(Value::Array(a)), None) => {
            a.remove(last.parse().unwrap());
        }
        _ => panic!("{pointer} is not in {base}"),
    }
    v
}

/// Builds the single changes of an instance, each with a label naming the change and where.
struct Mutator<'a> {
    root: &'a Value,
    out: Vec<(String, Edit)>,
}

fn pointer_of(path: &[String]) -> String {
    path.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

impl Mutator<'_> {
    fn push(&mut self, kind: &str, path: &[String], edit: Edit) {
        let at = path.join(".");
        let label = if at.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}:{at}")
        };
        self.out.push((label, edit));
    }

    fn set(&mut self, kind: &str, path: &[String], v: Value) {
        self.push(kind, path, Edit::Set(pointer_of(path), v));
    }

    fn walk(&mut self, s: &Value, v: &Value, path: &mut Vec<String>) {
        let root = self.root;
        let f = first_alternative(root, s);
        let named = types(root, s);
        // The document's own values for this place.
        match f.get("examples") {
            Some(Value::Array(list)) => {
                for (i, e) in list.iter().enumerate() {
                    self.set(&format!("example{i}"), path, e.clone());
                }
            }
            Some(e) => self.set("examples", path, e.clone()),
            None => {}
        }
        if let Some(e) = f.get("example") {
            self.set("example", path, e.clone());
        }
        if let Some(d) = f.get("default") {
            self.set("default", path, d.clone());
        }
        if let Some(Value::Array(e)) = f.get("enum") {
            let miss = ["not-a-member", "12345"]
                .iter()
                .map(|s| json!(s))
                .chain([json!(987654321), json!(false)])
                .find(|c| !e.contains(c) && allows(&named, c));
            if let Some(m) = miss {
                self.set("not-enum", path, m);
            }
        }
        if let Some(c) = f.get("const") {
            let miss = [json!("not-the-const"), json!(987654321), json!(false)]
                .into_iter()
                .find(|x| x != c && allows(&named, x));
            if let Some(m) = miss {
                self.set("not-const", path, m);
            }
        }
        match v {
            Value::Object(m) => self.object(&f, m, path),
            Value::Array(items) => self.array(&f, items, path),
            Value::String(text) => self.string(&f, text, path),
            Value::Number(n) => self.number(&f, &named, n.as_f64().unwrap_or(0.0), path),
            _ => {}
        }
    }

    fn object(&mut self, f: &Map<String, Value>, m: &Map<String, Value>, path: &mut Vec<String>) {
        let root = self.root;
        for r in f
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if m.contains_key(r) {
                path.push(r.to_owned());
                let p = pointer_of(path);
                self.push("drop", path, Edit::Remove(p));
                path.pop();
            }
        }
        path.push("unknownProperty".to_owned());
        let extra = pointer_of(path);
        path.pop();
        self.push("extra", path, Edit::Set(extra.clone(), json!("x")));
        if let Some(a @ Value::Object(_)) = f.get("additionalProperties")
            && let Some(w) = wrong_value(root, a)
        {
            self.push("extra-type", path, Edit::Set(extra, w));
        }
        let props = f.get("properties").and_then(Value::as_object);
        for (k, child) in m {
            let Some(ps) = props.and_then(|p| p.get(k)) else {
                continue;
            };
            path.push(k.clone());
            if let Some(w) = wrong_value(root, ps) {
                self.set("type", path, w);
            }
            // `nullable` is OpenAPI 3.0's, which Portico honours in 3.1 documents and
            // JSON Schema ignores: one case in the corpus shows it, not one per property.
            if flat(root, ps).get("nullable") != Some(&Value::Bool(true)) {
                self.set("null", path, Value::Null);
            }
            self.walk(ps, child, path);
            path.pop();
        }
    }

    fn array(&mut self, f: &Map<String, Value>, items: &[Value], path: &mut Vec<String>) {
        let root = self.root;
        if !items.is_empty() || count(f, "minItems").is_some_and(|n| n > 0) {
            self.set("empty", path, json!([]));
        }
        if let (Some(max), Some(first)) = (count(f, "maxItems"), items.first()) {
            self.set("many", path, Value::Array(vec![first.clone(); max + 1]));
        }
        if f.get("uniqueItems") == Some(&Value::Bool(true))
            && let Some(first) = items.first()
        {
            self.set("duplicate", path, json!([first, first]));
        }
        let item_schema = |i: usize| {
            f.get("prefixItems")
                .and_then(Value::as_array)
                .and_then(|p| p.get(i))
                .or(f.get("items"))
        };
        if let Some(is) = item_schema(0)
            && let Some(w) = wrong_value(root, is)
        {
            if items.is_empty() {
                self.set("item-type", path, json!([w]));
            } else {
                path.push("0".to_owned());
                let p = pointer_of(path);
                path.pop();
                self.push("item-type", path, Edit::Set(p, w));
            }
        }
        if let (Some(is), Some(first)) = (item_schema(0), items.first()) {
            path.push("0".to_owned());
            self.walk(is, first, path);
            path.pop();
        }
    }

    fn string(&mut self, f: &Map<String, Value>, text: &str, path: &[String]) {
        let n = text.chars().count();
        if let Some(min) = count(f, "minLength").filter(|m| *m > 0) {
            let short: String = text.chars().take(min - 1).collect();
            self.set("short", path, json!(short));
            self.set("min-length", path, json!("a".repeat(min)));
        }
        if let Some(max) = count(f, "maxLength") {
            let long = format!("{text}{}", "é".repeat((max + 1).saturating_sub(n)));
            self.set("long", path, json!(long));
            self.set("max-length", path, json!("é".repeat(max)));
        }
        if let Some(re) = pattern(f) {
            if let Some(miss) = PATTERN_MISSES.iter().find(|m| !re.is_match(m)) {
                self.set("pattern", path, json!(miss));
            }
            // Where regex dialects part: ECMA-262's `\d` is ASCII only, and its `$` is the end of
            // the text (as Rust's), not also the place before a final newline (as PCRE's).
            if text.bytes().any(|b| b.is_ascii_digit()) {
                let digits: String = text
                    .chars()
                    .map(|c| match c.to_digit(10) {
                        Some(d) => char::from_u32(0x660 + d).unwrap(),
                        None => c,
                    })
                    .collect();
                self.set("pattern-digits", path, json!(digits));
            }
            self.set("pattern-newline", path, json!(format!("{text}\n")));
        }
        if let Some(fmt) = f.get("format").and_then(Value::as_str)
            && CHECKED_FORMATS.contains(&fmt)
        {
            self.set("format", path, json!(format!("not-a-{fmt}")));
        }
    }

    fn number(&mut self, f: &Map<String, Value>, named: &[String], x: f64, path: &[String]) {
        if named.iter().any(|t| t == "integer") && !named.iter().any(|t| t == "number") {
            self.set("fraction", path, json!(x + 0.5));
        }
        if let Some(b) = bound(f, "minimum") {
            self.set("minimum", path, num(b));
            self.set("below-minimum", path, num(b - 1.0));
        }
        if let Some(b) = bound(f, "exclusiveMinimum") {
            self.set("exclusive-minimum", path, num(b));
            self.set("above-exclusive-minimum", path, num(b + 0.001));
        }
        if let Some(b) = bound(f, "maximum") {
            self.set("maximum", path, num(b));
            self.set("above-maximum", path, num(b + 1.0));
        }
        if let Some(b) = bound(f, "exclusiveMaximum") {
            self.set("exclusive-maximum", path, num(b));
            self.set("below-exclusive-maximum", path, num(b - 0.001));
        }
        if let Some(m) = bound(f, "multipleOf") {
            self.set("not-multiple", path, num(x + m / 2.0));
        }
    }
}

/// Every case of one schema: the documents' own values, two instances built from it, and the
/// single changes of the fuller one.
fn cases(root: &Value, s: &Value) -> Vec<(String, Value)> {
    let min = build(root, s, 0, false);
    let full = build(root, s, 0, true);
    let mut m = Mutator {
        root,
        out: Vec::new(),
    };
    m.walk(s, &full, &mut Vec::new());
    let mut out = vec![("min".to_owned(), min), ("full".to_owned(), full.clone())];
    out.extend(m.out.iter().map(|(l, e)| (l.clone(), apply(&full, e))));
    out
}

// ---------------------------------------------------------------------------------------------
// The corpora.

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../portico-testkit/openapi")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Compiles `pointer` of `doc` on our side and `schema` (with `components`) on theirs, and
/// compares every case; `more` adds cases of its own.
fn subject(
    tally: &mut Tally,
    id: &str,
    doc: &Value,
    pointer: &str,
    components: Option<&Value>,
    generated: bool,
    more: &[(String, Value)],
) {
    let schema = doc.pointer(pointer).unwrap();
    let mut c = Compiler::new(doc, Dialect::Oas31);
    let sid = c.schema(pointer);
    let (schemas, errors) = c.finish();
    if !errors.is_empty() {
        tally.refused.push((id.to_owned(), format!("{errors:?}")));
        return;
    }
    let reference = reference(schema, components);
    let s = Subject {
        id,
        schemas: &schemas,
        schema: sid,
        reference: &reference,
    };
    let built = if generated {
        cases(doc, schema)
    } else {
        Vec::new()
    };
    for (label, instance) in built.iter().chain(more) {
        tally.compare(&s, label, instance);
    }
}

/// The JSON request bodies of a document's operations, by `METHOD /path`: their schema's
/// pointer and the media type's named examples.
fn json_bodies(doc: &Value) -> BTreeMap<String, (String, Vec<(String, Value)>)> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let media = &op["requestBody"]["content"]["application/json"];
            if media["schema"].is_null() {
                continue;
            }
            let pointer = format!(
                "/paths/{}/{method}/requestBody/content/application~1json/schema",
                path.replace('~', "~0").replace('/', "~1")
            );
            let examples = media["examples"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, e)| (format!("example:{name}"), e["value"].clone()))
                .chain(
                    media
                        .get("example")
                        .map(|e| ("example".to_owned(), e.clone())),
                )
                .collect();
            out.insert(
                format!("{} {path}", method.to_uppercase()),
                (pointer, examples),
            );
        }
    }
    out
}

/// `orders.yaml`'s schemas and request bodies, written out in JSON.
fn orders() -> Value {
    json!({
        "openapi": "3.1.0",
        "paths": {
            "/orders": { "post": { "requestBody": { "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Order" } } } } } },
            "/imports": { "post": { "requestBody": { "content": { "application/json": {
                "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Order" } }
            } } } } },
        },
        "components": { "schemas": {
            "Order": {
                "type": "object",
                "additionalProperties": false,
                "required": ["customer", "items"],
                "properties": {
                    "id": { "type": "integer", "readOnly": true },
                    "customer": { "type": "string", "format": "email" },
                    "note": { "type": ["string", "null"], "maxLength": 200 },
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "items": { "$ref": "#/components/schemas/Item" }
                    }
                }
            },
            "Item": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": { "type": "string", "pattern": "^[A-Z]{3}-[0-9]{1,6}$" },
                    "qty": { "type": "integer", "minimum": 1 }
                }
            }
        } }
    })
}

/// The example of `POST /orders`' answer, an order as the service returns it.
fn orders_example() -> Value {
    json!({ "id": 1, "customer": "ada@example.com", "items": [{ "sku": "ABC-12", "qty": 2 }] })
}

/// Near misses of each checked format's grammar, valid or not, on a schema of that format alone.
const FORMAT_CASES: &[(&str, &str, &str)] = &[
    ("date", "leap-day", "2024-02-29"),
    ("date", "not-leap-day", "2023-02-29"),
    ("date", "one-digit-month", "2024-1-02"),
    ("date", "date-time", "2024-01-02T03:04:05Z"),
    ("date", "month-13", "2024-13-02"),
    (
        "date-time",
        "fraction-offset",
        "2024-01-02T03:04:05.678+01:00",
    ),
    ("date-time", "lower-case", "2024-01-02t03:04:05z"),
    ("date-time", "space", "2024-01-02 03:04:05Z"),
    ("date-time", "no-offset", "2024-01-02T03:04:05"),
    ("date-time", "hour-24", "2024-01-02T24:00:00Z"),
    ("date-time", "leap-second", "2016-12-31T23:59:60Z"),
    (
        "date-time",
        "leap-second-off-minute",
        "2024-01-02T12:00:60Z",
    ),
    ("date-time", "offset-hour-24", "2024-01-02T03:04:05+24:00"),
    (
        "date-time",
        "leap-second-offset",
        "2017-01-01T00:59:60+01:00",
    ),
    (
        "date-time",
        "leap-second-offset-off-minute",
        "2016-12-31T23:59:60+01:00",
    ),
    ("time", "utc", "03:04:05Z"),
    ("time", "fraction-offset", "03:04:05.1+05:30"),
    ("time", "no-offset", "03:04:05"),
    ("time", "one-digit-hour", "3:04:05Z"),
    ("time", "no-seconds", "03:04Z"),
    ("uuid", "upper-case", "123E4567-E89B-12D3-A456-426614174000"),
    ("uuid", "no-dashes", "123e4567e89b12d3a456426614174000"),
    ("uuid", "not-hex", "123e4567-e89b-12d3-a456-42661417400g"),
    ("uuid", "braces", "{123e4567-e89b-12d3-a456-426614174000}"),
    ("ipv4", "plain", "192.0.2.1"),
    ("ipv4", "leading-zero", "192.0.2.01"),
    ("ipv4", "octet-256", "256.0.0.1"),
    ("ipv4", "three-parts", "192.0.2"),
    ("ipv6", "short", "::1"),
    ("ipv6", "plain", "2001:db8::1"),
    ("ipv6", "mapped-ipv4", "::ffff:192.0.2.1"),
    ("ipv6", "not-hex", "2001:db8::g"),
    ("ipv6", "zone", "fe80::1%eth0"),
    ("ipv6", "two-gaps", "2001::db8::1"),
    ("email", "plain", "a@example.com"),
    ("email", "plus", "ada.lovelace+x@example.com"),
    ("email", "single-label-domain", "a@localhost"),
    ("email", "no-at", "no-at.example.com"),
    ("email", "double-dot", "a..b@example.com"),
    ("email", "quoted-local", "\"a b\"@example.com"),
    ("email", "address-literal", "a@[192.0.2.1]"),
    ("email", "hyphen-label", "a@-example.com"),
    ("email", "two-ats", "a@b@example.com"),
];

type Edge = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Schemas and instances where implementations are known to part: number precision, string
/// length, regex dialects, equality. By name, schema, and (label, instance) in JSON.
const EDGES: &[Edge] = &[
    (
        "multipleOf-0.01",
        r#"{"type": "number", "multipleOf": 0.01}"#,
        &[("19.99", "19.99"), ("4.35", "4.35"), ("0.075", "0.075")],
    ),
    (
        "multipleOf-0.1",
        r#"{"type": "number", "multipleOf": 0.1}"#,
        &[("0.3", "0.3"), ("0.7", "0.7"), ("0.00001", "0.00001")],
    ),
    (
        "maximum-2^53",
        r#"{"type": "integer", "maximum": 9007199254740992}"#,
        &[("2^53", "9007199254740992"), ("2^53+1", "9007199254740993")],
    ),
    (
        "maximum-2^53+1",
        r#"{"type": "integer", "maximum": 9007199254740993}"#,
        &[
            ("2^53+1", "9007199254740993"),
            ("2^53+2", "9007199254740994"),
        ],
    ),
    (
        "maximum-int64",
        r#"{"type": "integer", "maximum": 9223372036854775807}"#,
        &[
            ("int64-max", "9223372036854775807"),
            ("int64-max+1", "9223372036854775808"),
        ],
    ),
    (
        "exclusiveMaximum-2^53",
        r#"{"type": "integer", "exclusiveMaximum": 9007199254740992}"#,
        &[("2^53-1", "9007199254740991"), ("2^53", "9007199254740992")],
    ),
    (
        "minimum-minus-2^53",
        r#"{"type": "integer", "minimum": -9007199254740992}"#,
        &[
            ("-2^53", "-9007199254740992"),
            ("-2^53-1", "-9007199254740993"),
        ],
    ),
    (
        "integer",
        r#"{"type": "integer"}"#,
        &[
            ("1.0", "1.0"),
            ("1e2", "1e2"),
            ("1e20", "1e20"),
            ("0.5", "0.5"),
        ],
    ),
    (
        "digits",
        r#"{"type": "string", "pattern": "^\\d+$"}"#,
        &[("ascii", r#""123""#), ("arabic-indic", r#""\u0661\u0662""#)],
    ),
    (
        "word",
        r#"{"type": "string", "pattern": "^\\w+$"}"#,
        &[("ascii", r#""a_1""#), ("accented", r#""\u00e9""#)],
    ),
    (
        "space",
        r#"{"type": "string", "pattern": "^\\s$"}"#,
        &[("nbsp", r#""\u00a0""#), ("bom", r#""\ufeff""#)],
    ),
    (
        "dot",
        r#"{"type": "string", "pattern": "^.$"}"#,
        &[
            ("cr", r#""\r""#),
            ("line-separator", r#""\u2028""#),
            ("astral", r#""\ud83d\ude00""#),
        ],
    ),
    (
        "length-2",
        r#"{"type": "string", "minLength": 2, "maxLength": 2}"#,
        &[
            ("astral", r#""\ud83d\ude00""#),
            ("combining", r#""e\u0301""#),
        ],
    ),
    (
        "unique",
        r#"{"type": "array", "uniqueItems": true}"#,
        &[
            ("1-and-1.0", "[1, 1.0]"),
            (
                "reordered-objects",
                r#"[{"a": 1, "b": 2}, {"b": 2, "a": 1}]"#,
            ),
            ("0-and-false", "[0, false]"),
        ],
    ),
    (
        "enum-float",
        r#"{"enum": [1.0, "a"]}"#,
        &[("1", "1"), ("-0.0", "-0.0")],
    ),
    (
        "const-nested",
        r#"{"const": {"a": [1]}}"#,
        &[
            ("float", r#"{"a": [1.0]}"#),
            ("extra", r#"{"a": [1], "b": 2}"#),
        ],
    ),
    // `readOnly` found through the property's `$ref`: not required of requests.
    (
        "readOnly-by-ref",
        r##"{"type": "object", "required": ["id"],
            "properties": {"id": {"$ref": "#/components/schemas/Id"}}}"##,
        &[("absent", "{}")],
    ),
];

#[test]
fn published_documents_agree_with_jsonschema() {
    let mut tally = Tally::default();

    let galaxy = load("real/scalar-galaxy-3.1.1.json");
    let components = &galaxy["components"];
    for name in components["schemas"].as_object().unwrap().keys() {
        let pointer = format!("/components/schemas/{name}");
        let id = format!("galaxy/{name}");
        subject(
            &mut tally,
            &id,
            &galaxy,
            &pointer,
            Some(components),
            true,
            &[],
        );
    }
    for (op, (pointer, examples)) in json_bodies(&galaxy) {
        // Bodies that only name a component were compared as that component.
        let schema = galaxy.pointer(&pointer).unwrap();
        if schema
            .as_object()
            .is_some_and(|m| m.len() == 1 && m.contains_key("$ref"))
        {
            continue;
        }
        let id = format!("galaxy/{op}");
        subject(
            &mut tally,
            &id,
            &galaxy,
            &pointer,
            Some(components),
            true,
            &examples,
        );
    }

    let readme = load("real/readme-api-v2-3.1.0.json");
    for (op, (pointer, mut examples)) in json_bodies(&readme) {
        if op == "POST /changelogs" {
            examples.push((
                "nullable:author.id".to_owned(),
                json!({ "title": "x", "author": { "id": null } }),
            ));
        }
        let id = format!("readme/{op}");
        subject(&mut tally, &id, &readme, &pointer, None, true, &examples);
    }

    let orders = orders();
    let components = &orders["components"];
    for name in ["Order", "Item"] {
        let pointer = format!("/components/schemas/{name}");
        let more = if name == "Order" {
            vec![("example:createOrder".to_owned(), orders_example())]
        } else {
            Vec::new()
        };
        subject(
            &mut tally,
            &format!("orders/{name}"),
            &orders,
            &pointer,
            Some(components),
            true,
            &more,
        );
    }
    for (op, (pointer, _)) in json_bodies(&orders) {
        let schema = orders.pointer(&pointer).unwrap();
        if schema
            .as_object()
            .is_some_and(|m| m.len() == 1 && m.contains_key("$ref"))
        {
            continue;
        }
        subject(
            &mut tally,
            &format!("orders/{op}"),
            &orders,
            &pointer,
            Some(components),
            true,
            &[],
        );
    }

    let mut formats = Map::new();
    for f in CHECKED_FORMATS {
        formats.insert((*f).to_owned(), json!({ "type": "string", "format": f }));
    }
    let formats = json!({ "components": { "schemas": formats } });
    for f in CHECKED_FORMATS {
        let more: Vec<(String, Value)> = FORMAT_CASES
            .iter()
            .filter(|(format, _, _)| format == f)
            .map(|(_, label, v)| ((*label).to_owned(), json!(v)))
            .collect();
        subject(
            &mut tally,
            &format!("formats/{f}"),
            &formats,
            &format!("/components/schemas/{f}"),
            Some(&formats["components"]),
            true,
            &more,
        );
    }

    let mut edges = Map::new();
    for (name, schema, _) in EDGES {
        edges.insert((*name).to_owned(), serde_json::from_str(schema).unwrap());
    }
    edges.insert(
        "Id".to_owned(),
        json!({ "type": "integer", "readOnly": true }),
    );
    let edges = json!({ "components": { "schemas": edges } });
    for (name, _, instances) in EDGES {
        let more: Vec<(String, Value)> = instances
            .iter()
            .map(|(label, v)| {
                let v = serde_json::from_str(v).unwrap_or_else(|e| panic!("{name}/{label}: {e}"));
                ((*label).to_owned(), v)
            })
            .collect();
        subject(
            &mut tally,
            &format!("edges/{name}"),
            &edges,
            &format!("/components/schemas/{name}"),
            Some(&edges["components"]),
            false,
            &more,
        );
    }

    tally.finish(
        "documents",
        &["galaxy/", "readme/", "orders/", "formats/", "edges/"],
    );
}

#[test]
fn test_suite_agrees_with_jsonschema() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite/draft2020-12");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut tally = Tally::default();
    for f in files {
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        let groups: Vec<Value> = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        for g in groups {
            let mut ours = g["schema"].clone();
            if let Some(m) = ours.as_object_mut() {
                m.remove("$schema");
            }
            let text = ours.to_string();
            if OUT_OF_SCOPE.iter().any(|t| text.contains(t)) {
                continue;
            }
            let id = format!("suite/{stem}/{}", g["description"].as_str().unwrap());
            let mut c = Compiler::new(&ours, Dialect::Oas31);
            let sid = c.schema("");
            let (schemas, errors) = c.finish();
            if !errors.is_empty() {
                tally.refused.push((id, format!("{errors:?}")));
                continue;
            }
            let reference = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&g["schema"])
                .unwrap_or_else(|e| panic!("{id}: jsonschema refuses the schema: {e}"));
            let s = Subject {
                id: &id,
                schemas: &schemas,
                schema: sid,
                reference: &reference,
            };
            for t in g["tests"].as_array().unwrap() {
                tally.compare(&s, t["description"].as_str().unwrap(), &t["data"]);
            }
        }
    }
    assert!(tally.cases > 700, "only {} cases ran", tally.cases);
    tally.finish("suite", &["suite/"]);
}
