use std::time::{Duration, SystemTime};

use super::*;
use crate::jobs::policy::{LockFact, MemberFact};
use crate::jobs::LockHolder;

const MIB: u64 = 1 << 20;
const QUOTA: u64 = 2048 * MIB;
const MIN: u64 = 100 * MIB;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn size(total_mib: u64, in_use_mib: u64) -> DbSize {
    DbSize {
        total: total_mib * MIB,
        in_use: in_use_mib * MIB,
    }
}

/// Three healthy voters n1..n3, this agent n2 and the leader, nobody needing a defrag.
fn facts() -> Facts {
    Facts {
        cluster: ClusterFacts {
            members: (1..=3)
                .map(|id| MemberFact {
                    id,
                    name: format!("n{id}"),
                    is_learner: false,
                    healthy: true,
                })
                .collect(),
            this_member: 2,
            leader: Some(2),
            lock: LockFact::Free,
            schedule: None,
            last_done_slot: None,
        },
        sizes: (1..=3).map(|id| (id, size(300, 290))).collect(),
        nospace: false,
        quota: QUOTA,
        min_reclaim: MIN,
    }
}

fn with_lock(mut f: Facts) -> Facts {
    f.cluster.lock = LockFact::Ours(Job::Defrag);
    f
}

#[test]
fn fragmented_means_less_than_half_in_use_and_enough_to_reclaim() {
    assert_eq!(
        need(size(1000, 400), QUOTA, MIN),
        Some(Need::Fragmented { reclaim: 600 * MIB })
    );
    assert_eq!(
        need(size(1000, 500), QUOTA, MIN),
        None,
        "exactly half in use"
    );
    assert_eq!(
        need(size(150, 40), QUOTA, MIN),
        Some(Need::Fragmented { reclaim: 110 * MIB })
    );
}

#[test]
fn a_small_file_is_never_fragmented_enough() {
    // 90 % free, but only 90 MiB to gain.
    assert_eq!(need(size(100, 10), QUOTA, MIN), None);
    assert_eq!(
        need(size(100, 10), QUOTA, 90 * MIB),
        Some(Need::Fragmented { reclaim: 90 * MIB })
    );
}

#[test]
fn near_the_quota_is_defragmented_whatever_the_fragmentation() {
    // 1700 MiB of 2048 MiB is 83 %.
    assert_eq!(
        need(size(1700, 1650), QUOTA, MIN),
        Some(Need::NearQuota { percent: 83 })
    );
    // 80 % exactly is not above.
    assert_eq!(need(size(1638, 1600), QUOTA, MIN), None);
    // Nothing free at all: defragmenting cannot help.
    assert_eq!(need(size(1700, 1700), QUOTA, MIN), None);
    // A zero quota (unknown) never counts as near.
    assert_eq!(need(size(1700, 1650), 0, MIN), None);
}

#[test]
fn percent_of_does_not_overflow() {
    assert_eq!(percent_of(u64::MAX, u64::MAX), 100);
    assert_eq!(percent_of(1, 0), 0);
    assert_eq!(percent_of(50, 200), 25);
}

#[test]
fn only_the_leaders_agent_coordinates() {
    let mut f = facts();
    f.sizes.insert(1, size(1000, 100));
    f.cluster.this_member = 1;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::NotCoordinator
    );
    f.cluster.leader = None;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::NotCoordinator
    );
    f.nospace = true;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::NotCoordinator
    );
}

#[test]
fn nothing_due_is_idle() {
    assert_eq!(decide(&facts(), at(0), &History::default()), Decision::Idle);
}

#[test]
fn due_members_take_the_lock_then_go_leader_last() {
    let mut f = facts();
    f.sizes.insert(2, size(1000, 100));
    f.sizes.insert(3, size(1000, 100));
    assert_eq!(decide(&f, at(0), &History::default()), Decision::Acquire);
    assert_eq!(
        decide(&with_lock(f), at(0), &History::default()),
        Decision::Defrag(vec![3, 2]),
        "the leader (n2) last"
    );
}

#[test]
fn a_member_without_a_size_is_skipped() {
    let mut f = with_lock(facts());
    f.sizes.clear();
    f.sizes.insert(1, size(1000, 10));
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Defrag(vec![1])
    );
}

#[test]
fn a_voter_down_or_the_lock_elsewhere_waits() {
    let mut f = facts();
    f.sizes.insert(1, size(1000, 100));
    f.cluster.members[2].healthy = false;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Wait(Why::Job(WaitReason::UnhealthyVoters(vec!["n3".into()])))
    );
    let mut f = facts();
    f.sizes.insert(1, size(1000, 100));
    let holder = LockHolder {
        node: "n3".into(),
        job: Some(Job::EtcdRestart),
        started_at: Some(1),
    };
    f.cluster.lock = LockFact::Theirs(holder.clone());
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Wait(Why::Job(WaitReason::LockHeld(holder)))
    );
    f.cluster.lock = LockFact::Unknown;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Wait(Why::Job(WaitReason::LockUnknown))
    );
}

#[test]
fn a_recent_defrag_is_not_repeated_until_the_cooldown_ends() {
    let f = {
        let mut f = with_lock(facts());
        f.sizes.insert(1, size(1700, 1650));
        f
    };
    let mut h = History::default();
    h.defragged_at.insert(1, at(0));
    assert_eq!(decide(&f, at(60), &h), Decision::Idle);
    assert_eq!(decide(&f, at(0) + COOLDOWN, &h), Decision::Defrag(vec![1]));
}

#[test]
fn nospace_recovers_every_member_leader_last_without_the_lock() {
    let mut f = facts();
    f.nospace = true;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Recover(vec![1, 3, 2])
    );
    // A recently defragmented member is recovered all the same.
    let mut h = History::default();
    h.defragged_at.insert(1, at(0));
    assert_eq!(decide(&f, at(1), &h), Decision::Recover(vec![1, 3, 2]));
}

#[test]
fn nospace_waits_for_a_voter_down_and_for_a_lock_holder() {
    let mut f = facts();
    f.nospace = true;
    f.cluster.members[0].healthy = false;
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Wait(Why::Job(WaitReason::UnhealthyVoters(vec!["n1".into()])))
    );
    let mut f = facts();
    f.nospace = true;
    let holder = LockHolder {
        node: "n1".into(),
        job: Some(Job::Defrag),
        started_at: None,
    };
    f.cluster.lock = LockFact::Theirs(holder.clone());
    assert_eq!(
        decide(&f, at(0), &History::default()),
        Decision::Wait(Why::Job(WaitReason::LockHeld(holder)))
    );
}

#[test]
fn live_data_full_retries_only_after_the_delay() {
    let mut f = facts();
    f.nospace = true;
    let h = History {
        live_data_full_at: Some(at(0)),
        ..History::default()
    };
    assert_eq!(
        decide(&f, at(10), &h),
        Decision::Wait(Why::LiveDataFull {
            retry_at: at(0) + RECOVERY_RETRY
        })
    );
    assert_eq!(
        decide(&f, at(0) + RECOVERY_RETRY, &h),
        Decision::Recover(vec![1, 3, 2])
    );
    // Without the alarm the record does not matter.
    f.nospace = false;
    assert_eq!(decide(&f, at(10), &h), Decision::Idle);
}

#[test]
fn on_demand_refuses_a_voter_down_unless_forced_and_never_a_held_lock() {
    let mut c = facts().cluster;
    assert_eq!(on_demand(&c, false, at(0)), Ok(vec![1, 3, 2]));
    c.members[0].healthy = false;
    assert_eq!(
        on_demand(&c, false, at(0)),
        Err(WaitReason::UnhealthyVoters(vec!["n1".into()]))
    );
    assert_eq!(on_demand(&c, true, at(0)), Ok(vec![1, 3, 2]));
    c.leader = None;
    assert_eq!(on_demand(&c, false, at(0)), Err(WaitReason::NoLeader));
    c.leader = Some(2);
    let holder = LockHolder {
        node: "n3".into(),
        job: Some(Job::EtcdRestart),
        started_at: None,
    };
    c.lock = LockFact::Theirs(holder.clone());
    assert_eq!(
        on_demand(&c, true, at(0)),
        Err(WaitReason::LockHeld(holder))
    );
    c.lock = LockFact::Ours(Job::Defrag);
    assert_eq!(on_demand(&c, true, at(0)), Ok(vec![1, 3, 2]));
    c.this_member = 9;
    assert_eq!(on_demand(&c, true, at(0)), Err(WaitReason::NotAMember));
}

#[test]
fn recovery_disarms_only_when_there_is_room() {
    assert_eq!(
        recovery_outcome(&[size(100, 100), size(1980, 1980)], QUOTA),
        RecoveryOutcome::LiveDataFull {
            largest: 1980 * MIB
        }
    );
    // 80 % exactly may disarm.
    let at_80 = QUOTA * 80 / 100;
    assert_eq!(
        recovery_outcome(
            &[DbSize {
                total: at_80,
                in_use: at_80
            }],
            QUOTA
        ),
        RecoveryOutcome::Disarm
    );
    // 28.4 MB of live data in 32 MiB, as etcd 3.4 left it.
    assert_eq!(
        recovery_outcome(
            &[
                size(1, 1),
                DbSize {
                    total: 28_442_624,
                    in_use: 28_438_528
                }
            ],
            32 * MIB
        ),
        RecoveryOutcome::LiveDataFull {
            largest: 28_442_624
        }
    );
    // 30.0 MB of live data in 32 MiB.
    assert_eq!(
        recovery_outcome(
            &[DbSize {
                total: 30_011_392,
                in_use: 30_003_200
            }],
            32 * MIB
        ),
        RecoveryOutcome::LiveDataFull {
            largest: 30_011_392
        }
    );
    assert_eq!(
        recovery_outcome(&[size(10, 5), size(12, 12)], QUOTA),
        RecoveryOutcome::Disarm
    );
    assert_eq!(recovery_outcome(&[], QUOTA), RecoveryOutcome::Unknown);
}
