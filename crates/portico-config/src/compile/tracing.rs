//! The `tracing` section and a route's `tracing` keys. What the file leaves out comes from the
//! standard `OTEL_*` environment variables (the file wins), and a bad variable is reported like
//! a bad key, at the section, naming the variable.

use std::time::Duration;

use crate::file::*;
use crate::ir::*;
use crate::tree::{Loc, Node, suggest};

use super::ctx::{Ctx, get, item_loc, loc, read_file};

const PROPAGATORS: &[&str] = &["tracecontext", "b3", "b3multi", "baggage", "none"];

/// The first of the variables `names` that is set and not empty, with its name.
fn var(cx: &Ctx<'_>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|n| {
        (cx.env)(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*n, v))
    })
}

/// Reports a bad environment variable at the section.
fn bad_var(cx: &mut Ctx<'_>, at: Loc, name: &str, value: &str, why: &str, fix: &str) {
    cx.sink.at(
        at,
        format!("environment variable {name}=`{value}`: {why}"),
        fix.to_string(),
    );
}

/// `key1=value1,key2=value2` with percent-encoded values (the format of
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`).
fn key_values(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=')?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s.trim())
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        let k = decode(k)?;
        if k.is_empty() {
            return None;
        }
        out.push((k, decode(v)?));
    }
    Some(out)
}

pub(super) fn compile_tracing(
    cx: &mut Ctx<'_>,
    cfg: Option<&TracingConfig>,
    node: Option<&Node>,
) -> Option<Tracing> {
    let (cfg, node) = (cfg?, node?);
    let at = node.loc;
    if cfg.enabled == Some(false) {
        return None;
    }
    if let Some((_, v)) = var(cx, &["OTEL_SDK_DISABLED"])
        && v.trim().eq_ignore_ascii_case("true")
    {
        return None;
    }
    let errors_before = cx.sink.out.len();
    // The exporter would read this one itself, and fail at run time for want of a codec:
    // refused here, where it can be said.
    if let Some((name, v)) = var(
        cx,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ],
    ) && !v.trim().eq_ignore_ascii_case("none")
    {
        bad_var(
            cx,
            at,
            name,
            &v,
            "Portico exports without compression",
            "unset it (or set it to `none`)",
        );
    }

    // Transport and endpoint.
    let protocol = match &cfg.protocol {
        Some(p) => parse_protocol(p).unwrap_or_else(|| {
            cx.sink.at(
                loc(node, "protocol"),
                format!("unknown OTLP protocol `{p}`"),
                "use `grpc` or `http/protobuf`",
            );
            OtlpProtocol::Grpc
        }),
        None => match var(
            cx,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        ) {
            Some((name, v)) => parse_protocol(&v).unwrap_or_else(|| {
                bad_var(
                    cx,
                    at,
                    name,
                    &v,
                    "not an OTLP protocol Portico speaks",
                    "set it to `grpc` or `http/protobuf`, or set `tracing.protocol`",
                );
                OtlpProtocol::Grpc
            }),
            None => OtlpProtocol::Grpc,
        },
    };
    let endpoint = match (&cfg.endpoint, protocol) {
        (Some(e), _) => endpoint(cx, e, protocol, false, loc(node, "endpoint"), None),
        (None, _) => match var(cx, &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
            Some((name, v)) => endpoint(cx, &v, protocol, false, at, Some(name)),
            None => match var(cx, &["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
                Some((name, v)) => endpoint(cx, &v, protocol, true, at, Some(name)),
                None => Some(match protocol {
                    OtlpProtocol::Grpc => "http://localhost:4317".to_string(),
                    OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_string(),
                }),
            },
        },
    };

    // Headers: the file's, else the variable's.
    let mut headers = Vec::new();
    if !cfg.headers.is_empty() {
        let hnode = get(node, "headers").unwrap_or(node);
        for (k, v) in &cfg.headers {
            if let Some(h) = export_header(k, v) {
                headers.push(h);
            } else {
                cx.sink.at(
                    loc(hnode, k),
                    format!("`{k}` is not a header Portico can send to a collector"),
                    "use a header name of letters, digits and `-` (not ending in `-bin`) and a value without control characters",
                );
            }
        }
    } else if let Some((name, v)) = var(
        cx,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ],
    ) {
        match key_values(&v).map(|kv| {
            kv.iter()
                .map(|(k, v)| export_header(k, v))
                .collect::<Option<Vec<_>>>()
        }) {
            Some(Some(h)) => headers = h,
            _ => bad_var(
                cx,
                at,
                name,
                "…",
                "not a list of `name=value` headers",
                "write `api-key=secret,x-team=core` (values percent-encoded)",
            ),
        }
    }

    let timeout = match cfg.timeout {
        Some(d) => d.0,
        None => millis_var(
            cx,
            at,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
        )
        .unwrap_or(Duration::from_secs(10)),
    };
    if timeout.is_zero() {
        cx.sink.at(
            loc(node, "timeout"),
            "the export `timeout` must be greater than 0",
            "remove it for the default, 10s",
        );
    }

    let tls = compile_tls(cx, cfg.tls.as_ref(), node, endpoint.as_deref());

    let service_name = match &cfg.service_name {
        Some(s) if s.trim().is_empty() => {
            cx.sink.at(
                loc(node, "service_name"),
                "empty `service_name`",
                "remove it for the default, `portico`",
            );
            String::new()
        }
        Some(s) => s.clone(),
        None => var(cx, &["OTEL_SERVICE_NAME"]).map_or_else(|| "portico".to_string(), |(_, v)| v),
    };
    let mut resource: Vec<(String, String)> = Vec::new();
    if let Some((name, v)) = var(cx, &["OTEL_RESOURCE_ATTRIBUTES"]) {
        match key_values(&v) {
            Some(kv) => resource = kv,
            None => bad_var(
                cx,
                at,
                name,
                &v,
                "not a list of `key=value` attributes",
                "write `deployment.environment.name=prod,service.version=1.2`",
            ),
        }
    }
    for (k, v) in &cfg.resource {
        resource.retain(|(rk, _)| rk != k);
        resource.push((k.clone(), v.clone()));
    }
    // `service.name` has its own key, which wins over an attribute of that name.
    resource.retain(|(k, _)| k != "service.name");
    resource.sort();
    resource.dedup_by(|a, b| a.0 == b.0);

    // Sampling.
    let (mut ratio, mut parent_based) = (1.0, true);
    if let Some((name, v)) = var(cx, &["OTEL_TRACES_SAMPLER"]) {
        let arg = || {
            var(cx, &["OTEL_TRACES_SAMPLER_ARG"]).and_then(|(_, a)| a.trim().parse::<f64>().ok())
        };
        match v.trim() {
            "always_on" => (ratio, parent_based) = (1.0, false),
            "always_off" => (ratio, parent_based) = (0.0, false),
            "traceidratio" => (ratio, parent_based) = (arg().unwrap_or(1.0), false),
            "parentbased_always_on" => (ratio, parent_based) = (1.0, true),
            "parentbased_always_off" => (ratio, parent_based) = (0.0, true),
            "parentbased_traceidratio" => (ratio, parent_based) = (arg().unwrap_or(1.0), true),
            _ => bad_var(
                cx,
                at,
                name,
                &v,
                "not a sampler Portico has",
                "use `always_on`, `always_off`, `traceidratio` or their `parentbased_` forms, or set `tracing.sample_ratio`",
            ),
        }
    }
    if let Some(r) = cfg.sample_ratio {
        ratio = r;
    }
    if !(0.0..=1.0).contains(&ratio) {
        cx.sink.at(
            loc(node, "sample_ratio"),
            format!("`sample_ratio` is {ratio}; it must be from 0 to 1"),
            "write `0.01` to record one new trace in a hundred, `1` for all",
        );
    }
    if let Some(p) = cfg.parent_based {
        parent_based = p;
    }

    // Propagation.
    let mut propagators = Propagators::default();
    let names: Vec<(String, Loc)> = match &cfg.propagators {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), item_loc(node, "propagators", i)))
            .collect(),
        None => match var(cx, &["OTEL_PROPAGATORS"]) {
            Some((_, v)) => v
                .split(',')
                .map(|p| (p.trim().to_string(), at))
                .filter(|(p, _)| !p.is_empty())
                .collect(),
            None => vec![("tracecontext".to_string(), at)],
        },
    };
    for (p, at) in names {
        match p.as_str() {
            "tracecontext" => propagators.tracecontext = true,
            "b3" => propagators.b3 = true,
            "b3multi" => propagators.b3multi = true,
            // Baggage passes through untouched; `none` leaves the others off.
            "baggage" | "none" => {}
            other => cx.sink.at(
                at,
                format!("unknown propagator `{other}`"),
                suggest(other, PROPAGATORS),
            ),
        }
    }

    // Batching.
    let max_queue = positive(
        cx,
        node,
        "max_queue",
        cfg.max_queue,
        &["OTEL_BSP_MAX_QUEUE_SIZE"],
        2048,
    );
    let max_batch = positive(
        cx,
        node,
        "max_batch",
        cfg.max_batch,
        &["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
        512,
    );
    if max_batch > max_queue {
        cx.sink.at(
            loc(node, "max_batch"),
            format!("`max_batch` ({max_batch}) is larger than `max_queue` ({max_queue})"),
            "a batch is taken from the queue: make `max_batch` at most `max_queue`",
        );
    }
    let interval = match cfg.interval {
        Some(d) => d.0,
        None => millis_var(cx, at, &["OTEL_BSP_SCHEDULE_DELAY"]).unwrap_or(Duration::from_secs(5)),
    };
    if interval.is_zero() {
        cx.sink.at(
            loc(node, "interval"),
            "`interval` must be greater than 0",
            "remove it for the default, 5s",
        );
    }

    if cx.sink.out.len() != errors_before {
        return None;
    }
    Some(Tracing {
        export: TraceExport {
            protocol,
            endpoint: endpoint?,
            headers,
            timeout,
            tls,
            service_name,
            resource,
            max_queue,
            max_batch,
            interval,
        },
        sample_ratio: ratio,
        parent_based,
        keep_errors: cfg.keep_errors.unwrap_or(false),
        propagators,
        route_ratios: false,
    })
}

/// The `redact` section over the built-in list.
pub(super) fn compile_redact(
    cx: &mut Ctx<'_>,
    cfg: Option<&RedactConfig>,
    node: Option<&Node>,
) -> Redact {
    let mut r = Redact::default();
    let (Some(cfg), Some(node)) = (cfg, node) else {
        return r;
    };
    let mut params: Vec<String> = r.query_params.to_vec();
    for (i, p) in cfg.query_params.iter().enumerate() {
        if p.is_empty() {
            cx.sink.at(
                item_loc(node, "query_params", i),
                "empty query parameter name",
                "write the parameter's name as clients send it, such as `session`",
            );
        } else if !params.iter().any(|q| q.eq_ignore_ascii_case(p)) {
            params.push(p.clone());
        }
    }
    r.query_params = params.into();
    for (i, h) in cfg.headers.iter().enumerate() {
        match h.to_ascii_lowercase().as_str() {
            "user-agent" => r.user_agent = true,
            "host" => r.host = true,
            other => cx.sink.at(
                item_loc(node, "headers", i),
                format!("`{other}` is never recorded"),
                "only `user-agent` and `host` are recorded (no other header is ever logged or put on a span): remove it",
            ),
        }
    }
    r
}

/// The `audit` section: the trail's path (resolved from the config's folder) and its key.
pub(super) fn compile_audit(
    cx: &mut Ctx<'_>,
    cfg: Option<&AuditConfig>,
    node: Option<&Node>,
) -> Option<Audit> {
    let (cfg, node) = (cfg?, node?);
    if cfg.path.trim().is_empty() {
        cx.sink.at(
            loc(node, "path"),
            "empty audit `path`",
            "name the file records are appended to, such as `/var/log/portico/audit.jsonl`",
        );
        return None;
    }
    let hmac_key = match &cfg.hmac_key_file {
        Some(f) => {
            let key = read_file(cx, f, loc(node, "hmac_key_file"))?;
            let key: Vec<u8> = key.trim_ascii().to_vec();
            if key.len() < 16 {
                cx.sink.at(
                    loc(node, "hmac_key_file"),
                    "the audit HMAC key is shorter than 16 bytes",
                    "put at least 32 random bytes in the file, such as the output of `openssl rand -hex 32`",
                );
                return None;
            }
            Some(key)
        }
        None => None,
    };
    if cfg.max_bytes.is_some_and(|b| b < 4096) {
        cx.sink.at(
            loc(node, "max_bytes"),
            "an audit `max_bytes` under 4096 would rotate at almost every record",
            "use a size such as 104857600 (100 MiB), or remove it to rotate from outside",
        );
        return None;
    }
    let keep = cfg.keep.unwrap_or(5);
    if keep == 0 {
        cx.sink.at(
            loc(node, "keep"),
            "`keep: 0` would delete the trail at each rotation",
            "keep at least 1 rotated file (default 5), and archive them before they are removed",
        );
        return None;
    }
    let summary_interval = match cfg.summary_interval {
        Some(d) if d.0.is_zero() => None,
        Some(d) if d.0 < std::time::Duration::from_secs(1) => {
            cx.sink.at(
                loc(node, "summary_interval"),
                "an audit `summary_interval` under 1s would fill the trail with summaries",
                "use a minute or more (default 1m), or `0s` for none",
            );
            return None;
        }
        Some(d) => Some(d.0),
        None => Some(std::time::Duration::from_secs(60)),
    };
    Some(Audit {
        path: super::ctx::resolve(cx, &cfg.path),
        hmac_key,
        max_bytes: cfg.max_bytes,
        keep,
        summary_interval,
    })
}

/// A route's `tracing.sample_ratio`.
pub(super) fn compile_route_tracing(
    cx: &mut Ctx<'_>,
    cfg: Option<&RouteTracingConfig>,
    node: &Node,
) -> Option<f64> {
    let ratio = cfg?.sample_ratio?;
    if !(0.0..=1.0).contains(&ratio) {
        let tnode = get(node, "tracing").unwrap_or(node);
        cx.sink.at(
            loc(tnode, "sample_ratio"),
            format!("`sample_ratio` is {ratio}; it must be from 0 to 1"),
            "write `1` to record every new trace of this route, `0` for none",
        );
        return None;
    }
    Some(ratio)
}

fn parse_protocol(p: &str) -> Option<OtlpProtocol> {
    match p.trim() {
        "grpc" => Some(OtlpProtocol::Grpc),
        "http/protobuf" | "http" => Some(OtlpProtocol::HttpProtobuf),
        _ => None,
    }
}

/// Checks a collector URL. For HTTP, a URL without a path gets `/v1/traces`, as does the
/// generic `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL by the specification).
fn endpoint(
    cx: &mut Ctx<'_>,
    text: &str,
    protocol: OtlpProtocol,
    base: bool,
    at: Loc,
    from_var: Option<&str>,
) -> Option<String> {
    let text = text.trim();
    let fail = |cx: &mut Ctx<'_>, why: &str| {
        let fix = "write `http://collector:4317` (gRPC) or `http://collector:4318/v1/traces` (HTTP); `https://` for TLS";
        match from_var {
            Some(name) => bad_var(cx, at, name, text, why, fix),
            None => cx
                .sink
                .at(at, format!("collector endpoint `{text}`: {why}"), fix),
        }
        None
    };
    let Ok(uri) = text.parse::<http::Uri>() else {
        return fail(cx, "not a URL");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return fail(cx, "the scheme must be `http` or `https`");
    }
    if uri.host().is_none_or(str::is_empty) {
        return fail(cx, "no host");
    }
    if uri.query().is_some() {
        return fail(cx, "a collector URL takes no query");
    }
    let path = uri.path();
    match protocol {
        OtlpProtocol::Grpc => {
            if path != "/" && !path.is_empty() {
                return fail(
                    cx,
                    "a gRPC collector URL has no path (the service's path is fixed)",
                );
            }
            Some(text.trim_end_matches('/').to_string())
        }
        OtlpProtocol::HttpProtobuf if base || path == "/" || path.is_empty() => {
            Some(format!("{}/v1/traces", text.trim_end_matches('/')))
        }
        OtlpProtocol::HttpProtobuf => Some(text.to_string()),
    }
}

/// A header for the collector, checked as both an HTTP header and gRPC metadata.
fn export_header(k: &str, v: &str) -> Option<(String, String)> {
    let k = k.trim().to_ascii_lowercase();
    if k.ends_with("-bin") {
        return None;
    }
    http::HeaderName::from_bytes(k.as_bytes()).ok()?;
    http::HeaderValue::from_str(v).ok()?;
    Some((k, v.to_string()))
}

/// Milliseconds from the first of `names` that is set.
fn millis_var(cx: &mut Ctx<'_>, at: Loc, names: &[&'static str]) -> Option<Duration> {
    let (name, v) = var(cx, names)?;
    match v.trim().parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            bad_var(
                cx,
                at,
                name,
                &v,
                "not a number of milliseconds",
                "write a whole number of milliseconds, such as `5000`",
            );
            None
        }
    }
}

fn positive(
    cx: &mut Ctx<'_>,
    node: &Node,
    key: &str,
    v: Option<usize>,
    names: &[&'static str],
    default: usize,
) -> usize {
    match v {
        Some(_) => super::ctx::positive(cx, node, key, v, default),
        None => match var(cx, names) {
            Some((name, text)) => match text.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    bad_var(
                        cx,
                        node.loc,
                        name,
                        &text,
                        "not a whole number greater than 0",
                        &format!("unset it for the default, {default}"),
                    );
                    default
                }
            },
            None => default,
        },
    }
}

fn compile_tls(
    cx: &mut Ctx<'_>,
    cfg: Option<&TracingTlsConfig>,
    node: &Node,
    endpoint: Option<&str>,
) -> Option<TraceTls> {
    let https = endpoint.is_some_and(|e| e.starts_with("https://"));
    let tnode = get(node, "tls").unwrap_or(node);
    let pick = |cx: &Ctx<'_>, file: &Option<String>, name: &'static str| {
        file.clone()
            .map(|f| (f, loc(tnode, name)))
            .or_else(|| var(cx, &[env_name(name)]).map(|(_, v)| (v, node.loc)))
    };
    let empty = TracingTlsConfig::default();
    let c = cfg.unwrap_or(&empty);
    let ca = pick(cx, &c.ca, "ca");
    let cert = pick(cx, &c.certificate, "certificate");
    let key = pick(cx, &c.key, "key");
    if !https {
        if cfg.is_some() {
            cx.sink.at(
                loc(node, "tls"),
                "`tls` is set but the collector endpoint is not `https://`",
                "write the endpoint as `https://…`, or remove `tls`",
            );
        }
        return None;
    }
    let ca = match ca {
        Some((path, at)) => Some(read_file(cx, &path, at)?),
        None => None,
    };
    let identity = match (cert, key) {
        (Some((c, cat)), Some((k, kat))) => {
            Some((read_file(cx, &c, cat)?, read_file(cx, &k, kat)?))
        }
        (None, None) => None,
        _ => {
            cx.sink.at(
                tnode.loc,
                "a client certificate needs both `certificate` and `key`",
                "give both files, or neither",
            );
            return None;
        }
    };
    Some(TraceTls { ca, identity })
}

fn env_name(key: &str) -> &'static str {
    match key {
        "ca" => "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "certificate" => "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        _ => "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use crate::ir::{OtlpProtocol, Propagators, Tracing};

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Option<Tracing>, Vec<String>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.get(k).cloned();
        crate::compile::compile("t.yaml", text, Path::new("."), &env)
            .map(|c| c.tracing)
            .map_err(|d| {
                d.0.iter()
                    .map(|d| {
                        format!(
                            "{}:{} {} | {}",
                            d.loc.map_or(0, |l| l.line),
                            d.loc.map_or(0, |l| l.column),
                            d.message,
                            d.hint.clone().unwrap_or_default()
                        )
                    })
                    .collect()
            })
    }

    #[test]
    fn no_section_no_tracing_and_an_empty_section_has_the_defaults() {
        assert_eq!(with_env("", &[]).unwrap(), None);
        // The variables alone do not turn tracing on: the section does.
        assert_eq!(
            with_env("", &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap(),
            None
        );
        let t = with_env("tracing: {}\n", &[]).unwrap().unwrap();
        assert_eq!(t.export.protocol, OtlpProtocol::Grpc);
        assert_eq!(t.export.endpoint, "http://localhost:4317");
        assert_eq!(t.export.service_name, "portico");
        assert_eq!(t.export.timeout, std::time::Duration::from_secs(10));
        assert_eq!(
            (t.export.max_queue, t.export.max_batch),
            (2048, 512),
            "the OpenTelemetry batch defaults"
        );
        assert_eq!(
            (t.sample_ratio, t.parent_based, t.keep_errors),
            (1.0, true, false)
        );
        assert_eq!(
            t.propagators,
            Propagators {
                tracecontext: true,
                ..Default::default()
            }
        );
        let http = with_env("tracing: { protocol: http/protobuf }\n", &[])
            .unwrap()
            .unwrap();
        assert_eq!(http.export.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(
            with_env("tracing: { enabled: false }\n", &[]).unwrap(),
            None
        );
        assert_eq!(
            with_env("tracing: {}\n", &[("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_environment_fills_what_the_file_leaves_out_and_the_file_wins() {
        let env = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example:4318/",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcret, x-team=core",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "edge"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=prod,team=a%20b",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_PROPAGATORS", "b3multi,tracecontext,baggage"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ];
        let t = with_env("tracing: {}\n", &env).unwrap().unwrap();
        assert_eq!(t.export.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(
            t.export.endpoint, "https://collector.example:4318/v1/traces",
            "the generic endpoint is a base URL"
        );
        assert_eq!(
            t.export.headers,
            vec![
                ("api-key".into(), "s=cret".into()),
                ("x-team".into(), "core".into())
            ]
        );
        assert_eq!(t.export.timeout, std::time::Duration::from_millis(2500));
        assert_eq!(t.export.service_name, "edge");
        assert_eq!(
            t.export.resource,
            vec![
                ("deployment.environment.name".into(), "prod".into()),
                ("team".into(), "a b".into())
            ]
        );
        assert_eq!((t.sample_ratio, t.parent_based), (0.25, true));
        assert!(t.propagators.tracecontext && t.propagators.b3multi && !t.propagators.b3);
        assert_eq!(t.export.interval, std::time::Duration::from_millis(200));

        let file = "tracing:\n  protocol: grpc\n  endpoint: http://10.0.0.9:4317\n  service_name: gw\n  resource: { team: platform }\n  sample_ratio: 0.5\n  parent_based: false\n  propagators: [b3]\n";
        let t = with_env(file, &env).unwrap().unwrap();
        assert_eq!(t.export.protocol, OtlpProtocol::Grpc);
        assert_eq!(t.export.endpoint, "http://10.0.0.9:4317");
        assert_eq!(t.export.service_name, "gw");
        assert!(
            t.export
                .resource
                .contains(&("team".to_string(), "platform".to_string()))
        );
        assert_eq!((t.sample_ratio, t.parent_based), (0.5, false));
        assert!(t.propagators.b3 && !t.propagators.tracecontext);

        // The signal's own endpoint is used as written.
        let t = with_env(
            "tracing: { protocol: http/protobuf }\n",
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:9/custom/path",
            )],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.export.endpoint, "http://c:9/custom/path");
    }

    #[test]
    fn bad_keys_and_bad_variables_are_reported_with_their_place_and_fix() {
        /// A config, its environment, and a diagnostic expected among its errors.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "tracing:\n  sample_ratio: 1.5\n",
                &[],
                "2:17 `sample_ratio` is 1.5",
            ),
            (
                "tracing:\n  propagators: [tracecontext, b3mutli]\n",
                &[],
                "unknown propagator `b3mutli` | did you mean `b3multi`",
            ),
            (
                "tracing:\n  endpoint: http://c:4317/v1/traces\n",
                &[],
                "2:13 collector endpoint `http://c:4317/v1/traces`: a gRPC collector URL has no path",
            ),
            ("tracing:\n  endpoint: ftp://c\n", &[], "the scheme must be"),
            (
                "tracing:\n  protocol: http/json\n",
                &[],
                "unknown OTLP protocol `http/json`",
            ),
            (
                "tracing:\n  max_queue: 10\n  max_batch: 20\n",
                &[],
                "3:14 `max_batch` (20) is larger than `max_queue` (10)",
            ),
            (
                "tracing:\n  tls: { ca: ca.pem }\n",
                &[],
                "`tls` is set but the collector endpoint is not `https://`",
            ),
            (
                "tracing:\n  endpoint: https://c:4317\n  tls: { certificate: c.pem }\n",
                &[],
                "needs both `certificate` and `key`",
            ),
            (
                "tracing:\n  headers: { \"bad name\": x }\n",
                &[],
                "`bad name` is not a header",
            ),
            ("audit: { path: \"\" }\n", &[], "empty audit `path`"),
            (
                "admin: { address: \"127.0.0.1:0\", token_hash: \"sha256:1111111111111111111111111111111111111111111111111111111111111111\", read_token_hashes: [\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"] }\n",
                &[],
                "a read-only token is the same as the write token",
            ),
            (
                "admin: { address: \"127.0.0.1:0\", read_token_hashes: [reader] }\n",
                &[],
                "store the digest of the token",
            ),
            (
                "admin: { address: \"127.0.0.1:0\", read_token_hashes: [\"sha256:1111111111111111111111111111111111111111111111111111111111111111\"] }\n",
                &[],
                "read tokens without a write token",
            ),
            (
                "audit: { path: a.jsonl, max_bytes: 100 }\n",
                &[],
                "1:36 an audit `max_bytes` under 4096",
            ),
            (
                "audit: { path: a.jsonl, keep: 0 }\n",
                &[],
                "`keep: 0` would delete the trail",
            ),
            (
                "audit: { path: a.jsonl, summary_interval: 10ms }\n",
                &[],
                "`summary_interval` under 1s",
            ),
            (
                "redis: { url: \"redis://127.0.0.1:6379\", heartbeat_interval: 10ms }\n",
                &[],
                "`heartbeat_interval` is `10ms`",
            ),
            (
                "server: { node_id: \"a b\" }\n",
                &[],
                "has spaces or control characters",
            ),
            (
                "audit: { path: a.jsonl, hmac_key_file: /nonexistent/portico-audit.key }\n",
                &[],
                "cannot read `/nonexistent/portico-audit.key`",
            ),
            (
                "redact:\n  headers: [user-agent, Authorization]\n",
                &[],
                "2:25 `authorization` is never recorded",
            ),
            (
                "redact:\n  query_params: [\"\"]\n",
                &[],
                "empty query parameter name",
            ),
            (
                "server:\n  request_debug: { token_hash: s3cret }\n",
                &[],
                "2:32 `s3cr…` is not a key digest",
            ),
            (
                "server:\n  request_debug: { token_hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\", header: \"x debug\" }\n",
                &[],
                "invalid header name `x debug`",
            ),
            (
                "tracing: {}\n",
                &[("OTEL_TRACES_SAMPLER", "jaeger_remote")],
                "1:10 environment variable OTEL_TRACES_SAMPLER=`jaeger_remote`: not a sampler",
            ),
            (
                "tracing: {}\n",
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
                "OTEL_EXPORTER_OTLP_COMPRESSION=`gzip`: Portico exports without compression",
            ),
            (
                "tracing: {}\n",
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT=`10s`: not a number of milliseconds",
            ),
            (
                "tracing: {}\n",
                &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")],
                "OTEL_BSP_MAX_QUEUE_SIZE=`0`",
            ),
            (
                "tracing: {}\n",
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT=`collector:4317`",
            ),
            (
                "tracing: {}\n",
                &[("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                "upstreams: { u: { targets: [\"http://127.0.0.1:9\"] } }\nroutes:\n  - match: { path: { prefix: /a } }\n    upstream: u\n    tracing: { sample_ratio: -1 }\n",
                &[],
                "5:30 `sample_ratio` is -1",
            ),
        ];
        for (text, env, want) in cases {
            let errors = with_env(text, env).expect_err(text);
            assert!(
                errors.iter().any(|e| e.contains(want)),
                "{text}: want `{want}` in {errors:?}"
            );
        }
    }
}
