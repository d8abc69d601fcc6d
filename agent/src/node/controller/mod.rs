//! The controller task: gathers the facts, asks [`next_step`] what to do, dispatches it, and
//! publishes the node's status and gossip metadata. It reacts to gossip and etcd health changes
//! at once and re-checks every second (certificate renewal is a matter of time). Every action
//! runs inside [`beating`]: the loop's heartbeat keeps beating while it waits on etcd or the
//! issuer, and shutdown cancels it at its next await point. A failed action is retried with
//! backoff. Cluster maintenance and the issuer election are tasks of their own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod actions;
mod leave;
mod publish;
mod restore;

use super::certs::cert_state;
use super::policy::{damaged_verdict, signing_ca};
use super::state::NodeState;
use super::step::{next_step, ClusterKnowledge, Facts, RestoreFacts, Step};
use super::NodeError;
use crate::api::ApiMaterial;
use crate::config::Settings;
use crate::control::ControlCommand;
use crate::etcd::{data, EtcdCommand, EtcdHealth, ProcessState};
use crate::gossip::{GossipCommand, GossipView, NodeMeta};
use crate::liveness::{beating, Heartbeat};
use crate::pki::{CertificateAuthority, TlsMaterial};
use crate::plan::{Candidate, Plan};

const FIRST_RETRY: Duration = Duration::from_millis(300);
const MAX_RETRY: Duration = Duration::from_secs(5);
const RECHECK: Duration = Duration::from_secs(1);
/// How long an answer about the cluster's membership is used before asking again.
const CLUSTER_KNOWLEDGE_TTL: Duration = Duration::from_secs(2);
/// Retry interval after an expected refusal from etcd (see `EtcdError::is_transient`).
const TRANSIENT_RETRY: Duration = Duration::from_secs(1);
/// How often a learner asks to be promoted while it catches up.
const PROMOTE_RETRY: Duration = Duration::from_millis(100);

/// The channels the controller talks through (created by the wiring in agent.rs).
pub struct ControllerIo {
    pub view: watch::Receiver<GossipView>,
    pub health: watch::Receiver<EtcdHealth>,
    pub process: watch::Receiver<ProcessState>,
    pub gossip: mpsc::Sender<GossipCommand>,
    pub etcd: mpsc::Sender<EtcdCommand>,
    pub probe_target: watch::Sender<Option<String>>,
    pub api: watch::Sender<ApiMaterial>,
    pub status: watch::Sender<super::NodeStatus>,
    pub control: mpsc::Receiver<ControlCommand>,
    /// The CA while this agent is the elected issuer (see `issuer::IssuerTask`).
    pub issuer: watch::Receiver<Option<Arc<CertificateAuthority>>>,
    pub heartbeat: Heartbeat,
    /// The newest restore plan this agent holds, for the agent API.
    pub restore_plan: watch::Sender<Option<crate::restore::SignedPlan>>,
    /// How far a restore's snapshot transfer is (download of `restore_from`, fetch from the
    /// deciding member).
    pub transfers: crate::restore::transfer::Transfers,
}

/// The controller: the node's persistent state (through its one owner) and what the loop
/// remembers between turns.
pub struct Controller {
    settings: Arc<Settings>,
    state: NodeState,
    io: ControllerIo,
    /// etcd has been started (the supervisor keeps it running).
    etcd_desired: bool,
    /// The local member has been healthy during this run.
    ever_healthy: bool,
    cluster: ClusterCache,
    retry: Retry,
    published: Published,
    /// Why forming from `restore_from` failed in this run.
    restore_from_error: Option<String>,
    /// The newest advertised restore generation whose plan was refused in this run.
    refused_restore: u64,
}

/// The running cluster's membership as last asked, and when.
#[derive(Default)]
struct ClusterCache {
    knowledge: ClusterKnowledge,
    at: Option<Instant>,
}

/// The last failure and when to try again.
#[derive(Default)]
struct Retry {
    last_error: Option<String>,
    next: Option<(Instant, Duration)>,
}

/// What was published last, to publish only changes.
#[derive(Default)]
struct Published {
    step: Option<Step>,
    meta: Option<NodeMeta>,
    /// Whether the API got a signing CA, and the TLS material's generation.
    api: Option<(bool, u64)>,
}

impl Controller {
    /// Loads the node's state (see [`NodeState::load`]); errors stop the agent.
    pub fn new(
        settings: Arc<Settings>,
        io: ControllerIo,
        material: watch::Sender<Arc<TlsMaterial>>,
    ) -> Result<Self, NodeError> {
        let state = NodeState::load(settings.clone(), material)?;
        let mut controller = Self {
            settings,
            state,
            io,
            etcd_desired: false,
            ever_healthy: false,
            cluster: ClusterCache::default(),
            retry: Retry::default(),
            published: Published::default(),
            restore_from_error: None,
            refused_restore: 0,
        };
        controller.publish_api(None);
        Ok(controller)
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        // Every holder of the plan disseminates it (not only the seed, not only right after
        // deciding it): after all agents restarted, new and rebuilt hosts still learn it.
        if let Some(plan) = self.state.plan().cloned() {
            let _ = self.io.gossip.send(GossipCommand::PublishPlan(plan)).await;
        }
        let heartbeat = self.io.heartbeat.clone();
        loop {
            heartbeat.beat();
            let view = self.io.view.borrow_and_update().clone();
            let health = self.io.health.borrow_and_update().clone();
            let signing = self.signing_ca(&view);
            self.publish_api(signing.clone());
            let step = self.decide(&view, &health, signing.is_some());
            self.log_step(&step);
            let waiting = self.retry.next.is_some_and(|(at, _)| at > Instant::now());
            let mut progressed = false;
            if !waiting {
                match beating(&heartbeat, &cancel, self.execute(&step, &view, signing)).await {
                    None => break,
                    Some(result) => progressed = self.retry.record(result, &step),
                }
            }
            self.publish(&step, &view, &health).await;
            self.published.step = Some(step);
            if progressed {
                continue;
            }
            let wake = self
                .retry
                .next
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
                    let handled = beating(&heartbeat, &cancel, self.handle_control(command, &view));
                    if handled.await.is_none() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The CA this agent signs with now (see [`signing_ca`]).
    fn signing_ca(&self, view: &GossipView) -> Option<Arc<CertificateAuthority>> {
        let another_issuer_live = view.live_metas().any(|m| m.issuer);
        signing_ca(
            self.io.issuer.borrow().clone(),
            self.state.disk_ca(),
            another_issuer_live,
        )
    }

    fn decide(&mut self, view: &GossipView, health: &EtcdHealth, holds_ca_key: bool) -> Step {
        if self
            .cluster
            .at
            .is_some_and(|at| at.elapsed() > CLUSTER_KNOWLEDGE_TTL)
        {
            self.forget_cluster();
        }
        let s = &self.settings;
        let process = self.io.process.borrow().clone();
        let plan = self.state.plan();
        let record = self.state.restore();
        let restored_token = self.state.restored_token();
        let facts = Facts {
            me: &s.name,
            seed: s.seed,
            expect: s.bootstrap_expect,
            pin: s.ca_pin,
            local_ca: self.state.ca_hash(),
            holds_ca_key,
            plan,
            cert: cert_state(self.state.cert(), SystemTime::now()),
            has_member: data::has_member(&s.etcd_data_dir()),
            etcd_desired: self.etcd_desired,
            formed_here: self.state.formed(),
            left: self.state.left(),
            member_id: health.member_id,
            is_learner: health.reachable && health.is_learner,
            cluster: &self.cluster.knowledge,
            damaged: damaged_verdict(&process, data::looks_damaged),
            view,
            me_candidate: Candidate {
                name: s.name.clone(),
                peer_url: s.peer_url(),
                client_url: s.client_url(),
                seed: s.seed,
                ca_hash: self.state.ca_hash(),
                plan_id: plan.map(Plan::id),
            },
            restore: RestoreFacts {
                pending: record.pending().map(|p| &p.plan),
                applied: record.applied,
                refused: self.refused_restore,
            },
            restore_from: s.restore_from.is_some(),
            restored_token: restored_token.as_deref(),
            restore_from_error: self.restore_from_error.as_deref(),
        };
        next_step(&facts)
    }

    fn log_step(&self, step: &Step) {
        if self.published.step.as_ref() == Some(step) {
            return;
        }
        match step {
            Step::Conflict(msg) => tracing::error!("conflict: {msg}"),
            Step::Wait { reason, .. } => tracing::info!("{reason}"),
            Step::Steady => {}
            other => tracing::debug!(step = ?other, "next step"),
        }
    }

    fn forget_cluster(&mut self) {
        self.cluster = ClusterCache::default();
    }
}

impl Retry {
    /// Records an action's result; whether it made progress (the next step can follow at once).
    fn record(&mut self, result: Result<bool, NodeError>, step: &Step) -> bool {
        match result {
            Ok(true) => {
                self.last_error = None;
                self.next = None;
                true
            }
            Ok(false) => false,
            Err(e) if e.is_transient() => {
                tracing::info!("waiting: {e}");
                self.last_error = Some(e.to_string());
                self.next = Some((Instant::now() + TRANSIENT_RETRY, TRANSIENT_RETRY));
                false
            }
            Err(e) => {
                let backoff = self
                    .next
                    .map(|(_, b)| (b * 2).min(MAX_RETRY))
                    .unwrap_or(FIRST_RETRY);
                tracing::warn!(error = %e, retry_in = ?backoff, step = ?step, "step failed");
                self.last_error = Some(e.to_string());
                self.next = Some((Instant::now() + backoff, backoff));
                false
            }
        }
    }
}
