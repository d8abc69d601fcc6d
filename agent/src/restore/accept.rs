//! Whether an agent accepts a (signature-verified) restore plan, as a pure decision: only a
//! generation newer than the one it has applied, and only from a member that is a current
//! voter in this agent's own view of the membership.

use super::plan::SignedPlan;
use super::RestoreError;

/// Accepts `signed` given the generation this agent applied (0: only the bootstrap plan) and
/// the names of the current voting members as this agent sees them.
pub fn accept_plan(
    signed: &SignedPlan,
    applied: u64,
    voters: &[String],
) -> Result<(), RestoreError> {
    let plan = &signed.plan;
    let refuse = |reason: String| RestoreError::BadPlan {
        generation: plan.generation,
        decided_by: plan.decided_by.clone(),
        reason,
    };
    if plan.generation <= applied {
        return Err(refuse(format!(
            "this agent already applied generation {applied}; a restore plan is applied once and \
             only a newer generation follows it"
        )));
    }
    if !voters.contains(&plan.decided_by) {
        return Err(refuse(format!(
            "{} is not a voting member of this cluster (voters: {})",
            plan.decided_by,
            voters.join(", ")
        )));
    }
    if plan.members.is_empty() {
        return Err(refuse("it names no members".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::tests::example_plan;

    fn signed(generation: u64) -> SignedPlan {
        SignedPlan {
            plan: example_plan(generation),
            signature: String::new(),
            cert_pem: String::new(),
        }
    }

    fn voters(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_newer_generation_from_a_voter_is_accepted() {
        accept_plan(&signed(1), 0, &voters(&["a", "b", "c"])).unwrap();
        accept_plan(&signed(3), 2, &voters(&["a"])).unwrap();
    }

    #[test]
    fn a_generation_not_newer_is_refused() {
        for (generation, applied) in [(1, 1), (1, 2), (0, 0)] {
            let err = accept_plan(&signed(generation), applied, &voters(&["a"])).unwrap_err();
            assert!(err.to_string().contains("applied once"), "{err}");
        }
    }

    #[test]
    fn a_decider_that_is_not_a_voter_is_refused() {
        let err = accept_plan(&signed(1), 0, &voters(&["b", "c"])).unwrap_err();
        assert!(err.to_string().contains("not a voting member"), "{err}");
    }
}
