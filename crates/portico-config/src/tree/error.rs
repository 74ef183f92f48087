//! The error a node's deserialization ends with ([`DeError`]: a message, where, and a hint),
//! and the "did you mean" suggestions that go into hints.

use std::fmt;

use serde::de;

use super::node::Loc;

/// Separates a custom error's message from its hint, for `Deserialize` impls that know one.
pub const HINT: &str = "\n\thint: ";

#[derive(Debug, Clone)]
pub struct DeError {
    pub msg: String,
    pub loc: Option<Loc>,
    pub hint: Option<String>,
}

impl DeError {
    pub fn at(mut self, loc: Loc) -> Self {
        if self.loc.is_none() {
            self.loc = Some(loc);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    /// A message may carry its hint after [`HINT`].
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let msg = msg.to_string();
        let (msg, hint) = match msg.split_once(HINT) {
            Some((m, h)) => (m.to_owned(), Some(h.to_owned())),
            None => (msg, None),
        };
        DeError {
            msg,
            loc: None,
            hint,
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let exp = exp.to_string();
        let want = match exp.as_str() {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more",
            other => other,
        };
        DeError {
            msg: format!("invalid value: {unexp}, expected {want}"),
            loc: None,
            hint: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            msg: format!("unknown key `{field}`"),
            loc: None,
            hint: Some(suggest(field, expected)),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            msg: format!("unknown value `{variant}`"),
            loc: None,
            hint: Some(suggest(variant, expected)),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            msg: format!("missing required key `{field}`"),
            loc: None,
            hint: Some(format!("add `{field}:` to this mapping")),
        }
    }
}

/// "did you mean `x`?" when a candidate is close, else the list of valid names.
pub fn suggest(got: &str, expected: &[&str]) -> String {
    let best = expected
        .iter()
        .map(|e| (edit_distance(got, e), *e))
        .filter(|(d, e)| *d <= (e.len().max(got.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, e)) => format!("did you mean `{e}`?"),
        None if expected.is_empty() => "remove it".to_string(),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// Edit distance over bytes, counting a swap of neighbours as one edit (`brust` → `burst`);
/// names here are short ASCII identifiers.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(!a[i - 1].eq_ignore_ascii_case(&b[j - 1]));
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1
                && j > 1
                && a[i - 1].eq_ignore_ascii_case(&b[j - 2])
                && a[i - 2].eq_ignore_ascii_case(&b[j - 1])
            {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("prefix", "prefx"), 1);
        assert_eq!(edit_distance("brust", "burst"), 1);
        assert_eq!(
            suggest("prefx", &["exact", "prefix", "template"]),
            "did you mean `prefix`?"
        );
        assert_eq!(
            suggest("zzz", &["exact", "prefix"]),
            "expected one of: exact, prefix"
        );
    }
}
