//! Real Prometheus for the tests: promtool for the shipped alert rules, and a Prometheus server
//! on a free loopback port with a temporary config and storage directory, queried through its
//! HTTP API. The server is stopped when its guard drops, also when a test fails. Both binaries
//! come from Debian's `prometheus` package, which the suite installs (scripts/deps.sh,
//! `ensure_prometheus`): a missing binary is a failure that says so, never a skip.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::agent::http_get;
use crate::wait_for;

/// The shipped alert rules (packaging/prometheus/quorate-alerts.yml).
pub fn alert_rules() -> PathBuf {
    packaging_dir().join("quorate-alerts.yml")
}

/// promtool unit tests of [`alert_rules`].
pub fn alert_rule_tests() -> PathBuf {
    packaging_dir().join("quorate-alerts.test.yml")
}

fn packaging_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

fn installed(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} not found: install Debian's Prometheus with `apt-get install -y prometheus` \
         (scripts/test.sh does, through ensure_prometheus in scripts/deps.sh)",
        p.display()
    );
    p
}

/// Runs `promtool ARGS` in `dir`.
pub fn promtool(dir: &Path, args: &[&str]) -> Output {
    Command::new(installed("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool")
}

/// A running Prometheus server; stopped on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping every `interval`, one scrape job per (job name, targets),
    /// with `rules` loaded, and waits until it is ready.
    pub fn start(interval: Duration, jobs: &[(&str, Vec<SocketAddr>)], rules: &Path) -> Self {
        let bin = installed("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("quorate-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, render_config(interval, jobs, rules)).expect("write config");
        let addr = free_loopback_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Self { child, addr, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}); log:\n{}", p.log());
            }
            match http_get(p.addr, "/-/ready") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        p
    }

    /// Prometheus's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query (`/api/v1/query`).
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let (code, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("query {promql:?} answered {code}: {body}"));
        }
        v["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no result vector: {body}"))
    }

    /// The names of the alerting rules Prometheus loaded (`/api/v1/rules`).
    pub fn alert_names(&self) -> Result<Vec<String>, String> {
        let (_, body) = http_get(self.addr, "/api/v1/rules?type=alert")?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        Ok(v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("prometheus log at the failure:\n{}", self.log());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn render_config(interval: Duration, jobs: &[(&str, Vec<SocketAddr>)], rules: &Path) -> String {
    let secs = interval.as_secs().max(1);
    let mut out = format!(
        "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  \
         evaluation_interval: {secs}s\nrule_files:\n  - {}\nscrape_configs:\n",
        rules.display()
    );
    for (job, targets) in jobs {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        out.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ));
    }
    out
}

fn free_loopback_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
