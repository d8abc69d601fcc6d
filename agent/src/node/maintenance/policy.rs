//! The timing rules of cluster maintenance, pure (the current time is an argument): when an
//! agent counts as dead for `remove_dead_after` (names count from the first time this agent
//! saw them, so a freshly started agent never considers its peers dead), when a leftover
//! learner has been unclaimed long enough to remove, and how often the leader's agent looks.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// How often the leader's agent looks for dead members and leftover learners.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long an unstarted learner may stay unclaimed before it is removed.
pub const UNCLAIMED_LEARNER_AFTER: Duration = Duration::from_secs(120);

/// What maintenance remembers between turns.
#[derive(Debug, Default)]
pub struct Tracker {
    /// When each agent was last seen alive in gossip (or first known).
    seen: HashMap<String, Instant>,
    /// Unstarted, unclaimed learners by member ID, since when.
    unclaimed: HashMap<u64, Instant>,
    checked: Option<Instant>,
}

impl Tracker {
    /// Whether a maintenance turn is due at `now` (and records it).
    pub fn due(&mut self, now: Instant) -> bool {
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            return false;
        }
        self.checked = Some(now);
        true
    }

    /// Records at `now` the names etcd knows (counted from their first sight) and the names
    /// alive in gossip (refreshed).
    pub fn observe<'a>(
        &mut self,
        now: Instant,
        known: impl IntoIterator<Item = &'a str>,
        live: impl IntoIterator<Item = &'a str>,
    ) {
        for name in known {
            if !name.is_empty() {
                self.seen.entry(name.to_owned()).or_insert(now);
            }
        }
        for name in live {
            self.seen.insert(name.to_owned(), now);
        }
    }

    /// When `name` was last seen alive (or first known).
    pub fn last_seen(&self, name: &str) -> Option<Instant> {
        self.seen.get(name).copied()
    }

    /// Names not seen alive for longer than `after` at `now`.
    pub fn dead_longer_than(&self, now: Instant, after: Duration) -> BTreeSet<String> {
        self.seen
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) > after)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Of the learners that are unstarted and unclaimed now (`leftovers`), those unclaimed for
    /// longer than [`UNCLAIMED_LEARNER_AFTER`]; learners no longer left over are forgotten.
    pub fn learners_to_remove(&mut self, now: Instant, leftovers: &[u64]) -> Vec<u64> {
        self.unclaimed.retain(|id, _| leftovers.contains(id));
        leftovers
            .iter()
            .filter(|id| {
                let since = *self.unclaimed.entry(**id).or_insert(now);
                now.saturating_duration_since(since) >= UNCLAIMED_LEARNER_AFTER
            })
            .copied()
            .collect()
    }

    /// A learner was removed.
    pub fn forget_learner(&mut self, id: u64) {
        self.unclaimed.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_from_first_sight_and_live_peers_refresh() {
        let t0 = Instant::now();
        let mut s = Tracker::default();
        s.observe(t0, ["a", "b"], []);
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!(
            s.dead_longer_than(t30, Duration::from_secs(20)),
            ["a".to_string(), "b".to_string()].into()
        );
        assert!(s.dead_longer_than(t30, Duration::from_secs(40)).is_empty());
        // Knowing a name again does not reset it; seeing it alive does.
        s.observe(t30, ["a"], ["b"]);
        let dead = s.dead_longer_than(t30, Duration::from_secs(20));
        assert!(dead.contains("a") && !dead.contains("b"), "{dead:?}");
        // Unnamed (never started) members are not tracked.
        s.observe(t30, [""], []);
        assert!(!s
            .dead_longer_than(t30 + Duration::from_secs(99), Duration::ZERO)
            .contains(""));
    }

    #[test]
    fn a_turn_every_five_seconds() {
        let t0 = Instant::now();
        let mut s = Tracker::default();
        assert!(s.due(t0));
        assert!(!s.due(t0 + Duration::from_secs(4)));
        assert!(s.due(t0 + EVERY));
    }

    #[test]
    fn leftover_learners_are_removed_after_the_grace_and_forgotten_when_claimed() {
        let t0 = Instant::now();
        let mut s = Tracker::default();
        assert!(s.learners_to_remove(t0, &[7, 8]).is_empty());
        let later = t0 + UNCLAIMED_LEARNER_AFTER - Duration::from_secs(1);
        assert!(s.learners_to_remove(later, &[7, 8]).is_empty());
        // 8 got claimed (its host came back) and is forgotten; 7 is due.
        let due = t0 + UNCLAIMED_LEARNER_AFTER;
        assert_eq!(s.learners_to_remove(due, &[7]), vec![7]);
        // If 8 is left over again later, its grace starts anew.
        assert!(s.learners_to_remove(due, &[7, 8]) == vec![7]);
        s.forget_learner(7);
        assert!(
            s.learners_to_remove(due, &[7]).is_empty(),
            "grace restarts after removal"
        );
    }
}
