//! How far a restore has got, as pure functions of this agent's restore record and the
//! generations the other agents advertise in gossip: which plan members are done (shown in
//! `quorate status`, /status and by `quorate restore` while it waits), and whether a restore is
//! in progress (then a new one is refused).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::check::InProgress;
use super::store::RestoreRecord;

/// One plan member's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProgress {
    pub name: String,
    /// It restored the snapshot and started etcd on it.
    pub done: bool,
}

/// The newest restore plan this agent knows and its members' progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreProgress {
    pub generation: u64,
    pub decided_by: String,
    /// Unix seconds.
    pub decided_at: u64,
    pub revision: i64,
    /// This agent has applied it (restored, or moved its data aside when left out).
    pub applied_here: bool,
    pub members: Vec<MemberProgress>,
}

impl RestoreProgress {
    /// Every member of the plan is done.
    pub fn complete(&self) -> bool {
        self.members.iter().all(|m| m.done)
    }

    /// Plain lines for `quorate status`.
    pub fn render(&self, out: &mut String) {
        let done: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.done)
            .map(|m| m.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "\nRestore: generation {} by {} (snapshot revision {}), {}/{} members done{}",
            self.generation,
            self.decided_by,
            self.revision,
            done.len(),
            self.members.len(),
            if done.is_empty() {
                String::new()
            } else {
                format!(": {}", done.join(", "))
            }
        );
    }
}

/// The progress of the newest plan in `record`; `generations` are the (name, applied restore
/// generation) pairs of the live agents other than `me`.
pub fn progress(
    me: &str,
    record: &RestoreRecord,
    generations: &[(String, u64)],
) -> Option<RestoreProgress> {
    let signed = record.signed.as_ref()?;
    let plan = &signed.plan;
    let members = plan
        .members
        .iter()
        .map(|m| MemberProgress {
            name: m.name.clone(),
            done: if m.name == me {
                record.applied >= plan.generation
            } else {
                generations
                    .iter()
                    .any(|(n, g)| *n == m.name && *g >= plan.generation)
            },
        })
        .collect();
    Some(RestoreProgress {
        generation: plan.generation,
        decided_by: plan.decided_by.clone(),
        decided_at: plan.decided_at,
        revision: plan.snapshot.revision,
        applied_here: record.applied >= plan.generation,
        members,
    })
}

/// A restore in progress: pending here, advertised by a live agent as newer than what this
/// agent applied, or applied here while a live member of its plan has not finished it.
pub fn in_progress(
    me: &str,
    record: &RestoreRecord,
    generations: &[(String, u64)],
) -> Option<InProgress> {
    if let Some(p) = record.pending() {
        return Some(InProgress {
            generation: p.plan.generation,
            by: p.plan.decided_by.clone(),
            at: p.plan.decided_at,
        });
    }
    if let Some((name, g)) = generations.iter().find(|(_, g)| *g > record.applied) {
        return Some(InProgress {
            generation: *g,
            by: format!(
                "another member ({name} has applied it; its plan has not reached this agent yet)"
            ),
            at: 0,
        });
    }
    let signed = record.signed.as_ref()?;
    let plan = &signed.plan;
    let behind = plan.members.iter().any(|m| {
        m.name != me
            && generations
                .iter()
                .any(|(n, g)| *n == m.name && *g < plan.generation)
    });
    behind.then(|| InProgress {
        generation: plan.generation,
        by: plan.decided_by.clone(),
        at: plan.decided_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::tests::example_plan;
    use crate::restore::SignedPlan;

    fn record(applied: u64) -> RestoreRecord {
        RestoreRecord {
            signed: Some(SignedPlan {
                plan: example_plan(1),
                signature: String::new(),
                cert_pem: String::new(),
            }),
            applied,
        }
    }

    fn gens(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(n, g)| (n.to_string(), *g)).collect()
    }

    #[test]
    fn members_are_done_once_they_advertise_the_generation() {
        let p = progress("a", &record(1), &gens(&[("b", 1), ("c", 0)])).unwrap();
        let done: Vec<bool> = p.members.iter().map(|m| m.done).collect();
        assert_eq!(done, [true, true, false]);
        assert!(!p.complete());
        let p = progress("a", &record(1), &gens(&[("b", 1), ("c", 1)])).unwrap();
        assert!(p.complete());
        let mut out = String::new();
        p.render(&mut out);
        assert!(out.contains("3/3 members done: a, b, c"), "{out}");
        assert!(progress("a", &RestoreRecord::default(), &[]).is_none());
    }

    #[test]
    fn in_progress_while_pending_newer_elsewhere_or_members_behind() {
        assert_eq!(in_progress("a", &record(0), &[]).unwrap().generation, 1);
        assert!(in_progress("a", &record(1), &gens(&[("b", 0)])).is_some());
        assert!(in_progress("a", &record(1), &gens(&[("b", 1), ("c", 1)])).is_none());
        // A member that is down (not live, so not listed) does not hold a restore up.
        assert!(in_progress("a", &record(1), &gens(&[("b", 1)])).is_none());
        let none = RestoreRecord::default();
        assert!(in_progress("a", &none, &gens(&[("b", 2)])).is_some());
        assert!(in_progress("a", &none, &gens(&[("b", 0)])).is_none());
    }
}
