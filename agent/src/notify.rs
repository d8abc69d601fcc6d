//! systemd notification (Type=notify): STATUS= follows the controller's status line, READY=1
//! is sent once the local member is first healthy in a cluster with quorum, WATCHDOG=1 at half
//! the watchdog interval while every loop is alive, EXTEND_TIMEOUT_USEC while not yet ready (so
//! "waiting for peers" does not hit the start timeout), STOPPING=1 at shutdown. Without
//! NOTIFY_SOCKET every call is a no-op, so the agent behaves the same outside systemd.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::liveness::Liveness;
use crate::node::NodeStatus;
use crate::restore::transfer::Transfer;
use crate::rolling::RollingStatus;
use crate::snapshot::take::Progress;

/// How often, while not ready, the start timeout is extended, and by how much.
const EXTEND_EVERY: Duration = Duration::from_secs(20);
const EXTEND_BY: Duration = Duration::from_secs(60);

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The notifier task.
pub struct Notifier {
    pub status: watch::Receiver<NodeStatus>,
    pub liveness: Arc<Liveness>,
    /// Bytes done of a snapshot being taken, added to STATUS= while it runs.
    pub snapshot: Option<watch::Receiver<Option<Progress>>>,
    /// True when the agent stops to re-execute its new binary.
    pub restart: Option<watch::Receiver<bool>>,
    /// Rolling upgrades and restarts, added to STATUS= while one is under way.
    pub rolling: Option<watch::Receiver<RollingStatus>>,
    /// A restore's snapshot transfer, added to STATUS= while it moves.
    pub transfer: Option<watch::Receiver<Option<Transfer>>>,
}

impl Notifier {
    pub fn new(status: watch::Receiver<NodeStatus>, liveness: Arc<Liveness>) -> Self {
        Self {
            status,
            liveness,
            snapshot: None,
            restart: None,
            rolling: None,
            transfer: None,
        }
    }

    /// At shutdown, a restart on the new binary says so instead of STOPPING=1 (the same
    /// process goes on: systemd must not take it for a stopping service).
    pub fn with_restart(mut self, restart: watch::Receiver<bool>) -> Self {
        self.restart = Some(restart);
        self
    }

    /// Adds the rolling task's line ("upgrading etcd 3.4.23 -> 3.5.30: 1/3 members done") to
    /// STATUS= while an upgrade or a rolling restart is under way.
    pub fn with_rolling(mut self, rolling: watch::Receiver<RollingStatus>) -> Self {
        self.rolling = Some(rolling);
        self
    }

    /// Adds "downloading s3://...: N MiB of M MiB" (or the fetch from the deciding member) to
    /// STATUS= while a restore's snapshot moves.
    pub fn with_restore_transfer(mut self, transfer: watch::Receiver<Option<Transfer>>) -> Self {
        self.transfer = Some(transfer);
        self
    }

    /// Adds "taking snapshot: N MiB" to STATUS= while a snapshot is taken.
    pub fn with_snapshot_progress(mut self, progress: watch::Receiver<Option<Progress>>) -> Self {
        self.snapshot = Some(progress);
        self
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let watchdog = sd_notify::watchdog_enabled();
        let mut ping =
            tokio::time::interval(watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(3600)));
        let mut extend = tokio::time::interval(EXTEND_EVERY);
        let mut ready_sent = false;
        let mut last_status = String::new();
        loop {
            {
                let status = self.status.borrow_and_update();
                let progress = self.snapshot.as_mut().and_then(|p| *p.borrow_and_update());
                let rolling = self
                    .rolling
                    .as_mut()
                    .map(|r| r.borrow_and_update().clone())
                    .filter(|r| r.busy)
                    .map(|r| r.message);
                let transfer = self
                    .transfer
                    .as_mut()
                    .and_then(|t| t.borrow_and_update().as_ref().map(Transfer::line));
                let busy: Vec<String> = rolling.into_iter().chain(transfer).collect();
                let line = status_line(&status.message, progress, &busy);
                if line != last_status {
                    last_status = line;
                    send(&[NotifyState::Status(&last_status)]);
                }
                if status.ready && !ready_sent {
                    ready_sent = true;
                    send(&[NotifyState::Ready]);
                    tracing::info!(status = %status.message, "ready");
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                changed = self.status.changed() => if changed.is_err() { break },
                Some(()) = changed(&mut self.snapshot) => {}
                Some(()) = changed(&mut self.rolling) => {}
                Some(()) = changed(&mut self.transfer) => {}
                _ = ping.tick(), if watchdog.is_some() => {
                    let stale = self.liveness.stale(watchdog.unwrap_or_default());
                    if stale.is_empty() {
                        send(&[NotifyState::Watchdog]);
                    } else {
                        tracing::error!(loops = ?stale, "not feeding the watchdog: loops are stuck");
                    }
                }
                _ = extend.tick(), if !ready_sent => {
                    send(&[NotifyState::ExtendTimeoutUsec(EXTEND_BY.as_micros() as u32)]);
                }
            }
        }
        if self.restart.as_ref().is_some_and(|r| *r.borrow()) {
            send(&[NotifyState::Status(
                "restarting on the installed quorate binary",
            )]);
        } else {
            send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        }
    }
}

/// STATUS=: the controller's line, a snapshot's progress while one is taken, and the rolling
/// task's line while an upgrade or a rolling restart is under way.
fn status_line(message: &str, snapshot: Option<Progress>, busy: &[String]) -> String {
    let mut line = message.to_owned();
    for b in busy {
        line.push_str("; ");
        line.push_str(b);
    }
    if let Some(p) = snapshot {
        line.push_str(&format!("; taking snapshot: {} MiB", p.done >> 20));
    }
    line
}

/// Resolves when the watched value changes; never when there is none to follow.
async fn changed<T>(watched: &mut Option<watch::Receiver<T>>) -> Option<()> {
    match watched {
        Some(w) => w.changed().await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_how_far_a_snapshot_is() {
        assert_eq!(status_line("ready", None, &[]), "ready");
        let p = Progress {
            total: Some(200 << 20),
            done: (12 << 20) + 5,
        };
        assert_eq!(
            status_line("ready", Some(p), &[]),
            "ready; taking snapshot: 12 MiB"
        );
        assert_eq!(
            status_line(
                "healthy",
                Some(p),
                &["upgrading etcd 3.4.23 -> 3.5.30: 1/3 members done".into()]
            ),
            "healthy; upgrading etcd 3.4.23 -> 3.5.30: 1/3 members done; taking snapshot: 12 MiB"
        );
        assert_eq!(
            status_line(
                "restoring",
                None,
                &["fetching the snapshot from n1: 1.0 MiB of 2.0 MiB".into()]
            ),
            "restoring; fetching the snapshot from n1: 1.0 MiB of 2.0 MiB"
        );
    }
}
