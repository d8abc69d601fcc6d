//! The etcd child process: the supervisor task owns it. It starts etcd when told to, restarts
//! it with exponential backoff when it dies unasked, and stops it with SIGTERM to its process
//! group, then SIGKILL after a timeout. etcd runs in its own process group with
//! PR_SET_PDEATHSIG, so it dies with the agent even if the agent is killed with SIGKILL, and it
//! never sees the agent's NOTIFY_SOCKET (etcd would send its own READY=1 there).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::argv::{render_args, EtcdLaunch};
use super::logs;
use super::version::{self, Verdict, Version};
use crate::liveness::Heartbeat;
use crate::metrics::Counters;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before dying gets the short backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// An exit this soon after the start counts as a failure to start.
const QUICK_EXIT: Duration = Duration::from_secs(30);

/// Requests to the supervisor.
#[derive(Debug)]
pub enum EtcdCommand {
    /// Keep etcd running with this launch (a different launch restarts it).
    Run(Box<EtcdLaunch>),
    /// Stop etcd and keep it stopped; the reply comes once it has exited.
    Stop(oneshot::Sender<()>),
    /// Stop the running etcd and start it again at once with the same launch, re-reading the
    /// binary's version (a rolling restart or upgrade). The reply comes once the new process
    /// runs: its version, or why it could not be restarted.
    Restart(oneshot::Sender<Result<Version, String>>),
}

/// The child process as others see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessState {
    /// Whether etcd is wanted at all.
    pub desired: bool,
    pub pid: Option<u32>,
    pub started_at: Option<SystemTime>,
    /// Unexpected exits so far.
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Consecutive exits within 30 s of a start (reset when etcd keeps running).
    pub quick_failures: u32,
    /// etcd's last error or panic message before it exited.
    pub last_error: Option<String>,
    /// The version of the running (or last started) etcd, from `etcd --version` at its start.
    pub version: Option<Version>,
}

/// Consecutive quick failures after an exit of a child that ran for `ran_for`: one more when it
/// died within [`QUICK_EXIT`] of its start (it is failing to start), none after a longer run.
pub fn quick_failures_after_exit(previous: u32, ran_for: Duration) -> u32 {
    if ran_for < QUICK_EXIT {
        previous.saturating_add(1)
    } else {
        0
    }
}

/// Delay before the next restart, given the previous delay and how long the child ran.
pub fn next_backoff(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        Some(prev) if ran_for < STABLE_AFTER => (prev * 2).min(MAX_BACKOFF),
        _ => FIRST_BACKOFF,
    }
}

/// How long `etcd --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// What `binary --version` reports.
pub async fn probe_version(binary: &std::path::Path) -> Result<Version, String> {
    let run = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(VERSION_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("cannot run {} --version: {e}", binary.display())),
        Err(_) => return Err(format!("{} --version did not answer", binary.display())),
    };
    crate::config::parse_etcd_version(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        format!(
            "{} --version printed no etcd version (is it an etcd server binary?)",
            binary.display()
        )
    })
}

/// The supervisor task.
pub struct Supervisor {
    pub binary: PathBuf,
    pub stop_timeout: Duration,
    pub node: String,
    pub counters: Arc<Counters>,
    pub heartbeat: Heartbeat,
    pub state: watch::Sender<ProcessState>,
    pub tracker: TaskTracker,
}

struct Running {
    child: Child,
    started: Instant,
    /// The stderr forwarder; it returns etcd's last error line when etcd exits.
    stderr: Option<tokio::task::JoinHandle<Option<String>>>,
}

impl Supervisor {
    /// The supervisor of this node's etcd (`etcd.binary`, `etcd.stop_timeout`); etcd's log
    /// forwarders run on `tracker`.
    pub fn new(
        settings: &crate::config::Settings,
        counters: Arc<Counters>,
        state: watch::Sender<ProcessState>,
        tracker: TaskTracker,
        heartbeat: Heartbeat,
    ) -> Self {
        Self {
            binary: settings.etcd.binary.clone(),
            stop_timeout: settings.etcd.stop_timeout,
            node: settings.name.clone(),
            counters,
            heartbeat,
            state,
            tracker,
        }
    }

    pub async fn run(self, mut commands: mpsc::Receiver<EtcdCommand>, cancel: CancellationToken) {
        let mut desired: Option<EtcdLaunch> = None;
        let mut running: Option<Running> = None;
        let mut restart_at: Option<Instant> = None;
        let mut backoff: Option<Duration> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let exited = async {
                match running.as_mut() {
                    Some(r) => r.child.wait().await,
                    None => std::future::pending().await,
                }
            };
            let restart = async {
                match restart_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                status = exited => {
                    let (ran_for, stderr) = running
                        .take()
                        .map(|r| (r.started.elapsed(), r.stderr))
                        .unwrap_or_default();
                    let last_error = match stderr {
                        Some(h) => tokio::time::timeout(Duration::from_secs(2), h)
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .flatten(),
                        None => None,
                    };
                    let status = match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    };
                    Counters::inc(&self.counters.etcd_unexpected_exits);
                    let delay = next_backoff(backoff, ran_for);
                    backoff = Some(delay);
                    restart_at = Some(Instant::now() + delay);
                    tracing::warn!(%status, ran_for = ?ran_for, restart_in = ?delay, last_error = ?last_error, "etcd exited unexpectedly");
                    self.state.send_modify(|s| {
                        s.pid = None;
                        s.started_at = None;
                        s.restarts += 1;
                        s.last_exit = Some(status);
                        s.quick_failures = quick_failures_after_exit(s.quick_failures, ran_for);
                        s.last_error = last_error;
                    });
                }
                _ = restart => {
                    restart_at = None;
                    if let Some(launch) = &desired {
                        running = self.spawn(launch).await;
                        if running.is_none() {
                            let delay = next_backoff(backoff, Duration::ZERO);
                            backoff = Some(delay);
                            restart_at = Some(Instant::now() + delay);
                        }
                    }
                }
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(EtcdCommand::Run(launch)) => {
                        let launch = *launch;
                        if desired.as_ref() != Some(&launch) {
                            if let Some(r) = running.take() {
                                self.stop(r).await;
                            }
                            desired = Some(launch);
                            backoff = None;
                            restart_at = Some(Instant::now());
                            self.state.send_modify(|s| {
                                s.desired = true;
                                s.quick_failures = 0;
                                s.last_error = None;
                            });
                        }
                    }
                    Some(EtcdCommand::Restart(reply)) => {
                        let Some(launch) = &desired else {
                            let _ = reply.send(Err("etcd is not meant to run on this host now".into()));
                            continue;
                        };
                        if let Some(r) = running.take() {
                            self.stop(r).await;
                        }
                        restart_at = None;
                        backoff = None;
                        running = self.spawn(launch).await;
                        let answer = match &running {
                            Some(_) => self.state.borrow().version.ok_or_else(|| "no version".to_owned()),
                            None => {
                                let delay = next_backoff(None, Duration::ZERO);
                                backoff = Some(delay);
                                restart_at = Some(Instant::now() + delay);
                                Err(self.state.borrow().last_exit.clone().unwrap_or_else(|| "etcd did not start".into()))
                            }
                        };
                        let _ = reply.send(answer);
                    }
                    Some(EtcdCommand::Stop(reply)) => {
                        desired = None;
                        restart_at = None;
                        if let Some(r) = running.take() {
                            self.stop(r).await;
                        }
                        self.state.send_modify(|s| s.desired = false);
                        let _ = reply.send(());
                    }
                },
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    // A child that has run past the quick-exit window clears the record of
                    // failed starts (it is not failing to start any more).
                    if running.as_ref().is_some_and(|r| r.started.elapsed() >= QUICK_EXIT) {
                        self.state.send_if_modified(|s| {
                            let stale = s.quick_failures != 0 || s.last_error.is_some();
                            s.quick_failures = 0;
                            s.last_error = None;
                            stale
                        });
                    }
                }
            }
        }
        if let Some(r) = running.take() {
            self.stop(r).await;
        }
    }

    /// The version of the binary as it is now, refused when quorate does not drive it.
    async fn binary_version(&self) -> Result<Version, String> {
        let found = probe_version(&self.binary).await?;
        match version::classify(found) {
            Verdict::Refused { problem, fix } => Err(format!("{problem}. Fix: {fix}")),
            Verdict::Warn(_, warning) => {
                tracing::warn!("{warning}");
                Ok(found)
            }
            Verdict::Supported(_) => Ok(found),
        }
    }

    async fn spawn(&self, launch: &EtcdLaunch) -> Option<Running> {
        let version = match self.binary_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(binary = %self.binary.display(), error = %e, "cannot start etcd");
                self.state
                    .send_modify(|s| s.last_exit = Some(format!("cannot start: {e}")));
                return None;
            }
        };
        let mut launch = launch.clone();
        launch.tuning.version = version;
        let mut cmd = Command::new(&self.binary);
        cmd.args(render_args(&launch))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if kept_from_etcd(&key.to_string_lossy()) {
                cmd.env_remove(&key);
            }
        }
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                // The agent may have died between fork and prctl.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("agent exited during etcd start"));
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                Counters::inc(&self.counters.etcd_starts);
                let pid = child.id();
                tracing::info!(pid, state = %launch.state, version = %version::show(version), "etcd started");
                if let Some(out) = child.stdout.take() {
                    self.tracker.spawn(logs::forward(out, self.node.clone()));
                }
                let stderr = child
                    .stderr
                    .take()
                    .map(|err| self.tracker.spawn(logs::forward(err, self.node.clone())));
                self.state.send_modify(|s| {
                    s.pid = pid;
                    s.started_at = Some(SystemTime::now());
                    s.version = Some(version);
                });
                Some(Running {
                    child,
                    started: Instant::now(),
                    stderr,
                })
            }
            Err(e) => {
                tracing::error!(binary = %self.binary.display(), error = %e, "cannot start etcd");
                self.state
                    .send_modify(|s| s.last_exit = Some(format!("cannot start: {e}")));
                None
            }
        }
    }

    /// SIGTERM to the process group, SIGKILL after the stop timeout.
    async fn stop(&self, mut r: Running) {
        if let Some(pid) = r.child.id() {
            let pgid = Pid::from_raw(pid as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            match tokio::time::timeout(self.stop_timeout, r.child.wait()).await {
                Ok(_) => tracing::info!(pid, "etcd stopped"),
                Err(_) => {
                    tracing::warn!(pid, timeout = ?self.stop_timeout, "etcd did not stop; killing it");
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = r.child.wait().await;
                }
            }
        }
        self.state.send_modify(|s| {
            s.pid = None;
            s.started_at = None;
        });
    }
}

/// Environment variables etcd never inherits: systemd's (etcd must not talk to systemd on the
/// agent's behalf), stray ETCD_* settings (they would silently override the rendered flags),
/// and the agent's own secrets: QUORATE_* (the join token among them) and the S3 credentials.
pub fn kept_from_etcd(key: &str) -> bool {
    key.starts_with("ETCD_")
        || key.starts_with("QUORATE_")
        || matches!(
            key,
            "NOTIFY_SOCKET"
                | "WATCHDOG_USEC"
                | "WATCHDOG_PID"
                | "LISTEN_FDS"
                | "LISTEN_PID"
                | "AWS_ACCESS_KEY_ID"
                | "AWS_SECRET_ACCESS_KEY"
                | "AWS_SESSION_TOKEN"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_secrets_and_systemds_variables_never_reach_etcd() {
        for key in [
            "QUORATE_TOKEN",
            "QUORATE_CONFIG",
            "ETCD_NAME",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(kept_from_etcd(key), "{key}");
        }
        for key in ["PATH", "HOME", "GOMAXPROCS", "TZ", "LANG"] {
            assert!(!kept_from_etcd(key), "{key}");
        }
    }

    #[test]
    fn quick_exits_count_up_and_a_long_run_resets() {
        let quick = QUICK_EXIT - Duration::from_millis(1);
        assert_eq!(quick_failures_after_exit(0, quick), 1);
        assert_eq!(quick_failures_after_exit(2, quick), 3);
        assert_eq!(quick_failures_after_exit(u32::MAX, quick), u32::MAX);
        assert_eq!(quick_failures_after_exit(5, QUICK_EXIT), 0);
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let quick = Duration::from_secs(1);
        assert_eq!(next_backoff(None, quick), FIRST_BACKOFF);
        assert_eq!(
            next_backoff(Some(Duration::from_secs(1)), quick),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(16)), quick),
            Duration::from_secs(30)
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(30)), quick),
            MAX_BACKOFF
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(30)), Duration::from_secs(120)),
            FIRST_BACKOFF
        );
    }
}
