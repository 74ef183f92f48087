//! A read document checked against a compiled schema, every failure recorded with the JSON
//! pointer of the value and the keyword it breaks, up to a bound.

use serde_json::Value;

use crate::json::{Span, Tree, V};
use crate::schema::{Format, Node, SchemaId, Schemas, has, ty};

/// One broken rule: where (a JSON pointer into the value), which keyword, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub keyword: &'static str,
    pub message: String,
}

/// Which side of an exchange a value comes from: `readOnly` properties are not required of
/// requests, `writeOnly` ones not of responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// How much one validation may do: schemas with nested `anyOf`/`oneOf` check the same values
/// again per alternative, so the work is bounded as well as the document.
pub(crate) const MAX_STEPS: u32 = 200_000;

#[derive(Clone, Copy)]
enum Seg {
    Key(Span),
    Index(u32),
}

pub(crate) struct Run<'t, 'o> {
    pub tree: Tree<'t>,
    pub schemas: &'t Schemas,
    pub out: &'o mut Vec<Violation>,
    pub max_errors: usize,
    pub direction: Direction,
    /// The pointer of the value being checked.
    path: Vec<Seg>,
    /// When above 0, failures are not recorded (an alternative of `anyOf` being tried).
    quiet: u32,
    steps: u32,
    /// Set when the step budget ran out.
    pub exhausted: bool,
    /// The prefix of every pointer recorded (a parameter's own pointer).
    pub prefix: &'t str,
    /// Values made during the check (an object's keys, for `propertyNames`), numbered after
    /// the tree's.
    extra: Vec<V>,
}

impl<'t, 'o> Run<'t, 'o> {
    /// The run, with `steps` of the budget already spent (by earlier runs of one request).
    pub fn after(mut self, steps: u32) -> Self {
        self.steps = steps;
        self
    }

    /// The steps of the budget spent so far.
    pub fn spent(&self) -> u32 {
        self.steps
    }

    pub fn new(
        tree: Tree<'t>,
        schemas: &'t Schemas,
        out: &'o mut Vec<Violation>,
        max_errors: usize,
        direction: Direction,
    ) -> Self {
        Run {
            tree,
            schemas,
            out,
            max_errors,
            direction,
            path: Vec::new(),
            quiet: 0,
            steps: 0,
            exhausted: false,
            prefix: "",
            extra: Vec::new(),
        }
    }

    fn value(&self, id: u32) -> V {
        let n = self.tree.s.nodes.len() as u32;
        if id < n {
            self.tree.node(id)
        } else {
            self.extra[(id - n) as usize]
        }
    }

    /// Checks an object's key as a string value of its own.
    fn check_key(&mut self, s: SchemaId, k: Span) -> bool {
        let id = (self.tree.s.nodes.len() + self.extra.len()) as u32;
        self.extra.push(V::Str(k));
        let ok = self.check(s, id);
        self.extra.pop();
        ok
    }

    fn full(&self) -> bool {
        self.out.len() >= self.max_errors
    }

    fn pointer(&self) -> String {
        let mut p = String::from(self.prefix);
        for s in &self.path {
            p.push('/');
            match *s {
                Seg::Index(i) => p.push_str(&i.to_string()),
                Seg::Key(k) => {
                    let text = String::from_utf8_lossy(self.tree.bytes(k));
                    p.push_str(&crate::schema::escape(&text));
                }
            }
        }
        p
    }

    /// Records a failure unless an alternative is being tried. Returns `false` for the caller
    /// to pass on.
    fn fail(&mut self, keyword: &'static str, message: impl FnOnce() -> String) -> bool {
        if self.quiet == 0 && !self.full() {
            let v = Violation {
                pointer: self.pointer(),
                keyword,
                message: message(),
            };
            self.out.push(v);
        }
        false
    }

    /// Whether the value `v` is valid against `s`, recording every failure (when not quiet).
    pub fn check(&mut self, s: SchemaId, v: u32) -> bool {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            self.exhausted = true;
            return false;
        }
        let schemas = self.schemas;
        let n = schemas.node(s);
        if n.never {
            return self.fail("false", || "no value is allowed here".into());
        }
        let value = self.value(v);
        if n.nullable && matches!(value, V::Null) {
            return true;
        }
        let mut ok = true;
        // Stop early when nothing more can be recorded.
        macro_rules! done {
            () => {
                if !ok && (self.quiet > 0 || self.full() || self.exhausted) {
                    return false;
                }
            };
        }
        if let Some(r) = n.reference {
            ok &= self.check(r, v);
            done!();
        }
        let t = type_of(value);
        if n.types != 0 && n.types & t == 0 {
            // The value's kind is wrong: its other keywords say nothing useful.
            return self.fail("type", || {
                format!("expected {}, got {}", types_text(n.types), kind_name(t))
            });
        }
        if n.has & has::ENUM_CONST != 0
            && let Some(list) = &n.enumeration
            && !list.iter().any(|e| self.equals(v, e))
        {
            ok = self.fail("enum", || format!("must be one of {}", short_list(list)));
            done!();
        }
        if let Some(c) = &n.constant
            && !self.equals(v, c)
        {
            ok = self.fail("const", || format!("must be {}", short(c)));
            done!();
        }
        match value {
            V::Str(sp) if n.has & has::STRING != 0 => ok &= self.string(n, sp),
            V::U(_) | V::I(_) | V::F(_) if n.has & has::NUMBER != 0 => ok &= self.number(n, value),
            V::Obj(from, len) if n.has & has::OBJECT != 0 => ok &= self.object(n, v, from, len),
            V::Arr(from, len) if n.has & has::ARRAY != 0 => ok &= self.array(n, from, len),
            _ => {}
        }
        if n.has & has::APPLICATORS != 0 {
            done!();
            ok &= self.applicators(n, v);
        }
        ok
    }

    fn applicators(&mut self, n: &'t Node, v: u32) -> bool {
        let mut ok = true;
        for s in n.all_of.iter() {
            ok &= self.check(*s, v);
            if !ok && (self.quiet > 0 || self.full()) {
                return false;
            }
        }
        if !n.any_of.is_empty() {
            self.quiet += 1;
            let any = n.any_of.iter().any(|s| self.check(*s, v));
            self.quiet -= 1;
            if !any {
                // The best report of which alternative was meant: the errors of the one
                // that got furthest is guesswork; name the rule instead.
                ok = self.fail("anyOf", || {
                    format!("matches none of the {} alternatives", n.any_of.len())
                });
            }
        }
        if !n.one_of.is_empty() {
            self.quiet += 1;
            let mut matched = 0;
            for s in n.one_of.iter() {
                if self.check(*s, v) {
                    matched += 1;
                    if matched > 1 {
                        break;
                    }
                }
            }
            self.quiet -= 1;
            if matched == 0 {
                ok = self.fail("oneOf", || {
                    format!("matches none of the {} alternatives", n.one_of.len())
                });
            } else if matched > 1 {
                ok = self.fail("oneOf", || {
                    "matches more than one alternative; exactly one is allowed".into()
                });
            }
        }
        if let Some(not) = n.not {
            self.quiet += 1;
            let matched = self.check(not, v);
            self.quiet -= 1;
            if matched {
                ok = self.fail("not", || "matches a schema it must not match".into());
            }
        }
        if let Some((cond, then, otherwise)) = n.condition {
            self.quiet += 1;
            let holds = self.check(cond, v);
            self.quiet -= 1;
            let next = if holds { then } else { otherwise };
            if let Some(next) = next {
                ok &= self.check(next, v);
            }
        }
        ok && !self.exhausted
    }

    fn string(&mut self, n: &'t Node, sp: Span) -> bool {
        let bytes = self.tree.bytes(sp);
        let mut ok = true;
        if n.min_length.is_some() || n.max_length.is_some() {
            let chars = chars(bytes);
            if let Some(min) = n.min_length
                && chars < min
            {
                ok = self.fail("minLength", || {
                    format!("must be at least {min} characters long, is {chars}")
                });
            }
            if let Some(max) = n.max_length
                && chars > max
            {
                ok = self.fail("maxLength", || {
                    format!("must be at most {max} characters long, is {chars}")
                });
            }
        }
        if n.pattern.is_some() || n.format.is_some() {
            // The tree's strings come from `&str`s, so they are UTF-8.
            let text = std::str::from_utf8(bytes).unwrap_or("");
            if let Some(p) = &n.pattern
                && !p.re.is_match(text)
            {
                ok = self.fail("pattern", || {
                    format!("does not match the pattern `{}`", p.source)
                });
            }
            if let Some(f) = n.format
                && !crate::format::string_matches(f, text)
            {
                ok = self.fail("format", || format!("is not a valid {}", f.name()));
            }
        }
        ok
    }

    fn number(&mut self, n: &'t Node, value: V) -> bool {
        let x = match value {
            V::U(u) => u as f64,
            V::I(i) => i as f64,
            V::F(f) => f,
            _ => return true,
        };
        let mut ok = true;
        if let Some(b) = n.minimum
            && below(value, x, b)
        {
            ok = self.fail(
                if b.exclusive && self.schemas.dialect == crate::Dialect::Oas31 {
                    "exclusiveMinimum"
                } else {
                    "minimum"
                },
                || {
                    format!(
                        "must be {} {}",
                        if b.exclusive {
                            "greater than"
                        } else {
                            "at least"
                        },
                        bound_text(b)
                    )
                },
            );
        }
        if let Some(b) = n.maximum
            && above(value, x, b)
        {
            ok = self.fail(
                if b.exclusive && self.schemas.dialect == crate::Dialect::Oas31 {
                    "exclusiveMaximum"
                } else {
                    "maximum"
                },
                || {
                    format!(
                        "must be {} {}",
                        if b.exclusive { "less than" } else { "at most" },
                        bound_text(b)
                    )
                },
            );
        }
        if let Some(m) = n.multiple_of
            && !multiple_of(value, x, m)
        {
            ok = self.fail("multipleOf", || {
                format!("must be a multiple of {}", num_text(m))
            });
        }
        if let Some(f) = n.format
            && !in_format_range(f, value, x)
        {
            ok = self.fail("format", || format!("is out of the range of {}", f.name()));
        }
        ok
    }

    fn object(&mut self, n: &'t Node, v: u32, from: u32, len: u32) -> bool {
        let mut ok = true;
        let entries = self.tree.entries(from, len);
        let count = u64::from(len);
        if let Some(min) = n.min_properties
            && count < min
        {
            ok = self.fail("minProperties", || {
                format!("must have at least {min} properties")
            });
        }
        if let Some(max) = n.max_properties
            && count > max
        {
            ok = self.fail("maxProperties", || {
                format!("must have at most {max} properties")
            });
        }
        let mark = self.out.len();
        let mut seen = 0u64;
        for (name, deps) in n.dependent_required.iter() {
            if entries
                .iter()
                .any(|(k, _)| self.tree.bytes(*k) == name.as_bytes())
            {
                for d in deps.iter() {
                    if !entries
                        .iter()
                        .any(|(k, _)| self.tree.bytes(*k) == d.as_bytes())
                    {
                        ok = self.fail("dependentRequired", || {
                            format!("the property `{d}` is required with `{name}`")
                        });
                    }
                }
            }
        }
        let plain = n.pattern_properties.is_empty();
        for &(k, child) in entries {
            if !ok && (self.quiet > 0 || self.full()) {
                return false;
            }
            let key = self.tree.bytes(k);
            self.path.push(Seg::Key(k));
            if let Some(names) = n.property_names {
                // The key is checked as a string value of its own.
                ok &= self.check_key(names, k);
            }
            let mut known = false;
            if let Some(i) = n.properties.iter().position(|(name, _)| **name == *key) {
                known = true;
                if i < 64 {
                    seen |= 1 << i;
                }
                ok &= self.check(n.properties[i].1, child);
            }
            if !plain {
                let text = std::str::from_utf8(key).unwrap_or("");
                for (p, s) in n.pattern_properties.iter() {
                    if p.re.is_match(text) {
                        known = true;
                        ok &= self.check(*s, child);
                    }
                }
            }
            if !known && let Some(extra) = n.additional {
                if self.schemas.node(extra).never {
                    ok = self.fail("additionalProperties", || {
                        format!(
                            "the property `{}` is not allowed",
                            String::from_utf8_lossy(key)
                        )
                    });
                } else {
                    ok &= self.check(extra, child);
                }
            }
            self.path.pop();
        }
        if !n.required.is_empty() && (!n.required_by_bits || n.required_bits & !seen != 0) {
            // Told before the failures of the properties, as the object reads.
            let before = self.out.len();
            ok &= self.required(n, entries, seen);
            let added = self.out.len() - before;
            self.out[mark..].rotate_right(added);
        }
        for (name, s) in n.dependent_schemas.iter() {
            if entries
                .iter()
                .any(|(k, _)| self.tree.bytes(*k) == name.as_bytes())
            {
                ok &= self.check(*s, v);
            }
        }
        ok
    }

    /// Reports the required properties an object lacks (`seen`: the properties it has, as bits).
    fn required(&mut self, n: &'t Node, entries: &[(Span, u32)], seen: u64) -> bool {
        let mut ok = true;
        for r in n.required.iter() {
            let index = n.properties.iter().position(|(k, _)| **k == *r.as_bytes());
            let present = match index {
                Some(i) if i < 64 => seen & (1 << i) != 0,
                _ => entries
                    .iter()
                    .any(|(k, _)| self.tree.bytes(*k) == r.as_bytes()),
            };
            if present {
                continue;
            }
            // `readOnly` properties are answered, not sent: not required of requests.
            let skip = index.is_some_and(|i| {
                self.schemas
                    .says_only(n.properties[i].1, self.direction == Direction::Response, 0)
            });
            if !skip {
                ok = self.fail("required", || format!("the property `{r}` is missing"));
                if self.quiet > 0 {
                    return false;
                }
            }
        }
        ok
    }

    fn array(&mut self, n: &'t Node, from: u32, len: u32) -> bool {
        let mut ok = true;
        let items = self.tree.items(from, len);
        let count = u64::from(len);
        if let Some(min) = n.min_items
            && count < min
        {
            ok = self.fail("minItems", || {
                format!("must have at least {min} items, has {count}")
            });
        }
        if let Some(max) = n.max_items
            && count > max
        {
            ok = self.fail("maxItems", || {
                format!("must have at most {max} items, has {count}")
            });
        }
        if n.unique_items {
            'outer: for i in 0..items.len() {
                for j in i + 1..items.len() {
                    if self.same(items[i], items[j]) {
                        ok = self.fail("uniqueItems", || {
                            format!("items {i} and {j} are equal; items must be unique")
                        });
                        break 'outer;
                    }
                }
            }
        }
        for (i, &item) in items.iter().enumerate() {
            if !ok && (self.quiet > 0 || self.full()) {
                return false;
            }
            let s = match n.prefix_items.get(i) {
                Some(s) => *s,
                None => match n.items {
                    Some(s) => s,
                    None => continue,
                },
            };
            self.path.push(Seg::Index(i as u32));
            ok &= self.check(s, item);
            self.path.pop();
        }
        if let Some(c) = n.contains {
            self.quiet += 1;
            let mut found = 0u64;
            for &item in items {
                if self.check(c, item) {
                    found += 1;
                }
            }
            self.quiet -= 1;
            if found < n.min_contains {
                ok = self.fail(
                    if n.min_contains == 1 {
                        "contains"
                    } else {
                        "minContains"
                    },
                    || {
                        format!(
                            "must contain at least {} matching item{}, has {found}",
                            n.min_contains,
                            if n.min_contains == 1 { "" } else { "s" }
                        )
                    },
                );
            }
            if let Some(max) = n.max_contains
                && found > max
            {
                ok = self.fail("maxContains", || {
                    format!("must contain at most {max} matching items, has {found}")
                });
            }
        }
        ok
    }
}

impl Run<'_, '_> {
    /// JSON equality of a tree value and a schema's value (numbers by value: `1` equals `1.0`).
    fn equals(&self, v: u32, e: &Value) -> bool {
        match (self.value(v), e) {
            (V::Null, Value::Null) => true,
            (V::Bool(a), Value::Bool(b)) => a == *b,
            (a @ (V::U(_) | V::I(_) | V::F(_)), Value::Number(b)) => num_eq(a, b),
            (V::Str(sp), Value::String(b)) => self.tree.bytes(sp) == b.as_bytes(),
            (V::Arr(from, len), Value::Array(b)) => {
                let items = self.tree.items(from, len);
                items.len() == b.len() && items.iter().zip(b).all(|(i, e)| self.equals(*i, e))
            }
            (V::Obj(from, len), Value::Object(b)) => {
                let es = self.tree.entries(from, len);
                es.len() == b.len()
                    && es.iter().all(|(k, id)| {
                        std::str::from_utf8(self.tree.bytes(*k))
                            .ok()
                            .and_then(|k| b.get(k))
                            .is_some_and(|e| self.equals(*id, e))
                    })
            }
            _ => false,
        }
    }

    /// JSON equality of two tree values.
    fn same(&self, a: u32, b: u32) -> bool {
        match (self.value(a), self.value(b)) {
            (V::Null, V::Null) => true,
            (V::Bool(x), V::Bool(y)) => x == y,
            (x @ (V::U(_) | V::I(_) | V::F(_)), y @ (V::U(_) | V::I(_) | V::F(_))) => {
                as_f64(x) == as_f64(y)
                    && match (x, y) {
                        (V::U(p), V::U(q)) => p == q,
                        (V::I(p), V::I(q)) => p == q,
                        _ => true,
                    }
            }
            (V::Str(x), V::Str(y)) => self.tree.bytes(x) == self.tree.bytes(y),
            (V::Arr(f1, l1), V::Arr(f2, l2)) => {
                l1 == l2
                    && self
                        .tree
                        .items(f1, l1)
                        .iter()
                        .zip(self.tree.items(f2, l2))
                        .all(|(p, q)| self.same(*p, *q))
            }
            (V::Obj(f1, l1), V::Obj(f2, l2)) => {
                let (x, y) = (self.tree.entries(f1, l1), self.tree.entries(f2, l2));
                l1 == l2
                    && x.iter().all(|(k, id)| {
                        let k = self.tree.bytes(*k);
                        y.iter()
                            .find(|(k2, _)| self.tree.bytes(*k2) == k)
                            .is_some_and(|(_, id2)| self.same(*id, *id2))
                    })
            }
            _ => false,
        }
    }
}

fn as_f64(v: V) -> f64 {
    match v {
        V::U(u) => u as f64,
        V::I(i) => i as f64,
        V::F(f) => f,
        _ => f64::NAN,
    }
}

pub(crate) fn num_eq(a: V, b: &serde_json::Number) -> bool {
    match (a, b.as_u64(), b.as_i64()) {
        (V::U(x), Some(y), _) => x == y,
        (V::I(x), _, Some(y)) => x == y,
        _ => b.as_f64().is_some_and(|y| as_f64(a) == y),
    }
}

pub(crate) fn type_of(v: V) -> u8 {
    match v {
        V::Null => ty::NULL,
        V::Bool(_) => ty::BOOLEAN,
        V::Obj(..) => ty::OBJECT,
        V::Arr(..) => ty::ARRAY,
        V::Str(_) => ty::STRING,
        V::U(_) | V::I(_) => ty::INTEGER | ty::NUMBER,
        // 2020-12 (and the test suite for draft 4 alike): `1.0` is an integer.
        V::F(f) if f.fract() == 0.0 && f.is_finite() => ty::INTEGER | ty::NUMBER,
        V::F(_) => ty::NUMBER,
    }
}

/// Whether a value is of one of `types` (`0`: any), without working out whether a float
/// is whole unless only `integer` could take it.
#[inline]
pub(crate) fn type_ok(types: u8, v: V) -> bool {
    types == 0
        || match v {
            V::U(_) | V::I(_) => types & (ty::INTEGER | ty::NUMBER) != 0,
            V::F(_) if types & ty::NUMBER != 0 => true,
            v => types & type_of(v) != 0,
        }
}

/// The name of the value's type for messages: its most specific kind.
fn kind_name(t: u8) -> &'static str {
    if t & ty::INTEGER != 0 {
        "integer"
    } else {
        ty::name(t)
    }
}

fn types_text(types: u8) -> String {
    let mut names: Vec<&str> = Vec::new();
    for t in [
        ty::OBJECT,
        ty::ARRAY,
        ty::STRING,
        ty::INTEGER,
        ty::NUMBER,
        ty::BOOLEAN,
        ty::NULL,
    ] {
        // `number` already takes in the integers.
        if types & t != 0 && !(t == ty::INTEGER && types & ty::NUMBER != 0) {
            names.push(ty::name(t));
        }
    }
    match names.len() {
        1 => names[0].to_owned(),
        _ => {
            let last = names.pop().unwrap_or("");
            format!("{} or {last}", names.join(", "))
        }
    }
}

fn multiple_of(value: V, x: f64, m: f64) -> bool {
    if m.fract() == 0.0 && m < 9e15 {
        let m = m as u64;
        match value {
            V::U(u) => return u % m == 0,
            V::I(i) => return i.unsigned_abs() % m == 0,
            _ => {}
        }
    }
    let q = x / m;
    if !q.is_finite() {
        return false;
    }
    // Decimal multiples such as 0.1 are not exact in binary: compare within a few ulps of the
    // quotient.
    (q - q.round()).abs() <= q.abs().max(1.0) * 4.0 * f64::EPSILON
}

/// Characters, counted as code points: every byte that does not continue one.
fn chars(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| (**b as i8) >= -0x40).count() as u64
}

/// Whether a string (of a schema with string keywords) keeps them all; the verdict of
/// [`Run::string`] without its messages, for the checker that reads as it goes.
pub(crate) fn string_ok(n: &Node, bytes: &[u8]) -> bool {
    if n.min_length.is_some() || n.max_length.is_some() {
        let c = chars(bytes);
        if n.min_length.is_some_and(|m| c < m) || n.max_length.is_some_and(|m| c > m) {
            return false;
        }
    }
    if n.pattern.is_some() || n.format.is_some() {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        if n.pattern.as_ref().is_some_and(|p| !p.re.is_match(text))
            || n.format
                .is_some_and(|f| !crate::format::string_matches(f, text))
        {
            return false;
        }
    }
    true
}

/// Whether a number (of a schema with number keywords) keeps them all; the verdict of
/// [`Run::number`] without its messages.
pub(crate) fn number_ok(n: &Node, value: V) -> bool {
    let x = as_f64(value);
    !(n.minimum.is_some_and(|b| below(value, x, b))
        || n.maximum.is_some_and(|b| above(value, x, b))
        || n.multiple_of.is_some_and(|m| !multiple_of(value, x, m))
        || n.format.is_some_and(|f| !in_format_range(f, value, x)))
}

fn below(value: V, x: f64, b: crate::schema::Bound) -> bool {
    match beyond(value, x, b) {
        Some(o) => o.is_lt() || (b.exclusive && o.is_eq()),
        None => false,
    }
}

fn above(value: V, x: f64, b: crate::schema::Bound) -> bool {
    match beyond(value, x, b) {
        Some(o) => o.is_gt() || (b.exclusive && o.is_eq()),
        None => false,
    }
}

/// Whether a number is within the range its integer `format` (`int32`, `int64`) names.
fn in_format_range(f: Format, value: V, x: f64) -> bool {
    let (lo, hi) = match f {
        Format::Int32 => (i32::MIN as i128, i32::MAX as i128),
        Format::Int64 => (i64::MIN as i128, i64::MAX as i128),
        _ => return true,
    };
    match value {
        V::U(u) => (u as i128) <= hi,
        V::I(i) => (i as i128) >= lo,
        _ => x >= lo as f64 && x <= hi as f64,
    }
}

/// How a number compares with a bound: exactly when both are integers, else as floats.
fn beyond(value: V, x: f64, b: crate::schema::Bound) -> Option<std::cmp::Ordering> {
    match (value, b.int) {
        (V::U(u), Some(m)) => Some(i128::from(u).cmp(&m)),
        (V::I(i), Some(m)) => Some(i128::from(i).cmp(&m)),
        _ => x.partial_cmp(&b.value),
    }
}

fn bound_text(b: crate::schema::Bound) -> String {
    match b.int {
        Some(i) => i.to_string(),
        None => num_text(b.value),
    }
}

fn num_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let cut = (0..=60).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

fn short_list(list: &[Value]) -> String {
    let shown: Vec<String> = list.iter().take(8).map(short).collect();
    let more = if list.len() > 8 {
        format!(" and {} more", list.len() - 8)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}
