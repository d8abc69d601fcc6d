//! The controller's decision, as a pure function: given what this agent has on disk and what
//! gossip and etcd say, the next step on the way to a healthy member. Modelled on etcdadm's
//! named, idempotent phases: trust a CA → hold the plan → hold a certificate → run etcd.
//! Every rule that protects the guarantees (never two clusters, never a second CA or plan)
//! lives here and is unit-tested without sockets or sleeps.

use std::net::SocketAddr;

use super::membership::{join_action, removal_is_safe, JoinAction, MemberView};
use crate::etcd::ClusterState;
use crate::gossip::GossipView;
use crate::phase::Phase;
use crate::pki::CaHash;
use crate::plan::{decide_plan, Candidate, Plan, PlanDecision, PlanMember};

/// The node certificate's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    Missing,
    /// Present but unusable (expired, other CA, wrong address); the reason.
    Invalid(String),
    /// Valid, but two thirds of its lifetime have passed.
    RenewalDue,
    Valid,
}

/// What this agent knows of the running cluster's membership (asked for when needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterKnowledge {
    /// Not asked recently.
    Unknown,
    /// No member answered; why.
    Unreachable(String),
    /// The member list with each member's health.
    Members(Vec<MemberView>),
}

/// Everything the decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub me: &'a str,
    pub seed: bool,
    pub expect: u32,
    /// `ca_hash` from the config.
    pub pin: Option<CaHash>,
    /// The CA certificate on disk (the CA this node trusts).
    pub local_ca: Option<CaHash>,
    /// This node holds the CA key (it is the issuer).
    pub holds_ca_key: bool,
    /// The persisted plan.
    pub plan: Option<&'a Plan>,
    pub cert: CertState,
    /// The etcd data dir holds a member.
    pub has_member: bool,
    /// etcd has been started (the supervisor keeps it running).
    pub etcd_desired: bool,
    /// This host's member was healthy in a cluster once (persisted marker).
    pub formed_here: bool,
    /// This host left the cluster (`quorate leave`).
    pub left: bool,
    /// The local member's ID and whether it is a learner, while etcd runs.
    pub member_id: Option<u64>,
    pub is_learner: bool,
    /// The running cluster's membership, when asked.
    pub cluster: &'a ClusterKnowledge,
    /// etcd keeps failing to start on this host's data, with this message about the data.
    pub damaged: Option<&'a str>,
    pub view: &'a GossipView,
    /// This agent as a plan candidate.
    pub me_candidate: Candidate,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A conflict the operator must resolve; nothing proceeds (a running etcd keeps running).
    Conflict(String),
    /// Nothing to do until something changes.
    Wait { phase: Phase, reason: String },
    /// Seed: create the cluster CA.
    CreateCa,
    /// Seed: decide the plan with these members.
    DecidePlan(Vec<PlanMember>),
    /// Persist a plan received over gossip.
    AdoptPlan(Plan),
    /// Issuer: sign our own certificate.
    IssueOwnCert,
    /// Ask the issuer at this API address to sign our CSR.
    RequestCert { issuer: SocketAddr, ca: CaHash },
    /// Start etcd; a joining member gets `--initial-cluster` from the cluster, not the plan.
    StartEtcd {
        state: ClusterState,
        initial_cluster: Option<String>,
    },
    /// Ask the running cluster for its members and their health.
    QueryCluster,
    /// Add this host as a learner, then start etcd to join.
    AddLearner,
    /// Remove a member (this host's stale one), after checking it cannot cost quorum.
    RemoveMember { id: u64 },
    /// Promote this host's learner to a voter (etcd refuses until it has caught up).
    Promote { id: u64 },
    /// Stop etcd and move its damaged data directory aside (never delete it); the host then
    /// rejoins like a replaced one.
    MoveDataAside { reason: String },
    /// etcd is running; watch its health.
    Steady,
}

fn conflict(msg: String) -> Step {
    Step::Conflict(msg)
}

/// Decides the next step.
pub fn next_step(f: &Facts<'_>) -> Step {
    // 1. Which CA this node trusts.
    if let (Some(disk), Some(pin)) = (f.local_ca, f.pin) {
        if disk != pin {
            return conflict(format!(
                "the CA on disk is {disk} but ca_hash pins {pin}; this host belongs to another \
                 cluster (remove its state directory) or ca_hash is wrong"
            ));
        }
    }
    let trusted = f.local_ca.or(f.pin);
    // Announced CAs in order of first appearance, with who announces them.
    let mut announced: Vec<(CaHash, Vec<&str>)> = Vec::new();
    for meta in f.view.live_metas() {
        if let Some(h) = meta.ca_hash {
            match announced.iter_mut().find(|(a, _)| *a == h) {
                Some((_, who)) => who.push(&meta.name),
                None => announced.push((h, vec![&meta.name])),
            }
        }
    }
    if let Some(t) = trusted {
        if let Some((h, who)) = announced.iter().find(|(h, _)| *h != t) {
            return conflict(format!(
                "{} trust{} CA {h} but this node trusts {t}: two clusters share this join \
                 token (use a different token per cluster, or wipe the wrong hosts)",
                who.join(", "),
                if who.len() == 1 { "s" } else { "" },
            ));
        }
    } else if announced.len() > 1 {
        let list: Vec<String> = announced
            .iter()
            .map(|(h, who)| format!("{} ({h})", who.join(", ")))
            .collect();
        return conflict(format!(
            "agents announce different CAs: {}; only one seed may create the CA",
            list.join(" vs ")
        ));
    }
    let trust = trusted.or_else(|| announced.first().map(|(h, _)| *h));

    // 2. The plan.
    let plan = match f.plan {
        Some(p) => {
            if trust.is_some_and(|t| t != p.ca_hash) {
                return conflict(format!(
                    "plan {} was made for CA {} but this node trusts {}",
                    p.id(),
                    p.ca_hash,
                    trust.map(|t| t.to_string()).unwrap_or_default()
                ));
            }
            if let Some(other) = f.view.plans.iter().find(|q| q.id() != p.id()) {
                return conflict(format!(
                    "a different plan {} (decided by {}) is circulating; this node holds plan \
                     {} (decided by {}). A plan is decided once: find the second seed",
                    other.id(),
                    other.decided_by,
                    p.id(),
                    p.decided_by
                ));
            }
            p
        }
        None => return plan_step(f, trust),
    };

    // 3. The certificate.
    match &f.cert {
        CertState::Missing | CertState::Invalid(_) => return cert_step(f, plan.ca_hash),
        CertState::RenewalDue => {
            let step = cert_step(f, plan.ca_hash);
            if !matches!(step, Step::Wait { .. }) {
                return step;
            }
            // No issuer right now: the certificate is still valid, carry on.
        }
        CertState::Valid => {}
    }

    // 4. etcd.
    etcd_step(f, plan)
}

fn start(state: ClusterState, initial_cluster: Option<String>) -> Step {
    Step::StartEtcd {
        state,
        initial_cluster,
    }
}

fn joining(reason: String) -> Step {
    Step::Wait {
        phase: Phase::Joining,
        reason,
    }
}

/// etcd cannot read this host's data. It may be moved aside only if the cluster keeps quorum
/// without this member (then the data is not needed: the others hold everything).
fn damaged_step(f: &Facts<'_>, why: &str) -> Step {
    let degraded = |reason: String| Step::Wait {
        phase: Phase::Degraded,
        reason,
    };
    match f.cluster {
        ClusterKnowledge::Unknown => Step::QueryCluster,
        ClusterKnowledge::Unreachable(e) => degraded(format!(
            "etcd's data looks damaged ({why}); waiting for the other members to answer ({e})"
        )),
        ClusterKnowledge::Members(members) => {
            let mine = members.iter().find(|m| m.name == f.me);
            match mine.map(|m| removal_is_safe(members, m.id)) {
                Some(Ok(())) | None => Step::MoveDataAside {
                    reason: why.to_owned(),
                },
                Some(Err(e)) => degraded(format!(
                    "etcd's data looks damaged ({why}), but the cluster cannot do without this \
                     member: {e}. Restore from a snapshot (docs/operations.md)"
                )),
            }
        }
    }
}

/// Run, resume, bootstrap or join.
fn etcd_step(f: &Facts<'_>, plan: &Plan) -> Step {
    if f.left {
        return Step::Wait {
            phase: Phase::Left,
            reason: "this host left the cluster (quorate leave); restart the agent to join again"
                .into(),
        };
    }
    if let (true, Some(why)) = (f.etcd_desired && f.has_member, f.damaged) {
        return damaged_step(f, why);
    }
    if f.etcd_desired {
        return match (f.is_learner, f.member_id) {
            (true, Some(id)) => Step::Promote { id },
            _ => Step::Steady,
        };
    }
    // A member on disk is always resumed, never bootstrapped again.
    if f.has_member {
        return start(ClusterState::Existing, None);
    }
    let in_plan = plan.member(f.me).is_some();
    let formed_elsewhere = f.view.live_metas().any(|m| m.formed);
    if in_plan && !f.formed_here && !formed_elsewhere {
        // The initial formation: no host has seen the cluster healthy yet. Every live peer's
        // metadata must be known, so that a formed cluster is never missed.
        if let Some(p) = f.view.live().find(|p| p.meta.is_none()) {
            return Step::Wait {
                phase: Phase::StartingEtcd,
                reason: format!("waiting for {}'s metadata", p.id.name),
            };
        }
        return start(ClusterState::New, None);
    }
    // The cluster exists (or this host has lost its data): ask it.
    match f.cluster {
        ClusterKnowledge::Unknown => Step::QueryCluster,
        ClusterKnowledge::Unreachable(why) => {
            joining(format!("waiting for the running cluster to answer: {why}"))
        }
        ClusterKnowledge::Members(members) => {
            match join_action(f.me, &f.me_candidate.peer_url, in_plan, members) {
                JoinAction::StartNew => start(ClusterState::New, None),
                JoinAction::StartLearner { initial_cluster } => {
                    start(ClusterState::Existing, Some(initial_cluster))
                }
                JoinAction::AddLearner => Step::AddLearner,
                JoinAction::RemoveStale { id } => Step::RemoveMember { id },
                JoinAction::Wait(reason) => joining(reason),
            }
        }
    }
}

/// No persisted plan yet: adopt one from gossip, or (seed) decide it, or wait.
fn plan_step(f: &Facts<'_>, trust: Option<CaHash>) -> Step {
    let mut plans: Vec<&Plan> = Vec::new();
    for p in &f.view.plans {
        if trust.is_some_and(|t| t != p.ca_hash) {
            return conflict(format!(
                "plan {} decided by {} is for CA {}, but this node trusts {}",
                p.id(),
                p.decided_by,
                p.ca_hash,
                trust.map(|t| t.to_string()).unwrap_or_default()
            ));
        }
        if !plans.iter().any(|q| q.id() == p.id()) {
            plans.push(p);
        }
    }
    match plans.as_slice() {
        [] => {}
        [p] => return Step::AdoptPlan((*p).clone()),
        [a, b, ..] => {
            return conflict(format!(
                "two plans are circulating ({} by {} and {} by {}); only one seed may decide",
                a.id(),
                a.decided_by,
                b.id(),
                b.decided_by
            ))
        }
    }
    let live = 1 + f.view.live().count();
    if !f.seed {
        let reason = if live < f.expect as usize {
            format!("waiting for peers {live}/{}", f.expect)
        } else {
            "waiting for the seed's plan".to_owned()
        };
        return Step::Wait {
            phase: Phase::WaitingForPeers,
            reason,
        };
    }
    let mut candidates = vec![f.me_candidate.clone()];
    candidates.extend(f.view.live_metas().map(|m| Candidate {
        name: m.name.clone(),
        peer_url: m.peer_url.clone(),
        client_url: m.client_url.clone(),
        seed: m.seed,
        ca_hash: m.ca_hash,
        plan_id: m.plan_id,
    }));
    match decide_plan(f.me, f.expect, &candidates) {
        PlanDecision::Conflict(msg) => conflict(msg),
        PlanDecision::ClusterExists { by } => Step::Wait {
            phase: Phase::WaitingForPeers,
            reason: format!("a cluster already exists ({by} belongs to it); waiting for its plan"),
        },
        PlanDecision::Wait { have, need } => Step::Wait {
            phase: Phase::WaitingForPeers,
            reason: format!("waiting for peers {have}/{need}"),
        },
        PlanDecision::Decide { members } => {
            if f.holds_ca_key {
                Step::DecidePlan(members)
            } else {
                Step::CreateCa
            }
        }
    }
}

/// Get a certificate signed by `ca`: ourselves if we hold the key, else a live issuer.
fn cert_step(f: &Facts<'_>, ca: CaHash) -> Step {
    if f.holds_ca_key {
        return Step::IssueOwnCert;
    }
    match f
        .view
        .live_metas()
        .find(|m| m.issuer && m.ca_hash == Some(ca))
    {
        Some(issuer) => Step::RequestCert {
            issuer: issuer.api_addr,
            ca,
        },
        None => Step::Wait {
            phase: Phase::RequestingCertificate,
            reason: "requesting certificate: waiting for the issuer to be reachable".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{NodeId, NodeMeta, Peer, PeerState};
    use crate::plan::tests::{plan, test_hash};

    fn meta(name: &str) -> NodeMeta {
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

    fn view(metas: Vec<NodeMeta>, plans: Vec<Plan>) -> GossipView {
        GossipView {
            peers: metas.into_iter().map(peer).collect(),
            plans,
        }
    }

    fn facts<'a>(me: &'a str, seed: bool, view: &'a GossipView) -> Facts<'a> {
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
        }
    }

    fn issuer(name: &str, ca: CaHash) -> NodeMeta {
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

    fn formed(mut m: NodeMeta) -> NodeMeta {
        m.formed = true;
        m
    }

    fn mv(id: u64, name: &str, ip: &str, learner: bool, healthy: bool) -> MemberView {
        MemberView {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{ip}:2380")],
            is_learner: learner,
            healthy,
        }
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
        assert!(
            matches!(next_step(&f), Step::Wait { reason, .. } if reason.contains("c's metadata"))
        );
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
}
