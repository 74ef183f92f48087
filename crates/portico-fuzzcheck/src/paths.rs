//! The canonical request path, under every combination of the listener's path options, and
//! what a lenient backend makes of it.

use std::sync::OnceLock;

use http::{HeaderMap, Method};
use portico_config::Config;
use portico_config::canon::{EscapedSlashes, PathOptions, PathParameters, canonicalize};
use portico_config::router::RequestView;

/// Every combination of the path options.
pub fn all_options() -> Vec<PathOptions> {
    let mut all = Vec::new();
    for escaped_slashes in [
        EscapedSlashes::Reject,
        EscapedSlashes::Decode,
        EscapedSlashes::Keep,
    ] {
        for merge_slashes in [true, false] {
            for path_parameters in [
                PathParameters::Reject,
                PathParameters::Strip,
                PathParameters::Keep,
            ] {
                all.push(PathOptions {
                    escaped_slashes,
                    merge_slashes,
                    path_parameters,
                });
            }
        }
    }
    all
}

/// Routes with a protected prefix and template, and a catch-all.
const CONFIG: &str = r#"
routes:
  - name: admin
    match: { path: { prefix: /admin } }
    respond: {}
  - name: user-admin
    match: { path: { template: "/users/{id}/admin" } }
    respond: {}
  - name: public
    match: { path: { prefix: / } }
    respond: {}
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        portico_config::load_str("paths.yaml", CONFIG, std::path::Path::new("."), &|_| None)
            .expect("the fixed config loads")
    })
}

/// The segments of `path` as a lenient backend reads them: it percent-decodes everything
/// (`%2F` too) and reads `\` as `/`, resolves dot segments and merges empty segments. For
/// the options made for other backends it is read as those are: `escaped_slashes: keep` is
/// for backends that keep `%2F` and `%5C` inside a segment, `merge_slashes: false` for
/// backends that keep empty segments.
fn lenient_segments(path: &str, opts: &PathOptions) -> Vec<String> {
    let bytes = path.as_bytes();
    let mut dec = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = path.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
            && !(opts.escaped_slashes == EscapedSlashes::Keep && matches!(v, b'/' | b'\\'))
        {
            dec.push(v);
            i += 3;
            continue;
        }
        dec.push(bytes[i]);
        i += 1;
    }
    let mut s = String::from_utf8_lossy(&dec).into_owned();
    if opts.escaped_slashes != EscapedSlashes::Keep {
        s = s.replace('\\', "/");
    }
    let body = s.strip_prefix('/').unwrap_or(&s);
    let mut out: Vec<String> = Vec::new();
    for seg in body.split('/') {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if opts.merge_slashes => {}
            s => out.push(s.to_owned()),
        }
    }
    out
}

/// Whether the backend would serve `segments` from a protected handler (`/admin…`, or
/// `/users/{id}/admin` with at most a trailing slash).
fn protected(segments: &[String]) -> Option<&'static str> {
    let seg = |i: usize| segments.get(i).map(String::as_str);
    if seg(0) == Some("admin") {
        return Some("admin");
    }
    let tail_ok = segments.len() == 3 || (segments.len() == 4 && seg(3) == Some(""));
    (seg(0) == Some("users")
        && seg(1).is_some_and(|s| !s.is_empty())
        && seg(2) == Some("admin")
        && tail_ok)
        .then_some("user-admin")
}

/// `canonicalize` never panics; under every option its result starts with `/` when the input
/// does, is ASCII, and is its own canonical form; and whatever a lenient backend reads as
/// protected in it, the router sends to the protected route.
pub fn path_canon(data: &[u8]) {
    let input = crate::text(data);
    let headers = HeaderMap::new();
    for opts in all_options() {
        let Ok(c) = canonicalize(&input, &opts) else {
            continue;
        };
        if input.starts_with('/') {
            assert!(c.starts_with('/'), "{input:?} -> {c:?} under {opts:?}");
            assert!(c.is_ascii(), "{input:?} -> {c:?} under {opts:?}");
        }
        assert_eq!(
            canonicalize(&c, &opts).as_deref(),
            Ok(&*c),
            "not a fixed point: {input:?} under {opts:?}"
        );
        if !c.starts_with('/') {
            continue;
        }
        let Some(want) = protected(&lenient_segments(&c, &opts)) else {
            continue;
        };
        let view = RequestView {
            host: None,
            path: &c,
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        let got = config()
            .router
            .find(&view)
            .map(|m| m.route.name.to_string());
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{input:?} is {c:?} under {opts:?}, which a lenient backend reads as protected"
        );
    }
}
