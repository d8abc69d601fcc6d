//! The defragmentation task: every [`EVERY`] it reads this member's space (and, on the
//! leader's agent, every member's, the alarm and the job lock), asks [`policy::decide`] and
//! does what it says; it also serves `quorate defrag`. Its etcd calls run inside [`beating`],
//! so a long defragmentation never starves the watchdog and shutdown cancels it at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::ops;
use super::policy::{self, Decision, Facts, History, RecoveryOutcome, Why};
use super::status::{human, DefragRun, DefragStatus, Trigger};
use super::{DefragCommand, EVERY};
use crate::config::Settings;
use crate::etcd::client::ClientTls;
use crate::etcd::{cluster, EtcdHealth, Member, MemberHealth};
use crate::jobs::policy::{ClusterFacts, LockFact, MemberFact};
use crate::jobs::{Acquired, Job, JobLock, JobLocks, WaitReason};
use crate::liveness::{beating, Heartbeat};
use crate::pki::TlsMaterial;

/// The defragmentation task.
pub struct DefragTask {
    settings: Arc<Settings>,
    health: watch::Receiver<EtcdHealth>,
    material: watch::Receiver<Arc<TlsMaterial>>,
    commands: mpsc::Receiver<DefragCommand>,
    published: watch::Sender<DefragStatus>,
    heartbeat: Heartbeat,
    history: History,
    status: DefragStatus,
}

/// Everything one turn read from etcd.
struct Gathered {
    facts: Facts,
    members: Vec<MemberHealth>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl DefragTask {
    pub fn new(
        settings: Arc<Settings>,
        health: watch::Receiver<EtcdHealth>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        commands: mpsc::Receiver<DefragCommand>,
        published: watch::Sender<DefragStatus>,
        heartbeat: Heartbeat,
    ) -> Self {
        let status = DefragStatus {
            message: "starting".into(),
            quota: settings.etcd.tuning.quota_backend_bytes.unwrap_or_default(),
            ..DefragStatus::default()
        };
        Self {
            settings,
            health,
            material,
            commands,
            published,
            heartbeat,
            history: History::default(),
            status,
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        const BEAT: Duration = Duration::from_secs(1);
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The turn comes every 5 s; the heartbeat must beat more often than any watchdog
        // window is short.
        let mut beat = tokio::time::interval(BEAT);
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
            let done = match command {
                Some(DefragCommand::Run { force, reply }) => {
                    let answer = beating(&heartbeat, &cancel, self.on_demand(force)).await;
                    match answer {
                        Some(answer) => {
                            let _ = reply.send(answer);
                            true
                        }
                        None => false,
                    }
                }
                None => beating(&heartbeat, &cancel, self.turn()).await.is_some(),
            };
            self.published.send_replace(self.status.clone());
            if !done {
                return;
            }
        }
    }

    fn tls(&self) -> Option<ClientTls> {
        self.material.borrow().client().cloned()
    }

    /// Own client URL first, then every member's.
    fn endpoints(&self, health: &EtcdHealth) -> Vec<String> {
        health.endpoints(self.settings.client_url())
    }

    /// One periodic turn.
    async fn turn(&mut self) {
        let Some(tls) = self.tls() else {
            self.status.message = "waiting for this node's certificate".into();
            return;
        };
        let health = self.health.borrow().clone();
        if health.member_id.is_none() {
            self.status.message = "waiting for the local etcd member".into();
            return;
        }
        let local = [self.settings.client_url()];
        match ops::status(&local, &tls).await {
            Ok(s) => {
                self.status.db_size = Some(s.size.total);
                self.status.db_in_use = Some(s.size.in_use);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the local member's size"),
        }
        if let Ok(nospace) = ops::nospace(&local, &tls).await {
            self.status.nospace = nospace;
            if !nospace {
                self.status.live_data_full = false;
            }
        }
        let is_leader = health.leader.is_some() && health.leader == health.member_id;
        if !is_leader {
            let leader = health.leader_name().unwrap_or("none yet");
            self.status.message = if self.status.nospace {
                format!("NOSPACE alarm raised: the leader's agent ({leader}) recovers")
            } else {
                format!("the leader's agent ({leader}) coordinates defragmentation")
            };
            return;
        }
        let gathered = match self.gather(&health, &tls).await {
            Ok(g) => g,
            Err(e) => {
                self.status.message = format!("cannot read the cluster's members: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        match policy::decide(&gathered.facts, now, &self.history) {
            Decision::Idle => {
                self.status.message = "no member needs defragmenting".into();
            }
            Decision::NotCoordinator => {
                self.status.message = "another agent coordinates defragmentation".into();
            }
            Decision::Wait(why @ Why::LiveDataFull { .. }) => {
                tracing::debug!(reason = %why, "NOSPACE recovery waits");
            }
            Decision::Wait(why) => {
                self.status.message = format!("defragmentation waits: {why}");
            }
            Decision::Recover(order) => self.recover(&order, &gathered.members, &tls).await,
            Decision::Defrag(_) | Decision::Acquire => {
                self.automatic(&health, &tls).await;
            }
        }
    }

    /// Reads the members with their health and sizes, the alarm and the lock.
    async fn gather(&self, health: &EtcdHealth, tls: &ClientTls) -> Result<Gathered, String> {
        let endpoints = self.endpoints(health);
        let members = cluster::members(&endpoints, tls)
            .await
            .map_err(|e| e.to_string())?;
        let mut sizes = BTreeMap::new();
        for m in members.iter().filter(|m| m.healthy) {
            if let Ok(s) = ops::status(&m.member.client_urls, tls).await {
                sizes.insert(m.member.id, s.size);
            }
        }
        let locks = JobLocks::new(&self.settings.name, endpoints, tls.clone());
        let lock = match locks.holder(Job::Defrag).await {
            Ok(None) => LockFact::Free,
            Ok(Some(h)) => LockFact::Theirs(h),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the member-down lock");
                LockFact::Unknown
            }
        };
        let nospace = ops::nospace(&[self.settings.client_url()], tls)
            .await
            .unwrap_or(self.status.nospace);
        let facts = Facts {
            cluster: ClusterFacts {
                members: members
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
            },
            sizes,
            nospace,
            quota: self.status.quota,
            min_reclaim: self.settings.maintenance.defrag_min_reclaim,
        };
        Ok(Gathered { facts, members })
    }

    /// Takes the lock, reads the facts again with it held, and defragments what is due.
    async fn automatic(&mut self, health: &EtcdHealth, tls: &ClientTls) {
        let locks = JobLocks::new(&self.settings.name, self.endpoints(health), tls.clone());
        let lock = match locks.try_acquire(Job::Defrag).await {
            Ok(Acquired::Held(lock)) => lock,
            Ok(Acquired::Busy(holder)) => {
                self.status.message =
                    format!("defragmentation waits: the job lock is held by {holder}");
                return;
            }
            Err(e) => {
                self.status.message = format!("defragmentation waits: {e}");
                return;
            }
        };
        let mut gathered = match self.gather(health, tls).await {
            Ok(g) => g,
            Err(e) => {
                self.status.message = format!("cannot read the cluster's members: {e}");
                lock.release().await;
                return;
            }
        };
        gathered.facts.cluster.lock = LockFact::Ours(Job::Defrag);
        match policy::decide(&gathered.facts, SystemTime::now(), &self.history) {
            Decision::Defrag(order) => {
                let runs = self
                    .defrag_members(&order, &gathered.members, Trigger::Automatic, Some(&lock))
                    .await;
                self.status.message = format!("defragmented {} member(s)", runs.len());
            }
            Decision::Wait(why) => self.status.message = format!("defragmentation waits: {why}"),
            _ => {}
        }
        lock.release().await;
    }

    /// NOSPACE: compact, defragment every member (leader last), disarm if there is room.
    async fn recover(&mut self, order: &[u64], members: &[MemberHealth], tls: &ClientTls) {
        let local = [self.settings.client_url()];
        tracing::warn!("NOSPACE alarm: compacting and defragmenting every member");
        match ops::status(&local, tls).await {
            Ok(s) => match ops::compact(&local, tls, s.revision).await {
                Ok(()) => tracing::info!(revision = s.revision, "compacted for NOSPACE recovery"),
                Err(e) => tracing::warn!(error = %e, revision = s.revision, "cannot compact"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read the current revision"),
        }
        let runs = self
            .defrag_members(order, members, Trigger::Nospace, None)
            .await;
        if runs.len() < order.len() || runs.iter().any(|r| r.error.is_some()) {
            self.status.message =
                "NOSPACE recovery incomplete (see the log); it is tried again".into();
            return;
        }
        let mut after = Vec::new();
        for m in members {
            if let Ok(s) = ops::status(&m.member.client_urls, tls).await {
                after.push(s.size);
            }
        }
        let quota = self.status.quota;
        match policy::recovery_outcome(&after, quota) {
            RecoveryOutcome::Disarm => match ops::disarm(&local, tls).await {
                Ok(n) => {
                    tracing::warn!(
                        alarms = n,
                        "NOSPACE alarm disarmed: etcd accepts writes again"
                    );
                    self.history.live_data_full_at = None;
                    self.status.live_data_full = false;
                    self.status.nospace = false;
                    self.status.message = "recovered from NOSPACE: alarm disarmed".into();
                }
                Err(e) => self.status.message = format!("cannot disarm the NOSPACE alarm: {e}"),
            },
            RecoveryOutcome::LiveDataFull { largest } => {
                self.history.live_data_full_at = Some(SystemTime::now());
                self.status.live_data_full = true;
                self.status.message = format!(
                    "NOSPACE alarm stays: the live data fills the quota ({} of {} after \
                     compaction and defragmentation, nothing left to reclaim). Fix: raise \
                     etcd.quota (then restart the agents one at a time), or delete data (etcd \
                     accepts deletes under the alarm); quorate disarms by itself once there is \
                     room",
                    human(largest),
                    human(quota)
                );
                tracing::error!(
                    largest = largest,
                    quota = quota,
                    "NOSPACE alarm stays: the live data fills the quota; raise etcd.quota or \
                     delete data"
                );
            }
            RecoveryOutcome::Unknown => {
                self.status.message = "NOSPACE recovery: no member's size could be read".into();
            }
        }
    }

    /// `quorate defrag`.
    async fn on_demand(&mut self, force: bool) -> Result<String, String> {
        let tls = self
            .tls()
            .ok_or("this node has no certificate yet: nothing to defragment")?;
        let health = self.health.borrow().clone();
        if health.member_id.is_none() {
            return Err("the local etcd member is not running".into());
        }
        let gathered = self.gather(&health, &tls).await?;
        if gathered.facts.nospace {
            return Err(
                "the NOSPACE alarm is raised: the leader's agent recovers by itself \
                        (compaction, defragmentation, disarm); see `quorate status`"
                    .into(),
            );
        }
        let hint = |reason: &WaitReason| match reason {
            WaitReason::LockHeld(_) | WaitReason::LockHeldHere(_) | WaitReason::NotAMember => "",
            _ => " (use --force to defragment anyway)",
        };
        let order = policy::on_demand(&gathered.facts.cluster, force, SystemTime::now())
            .map_err(|r| format!("refused: {r}{}", hint(&r)))?;
        let locks = JobLocks::new(&self.settings.name, self.endpoints(&health), tls.clone());
        let lock = match locks.try_acquire(Job::Defrag).await {
            Ok(Acquired::Held(lock)) => lock,
            Ok(Acquired::Busy(holder)) => {
                return Err(format!("refused: the job lock is held by {holder}"))
            }
            Err(e) => return Err(e.to_string()),
        };
        let runs = self
            .defrag_members(&order, &gathered.members, Trigger::OnDemand, Some(&lock))
            .await;
        let lost = lock.is_lost();
        lock.release().await;
        let mut out: Vec<String> = runs.iter().map(DefragRun::line).collect();
        if runs.len() < order.len() {
            out.push(if lost {
                "stopped: the job lock was lost".into()
            } else {
                "stopped: this agent is stopping".into()
            });
        }
        self.status.message = format!("defragmented {} member(s) on demand", runs.len());
        Ok(out.join("\n"))
    }

    /// Defragments `order`, one member at a time. Stops when the lock is lost, or (a recovery,
    /// which has no lock) when this member no longer leads.
    async fn defrag_members(
        &mut self,
        order: &[u64],
        members: &[MemberHealth],
        trigger: Trigger,
        lock: Option<&JobLock>,
    ) -> Vec<DefragRun> {
        let mut runs = Vec::new();
        for id in order {
            if lock.is_some_and(JobLock::is_lost) {
                tracing::warn!("the member-down lock was lost: defragmentation stops");
                break;
            }
            if lock.is_none() && !self.still_leads() {
                tracing::warn!("this member no longer leads: the NOSPACE recovery stops here");
                break;
            }
            let Some(m) = members.iter().find(|m| m.member.id == *id) else {
                continue;
            };
            let run = self.defrag_one(&m.member, trigger).await;
            runs.push(run);
        }
        runs
    }

    fn still_leads(&self) -> bool {
        let h = self.health.borrow();
        h.leader.is_some() && h.leader == h.member_id
    }

    /// One member: its size, the defragmentation, its size after; logged, counted, recorded.
    async fn defrag_one(&mut self, member: &Member, trigger: Trigger) -> DefragRun {
        let Some(tls) = self.tls() else {
            return self.record(
                member,
                trigger,
                SystemTime::now(),
                0,
                None,
                None,
                Some("no certificate".into()),
            );
        };
        let urls = &member.client_urls;
        let started = SystemTime::now();
        let before = match ops::status(urls, &tls).await {
            Ok(s) => s.size,
            Err(e) => {
                let error = format!("unreachable ({e}), skipped");
                return self.record(member, trigger, started, 0, None, None, Some(error));
            }
        };
        tracing::info!(
            member = %member.name,
            trigger = trigger.name(),
            started_ms = unix_ms(SystemTime::now()),
            db_size = before.total,
            db_in_use = before.in_use,
            "defragmentation started"
        );
        let clock = Instant::now();
        let result = ops::defragment(urls, &tls).await;
        let duration_ms = clock.elapsed().as_millis() as u64;
        let ended_ms = unix_ms(SystemTime::now());
        let after = ops::status(urls, &tls).await.ok().map(|s| s.size.total);
        let error = result.err().map(|e| e.to_string());
        tracing::info!(
            member = %member.name,
            trigger = trigger.name(),
            ended_ms,
            duration_ms,
            db_size_before = before.total,
            db_size_after = after.unwrap_or_default(),
            error = error.as_deref().unwrap_or(""),
            "defragmentation finished"
        );
        if error.is_none() {
            self.history
                .defragged_at
                .insert(member.id, SystemTime::now());
        }
        self.record(
            member,
            trigger,
            started,
            duration_ms,
            Some(before.total),
            after,
            error,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        member: &Member,
        trigger: Trigger,
        started: SystemTime,
        duration_ms: u64,
        before: Option<u64>,
        after: Option<u64>,
        error: Option<String>,
    ) -> DefragRun {
        let run = DefragRun {
            member: member.name.clone(),
            trigger,
            started_at: unix_ms(started) / 1000,
            duration_ms,
            before,
            after,
            error,
        };
        self.status.defrags += 1;
        if run.error.is_some() {
            self.status.failures += 1;
        }
        self.status.last = Some(run.clone());
        self.published.send_replace(self.status.clone());
        run
    }
}
