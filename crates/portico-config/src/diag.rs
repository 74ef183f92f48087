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
        let (file, text) = (self.file, self.text);
        self.error_in(file, text, loc, message, hint);
    }

    /// An error in another file than the config (a document the config names), located in
    /// that file's `text`.
    pub fn error_in(
        &mut self,
        file: &str,
        text: &str,
        loc: Option<Loc>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let source_line = loc
            .and_then(|l| yaml_lines(text).nth(l.line.saturating_sub(1) as usize))
            .map(str::to_owned);
        self.out.push(Diagnostic {
            file: file.to_owned(),
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

    /// The diagnostics in reading order: the config's first, then those of each other file in
    /// the order its first one was reported, each file by line and column.
    pub fn finish(mut self) -> Diagnostics {
        let mut files: Vec<String> = vec![self.file.to_owned()];
        for d in &self.out {
            if !files.contains(&d.file) {
                files.push(d.file.clone());
            }
        }
        let rank = |f: &str| files.iter().position(|x| x == f).unwrap_or(usize::MAX);
        let mut keyed: Vec<_> = std::mem::take(&mut self.out)
            .into_iter()
            .map(|d| {
                let (line, col) = d.loc.map(|l| (l.line, l.column)).unwrap_or((0, 0));
                ((rank(&d.file), line, col), d)
            })
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        Diagnostics(keyed.into_iter().map(|(_, d)| d).collect())
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

    #[test]
    fn other_files_come_after_the_config_in_order_of_first_report() {
        let at = |line| Some(crate::tree::Loc { line, column: 1 });
        let mut s = super::Sink::new("c.yaml", "a: 1\nb: 2\n");
        s.error_in("b.yaml", "x\ny\nz\n", at(3), "b3", None);
        s.error(at(2), "c2", None);
        s.error_in("a.yaml", "p\nq\n", at(1), "a1", None);
        s.error_in("b.yaml", "x\ny\nz\n", at(1), "b1", None);
        s.error(at(1), "c1", None);
        let d = s.finish().0;
        let order: Vec<(&str, &str)> = d
            .iter()
            .map(|d| (d.file.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("c.yaml", "c1"),
                ("c.yaml", "c2"),
                ("b.yaml", "b1"),
                ("b.yaml", "b3"),
                ("a.yaml", "a1"),
            ]
        );
        // The source line comes from the file the error is in, not from the config.
        assert_eq!(d[3].source_line.as_deref(), Some("z"));
        assert_eq!(d[4].source_line.as_deref(), Some("p"));
    }
}
