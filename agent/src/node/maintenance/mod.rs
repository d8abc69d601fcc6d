//! Cluster maintenance done by one agent, the one whose etcd member is the leader: removing
//! members whose agents have been dead in gossip longer than `remove_dead_after` (off by
//! default), one at a time and only when that cannot cost quorum, so that the cluster regains
//! its fault tolerance and new hosts can join (etcd refuses new members while a voter is down);
//! and removing learners that were added but never started and that no live agent claims
//! (always; removing a learner never affects quorum), since they would block every join. A
//! removed dead member's node certificates (those signed before it was last seen alive) are
//! revoked and its etcd user deleted, each retried every turn until it is done.
//!
//! A task of its own, like the issuer election: it reads published facts (gossip view, local
//! etcd health, TLS material), asks the pure rules in [`policy`], and does its etcd calls inside
//! [`beating`], so a slow cluster never stalls the controller or starves the watchdog, and
//! shutdown cancels it at once.

pub mod policy;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::config::Settings;
use crate::etcd::client::ClientTls;
use crate::etcd::{cluster, EtcdHealth};
use crate::gossip::GossipView;
use crate::liveness::{beating, Heartbeat};
use crate::node::membership::{dead_member_to_remove, unclaimed_learners};
use crate::node::policy::cluster_endpoints;
use crate::pki::TlsMaterial;
use policy::{Tracker, EVERY};

/// The maintenance task.
pub struct MaintenanceTask {
    settings: Arc<Settings>,
    view: watch::Receiver<GossipView>,
    health: watch::Receiver<EtcdHealth>,
    material: watch::Receiver<Arc<TlsMaterial>>,
    heartbeat: Heartbeat,
    tracker: Tracker,
    /// Removed members whose certificates or etcd user are still to go.
    removed: Vec<Removed>,
}

/// A removed member whose clean-up is not finished.
struct Removed {
    name: String,
    /// The Unix time before which its certificates were signed.
    before: u64,
    /// Its revocation request is stored; its etcd user is what is left.
    revoked: bool,
    /// Failed attempts (the first failure is a warning, the rest are quieter).
    failures: u32,
}

impl MaintenanceTask {
    pub fn new(
        settings: Arc<Settings>,
        view: watch::Receiver<GossipView>,
        health: watch::Receiver<EtcdHealth>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        heartbeat: Heartbeat,
    ) -> Self {
        Self {
            settings,
            view,
            health,
            material,
            heartbeat,
            tracker: Tracker::default(),
            removed: Vec::new(),
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY / 5);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.heartbeat.beat();
            let now = Instant::now();
            let view = self.view.borrow().clone();
            let health = self.health.borrow().clone();
            self.tracker.observe(
                now,
                health.members.iter().map(|m| m.name.as_str()),
                view.live().map(|p| p.id.name.as_str()),
            );
            let is_leader = health.member_id.is_some() && health.member_id == health.leader;
            if !is_leader || !self.tracker.due(now) {
                continue;
            }
            let Some(tls) = self.material.borrow().client().cloned() else {
                continue;
            };
            let heartbeat = self.heartbeat.clone();
            if beating(&heartbeat, &cancel, self.turn(now, &view, &health, &tls))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// One turn of the leader's agent.
    async fn turn(
        &mut self,
        now: Instant,
        view: &GossipView,
        health: &EtcdHealth,
        tls: &ClientTls,
    ) {
        self.clean_up_removed(tls).await;
        let s = self.settings.clone();
        let mut claimed: BTreeSet<String> = view.live_metas().map(|m| m.peer_url.clone()).collect();
        claimed.insert(s.peer_url());
        let leftovers = unclaimed_learners(&health.members, &claimed);
        let local = vec![s.client_url()];
        for id in self.tracker.learners_to_remove(now, &leftovers) {
            match cluster::remove(&local, tls, id).await {
                Ok(()) => {
                    tracing::warn!(member = %format!("{id:x}"), "removed a learner that was added but never started (its host is gone)");
                    self.tracker.forget_learner(id);
                }
                Err(e) => tracing::info!(error = %e, "cannot remove an unstarted learner yet"),
            }
        }
        let Some(after) = s.remove_dead_after else {
            return;
        };
        let dead = self.tracker.dead_longer_than(now, after);
        if dead.is_empty() {
            return;
        }
        let mut endpoints = local;
        endpoints.extend(cluster_endpoints(&s.client_url(), view, None));
        let members = match cluster::members(&endpoints, tls).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list members for maintenance");
                return;
            }
        };
        let Some(id) = dead_member_to_remove(&s.name, &members, &dead) else {
            return;
        };
        let name = members
            .iter()
            .find(|m| m.member.id == id)
            .map(|m| m.member.name.clone())
            .unwrap_or_default();
        // Through this agent's own member, the leader: once it answers, the leader has applied
        // the removal, so the clean-up below sees the member gone.
        match cluster::remove(&endpoints[..1], tls, id).await {
            Ok(()) => {
                tracing::warn!(
                    member = %name,
                    id = %format!("{id:x}"),
                    dead_for_more_than = %humantime::format_duration(after),
                    "removed a member whose agent is dead (remove_dead_after)"
                );
                let seen_ago = self
                    .tracker
                    .last_seen(&name)
                    .map_or(after, |at| now.saturating_duration_since(at));
                let before = unix_now().saturating_sub(seen_ago.as_secs());
                self.removed.push(Removed {
                    name,
                    before,
                    revoked: false,
                    failures: 0,
                });
                self.clean_up_removed(tls).await;
            }
            Err(e) => tracing::info!(member = %name, error = %e, "cannot remove a dead member yet"),
        }
    }

    /// Asks for the revocation of removed members' certificates, then deletes their etcd users
    /// (open connections of the old host lose their access at their next request). Both are
    /// retried every turn until done. They go to this agent's own member, the leader: it has
    /// applied the removal and every auth change (a balanced client sent some to a member
    /// that had not applied the latest auth change yet, or that was going away, and the user
    /// stayed).
    async fn clean_up_removed(&mut self, tls: &ClientTls) {
        if self.removed.is_empty() {
            return;
        }
        let endpoints = vec![self.settings.client_url()];
        let mut left = Vec::new();
        for mut r in std::mem::take(&mut self.removed) {
            let done = clean_up_one(&endpoints, tls, &mut r).await;
            if let Err(e) = done {
                if r.failures == 0 {
                    tracing::warn!(member = %r.name, error = %e, "cannot finish removing a member's access yet; retrying every turn");
                } else {
                    tracing::debug!(member = %r.name, error = %e, "cannot finish removing a member's access yet");
                }
                r.failures += 1;
                left.push(r);
            }
        }
        self.removed = left;
    }
}

/// Revokes `r`'s certificates unless done already, then deletes its etcd user.
async fn clean_up_one(
    endpoints: &[String],
    tls: &ClientTls,
    r: &mut Removed,
) -> Result<(), String> {
    if !r.revoked {
        crate::issuer::crl::request_superseded(endpoints, tls, &r.name, None, r.before, unix_now())
            .await
            .map_err(|e| format!("revocation: {e}"))?;
        r.revoked = true;
    }
    crate::issuer::crl::delete_user(endpoints, tls, &r.name)
        .await
        .map(|_| ())
        .map_err(|e| format!("etcd user: {e}"))
}
