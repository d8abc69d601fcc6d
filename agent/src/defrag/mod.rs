//! Defragmentation and space-alarm (NOSPACE) recovery of the etcd members, with no human step.
//!
//! etcd never gives the free pages of its backend file back by itself: compaction frees them
//! inside the file, only a defragmentation (which blocks the member while it rewrites the
//! file) shrinks it. Left alone, the file grows until it reaches the quota, etcd raises the
//! NOSPACE alarm and refuses every write.
//!
//! # Who does what
//! One coordinator: the agent whose member is the leader (like the maintenance task). Every
//! [`EVERY`] it reads every member's size (status on that member's own client URL), the alarm
//! list and the `member-down` job lock, and asks the pure [`policy::decide`]:
//! - a member that is fragmented (less than half of the file in use, and at least
//!   `maintenance.defrag_min_reclaim` to gain) or above 80 % of the quota is defragmented,
//!   under the `member-down` lock (so no etcd restart or other member-down job overlaps), only
//!   while every voter is healthy, one member at a time, the leader (its own member) last;
//! - under NOSPACE the lock cannot be taken (etcd refuses lease grants and puts), so the
//!   coordinator only requires it free: it compacts to the current revision, defragments every
//!   member one at a time (leader last, checking before each member that it still leads, so two
//!   coordinators never overlap), and disarms the alarm, unless the largest member is still
//!   above 80 % of the quota (bbolt never packs pages full, so the alarm comes with 85 to
//!   90 % of live data): then live data fills it, the alarm stays (etcd's protection) and
//!   the status says how to fix it; the recovery is retried every minute.
//!
//! `quorate defrag [--force]` reaches this task over the control socket on any agent: that
//! agent takes the lock and defragments every member, leader last, refusing while a voter is
//! down unless forced.
//!
//! Each defragmentation is logged when it starts and when it ends, with the member's name,
//! the sizes and unix-millisecond timestamps, and counted and published in [`DefragStatus`]
//! for `quorate status`.

mod ops;
pub mod policy;
mod status;
mod task;

use std::time::Duration;

use tokio::sync::oneshot;

pub use status::{human, DefragRun, DefragStatus, Trigger};
pub use task::DefragTask;

/// How often the task looks at the members.
pub const EVERY: Duration = Duration::from_secs(5);

/// Requests for the defragmentation task (from the control socket).
#[derive(Debug)]
pub enum DefragCommand {
    /// `quorate defrag`: every member, one at a time, leader last.
    Run {
        /// Even while a voter is down.
        force: bool,
        /// One line per member, or why it was refused.
        reply: oneshot::Sender<Result<String, String>>,
    },
}
