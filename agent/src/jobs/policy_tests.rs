use std::time::{Duration, SystemTime};

use super::*;
use crate::jobs::{Job, LockHolder};

const HOUR: Duration = Duration::from_secs(3600);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn member(id: u64, learner: bool, healthy: bool) -> MemberFact {
    MemberFact {
        id,
        name: format!("n{id}"),
        is_learner: learner,
        healthy,
    }
}

/// Three healthy voters, this member n1, leader n2, lock free, hourly schedule.
fn healthy() -> ClusterFacts {
    ClusterFacts {
        members: (1..=3).map(|id| member(id, false, true)).collect(),
        this_member: 1,
        leader: Some(2),
        lock: LockFact::Free,
        schedule: Some(Schedule::Every(HOUR)),
        last_done_slot: None,
    }
}

fn holder(node: &str, job: Job) -> LockHolder {
    LockHolder {
        node: node.into(),
        job: Some(job),
        started_at: Some(1),
    }
}

fn wait(r: WaitReason) -> Decision {
    Decision::Wait(r)
}

const NOW: u64 = 10 * 3600 + 125;
const SLOT: u64 = 10 * 3600;

fn slot_of(job: Job) -> Option<u64> {
    job.once_per_slot().then_some(SLOT)
}

#[test]
fn a_healthy_cluster_with_a_free_lock_acquires_then_runs() {
    for job in Job::ALL {
        let mut f = healthy();
        assert_eq!(
            may_run(job, &f, at(NOW)),
            Decision::Acquire { slot: slot_of(job) },
            "{job}"
        );
        f.lock = LockFact::Ours(job);
        assert_eq!(
            may_run(job, &f, at(NOW)),
            Decision::Run { slot: slot_of(job) },
            "{job}"
        );
    }
}

#[test]
fn a_node_that_is_not_a_member_waits() {
    for job in Job::ALL {
        let mut f = healthy();
        f.this_member = 9;
        assert_eq!(may_run(job, &f, at(NOW)), wait(WaitReason::NotAMember));
        f.members.clear();
        assert_eq!(may_run(job, &f, at(NOW)), wait(WaitReason::NotAMember));
    }
}

#[test]
fn a_lock_held_elsewhere_waits_with_its_holder() {
    for job in Job::ALL {
        for other in Job::ALL
            .into_iter()
            .filter(|o| o.lock_name() == job.lock_name())
        {
            let mut f = healthy();
            f.lock = LockFact::Theirs(holder("n3", other));
            assert_eq!(
                may_run(job, &f, at(NOW)),
                wait(WaitReason::LockHeld(holder("n3", other)))
            );
        }
    }
}

#[test]
fn our_lock_for_another_job_of_the_class_is_not_ours_to_use() {
    let mut f = healthy();
    f.lock = LockFact::Ours(Job::Defrag);
    assert_eq!(
        may_run(Job::EtcdRestart, &f, at(NOW)),
        wait(WaitReason::LockHeldHere(Job::Defrag))
    );
    f.lock = LockFact::Ours(Job::EtcdRestart);
    assert_eq!(
        may_run(Job::Defrag, &f, at(NOW)),
        wait(WaitReason::LockHeldHere(Job::EtcdRestart))
    );
}

#[test]
fn an_unreadable_lock_waits() {
    for job in Job::ALL {
        let mut f = healthy();
        f.lock = LockFact::Unknown;
        assert_eq!(may_run(job, &f, at(NOW)), wait(WaitReason::LockUnknown));
    }
}

#[test]
fn member_down_jobs_need_every_voter_healthy() {
    for job in [Job::Defrag, Job::EtcdRestart] {
        for sick in 1..=3 {
            for lock in [LockFact::Free, LockFact::Ours(job)] {
                let mut f = healthy();
                f.lock = lock;
                f.members[sick as usize - 1].healthy = false;
                assert_eq!(
                    may_run(job, &f, at(NOW)),
                    wait(WaitReason::UnhealthyVoters(vec![format!("n{sick}")])),
                    "{job}, n{sick} unhealthy"
                );
            }
        }
        let mut f = healthy();
        f.members[0].healthy = false;
        f.members[2].healthy = false;
        assert_eq!(
            may_run(job, &f, at(NOW)),
            wait(WaitReason::UnhealthyVoters(vec!["n1".into(), "n3".into()]))
        );
    }
}

#[test]
fn member_down_jobs_ignore_unhealthy_learners_but_not_their_own_health() {
    for job in [Job::Defrag, Job::EtcdRestart] {
        // Another member is an unhealthy learner: the voters decide.
        let mut f = healthy();
        f.members.push(member(4, true, false));
        assert_eq!(may_run(job, &f, at(NOW)), Decision::Acquire { slot: None });
        // This member is that learner.
        f.this_member = 4;
        assert_eq!(
            may_run(job, &f, at(NOW)),
            wait(WaitReason::ThisMemberUnhealthy)
        );
        f.members[3].healthy = true;
        assert_eq!(may_run(job, &f, at(NOW)), Decision::Acquire { slot: None });
    }
}

#[test]
fn member_down_jobs_need_a_known_leader() {
    for job in [Job::Defrag, Job::EtcdRestart] {
        let mut f = healthy();
        f.leader = None;
        assert_eq!(may_run(job, &f, at(NOW)), wait(WaitReason::NoLeader));
        f.leader = Some(9);
        assert_eq!(may_run(job, &f, at(NOW)), wait(WaitReason::NoLeader));
        // A learner is never the leader.
        f.members.push(member(4, true, true));
        f.leader = Some(4);
        assert_eq!(may_run(job, &f, at(NOW)), wait(WaitReason::NoLeader));
    }
}

#[test]
fn a_snapshot_needs_only_one_healthy_voter() {
    let mut f = healthy();
    f.leader = None;
    f.members[0].healthy = false;
    f.members[1].healthy = false;
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        Decision::Acquire { slot: Some(SLOT) }
    );
    f.members[2].healthy = false;
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        wait(WaitReason::NoHealthyVoter)
    );
    // A healthy learner does not count.
    f.members.push(member(4, true, true));
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        wait(WaitReason::NoHealthyVoter)
    );
}

#[test]
fn a_slot_is_done_once() {
    let mut f = healthy();
    for done in [SLOT, SLOT + 3600] {
        f.last_done_slot = Some(done);
        for lock in [LockFact::Free, LockFact::Ours(Job::Snapshot)] {
            f.lock = lock;
            assert_eq!(
                may_run(Job::Snapshot, &f, at(NOW)),
                wait(WaitReason::SlotDone { slot: SLOT })
            );
        }
    }
    f.lock = LockFact::Free;
    f.last_done_slot = Some(SLOT - 3600);
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        Decision::Acquire { slot: Some(SLOT) }
    );
    // The next slot begins on the hour.
    f.last_done_slot = Some(SLOT);
    assert_eq!(
        may_run(Job::Snapshot, &f, at(SLOT + 3599)),
        wait(WaitReason::SlotDone { slot: SLOT })
    );
    assert_eq!(
        may_run(Job::Snapshot, &f, at(SLOT + 3600)),
        Decision::Acquire {
            slot: Some(SLOT + 3600)
        }
    );
}

#[test]
fn a_done_slot_is_reported_before_a_busy_lock_or_bad_health() {
    let mut f = healthy();
    f.last_done_slot = Some(SLOT);
    f.lock = LockFact::Theirs(holder("n2", Job::Snapshot));
    for m in &mut f.members {
        m.healthy = false;
    }
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        wait(WaitReason::SlotDone { slot: SLOT })
    );
    f.last_done_slot = None;
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        wait(WaitReason::LockHeld(holder("n2", Job::Snapshot)))
    );
}

#[test]
fn a_held_lock_is_reported_before_the_health_it_explains() {
    // n2 is down because it is being defragmented under the lock.
    let mut f = healthy();
    f.members[1].healthy = false;
    f.lock = LockFact::Theirs(holder("n2", Job::Defrag));
    assert_eq!(
        may_run(Job::EtcdRestart, &f, at(NOW)),
        wait(WaitReason::LockHeld(holder("n2", Job::Defrag)))
    );
}

#[test]
fn once_per_slot_jobs_need_a_usable_schedule() {
    let mut f = healthy();
    f.schedule = None;
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        wait(WaitReason::NoSlot)
    );
    f.schedule = Some(Schedule::Every(Duration::ZERO));
    assert_eq!(
        may_run(Job::Snapshot, &f, at(NOW)),
        wait(WaitReason::NoSlot)
    );
    f.schedule = Some(Schedule::Every(HOUR));
    let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert_eq!(
        may_run(Job::Snapshot, &f, before_epoch),
        wait(WaitReason::NoSlot)
    );
    // Jobs that are not once-per-slot ignore schedule and slot.
    f.schedule = None;
    f.last_done_slot = Some(u64::MAX);
    assert_eq!(
        may_run(Job::Defrag, &f, at(NOW)),
        Decision::Acquire { slot: None }
    );
}

#[test]
fn slots_are_aligned_on_the_epoch() {
    let s = Schedule::Every(HOUR);
    assert_eq!(s.slot_at(at(0)), Some(0));
    assert_eq!(s.slot_at(at(3599)), Some(0));
    assert_eq!(s.slot_at(at(3600)), Some(3600));
    assert_eq!(s.slot_at(at(NOW)), Some(SLOT));
    // Sub-second periods are not schedules.
    assert_eq!(
        Schedule::Every(Duration::from_millis(500)).slot_at(at(NOW)),
        None
    );
}

#[test]
fn a_single_member_cluster_may_run_everything() {
    let f = ClusterFacts {
        members: vec![member(1, false, true)],
        leader: Some(1),
        ..healthy()
    };
    for job in Job::ALL {
        assert_eq!(
            may_run(job, &f, at(NOW)),
            Decision::Acquire { slot: slot_of(job) }
        );
    }
}

#[test]
fn the_time_is_only_used_for_slots() {
    let f = healthy();
    for t in [0, 1, NOW, u32::MAX as u64] {
        assert_eq!(
            may_run(Job::Defrag, &f, at(t)),
            Decision::Acquire { slot: None }
        );
    }
}

#[test]
fn leader_last_orders_by_name_with_the_leader_at_the_end() {
    let mut f = healthy();
    f.members = vec![
        member(3, false, true),
        member(1, false, true),
        member(2, false, true),
        member(4, true, true),
    ];
    f.leader = Some(2);
    assert_eq!(leader_last(&f), vec![1, 3, 4, 2]);
    f.leader = Some(1);
    assert_eq!(leader_last(&f), vec![2, 3, 4, 1]);
    f.leader = None;
    assert_eq!(leader_last(&f), vec![1, 2, 3, 4]);
}

#[test]
fn next_leader_last_walks_the_order_and_ends() {
    let f = healthy();
    assert_eq!(next_leader_last(&f, &[]), Some(1));
    assert_eq!(next_leader_last(&f, &[1]), Some(3));
    assert_eq!(next_leader_last(&f, &[3, 1]), Some(2));
    assert_eq!(next_leader_last(&f, &[1, 2, 3]), None);
    // A leader change mid-rollout: the new leader moves to the end.
    let f = ClusterFacts {
        leader: Some(3),
        ..healthy()
    };
    assert_eq!(next_leader_last(&f, &[1]), Some(2));
}

#[test]
fn wait_reasons_say_what_blocks() {
    let cases = [
        (
            WaitReason::LockHeld(holder("n2", Job::Defrag)),
            "n2 (defrag)",
        ),
        (
            WaitReason::UnhealthyVoters(vec!["n1".into(), "n3".into()]),
            "n1, n3",
        ),
        (WaitReason::SlotDone { slot: 7 }, "slot 7"),
        (WaitReason::LockHeldHere(Job::EtcdRestart), "etcd-restart"),
    ];
    for (reason, text) in cases {
        assert!(reason.to_string().contains(text), "{reason}");
    }
}

fn cron(expr: &str) -> Schedule {
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build();
    Schedule::Cron(Box::new(parser.parse(expr).unwrap()))
}

#[test]
fn a_cron_slot_is_the_latest_scheduled_time_at_or_before_now() {
    // 2023-11-14T22:13:20Z.
    let now = 1_700_000_000;
    let s = cron("0 */6 * * *");
    // 2023-11-14T18:00:00Z.
    assert_eq!(s.slot_at(at(now)), Some(1_699_984_800));
    // A scheduled time is its own slot; one second before, the previous one.
    assert_eq!(s.slot_at(at(1_699_984_800)), Some(1_699_984_800));
    assert_eq!(s.slot_at(at(1_699_984_799)), Some(1_699_984_800 - 6 * 3600));
    assert_eq!(s.next_slot_after(at(now)), Some(1_699_984_800 + 6 * 3600));
    assert_eq!(s.period(at(now)), Some(Duration::from_secs(6 * 3600)));
    // Every minute.
    let m = cron("* * * * *");
    assert_eq!(m.slot_at(at(now)), Some(now - now % 60));
    assert_eq!(m.period(at(now)), Some(Duration::from_secs(60)));
}

#[test]
fn an_uneven_cron_period_is_the_gap_between_the_next_two_times() {
    // 02:00 and 03:00 UTC daily; at 2023-11-14T22:13:20Z the next two are 02:00 and 03:00.
    let s = cron("0 2,3 * * *");
    assert_eq!(s.period(at(1_700_000_000)), Some(Duration::from_secs(3600)));
    // Just after 02:00 the next two are 03:00 and 02:00 the next day.
    let after_two = 1_700_000_000 + 4 * 3600 - 800 + 60;
    assert_eq!(
        s.period(at(after_two)),
        Some(Duration::from_secs(23 * 3600))
    );
}

#[test]
fn the_policy_runs_a_cron_slot_once() {
    let mut f = healthy();
    f.schedule = Some(cron("0 */6 * * *"));
    let slot = 1_699_984_800;
    f.last_done_slot = Some(slot - 6 * 3600);
    assert_eq!(
        may_run(Job::Snapshot, &f, at(1_700_000_000)),
        Decision::Acquire { slot: Some(slot) }
    );
    f.last_done_slot = Some(slot);
    assert_eq!(
        may_run(Job::Snapshot, &f, at(1_700_000_000)),
        Decision::Wait(WaitReason::SlotDone { slot })
    );
}

#[test]
fn every_periods_are_whole_seconds() {
    assert_eq!(Schedule::Every(HOUR).period(at(NOW)), Some(HOUR));
    assert_eq!(
        Schedule::Every(HOUR).next_slot_after(at(NOW)),
        Some(SLOT + 3600)
    );
    assert_eq!(
        Schedule::Every(Duration::from_millis(500)).period(at(NOW)),
        None
    );
}
