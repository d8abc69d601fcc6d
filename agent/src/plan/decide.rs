//! The seed's one-time decision: given the agents that are alive right now, decide the plan,
//! keep waiting, or refuse. Pure: no clock, no IO, exhaustively tested.
//!
//! The rules, in order:
//! 1. Another live agent that also calls itself the seed is a conflict: two seeds would make
//!    two CAs and two clusters, so neither proceeds until the operator fixes the configs.
//! 2. If any live agent already trusts a CA or holds a plan, a cluster exists: the seed must
//!    not create a new one (this is how a seed rebuilt with an empty disk rejoins).
//! 3. Duplicate node names are a conflict (etcd member names must be unique).
//! 4. Fewer than `bootstrap_expect` live agents: wait.
//! 5. Otherwise the seed and the first `bootstrap_expect - 1` others by name form the plan;
//!    agents beyond that join later as learners.

use super::{PlanId, PlanMember};
use crate::pki::CaHash;

/// What the seed knows of one live agent (itself included), from gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    pub seed: bool,
    pub ca_hash: Option<CaHash>,
    pub plan_id: Option<PlanId>,
}

/// The outcome of [`decide_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanDecision {
    /// Not enough agents yet.
    Wait { have: usize, need: usize },
    /// Decide a plan with these members.
    Decide { members: Vec<PlanMember> },
    /// A cluster already exists (someone trusts a CA or holds a plan): join it.
    ClusterExists { by: String },
    /// A configuration conflict that needs the operator.
    Conflict(String),
}

/// Decides the bootstrap plan. `me` must be among `live`.
pub fn decide_plan(me: &str, expect: u32, live: &[Candidate]) -> PlanDecision {
    if let Some(other) = live.iter().find(|c| c.seed && c.name != me) {
        return PlanDecision::Conflict(format!(
            "two seeds: {me} and {} both have seed = true; exactly one host may be the seed \
             (set seed = false on all but one and restart them)",
            other.name
        ));
    }
    if let Some(existing) = live
        .iter()
        .find(|c| c.name != me && (c.ca_hash.is_some() || c.plan_id.is_some()))
    {
        return PlanDecision::ClusterExists {
            by: existing.name.clone(),
        };
    }
    let mut names: Vec<&str> = live.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return PlanDecision::Conflict(format!(
            "two agents are named {}; node names must be unique (set node_name)",
            w[0]
        ));
    }
    let need = expect as usize;
    if live.len() < need {
        return PlanDecision::Wait {
            have: live.len(),
            need,
        };
    }
    let mut chosen: Vec<&Candidate> = live.iter().filter(|c| c.name == me).collect();
    let mut others: Vec<&Candidate> = live.iter().filter(|c| c.name != me).collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    chosen.extend(others.into_iter().take(need.saturating_sub(1)));
    let mut members: Vec<PlanMember> = chosen
        .into_iter()
        .map(|c| PlanMember {
            name: c.name.clone(),
            peer_url: c.peer_url.clone(),
            client_url: c.client_url.clone(),
        })
        .collect();
    members.sort();
    PlanDecision::Decide { members }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::test_hash;

    fn cand(name: &str, seed: bool) -> Candidate {
        Candidate {
            name: name.into(),
            peer_url: format!("https://{name}:2380"),
            client_url: format!("https://{name}:2379"),
            seed,
            ca_hash: None,
            plan_id: None,
        }
    }

    fn names(d: &PlanDecision) -> Vec<String> {
        match d {
            PlanDecision::Decide { members } => members.iter().map(|m| m.name.clone()).collect(),
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    #[test]
    fn waits_for_expected_count() {
        let live = vec![cand("a", true), cand("b", false)];
        assert_eq!(
            decide_plan("a", 3, &live),
            PlanDecision::Wait { have: 2, need: 3 }
        );
        assert_eq!(
            decide_plan("a", 3, &live[..1]),
            PlanDecision::Wait { have: 1, need: 3 }
        );
    }

    #[test]
    fn decides_with_exactly_expected() {
        let live = vec![cand("b", false), cand("a", true), cand("c", false)];
        assert_eq!(names(&decide_plan("a", 3, &live)), ["a", "b", "c"]);
    }

    #[test]
    fn single_node_cluster() {
        assert_eq!(names(&decide_plan("a", 1, &[cand("a", true)])), ["a"]);
    }

    #[test]
    fn more_than_expected_keeps_seed_and_first_by_name() {
        let live = vec![
            cand("e", false),
            cand("z", true),
            cand("d", false),
            cand("b", false),
            cand("c", false),
        ];
        // The seed is always in; the rest are the first two by name; d and e join later.
        assert_eq!(names(&decide_plan("z", 3, &live)), ["b", "c", "z"]);
    }

    #[test]
    fn second_seed_is_a_conflict() {
        let live = vec![cand("a", true), cand("b", true), cand("c", false)];
        match decide_plan("a", 3, &live) {
            PlanDecision::Conflict(msg) => {
                assert!(msg.contains("two seeds") && msg.contains('b'), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // Also before enough agents are there: the conflict is reported at once.
        assert!(matches!(
            decide_plan("b", 3, &live[..2]),
            PlanDecision::Conflict(_)
        ));
    }

    #[test]
    fn existing_cluster_is_joined_not_replaced() {
        let mut b = cand("b", false);
        b.plan_id = Some(PlanId([7; 16]));
        let live = vec![cand("a", true), b, cand("c", false)];
        assert_eq!(
            decide_plan("a", 3, &live),
            PlanDecision::ClusterExists { by: "b".into() }
        );
        let mut c = cand("c", false);
        c.ca_hash = Some(test_hash(3));
        assert_eq!(
            decide_plan("a", 1, &[cand("a", true), c]),
            PlanDecision::ClusterExists { by: "c".into() }
        );
    }

    #[test]
    fn duplicate_names_conflict() {
        let live = vec![cand("a", true), cand("b", false), cand("b", false)];
        assert!(matches!(
            decide_plan("a", 3, &live),
            PlanDecision::Conflict(m) if m.contains("named b")
        ));
    }
}
