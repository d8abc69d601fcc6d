//! One agent under test: its directory (config, state, log), its process, and small clients
//! for its health endpoint and its CLI.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorate::config::ConfigBuilder;
use quorate::report::StatusReport;

/// Health endpoint port (as configured by [`ConfigBuilder::new`]).
pub const HEALTH_PORT: u16 = 7947;

/// An agent process and its files.
pub struct Agent {
    pub name: String,
    pub addr: IpAddr,
    pub dir: PathBuf,
    /// The network namespace the agent runs in, if any.
    pub netns: Option<String>,
    /// Extra environment for the agent process (e.g. NOTIFY_SOCKET, to play systemd).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Agent {
    /// Creates the agent's directory and writes its config.
    pub fn new(root: &Path, name: &str, addr: IpAddr, config: &ConfigBuilder) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create agent dir");
        let agent = Self {
            name: name.to_owned(),
            addr,
            dir,
            netns: None,
            env: Vec::new(),
            child: None,
        };
        agent.write_config(config);
        agent
    }

    /// (Re)writes the agent's config file.
    pub fn write_config(&self, config: &ConfigBuilder) {
        std::fs::write(self.config_path(), config.to_toml()).expect("write config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("quorate.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Starts the agent (appending to its log).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        let mut cmd = self.command();
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("QUORATE_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .arg("--config")
            .arg(self.config_path())
            .arg("run")
            .env("RUST_LOG", "info,quorate=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start quorate");
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Started, and the process has exited since.
    pub fn exited(&self) -> bool {
        self.pid().is_some_and(|p| !process_alive(p))
    }

    /// Sends SIGTERM without waiting (see [`Agent::wait_stopped`]).
    pub fn signal_stop(&self) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
    }

    /// Waits for the agent to exit after SIGTERM; SIGKILL after `timeout`. Returns whether it
    /// exited by itself.
    pub fn wait_stopped(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stops the agent gracefully (it stops its etcd); panics if it does not stop in time.
    pub fn stop(&mut self) {
        self.signal_stop();
        assert!(
            self.wait_stopped(Duration::from_secs(30)),
            "{} did not stop within 30 s after SIGTERM; log:\n{}",
            self.name,
            self.log_tail(40)
        );
    }

    /// SIGKILL, as a crash or power loss would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn health_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, HEALTH_PORT)
    }

    /// GET on the health endpoint: (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.health_addr(), path)
    }

    /// The value of the agent's metric `name` (an unlabelled line of /metrics).
    pub fn metric(&self, name: &str) -> Result<f64, String> {
        metric_at(self.health_addr(), name)
    }

    /// The agent's status report.
    pub fn status(&self) -> Result<StatusReport, String> {
        let (code, body) = self.get("/status")?;
        if code != 200 {
            return Err(format!("/status answered {code}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("bad /status: {e}"))
    }

    /// /readyz: Ok(body) when 200, Err(reason) otherwise.
    pub fn ready(&self) -> Result<String, String> {
        match self.get("/readyz") {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("{}: {code} {}", self.name, body.trim())),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The `quorate` binary, inside the agent's network namespace if it has one. `ip netns
    /// exec` execs in place, so the child's pid is the agent's.
    pub fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(crate::quorate_bin());
                c
            }
            None => Command::new(crate::quorate_bin()),
        }
    }

    /// Runs a `quorate` subcommand with this agent's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env_remove("QUORATE_CONFIG")
            .output()
            .expect("run quorate")
    }

    /// The last `lines` lines of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal_stop();
            self.wait_stopped(Duration::from_secs(20));
        }
        // Safety net: no etcd of this agent may survive the test.
        kill_processes_mentioning(&self.dir);
    }
}

/// SIGKILLs every process whose command line mentions a file under the directory `path`
/// (`.../n3/`, so agent n30's processes are not n3's).
pub fn kill_processes_mentioning(path: &Path) {
    let needle = format!("{}/", path.to_string_lossy().trim_end_matches('/'));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The value of metric `name` (an unlabelled line) on the /metrics endpoint at `addr`, plain
/// HTTP (an agent's health endpoint, or etcd's metrics listener).
pub fn metric_at(addr: SocketAddr, name: &str) -> Result<f64, String> {
    let (code, body) = http_get(addr, "/metrics")?;
    if code != 200 {
        return Err(format!("/metrics answered {code}"));
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .ok_or_else(|| format!("no {name} in /metrics"))?
        .trim()
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

/// A minimal HTTP/1.0 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read {addr}{path}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("malformed response from {addr}{path}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code from {addr}{path}"))?;
    Ok((code, body.to_owned()))
}
