//! `client.on_change`: run once per burst of file changes. A change marks the hook pending;
//! it runs when no further change came for [`QUIET`] (a renewal rewrites the certificate, and a
//! membership change rewrites three endpoint files: one run for each burst). The command runs
//! with `sh -c` (without the agent's NOTIFY_SOCKET), its output goes to the log, and its
//! failures are counted and shown. READY=1 always precedes the first run (the files are
//! written, READY goes out, and the hook waits [`QUIET`]): a consumer ordered
//! `After=quorate-client.service` that `on_change` restarts would otherwise deadlock on the
//! client unit's start job.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long the files must stay unchanged before the hook runs.
pub const QUIET: Duration = Duration::from_secs(2);
/// How long the command may run.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// What the hook did, for /status and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// The command, if there is one.
    pub command: Option<String>,
    pub runs: u64,
    pub failures: u64,
    /// Why the last run failed, while it is the last run.
    pub last_error: Option<String>,
}

/// When the hook is due (pure).
#[derive(Debug, Default)]
pub struct Debounce {
    last_change: Option<Instant>,
}

impl Debounce {
    /// Files changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
    }

    /// True (once per burst) when the last change is [`QUIET`] old.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.last_change {
            Some(at) if now.saturating_duration_since(at) >= QUIET => {
                self.last_change = None;
                true
            }
            _ => false,
        }
    }
}

/// Runs `command` with `sh -c`: Ok, or why it failed.
pub async fn run(command: &str) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        // Only the agent talks to systemd about its unit.
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(TIMEOUT, child).await {
        Err(_) => {
            return Err(format!(
                "still running after {}s: killed",
                TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot run sh: {e}")),
        Ok(Ok(o)) => o,
    };
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        for line in String::from_utf8_lossy(bytes).lines() {
            tracing::info!(stream, "on_change: {line}");
        }
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(match output.status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "killed by a signal".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_per_burst() {
        let mut d = Debounce::default();
        let t0 = Instant::now();
        assert!(!d.due(t0 + QUIET * 10), "nothing changed");
        d.changed(t0);
        d.changed(t0 + Duration::from_millis(500));
        assert!(!d.due(t0 + QUIET), "the burst is still going");
        assert!(d.due(t0 + Duration::from_millis(500) + QUIET));
        assert!(!d.due(t0 + QUIET * 5), "once per burst");
    }

    #[tokio::test]
    async fn the_command_runs_and_its_failure_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        run(&format!("echo hello; touch {}", marker.display()))
            .await
            .unwrap();
        assert!(marker.exists());
        assert_eq!(
            run("echo failing >&2; exit 3").await,
            Err("exited with status 3".into())
        );
    }
}
