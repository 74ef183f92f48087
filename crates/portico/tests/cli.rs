//! The `portico` binary as a user runs it: validate, schema, run with reload and drain, demo.

// The CLI runs as a child process; these tests wait for it on the test's own thread.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portico"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portico-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A plain HTTP/1.1 GET; returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn wait_for(addr: SocketAddr, path: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        if let Some(r) = http_get(addr, path) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn every_example_validates() {
    let dir = workspace().join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = bin().arg("validate").arg("-c").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{} is invalid:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 2, "expected examples in {}", dir.display());
}

#[test]
fn validate_reports_every_error_with_location_and_exit_1() {
    let dir = temp_dir("validate");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - adress: 127.0.0.1:80\nroutes:\n  - upstream: nope\n",
    )
    .unwrap();
    let out = bin().arg("validate").arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:2:5: error: unknown key `adress`")),
        "{err}"
    );
    assert!(err.contains("hint: did you mean `address`?"), "{err}");
    assert!(
        err.contains(&format!("{file}:4:15: error: unknown upstream `nope`")),
        "{err}"
    );
    assert!(err.contains("2 errors found"), "{err}");

    let good = dir.join("good.yaml");
    std::fs::write(&good, "routes:\n  - respond: { body: hi }\n").unwrap();
    let out = bin().arg("validate").arg("-c").arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let out = bin()
        .arg("validate")
        .arg("-c")
        .arg(dir.join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

#[test]
fn validate_reports_openapi_document_errors_in_the_document() {
    let dir = temp_dir("validate-openapi");
    let doc = dir.join("pets.yaml");
    std::fs::write(
        &doc,
        "openapi: 3.1.0\npaths:\n  /pets:\n    get: { $ref: '#/components/nope' }\n",
    )
    .unwrap();
    let path = dir.join("portico.yaml");
    std::fs::write(
        &path,
        "upstreams: { pets: { targets: [\"http://127.0.0.1:9000\"] } }\napis:\n  - { openapi: pets.yaml, upstream: pets, tags: { nope: {} } }\n",
    )
    .unwrap();
    let out = bin().arg("validate").arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let (file, doc) = (path.display().to_string(), doc.display().to_string());
    assert!(
        err.contains(&format!(
            "{file}:3:51: error: the document has no tag `nope`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{doc}:4:18: error: unresolved $ref `#/components/nope`"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: the document's operations have no tags; remove `nope`"),
        "{err}"
    );
    // The config's errors first, then the document's.
    assert!(err.find(&file).unwrap() < err.find(&doc).unwrap(), "{err}");
    assert!(err.contains("2 errors found"), "{err}");
}

#[test]
fn schema_is_json_schema() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert!(v["properties"]["routes"].is_object());
}

/// A pipe whose reader is already gone, as after `| head -1` has read its line.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_closed_output_pipe_ends_every_command_quietly() {
    let dir = temp_dir("epipe");
    let valid = dir.join("valid.yaml");
    std::fs::write(&valid, "routes:\n  - respond: { body: hi }\n").unwrap();
    let wsdl = workspace().join("crates/portico-testkit/soap/calculator11.wsdl");
    let commands: [&[&std::ffi::OsStr]; 5] = [
        &["schema".as_ref()],
        &["validate".as_ref(), "-c".as_ref(), valid.as_os_str()],
        &["hash".as_ref(), "api-key".as_ref(), "k".as_ref()],
        &["soap".as_ref(), "inspect".as_ref(), wsdl.as_os_str()],
        &["--help".as_ref()],
    ];
    for args in commands {
        let out = bin().args(args).stdout(closed_pipe()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    // Errors to a closed standard error: the exit status still says "invalid", not a panic's 101.
    let invalid = dir.join("invalid.yaml");
    std::fs::write(&invalid, "routes:\n  - upstream: nope\n").unwrap();
    let status = bin()
        .args(["validate", "-c"])
        .arg(&invalid)
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn run_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = temp_dir("run");
    let (port, admin) = (free_port(), free_port());
    let path = dir.join("portico.yaml");
    let cfg = |body: &str| {
        format!(
            "listeners: [{{ address: \"127.0.0.1:{port}\" }}]\nadmin: {{ address: \"127.0.0.1:{admin}\" }}\nroutes:\n  - respond: {{ body: {body} }}\n"
        )
    };
    std::fs::write(&path, cfg("first")).unwrap();
    let mut child = bin()
        .args(["run", "--no-watch", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(wait_for(addr, "/").1, "first");

    std::fs::write(&path, cfg("second")).unwrap();
    signal(&child, "HUP");
    let start = Instant::now();
    while http_get(addr, "/").map(|r| r.1) != Some("second".into()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken file is refused; the running config keeps serving.
    std::fs::write(&path, "routes: [ {").unwrap();
    signal(&child, "HUP");
    // Once the refusal is counted, the running config has had its chance to change.
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let start = Instant::now();
    while !http_get(admin_addr, "/metrics")
        .is_some_and(|(_, m)| m.contains("portico_config_reloads_total{result=\"failure\"} 1"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the broken file's reload was never refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(addr, "/").unwrap().1, "second");

    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("config reload rejected"), "{err}");
    assert!(err.contains("invalid YAML"), "{err}");
    assert!(err.contains("drained"), "{err}");
    // Standard error is a pipe here, not a terminal: log lines carry no colour codes.
    assert!(!err.contains("\x1b["), "{err:?}");
}

#[test]
fn run_refuses_a_bad_config_with_exit_1() {
    let dir = temp_dir("badrun");
    let path = dir.join("portico.yaml");
    std::fs::write(&path, "routes:\n  - upstream: nope\n").unwrap();
    let out = bin().args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown upstream `nope`"));
}

#[test]
fn demo_serves_its_routes() {
    let (port, admin) = (free_port(), free_port());
    let mut child = bin()
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        wait_for(addr, "/hello"),
        (200, "hello from portico\n".into())
    );
    let (status, body) = http_get(addr, "/api/users/7").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"name\":\"User 7\""), "{body}");
    assert_eq!(http_get(addr, "/nowhere").unwrap().0, 404);
    // Transparent huge pages are off for the gateway's process (they inflate RSS for many
    // small per-connection allocations); kernels since 5.0 report it per process.
    let status_file = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    if let Some(line) = status_file
        .iter()
        .flat_map(|s| s.lines())
        .find(|l| l.starts_with("THP_enabled:"))
    {
        assert!(line.ends_with('0'), "{line}");
    }
    let (status, body) =
        http_get(format!("127.0.0.1:{admin}").parse().unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("portico_requests_total"), "{body}");
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("Portico demo is running"), "{out}");
}

#[test]
fn soap_inspect_lists_operations_or_says_what_is_wrong() {
    let wsdl = workspace().join("crates/portico-testkit/soap/split/calculator.wsdl");
    let out = bin().args(["soap", "inspect"]).arg(&wsdl).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("service CalculatorService"), "{text}");
    assert!(text.contains("(SOAP 1.1)"), "{text}");
    assert!(
        text.contains("Divide  [document, action \"Divide\"]"),
        "{text}"
    );
    let out = bin()
        .args(["soap", "inspect", "/nonexistent/x.wsdl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.wsdl: cannot read it"));
}

#[test]
fn explain_prints_the_route_the_chain_and_the_upstream_path() {
    let cfg = workspace().join("examples/hardened.yaml");
    let out = bin()
        .args(["explain", "-c"])
        .arg(&cfg)
        .args(["-H", "x-api-key: k", "http://127.0.0.1/%61dmin/x"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("/%61dmin/x -> /admin/x (canonical)"),
        "{text}"
    );
    assert!(
        text.contains("route     admin                chosen"),
        "{text}"
    );
    assert!(text.contains("policy    auth (route)"), "{text}");
    // JSON for tools.
    let out = bin()
        .args(["explain", "--json", "-c"])
        .arg(&cfg)
        .arg("http://127.0.0.1/admin")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["route"]["name"], "admin");
    // A request that cannot be read is the caller's mistake: exit 2, and why.
    let out = bin()
        .args(["explain", "-c"])
        .arg(&cfg)
        .args(["-H", "no colon", "/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write `Name: value`"));
}

/// `portico audit verify`: a whole trail passes, across its rotated files in order; files out
/// of order fail; an edited one fails naming the line.
#[test]
fn audit_verify_passes_a_whole_trail_and_names_the_edited_line() {
    let dir = temp_dir("audit-verify");
    let trail = dir.join("audit.jsonl");
    {
        let log = portico_proxy::observe::audit::AuditLog::open(&portico_config::Audit {
            path: trail.clone(),
            hmac_key: None,
            max_bytes: Some(4096),
            keep: 3,
            summary_interval: None,
        })
        .unwrap();
        log.record("admin", &[("status", 200.into())]);
        log.record("admin", &[("status", 201.into())]);
        for i in 0..40 {
            log.record("admin", &[("n", i.into()), ("pad", "x".repeat(150).into())]);
        }
    }
    let rotated = |n: u32| dir.join(format!("audit.jsonl.{n}"));
    assert!(rotated(2).exists() && !rotated(4).exists());
    let out = bin()
        .args(["audit", "verify"])
        .arg(rotated(2))
        .arg(rotated(1))
        .arg(&trail)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" records verify (seq up to"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = bin()
        .args(["audit", "verify"])
        .arg(rotated(1))
        .arg(rotated(2))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not continue the file before it"));
    // The oldest file kept (`.3` when three rotations happened, else `.2`) holds seq 2.
    let trail = if rotated(3).exists() {
        rotated(3)
    } else {
        rotated(2)
    };
    let text = std::fs::read_to_string(&trail).unwrap();
    std::fs::write(&trail, text.replacen("\"status\":201", "\"status\":500", 1)).unwrap();
    let out = bin()
        .args(["audit", "verify"])
        .arg(&trail)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: the record was edited", trail.display())),
        "{err}"
    );
}

/// `portico diff` against a running node: the same file is the same config (exit 0); a file
/// with a route added and an upstream changed lists both (exit 1). `portico cluster` on a node
/// without Redis says why it cannot list a fleet (exit 2).
#[test]
fn diff_against_a_running_node_and_cluster_without_a_fleet() {
    let dir = temp_dir("diff");
    let (port, admin) = (free_port(), free_port());
    let path = dir.join("portico.yaml");
    let running = format!(
        "listeners: [{{ address: \"127.0.0.1:{port}\" }}]\nadmin: {{ address: \"127.0.0.1:{admin}\" }}\nupstreams:\n  u: {{ targets: [\"http://127.0.0.1:9\"] }}\nroutes:\n  - name: main\n    upstream: u\n"
    );
    std::fs::write(&path, &running).unwrap();
    let mut child = bin()
        .args(["run", "--no-watch", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for(admin_addr, "/healthz");
    let admin_url = format!("http://127.0.0.1:{admin}");
    let same = bin()
        .args(["diff", "--admin", &admin_url, "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(String::from_utf8_lossy(&same.stdout).starts_with("same config"));
    let changed = dir.join("changed.yaml");
    std::fs::write(
        &changed,
        running.replace("127.0.0.1:9\"", "127.0.0.1:10\"")
            + "  - name: extra\n    match: { path: { prefix: /x } }\n    respond: { body: x }\n",
    )
    .unwrap();
    let out = bin()
        .args(["diff", "--admin", &admin_url, "-c"])
        .arg(&changed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("routes: + extra"), "{text}");
    assert!(text.contains("upstreams: ~ u (targets)"), "{text}");
    let fleet = bin()
        .args(["cluster", "--admin", &admin_url])
        .output()
        .unwrap();
    assert_eq!(fleet.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&fleet.stderr).contains("no `redis` section"),
        "{}",
        String::from_utf8_lossy(&fleet.stderr)
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

/// The shared Redis on 127.0.0.1:6379, or a skip (a failure with `PORTICO_REQUIRE_REDIS=1`).
fn shared_redis() -> bool {
    let up = TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok();
    if !up {
        assert_ne!(
            std::env::var("PORTICO_REQUIRE_REDIS").as_deref(),
            Ok("1"),
            "Redis on 127.0.0.1:6379 is required (PORTICO_REQUIRE_REDIS=1)"
        );
        eprintln!("SKIPPED: Redis on 127.0.0.1:6379 is not available");
    }
    up
}

fn run_ok(args: &[&str], file: Option<&Path>) -> (Option<i32>, String, String) {
    let mut c = bin();
    c.args(args);
    if let Some(f) = file {
        c.arg("-c").arg(f);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn push_validate_history_rollback_diff_and_run_from_a_config_store() {
    if !shared_redis() {
        return;
    }
    let dir = temp_dir("store");
    let key = format!(
        "portico-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let url = format!("redis://127.0.0.1:6379?key={key}");
    let (port, admin) = (free_port(), free_port());
    let text = |body: &str| {
        format!(
            "listeners: [{{ address: \"127.0.0.1:{port}\" }}]\nadmin: {{ address: \"127.0.0.1:{admin}\" }}\nroutes:\n  - name: main\n    respond: {{ body: {body} }}\n"
        )
    };
    let one = dir.join("one.yaml");
    std::fs::write(&one, text("one")).unwrap();
    let two = dir.join("two.yaml");
    std::fs::write(&two, text("two")).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "routes:\n  - upstream: nowhere\n").unwrap();

    // A file with errors is never pushed.
    let (code, _, err) = run_ok(&["push", "--to", &url], Some(&bad));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bad.yaml:2:") && err.contains("nothing pushed"),
        "{err}"
    );
    let (_, out, _) = run_ok(&["history", "--from", &url], None);
    assert!(out.contains("nothing stored"), "{out}");

    let (code, out, err) = run_ok(&["push", "--to", &url, "--author", "ana"], Some(&one));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("pushed version 1 "), "{out}");
    // The same file again: nothing to push.
    let (code, out, _) = run_ok(&["push", "--to", &url], Some(&one));
    assert_eq!(
        (code, out.contains("already this config")),
        (Some(0), true),
        "{out}"
    );
    // A push that expected another version (a CI job that read version 0) loses.
    let (code, _, err) = run_ok(&["push", "--to", &url, "--expect-version", "0"], Some(&two));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing was written"), "{err}");

    // A node runs from the store, and follows the next push.
    let cache = dir.join("cache.yaml");
    let mut child = bin()
        .args([
            "run",
            "-c",
            &url,
            "--config-poll",
            "200ms",
            "--config-cache",
        ])
        .arg(&cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(wait_for(addr, "/"), (200, "one".to_string()));
    let (code, out, err) = run_ok(&["push", "--to", &url, "--author", "bo"], Some(&two));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("pushed version 2 "), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(addr, "/").map(|r| r.1) != Some("two".into()) {
        assert!(Instant::now() < deadline, "the node never took version 2");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cached copy is written just after the new config takes over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&cache).ok() != Some(text("two")) {
        assert!(
            Instant::now() < deadline,
            "the cached copy is not version 2"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (code, out, err) = run_ok(&["validate", "-c", &url], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("#v2: valid") && out.contains("pushed by bo"),
        "{out}"
    );
    let (code, out, _) = run_ok(&["diff", "--from", &url], Some(&one));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("routes: ~ main"), "{out}");
    let (code, out, _) = run_ok(&["diff", "--from", &url], Some(&two));
    assert_eq!(code, Some(0), "{out}");

    // Rollback: version 1's text comes back as version 3, and the node follows.
    let (code, out, err) = run_ok(&["rollback", "--to", &url], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("pushed version 3 "), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(addr, "/").map(|r| r.1) != Some("one".into()) {
        assert!(
            Instant::now() < deadline,
            "the node never took the rollback"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, out, _) = run_ok(&["history", "--from", &url], None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("*    3") && lines[0].ends_with("(rollback to version 1)"),
        "{out}"
    );
    assert!(
        lines[1].contains(" bo") && lines[2].contains(" ana"),
        "{out}"
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    // A bad URL is a clear error.
    let (code, _, err) = run_ok(&["history", "--from", "redis://a,b?key=k"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("sentinel=NAME"), "{err}");
}

/// Every `$ref` of a JSON document that does not resolve inside it.
fn dangling_refs(doc: &serde_json::Value) -> Vec<String> {
    fn walk(root: &serde_json::Value, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", serde_json::Value::String(r)) => {
                            let ptr = r.strip_prefix('#').unwrap_or(r);
                            if root.pointer(ptr).is_none() {
                                out.push(r.clone());
                            }
                        }
                        _ => walk(root, v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(root, v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, doc, &mut out);
    out
}

#[test]
fn openapi_describes_every_route_and_an_openapi_validator_accepts_it() {
    let dir = temp_dir("openapi-describe");
    let orders = workspace().join("crates/portico-testkit/openapi/orders.yaml");
    let pets = workspace().join("crates/portico-testkit/openapi/secured.yaml");
    let path = dir.join("portico.yaml");
    std::fs::write(
        &path,
        format!(
            "upstreams: {{ u: {{ targets: [\"http://127.0.0.1:9000\"] }} }}
consumers:
  - {{ name: ann, api_keys: [\"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"] }}
routes:
  - name: files
    match: {{ path: {{ template: \"/files/{{owner}}/{{*rest}}\" }}, methods: [GET] }}
    upstream: u
    policies:
      - {{ type: api_key }}
      - {{ type: rate_limit, key: consumer, limits: [{{ requests: 10, per: 1s }}] }}
  - name: static
    match: {{ path: {{ prefix: /static }} }}
    upstream: u
apis:
  - {{ name: orders, openapi: \"{}\", upstream: u }}
  - name: pets
    openapi: \"{}\"
    upstream: u
    security:
      petsAuth: {{ type: jwt, issuers: [{{ issuer: https://idp.test, algorithms: [HS256], keys: [{{ secret: \"0123456789abcdef0123456789abcdef\" }}] }}] }}
",
            orders.display(),
            pets.display()
        ),
    )
    .unwrap();
    let out = bin().arg("openapi").arg("-c").arg(&path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Plain routes, as far as their match says.
    let files = &doc["paths"]["/files/{owner}/{rest}"]["get"];
    assert_eq!(files["operationId"], "files");
    assert_eq!(files["parameters"][0]["name"], "owner");
    assert_eq!(
        files["security"][0]["gateway.apiKey.x-api-key"],
        serde_json::json!([])
    );
    assert_eq!(
        files["responses"]["429"]["$ref"],
        "#/components/responses/RateLimited"
    );
    let static_post = &doc["paths"]["/static"]["post"];
    assert_eq!(static_post["x-portico-match"], "prefix");
    assert_eq!(static_post["operationId"], "static.post");
    // Imported operations, their components under the API's name, the gateway's answers.
    let create = &doc["paths"]["/orders"]["post"];
    assert_eq!(create["operationId"], "createOrder");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/orders.Order"
    );
    assert_eq!(
        create["responses"]["400"]["$ref"],
        "#/components/responses/RequestInvalid"
    );
    assert!(doc["components"]["schemas"]["orders.Item"].is_object());
    // The document's default security, renamed with its schemes.
    assert_eq!(
        doc["paths"]["/v1/pets"]["get"]["security"][0]["pets.petsKey"],
        serde_json::json!([])
    );
    assert!(doc["components"]["securitySchemes"]["pets.petsKey"].is_object());
    assert_eq!(dangling_refs(&doc), Vec::<String>::new());

    openapi_validator_accepts(&dir.join("gateway.json"), &out.stdout);

    // A transcoded gRPC service: its `google.api.http` bindings and its calls by name.
    let pb = portico_testkit::write_bookstore_descriptor_set(&dir);
    std::fs::write(
        &path,
        format!(
            "upstreams: {{ g: {{ targets: [\"h2c://127.0.0.1:9000\"] }} }}
routes:
  - name: books
    match: {{ path: {{ prefix: / }} }}
    upstream: g
    grpc_transcode: {{ descriptor_set: \"{}\" }}
    policies: [{{ type: rate_limit, key: client_ip, limits: [{{ requests: 10, per: 1s }}] }}]
",
            pb.display()
        ),
    )
    .unwrap();
    let out = bin().arg("openapi").arg("-c").arg(&path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = &doc["paths"];
    let get_book = &paths["/v1/shelves/{shelf}/books/{book}"]["get"];
    assert!(
        get_book["operationId"]
            .as_str()
            .unwrap()
            .starts_with("books.bookstore.Bookstore.GetBook"),
        "{get_book}"
    );
    assert_eq!(get_book["parameters"][0]["in"], "path");
    assert_eq!(
        get_book["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/books.bookstore.Book"
    );
    // The gateway's own answers are added, as to any route.
    assert_eq!(
        get_book["responses"]["429"]["$ref"],
        "#/components/responses/RateLimited"
    );
    // A variable over several segments; a body that is one field; an answer that is one field.
    let by_name = &paths["/v1/{name}"]["get"]["parameters"][0];
    assert_eq!(by_name["name"], "name");
    assert!(
        by_name["description"]
            .as_str()
            .unwrap()
            .contains("shelves/*/books/*")
    );
    assert_eq!(
        paths["/v1/shelves"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/books.bookstore.Shelf"
    );
    assert_eq!(
        paths["/v1/shelves/{shelf}/books/{book}/title"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["type"],
        "string"
    );
    // Fields not in the path come from the query; streams are NDJSON.
    assert!(
        paths["/v1/books:search"]["get"]["parameters"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    assert!(paths["/v1/shelves/{shelf}/books"]["get"]["responses"]["200"]["content"]["application/x-ndjson"].is_object());
    assert!(
        paths["/v1/books:count"]["post"]["requestBody"]["content"]["application/x-ndjson"]
            .is_object()
    );
    // Calls by name, for methods with no binding too.
    assert!(paths["/bookstore.Bookstore/Unannotated"]["post"].is_object());
    let everything = &doc["components"]["schemas"]["books.bookstore.Everything"]["properties"];
    assert_eq!(everything["i64"]["type"], "string");
    assert_eq!(dangling_refs(&doc), Vec::<String>::new());
    openapi_validator_accepts(&dir.join("grpc.json"), &out.stdout);

    // The published documents (portico-testkit/openapi/real), each merged into a description.
    let real = workspace().join("crates/portico-testkit/openapi/real");
    for f in [
        "openapi-core-petstore-3.0.0.yaml",
        "scalar-galaxy-3.1.1.json",
        "readme-api-v1-legacy-3.0.2.json",
        "readme-api-v2-3.1.0.json",
        // Written across files: what they hold is carried under `x-portico-bundled`.
        "../split/openapi.yaml",
    ] {
        std::fs::write(
            &path,
            format!(
                "upstreams: {{ u: {{ targets: [\"http://127.0.0.1:9000\"] }} }}\napis:\n  - {{ name: real, openapi: \"{}\", upstream: u, enforce_security: false }}\n",
                real.join(f).display()
            ),
        )
        .unwrap();
        let out = bin().arg("openapi").arg("-c").arg(&path).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(dangling_refs(&doc), Vec::<String>::new(), "{f}");
        let name = f.replace("../", "").replace('/', "-");
        openapi_validator_accepts(&dir.join(format!("{name}.json")), &out.stdout);
    }
}

/// An OpenAPI validator's verdict: Python's openapi-spec-validator, which CI installs
/// (PORTICO_REQUIRE_OPENAPI_VALIDATOR=1); elsewhere, without it, the check is skipped.
fn openapi_validator_accepts(file: &Path, doc: &[u8]) {
    std::fs::write(file, doc).unwrap();
    let check = Command::new("python3")
        .arg("-c")
        .arg("import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')")
        .arg(file)
        .output();
    match check {
        Ok(o) if o.status.success() => {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "valid");
        }
        Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            panic!(
                "openapi-spec-validator refuses {}:\n{}",
                file.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        _ => {
            assert!(
                std::env::var("PORTICO_REQUIRE_OPENAPI_VALIDATOR").as_deref() != Ok("1"),
                "python3 with openapi-spec-validator is required here"
            );
            eprintln!("SKIPPED: the validator check (pip install openapi-spec-validator)");
        }
    }
}
