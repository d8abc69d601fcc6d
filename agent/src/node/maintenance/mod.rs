//! Cluster maintenance done by one agent, the one whose etcd member is the leader: removing
//! members whose agents have been dead in gossip longer than `remove_dead_after` (off by
//! default), one at a time and only when that cannot cost quorum, so that the cluster regains
//! its fault tolerance and new hosts can join (etcd refuses new members while a voter is down);
//! and removing learners that were added but never started and that no live agent claims
//! (always; removing a learner never affects quorum), since they would block every join. A
//! removed dead member's node certificates (those signed before it was last seen alive) are
//! revoked and its etcd user deleted, through a record in etcd ([`removed`]) that every turn
//! of whichever agent leads works on until it is done.
//!
//! A task of its own, like the issuer election: it reads published facts (gossip view, local
//! etcd health, TLS material), asks the pure rules in [`policy`], and does its etcd calls inside
//! [`beating`], so a slow cluster never stalls the controller or starves the watchdog, and
//! shutdown cancels it at once.

pub mod policy;
pub mod removed;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::config::Settings;
use crate::etcd::client::{connect, ClientTls};
use crate::etcd::{cluster, EtcdHealth};
use crate::gossip::GossipView;
use crate::liveness::{beating, Heartbeat};
use crate::node::membership::{dead_member_to_remove, unclaimed_learners};
use crate::node::policy::cluster_endpoints;
use crate::phase::Phase;
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
    /// Failed clean-up attempts by removed name (the first is a warning, the rest quieter).
    failures: BTreeMap<String, u32>,
    /// Removals this agent made whose record could not be stored yet (tried every turn).
    unrecorded: Vec<(String, removed::Removal)>,
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
            failures: BTreeMap::new(),
            unrecorded: Vec::new(),
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
        self.clean_up_removed(view, tls).await;
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
                let now_unix = unix_now();
                let before = now_unix.saturating_sub(seen_ago.as_secs());
                if !name.is_empty() {
                    self.unrecorded
                        .push((name, removed::Removal::new(before, now_unix)));
                }
                self.clean_up_removed(view, tls).await;
            }
            Err(e) => tracing::info!(member = %name, error = %e, "cannot remove a dead member yet"),
        }
    }

    /// Works on the recorded removals (see [`removed`]), after storing the records this agent
    /// could not store yet: each record's [`removed::step`] (revoke the removed name's older
    /// certificates, delete its etcd user so that open connections of the old host lose their
    /// access at their next request, confirm, delete the record); what fails is tried again
    /// next turn, by this agent or the next leader's. Through this agent's own member, the
    /// leader: it has applied the removal and every auth change (a balanced client sent some to
    /// a member that had not applied the latest auth change yet, and the user stayed).
    async fn clean_up_removed(&mut self, view: &GossipView, tls: &ClientTls) {
        let endpoints = vec![self.settings.client_url()];
        let listed = async {
            let mut client = connect(&endpoints, tls, Duration::from_secs(5)).await?;
            for (name, r) in std::mem::take(&mut self.unrecorded) {
                if let Err(e) = removed::record(&mut client, &name, r).await {
                    tracing::warn!(member = %name, error = %e, "cannot record the removal for its clean-up yet; retrying every turn");
                    self.unrecorded.push((name, r));
                }
            }
            let pending = removed::pending(&mut client).await?;
            if pending.is_empty() {
                return Ok((client, pending, Vec::new()));
            }
            let members = client.member_list().await?;
            let names = members.members().iter().map(|m| m.name().to_owned());
            Ok::<_, etcd_client::Error>((client, pending, names.collect()))
        };
        let (mut client, pending, members) = match listed.await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the recorded removals");
                return;
            }
        };
        self.failures
            .retain(|name, _| pending.iter().any(|p| &p.name == name));
        let live: Vec<removed::LiveAgent> = view
            .live_metas()
            .map(|m| removed::LiveAgent {
                name: m.name.as_str(),
                left: m.phase == Phase::Left,
                started: m.version.0 / 1000,
            })
            .collect();
        for p in &pending {
            let back = removed::is_back(
                &p.name,
                p.removal.removed_at,
                members.iter().map(String::as_str),
                live.iter().copied(),
            );
            let step = removed::step(&p.removal, back, unix_now());
            match clean_up_one(&endpoints, tls, &mut client, p, step).await {
                Ok(()) => {
                    self.failures.remove(&p.name);
                }
                Err(e) => {
                    let failures = self.failures.entry(p.name.clone()).or_default();
                    if *failures == 0 {
                        tracing::warn!(member = %p.name, error = %e, "cannot finish removing a member's access yet; retrying every turn");
                    } else {
                        tracing::debug!(member = %p.name, error = %e, "cannot finish removing a member's access yet");
                    }
                    *failures += 1;
                }
            }
        }
    }
}

/// Takes `step` for the record `p` (see [`removed::step`]).
async fn clean_up_one(
    endpoints: &[String],
    tls: &ClientTls,
    client: &mut etcd_client::Client,
    p: &removed::Pending,
    step: removed::Step,
) -> Result<(), String> {
    use removed::Step;
    let name = &p.name;
    if matches!(step, Step::KeepUser | Step::DeleteUser) && p.removal.before > 0 {
        let before = p.removal.before;
        crate::issuer::crl::request_superseded(endpoints, tls, name, None, before, unix_now())
            .await
            .map_err(|e| format!("revocation: {e}"))?;
    }
    if matches!(step, Step::DeleteUser | Step::Confirm) {
        crate::issuer::crl::delete_user(endpoints, tls, name)
            .await
            .map_err(|e| format!("etcd user: {e}"))?;
    }
    let done = match step {
        Step::Wait => return Ok(()),
        Step::DeleteUser => removed::mark_user_deleted(client, p, unix_now()).await,
        Step::KeepUser => {
            tracing::info!(member = %name, "the removed name is back: its etcd user stays");
            removed::finish(client, p).await
        }
        Step::Confirm => {
            tracing::info!(member = %name, "the removed member's access is gone");
            removed::finish(client, p).await
        }
    };
    done.map_err(|e| format!("record: {e}"))
}
