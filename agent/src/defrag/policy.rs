//! What the defragmentation task does next: a pure function of the cluster's facts (members
//! and their health, each member's database size, the NOSPACE alarm, the job lock), the time
//! and what the task did before, so every guarantee (one member at a time, leader last, every
//! voter healthy, no endless retries on a database that defragmenting cannot shrink) is decided
//! here and tested without etcd.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::config::format_size;
use crate::jobs::policy::{leader_last, may_run, ClusterFacts, Decision as JobDecision};
use crate::jobs::{Job, WaitReason};

/// A member above this share of the quota is defragmented (percent).
pub const NEAR_QUOTA_PERCENT: u64 = 80;
/// After a NOSPACE recovery, a member still above this share of the quota holds live data
/// that no compaction or defragmentation can shrink: the alarm stays (percent). The same as
/// [`NEAR_QUOTA_PERCENT`]: a file that is still above the automatic-defrag threshold right
/// after compaction and defragmentation is full of live data. Not higher: bbolt never packs
/// its pages full, so etcd raises the alarm when the live data is only 85 to 90 % of the quota
/// (measured on etcd 3.4: 28.4 to 30.0 MB of live data in a 32 MiB quota), and disarming such a
/// database would only buy a short while before the next alarm.
pub const LIVE_DATA_FULL_PERCENT: u64 = NEAR_QUOTA_PERCENT;
/// A member is not defragmented automatically again within this time of its last defrag (a
/// member near the quota with live data would otherwise be defragmented on every turn).
pub const COOLDOWN: Duration = Duration::from_secs(10 * 60);
/// How long a NOSPACE recovery that found the quota filled by live data waits before it tries
/// again (the operator may have deleted data or raised the quota meanwhile).
pub const RECOVERY_RETRY: Duration = Duration::from_secs(60);

/// A member's backend file: its size and how much of it holds data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbSize {
    /// The file's size (etcd's `dbSize`), what counts against the quota.
    pub total: u64,
    /// The part in use (etcd's `dbSizeInUse`); the rest is free pages a defrag gives back.
    pub in_use: u64,
}

/// Why a member needs defragmenting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Less than half of the file is in use, and at least the configured minimum would be
    /// reclaimed.
    Fragmented {
        /// Bytes a defrag would give back.
        reclaim: u64,
    },
    /// The file is above [`NEAR_QUOTA_PERCENT`] of the quota.
    NearQuota {
        /// Percent of the quota the file takes.
        percent: u64,
    },
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Fragmented { reclaim } => {
                write!(f, "fragmented, {} to reclaim", format_size(*reclaim))
            }
            Need::NearQuota { percent } => write!(f, "at {percent} % of the quota"),
        }
    }
}

/// Percent of `quota` that `bytes` takes (0 for a zero quota).
pub fn percent_of(bytes: u64, quota: u64) -> u64 {
    if quota == 0 {
        return 0;
    }
    ((bytes as u128 * 100) / quota as u128) as u64
}

/// Whether a member of `size` needs defragmenting, with `quota` and the configured
/// `min_reclaim`.
pub fn need(size: DbSize, quota: u64, min_reclaim: u64) -> Option<Need> {
    let free = size.total.saturating_sub(size.in_use);
    let percent = percent_of(size.total, quota);
    if quota > 0 && percent > NEAR_QUOTA_PERCENT && free > 0 {
        return Some(Need::NearQuota { percent });
    }
    if size.in_use < size.total / 2 && free >= min_reclaim {
        return Some(Need::Fragmented { reclaim: free });
    }
    None
}

/// What the task knows when it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Members with their health, this member, the leader, the `member-down` lock.
    pub cluster: ClusterFacts,
    /// Each reachable member's database size, by member id.
    pub sizes: BTreeMap<u64, DbSize>,
    /// etcd has raised the NOSPACE alarm.
    pub nospace: bool,
    /// The backend quota in bytes.
    pub quota: u64,
    /// `maintenance.defrag_min_reclaim` in bytes.
    pub min_reclaim: u64,
}

impl Facts {
    fn is_leader(&self) -> bool {
        self.cluster.leader.is_some() && self.cluster.leader == Some(self.cluster.this_member)
    }
}

/// What the task did before (it owns this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// When each member was last defragmented by this agent.
    pub defragged_at: BTreeMap<u64, SystemTime>,
    /// When the last NOSPACE recovery ended with the quota filled by live data.
    pub live_data_full_at: Option<SystemTime>,
}

/// The answer of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Idle,
    /// Another agent coordinates: the one whose member leads.
    NotCoordinator,
    /// Something needs doing, but not now.
    Wait(Why),
    /// Take the `member-down` lock (then decide again with the lock held).
    Acquire,
    /// Defragment these members, one at a time, in this order (the leader last).
    Defrag(Vec<u64>),
    /// NOSPACE: compact to the current revision, defragment every member (leader last), then
    /// disarm if that made room.
    Recover(Vec<u64>),
}

/// Why the task waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The job policy says no (a voter down, the lock held elsewhere, ...).
    Job(WaitReason),
    /// The last recovery found the quota filled by live data; it retries at `retry_at`.
    LiveDataFull {
        /// When the recovery is tried again.
        retry_at: SystemTime,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Job(reason) => reason.fmt(f),
            Why::LiveDataFull { .. } => f.write_str(
                "the quota is filled by live data: compaction and defragmentation cannot make \
                 room",
            ),
        }
    }
}

/// The members a recovery or an on-demand defrag goes through: every member, leader last.
fn everyone(facts: &ClusterFacts) -> Vec<u64> {
    leader_last(facts)
}

/// What to do now. Only the leader's agent coordinates (the NOSPACE recovery cannot take the
/// lock, and one coordinator makes "leader last" a plain order). Under NOSPACE it recovers
/// every member, unless a recovery just found the quota filled by live data; otherwise it
/// defragments, leader last, the members that [`need`] it and were not defragmented within
/// [`COOLDOWN`]. Both need what a member-down job needs: a leader, every voter healthy, and
/// (for the automatic defrag) the `member-down` lock, which a recovery only requires free.
pub fn decide(facts: &Facts, now: SystemTime, history: &History) -> Decision {
    if !facts.is_leader() {
        return Decision::NotCoordinator;
    }
    if facts.nospace {
        if let Some(at) = history.live_data_full_at {
            let retry_at = at + RECOVERY_RETRY;
            if now < retry_at {
                return Decision::Wait(Why::LiveDataFull { retry_at });
            }
        }
        return match may_run(Job::Defrag, &facts.cluster, now) {
            JobDecision::Wait(reason) => Decision::Wait(Why::Job(reason)),
            JobDecision::Acquire { .. } | JobDecision::Run { .. } => {
                Decision::Recover(everyone(&facts.cluster))
            }
        };
    }
    let due: Vec<u64> = leader_last(&facts.cluster)
        .into_iter()
        .filter(|id| {
            let recent = history
                .defragged_at
                .get(id)
                .is_some_and(|at| now < *at + COOLDOWN);
            !recent
                && facts
                    .sizes
                    .get(id)
                    .and_then(|s| need(*s, facts.quota, facts.min_reclaim))
                    .is_some()
        })
        .collect();
    if due.is_empty() {
        return Decision::Idle;
    }
    match may_run(Job::Defrag, &facts.cluster, now) {
        JobDecision::Wait(reason) => Decision::Wait(Why::Job(reason)),
        JobDecision::Acquire { .. } => Decision::Acquire,
        JobDecision::Run { .. } => Decision::Defrag(due),
    }
}

/// An on-demand `quorate defrag`: every member, leader last, if the job policy allows it (with
/// the lock as `cluster.lock` says); `force` skips the health rule but never the lock.
pub fn on_demand(
    cluster: &ClusterFacts,
    force: bool,
    now: SystemTime,
) -> Result<Vec<u64>, WaitReason> {
    match may_run(Job::Defrag, cluster, now) {
        JobDecision::Acquire { .. } | JobDecision::Run { .. } => Ok(everyone(cluster)),
        JobDecision::Wait(reason @ (WaitReason::LockHeld(_) | WaitReason::LockHeldHere(_))) => {
            Err(reason)
        }
        JobDecision::Wait(WaitReason::NotAMember) => Err(WaitReason::NotAMember),
        JobDecision::Wait(_) if force => Ok(everyone(cluster)),
        JobDecision::Wait(reason) => Err(reason),
    }
}

/// The end of a NOSPACE recovery, from every member's size after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// There is room again: disarm the alarm.
    Disarm,
    /// The largest member is still above [`LIVE_DATA_FULL_PERCENT`] of the quota: live data
    /// fills it, the alarm stays.
    LiveDataFull {
        /// The largest member's file after the recovery.
        largest: u64,
    },
    /// No member's size could be read: try again.
    Unknown,
}

/// Whether a recovery that left the members at `after` may disarm.
pub fn recovery_outcome(after: &[DbSize], quota: u64) -> RecoveryOutcome {
    let Some(largest) = after.iter().map(|s| s.total).max() else {
        return RecoveryOutcome::Unknown;
    };
    if percent_of(largest, quota) > LIVE_DATA_FULL_PERCENT || (quota > 0 && largest >= quota) {
        RecoveryOutcome::LiveDataFull { largest }
    } else {
        RecoveryOutcome::Disarm
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
