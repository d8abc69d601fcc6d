//! Rolling etcd restarts: one member at a time cluster-wide, each only while every voter is
//! healthy, each waiting until the restarted member is healthy and caught up before the next
//! one goes. Two things start one:
//!
//! - an upgrade: the binary at `etcd.binary` reports another version than the running etcd
//!   (a package upgrade, a switched symlink), noticed within one turn ([`EVERY`]), without
//!   restarting the agent. [`policy::binary_change`] refuses a downgrade of the minor
//!   version, a skipped minor version and 3.6 before every member runs 3.5.26;
//! - `quorate etcd restart --rolling`, for a flag change that needs one: a request key in etcd
//!   that every member's agent answers in turn.
//!
//! - `quorate restart` (the package's postinst after an upgrade of quorate): the agent
//!   restarts itself on the new binary (re-executing it in place, so systemd sees the same
//!   process), which takes its etcd down and up again. Run on every host at the same moment,
//!   the lock makes the hosts go one at a time.
//!
//! The member-down job lock (shared with defragmentation) makes it one member at a time; the
//! supervisor re-reads the binary's version at every start and renders that version's flags.

mod ops;
pub mod policy;
mod task;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use task::RollingTask;

/// How often the task looks.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long a restarted member may take to be healthy and caught up.
pub const RESTART_DEADLINE: Duration = Duration::from_secs(180);

/// Requests from the control socket.
#[derive(Debug)]
pub enum RollingCommand {
    /// Ask for a rolling restart of every member; the reply is the request's id.
    Request {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// How far request `id` is.
    Progress {
        id: u64,
        reply: oneshot::Sender<Result<Progress, String>>,
    },
    /// `quorate restart`: restart this agent on the quorate binary now installed, once it
    /// holds the member-down lock (at once when its etcd is not running anyway).
    AgentRestart {
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// Which members did a rolling-restart request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub done: Vec<String>,
    pub pending: Vec<String>,
    /// This agent's own status line.
    pub message: String,
}

/// What the task last did, for /status and `quorate status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollingStatus {
    pub message: String,
    /// The version of the running etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// The version of the binary at `etcd.binary`, as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_version: Option<String>,
    /// Why the binary is not used, while it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// An upgrade or a rolling restart is under way (its message goes into STATUS=).
    #[serde(default)]
    pub busy: bool,
}

impl RollingStatus {
    /// The "etcd version" section of `quorate status`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "\netcd version and restarts:");
        let _ = writeln!(out, "  {}", self.message);
        if let Some(v) = &self.running_version {
            let binary = self.binary_version.as_deref().unwrap_or("unknown");
            let _ = writeln!(out, "  running etcd {v}; etcd.binary is etcd {binary}");
        }
        if let Some(last) = &self.last {
            let _ = writeln!(out, "  last: {last}");
        }
        if self.restarts + self.failures > 0 {
            let _ = writeln!(
                out,
                "  restarts: {} done, {} failed",
                self.restarts, self.failures
            );
        }
    }
}
