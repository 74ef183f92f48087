//! Query strings, read one way everywhere in the gateway: as
//! `application/x-www-form-urlencoded`, the way browsers write them and most backends read
//! them (`+` is a space, `%XX` a byte, bytes that are not UTF-8 replaced), through the
//! `form_urlencoded` crate. Routing, credentials in the query, cache keys, rewrites, balancing
//! and translations all use these functions, so a parameter the gateway reads under one name
//! is never forwarded under a spelling the backend reads as that name (`api%5Fkey` is
//! `api_key` here as it is upstream).

use std::borrow::Cow;

/// Every `name=value` pair, decoded, in order (empty pairs skipped).
pub fn pairs(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// The first value of `name`, decoded.
pub fn get<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    pairs(query?).find_map(|(k, v)| (k == name).then_some(v))
}

/// Each pair as written, with its decoded name (empty pairs skipped).
pub fn raw_pairs(query: &str) -> impl Iterator<Item = (&str, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let raw_name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let name = pairs(raw_name).next().map_or(Cow::Borrowed(""), |(k, _)| k);
        (pair, name)
    })
}

/// The query without the pairs whose decoded name is in `names`; the others as written.
pub fn without(query: &str, names: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for (pair, name) in raw_pairs(query) {
        if names.iter().any(|n| *n == name) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    out
}

/// The query with the value of every pair whose decoded name is in `names` (compared without
/// regard to ASCII case) replaced by `REDACTED`; the names and other pairs as written.
/// `None` when nothing was replaced (the query can be shown as it is).
pub fn redacted(query: &str, names: &[String]) -> Option<String> {
    let hit = |name: &str| names.iter().any(|n| n.eq_ignore_ascii_case(name));
    if !raw_pairs(query).any(|(_, name)| hit(&name)) {
        return None;
    }
    let mut out = String::with_capacity(query.len());
    for (pair, name) in raw_pairs(query) {
        if !out.is_empty() {
            out.push('&');
        }
        if hit(&name) {
            out.push_str(pair.split_once('=').map_or(pair, |(n, _)| n));
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_values_of_named_pairs_in_any_spelling() {
        let names = vec!["token".to_string(), "api_key".to_string()];
        assert_eq!(redacted("a=1&b=2", &names), None);
        assert_eq!(
            redacted("a=1&TOKEN=s3&api%5Fkey=k&b=x+y&token", &names).as_deref(),
            Some("a=1&TOKEN=REDACTED&api%5Fkey=REDACTED&b=x+y&token=REDACTED")
        );
    }

    #[test]
    fn names_and_values_are_decoded_one_way() {
        let q = "a=1&b=x+y&c%5Fd=%2B&&e&f=%zz";
        let got: Vec<(String, String)> = pairs(q)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "1"),
                ("b", "x y"),
                ("c_d", "+"),
                ("e", ""),
                ("f", "%zz")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(get(Some(q), "c_d").as_deref(), Some("+"));
        assert_eq!(get(Some(q), "b").as_deref(), Some("x y"));
        assert_eq!(get(Some(q), "zz"), None);
        assert_eq!(get(None, "a"), None);
    }

    #[test]
    fn a_name_is_removed_however_it_is_spelled() {
        let names = ["api_key".to_owned()];
        assert_eq!(without("api_key=1&x=2", &names), "x=2");
        assert_eq!(without("api%5Fkey=1&x=%41", &names), "x=%41");
        assert_eq!(without("x=1&api%5fkey&y", &names), "x=1&y");
        assert_eq!(without("x=1", &names), "x=1");
        assert_eq!(without("", &names), "");
    }
}
