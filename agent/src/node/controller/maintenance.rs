//! Cluster maintenance done by one agent, the one whose etcd member is the leader: removing
//! members whose agents have been dead in gossip longer than `remove_dead_after` (off by
//! default), one at a time and only when that cannot cost quorum, so that the cluster regains
//! its fault tolerance and new hosts can join (etcd refuses new members while a voter is down);
//! and removing learners that were added but never started and that no live agent claims
//! (always; removing a learner never affects quorum), since they would block every join.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::Controller;
use crate::etcd::{cluster, EtcdHealth};
use crate::gossip::GossipView;
use crate::node::membership::{dead_member_to_remove, unclaimed_learners};

/// How often the leader's agent looks for dead members.
const EVERY: Duration = Duration::from_secs(5);
/// How long an unstarted learner may stay unclaimed before it is removed.
const UNCLAIMED_LEARNER_AFTER: Duration = Duration::from_secs(120);

/// When each agent was last seen alive in gossip.
#[derive(Debug, Default)]
pub(super) struct LastSeen {
    seen: HashMap<String, Instant>,
    checked: Option<Instant>,
    /// Unstarted, unclaimed learners by member ID, since when.
    unclaimed: HashMap<u64, Instant>,
}

impl LastSeen {
    /// Records the live peers; names never seen count from the first call (so that a freshly
    /// started agent never considers its peers dead).
    pub(super) fn update(&mut self, view: &GossipView, known: impl IntoIterator<Item = String>) {
        let now = Instant::now();
        for name in known {
            self.seen.entry(name).or_insert(now);
        }
        for p in view.live() {
            self.seen.insert(p.id.name.clone(), now);
        }
    }

    /// Names dead for longer than `after`.
    pub(super) fn dead_longer_than(&self, after: Duration) -> BTreeSet<String> {
        self.seen
            .iter()
            .filter(|(_, at)| at.elapsed() > after)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Controller {
    pub(super) async fn maintain(&mut self, view: &GossipView, health: &EtcdHealth) {
        let known: Vec<String> = health
            .members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        self.last_seen.update(view, known);
        let is_leader = health.member_id.is_some() && health.member_id == health.leader;
        if !is_leader || self.last_seen.checked.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last_seen.checked = Some(Instant::now());
        self.remove_unclaimed_learners(view, health).await;
        let Some(after) = self.settings.remove_dead_after else {
            return;
        };
        let dead = self.last_seen.dead_longer_than(after);
        if dead.is_empty() {
            return;
        }
        let Ok(tls) = self.client_tls() else { return };
        let mut endpoints = vec![self.settings.client_url()];
        endpoints.extend(self.cluster_endpoints(view));
        let members = match cluster::members(&endpoints, &tls).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list members for maintenance");
                return;
            }
        };
        if let Some(id) = dead_member_to_remove(&self.settings.name, &members, &dead) {
            let name = members
                .iter()
                .find(|m| m.member.id == id)
                .map(|m| m.member.name.clone())
                .unwrap_or_default();
            match cluster::remove(&endpoints, &tls, id).await {
                Ok(()) => tracing::warn!(
                    member = %name,
                    id = %format!("{id:x}"),
                    dead_for_more_than = %humantime::format_duration(after),
                    "removed a member whose agent is dead (remove_dead_after)"
                ),
                Err(e) => {
                    tracing::info!(member = %name, error = %e, "cannot remove a dead member yet")
                }
            }
        }
    }
}

impl Controller {
    async fn remove_unclaimed_learners(&mut self, view: &GossipView, health: &EtcdHealth) {
        let mut claimed: BTreeSet<String> = view.live_metas().map(|m| m.peer_url.clone()).collect();
        claimed.insert(self.settings.peer_url());
        let leftovers = unclaimed_learners(&health.members, &claimed);
        let now = Instant::now();
        self.last_seen
            .unclaimed
            .retain(|id, _| leftovers.contains(id));
        for id in leftovers {
            let since = *self.last_seen.unclaimed.entry(id).or_insert(now);
            if since.elapsed() < UNCLAIMED_LEARNER_AFTER {
                continue;
            }
            let Ok(tls) = self.client_tls() else { return };
            let endpoints = vec![self.settings.client_url()];
            match cluster::remove(&endpoints, &tls, id).await {
                Ok(()) => {
                    tracing::warn!(member = %format!("{id:x}"), "removed a learner that was added but never started (its host is gone)");
                    self.last_seen.unclaimed.remove(&id);
                }
                Err(e) => tracing::info!(error = %e, "cannot remove an unstarted learner yet"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn names_count_from_first_sight_and_live_peers_refresh() {
        let mut s = LastSeen::default();
        s.update(&GossipView::default(), ["a".to_string(), "b".to_string()]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            s.dead_longer_than(Duration::from_secs(20)),
            ["a".to_string(), "b".to_string()].into()
        );
        assert!(s.dead_longer_than(Duration::from_secs(40)).is_empty());
        // Seeing a name again (known or live) does not reset an old entry...
        s.update(&GossipView::default(), ["a".to_string()]);
        assert!(s.dead_longer_than(Duration::from_secs(20)).contains("a"));
    }
}
