//! Tests of the rules in the parent module.
use super::*;
use crate::gossip::{NodeId, NodeMeta, Peer, PeerState};
use crate::plan::tests::{plan, test_hash};

pub(super) fn meta(name: &str) -> NodeMeta {
    NodeMeta::example(name, format!("10.0.0.{}:7946", name.len()).parse().unwrap())
}

fn peer(m: NodeMeta) -> Peer {
    Peer {
        id: NodeId {
            name: m.name.clone(),
            addr: m.gossip_addr,
            bump: 1,
        },
        state: PeerState::Alive,
        meta: Some(m),
    }
}

pub(super) fn view(metas: Vec<NodeMeta>, plans: Vec<Plan>) -> GossipView {
    GossipView {
        peers: metas.into_iter().map(peer).collect(),
        plans,
    }
}

pub(super) fn facts<'a>(me: &'a str, seed: bool, view: &'a GossipView) -> Facts<'a> {
    Facts {
        me,
        seed,
        expect: 3,
        pin: None,
        local_ca: None,
        holds_ca_key: false,
        plan: None,
        cert: CertState::Missing,
        has_member: false,
        etcd_desired: false,
        formed_here: false,
        left: false,
        member_id: None,
        is_learner: false,
        cluster: &ClusterKnowledge::Unknown,
        damaged: None,
        view,
        me_candidate: Candidate {
            name: me.into(),
            peer_url: format!("https://{me}:2380"),
            client_url: format!("https://{me}:2379"),
            seed,
            ca_hash: None,
            plan_id: None,
        },
        restore: RestoreFacts::default(),
        restore_from: false,
        restored_token: None,
        restore_from_error: None,
    }
}

pub(super) fn issuer(name: &str, ca: CaHash) -> NodeMeta {
    let mut m = meta(name);
    m.seed = true;
    m.issuer = true;
    m.ca_hash = Some(ca);
    m
}

#[test]
fn seed_waits_then_creates_ca_then_decides() {
    let v = view(vec![meta("bb")], vec![]);
    let f = facts("a", true, &v);
    assert_eq!(
        next_step(&f),
        Step::Wait {
            phase: Phase::WaitingForPeers,
            reason: "waiting for peers 2/3".into()
        }
    );
    let v = view(vec![meta("bb"), meta("ccc")], vec![]);
    let mut f = facts("a", true, &v);
    assert_eq!(next_step(&f), Step::CreateCa);
    f.holds_ca_key = true;
    f.local_ca = Some(test_hash(1));
    match next_step(&f) {
        Step::DecidePlan(members) => {
            let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["a", "bb", "ccc"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn non_seed_waits_with_count_then_for_plan() {
    let v = view(vec![issuer("a", test_hash(1))], vec![]);
    let f = facts("b", false, &v);
    assert_eq!(
        next_step(&f),
        Step::Wait {
            phase: Phase::WaitingForPeers,
            reason: "waiting for peers 2/3".into()
        }
    );
    let v = view(vec![issuer("a", test_hash(1)), meta("ccc")], vec![]);
    let f = facts("b", false, &v);
    assert!(matches!(next_step(&f), Step::Wait { reason, .. } if reason.contains("plan")));
}

#[test]
fn plan_is_adopted_then_cert_requested_then_etcd_started_new() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(vec![issuer("a", test_hash(1))], vec![p.clone()]);
    let mut f = facts("b", false, &v);
    assert_eq!(next_step(&f), Step::AdoptPlan(p.clone()));
    f.plan = Some(&p);
    assert_eq!(
        next_step(&f),
        Step::RequestCert {
            issuer: "10.0.0.1:7946".parse().unwrap(),
            ca: test_hash(1)
        }
    );
    f.cert = CertState::Valid;
    f.local_ca = Some(test_hash(1));
    assert_eq!(next_step(&f), start(ClusterState::New, None));
    f.etcd_desired = true;
    assert_eq!(next_step(&f), Step::Steady);
}

#[test]
fn existing_data_is_resumed_never_bootstrapped() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    // All peers down, a full restart: no gossip at all.
    let v = view(vec![], vec![]);
    let mut f = facts("b", false, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    f.has_member = true;
    assert_eq!(next_step(&f), start(ClusterState::Existing, None));
    // The same on the seed.
    let mut f = facts("a", true, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.holds_ca_key = true;
    f.cert = CertState::Valid;
    f.has_member = true;
    assert_eq!(next_step(&f), start(ClusterState::Existing, None));
}

#[test]
fn persisted_plan_is_never_replaced_by_the_seed() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(vec![meta("bb"), meta("ccc")], vec![]);
    let mut f = facts("a", true, &v);
    f.plan = Some(&p);
    f.holds_ca_key = true;
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    assert_eq!(next_step(&f), start(ClusterState::New, None));
}

pub(super) fn formed(mut m: NodeMeta) -> NodeMeta {
    m.formed = true;
    m
}

fn mv(id: u64, name: &str, ip: &str, learner: bool, healthy: bool) -> MemberHealth {
    MemberHealth::example(id, name, ip, learner, healthy)
}

#[test]
fn late_agent_joins_as_a_learner_instead_of_bootstrapping() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(vec![formed(issuer("a", test_hash(1)))], vec![p.clone()]);
    let mut f = facts("d", false, &v);
    f.me_candidate.peer_url = "https://10.0.0.4:2380".into();
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    assert_eq!(next_step(&f), Step::QueryCluster);
    let unreachable = ClusterKnowledge::Unreachable("timeout".into());
    f.cluster = &unreachable;
    assert!(matches!(
        next_step(&f),
        Step::Wait {
            phase: Phase::Joining,
            ..
        }
    ));
    let members = ClusterKnowledge::Members(vec![
        mv(1, "a", "10.0.0.1", false, true),
        mv(2, "b", "10.0.0.2", false, true),
        mv(3, "c", "10.0.0.3", false, true),
    ]);
    f.cluster = &members;
    assert_eq!(next_step(&f), Step::AddLearner);
    // Once started as a learner, it asks to be promoted.
    f.etcd_desired = true;
    f.is_learner = true;
    f.member_id = Some(4);
    assert_eq!(next_step(&f), Step::Promote { id: 4 });
    f.is_learner = false;
    assert_eq!(next_step(&f), Step::Steady);
}

#[test]
fn a_host_that_lost_its_data_never_bootstraps() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    // c was wiped; a and b report a formed cluster.
    let v = view(
        vec![formed(issuer("a", test_hash(1))), formed(meta("b"))],
        vec![p.clone()],
    );
    let mut f = facts("c", false, &v);
    f.me_candidate.peer_url = "https://10.0.0.3:2380".into();
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    assert_eq!(next_step(&f), Step::QueryCluster);
    let members = ClusterKnowledge::Members(vec![
        mv(1, "a", "10.0.0.1", false, true),
        mv(2, "b", "10.0.0.2", false, true),
        mv(3, "c", "10.0.0.3", false, false),
    ]);
    f.cluster = &members;
    assert_eq!(next_step(&f), Step::RemoveMember { id: 3 });
    // Even with no peer up, a host that formed the cluster before does not bootstrap.
    let empty = view(vec![], vec![]);
    let mut g = f.clone();
    g.view = &empty;
    g.formed_here = true;
    g.cluster = &ClusterKnowledge::Unknown;
    assert_eq!(next_step(&g), Step::QueryCluster);
}

#[test]
fn initial_formation_waits_for_every_peers_metadata() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let mut v = view(vec![issuer("a", test_hash(1))], vec![p.clone()]);
    v.peers.push(Peer {
        id: NodeId {
            name: "c".into(),
            addr: "10.0.0.3:7946".parse().unwrap(),
            bump: 1,
        },
        state: PeerState::Alive,
        meta: None,
    });
    let mut f = facts("b", false, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    assert!(matches!(next_step(&f), Step::Wait { reason, .. } if reason.contains("c's metadata")));
}

#[test]
fn a_late_initial_member_bootstraps_into_the_formed_cluster() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(vec![formed(issuer("a", test_hash(1)))], vec![p.clone()]);
    let mut f = facts("c", false, &v);
    f.me_candidate.peer_url = "https://10.0.0.3:2380".into();
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    let members = ClusterKnowledge::Members(vec![
        mv(1, "a", "10.0.0.1", false, true),
        mv(2, "b", "10.0.0.2", false, true),
        mv(3, "", "10.0.0.3", false, false),
    ]);
    f.cluster = &members;
    assert_eq!(next_step(&f), start(ClusterState::New, None));
}

#[test]
fn damaged_data_is_moved_aside_only_when_the_cluster_can_do_without_it() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(
        vec![formed(issuer("a", test_hash(1))), formed(meta("b"))],
        vec![p.clone()],
    );
    let mut f = facts("c", false, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    f.has_member = true;
    f.etcd_desired = true;
    f.damaged = Some("walpb: crc mismatch");
    assert_eq!(next_step(&f), Step::QueryCluster);
    let healthy = ClusterKnowledge::Members(vec![
        mv(1, "a", "10.0.0.1", false, true),
        mv(2, "b", "10.0.0.2", false, true),
        mv(3, "c", "10.0.0.3", false, false),
    ]);
    f.cluster = &healthy;
    assert!(matches!(next_step(&f), Step::MoveDataAside { .. }));
    // With b down as well, c's data may be needed: keep it, say so.
    let degraded = ClusterKnowledge::Members(vec![
        mv(1, "a", "10.0.0.1", false, true),
        mv(2, "b", "10.0.0.2", false, false),
        mv(3, "c", "10.0.0.3", false, false),
    ]);
    f.cluster = &degraded;
    assert!(
        matches!(next_step(&f), Step::Wait { phase: Phase::Degraded, reason } if reason.contains("snapshot"))
    );
    let unreachable = ClusterKnowledge::Unreachable("timeout".into());
    f.cluster = &unreachable;
    assert!(matches!(
        next_step(&f),
        Step::Wait {
            phase: Phase::Degraded,
            ..
        }
    ));
}

#[test]
fn a_host_that_left_stays_out() {
    let p = plan(&[("a", "10.0.0.1")]);
    let v = view(vec![], vec![]);
    let mut f = facts("a", true, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.holds_ca_key = true;
    f.cert = CertState::Valid;
    f.left = true;
    assert!(matches!(
        next_step(&f),
        Step::Wait {
            phase: Phase::Left,
            ..
        }
    ));
}

#[test]
fn second_seed_is_a_conflict_on_both() {
    let mut other = meta("b");
    other.seed = true;
    let v = view(vec![other, meta("ccc")], vec![]);
    assert!(
        matches!(next_step(&facts("a", true, &v)), Step::Conflict(m) if m.contains("two seeds"))
    );
}

#[test]
fn different_cas_are_a_conflict() {
    // This node trusts CA 1, a peer announces CA 2.
    let v = view(vec![issuer("x", test_hash(2))], vec![]);
    let mut f = facts("b", false, &v);
    f.local_ca = Some(test_hash(1));
    assert!(matches!(next_step(&f), Step::Conflict(m) if m.contains("two clusters")));
    // No CA yet, two announced.
    let v = view(
        vec![issuer("x", test_hash(2)), issuer("y", test_hash(3))],
        vec![],
    );
    assert!(
        matches!(next_step(&facts("b", false, &v)), Step::Conflict(m) if m.contains("different CAs"))
    );
    // The pin disagrees with the only announced CA.
    let v = view(vec![issuer("x", test_hash(2))], vec![]);
    let mut f = facts("b", false, &v);
    f.pin = Some(test_hash(1));
    assert!(matches!(next_step(&f), Step::Conflict(_)));
    // The CA on disk disagrees with the pin.
    let v = view(vec![], vec![]);
    let mut f = facts("b", false, &v);
    f.pin = Some(test_hash(1));
    f.local_ca = Some(test_hash(2));
    assert!(matches!(next_step(&f), Step::Conflict(m) if m.contains("ca_hash")));
}

#[test]
fn a_second_plan_is_a_conflict() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let mut q = p.clone();
    q.cluster_token = "other".into();
    // Holding p, seeing q.
    let v = view(vec![issuer("a", test_hash(1))], vec![q.clone()]);
    let mut f = facts("b", false, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    f.cert = CertState::Valid;
    f.etcd_desired = true;
    assert!(matches!(next_step(&f), Step::Conflict(m) if m.contains("different plan")));
    // Holding nothing, seeing both.
    let v = view(vec![issuer("a", test_hash(1))], vec![p.clone(), q]);
    assert!(
        matches!(next_step(&facts("b", false, &v)), Step::Conflict(m) if m.contains("two plans"))
    );
    // A plan for another CA than the pinned one.
    let v = view(vec![], vec![p]);
    let mut f = facts("b", false, &v);
    f.pin = Some(test_hash(9));
    assert!(matches!(next_step(&f), Step::Conflict(_)));
}

#[test]
fn rebuilt_seed_joins_the_existing_cluster() {
    // The seed lost its disk; the others hold plan and CA.
    let mut b = meta("b");
    b.ca_hash = Some(test_hash(1));
    b.plan_id = Some(crate::plan::PlanId([1; 16]));
    let v = view(vec![b, meta("ccc")], vec![]);
    let f = facts("a", true, &v);
    let step = next_step(&f);
    assert!(
        matches!(&step, Step::Wait { reason, .. } if reason.contains("already exists")),
        "{step:?}"
    );
    // Once the plan arrives it is adopted, not replaced.
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let mut b = meta("b");
    b.ca_hash = Some(test_hash(1));
    let v = view(vec![b], vec![p.clone()]);
    assert_eq!(next_step(&facts("a", true, &v)), Step::AdoptPlan(p));
}

#[test]
fn certificate_rules() {
    let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")]);
    let v = view(vec![], vec![]);
    let mut f = facts("b", false, &v);
    f.plan = Some(&p);
    f.local_ca = Some(test_hash(1));
    // No issuer reachable and no certificate: wait.
    assert!(matches!(
        next_step(&f),
        Step::Wait {
            phase: Phase::RequestingCertificate,
            ..
        }
    ));
    // Renewal due but no issuer: keep going with the valid certificate.
    f.cert = CertState::RenewalDue;
    assert_eq!(next_step(&f), start(ClusterState::New, None));
    // An invalid certificate must be replaced first.
    f.cert = CertState::Invalid("expired".into());
    assert!(matches!(next_step(&f), Step::Wait { .. }));
    // The issuer renews its own.
    f.holds_ca_key = true;
    assert_eq!(next_step(&f), Step::IssueOwnCert);
    // An issuer of another CA is not asked.
    f.holds_ca_key = false;
    let v = view(vec![issuer("x", test_hash(2))], vec![]);
    let mut g = f.clone();
    g.view = &v;
    g.local_ca = None;
    g.cert = CertState::Missing;
    assert!(matches!(next_step(&g), Step::Conflict(_)));
}

#[test]
fn the_seed_does_not_decide_while_a_peers_metadata_is_missing() {
    // Two new agents and one whose metadata has not arrived (it might hold the cluster).
    let mut v = view(vec![meta("bb"), meta("ccc")], vec![]);
    v.peers.push(Peer {
        id: NodeId {
            name: "old".into(),
            addr: "10.0.0.9:7946".parse().unwrap(),
            bump: 1,
        },
        state: PeerState::Alive,
        meta: None,
    });
    let mut f = facts("a", true, &v);
    f.holds_ca_key = true;
    f.local_ca = Some(test_hash(1));
    assert!(
        matches!(next_step(&f), Step::Wait { reason, .. } if reason.contains("old's metadata"))
    );
}
