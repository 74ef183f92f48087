//! Diagnostics: every problem found in a config file, with where it is and how to fix it.

use std::fmt;

use crate::tree::{DeError, Loc};

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: String,
    pub loc: Option<Loc>,
    pub message: String,
    pub hint: Option<String>,
    /// The offending source line, shown under the message.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.loc {
            Some(l) => write!(
                f,
                "{}:{}:{}: error: {}",
                self.file, l.line, l.column, self.message
            )?,
            None => write!(f, "{}: error: {}", self.file, self.message)?,
        }
        if let (Some(line), Some(l)) = (&self.source_line, self.loc) {
            let n = l.line.to_string();
            write!(
                f,
                "\n {n} | {line}\n {} | {}^",
                " ".repeat(n.len()),
                " ".repeat(l.column.saturating_sub(1) as usize)
            )?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// All problems found in one file, in file order.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics for one file while it is checked.
pub(crate) struct Sink<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub out: Vec<Diagnostic>,
}

/// The lines of a YAML text as the parser counts them: LF, CRLF and a lone CR each end one
/// (`str::lines` knows no lone CR, and would show the wrong line for such a file).
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\n', '\r']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                (!t.is_empty()).then_some(t)
            }
        }
    })
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Sink {
            file,
            text,
            out: Vec::new(),
        }
    }

    pub fn error(&mut self, loc: Option<Loc>, message: impl Into<String>, hint: Option<String>) {
        let source_line = loc
            .and_then(|l| yaml_lines(self.text).nth(l.line.saturating_sub(1) as usize))
            .map(str::to_owned);
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            loc,
            message: message.into(),
            hint,
            source_line,
        });
    }

    pub fn at(&mut self, loc: Loc, message: impl Into<String>, hint: impl Into<String>) {
        self.error(Some(loc), message, Some(hint.into()));
    }

    pub fn de(&mut self, e: DeError) {
        self.error(e.loc, e.msg, e.hint);
    }

    pub fn finish(mut self) -> Diagnostics {
        self.out
            .sort_by_key(|d| d.loc.map(|l| (l.line, l.column)).unwrap_or((0, 0)));
        Diagnostics(self.out)
    }
}

#[cfg(test)]
mod line_tests {
    #[test]
    fn lone_cr_lf_and_crlf_each_end_a_line() {
        let lines: Vec<&str> = super::yaml_lines("a\rb\r\nc\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "d"]);
        let lines: Vec<&str> = super::yaml_lines("a\n").collect();
        assert_eq!(lines, ["a"]);
        let mut s = super::Sink::new("f.yaml", "x: 1\ry: 2\n");
        s.at(crate::tree::Loc { line: 2, column: 1 }, "m", "h");
        assert_eq!(s.out[0].source_line.as_deref(), Some("y: 2"));
    }
}
