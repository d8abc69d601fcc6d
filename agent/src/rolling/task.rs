//! The rolling-restart task: every [`EVERY`] it reads the running etcd's version, the version of
//! the binary at `etcd.binary` (`etcd --version`, a few milliseconds), the members' versions
//! and health, and
//! the rolling-restart request; when this member owes a restart ([`policy::restart_due`]) and
//! [`may_run`] allows it, it takes the member-down lock, restarts its etcd through the
//! supervisor, waits until the member is healthy and caught up with the leader, records the
//! restart and releases the lock. Its etcd calls run inside [`beating`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ops::{self, Request};
use super::policy::{self, BinaryChange, RestartReason};
use super::{Progress, RollingCommand, RollingStatus, EVERY, RESTART_DEADLINE};
use crate::config::Settings;
use crate::etcd::client::ClientTls;
use crate::etcd::version::{show, Version};
use crate::etcd::{cluster, probe_version, EtcdCommand, EtcdHealth, MemberHealth, ProcessState};
use crate::jobs::policy::{ClusterFacts, LockFact, MemberFact};
use crate::jobs::{may_run, Acquired, Decision, Job, JobLock, JobLocks};
use crate::liveness::{beating, Heartbeat};
use crate::pki::TlsMaterial;

/// The rolling-restart task.
pub struct RollingTask {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub process: watch::Receiver<ProcessState>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub etcd: mpsc::Sender<EtcdCommand>,
    pub commands: mpsc::Receiver<RollingCommand>,
    pub published: watch::Sender<RollingStatus>,
    pub heartbeat: Heartbeat,
    /// Set to true to make the agent stop and re-execute its (new) binary.
    pub reexec: watch::Sender<bool>,
    /// `quorate restart` was asked for.
    pub agent_restart: bool,
    /// Takes the snapshot before a minor upgrade; None when snapshots are off.
    pub snapshots: Option<crate::snapshot::OnDemand>,
}

/// What one turn read.
struct Gathered {
    endpoints: Vec<String>,
    members: Vec<MemberHealth>,
    /// (node name, version) of every member that answered.
    versions: Vec<(String, Version)>,
    request: Option<Request>,
    done: Option<u64>,
}

impl RollingTask {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut status = RollingStatus {
            message: "starting".into(),
            ..RollingStatus::default()
        };
        loop {
            let command = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                c = self.commands.recv() => c,
                _ = tick.tick() => None,
                _ = beat.tick() => {
                    self.heartbeat.beat();
                    continue;
                }
            };
            self.heartbeat.beat();
            let heartbeat = self.heartbeat.clone();
            let turn = async {
                match command {
                    Some(RollingCommand::Request { reply }) => {
                        let _ = reply.send(self.request().await);
                    }
                    Some(RollingCommand::Progress { id, reply }) => {
                        let _ = reply.send(self.progress(id, &status).await);
                    }
                    Some(RollingCommand::AgentRestart { reply }) => {
                        self.agent_restart = true;
                        tracing::info!("restart on the installed quorate binary requested");
                        let _ = reply.send(Ok(
                            "this agent restarts on the installed quorate binary as soon as it \
                             holds the member-down lock and every voter is healthy (one host at \
                             a time); follow it with quorate status"
                                .to_owned(),
                        ));
                        let found = probe_version(&self.settings.etcd.binary).await;
                        self.turn(Some(found), &mut status).await;
                    }
                    None => {
                        let found = probe_version(&self.settings.etcd.binary).await;
                        self.turn(Some(found), &mut status).await;
                    }
                }
            };
            if beating(&heartbeat, &cancel, turn).await.is_none() {
                return;
            }
            self.published.send_replace(status.clone());
        }
    }

    fn tls(&self) -> Option<ClientTls> {
        self.material.borrow().client().cloned()
    }

    /// Own client URL first, then every member's.
    fn endpoints(&self, health: &EtcdHealth) -> Vec<String> {
        health.endpoints(self.settings.client_url())
    }

    async fn gather(&self, health: &EtcdHealth, tls: &ClientTls) -> Result<Gathered, String> {
        let endpoints = self.endpoints(health);
        let members = cluster::members(&endpoints, tls)
            .await
            .map_err(|e| format!("cannot read the cluster's members: {e}"))?;
        let mut versions = Vec::new();
        for m in members.iter().filter(|m| m.healthy) {
            if let Ok(s) = ops::member_status(&m.member.client_urls, tls).await {
                if let Some(v) = s.version {
                    versions.push((m.member.name.clone(), v));
                }
            }
        }
        let request = ops::read_request(&endpoints, tls)
            .await
            .map_err(|e| format!("cannot read the rolling-restart request: {e}"))?;
        let done = ops::read_done(&endpoints, tls)
            .await
            .map_err(|e| format!("cannot read the rolling-restart records: {e}"))?
            .get(&self.settings.name)
            .copied();
        Ok(Gathered {
            endpoints,
            members,
            versions,
            request,
            done,
        })
    }

    async fn facts(&self, health: &EtcdHealth, g: &Gathered, tls: &ClientTls) -> ClusterFacts {
        let locks = JobLocks::new(&self.settings.name, g.endpoints.clone(), tls.clone());
        let lock = match locks.holder(Job::EtcdRestart).await {
            Ok(None) => LockFact::Free,
            Ok(Some(h)) => LockFact::Theirs(h),
            Err(_) => LockFact::Unknown,
        };
        ClusterFacts {
            members: g
                .members
                .iter()
                .map(|m| MemberFact {
                    id: m.member.id,
                    name: m.member.name.clone(),
                    is_learner: m.member.is_learner,
                    healthy: m.healthy,
                })
                .collect(),
            this_member: health.member_id.unwrap_or_default(),
            leader: health.leader,
            lock,
            schedule: None,
            last_done_slot: None,
        }
    }

    /// One periodic turn.
    async fn turn(&mut self, binary: Option<Result<Version, String>>, status: &mut RollingStatus) {
        status.busy = false;
        let running = self.process.borrow().version;
        status.running_version = running.map(show);
        status.binary_version = binary
            .as_ref()
            .and_then(|b| b.as_ref().ok())
            .map(|v| show(*v));
        let binary = match binary {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                status.message = format!("cannot read the version of etcd.binary: {e}");
                return;
            }
            None => return,
        };
        let Some(running) = running.filter(|_| self.process.borrow().pid.is_some()) else {
            if self.agent_restart {
                // No member of ours is up: restarting takes nothing down.
                self.restart_agent(status, "its etcd is not running");
                return;
            }
            status.message = "etcd is not running".into();
            return;
        };
        let Some(tls) = self.tls() else {
            status.message = "waiting for this node's certificate".into();
            return;
        };
        let health = self.health.borrow().clone();
        if health.member_id.is_none() {
            if self.agent_restart {
                self.restart_agent(status, "it is not a member yet");
                return;
            }
            status.message = "waiting for the local etcd member".into();
            return;
        }
        let g = match self.gather(&health, &tls).await {
            Ok(g) => g,
            Err(e) => {
                status.message = e;
                return;
            }
        };
        let member_versions: Vec<Version> = g.versions.iter().map(|(_, v)| *v).collect();
        let change = policy::binary_change(running, binary, &member_versions);
        let requested = g.request.as_ref().map(|r| r.id);
        let Some(reason) = policy::restart_due(&change, requested, g.done, self.agent_restart)
        else {
            status.message = match (&change, target_of(&member_versions)) {
                (BinaryChange::Refused(why), _) => {
                    status.refusal = Some(why.clone());
                    format!("etcd is not upgraded: {why}")
                }
                (_, Some((from, to))) => {
                    status.refusal = None;
                    status.busy = true;
                    policy::upgrade_progress(from, to, &member_versions)
                }
                _ => {
                    status.refusal = None;
                    format!("etcd {} runs; nothing to restart", show(running))
                }
            };
            return;
        };
        status.refusal = None;
        status.busy = true;
        let facts = self.facts(&health, &g, &tls).await;
        match may_run(Job::EtcdRestart, &facts, SystemTime::now()) {
            Decision::Wait(why) => {
                status.message = format!("{reason}: this member waits ({why})");
                return;
            }
            Decision::Acquire { .. } | Decision::Run { .. } => {}
        }
        let locks = JobLocks::new(&self.settings.name, g.endpoints.clone(), tls.clone());
        let lock = match locks.try_acquire(Job::EtcdRestart).await {
            Ok(Acquired::Held(lock)) => lock,
            Ok(Acquired::Busy(holder)) => {
                status.message =
                    format!("{reason}: waits, the member-down lock is held by {holder}");
                return;
            }
            Err(e) => {
                status.message = format!("{reason}: waits ({e})");
                return;
            }
        };
        // With the lock held, read again: the member that held it may have just restarted.
        let g = match self.gather(&health, &tls).await {
            Ok(g) => g,
            Err(e) => {
                status.message = e;
                lock.release().await;
                return;
            }
        };
        let mut facts = self.facts(&health, &g, &tls).await;
        facts.lock = LockFact::Ours(Job::EtcdRestart);
        let decision = may_run(Job::EtcdRestart, &facts, SystemTime::now());
        if !matches!(decision, Decision::Run { .. }) {
            status.message = format!("{reason}: waits ({decision:?})");
            lock.release().await;
            return;
        }
        if reason == RestartReason::AgentRestart {
            // The lock stays with this process until it exits; its lease then expires
            // (jobs::LOCK_TTL), by when the new binary's member is back, and the next host
            // still waits until every voter is healthy.
            std::mem::forget(lock);
            self.restart_agent(status, "it holds the member-down lock");
            return;
        }
        if let Err(e) = self
            .snapshot_before(&reason, &member_versions, status)
            .await
        {
            status.failures += 1;
            status.message = format!("{reason}: waits, {e}");
            tracing::warn!(%reason, "{e}");
            lock.release().await;
            return;
        }
        status.message = format!("{reason}: restarting this member");
        self.published.send_replace(status.clone());
        let outcome = self.restart(&reason, &lock, &g, &tls).await;
        lock.release().await;
        match outcome {
            Ok(version) => {
                status.restarts += 1;
                status.running_version = Some(show(version));
                status.last = Some(format!(
                    "{reason}: this member restarted on etcd {} at {}",
                    show(version),
                    unix_secs()
                ));
                status.message = format!("{reason}: this member is done");
                tracing::info!(%reason, version = %show(version), "etcd restarted, healthy and caught up");
            }
            Err(e) => {
                status.failures += 1;
                status.message = format!("{reason}: the restart of this member failed: {e}");
                tracing::warn!(%reason, error = %e, "rolling restart of this member failed");
            }
        }
    }

    /// Before the first member of a cluster moves to a new minor version, and when snapshots
    /// are on: a verified snapshot in the snapshot directory (the way back, should the new
    /// version misbehave: `quorate restore` it on the old version).
    async fn snapshot_before(
        &self,
        reason: &RestartReason,
        member_versions: &[Version],
        status: &mut RollingStatus,
    ) -> Result<(), String> {
        let RestartReason::Upgrade { from, to } = reason else {
            return Ok(());
        };
        let first = member_versions
            .iter()
            .all(|v| (v.0, v.1) == (from.0, from.1));
        let (Some(snapshots), true, true) =
            (&self.snapshots, (from.0, from.1) != (to.0, to.1), first)
        else {
            return Ok(());
        };
        status.message = format!("{reason}: taking a snapshot before the minor upgrade");
        self.published.send_replace(status.clone());
        let done = snapshots
            .save_to_dir()
            .await
            .map_err(|e| format!("the snapshot before the minor upgrade failed: {e}"))?;
        let file = done.file.unwrap_or_default();
        tracing::info!(%file, revision = done.manifest.revision, "snapshot before the minor upgrade taken");
        status.last = Some(format!(
            "{reason}: snapshot before the minor upgrade: {file}"
        ));
        Ok(())
    }

    /// Asks the agent to stop and re-execute its binary.
    fn restart_agent(&mut self, status: &mut RollingStatus, why: &str) {
        tracing::warn!("restarting quorate on its installed binary now: {why}");
        status.message = format!("restarting quorate on its installed binary ({why})");
        self.agent_restart = false;
        self.published.send_replace(status.clone());
        self.reexec.send_replace(true);
    }

    /// Restarts the local etcd and waits until it is healthy and caught up with the leader.
    async fn restart(
        &mut self,
        reason: &RestartReason,
        lock: &JobLock,
        g: &Gathered,
        tls: &ClientTls,
    ) -> Result<Version, String> {
        tracing::info!(%reason, "restarting etcd (holding the member-down lock)");
        let (tx, rx) = oneshot::channel();
        self.etcd
            .send(EtcdCommand::Restart(tx))
            .await
            .map_err(|_| "the agent is stopping".to_owned())?;
        let version = rx.await.map_err(|_| "the agent is stopping".to_owned())??;
        let deadline = Instant::now() + RESTART_DEADLINE;
        let local = [self.settings.client_url()];
        loop {
            if lock.is_lost() {
                return Err("the member-down lock was lost while waiting".into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd {} was not healthy and caught up within {:?}",
                    show(version),
                    RESTART_DEADLINE
                ));
            }
            if self.health.borrow().healthy() {
                if let Ok(me) = ops::member_status(&local, tls).await {
                    let leader = g.members.iter().find(|m| m.member.id == me.leader);
                    let leader_index = match leader {
                        Some(l) if l.member.id == me.member_id => Some(me.raft_index),
                        Some(l) => ops::member_status(&l.member.client_urls, tls)
                            .await
                            .ok()
                            .map(|s| s.raft_index),
                        None => None,
                    };
                    if leader_index.is_some_and(|i| policy::caught_up(me.applied_index, i)) {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let RestartReason::Requested { id } = reason {
            ops::write_done(&g.endpoints, tls, &self.settings.name, *id)
                .await
                .map_err(|e| format!("restarted, but cannot record it: {e}"))?;
        }
        Ok(version)
    }

    /// `quorate etcd restart --rolling`: writes a new request; every member restarts in turn.
    async fn request(&self) -> Result<u64, String> {
        let tls = self
            .tls()
            .ok_or("this node has no certificate yet: it is not a member")?;
        let health = self.health.borrow().clone();
        if health.member_id.is_none() || !health.healthy() {
            return Err(
                "the local etcd member is not healthy: a rolling restart starts only on a \
                 healthy member of a healthy cluster (see `quorate status`)"
                    .into(),
            );
        }
        let endpoints = self.endpoints(&health);
        let id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let request = Request {
            id,
            by: self.settings.name.clone(),
        };
        ops::write_request(&endpoints, &tls, &request)
            .await
            .map_err(|e| format!("cannot write the request: {e}"))?;
        tracing::info!(id, "rolling etcd restart requested");
        Ok(id)
    }

    /// How far request `id` is: which members have done it.
    async fn progress(&self, id: u64, status: &RollingStatus) -> Result<Progress, String> {
        let tls = self.tls().ok_or("this node has no certificate yet")?;
        let health = self.health.borrow().clone();
        let endpoints = self.endpoints(&health);
        let done = ops::read_done(&endpoints, &tls)
            .await
            .map_err(|e| format!("cannot read the rolling-restart records: {e}"))?;
        let members = cluster::members(&endpoints, &tls)
            .await
            .map_err(|e| format!("cannot read the cluster's members: {e}"))?;
        let mut progress = Progress {
            message: status.message.clone(),
            ..Progress::default()
        };
        for m in members {
            let name = m.member.name.clone();
            if done.get(&name).is_some_and(|d| *d >= id) {
                progress.done.push(name);
            } else {
                progress.pending.push(name);
            }
        }
        Ok(progress)
    }
}

/// (oldest, newest) version among the members when they differ: an upgrade is under way.
fn target_of(versions: &[Version]) -> Option<(Version, Version)> {
    let min = versions.iter().min()?;
    let max = versions.iter().max()?;
    (min != max).then_some((*min, *max))
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
