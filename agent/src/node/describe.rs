//! The phase and the one-line message users see for this node (in `quorate status`, /status,
//! /readyz and systemd's STATUS=), as a pure function of the controller's step and what etcd
//! and gossip report.

use crate::etcd::EtcdHealth;
use crate::gossip::GossipView;
use crate::node::step::Step;
use crate::phase::Phase;
use crate::plan::Plan;

/// What the controller knows when it describes the node.
pub struct Situation<'a> {
    pub step: &'a Step,
    pub view: &'a GossipView,
    pub health: &'a EtcdHealth,
    pub plan: Option<&'a Plan>,
    /// The local member has been healthy during this run.
    pub ever_healthy: bool,
    /// etcd should run and is healthy.
    pub ready: bool,
}

/// The node's phase and message.
pub fn describe(s: &Situation<'_>) -> (Phase, String) {
    match s.step {
        Step::Conflict(msg) => (Phase::Conflict, format!("conflict: {msg}")),
        Step::Wait { phase, reason } => (*phase, reason.clone()),
        Step::CreateCa | Step::DecidePlan(_) | Step::AdoptPlan(_) => {
            (Phase::WaitingForPeers, "deciding the bootstrap plan".into())
        }
        Step::IssueOwnCert | Step::RequestCert { .. } => (
            Phase::RequestingCertificate,
            "requesting certificate".into(),
        ),
        Step::StartEtcd { .. } => (Phase::StartingEtcd, "starting etcd".into()),
        Step::QueryCluster => (
            Phase::Joining,
            "asking the running cluster for its members".into(),
        ),
        Step::AddLearner => (Phase::Joining, "joining the cluster as a learner".into()),
        Step::RemoveMember { .. } => (
            Phase::Joining,
            "removing this host's stale member before joining again".into(),
        ),
        Step::Promote { .. } => (
            Phase::Joining,
            "learner: catching up, to be promoted to a voting member".into(),
        ),
        Step::Restore { generation } => (
            Phase::Restoring,
            format!("restore generation {generation}: replacing etcd's data with the snapshot"),
        ),
        Step::RestoreLeftOut { generation } => (
            Phase::Restoring,
            format!(
                "restore generation {generation} left this host out: moving its old data aside \
                 to join the restored cluster"
            ),
        ),
        Step::RestoreFromSnapshot => (
            Phase::Restoring,
            "forming the cluster from the snapshot in restore_from".into(),
        ),
        Step::DecideRestoredPlan { .. } => (
            Phase::Restoring,
            "deciding the plan of the cluster restored from restore_from".into(),
        ),
        Step::FetchRestorePlan { generation, .. } => (
            Phase::Restoring,
            format!("fetching restore plan generation {generation}"),
        ),
        Step::MoveDataAside { reason } => (
            Phase::Degraded,
            format!("etcd's data is damaged ({reason}); moving it aside"),
        ),
        Step::Steady if s.ready => {
            let leader = s
                .health
                .leader_name()
                .map(str::to_owned)
                .or_else(|| s.health.leader.map(|l| format!("{l:x}")))
                .unwrap_or_default();
            (Phase::Running, format!("healthy, leader {leader}"))
        }
        Step::Steady => steady_but_unhealthy(s),
    }
}

/// etcd runs but is not healthy: waiting for peers (too few plan members alive for quorum),
/// degraded (it was healthy before), or still starting.
fn steady_but_unhealthy(s: &Situation<'_>) -> (Phase, String) {
    let problem = s
        .health
        .problem()
        .unwrap_or_else(|| "etcd is not healthy yet".into());
    let members = s.plan.map(|p| p.members.len()).unwrap_or(1);
    let up = 1 + s
        .view
        .live()
        .filter(|p| s.plan.is_some_and(|plan| plan.member(&p.id.name).is_some()))
        .count();
    let quorum = members / 2 + 1;
    if up < quorum {
        (
            Phase::WaitingForPeers,
            format!("waiting for peers {up}/{members}: etcd needs {quorum} members for quorum"),
        )
    } else if s.ever_healthy {
        (Phase::Degraded, problem)
    } else {
        (Phase::StartingEtcd, format!("starting etcd: {problem}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::ClusterState;
    use crate::gossip::testing::{meta, view_of};
    use crate::plan::tests::plan;

    fn three() -> Plan {
        plan(&[("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")])
    }

    fn say(step: &Step, view: &GossipView, health: &EtcdHealth, ever: bool) -> (Phase, String) {
        let p = three();
        describe(&Situation {
            step,
            view,
            health,
            plan: Some(&p),
            ever_healthy: ever,
            ready: health.ready(),
        })
    }

    fn healthy() -> EtcdHealth {
        EtcdHealth {
            reachable: true,
            leader: Some(0xab),
            quorum: true,
            ..EtcdHealth::default()
        }
    }

    #[test]
    fn each_step_has_its_phase_and_words() {
        let v = GossipView::default();
        let h = EtcdHealth::default();
        let cases: Vec<(Step, Phase, &str)> = vec![
            (
                Step::Conflict("two seeds".into()),
                Phase::Conflict,
                "conflict: two seeds",
            ),
            (
                Step::Wait {
                    phase: Phase::WaitingForPeers,
                    reason: "waiting for peers 2/3".into(),
                },
                Phase::WaitingForPeers,
                "waiting for peers 2/3",
            ),
            (
                Step::CreateCa,
                Phase::WaitingForPeers,
                "deciding the bootstrap plan",
            ),
            (
                Step::IssueOwnCert,
                Phase::RequestingCertificate,
                "requesting certificate",
            ),
            (
                Step::StartEtcd {
                    state: ClusterState::New,
                    initial_cluster: None,
                },
                Phase::StartingEtcd,
                "starting etcd",
            ),
            (
                Step::QueryCluster,
                Phase::Joining,
                "asking the running cluster for its members",
            ),
            (
                Step::AddLearner,
                Phase::Joining,
                "joining the cluster as a learner",
            ),
            (
                Step::RemoveMember { id: 1 },
                Phase::Joining,
                "removing this host's stale member before joining again",
            ),
            (
                Step::Promote { id: 1 },
                Phase::Joining,
                "learner: catching up, to be promoted to a voting member",
            ),
            (
                Step::MoveDataAside {
                    reason: "wal: crc mismatch".into(),
                },
                Phase::Degraded,
                "etcd's data is damaged (wal: crc mismatch); moving it aside",
            ),
        ];
        for (step, phase, words) in cases {
            assert_eq!(
                say(&step, &v, &h, false),
                (phase, words.to_owned()),
                "{step:?}"
            );
        }
    }

    #[test]
    fn steady_and_healthy_names_the_leader_by_name_or_id() {
        let v = GossipView::default();
        let h = healthy();
        assert_eq!(
            say(&Step::Steady, &v, &h, false),
            (Phase::Running, "healthy, leader ab".into())
        );
    }

    #[test]
    fn steady_under_an_alarm_is_degraded_with_the_alarm_as_reason() {
        let v = view_of(vec![meta("b", 2), meta("c", 3)]);
        let h = EtcdHealth {
            alarms: vec!["NOSPACE".into()],
            ..healthy()
        };
        assert_eq!(
            say(&Step::Steady, &v, &h, true),
            (
                Phase::Degraded,
                "etcd alarm NOSPACE is active: the database is full; writes are refused".into()
            )
        );
    }

    #[test]
    fn steady_without_quorum_of_live_plan_members_waits_for_peers() {
        let v = GossipView::default();
        let h = EtcdHealth::default();
        assert_eq!(
            say(&Step::Steady, &v, &h, true),
            (
                Phase::WaitingForPeers,
                "waiting for peers 1/3: etcd needs 2 members for quorum".into()
            )
        );
    }

    #[test]
    fn steady_with_peers_is_degraded_after_being_healthy_and_starting_before() {
        let v = view_of(vec![meta("b", 2)]);
        let h = EtcdHealth {
            reachable: true,
            ..EtcdHealth::default()
        };
        assert_eq!(
            say(&Step::Steady, &v, &h, true),
            (
                Phase::Degraded,
                "etcd has no leader (cluster without quorum?)".into()
            )
        );
        assert_eq!(
            say(&Step::Steady, &v, &h, false),
            (
                Phase::StartingEtcd,
                "starting etcd: etcd has no leader (cluster without quorum?)".into()
            )
        );
    }
}
