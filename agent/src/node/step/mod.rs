//! The controller's decision, as a pure function: given what this agent has on disk and what
//! gossip and etcd say, the next step on the way to a healthy member. Modelled on etcdadm's
//! named, idempotent phases: trust a CA → hold the plan → hold a certificate → run etcd.
//! Every rule that protects the guarantees (never two clusters, never a second CA or plan)
//! lives here and is unit-tested without sockets or sleeps.

use std::net::SocketAddr;

use super::membership::{join_action, removal_is_safe, JoinAction};
use crate::etcd::{ClusterState, MemberHealth};
use crate::gossip::GossipView;
use crate::phase::Phase;
use crate::pki::CaHash;
use crate::plan::{decide_plan, Candidate, Plan, PlanDecision, PlanMember};
use crate::restore::RestorePlan;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClusterKnowledge {
    /// Not asked recently.
    #[default]
    Unknown,
    /// No member answered; why.
    Unreachable(String),
    /// The member list with each member's health.
    Members(Vec<MemberHealth>),
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
    /// The restore plans: the one waiting here and the generation applied.
    pub restore: RestoreFacts<'a>,
    /// Seed with `restore_from`: the cluster forms from a snapshot.
    pub restore_from: bool,
    /// The cluster token the snapshot was restored with, once it is ready.
    pub restored_token: Option<&'a str>,
    /// Why forming from `restore_from` failed in this run (the operator must act; a restart
    /// tries again).
    pub restore_from_error: Option<&'a str>,
}

/// What the decision needs about restore plans.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreFacts<'a> {
    /// A verified restore plan newer than the applied generation, to apply on this host.
    pub pending: Option<&'a RestorePlan>,
    /// The restore generation applied here (0: only the bootstrap plan).
    pub applied: u64,
    /// The newest advertised generation whose plan was fetched and refused in this run: a
    /// bare number in gossip (from a token holder, say) is not fetched again and again.
    pub refused: u64,
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
    /// A restore plan names this host: stop etcd, move its data aside, fetch the snapshot,
    /// restore it with the plan's members and token, mark the generation applied.
    Restore { generation: u64 },
    /// A restore plan leaves this host out (it was down): stop etcd and move the old data
    /// aside, then join the restored cluster as a new member.
    RestoreLeftOut { generation: u64 },
    /// A live agent advertises a newer restore generation: fetch its signed plan and verify it.
    FetchRestorePlan { from: SocketAddr, generation: u64 },
    /// Seed with `restore_from`: restore the snapshot as a one-member cluster and recover its
    /// CA.
    RestoreFromSnapshot,
    /// Seed with `restore_from`, snapshot restored: decide the one-member plan with its token.
    DecideRestoredPlan { token: String },
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
            let mine = members.iter().find(|m| m.member.name == f.me);
            match mine.map(|m| removal_is_safe(members, m.member.id)) {
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
    if let Some(step) = restore_step(f) {
        return step;
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

/// A restore plan takes precedence over every other etcd step: while one is pending, nothing
/// joins, removes or starts a member. A newer generation seen in gossip is only a reason to
/// fetch the signed plan; it never touches data by itself.
fn restore_step(f: &Facts<'_>) -> Option<Step> {
    if let Some(p) = f.restore.pending {
        let generation = p.generation;
        return Some(if p.member(f.me).is_some() {
            Step::Restore { generation }
        } else {
            Step::RestoreLeftOut { generation }
        });
    }
    f.view
        .live_metas()
        .filter(|m| m.restore_generation > f.restore.applied.max(f.restore.refused))
        .max_by_key(|m| m.restore_generation)
        .map(|m| Step::FetchRestorePlan {
            from: m.api_addr,
            generation: m.restore_generation,
        })
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
    // A live peer whose metadata has not arrived may already belong to a cluster (then this
    // seed must join it, not decide a second plan): wait for everyone's metadata.
    if let Some(p) = f.view.live().find(|p| p.meta.is_none()) {
        return Step::Wait {
            phase: Phase::WaitingForPeers,
            reason: format!("waiting for {}'s metadata", p.id.name),
        };
    }
    if f.restore_from && !f.view.live_metas().any(|m| m.formed) {
        // The cluster forms from the snapshot: this seed alone, the others grow it.
        if let Some(why) = f.restore_from_error {
            return conflict(format!("cannot form the cluster from restore_from: {why}"));
        }
        return match f.restored_token {
            None => Step::RestoreFromSnapshot,
            Some(token) if f.holds_ca_key => Step::DecideRestoredPlan {
                token: token.to_owned(),
            },
            Some(_) => conflict(
                "the snapshot was restored but the CA recovered from it is missing from the \
                 PKI directory; remove restore-from.token and etcd/ from the state directory \
                 to restore again"
                    .into(),
            ),
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
mod restore_tests;
#[cfg(test)]
mod tests;
