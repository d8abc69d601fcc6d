//! The controller task: gathers the facts, asks [`next_step`] what to do, does it, and
//! publishes the node's status and gossip metadata. It reacts to gossip and etcd health
//! changes at once and re-checks every second (certificate renewal is a matter of time).
//! A failed action is retried with backoff; nothing here blocks the other tasks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod actions;
mod leave;
mod maintenance;

use actions::import_operator_ca;

use super::certs::{cert_state, load_node_cert, NodeCert};
use super::status::{CertSummary, NodeStatus};
use super::step::{next_step, ClusterKnowledge, Facts, Step};
use super::NodeError;
use crate::api::ApiMaterial;
use crate::config::Settings;
use crate::etcd::{data, EtcdCommand, EtcdHealth, ProcessState};
use crate::fsutil;
use crate::gossip::{GossipCommand, GossipView, NodeMeta};
use crate::liveness::Heartbeat;
use crate::phase::Phase;
use crate::pki::{CaHash, CertificateAuthority, PkiStore};
use crate::plan::{Candidate, Plan, PlanStore};

const FIRST_RETRY: Duration = Duration::from_millis(300);
const MAX_RETRY: Duration = Duration::from_secs(5);
const RECHECK: Duration = Duration::from_secs(1);
/// How long an answer about the cluster's membership is used before asking again.
const CLUSTER_KNOWLEDGE_TTL: Duration = Duration::from_secs(2);
/// Retry interval after an expected refusal from etcd (see `ClusterError::is_transient`).
const TRANSIENT_RETRY: Duration = Duration::from_secs(1);
/// How often a learner asks to be promoted while it catches up.
const PROMOTE_RETRY: Duration = Duration::from_millis(100);

/// Consecutive quick etcd failures with a data error before the data counts as damaged.
const DAMAGE_AFTER_FAILURES: u32 = 3;

/// Marker: this host's member was healthy in a cluster once.
const FORMED_MARKER: &str = "formed";
/// Marker: this host left the cluster with `quorate leave`.
const LEFT_MARKER: &str = "left";

/// The channels the controller talks through (created by the wiring in agent.rs).
pub struct ControllerIo {
    pub view: watch::Receiver<GossipView>,
    pub health: watch::Receiver<EtcdHealth>,
    pub process: watch::Receiver<ProcessState>,
    pub gossip: mpsc::Sender<GossipCommand>,
    pub etcd: mpsc::Sender<EtcdCommand>,
    pub probe_target: watch::Sender<Option<String>>,
    pub api: watch::Sender<ApiMaterial>,
    pub status: watch::Sender<NodeStatus>,
    pub control: mpsc::Receiver<crate::control::ControlCommand>,
    /// The CA while this agent is the elected issuer (see `issuer::IssuerTask`).
    pub issuer: watch::Receiver<Option<Arc<CertificateAuthority>>>,
    pub heartbeat: Heartbeat,
}

/// The controller and the state it owns.
pub struct Controller {
    settings: Arc<Settings>,
    pki: PkiStore,
    plans: PlanStore,
    /// The CA key on this host's disk (the seed, or an operator-supplied CA).
    disk_ca: Option<Arc<CertificateAuthority>>,
    /// Whether the API currently has signing material (to republish on a role change).
    api_signing: bool,
    last_seen: maintenance::LastSeen,
    /// Another live agent announces that it is the issuer.
    other_issuer: bool,
    ca_pem: Option<String>,
    ca_hash: Option<CaHash>,
    plan: Option<Plan>,
    cert: Option<NodeCert>,
    etcd_desired: bool,
    ever_healthy: bool,
    formed_here: bool,
    left: bool,
    cluster: ClusterKnowledge,
    cluster_at: Option<Instant>,
    io: ControllerIo,
    last_meta: Option<NodeMeta>,
    last_error: Option<String>,
    retry: Option<(Instant, Duration)>,
    last_step: Option<Step>,
}

impl Controller {
    /// Loads the node's state from disk. Errors here stop the agent: they mean a damaged or
    /// foreign state directory that needs the operator.
    pub fn load(settings: Arc<Settings>, io: ControllerIo) -> Result<Self, NodeError> {
        let pki = PkiStore::new(settings.pki_dir());
        pki.ensure_dir()?;
        import_operator_ca(&settings, &pki)?;
        let ca = pki.load_ca()?.map(Arc::new);
        let ca_pem = pki.load_ca_cert()?;
        let ca_hash = ca_pem.as_deref().map(CaHash::of_cert_pem).transpose()?;
        let plans = PlanStore::new(&settings.state_dir);
        let plan = plans.load()?;
        let cert = load_node_cert(&pki, ca_pem.as_deref(), settings.advertise)?;
        let formed_here = settings.state_dir.join(FORMED_MARKER).exists();
        let left_marker = settings.state_dir.join(LEFT_MARKER);
        if left_marker.exists() {
            // `quorate leave` removed this host's member; a new start joins afresh.
            std::fs::remove_file(&left_marker).map_err(|source| fsutil::FsError {
                op: "remove",
                path: left_marker.clone(),
                source,
            })?;
            tracing::info!("this host left the cluster before; joining it again as a new member");
        }
        let mut controller = Self {
            settings,
            pki,
            plans,
            disk_ca: ca,
            api_signing: false,
            last_seen: maintenance::LastSeen::default(),
            other_issuer: false,
            ca_pem,
            ca_hash,
            plan,
            cert,
            etcd_desired: false,
            ever_healthy: false,
            formed_here,
            left: false,
            cluster: ClusterKnowledge::Unknown,
            cluster_at: None,
            io,
            last_meta: None,
            last_error: None,
            retry: None,
            last_step: None,
        };
        controller.publish_api_material();
        Ok(controller)
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        // Every holder of the plan disseminates it (not only the seed, not only right after
        // deciding it): after all agents restarted, new and rebuilt hosts still learn it.
        if let Some(plan) = self.plan.clone() {
            let _ = self.io.gossip.send(GossipCommand::PublishPlan(plan)).await;
        }
        loop {
            self.io.heartbeat.beat();
            let view = self.io.view.borrow_and_update().clone();
            let health = self.io.health.borrow_and_update().clone();
            self.other_issuer = view.live_metas().any(|m| m.issuer);
            if self.signing_ca().is_some() != self.api_signing {
                self.publish_api_material();
            }
            let step = self.decide(&view, &health);
            if self.last_step.as_ref() != Some(&step) {
                match &step {
                    Step::Conflict(msg) => tracing::error!("conflict: {msg}"),
                    Step::Wait { reason, .. } => tracing::info!("{reason}"),
                    Step::Steady => {}
                    other => tracing::debug!(step = ?other, "next step"),
                }
            }
            let retry_wait = self.retry.filter(|(at, _)| *at > Instant::now());
            let progressed = if retry_wait.is_some() {
                false
            } else {
                match self.execute(&step, &view).await {
                    Ok(progressed) => {
                        if progressed {
                            self.last_error = None;
                            self.retry = None;
                        }
                        progressed
                    }
                    Err(e) if e.is_transient() => {
                        tracing::info!("waiting: {e}");
                        self.last_error = Some(e.to_string());
                        self.retry = Some((Instant::now() + TRANSIENT_RETRY, TRANSIENT_RETRY));
                        false
                    }
                    Err(e) => {
                        let backoff = self
                            .retry
                            .map(|(_, b)| (b * 2).min(MAX_RETRY))
                            .unwrap_or(FIRST_RETRY);
                        tracing::warn!(error = %e, retry_in = ?backoff, step = ?step, "step failed");
                        self.last_error = Some(e.to_string());
                        self.retry = Some((Instant::now() + backoff, backoff));
                        false
                    }
                }
            };
            self.publish(&step, &view, &health).await;
            if step == Step::Steady {
                self.maintain(&view, &health).await;
            }
            self.last_step = Some(step);
            if progressed {
                continue;
            }
            let wake = self
                .retry
                .map(|(at, _)| at)
                .filter(|at| *at > Instant::now())
                .unwrap_or_else(|| Instant::now() + RECHECK);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.io.view.changed() => {}
                _ = self.io.health.changed() => {}
                _ = self.io.issuer.changed() => {}
                Some(command) = self.io.control.recv() => {
                    let view = self.io.view.borrow().clone();
                    self.handle_control(command, &view).await;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The CA this agent signs with, if it is the issuer: while it holds the issuer lease, or,
    /// for the agent with the CA on disk (the seed), as long as no other live agent announces
    /// that it holds the lease. So there is always an issuer (the seed bootstraps everyone
    /// before etcd exists), and in steady state exactly one.
    fn signing_ca(&self) -> Option<Arc<CertificateAuthority>> {
        let elected = self.io.issuer.borrow().clone();
        elected.or_else(|| (!self.other_issuer).then(|| self.disk_ca.clone()).flatten())
    }

    fn decide(&mut self, view: &GossipView, health: &EtcdHealth) -> Step {
        if self
            .cluster_at
            .is_some_and(|at| at.elapsed() > CLUSTER_KNOWLEDGE_TTL)
        {
            self.cluster = ClusterKnowledge::Unknown;
            self.cluster_at = None;
        }
        let s = &self.settings;
        let process = self.io.process.borrow().clone();
        // Only while etcd is down: a later successful start clears the suspicion.
        let damaged = (process.pid.is_none() && process.quick_failures >= DAMAGE_AFTER_FAILURES)
            .then_some(process.last_error.as_deref())
            .flatten()
            .filter(|e| data::looks_damaged(e));
        let facts = Facts {
            me: &s.name,
            seed: s.seed,
            expect: s.bootstrap_expect,
            pin: s.ca_pin,
            local_ca: self.ca_hash,
            holds_ca_key: self.signing_ca().is_some(),
            plan: self.plan.as_ref(),
            cert: cert_state(self.cert.as_ref(), SystemTime::now()),
            has_member: data::has_member(&s.etcd_data_dir()),
            etcd_desired: self.etcd_desired,
            formed_here: self.formed_here,
            left: self.left,
            member_id: health.member_id,
            is_learner: health.reachable && health.is_learner,
            cluster: &self.cluster,
            damaged,
            view,
            me_candidate: Candidate {
                name: s.name.clone(),
                peer_url: s.peer_url(),
                client_url: s.client_url(),
                seed: s.seed,
                ca_hash: self.ca_hash,
                plan_id: self.plan.as_ref().map(Plan::id),
            },
        };
        next_step(&facts)
    }

    /// Carries out `step`; `Ok(true)` when state changed and the next step can follow at once.
    async fn publish(&mut self, step: &Step, view: &GossipView, health: &EtcdHealth) {
        let ready = self.etcd_desired && health.healthy();
        self.ever_healthy |= ready;
        if ready {
            self.mark_formed();
        }
        let (phase, message) = self.describe(step, view, health, ready);
        let status = NodeStatus {
            phase,
            message,
            ready,
            issuer: self.signing_ca().is_some(),
            ca_hash: self.ca_hash,
            plan: self.plan.clone(),
            certificate: self.cert.as_ref().map(|c| CertSummary::of(&c.info)),
            last_error: self.last_error.clone(),
        };
        self.io.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed && current.message != status.message {
                tracing::info!(phase = %status.phase, "status: {}", status.message);
            }
            *current = status;
            changed
        });
        let s = &self.settings;
        let meta = NodeMeta {
            name: s.name.clone(),
            version: (0, 0),
            gossip_addr: s.gossip_advertise(),
            api_addr: s.api_advertise(),
            peer_url: s.peer_url(),
            client_url: s.client_url(),
            seed: s.seed,
            issuer: self.signing_ca().is_some(),
            phase,
            ca_hash: self.ca_hash,
            plan_id: self.plan.as_ref().map(Plan::id),
            member_id: health.member_id,
            formed: self.formed_here,
        };
        if self.last_meta.as_ref() != Some(&meta) {
            self.last_meta = Some(meta.clone());
            let _ = self.io.gossip.send(GossipCommand::SetMeta(meta)).await;
        }
    }

    fn describe(
        &self,
        step: &Step,
        view: &GossipView,
        health: &EtcdHealth,
        ready: bool,
    ) -> (Phase, String) {
        match step {
            Step::Conflict(msg) => (Phase::Conflict, format!("conflict: {msg}")),
            Step::Wait { phase, reason } => (*phase, reason.clone()),
            Step::CreateCa | Step::DecidePlan(_) | Step::AdoptPlan(_) => {
                (Phase::WaitingForPeers, "deciding the bootstrap plan".into())
            }
            Step::IssueOwnCert | Step::RequestCert { .. } => (
                Phase::RequestingCertificate,
                "requesting certificate".into(),
            ),
            Step::StartEtcd { .. } => (Phase::StartingEtcd, "starting etcd".into()),
            Step::QueryCluster => (
                Phase::Joining,
                "asking the running cluster for its members".into(),
            ),
            Step::AddLearner => (Phase::Joining, "joining the cluster as a learner".into()),
            Step::RemoveMember { .. } => (
                Phase::Joining,
                "removing this host's stale member before joining again".into(),
            ),
            Step::Promote { .. } => (
                Phase::Joining,
                "learner: catching up, to be promoted to a voting member".into(),
            ),
            Step::MoveDataAside { reason } => (
                Phase::Degraded,
                format!("etcd's data is damaged ({reason}); moving it aside"),
            ),
            Step::Steady if ready => {
                let leader = health
                    .leader_name()
                    .map(str::to_owned)
                    .or_else(|| health.leader.map(|l| format!("{l:x}")))
                    .unwrap_or_default();
                (Phase::Running, format!("healthy, leader {leader}"))
            }
            Step::Steady => {
                let problem = health
                    .problem()
                    .unwrap_or_else(|| "etcd is not healthy yet".into());
                let members = self.plan.as_ref().map(|p| p.members.len()).unwrap_or(1);
                let up = 1 + view
                    .live()
                    .filter(|p| {
                        self.plan
                            .as_ref()
                            .is_some_and(|plan| plan.member(&p.id.name).is_some())
                    })
                    .count();
                let quorum = members / 2 + 1;
                if up < quorum {
                    (
                        Phase::WaitingForPeers,
                        format!("waiting for peers {up}/{members}: etcd needs {quorum} members for quorum"),
                    )
                } else if self.ever_healthy {
                    (Phase::Degraded, problem)
                } else {
                    (Phase::StartingEtcd, format!("starting etcd: {problem}"))
                }
            }
        }
    }
}
