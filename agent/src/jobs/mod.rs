//! Cluster jobs: the primitive that defragmentation, scheduled snapshots and rolling etcd
//! restarts share. A job is one of [`Job`]; whether this member may run it now is a pure
//! decision ([`policy::may_run`]); running it cluster-wide one at a time is the job lock
//! ([`lock::JobLocks`]).
//!
//! # The lock
//! A job runs only while its agent holds the etcd key `/quorate/jobs/<lock name>`
//! ([`Job::lock_key`]), put by a "create if absent" transaction under a lease of [`LOCK_TTL`]
//! (15 s). Its value is a small JSON [`LockHolder`]: node, job, started-at (unix seconds), so
//! an agent that finds the lock taken can say who holds it and for what.
//!
//! Everything that takes a member down (defragmentation, an etcd restart for an upgrade or a
//! flag change) shares the one lock name `member-down`, so that no two such actions ever
//! overlap anywhere in the cluster; a snapshot has its own lock, `snapshot`.
//!
//! # Renewal and loss
//! A keep-alive task renews the lease every [`RENEW_EVERY`] (TTL/3, 5 s). Each renewal tries
//! every endpoint it was given in turn, starting with the last one that answered, each with
//! [`REQUEST_TIMEOUT`]: the holder's own etcd may be the member the job is restarting, so the
//! lease must be renewable through the other members. A failed round is retried every
//! [`RETRY_EVERY`]. If no renewal succeeds before the lease could have expired (the send time
//! of the last successful renewal plus the TTL etcd answered, less [`LOSS_MARGIN`]), the lock
//! is **lost**: [`lock::JobLock::lost`] resolves and the job must abort at its next safe point.
//! The margin is there so that the holder learns of the loss before anyone else can take the
//! lock. Release revokes the lease (best effort) and stops the keep-alive; dropping a
//! [`lock::JobLock`] does the same in the background. A holder that dies without releasing
//! frees the lock when its lease expires, at most [`LOCK_TTL`] after its last renewal.
//!
//! # Slots
//! A job that runs once per schedule slot (a scheduled snapshot) records the slot it did in
//! `/quorate/jobs/<job name>/last-slot` ([`Job::slot_key`]), written only by the lock holder in
//! a transaction guarded by the lock key still carrying its lease, and the policy refuses a
//! slot already done.
//!
//! # NOSPACE
//! Under a NOSPACE alarm etcd refuses lease grants and puts, so this lock can be neither taken
//! nor recorded. Recovery from NOSPACE (compact, defragment every member, disarm) must not
//! depend on it: the space-alarm work has to coordinate by other means (e.g. the leader's
//! agent drives it).

mod endpoints;
mod keepalive;
pub mod lock;
pub mod policy;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use lock::{
    AcquireError, Acquired, EndpointErrors, JobLock, JobLocks, LockStatus, ReadError,
    RecordSlotError,
};
pub use policy::{may_run, ClusterFacts, Decision, LockFact, MemberFact, Schedule, WaitReason};

/// Prefix of every job key in etcd.
pub const JOBS_PREFIX: &str = "/quorate/jobs/";
/// Lease TTL of a job lock: how long a lock outlives a holder that stopped renewing it.
pub const LOCK_TTL: Duration = Duration::from_secs(15);
/// How often the keep-alive task renews the lease (TTL/3).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a failed renewal round (every endpoint failed) is retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// The holder is told the lock is lost this long before its lease could expire.
pub const LOSS_MARGIN: Duration = Duration::from_secs(2);
/// Timeout of one request to one endpoint (connect included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A cluster job. Each names the lock it runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Job {
    /// Defragmentation of this member's backend (blocks the member while it runs).
    Defrag,
    /// A restart of this member's etcd, for an upgrade or a flag change.
    EtcdRestart,
    /// A snapshot of the keyspace, once per schedule slot.
    Snapshot,
}

/// Lock shared by every job that takes a member down.
pub const MEMBER_DOWN_LOCK: &str = "member-down";
/// Lock of snapshots.
pub const SNAPSHOT_LOCK: &str = "snapshot";

impl Job {
    /// Every job.
    pub const ALL: [Job; 3] = [Job::Defrag, Job::EtcdRestart, Job::Snapshot];

    /// The job's own name (in lock values, slot keys and logs).
    pub fn name(&self) -> &'static str {
        match self {
            Job::Defrag => "defrag",
            Job::EtcdRestart => "etcd-restart",
            Job::Snapshot => "snapshot",
        }
    }

    /// The exclusion class: jobs with the same lock name never overlap cluster-wide.
    pub fn lock_name(&self) -> &'static str {
        if self.takes_member_down() {
            MEMBER_DOWN_LOCK
        } else {
            SNAPSHOT_LOCK
        }
    }

    /// Whether the job makes its member unavailable while it runs.
    pub fn takes_member_down(&self) -> bool {
        match self {
            Job::Defrag | Job::EtcdRestart => true,
            Job::Snapshot => false,
        }
    }

    /// Whether the job runs once per schedule slot (and records the slot it did).
    pub fn once_per_slot(&self) -> bool {
        matches!(self, Job::Snapshot)
    }

    /// The etcd key of the job's lock, `/quorate/jobs/<lock name>`.
    pub fn lock_key(&self) -> String {
        format!("{JOBS_PREFIX}{}", self.lock_name())
    }

    /// The etcd key of the last slot the job did, `/quorate/jobs/<job name>/last-slot`.
    pub fn slot_key(&self) -> String {
        format!("{JOBS_PREFIX}{}/last-slot", self.name())
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A job name that is not one of [`Job::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown job {0:?}: expected defrag, etcd-restart or snapshot")]
pub struct ParseJobError(pub String);

impl FromStr for Job {
    type Err = ParseJobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Job::ALL
            .into_iter()
            .find(|j| j.name() == s)
            .ok_or_else(|| ParseJobError(s.to_owned()))
    }
}

/// Who holds a lock: the value of the lock key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holder's node name.
    pub node: String,
    /// The job it runs (None if the value was written by something else).
    #[serde(default)]
    pub job: Option<Job>,
    /// When it took the lock, unix seconds.
    #[serde(default)]
    pub started_at: Option<u64>,
}

impl LockHolder {
    /// Reads a lock value; a value that is not ours is kept as the node, so it can be shown.
    pub fn from_value(value: &[u8]) -> Self {
        serde_json::from_slice(value).unwrap_or_else(|_| Self {
            node: String::from_utf8_lossy(value).chars().take(100).collect(),
            job: None,
            started_at: None,
        })
    }

    /// The lock value.
    pub fn to_value(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.job {
            Some(job) => write!(f, "{} ({job})", self.node),
            None => f.write_str(&self.node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_down_jobs_share_one_lock_and_snapshot_has_its_own() {
        assert_eq!(Job::Defrag.lock_key(), "/quorate/jobs/member-down");
        assert_eq!(Job::EtcdRestart.lock_key(), "/quorate/jobs/member-down");
        assert_eq!(Job::Snapshot.lock_key(), "/quorate/jobs/snapshot");
        for job in Job::ALL {
            assert_eq!(job.takes_member_down(), job.lock_name() == MEMBER_DOWN_LOCK);
        }
    }

    #[test]
    fn slot_keys_are_per_job_and_never_a_lock_key() {
        assert_eq!(Job::Snapshot.slot_key(), "/quorate/jobs/snapshot/last-slot");
        for a in Job::ALL {
            for b in Job::ALL {
                assert_ne!(a.slot_key(), b.lock_key());
                assert_eq!(a.slot_key() == b.slot_key(), a == b);
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for job in Job::ALL {
            assert_eq!(job.name().parse::<Job>().unwrap(), job);
            let json = serde_json::to_string(&job).unwrap();
            assert_eq!(json, format!("\"{}\"", job.name()));
        }
        assert!("defragment".parse::<Job>().is_err());
    }

    #[test]
    fn holder_values_round_trip_and_foreign_values_are_shown() {
        let h = LockHolder {
            node: "n1".into(),
            job: Some(Job::EtcdRestart),
            started_at: Some(1_700_000_000),
        };
        assert_eq!(LockHolder::from_value(h.to_value().as_bytes()), h);
        assert_eq!(h.to_string(), "n1 (etcd-restart)");
        let foreign = LockHolder::from_value(b"someone");
        assert_eq!(foreign.node, "someone");
        assert_eq!(foreign.job, None);
        let partial = LockHolder::from_value(br#"{"node":"n2"}"#);
        assert_eq!(partial.node, "n2");
        assert_eq!(partial.started_at, None);
    }
}
