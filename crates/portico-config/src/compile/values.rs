//! Small values that several sections share: socket addresses, switches written as `off`,
//! header value templates (`%{client_ip}`, …) and the header operations built from them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{HeaderName, HeaderValue};

use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node, NodeKind};

use super::ctx::{Ctx, get, item_loc};

pub(super) fn parse_addr(cx: &mut Ctx<'_>, s: &str, at: Loc) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            let hint = if s.starts_with("localhost") {
                "use an IP address, such as `127.0.0.1:8080` (host names are not resolved for listeners)"
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "a port alone is not an address: add the IP to listen on, as in `127.0.0.1:9901` or `0.0.0.0:8080`"
            } else if !s.contains(':') {
                "add a port, as in `0.0.0.0:8080`"
            } else {
                "write `IP:port`, such as `0.0.0.0:8080` or `[::]:8080`"
            };
            cx.sink.at(at, format!("invalid address `{s}`"), hint);
            None
        }
    }
}

/// The boolean a key's value was written as, if any. YAML reads `off`, `no` and `false`
/// unquoted as the boolean false (and `on`, `yes`, `true` as true), which the file types then
/// see as the text `false`; for keys whose documented value is `off`, that is what was meant.
pub(super) fn yaml_bool(node: Option<&Node>, key: &str) -> Option<bool> {
    match node.and_then(|n| get(n, key)).map(|v| &v.kind) {
        Some(NodeKind::Bool(b)) => Some(*b),
        _ => None,
    }
}

pub(super) fn not_a_switch(key: &str) -> String {
    format!("`{key}` is the YAML boolean true here (unquoted `on`, `yes` and `true` all are)")
}

/// `%{client_ip}`, `%{request_id}`, `%{route}`, `%{consumer}`, `%{claim.NAME}` in a header
/// value; `None` when the value has none.
fn value_template(v: &str) -> Result<Option<Vec<ValuePart>>, String> {
    if !v.contains("%{") {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut rest = v;
    while let Some(open) = rest.find("%{") {
        if open > 0 {
            parts.push(ValuePart::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed `%{{` in `{v}`"))?;
        parts.push(match &rest[open + 2..open + close] {
            "client_ip" => ValuePart::ClientIp,
            "request_id" => ValuePart::RequestId,
            "route" => ValuePart::Route,
            "consumer" => ValuePart::Consumer,
            other => match other.strip_prefix("claim.") {
                Some(c) if !c.is_empty() => ValuePart::Claim(c.to_owned()),
                _ => return Err(format!("unknown variable `%{{{other}}}`")),
            },
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(ValuePart::Literal(rest.to_owned()));
    }
    Ok(Some(parts))
}

pub(super) fn header_pairs(
    cx: &mut Ctx<'_>,
    map: &BTreeMap<String, String>,
    node: &Node,
    templated: &mut Vec<(HeaderName, Vec<ValuePart>, bool)>,
    append: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in map {
        let at = get(node, k).map_or(node.loc, |n| n.loc);
        match value_template(v) {
            Ok(None) => {}
            Ok(Some(parts)) => {
                match HeaderName::try_from(k.as_str()) {
                    Ok(n) => templated.push((n, parts, append)),
                    Err(_) => cx.sink.at(
                        at,
                        format!("invalid header name `{k}`"),
                        "use letters, digits and `-`",
                    ),
                }
                continue;
            }
            Err(e) => {
                cx.sink.at(
                    at,
                    e,
                    "variables are %{client_ip}, %{request_id}, %{route}, %{consumer} and %{claim.NAME}",
                );
                continue;
            }
        }
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            (Err(_), _) => cx.sink.at(
                at,
                format!("invalid header name `{k}`"),
                "use letters, digits and `-`",
            ),
            (_, Err(_)) => cx.sink.at(
                at,
                format!("invalid value for header `{k}`"),
                "header values cannot hold control characters or line breaks",
            ),
        }
    }
    out
}

pub(super) fn compile_header_ops(
    cx: &mut Ctx<'_>,
    ops: &HeaderOpsConfig,
    node: &Node,
) -> HeaderOps {
    let mut remove = Vec::new();
    for (i, r) in ops.remove.iter().enumerate() {
        match HeaderName::try_from(r.as_str()) {
            Ok(n) => remove.push(n),
            Err(_) => cx.sink.at(
                item_loc(node, "remove", i),
                format!("invalid header name `{r}`"),
                "use letters, digits and `-`",
            ),
        }
    }
    let mut templated = Vec::new();
    HeaderOps {
        set: header_pairs(
            cx,
            &ops.set,
            get(node, "set").unwrap_or(node),
            &mut templated,
            false,
        ),
        add: header_pairs(
            cx,
            &ops.add,
            get(node, "add").unwrap_or(node),
            &mut templated,
            true,
        ),
        remove,
        templated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::ctx::testing::{ctx, only_diagnostic};

    #[test]
    fn a_host_name_is_not_an_address() {
        let text = "admin:\n  address: localhost:9901\n";
        let mut cx = ctx(text);
        let at = Loc {
            line: 2,
            column: 12,
        };
        assert!(parse_addr(&mut cx, "localhost:9901", at).is_none());
        let d = only_diagnostic(cx);
        assert_eq!(d.message, "invalid address `localhost:9901`");
        assert_eq!(d.loc, Some(at));
        assert!(d.hint.unwrap().starts_with("use an IP address"));
        assert_eq!(d.source_line.as_deref(), Some("  address: localhost:9901"));
    }

    #[test]
    fn a_port_alone_is_not_an_address() {
        let mut cx = ctx("address: 9901\n");
        assert!(
            parse_addr(
                &mut cx,
                "9901",
                Loc {
                    line: 1,
                    column: 10
                }
            )
            .is_none()
        );
        let d = only_diagnostic(cx);
        assert!(
            d.hint
                .unwrap()
                .starts_with("a port alone is not an address")
        );
    }

    #[test]
    fn an_address_parses() {
        let mut cx = ctx("");
        let a = parse_addr(&mut cx, "[::1]:8080", Loc::default()).unwrap();
        assert_eq!(a.port(), 8080);
        assert!(cx.sink.finish().is_empty());
    }
}
