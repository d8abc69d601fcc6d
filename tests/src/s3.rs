//! A real S3-compatible server for the tests: moto's server mode (from PyPI, installed by the
//! suite into a virtualenv at [`MOTO_SERVER`], see `ensure_moto` in scripts/deps.sh), on a
//! free loopback port, with a bucket created. It keeps objects in memory; the server is
//! stopped when its guard drops, also when a test fails. A missing server is a failure that
//! says so ([`crate::require_failed`]), never a skip.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::wait_for;

/// Where the suite installs moto's server.
pub const MOTO_SERVER: &str = "/var/cache/quorate-test/moto/bin/moto_server";
/// Overrides [`MOTO_SERVER`].
pub const MOTO_SERVER_ENV: &str = "TEST_MOTO_SERVER";
/// Credentials the server accepts (moto checks none).
pub const ACCESS_KEY_ID: &str = "quorate-test";
pub const SECRET_ACCESS_KEY: &str = "quorate-test-secret";

/// The server binary, if installed.
pub fn moto_server() -> Option<PathBuf> {
    let p = std::env::var_os(MOTO_SERVER_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MOTO_SERVER));
    p.exists().then_some(p)
}

/// A running server with one bucket; stopped on drop.
pub struct S3Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub bucket: String,
    dir: TempDir,
}

impl S3Server {
    /// Starts the server on a free loopback port and creates `bucket`; `test` names the test
    /// for the failure when the server is not installed.
    pub fn start(test: &str, bucket: &str) -> Self {
        let Some(_) = moto_server() else {
            crate::require_failed(
                test,
                &format!(
                    "moto's S3 server is not installed at {MOTO_SERVER} (or ${MOTO_SERVER_ENV}); \
                     scripts/deps.sh ensure_moto installs it"
                ),
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("quorate-s3-")
            .tempdir()
            .expect("temp dir");
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
        let addr = l.local_addr().expect("local addr");
        drop(l);
        let mut s = Self {
            child: None,
            addr,
            bucket: bucket.to_owned(),
            dir,
        };
        s.restart();
        s
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Stops the server (its objects are gone: moto keeps them in memory).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the bucket created again (empty).
    pub fn restart(&mut self) {
        self.stop();
        let bin = moto_server().expect("moto_server");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("moto.log"))
            .expect("log file");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        let bucket = self.bucket.clone();
        wait_for(
            "the S3 server to create the bucket",
            Duration::from_secs(60),
            || {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("moto_server exited ({status}); log:\n{}", self.log());
                }
                match request(self.addr, "PUT", &format!("/{bucket}")) {
                    Ok(200) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One plain HTTP/1.1 request without a body; returns the status code.
fn request(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {out:?}"))
}
