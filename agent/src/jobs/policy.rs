//! Whether this member may run a job now: a pure function of the cluster's facts and the time,
//! so that every guarantee a job relies on ("every voter healthy", "one slot once", "never
//! while someone else holds the lock") is decided in one place and tested without etcd.
//!
//! The driver of a job asks [`may_run`] with the lock [`LockFact::Free`]; on
//! [`Decision::Acquire`] it takes the lock, reads the facts again (another member may have
//! done the slot just before releasing) and asks again with [`LockFact::Ours`]; only
//! [`Decision::Run`] lets it act.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::{Job, LockHolder};

/// One etcd member as the job sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberFact {
    /// etcd member id.
    pub id: u64,
    /// Member (node) name.
    pub name: String,
    /// Learners do not vote.
    pub is_learner: bool,
    /// The member answered its health check (it has a leader and no alarm).
    pub healthy: bool,
}

/// The job lock as this agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockFact {
    /// Could not be read.
    Unknown,
    /// Nobody holds it.
    Free,
    /// This agent holds it, for this job.
    Ours(Job),
    /// Another holder has it.
    Theirs(LockHolder),
}

/// When a once-per-slot job is due. A slot is named by its start, in unix seconds, so that
/// every kind of schedule names its slots the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Slots of this length, aligned on the unix epoch.
    Every(Duration),
    /// A cron expression in UTC: a slot starts at each scheduled time.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// The slot `now` falls in (for cron: the latest scheduled time at or before `now`); None
    /// for a zero period, a cron expression with no time at or before `now`, or a clock before
    /// 1970.
    pub fn slot_at(&self, now: SystemTime) -> Option<u64> {
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        match self {
            Schedule::Every(period) => {
                let period = period.as_secs();
                (period > 0).then(|| secs - secs % period)
            }
            Schedule::Cron(cron) => {
                let at = utc(secs)?;
                let prev = cron.find_previous_occurrence(&at, true).ok()?;
                u64::try_from(prev.timestamp()).ok()
            }
        }
    }

    /// The start of the first slot after `now`'s, in unix seconds.
    pub fn next_slot_after(&self, now: SystemTime) -> Option<u64> {
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        match self {
            Schedule::Every(period) => {
                let period = period.as_secs();
                (period > 0).then(|| secs - secs % period + period)
            }
            Schedule::Cron(cron) => {
                let next = cron.find_next_occurrence(&utc(secs)?, false).ok()?;
                u64::try_from(next.timestamp()).ok()
            }
        }
    }

    /// The schedule's period as of `now`: for cron, the gap between the next two scheduled
    /// times (cron slots need not be evenly spaced).
    pub fn period(&self, now: SystemTime) -> Option<Duration> {
        match self {
            Schedule::Every(period) => (period.as_secs() > 0).then_some(*period),
            Schedule::Cron(_) => {
                let first = self.next_slot_after(now)?;
                let second =
                    self.next_slot_after(SystemTime::UNIX_EPOCH + Duration::from_secs(first))?;
                Some(Duration::from_secs(second.checked_sub(first)?))
            }
        }
    }
}

fn utc(secs: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)
}

/// What a job needs to know to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The cluster's members (voters and learners).
    pub members: Vec<MemberFact>,
    /// This agent's member id.
    pub this_member: u64,
    /// The current leader's member id, if there is one.
    pub leader: Option<u64>,
    /// The job's lock.
    pub lock: LockFact,
    /// The job's schedule (for once-per-slot jobs).
    pub schedule: Option<Schedule>,
    /// The last slot the job did cluster-wide (read from its slot key).
    pub last_done_slot: Option<u64>,
}

impl ClusterFacts {
    /// The voting members.
    pub fn voters(&self) -> impl Iterator<Item = &MemberFact> {
        self.members.iter().filter(|m| !m.is_learner)
    }

    /// This agent's member, if it is in the list.
    pub fn this(&self) -> Option<&MemberFact> {
        self.members.iter().find(|m| m.id == self.this_member)
    }

    /// Whether the leader is a known member.
    fn has_leader(&self) -> bool {
        self.leader
            .is_some_and(|l| self.voters().any(|m| m.id == l))
    }
}

/// The answer of [`may_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Everything allows it but the lock is not held yet: take it, then ask again.
    Acquire {
        /// The slot it would be for (once-per-slot jobs).
        slot: Option<u64>,
    },
    /// Run it now (the lock is ours); a once-per-slot job records `slot` when done.
    Run {
        /// The slot it is for (once-per-slot jobs).
        slot: Option<u64>,
    },
    /// Not now.
    Wait(WaitReason),
}

/// Why a job waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// This agent's member is not in the member list.
    NotAMember,
    /// A once-per-slot job without a usable schedule (none, a zero period, or a clock before
    /// 1970).
    NoSlot,
    /// The current slot (or a later one) was done already.
    SlotDone {
        /// The current slot.
        slot: u64,
    },
    /// The lock could not be read.
    LockUnknown,
    /// Someone else holds the lock.
    LockHeld(LockHolder),
    /// This agent holds the lock, for another job of the same class.
    LockHeldHere(Job),
    /// No voting member is healthy.
    NoHealthyVoter,
    /// The cluster has no (known) leader.
    NoLeader,
    /// These voters are not healthy (taking a member down now could cost quorum).
    UnhealthyVoters(Vec<String>),
    /// This member itself is not healthy.
    ThisMemberUnhealthy,
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NotAMember => f.write_str("this node is not a member of the cluster"),
            WaitReason::NoSlot => {
                f.write_str("no schedule slot (no or zero schedule, or clock before 1970)")
            }
            WaitReason::SlotDone { slot } => write!(f, "slot {slot} is done already"),
            WaitReason::LockUnknown => f.write_str("the job lock could not be read"),
            WaitReason::LockHeld(h) => write!(f, "the job lock is held by {h}"),
            WaitReason::LockHeldHere(job) => write!(f, "this node holds the job lock for {job}"),
            WaitReason::NoHealthyVoter => f.write_str("no voting member is healthy"),
            WaitReason::NoLeader => f.write_str("the cluster has no leader"),
            WaitReason::UnhealthyVoters(names) => {
                write!(f, "voters not healthy: {}", names.join(", "))
            }
            WaitReason::ThisMemberUnhealthy => f.write_str("this member is not healthy"),
        }
    }
}

/// May this member run `job` now? Checks, in this order: membership, the slot (a slot done is
/// the usual idle state), the lock held elsewhere, the job's own health rule, then the lock.
///
/// Health rules: a snapshot needs one healthy voter; a job that takes a member down needs a
/// leader, every voter healthy, and this member healthy (also when it is a learner).
pub fn may_run(job: Job, facts: &ClusterFacts, now: SystemTime) -> Decision {
    match check(job, facts, now) {
        Ok(decision) => decision,
        Err(reason) => Decision::Wait(reason),
    }
}

fn check(job: Job, facts: &ClusterFacts, now: SystemTime) -> Result<Decision, WaitReason> {
    let this = facts.this().ok_or(WaitReason::NotAMember)?;
    let slot = if job.once_per_slot() {
        let slot = facts
            .schedule
            .as_ref()
            .and_then(|s| s.slot_at(now))
            .ok_or(WaitReason::NoSlot)?;
        if facts.last_done_slot.is_some_and(|done| done >= slot) {
            return Err(WaitReason::SlotDone { slot });
        }
        Some(slot)
    } else {
        None
    };
    match &facts.lock {
        LockFact::Theirs(holder) => return Err(WaitReason::LockHeld(holder.clone())),
        LockFact::Ours(other) if *other != job => return Err(WaitReason::LockHeldHere(*other)),
        LockFact::Unknown => return Err(WaitReason::LockUnknown),
        LockFact::Ours(_) | LockFact::Free => {}
    }
    if job.takes_member_down() {
        if !facts.has_leader() {
            return Err(WaitReason::NoLeader);
        }
        let unhealthy: Vec<String> = facts
            .voters()
            .filter(|m| !m.healthy)
            .map(|m| m.name.clone())
            .collect();
        if !unhealthy.is_empty() {
            return Err(WaitReason::UnhealthyVoters(unhealthy));
        }
        if !this.healthy {
            return Err(WaitReason::ThisMemberUnhealthy);
        }
    } else if !facts.voters().any(|m| m.healthy) {
        return Err(WaitReason::NoHealthyVoter);
    }
    Ok(match facts.lock {
        LockFact::Ours(_) => Decision::Run { slot },
        _ => Decision::Acquire { slot },
    })
}

/// The order of a rolling member-down job (defragmentation, restarts): every member but the
/// leader, by name, then the leader, so that leadership moves at most once.
pub fn leader_last(facts: &ClusterFacts) -> Vec<u64> {
    let mut members: Vec<&MemberFact> = facts.members.iter().collect();
    members.sort_by(|a, b| {
        let a_leads = Some(a.id) == facts.leader;
        let b_leads = Some(b.id) == facts.leader;
        (a_leads, &a.name, a.id).cmp(&(b_leads, &b.name, b.id))
    });
    members.into_iter().map(|m| m.id).collect()
}

/// The member whose turn it is in a leader-last rollout, given the members done already;
/// None when every member is done.
pub fn next_leader_last(facts: &ClusterFacts, done: &[u64]) -> Option<u64> {
    leader_last(facts).into_iter().find(|id| !done.contains(id))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
