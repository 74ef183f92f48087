//! The `portico` command: run, validate, print the schema, or run the built-in demo.

// Output goes through `outln!`/`errln!`, which do not panic on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// `println!` that survives a reader who left: `portico schema | head -1` closes the pipe
/// after one line, and Rust ignores SIGPIPE, so `println!` panicked on the write after that.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` that ignores a closed standard error (`portico validate … 2>&1 | head -1`).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}

mod demo;
mod store;

// mimalloc: measurably cheaper than the system allocator for the many small, short-lived
// allocations of request handling (see docs/benchmarks.md), through our own adapter
// (`alloc.rs` says why).
#[cfg(feature = "mimalloc")]
mod alloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "portico", version, about = "Portico, an API gateway.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum HashWhat {
    /// `sha256:<hex>` of an API key (for `api_keys`).
    ApiKey {
        /// The key; omit to read one line from standard input (keeps it out of shell history).
        key: Option<String>,
    },
    /// An argon2id hash of a password (for `basic_auth.password_hash`), read from standard input.
    Password,
}

#[derive(Subcommand)]
enum SoapWhat {
    /// List a WSDL's services, SOAP ports and operations with their message fields.
    Inspect {
        /// The WSDL file or `http(s)://` URL (imported and included files are read relative to
        /// it).
        wsdl: String,
    },
}

#[derive(Subcommand)]
enum AuditWhat {
    /// Check an audit trail: every record whole, unedited, in order and chained to the one
    /// before (and, with the key, its HMAC). Exit 0 when it verifies; 1, naming the first bad
    /// line, when it does not.
    Verify {
        /// The trail (`audit.path`); for a rotated trail, its files oldest first
        /// (`audit.jsonl.2 audit.jsonl.1 audit.jsonl`), each checked to continue the one before.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The file with the trail's HMAC key (`audit.hmac_key_file`).
        #[arg(long)]
        hmac_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file, or with the config kept in Redis.
    Run {
        /// The config file, or a config store:
        /// `redis://[:password@]host:port[/db]?key=portico:config` (several hosts with
        /// `&sentinel=NAME` or `&cluster=true`).
        #[arg(short, long, default_value = "portico.yaml")]
        config: PathBuf,
        /// With a config store: where the last config applied is copied, to start from when
        /// the store cannot be reached; `none` for no copy.
        #[arg(long, default_value = "portico-config.cache.yaml")]
        config_cache: PathBuf,
        /// With a config store: how often the store's version is checked, besides the
        /// announcement each push publishes.
        #[arg(long, default_value = "5s", value_parser = portico_config::duration::parse_duration)]
        config_poll: std::time::Duration,
        /// Runtime worker threads (default: one per core, or TOKIO_WORKER_THREADS).
        #[arg(long)]
        workers: Option<usize>,
        /// Don't reload when the config file changes (SIGHUP and POST /reload still work).
        #[arg(long)]
        no_watch: bool,
        /// Let the admin API's config writes (`PUT /config`, `POST /config/rollback`) replace
        /// the config file (atomically, then applied). Without it a node that runs from a
        /// file refuses them. A node that runs from a config store always writes there.
        #[arg(long)]
        admin_writes_file: bool,
    },
    /// Check a config file, or a config store's current version (`redis://…`); print every
    /// error as FILE:LINE:COL with a hint. Exit 0 if valid.
    Validate {
        #[arg(short, long, default_value = "portico.yaml")]
        config: PathBuf,
    },
    /// Print the OpenAPI 3.1 description of every route a config file exposes (the admin
    /// port's `GET /openapi.json`): imported operations, SOAP operations, plain routes, with
    /// the gateway's security, rate-limit headers and problem answers. Exit 1 if the config
    /// has errors.
    Openapi {
        #[arg(short, long, default_value = "portico.yaml")]
        config: PathBuf,
    },
    /// Validate a config file and store it in a config store as its next version, which every
    /// node following the store applies. Refused when another push got there first. Exit 0
    /// when pushed (or already current), 1 when the file has errors or another push won, 2
    /// when the store cannot be used.
    Push {
        #[arg(short, long, default_value = "portico.yaml")]
        config: PathBuf,
        /// The store: `redis://host:port[/db]?key=portico:config`.
        #[arg(long)]
        to: String,
        /// Who pushes (default: user@host).
        #[arg(long)]
        author: Option<String>,
        /// Push only if the store's current version is this one (what a CI job read before).
        #[arg(long)]
        expect_version: Option<u64>,
        /// How many versions the store keeps for rollback (0: every one).
        #[arg(long, default_value_t = 20)]
        keep: u32,
    },
    /// Store an earlier version's config again, as the next version (default: the one before
    /// the current). Exit codes as for push.
    Rollback {
        /// The store: `redis://host:port[/db]?key=portico:config`.
        #[arg(long)]
        to: String,
        /// The version to restore.
        #[arg(long)]
        version: Option<u64>,
        #[arg(long)]
        author: Option<String>,
        #[arg(long, default_value_t = 20)]
        keep: u32,
    },
    /// The versions a config store keeps, newest first; `*` marks the current one.
    History {
        /// The store: `redis://host:port[/db]?key=portico:config`.
        #[arg(long)]
        from: String,
        #[arg(long)]
        json: bool,
    },
    /// Explain what the gateway would do with a request under a config: the canonical path,
    /// every route and why it does or does not take it, the policies, the rewrite, the
    /// upstream and its targets. Nothing is called.
    Explain {
        #[arg(short, long, default_value = "portico.yaml")]
        config: PathBuf,
        /// The request's method.
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The listener the request arrives on (default: the first).
        #[arg(long)]
        listener: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// `http://host/path?query`, or `/path?query` with a `Host` header.
        url: String,
    },
    /// Print the JSON Schema of the config file (for editor completion and checks).
    Schema,
    /// Print the stored form of a credential, for the `consumers` section.
    Hash {
        #[command(subcommand)]
        what: HashWhat,
    },
    /// Work with SOAP services.
    Soap {
        #[command(subcommand)]
        what: SoapWhat,
    },
    /// What differs between a config file and the config a running node serves (`--admin`)
    /// or a config store holds (`--from`): routes, upstreams, consumers and global policies
    /// added, removed or changed, other sections changed; secrets masked. Exit 0 when they
    /// are the same config, 1 when they differ, 2 when either cannot be read.
    Diff {
        #[arg(short, long, default_value = "portico.yaml")]
        config: PathBuf,
        /// The node's admin address, `http://host:port`.
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        admin: Option<String>,
        /// A config store, `redis://host:port[/db]?key=portico:config`: its current version.
        #[arg(long)]
        from: Option<String>,
    },
    /// The nodes of the fleet, as a node sees them (`GET /cluster`): their config hashes and
    /// which run another config than the newest. Exit 0 when none does, 1 when some do, 2 when
    /// the node cannot be asked.
    Cluster {
        /// A node's admin address, `http://host:port`.
        #[arg(long)]
        admin: String,
    },
    /// Work with the audit trail.
    Audit {
        #[command(subcommand)]
        what: AuditWhat,
    },
    /// Run the built-in demo: the gateway with in-process demo upstreams.
    Demo {
        /// Port of the demo gateway.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the demo's admin listener.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// No demo traffic (by default a few requests a second keep the console's charts
        /// moving).
        #[arg(long)]
        no_traffic: bool,
    },
}

/// Turns transparent huge pages off for this process unless `MIMALLOC_ALLOW_THP` says
/// otherwise. mimalloc asks the kernel for 2 MiB pages for its arenas, and a gateway's heap
/// is many small per-connection allocations spread over them: measured at 1,000 connections,
/// huge pages raised peak RSS from 95 to 115 MiB and idle RSS from 13 to 19 MiB for no
/// measurable gain in rate (docs/benchmarks.md). The kernel decides per page fault, so
/// calling this first thing in `main` covers everything the gateway allocates.
fn no_huge_pages() {
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; on
        // kernels without it the call fails and nothing changes.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// Listening sockets a supervisor passed (systemd socket activation): `LISTEN_FDS` of them,
/// from file descriptor 3 on, when `LISTEN_PID` names this process (or is unset, for
/// supervisors that cannot know the pid before starting it). A listener or the admin port whose
/// address is one of them accepts on it instead of binding (docs/operations.md, "Upgrades").
fn inherited_listeners() -> Vec<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let Some(n) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return Vec::new();
    };
    if let Ok(pid) = std::env::var("LISTEN_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for fd in 3..3 + n.clamp(0, 1024) {
        // SAFETY: the supervisor hands these descriptors to this process, which has opened
        // nothing yet (only the logger, writing to stderr), so each is owned here and by
        // nothing else. One that is not a TCP socket is handed back unclosed below.
        let s = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        match s.local_addr() {
            Ok(_) => out.push(s),
            Err(e) => {
                errln!(
                    "portico: inherited file descriptor {fd} is not a TCP socket ({e}); ignored"
                );
                let _ = s.into_raw_fd();
            }
        }
    }
    out
}

/// `GET` of an admin endpoint, its JSON answer. Plain HTTP (the admin port is usually on a
/// private address); 10 s at most.
fn admin_get(admin: &str, path: &str) -> Result<serde_json::Value, String> {
    use http_body_util::BodyExt;
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{admin}`: give the admin address as http://host:port"
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let resp = client.get(uri).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| "no answer within 10s".to_string())??;
        let (status, body) = got;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: {status}, not JSON ({e})"))?;
        if !status.is_success() {
            return Err(format!(
                "{url}: {status}: {}",
                v["detail"].as_str().unwrap_or("")
            ));
        }
        Ok(v)
    })
}

/// The store URL `config` names, if it names one rather than a file.
fn store_url(config: &Path) -> Option<&str> {
    config
        .to_str()
        .filter(|s| portico_proxy::runtime::config_store::StoreUrl::is_store(s))
}

fn diff(path: &Path, admin: Option<&str>, from: Option<&str>) -> ExitCode {
    let file = match portico_config::load_file(path) {
        Ok(c) => c,
        Err(d) => {
            errln!("{d}");
            return ExitCode::from(2);
        }
    };
    // The other side: what it is called, its hash, its redacted form.
    let other = match (admin, from) {
        (Some(admin), _) => admin_get(admin, "/config").map(|running| {
            (
                format!("{admin} runs"),
                format!(
                    "{} (generation {})",
                    running["hash"].as_str().unwrap_or(""),
                    running["generation"]
                ),
                running["hash"].as_str().unwrap_or("").to_owned(),
                running["config"].clone(),
            )
        }),
        (None, Some(from)) => store::current_for_diff(from)
            .map(|(name, hash, config)| (format!("{name} holds"), hash.clone(), hash, config)),
        (None, None) => Err("give --admin URL or --from redis://…".to_string()),
    };
    let (who, shown, other_hash, other_config) = match other {
        Ok(o) => o,
        Err(e) => {
            errln!("{e}");
            return ExitCode::from(2);
        }
    };
    if other_hash == file.hash {
        outln!("same config ({other_hash})");
        return ExitCode::SUCCESS;
    }
    let changes = portico_config::diff::diff(&other_config, &file.redacted());
    outln!("{who} {shown}; {} is {}", path.display(), file.hash);
    if changes.is_empty() {
        outln!(
            "no difference in what they configure: they differ in masked secrets, comments or formatting"
        );
    }
    for c in &changes {
        outln!("  {c}");
    }
    ExitCode::FAILURE
}

fn cluster(admin: &str) -> ExitCode {
    let v = match admin_get(admin, "/cluster") {
        Ok(v) => v,
        Err(e) => {
            errln!("{e}");
            return ExitCode::from(2);
        }
    };
    let this = v["node"].as_str().unwrap_or("");
    outln!(
        "{:<32} {:<18} {:>4}  {:<24}  {}",
        "node",
        "config",
        "gen",
        "loaded",
        ""
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let id = n["id"].as_str().unwrap_or("");
        let mut flags = Vec::new();
        if id == this {
            flags.push("this node".to_string());
        }
        if n["drift"] == true {
            flags.push("DRIFT".to_string());
        }
        if let Some(e) = n["last_reload_error"].as_str() {
            flags.push(format!(
                "last reload failed: {}",
                e.lines().next().unwrap_or("")
            ));
        }
        outln!(
            "{:<32} {:<18} {:>4}  {:<24}  {}",
            id,
            n["config_hash"].as_str().unwrap_or(""),
            n["generation"],
            n["loaded_at"].as_str().unwrap_or(""),
            flags.join("; ")
        );
    }
    let drifted = v["drifted"].as_u64().unwrap_or(0);
    outln!(
        "newest config {}; {drifted} of {} nodes drifted",
        v["newest_hash"].as_str().unwrap_or("-"),
        v["nodes"].as_array().map_or(0, Vec::len)
    );
    if drifted == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn audit_verify(files: &[PathBuf], key_file: Option<&std::path::Path>) -> ExitCode {
    let key = match key_file.map(std::fs::read) {
        None => None,
        Some(Ok(k)) => Some(k.trim_ascii().to_vec()),
        Some(Err(e)) => {
            errln!(
                "{}: {e}",
                key_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    match portico_proxy::observe::audit::verify_files(files, key.as_deref()) {
        Ok(v) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            outln!(
                "{}: {} records verify (seq up to {}, last hash {}){}",
                names.join(" + "),
                v.records,
                v.last_seq,
                v.last_hash,
                if v.first_prev.bytes().all(|b| b == b'0') {
                    String::new()
                } else {
                    format!("; it continues a trail that ended with {}", v.first_prev)
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    portico_proxy::install_url_fetcher();
    match cli.command {
        Some(Command::Openapi { config }) => match portico_config::load_file(&config) {
            Ok(cfg) => {
                let doc = portico_config::describe::openapi(&cfg);
                outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(d) => {
                errln!("{d}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Validate { config }) => match store_url(&config) {
            Some(url) => store::validate(url),
            None => validate(&config),
        },
        Some(Command::Push {
            config,
            to,
            author,
            expect_version,
            keep,
        }) => store::push(
            &config,
            store::Push {
                to: &to,
                author,
                expect_version,
                keep,
            },
        ),
        Some(Command::Rollback {
            to,
            version,
            author,
            keep,
        }) => store::rollback(&to, version, author, keep),
        Some(Command::History { from, json }) => store::history(&from, json),
        Some(Command::Explain {
            config,
            method,
            headers,
            listener,
            json,
            url,
        }) => explain(&config, &method, &headers, listener.as_deref(), json, &url),
        Some(Command::Hash { what }) => hash(what),
        Some(Command::Soap {
            what: SoapWhat::Inspect { wsdl },
        }) => soap_inspect(&wsdl),
        Some(Command::Diff {
            config,
            admin,
            from,
        }) => diff(&config, admin.as_deref(), from.as_deref()),
        Some(Command::Cluster { admin }) => cluster(&admin),
        Some(Command::Audit {
            what:
                AuditWhat::Verify {
                    files,
                    hmac_key_file,
                },
        }) => audit_verify(&files, hmac_key_file.as_deref()),
        Some(Command::Schema) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&portico_config::json_schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Some(Command::Run {
            config,
            config_cache,
            config_poll,
            workers,
            no_watch,
            admin_writes_file,
        }) => match store_url(&config) {
            Some(url) => run(
                workers,
                Mode::Store {
                    url: url.to_owned(),
                    cache: (config_cache.as_os_str() != "none").then_some(config_cache),
                    poll: config_poll,
                },
            ),
            None => run(workers, Mode::File(config, !no_watch, admin_writes_file)),
        },
        Some(Command::Demo {
            port,
            admin_port,
            no_traffic,
        }) => run(None, Mode::Demo(port, admin_port, !no_traffic)),
        None => {
            let default = Path::new("portico.yaml");
            if default.exists() {
                run(None, Mode::File(default.to_path_buf(), true, false))
            } else {
                run(None, Mode::Demo(8080, 9901, true))
            }
        }
    }
}

fn soap_inspect(location: &str) -> ExitCode {
    let mut fetch = |loc: &str| {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            portico_proxy::fetch_blocking(loc).map_err(|e| format!("cannot fetch it: {e}"))
        } else {
            std::fs::read(loc).map_err(|e| format!("cannot read it: {e}"))
        }
    };
    match portico_translate::wsdl::load(location, &mut fetch, Default::default()) {
        Ok(w) => {
            write_out(format_args!("{}", w.describe()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    path: &Path,
    method: &str,
    headers: &[String],
    listener: Option<&str>,
    json: bool,
    url: &str,
) -> ExitCode {
    let cfg = match portico_config::load_file(path) {
        Ok(c) => c,
        Err(d) => {
            errln!("{d}");
            errln!(
                "portico: fix the config first (`portico validate -c {}`)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let bad = |what: &str| {
        errln!("portico: {what}");
        ExitCode::from(2)
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return bad(&format!("`{method}` is not an HTTP method"));
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return bad(&format!(
            "`{url}` is not a URL (`http://host/path` or `/path`)"
        ));
    };
    let mut map = http::HeaderMap::new();
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return bad(&format!("`{h}` is not a header: write `Name: value`"));
        };
        match (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.trim()),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => return bad(&format!("`{h}` is not a valid header")),
        }
    }
    if let Some(l) = listener
        && !cfg.listeners.iter().any(|x| &*x.name == l)
    {
        return bad(&format!("the config has no listener `{l}`"));
    }
    let v = portico_config::explain::explain(
        &cfg,
        &portico_config::explain::Request {
            listener,
            method,
            uri,
            headers: map,
        },
    );
    if json {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        write_out(format_args!("{}", portico_config::explain::text(&v)));
    }
    ExitCode::SUCCESS
}

fn validate(path: &Path) -> ExitCode {
    match portico_config::load_file(path) {
        Ok(cfg) => {
            outln!(
                "{}: valid ({} listeners, {} upstreams, {} routes)",
                path.display(),
                cfg.listeners.len(),
                cfg.upstreams.len(),
                cfg.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(d) => {
            errln!("{d}");
            errln!(
                "{} error{} found",
                d.len(),
                if d.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes to standard output. A closed pipe means the reader has all it wants: the output
/// stops there and the command ends as it would have (its exit status still says what it
/// found). Any other failure (a full disk) is reported and ends the process with 1.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            errln!("portico: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// Writes to standard error; there is nowhere left to report a failure to.
fn write_err(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(args);
}

enum Mode {
    /// A config file: its path, whether changes to it are followed, whether the admin API
    /// may write it.
    File(PathBuf, bool, bool),
    /// A config store: its URL, the cached copy's path, the poll interval.
    Store {
        url: String,
        cache: Option<PathBuf>,
        poll: std::time::Duration,
    },
    /// The demo's port, admin port, and whether it makes traffic of its own.
    Demo(u16, u16, bool),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal; in a pipe, a file or a log collector
        // they are noise around every field.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(workers: Option<usize>, mode: Mode) -> ExitCode {
    init_logging();
    portico_proxy::adopt_listeners(inherited_listeners());
    // One worker: a current-thread runtime, with no work-stealing machinery to pay for.
    let env_workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let mut rt = if workers.or(env_workers) == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    #[cfg(feature = "mimalloc")]
    {
        alloc::start_ticker();
        rt.on_thread_park(alloc::on_park);
    }
    if let Some(n) = workers.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("portico: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        // Before the gateway serves: a SIGTERM that comes once the listeners answer (a
        // supervisor stopping a node it just started) is then a drain, never the default
        // action's abrupt exit.
        let signals = Signals::install();
        let (gw, watch) = match mode {
            Mode::File(path, watch, writes) => {
                let cfg = match portico_config::load_file(&path) {
                    Ok(c) => c,
                    Err(d) => {
                        errln!("{d}");
                        errln!("portico: not started: fix the config and try again (`portico validate -c {}`)", path.display());
                        return ExitCode::FAILURE;
                    }
                };
                match portico_proxy::Gateway::start(cfg, Some(path)).await {
                    Ok(gw) => {
                        if writes {
                            gw.allow_admin_file_writes();
                        }
                        (gw, watch)
                    }
                    Err(e) => {
                        errln!("portico: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            Mode::Store { url, cache, poll } => match start_from_store(&url, cache, poll).await {
                Some(gw) => (gw, false),
                None => return ExitCode::FAILURE,
            },
            Mode::Demo(port, admin_port, traffic) => match demo::start(port, admin_port, traffic).await {
                Ok(gw) => (gw, false),
                Err(e) => {
                    errln!("portico: demo not started: {e}");
                    return ExitCode::FAILURE;
                }
            },
        };
        for addr in portico_proxy::unused_inherited_listeners() {
            tracing::warn!(address = %addr, "an inherited socket is not an address of the config's listeners or admin port; it is not served");
        }
        if watch
            && let Err(e) = gw.watch_file() {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
            }
        signals.wait(&gw).await;
        let left = gw.shutdown().await;
        if left > 0 {
            tracing::warn!(connections = left, "drain timeout reached; closing the remaining connections");
        } else {
            tracing::info!("drained; bye");
        }
        ExitCode::SUCCESS
    })
}

/// Starts from a config store's current version (or the cached copy when the store cannot
/// be read), then follows the store. Errors are printed; `None` means not started.
async fn start_from_store(
    url: &str,
    cache: Option<PathBuf>,
    poll: std::time::Duration,
) -> Option<portico_proxy::Gateway> {
    let url = match portico_proxy::runtime::config_store::StoreUrl::parse(url) {
        Ok(u) => u,
        Err(e) => {
            errln!("portico: --config: {e}");
            return None;
        }
    };
    let (cfg, source, from) =
        match portico_proxy::StoreSource::load(url, cache, poll, PathBuf::from(".")).await {
            Ok(l) => l,
            Err(e) => {
                errln!("portico: not started: {e}");
                return None;
            }
        };
    if let portico_proxy::StartedFrom::Cache(why) = &from {
        tracing::error!(source = %cfg.source, reason = %why, "starting from the cached copy of the config; the store is checked every poll");
    }
    match portico_proxy::Gateway::start(cfg, None).await {
        Ok(gw) => {
            gw.follow_store(source);
            Some(gw)
        }
        Err(e) => {
            errln!("portico: {e}");
            None
        }
    }
}

/// SIGHUP (reload), SIGTERM and SIGINT (drain), caught from the moment they are installed:
/// one that arrives before [`Signals::wait`] is kept for it.
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(hup), Ok(term), Ok(int)) => Signals(Some((hup, term, int))),
            _ => {
                tracing::error!("cannot install signal handlers");
                Signals(None)
            }
        }
    }

    async fn wait(self, gw: &portico_proxy::Gateway) {
        let Some((mut hup, mut term, mut int)) = self.0 else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = gw.reload_file_from("signal").await; }
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); return; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); return; }
            }
        }
    }
}

fn read_secret_line() -> String {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        errln!("portico: cannot read standard input");
        std::process::exit(1);
    }
    line.trim_end_matches(['\r', '\n']).to_owned()
}

fn hash(what: HashWhat) -> std::process::ExitCode {
    let out = match what {
        HashWhat::ApiKey { key } => {
            let key = key.unwrap_or_else(read_secret_line);
            if key.is_empty() {
                errln!("portico: the key is empty");
                return std::process::ExitCode::FAILURE;
            }
            portico_auth::apikey::digest_string(&key)
        }
        HashWhat::Password => {
            let pw = read_secret_line();
            if pw.is_empty() {
                errln!("portico: the password is empty");
                return std::process::ExitCode::FAILURE;
            }
            let mut salt = [0u8; 16];
            if rustls::crypto::aws_lc_rs::default_provider()
                .secure_random
                .fill(&mut salt)
                .is_err()
            {
                errln!("portico: no secure random numbers available");
                return std::process::ExitCode::FAILURE;
            }
            portico_auth::basic::hash_password(&pw, &salt, false)
        }
    };
    outln!("{out}");
    std::process::ExitCode::SUCCESS
}
