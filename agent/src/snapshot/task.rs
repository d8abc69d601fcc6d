//! The snapshot task: every [`EVERY`] it looks whether a new slot began; if so it asks the
//! job policy (one healthy voter, the slot not done, the `snapshot` lock free), takes the lock,
//! asks again with the lock held, streams a snapshot of its own member into a private
//! temporary file, verifies etcd's integrity hash, gives it its final name and manifest,
//! records the slot and prunes old files. Its etcd IO runs inside [`beating`], so shutdown
//! cancels it at once (the temporary file is removed when the next run starts over it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::file::{self, SnapshotName};
use super::status::{SaveReport, SnapshotStatus};
use super::take::{save_to_dir, unix_secs, Naming, Progress, TakeError};
use super::upload::Uploader;
use crate::config::Settings;
use crate::etcd::client::ClientTls;
use crate::etcd::{cluster, EtcdHealth};
use crate::jobs::policy::{ClusterFacts, LockFact, MemberFact};
use crate::jobs::{may_run, Acquired, Decision, Job, JobLock, JobLocks};
use crate::liveness::{beating, Heartbeat};
use crate::pki::TlsMaterial;

/// How often the task looks for a new slot (cheap: no etcd IO until one began).
pub const EVERY: Duration = Duration::from_secs(1);
/// After a failed snapshot, the slot is tried again this much later (not every second).
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// The snapshot task.
pub struct SnapshotTask {
    settings: Arc<Settings>,
    health: watch::Receiver<EtcdHealth>,
    material: watch::Receiver<Arc<TlsMaterial>>,
    published: watch::Sender<SnapshotStatus>,
    /// Bytes done of a snapshot being taken (for STATUS=).
    progress: watch::Sender<Option<Progress>>,
    heartbeat: Heartbeat,
    /// The latest slot known done cluster-wide (so most turns need no etcd IO).
    known_done: Option<u64>,
    /// No new attempt before this, after a failure.
    retry_at: Option<Instant>,
    status: SnapshotStatus,
    /// Uploads each snapshot this agent takes, when `[snapshot.s3]` is set.
    uploader: Option<Uploader>,
    /// On-demand saves, as they finish.
    reports: mpsc::Receiver<SaveReport>,
}

impl SnapshotTask {
    pub fn new(
        settings: Arc<Settings>,
        health: watch::Receiver<EtcdHealth>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        published: watch::Sender<SnapshotStatus>,
        progress: watch::Sender<Option<Progress>>,
        reports: mpsc::Receiver<SaveReport>,
        heartbeat: Heartbeat,
    ) -> Self {
        let status = SnapshotStatus {
            schedule: settings.snapshot.schedule_text.clone(),
            message: "starting".into(),
            ..SnapshotStatus::default()
        };
        let uploader = settings
            .snapshot
            .s3
            .clone()
            .map(|s3| Uploader::new(s3, settings.snapshot.dir.clone()));
        Self {
            uploader,
            settings,
            health,
            material,
            published,
            progress,
            heartbeat,
            known_done: None,
            retry_at: None,
            status,
            reports,
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        if self.settings.snapshot.schedule.is_none() {
            // Off: the loop still beats, so the watchdog sees a live task.
            self.status.message = "snapshots are off".into();
            self.status.schedule.clear();
        }
        self.published.send_replace(self.status.clone());
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let report = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                Some(report) = self.reports.recv() => Some(report),
                _ = tick.tick() => None,
            };
            self.heartbeat.beat();
            let heartbeat = self.heartbeat.clone();
            let work = async {
                match report {
                    Some(report) => self.saved_on_demand(report).await,
                    None => self.turn().await,
                }
            };
            if beating(&heartbeat, &cancel, work).await.is_none() {
                return;
            }
            self.status.upload = self.uploader.as_ref().map(|u| u.status().clone());
            self.published.send_replace(self.status.clone());
        }
    }

    /// Counts an on-demand save like a scheduled one; one that landed in the snapshot
    /// directory is subject to retention and uploaded like one.
    async fn saved_on_demand(&mut self, report: SaveReport) {
        self.status.record(&report);
        let SaveReport::Taken {
            file: Some(file),
            at,
            ..
        } = report
        else {
            return;
        };
        self.prune();
        let cluster_id = self.health.borrow().cluster_id;
        if let (Some(up), Some(cluster_id)) = (self.uploader.as_mut(), cluster_id) {
            up.run(Some(&file), at, cluster_id).await;
        }
    }

    /// Own client URL first, then every member's.
    fn endpoints(&self, health: &EtcdHealth) -> Vec<String> {
        health.endpoints(self.settings.client_url())
    }

    async fn turn(&mut self) {
        let Some(schedule) = self.settings.snapshot.schedule.clone() else {
            return;
        };
        let now = SystemTime::now();
        self.status.interval_seconds = schedule.period(now).map(|p| p.as_secs());
        self.status.next_slot = schedule.next_slot_after(now);
        let Some(slot) = schedule.slot_at(now) else {
            self.status.message = "no schedule slot now".into();
            return;
        };
        let cluster_id = self.health.borrow().cluster_id;
        if let (Some(up), Some(cluster_id)) = (self.uploader.as_mut(), cluster_id) {
            if up.retry_due(slot) {
                up.run(None, slot, cluster_id).await;
            }
        }
        if self.known_done.is_some_and(|d| d >= slot)
            || self.retry_at.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        let Some(tls) = self.material.borrow().client().cloned() else {
            self.status.message = "waiting for this node's certificate".into();
            return;
        };
        let health = self.health.borrow().clone();
        if health.member_id.is_none() || health.cluster_id.is_none() {
            self.status.message = "waiting for the local etcd member".into();
            return;
        }
        let endpoints = self.endpoints(&health);
        if let Err(e) = super::take::check_seal_copy(&self.settings, &endpoints, &tls).await {
            // Another member, which holds it, takes the slot.
            self.status.message = format!("snapshot waits: {e}");
            return;
        }
        let locks = JobLocks::new(&self.settings.name, endpoints, tls.clone());
        let mut facts = match self.facts(&health, &tls, &locks).await {
            Ok(f) => f,
            Err(e) => {
                self.status.message = format!("snapshot waits: {e}");
                return;
            }
        };
        facts.schedule = Some(schedule.clone());
        match may_run(Job::Snapshot, &facts, now) {
            Decision::Acquire { .. } => {}
            Decision::Wait(why) => {
                if let crate::jobs::WaitReason::SlotDone { slot } = why {
                    self.known_done = Some(slot);
                }
                self.status.message = format!("snapshot waits: {why}");
                return;
            }
            Decision::Run { .. } => return,
        }
        let lock = match locks.try_acquire(Job::Snapshot).await {
            Ok(Acquired::Held(lock)) => lock,
            Ok(Acquired::Busy(holder)) => {
                self.status.message = format!("snapshot waits: the job lock is held by {holder}");
                return;
            }
            Err(e) => {
                self.status.message = format!("snapshot waits: {e}");
                return;
            }
        };
        // Another agent may have done the slot just before releasing the lock.
        match locks.last_slot(Job::Snapshot).await {
            Ok(done) => facts.last_done_slot = done,
            Err(e) => {
                self.status.message = format!("snapshot waits: {e}");
                lock.release().await;
                return;
            }
        }
        facts.lock = LockFact::Ours(Job::Snapshot);
        let mut taken = None;
        match may_run(Job::Snapshot, &facts, now) {
            Decision::Run { slot: Some(slot) } => {
                taken = self.take_and_record(slot, &health, &tls, &lock).await
            }
            Decision::Wait(why) => self.status.message = format!("snapshot waits: {why}"),
            _ => {}
        }
        lock.release().await;
        // Uploaded without the lock held: a slow store never holds up the next slot.
        if let (Some(file), Some(up), Some(cluster_id)) =
            (taken, self.uploader.as_mut(), health.cluster_id)
        {
            up.run(Some(&file), slot, cluster_id).await;
        }
    }

    async fn facts(
        &self,
        health: &EtcdHealth,
        tls: &ClientTls,
        locks: &JobLocks,
    ) -> Result<ClusterFacts, String> {
        let members = cluster::members(&self.endpoints(health), tls)
            .await
            .map_err(|e| e.to_string())?;
        let lock = match locks.holder(Job::Snapshot).await {
            Ok(None) => LockFact::Free,
            Ok(Some(h)) => LockFact::Theirs(h),
            Err(_) => LockFact::Unknown,
        };
        let last_done_slot = locks
            .last_slot(Job::Snapshot)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ClusterFacts {
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
            last_done_slot,
        })
    }

    async fn take_and_record(
        &mut self,
        slot: u64,
        health: &EtcdHealth,
        tls: &ClientTls,
        lock: &JobLock,
    ) -> Option<String> {
        let started = Instant::now();
        tracing::info!(slot, "taking a snapshot");
        match self.take(slot, health, tls, lock).await {
            Ok((name, size)) => {
                let duration = started.elapsed();
                if let Err(e) = lock.record_slot(slot).await {
                    tracing::warn!(error = %e, slot, "snapshot taken but its slot not recorded");
                }
                self.known_done = Some(slot);
                self.retry_at = None;
                tracing::info!(
                    slot,
                    file = %name,
                    size,
                    duration_ms = duration.as_millis() as u64,
                    "snapshot taken and verified"
                );
                self.status.snapshots += 1;
                self.status.last_success = Some(unix_secs(SystemTime::now()));
                self.status.last_file = Some(name.clone());
                self.status.last_size = Some(size);
                self.status.last_duration_ms = Some(duration.as_millis() as u64);
                self.status.message = format!("slot {slot} done");
                self.prune();
                Some(name)
            }
            Err(e) => {
                tracing::warn!(error = %e, slot, "snapshot failed");
                self.status.failures += 1;
                self.retry_at = Some(Instant::now() + FAILURE_BACKOFF);
                self.status.last_error = Some(e.to_string());
                self.status.message = format!("snapshot of slot {slot} failed: {e}");
                None
            }
        }
    }

    /// Streams, verifies, names and describes one snapshot; returns its file name and size.
    async fn take(
        &self,
        slot: u64,
        health: &EtcdHealth,
        tls: &ClientTls,
        lock: &JobLock,
    ) -> Result<(String, u64), TakeError> {
        let naming = Naming {
            cluster_id: health.cluster_id.ok_or(TakeError::NotReady)?,
            time: slot,
            ca_hash: self.ca_hash(),
            node: &self.settings.name,
            ca_seal_secret: crate::issuer::seal_secret::for_manifest(
                &self.settings.pki_dir(),
                &self.settings.token.primary(),
            ),
        };
        let saved = save_to_dir(
            &self.settings,
            tls,
            naming,
            || lock.is_lost(),
            &self.progress,
        )
        .await?;
        Ok((saved.file_name, saved.manifest.size))
    }

    fn ca_hash(&self) -> String {
        self.material
            .borrow()
            .ca_hash
            .as_ref()
            .map(|h| h.to_string())
            .unwrap_or_default()
    }

    /// Removes the oldest files beyond `retain` (never the newest), with their manifests.
    fn prune(&self) {
        let dir = &self.settings.snapshot.dir;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let found = file::snapshots_in(names.iter().map(String::as_str));
        let all: Vec<SnapshotName> = found.iter().map(|(n, _)| n.clone()).collect();
        for old in file::to_prune(&all, self.settings.snapshot.retain) {
            let paths: Vec<PathBuf> = [
                old.file_name(),
                old.encrypted_file_name(),
                old.manifest_name(),
            ]
            .into_iter()
            .flatten()
            .map(|n| dir.join(n))
            .collect();
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(file = %path.display(), "old snapshot removed"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(error = %e, file = %path.display(), "cannot remove an old snapshot")
                    }
                }
            }
        }
    }
}
