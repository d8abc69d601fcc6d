//! Tests of the restore rules of the parent module: a pending plan comes before every other
//! etcd step, a host left out of the plan moves its data aside, and a newer generation in
//! gossip only makes the agent fetch the signed plan.
use super::tests::{facts, formed, issuer, meta, view};
use super::*;
use crate::plan::tests::{plan, test_hash};
use crate::restore::tests::example_plan;

fn running<'a>(me: &'a str, p: &'a Plan, v: &'a GossipView) -> Facts<'a> {
    let mut f = facts(me, false, v);
    f.plan = Some(p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    f.has_member = true;
    f.etcd_desired = true;
    f.formed_here = true;
    f
}

#[test]
fn a_pending_plan_naming_this_host_restores_before_anything_else() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(vec![formed(issuer("a", test_hash(1)))], vec![p.clone()]);
    let r = example_plan(1);
    let mut f = running("b", &p, &v);
    assert_eq!(next_step(&f), Step::Steady);
    f.restore.pending = Some(&r);
    assert_eq!(next_step(&f), Step::Restore { generation: 1 });
    // Also while it is a learner (no promotion), with damaged data, or without etcd running.
    f.is_learner = true;
    f.member_id = Some(7);
    assert_eq!(next_step(&f), Step::Restore { generation: 1 });
    f.damaged = Some("bad wal");
    assert_eq!(next_step(&f), Step::Restore { generation: 1 });
    f.etcd_desired = false;
    assert_eq!(next_step(&f), Step::Restore { generation: 1 });
}

#[test]
fn a_host_left_out_moves_its_data_aside_instead_of_starting_it() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("d", "10.0.0.4")]);
    let v = view(vec![formed(issuer("a", test_hash(1)))], vec![p.clone()]);
    let r = example_plan(1);
    let mut f = running("d", &p, &v);
    f.etcd_desired = false;
    f.restore.pending = Some(&r);
    assert_eq!(next_step(&f), Step::RestoreLeftOut { generation: 1 });
    // Once applied (data moved aside), it joins like a replaced host.
    f.restore = RestoreFacts {
        pending: None,
        applied: 1,
        refused: 0,
    };
    f.has_member = false;
    assert_eq!(next_step(&f), Step::QueryCluster);
}

#[test]
fn a_newer_generation_in_gossip_only_fetches_the_plan() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let mut a = formed(issuer("a", test_hash(1)));
    a.restore_generation = 2;
    let mut b = meta("b");
    b.restore_generation = 1;
    let v = view(vec![a.clone(), b], vec![p.clone()]);
    let mut f = running("c", &p, &v);
    f.etcd_desired = false;
    f.restore.applied = 1;
    assert_eq!(
        next_step(&f),
        Step::FetchRestorePlan {
            from: a.api_addr,
            generation: 2
        }
    );
    // A generation whose plan was refused is not fetched again.
    f.restore.refused = 2;
    assert_eq!(next_step(&f), start(ClusterState::Existing, None));
    f.restore.refused = 0;
    // The generation it has applied is not news.
    f.restore.applied = 2;
    assert_eq!(next_step(&f), start(ClusterState::Existing, None));
}

#[test]
fn a_seed_with_restore_from_forms_alone_from_the_snapshot() {
    let v = view(vec![meta("b")], vec![]);
    let mut f = facts("a", true, &v);
    f.restore_from = true;
    assert_eq!(next_step(&f), Step::RestoreFromSnapshot);
    f.restored_token = Some("quorate-0011");
    f.local_ca = Some(test_hash(1));
    f.holds_ca_key = true;
    assert_eq!(
        next_step(&f),
        Step::DecideRestoredPlan {
            token: "quorate-0011".into()
        }
    );
    // A failure the operator must fix stops it (no retry that moves data aside again).
    f.restored_token = None;
    f.restore_from_error = Some("the CA cannot be unsealed");
    assert!(matches!(next_step(&f), Step::Conflict(m) if m.contains("cannot be unsealed")));
    // A cluster that exists already is never restored over.
    let v = view(vec![formed(meta("b"))], vec![]);
    let mut f = facts("a", true, &v);
    f.restore_from = true;
    assert!(!matches!(next_step(&f), Step::RestoreFromSnapshot));
}
