//! `google.api.http` path templates: `/v1/{name=shelves/*/books/*}:publish`.
//!
//! Grammar (from the `google.api.http` documentation):
//! `Template = "/" Segments [ Verb ]`, `Segments = Segment { "/" Segment }`,
//! `Segment = "*" | "**" | LITERAL | Variable`, `Variable = "{" FieldPath [ "=" Segments ] "}"`,
//! `FieldPath = IDENT { "." IDENT }`, `Verb = ":" LITERAL`. A variable without `=` matches one
//! segment. `**` matches the rest of the path and must come last.

/// A variable of a template: its field path and the segments `[start, end)` it takes.
pub type Var = (Vec<String>, usize, usize);

/// One parsed template, matched against request paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
    /// Field path and the segments `[start, end)` it captures (`end == usize::MAX`: to the
    /// end of the path, for `**`).
    vars: Vec<Var>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: one segment.
    Any,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("path template `{text}` must start with `/`"));
        };
        // The verb is a `:` after the last segment, outside braces.
        let (body, verb) = match split_verb(body) {
            Some((b, v)) if !v.is_empty() && !v.contains(['/', '{', '}']) => {
                (b, Some(v.to_owned()))
            }
            Some(_) => return Err(format!("path template `{text}` has an invalid `:verb`")),
            None => (body, None),
        };
        let mut t = Template {
            segments: Vec::new(),
            verb,
            vars: Vec::new(),
        };
        let mut rest = body;
        loop {
            if rest.starts_with('{') {
                let close = rest
                    .find('}')
                    .ok_or_else(|| format!("path template `{text}`: `{{` without `}}`"))?;
                let inner = &rest[1..close];
                let (path, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field: Vec<String> = path.split('.').map(str::to_owned).collect();
                if field.iter().any(|f| !is_ident(f)) {
                    return Err(format!(
                        "path template `{text}`: `{path}` is not a field path (names joined by `.`)"
                    ));
                }
                if t.vars.iter().any(|(f, _, _)| *f == field) {
                    return Err(format!("path template `{text}` binds `{path}` twice"));
                }
                let start = t.segments.len();
                for p in pattern.split('/') {
                    t.push(p, text)?;
                }
                let end = if t.segments.last() == Some(&Segment::Rest) {
                    usize::MAX
                } else {
                    t.segments.len()
                };
                t.vars.push((field, start, end));
                rest = &rest[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                let seg = &rest[..end];
                if seg.contains(['{', '}']) {
                    return Err(format!(
                        "path template `{text}`: a variable must be a whole segment"
                    ));
                }
                t.push(seg, text)?;
                rest = &rest[end..];
            }
            match rest.strip_prefix('/') {
                Some(r) => rest = r,
                None if rest.is_empty() => break,
                None => return Err(format!("path template `{text}`: expected `/` after `}}`")),
            }
        }
        Ok(t)
    }

    fn push(&mut self, seg: &str, text: &str) -> Result<(), String> {
        if self.segments.last() == Some(&Segment::Rest) {
            return Err(format!(
                "path template `{text}`: `**` must be the last segment"
            ));
        }
        self.segments.push(match seg {
            "" => return Err(format!("path template `{text}` has an empty segment")),
            "*" => Segment::Any,
            "**" => Segment::Rest,
            lit if lit.contains('*') => {
                return Err(format!(
                    "path template `{text}`: `*` must be a whole segment"
                ));
            }
            lit => Segment::Literal(lit.to_owned()),
        });
        Ok(())
    }

    /// The segments as written (`*`, `**` or a literal), the verb, and each variable's field
    /// path with the segments `[start, end)` it takes: what describing the template needs.
    pub fn parts(&self) -> (Vec<String>, Option<&str>, &[Var]) {
        let segments = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.clone(),
                Segment::Any => "*".to_owned(),
                Segment::Rest => "**".to_owned(),
            })
            .collect();
        (segments, self.verb.as_deref(), &self.vars)
    }

    /// The field paths this template binds, in order.
    pub fn fields(&self) -> impl Iterator<Item = &[String]> {
        self.vars.iter().map(|(f, _, _)| f.as_slice())
    }

    /// Literal segments count for more than wildcards when several templates match a path.
    pub fn specificity(&self) -> (usize, usize, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let fixed = !self.segments.contains(&Segment::Rest);
        (literals, self.segments.len(), fixed)
    }

    /// Matches a request path (without query); on success, each bound field path with its
    /// percent-decoded value.
    pub fn matches<'t>(&'t self, path: &str) -> Option<Vec<(&'t [String], String)>> {
        let body = path.strip_prefix('/')?;
        let body = match &self.verb {
            Some(v) => {
                let (b, got) = split_verb(body)?;
                if got != v {
                    return None;
                }
                b
            }
            None => body,
        };
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        let has_rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(has_rest);
        if parts.len() < fixed || (!has_rest && parts.len() != fixed) {
            return None;
        }
        for (seg, part) in self.segments.iter().zip(&parts) {
            match seg {
                Segment::Literal(l) if l != part => return None,
                Segment::Any if part.is_empty() => return None,
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(self.vars.len());
        for (field, start, end) in &self.vars {
            let end = (*end).min(parts.len());
            let raw = parts[*start..end].join("/");
            // One segment: fully decoded. Several: `%2F` stays, so the slashes that split
            // the segments stay distinguishable from encoded ones.
            let value = if end - start == 1 {
                percent_decode(&raw, false)
            } else {
                percent_decode(&raw, true)
            }?;
            out.push((field.as_slice(), value));
        }
        Some(out)
    }
}

/// `(path, verb)` when the last segment has a `:` outside braces.
fn split_verb(body: &str) -> Option<(&str, &str)> {
    let last = body.rfind('/').map_or(0, |i| i + 1);
    let tail = &body[last..];
    if tail.contains('}') && !tail.ends_with('}') {
        // `{x}:verb`
        let close = last + tail.rfind('}')?;
        let rest = &body[close + 1..];
        return rest.strip_prefix(':').map(|v| (&body[..close + 1], v));
    }
    if tail.starts_with('{') {
        return None;
    }
    let colon = last + tail.find(':')?;
    Some((&body[..colon], &body[colon + 1..]))
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Decodes `%XX` escapes (and refuses bad ones or non-UTF-8 results). With `keep_slash`,
/// `%2F` stays encoded.
pub fn percent_decode(s: &str, keep_slash: bool) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if keep_slash && v == b'/' {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                out.push(v);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(t)
            .unwrap()
            .matches(path)
            .map(|v| v.into_iter().map(|(f, s)| (f.join("."), s)).collect())
    }

    #[test]
    fn variables_literals_and_verbs() {
        assert_eq!(
            vals(
                "/v1/shelves/{shelf}/books/{book.id}",
                "/v1/shelves/7/books/a%20b"
            ),
            Some(vec![
                ("shelf".into(), "7".into()),
                ("book.id".into(), "a b".into())
            ])
        );
        assert_eq!(vals("/v1/shelves/{shelf}", "/v1/shelves/7/books"), None);
        assert_eq!(vals("/v1/shelves/{shelf}", "/v1/shelves/"), None);
        assert_eq!(
            vals("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            Some(vec![("name".into(), "shelves/1/books/2".into())])
        );
        assert_eq!(
            vals("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/x/2"),
            None
        );
        assert_eq!(
            vals("/v1/{name=files/**}", "/v1/files/a/b%2Fc"),
            Some(vec![("name".into(), "files/a/b%2Fc".into())])
        );
        assert_eq!(
            vals("/v1/books/{id}:publish", "/v1/books/9:publish"),
            Some(vec![("id".into(), "9".into())])
        );
        assert_eq!(vals("/v1/books/{id}:publish", "/v1/books/9"), None);
        assert_eq!(
            vals("/v1/books:batchGet", "/v1/books:batchGet"),
            Some(vec![])
        );
        assert_eq!(vals("/v1/*/x", "/v1/anything/x"), Some(vec![]));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "v1/x",
            "/v1/{id",
            "/v1/{a-b}",
            "/v1/**/x",
            "/v1/a*b",
            "/v1//x",
            "/v1/{id}/{id}",
            "/v1/x{id}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
