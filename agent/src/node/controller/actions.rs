//! Carrying out the controller's steps: the CA and plan, certificates, starting and stopping
//! etcd, and membership changes through the running cluster. Each returns whether state changed
//! (so the next step can follow at once) or an error (retried with backoff by the loop). The
//! loop runs them inside `beating`, so none can stall the heartbeat or outlive a shutdown.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{ClusterCache, Controller, PROMOTE_RETRY};
use crate::etcd::client::ClientTls;
use crate::etcd::{cluster, ClusterError, ClusterState, EtcdCommand, EtcdLaunch};
use crate::fsutil;
use crate::gossip::{GossipCommand, GossipView};
use crate::node::membership::initial_cluster_with;
use crate::node::policy::cluster_endpoints;
use crate::node::step::{ClusterKnowledge, Step};
use crate::node::NodeError;
use crate::pki::CertificateAuthority;
use crate::plan::{new_cluster_token, Plan};

impl Controller {
    pub(super) async fn execute(
        &mut self,
        step: &Step,
        view: &GossipView,
        signing: Option<Arc<CertificateAuthority>>,
    ) -> Result<bool, NodeError> {
        let s = self.settings.clone();
        match step {
            Step::Conflict(_) | Step::Wait { .. } | Step::Steady => return Ok(false),
            Step::QueryCluster => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                let knowledge = match cluster::members(&endpoints, &tls).await {
                    Ok(members) => ClusterKnowledge::Members(members),
                    Err(e) => ClusterKnowledge::Unreachable(e.to_string()),
                };
                self.cluster = ClusterCache {
                    knowledge,
                    at: Some(Instant::now()),
                };
            }
            Step::AddLearner => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                let (id, members) = cluster::add_learner(&endpoints, &tls, &s.peer_url()).await?;
                tracing::info!(member = %format!("{id:x}"), "added this host to the cluster as a learner");
                self.forget_cluster();
                let initial = initial_cluster_with(&s.name, id, members.iter());
                self.start_etcd(ClusterState::Existing, Some(initial))
                    .await?;
            }
            Step::RemoveMember { id } => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                cluster::remove(&endpoints, &tls, *id).await?;
                tracing::warn!(member = %format!("{id:x}"), "removed this host's stale member (its data was lost); joining again");
                self.forget_cluster();
                self.revoke_replaced(&endpoints, &tls).await;
            }
            Step::Promote { id } => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                match cluster::promote(&endpoints, &tls, *id).await {
                    Ok(()) => tracing::info!("promoted this host's learner to a voting member"),
                    Err(e) if e.is_learner_not_ready() => {
                        tracing::debug!("learner not caught up yet");
                        self.retry.next = Some((Instant::now() + PROMOTE_RETRY, PROMOTE_RETRY));
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
                return Ok(false);
            }
            Step::CreateCa => {
                let hash = self.state.create_ca(SystemTime::now())?;
                tracing::info!(ca_hash = %hash, "created the cluster CA");
            }
            Step::DecidePlan(members) => {
                let Some(ca_hash) = self.state.ca_hash() else {
                    return Ok(false);
                };
                let plan = Plan::new(
                    members.clone(),
                    ca_hash,
                    new_cluster_token(),
                    &s.name,
                    unix_now(),
                );
                tracing::info!(plan = %plan.id(), initial_cluster = %plan.initial_cluster(), "decided the bootstrap plan");
                self.adopt(plan).await?;
            }
            Step::AdoptPlan(plan) => {
                tracing::info!(plan = %plan.id(), decided_by = %plan.decided_by, initial_cluster = %plan.initial_cluster(), "adopted the bootstrap plan");
                self.adopt(plan.clone()).await?;
            }
            Step::IssueOwnCert => {
                let Some(ca) = signing else {
                    return Ok(false);
                };
                self.state.issue_own_cert(&ca)?;
                tracing::info!("issued this node's certificate");
            }
            Step::RequestCert { issuer, ca } => {
                tracing::info!(%issuer, "requesting this node's certificate");
                self.state.request_cert(*issuer, *ca).await?;
                tracing::info!(%issuer, "received this node's certificate");
            }
            Step::StartEtcd {
                state,
                initial_cluster,
            } => {
                self.start_etcd(*state, initial_cluster.clone()).await?;
            }
            Step::Restore { .. } => self.apply_restore(view).await?,
            Step::RestoreFromSnapshot => self.restore_from_snapshot().await?,
            Step::DecideRestoredPlan { token } => {
                let Some(ca_hash) = self.state.ca_hash() else {
                    return Ok(false);
                };
                let me = crate::plan::PlanMember {
                    name: s.name.clone(),
                    peer_url: s.peer_url(),
                    client_url: s.client_url(),
                };
                let plan = Plan::new(vec![me], ca_hash, token.clone(), &s.name, unix_now());
                tracing::info!(plan = %plan.id(), "decided the plan of the cluster restored from restore_from");
                self.adopt(plan).await?;
            }
            Step::RestoreLeftOut { .. } => self.leave_for_restore().await?,
            Step::FetchRestorePlan { from, generation } => {
                self.fetch_restore_plan(*from, *generation, view).await?
            }
            Step::MoveDataAside { reason } => {
                self.stop_etcd().await?;
                let aside = self.state.move_data_aside("damaged", unix_now())?;
                tracing::warn!(
                    %reason,
                    moved_to = ?aside,
                    "etcd's data is damaged; moved it aside (not deleted) and rejoining as a new member"
                );
                self.forget_cluster();
            }
        }
        Ok(true)
    }

    pub(super) async fn start_etcd(
        &mut self,
        state: ClusterState,
        initial_cluster: Option<String>,
    ) -> Result<(), NodeError> {
        let Some(plan) = self.state.plan().cloned() else {
            return Ok(());
        };
        fsutil::ensure_dir(&self.settings.etcd_data_dir(), fsutil::MODE_DIR)?;
        let mut launch = self.launch(&plan, state);
        if let Some(initial) = initial_cluster {
            launch.initial_cluster = initial;
        }
        let url = launch.local_client_url();
        tracing::info!(state = %state, initial_cluster = %launch.initial_cluster, "starting etcd");
        self.io
            .etcd
            .send(EtcdCommand::Run(Box::new(launch)))
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        self.io.probe_target.send_replace(Some(url));
        self.etcd_desired = true;
        Ok(())
    }

    /// Stops etcd and waits until it has exited.
    pub(super) async fn stop_etcd(&mut self) -> Result<(), NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.io
            .etcd
            .send(EtcdCommand::Stop(tx))
            .await
            .map_err(|_| NodeError::ShuttingDown)?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?;
        self.io.probe_target.send_replace(None);
        self.etcd_desired = false;
        Ok(())
    }

    /// This node's certificate, for talking to etcd.
    pub(super) fn client_tls(&self) -> Result<ClientTls, NodeError> {
        self.state
            .material()
            .client()
            .cloned()
            .ok_or(NodeError::Cluster(ClusterError::NoCertificate))
    }

    /// The other members' client URLs, in the order to try them.
    pub(super) fn cluster_endpoints(&self, view: &GossipView) -> Vec<String> {
        cluster_endpoints(&self.settings.client_url(), view, self.state.plan())
    }

    /// Persists `plan` and spreads it.
    async fn adopt(&mut self, plan: Plan) -> Result<(), NodeError> {
        self.state.save_plan(plan.clone())?;
        let _ = self.io.gossip.send(GossipCommand::PublishPlan(plan)).await;
        Ok(())
    }

    fn launch(&self, plan: &Plan, state: ClusterState) -> EtcdLaunch {
        let s = &self.settings;
        EtcdLaunch {
            name: s.name.clone(),
            data_dir: s.etcd_data_dir(),
            advertise: s.advertise,
            localhost: s.etcd.listen_localhost.then(|| s.localhost()),
            client_port: s.ports.client,
            peer_port: s.ports.peer,
            initial_cluster: plan.initial_cluster(),
            state,
            cluster_token: plan.cluster_token.clone(),
            tls: self.state.tls_files(),
            tuning: s.etcd.tuning.clone(),
        }
    }
}

pub(super) use crate::clock::unix_now;
