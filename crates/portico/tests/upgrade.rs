//! Upgrading the binary under load without losing a request: the listening sockets belong to
//! a supervisor (here the test, as systemd does with a socket unit) and are handed to each
//! `portico` it starts (`LISTEN_FDS`). The new process accepts on the same sockets while the
//! old one drains and exits.

// The processes are children of the test; the load runs on threads of its own.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts `portico run` with `sockets` as its inherited listeners (descriptors 3, 4, …).
fn start(config: &Path, sockets: &[RawFd], log: &Path) -> Child {
    let fds = sockets.to_vec();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portico"));
    cmd.args(["run", "--no-watch", "-c"])
        .arg(config)
        .env("LISTEN_FDS", fds.len().to_string())
        .env_remove("LISTEN_PID")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) are made, on
    // descriptors the parent keeps open for the child's whole start.
    unsafe {
        cmd.pre_exec(move || {
            // Copied above 10 first, so that placing one at 3 cannot overwrite another.
            let mut high = Vec::with_capacity(fds.len());
            for &fd in &fds {
                let h = libc::fcntl(fd, libc::F_DUPFD, 10);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, &h) in high.iter().enumerate() {
                // `dup2` leaves the copy open across `exec`.
                if libc::dup2(h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn config(
    dir: &Path,
    name: &str,
    proxy: SocketAddr,
    admin: SocketAddr,
    body: &str,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "listeners: [{{ address: \"{proxy}\" }}]\nadmin: {{ address: \"{admin}\" }}\nserver: {{ drain_timeout: 10s }}\nroutes:\n  - respond: {{ body: {body} }}\n"
        ),
    )
    .unwrap();
    path
}

/// One answer read from a keep-alive connection: its status, body, and whether the server
/// closes the connection after it.
fn read_answer(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before an answer",
        ));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap_or((l, ""));
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    errors: Mutex<Vec<String>>,
    bodies: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A client on a keep-alive connection that sends the next request as soon as the answer is
/// in, and opens a new connection when the server said it closes this one. It never resends:
/// any request without an answer is an error.
fn client(addr: SocketAddr, stop: Arc<AtomicBool>, seen: Arc<Seen>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let r = match conn.as_mut() {
            Some(r) => r,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    conn.insert(BufReader::new(s))
                }
                Err(e) => {
                    seen.errors.lock().unwrap().push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = r
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: upgrade.test\r\n\r\n");
        match sent.and_then(|()| read_answer(r)) {
            Ok((status, body, close)) => {
                if status == 200 {
                    seen.ok.fetch_add(1, Ordering::Relaxed);
                    *seen.bodies.lock().unwrap().entry(body).or_default() += 1;
                } else {
                    seen.errors.lock().unwrap().push(format!("status {status}"));
                }
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                seen.errors.lock().unwrap().push(format!("request: {e}"));
                conn = None;
            }
        }
    }
}

/// One request on a fresh connection: the body answered, if any.
fn probe(addr: SocketAddr) -> Option<String> {
    let c = TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut r = BufReader::new(c);
    r.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    read_answer(&mut r).ok().filter(|a| a.0 == 200).map(|a| a.1)
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_new_binary_takes_over_the_sockets_under_load_and_no_request_fails() {
    let dir = std::env::temp_dir().join(format!("portico-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The supervisor's sockets: they stay open in the test across both processes.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
    let fds = [proxy.as_raw_fd(), admin.as_raw_fd()];
    let old_cfg = config(&dir, "old.yaml", proxy_addr, admin_addr, "old");
    let new_cfg = config(&dir, "new.yaml", proxy_addr, admin_addr, "new");

    let mut old = start(&old_cfg, &fds, &dir.join("old.log"));
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    wait_until("the old process never answered", || {
        probe(proxy_addr).as_deref() == Some("old")
    });

    let load: Vec<_> = (0..16)
        .map(|_| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || client(proxy_addr, stop, seen))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // The new binary starts on the same sockets; once it answers, the old one is told to go.
    let mut new = start(&new_cfg, &fds, &dir.join("new.log"));
    // Fresh connections go to whichever process accepts first: some reach the new one.
    wait_until("the new process never answered", || {
        probe(proxy_addr).as_deref() == Some("new")
    });
    let ok = Command::new("kill")
        .args(["-TERM", &old.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let exited = {
        let start = Instant::now();
        loop {
            if let Some(s) = old.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the old process did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(exited.success(), "{exited:?}");
    // Load on the new process alone for a while.
    let served_before = seen.bodies.lock().unwrap().get("new").copied().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &new.id().to_string()])
        .status();
    let _ = new.wait();

    let errors = seen.errors.lock().unwrap().clone();
    let bodies = seen.bodies.lock().unwrap().clone();
    let old_log = std::fs::read_to_string(dir.join("old.log")).unwrap_or_default();
    assert!(
        errors.is_empty(),
        "{} requests failed across the upgrade (of {} answered): {:?}\nold process:\n{old_log}",
        errors.len(),
        seen.ok.load(Ordering::Relaxed),
        &errors[..errors.len().min(10)]
    );
    assert!(bodies.get("old").copied().unwrap_or(0) > 100, "{bodies:?}");
    assert!(
        bodies.get("new").copied().unwrap_or(0) > served_before,
        "the new process served after the old one left: {bodies:?}"
    );
    assert!(
        old_log.contains("listening on an inherited socket"),
        "{old_log}"
    );
    let new_log = std::fs::read_to_string(dir.join("new.log")).unwrap_or_default();
    assert!(
        new_log.contains("listening on an inherited socket"),
        "{new_log}"
    );
}

/// Passed descriptors that are not the config's sockets are said, not served: one that is
/// not a TCP socket is left alone, a socket no address of the config names is logged.
#[test]
fn inherited_descriptors_the_config_does_not_name_are_reported() {
    let dir = std::env::temp_dir().join(format!("portico-upgrade-odd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::create(dir.join("not-a-socket")).unwrap();
    let cfg = config(
        &dir,
        "c.yaml",
        proxy.local_addr().unwrap(),
        admin.local_addr().unwrap(),
        "ok",
    );
    let log = dir.join("run.log");
    let fds = [
        proxy.as_raw_fd(),
        admin.as_raw_fd(),
        stray.as_raw_fd(),
        file.as_raw_fd(),
    ];
    let mut child = start(&cfg, &fds, &log);
    let addr = proxy.local_addr().unwrap();
    wait_until("it never answered", || probe(addr).as_deref() == Some("ok"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("inherited file descriptor 6 is not a TCP socket"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "an inherited socket is not an address of the config's listeners or admin port; it is not served address={}",
            stray.local_addr().unwrap()
        )),
        "{text}"
    );
}
