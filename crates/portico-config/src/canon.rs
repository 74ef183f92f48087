//! The one canonical form of a request path (RFC 3986 §6.2.2), decided once per request before
//! routing. Routes, policies, rewrites, cache keys, the access log and the upstream all see the
//! same path, so no spelling of a protected path can mean one thing to the gateway and another
//! to the backend behind it.
//!
//! What the canonical form is:
//! - percent-encoded **unreserved** characters (`A–Z a–z 0–9 - . _ ~`) are decoded: `%61dmin`
//!   is `admin`;
//! - every other `%XX` is kept, with upper-case hex digits: `%3b` is `%3B`;
//! - dot segments are resolved, also encoded ones (`%2e%2e`), and never climb above `/`;
//! - empty segments (`//`) are merged unless `merge_slashes` is off;
//! - non-ASCII bytes are percent-encoded, after checking that they form UTF-8 (overlong forms
//!   and surrogates are refused);
//! - an encoded `/` (`%2F`), a `\` or `%5C`, and a `;` path parameter follow their options
//!   (refused by default); an encoded control character (`%00`–`%1F`, `%7F`) is refused.
//!
//! The function is idempotent: the canonical form of a canonical path is itself.

use std::borrow::Cow;

/// What an encoded slash (`%2F`), a backslash or `%5C` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refused with 400: the safe choice, since backends disagree on whether `%2F` separates segments and
    /// some (IIS, many Windows and Java stacks) read `\` as `/`.
    #[default]
    Reject,
    /// Decode to `/` (and `\` to `/`), then canonicalise: the path is split where any
    /// backend would split it. The upstream receives plain slashes.
    Decode,
    /// Keep `%2F` and `%5C` as encoded characters inside a segment (a raw `\` becomes `%5C`).
    /// Only for backends known not to decode them before routing.
    Keep,
}

/// What a `;` in the path does (`/admin;x`, `/public/..;/admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathParameters {
    /// Refused with 400. Tomcat, Jetty and Spring drop `;…` from each segment before routing, so the
    /// path `/admin;x` is their `/admin` while it is not the gateway's.
    #[default]
    Reject,
    /// Drop `;…` from each segment, as those servers do, before dot segments are resolved:
    /// `/public/..;/admin` is `/admin` for the gateway too, and the upstream receives that.
    Strip,
    /// Keep `;` as an ordinary character: only for backends that do the same.
    Keep,
}

/// How request paths are canonicalised on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    pub escaped_slashes: EscapedSlashes,
    /// Merge empty segments: `/a//b` is `/a/b`.
    pub merge_slashes: bool,
    pub path_parameters: PathParameters,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            escaped_slashes: EscapedSlashes::Reject,
            merge_slashes: true,
            path_parameters: PathParameters::Reject,
        }
    }
}

/// Why a path has no canonical form under the listener's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` while `escaped_slashes` is `reject`.
    EscapedSlash,
    /// `\` or `%5C` while `escaped_slashes` is `reject`.
    Backslash,
    /// An encoded or raw control character (`%00`–`%1F`, `%7F`).
    Control,
    /// Bytes (raw or encoded) that are not UTF-8, or an overlong or surrogate form.
    BadUtf8,
    /// A `;` while `path_parameters` is `reject`.
    Parameter,
}

impl PathError {
    /// A sentence for the problem's `detail`.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::BadEscape => {
                "The path has a `%` that is not followed by two hexadecimal digits."
            }
            PathError::EscapedSlash => {
                "The path contains an encoded slash (%2F), which this gateway refuses."
            }
            PathError::Backslash => {
                "The path contains a backslash (\\ or %5C), which this gateway refuses."
            }
            PathError::Control => {
                "The path contains an encoded control character (%00-%1F or %7F)."
            }
            PathError::BadUtf8 => {
                "The path's percent-encoded bytes are not valid UTF-8 (or are an overlong form)."
            }
            PathError::Parameter => {
                "The path contains a `;` parameter, which this gateway refuses."
            }
        }
    }

    /// A stable name, for logs and tests.
    pub fn code(self) -> &'static str {
        match self {
            PathError::BadEscape => "bad_escape",
            PathError::EscapedSlash => "escaped_slash",
            PathError::Backslash => "backslash",
            PathError::Control => "control_character",
            PathError::BadUtf8 => "bad_utf8",
            PathError::Parameter => "path_parameter",
        }
    }
}

/// Bytes that send a path to the slow path: `%`, `\`, `;`, controls, DEL and non-ASCII.
const SLOW: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(i as u8, b'%' | b'\\' | b';' | 0..=0x20 | 0x7F..=0xFF);
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The canonical form of `path` (borrowed when it already is one). A path that does not start
/// with `/` (`*` of `OPTIONS *`) is returned unchanged.
#[inline]
pub fn canonicalize<'a>(path: &'a str, opts: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Ok(Cow::Borrowed(path));
    }
    // One pass that clears almost every path: nothing to decode, no `//`, no segment that
    // starts with `.`.
    let mut prev_slash = false;
    let mut plain = true;
    for &c in b {
        if SLOW[c as usize] || (prev_slash && (c == b'/' || c == b'.')) {
            plain = false;
            break;
        }
        prev_slash = c == b'/';
    }
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    slow(path, opts)
}

/// The full work, for the few paths the scan does not clear (kept out of line, so that the
/// scan inlines into the request path).
#[inline(never)]
fn slow<'a>(path: &'a str, opts: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    let decoded = decode(path.as_bytes(), opts)?;
    let out = resolve(&decoded, opts)?;
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// Decodes what is unreserved, re-encodes the rest with upper-case hex, and checks UTF-8.
/// The result is ASCII.
fn decode(b: &[u8], opts: &PathOptions) -> Result<String, PathError> {
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 8);
    // Non-ASCII bytes in a row, raw or decoded: checked as UTF-8 once the run ends.
    let mut run: Vec<u8> = Vec::new();
    let flush = |run: &mut Vec<u8>, out: &mut Vec<u8>| -> Result<(), PathError> {
        if run.is_empty() {
            return Ok(());
        }
        std::str::from_utf8(run).map_err(|_| PathError::BadUtf8)?;
        for &c in run.iter() {
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        }
        run.clear();
        Ok(())
    };
    let slash = |out: &mut Vec<u8>, encoded: &[u8; 3], err| match opts.escaped_slashes {
        EscapedSlashes::Reject => Err(err),
        EscapedSlashes::Decode => {
            out.push(b'/');
            Ok(())
        }
        EscapedSlashes::Keep => {
            out.extend_from_slice(encoded);
            Ok(())
        }
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            let v = h << 4 | l;
            if v >= 0x80 {
                run.push(v);
                continue;
            }
            flush(&mut run, &mut out)?;
            match v {
                b'/' => slash(&mut out, b"%2F", PathError::EscapedSlash)?,
                b'\\' => slash(&mut out, b"%5C", PathError::Backslash)?,
                0..=0x1F | 0x7F => return Err(PathError::Control),
                v if unreserved(v) => out.push(v),
                v => out.extend_from_slice(&[
                    b'%',
                    HEX[usize::from(v >> 4)],
                    HEX[usize::from(v & 15)],
                ]),
            }
            continue;
        }
        i += 1;
        if c >= 0x80 {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut out)?;
        match c {
            b'\\' => slash(&mut out, b"%5C", PathError::Backslash)?,
            0..=0x20 | 0x7F => return Err(PathError::Control),
            c => out.push(c),
        }
    }
    flush(&mut run, &mut out)?;
    // Every byte pushed is ASCII.
    String::from_utf8(out).map_err(|_| PathError::BadUtf8)
}

/// Resolves dot segments, merges empty ones and applies the `;` rule, on a decoded path.
fn resolve(path: &str, opts: &PathOptions) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut trailing = false;
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut segments = body.split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let seg = match opts.path_parameters {
            PathParameters::Keep => raw,
            PathParameters::Strip => raw.split(';').next().unwrap_or(""),
            PathParameters::Reject if raw.contains(';') => return Err(PathError::Parameter),
            PathParameters::Reject => raw,
        };
        match seg {
            "" if last => trailing = true,
            "" if opts.merge_slashes => {}
            "" => {
                out.push('/');
                trailing = false;
            }
            "." => trailing = last,
            ".." => {
                out.truncate(out.rfind('/').unwrap_or(0));
                trailing = last;
            }
            s => {
                out.push('/');
                out.push_str(s);
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonicalize(p, &PathOptions::default()).map(Cow::into_owned)
    }

    fn with(p: &str, opts: PathOptions) -> Result<String, PathError> {
        canonicalize(p, &opts).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/users/5/orders", "/a.b/c..d", "/~x/-_"] {
            assert!(
                matches!(
                    canonicalize(p, &PathOptions::default()),
                    Ok(Cow::Borrowed(_))
                ),
                "{p}"
            );
        }
        // Work was needed to tell, but nothing changed.
        assert!(matches!(
            canonicalize("/.well-known/x", &PathOptions::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_upper_cased() {
        assert_eq!(canon("/%61dmin").unwrap(), "/admin");
        assert_eq!(canon("/%41%7e%2D%5f%2E").unwrap(), "/A~-_.");
        assert_eq!(canon("/a%3fb%23c%25").unwrap(), "/a%3Fb%23c%25");
        // Double encoding stays one level deep: `%25` is not decoded.
        assert_eq!(canon("/%2561dmin").unwrap(), "/%2561dmin");
    }

    #[test]
    fn dot_segments_resolve_also_encoded() {
        assert_eq!(canon("/a/../admin").unwrap(), "/admin");
        assert_eq!(canon("/a/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(canon("/a/.%2E/admin").unwrap(), "/admin");
        assert_eq!(canon("/./admin/.").unwrap(), "/admin/");
        assert_eq!(canon("/../../admin").unwrap(), "/admin");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/..").unwrap(), "/");
        assert_eq!(canon("/a/...").unwrap(), "/a/...");
    }

    #[test]
    fn slashes_merge_unless_told_not_to() {
        assert_eq!(canon("//admin//x//").unwrap(), "/admin/x/");
        let keep = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        assert_eq!(with("/a//b", keep).unwrap(), "/a//b");
        assert_eq!(with("/a//..", keep).unwrap(), "/a/");
    }

    #[test]
    fn escaped_slashes_follow_the_option() {
        assert_eq!(canon("/admin%2Fx"), Err(PathError::EscapedSlash));
        assert_eq!(canon("/admin%2fx"), Err(PathError::EscapedSlash));
        assert_eq!(canon("/admin\\x"), Err(PathError::Backslash));
        assert_eq!(canon("/admin%5cx"), Err(PathError::Backslash));
        let decode = PathOptions {
            escaped_slashes: EscapedSlashes::Decode,
            ..PathOptions::default()
        };
        assert_eq!(with("/public%2F..%2Fadmin", decode).unwrap(), "/admin");
        assert_eq!(with("/public\\..\\admin", decode).unwrap(), "/admin");
        let keep = PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathOptions::default()
        };
        assert_eq!(with("/a%2fb\\c", keep).unwrap(), "/a%2Fb%5Cc");
    }

    #[test]
    fn parameters_follow_the_option() {
        assert_eq!(canon("/admin;x"), Err(PathError::Parameter));
        let strip = PathOptions {
            path_parameters: PathParameters::Strip,
            ..PathOptions::default()
        };
        assert_eq!(with("/public/..;/admin", strip).unwrap(), "/admin");
        assert_eq!(with("/admin;jsessionid=1/x", strip).unwrap(), "/admin/x");
        let keep = PathOptions {
            path_parameters: PathParameters::Keep,
            ..PathOptions::default()
        };
        assert_eq!(with("/a;b", keep).unwrap(), "/a;b");
        // An encoded `;` is data, whatever the option.
        assert_eq!(canon("/a%3bb").unwrap(), "/a%3Bb");
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert_eq!(canon("/a%"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%4"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%00"), Err(PathError::Control));
        assert_eq!(canon("/a%0d%0a"), Err(PathError::Control));
        assert_eq!(canon("/a%7f"), Err(PathError::Control));
        // Overlong `.` and `/`, a lone continuation byte, a surrogate.
        assert_eq!(canon("/%c0%ae%c0%ae/admin"), Err(PathError::BadUtf8));
        assert_eq!(canon("/%c0%af"), Err(PathError::BadUtf8));
        assert_eq!(canon("/%80"), Err(PathError::BadUtf8));
        assert_eq!(canon("/%ed%a0%80"), Err(PathError::BadUtf8));
        // Valid UTF-8, raw or encoded, is one form.
        assert_eq!(canon("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/café").unwrap(), "/caf%C3%A9");
    }

    /// The one-pass check never clears a path the full work would change: every string of up
    /// to six characters from the ones that matter, under each option.
    #[test]
    fn quick_scan_misses_nothing() {
        let alphabet = b"/.%2eEa;\\";
        let options = [
            PathOptions::default(),
            PathOptions {
                escaped_slashes: EscapedSlashes::Keep,
                merge_slashes: false,
                path_parameters: PathParameters::Strip,
            },
        ];
        let mut checked = 0;
        let mut path = Vec::new();
        for len in 0..=6u32 {
            for mut k in 0..alphabet.len().pow(len) {
                path.clear();
                path.push(b'/');
                for _ in 0..len {
                    path.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let p = std::str::from_utf8(&path).unwrap();
                for o in &options {
                    let full = decode(p.as_bytes(), o).and_then(|d| resolve(&d, o));
                    assert_eq!(canonicalize(p, o).map(Cow::into_owned), full, "{p:?} {o:?}");
                }
                checked += 1;
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn not_a_path_is_left_alone() {
        assert_eq!(canon("*").unwrap(), "*");
    }

    #[test]
    fn canonical_forms_are_fixed_points() {
        let all = [
            PathOptions::default(),
            PathOptions {
                escaped_slashes: EscapedSlashes::Keep,
                merge_slashes: false,
                path_parameters: PathParameters::Keep,
            },
            PathOptions {
                escaped_slashes: EscapedSlashes::Decode,
                merge_slashes: true,
                path_parameters: PathParameters::Strip,
            },
        ];
        let inputs = [
            "/a/%2e%2E/b",
            "/%61/./b//c/",
            "/a%2fb/..",
            "/x;y/..;/z",
            "/caf%c3%a9/%7e",
            "//..//%2e/",
            "/a\\b",
            "/%25%32%65",
        ];
        for o in all {
            for p in inputs {
                if let Ok(c) = with(p, o) {
                    assert_eq!(with(&c, o).as_deref(), Ok(c.as_str()), "{p} under {o:?}");
                }
            }
        }
    }
}
