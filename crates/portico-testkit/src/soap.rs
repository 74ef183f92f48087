//! The SOAP service of the tests: `soap/server.py`, a spyne service run by Debian's
//! `python3-spyne` (see soap/README.md). It exits when its stdin closes, so dropping
//! [`SoapServer`] never leaves it behind.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct SoapServer {
    pub port: u16,
    child: Child,
}

impl SoapServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of the SOAP fixtures (server, WSDLs, split schemas).
pub fn soap_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("soap")
}

/// Starts the spyne service. `None` when Python with spyne is not installed; then the test is
/// skipped, unless `PORTICO_REQUIRE_SOAP=1` (set by CI) makes that a failure.
pub fn soap_server() -> Option<SoapServer> {
    let python = std::env::var("PORTICO_SOAP_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let have_spyne = Command::new(&python)
        .args(["-c", "import spyne"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_spyne {
        if std::env::var("PORTICO_REQUIRE_SOAP").as_deref() == Ok("1") {
            panic!(
                "{python} with spyne is required (PORTICO_REQUIRE_SOAP=1): apt-get install python3-spyne"
            );
        }
        eprintln!(
            "SKIPPED: {python} with spyne (python3-spyne) is not available; set PORTICO_REQUIRE_SOAP=1 to fail instead"
        );
        return None;
    }
    let mut child = Command::new(&python)
        .arg(soap_dir().join("server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the SOAP server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("read the SOAP server's port");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the SOAP server said {line:?}, not `PORT n`"));
    Some(SoapServer { port, child })
}
