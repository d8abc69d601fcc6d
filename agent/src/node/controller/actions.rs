//! Carrying out the controller's steps: the CA and plan, certificates, starting and stopping
//! etcd, and membership changes through the running cluster. Each returns whether state changed
//! (so the next step can follow at once) or an error (retried with backoff by the loop).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{Controller, FORMED_MARKER, PROMOTE_RETRY};
use crate::api::ApiMaterial;
use crate::config::Settings;
use crate::etcd::client::ClientTls;
use crate::etcd::cluster;
use crate::etcd::{ClusterError, ClusterState, EtcdCommand, EtcdLaunch, TlsFiles};
use crate::fsutil;
use crate::gossip::{GossipCommand, GossipView};
use crate::node::certs::{self, load_node_cert};
use crate::node::membership::initial_cluster_with;
use crate::node::step::{ClusterKnowledge, Step};
use crate::node::NodeError;
use crate::phase::Phase;
use crate::pki::{server_config, CaHash, CertificateAuthority, PkiStore};
use crate::plan::{new_cluster_token, Plan};

impl Controller {
    pub(super) async fn execute(
        &mut self,
        step: &Step,
        view: &GossipView,
    ) -> Result<bool, NodeError> {
        let s = self.settings.clone();
        match step {
            Step::Conflict(_) | Step::Wait { .. } | Step::Steady => return Ok(false),
            Step::QueryCluster => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                self.cluster = match cluster::members(&endpoints, &tls).await {
                    Ok(members) => ClusterKnowledge::Members(members),
                    Err(e) => ClusterKnowledge::Unreachable(e.to_string()),
                };
                self.cluster_at = Some(Instant::now());
            }
            Step::AddLearner => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                let (id, members) = cluster::add_learner(&endpoints, &tls, &s.peer_url()).await?;
                tracing::info!(member = %format!("{id:x}"), "added this host to the cluster as a learner");
                self.forget_cluster();
                let initial = initial_cluster_with(&s.name, id, &members);
                self.start_etcd(ClusterState::Existing, Some(initial))
                    .await?;
            }
            Step::RemoveMember { id } => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                cluster::remove(&endpoints, &tls, *id).await?;
                tracing::warn!(member = %format!("{id:x}"), "removed this host's stale member (its data was lost); joining again");
                self.forget_cluster();
            }
            Step::Promote { id } => {
                let endpoints = self.cluster_endpoints(view);
                let tls = self.client_tls()?;
                match cluster::promote(&endpoints, &tls, *id).await {
                    Ok(()) => tracing::info!("promoted this host's learner to a voting member"),
                    Err(e) if e.is_learner_not_ready() => {
                        tracing::debug!("learner not caught up yet");
                        self.retry = Some((Instant::now() + PROMOTE_RETRY, PROMOTE_RETRY));
                        return Ok(false);
                    }
                    Err(e) => return Err(e.into()),
                }
                return Ok(false);
            }
            Step::CreateCa => {
                let label: [u8; 4] = rand::random();
                let ca = CertificateAuthority::generate(
                    &format!("quorate cluster CA {}", hex::encode(label)),
                    SystemTime::now(),
                    s.pki.ca_validity,
                )?;
                self.pki.save_ca(&ca)?;
                tracing::info!(ca_hash = %ca.hash(), "created the cluster CA");
                self.set_ca_pem(ca.cert_pem().to_owned());
                self.disk_ca = Some(Arc::new(ca));
            }
            Step::DecidePlan(members) => {
                let Some(ca_hash) = self.ca_hash else {
                    return Ok(false);
                };
                let plan = Plan::new(
                    members.clone(),
                    ca_hash,
                    new_cluster_token(),
                    &s.name,
                    unix_now(),
                );
                self.plans.save(&plan)?;
                tracing::info!(plan = %plan.id(), initial_cluster = %plan.initial_cluster(), "decided the bootstrap plan");
                self.adopt(plan).await;
            }
            Step::AdoptPlan(plan) => {
                self.plans.save(plan)?;
                tracing::info!(plan = %plan.id(), decided_by = %plan.decided_by, initial_cluster = %plan.initial_cluster(), "adopted the bootstrap plan");
                self.adopt(plan.clone()).await;
            }
            Step::IssueOwnCert => {
                let Some(ca) = self.signing_ca() else {
                    return Ok(false);
                };
                certs::issue_own(&s, &self.pki, &ca)?;
                tracing::info!("issued this node's certificate");
                self.reload_cert()?;
            }
            Step::RequestCert { issuer, ca } => {
                tracing::info!(%issuer, "requesting this node's certificate");
                certs::request_own(&s, &self.pki, *issuer, *ca).await?;
                if let Some(pem) = self.pki.load_ca_cert()? {
                    self.set_ca_pem(pem);
                }
                self.reload_cert()?;
                tracing::info!(%issuer, "received this node's certificate");
            }
            Step::StartEtcd {
                state,
                initial_cluster,
            } => {
                self.start_etcd(*state, initial_cluster.clone()).await?;
            }
            Step::MoveDataAside { reason } => {
                self.stop_etcd().await?;
                let data = s.etcd_data_dir();
                let aside = s.state_dir.join(format!("etcd.damaged-{}", unix_now()));
                std::fs::rename(&data, &aside).map_err(|source| fsutil::FsError {
                    op: "move aside",
                    path: data.clone(),
                    source,
                })?;
                tracing::warn!(
                    %reason,
                    moved_to = %aside.display(),
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
        let Some(plan) = self.plan.clone() else {
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

    pub(super) fn forget_cluster(&mut self) {
        self.cluster = ClusterKnowledge::Unknown;
        self.cluster_at = None;
    }

    /// This node's certificate, for talking to etcd.
    pub(super) fn client_tls(&self) -> Result<ClientTls, NodeError> {
        ClientTls::from_store(&self.pki).ok_or(NodeError::Cluster(ClusterError::NoCertificate))
    }

    /// Client URLs of the other members, those of running peers first, then the rest of the
    /// live peers and the plan's members.
    pub(super) fn cluster_endpoints(&self, view: &GossipView) -> Vec<String> {
        let me = self.settings.client_url();
        let mut running: Vec<String> = Vec::new();
        let mut others: Vec<String> = Vec::new();
        for m in view.live_metas() {
            if m.phase == Phase::Running {
                running.push(m.client_url.clone());
            } else {
                others.push(m.client_url.clone());
            }
        }
        if let Some(plan) = &self.plan {
            others.extend(plan.members.iter().map(|m| m.client_url.clone()));
        }
        let mut urls = Vec::new();
        for u in running.into_iter().chain(others) {
            if u != me && !urls.contains(&u) {
                urls.push(u);
            }
        }
        urls
    }

    /// Records that this host's member has been healthy in a cluster.
    pub(super) fn mark_formed(&mut self) {
        if self.formed_here {
            return;
        }
        let path = self.settings.state_dir.join(FORMED_MARKER);
        match fsutil::atomic_write(&path, b"", fsutil::MODE_PUBLIC) {
            Ok(()) => self.formed_here = true,
            Err(e) => tracing::warn!(error = %e, "cannot record that the cluster formed"),
        }
    }

    pub(super) async fn adopt(&mut self, plan: Plan) {
        let _ = self
            .io
            .gossip
            .send(GossipCommand::PublishPlan(plan.clone()))
            .await;
        self.plan = Some(plan);
    }

    pub(super) fn set_ca_pem(&mut self, pem: String) {
        self.ca_hash = CaHash::of_cert_pem(&pem).ok();
        self.ca_pem = Some(pem);
    }

    pub(super) fn reload_cert(&mut self) -> Result<(), NodeError> {
        self.cert = load_node_cert(&self.pki, self.ca_pem.as_deref(), self.settings.advertise)?;
        self.publish_api_material();
        Ok(())
    }

    /// Gives the API server our certificate (and the CA, when we are the issuer).
    pub(super) fn publish_api_material(&mut self) {
        let tls = (|| {
            let ca = self.ca_pem.as_deref()?;
            self.cert.as_ref().filter(|c| c.problem.is_none())?;
            let cert = self.pki.load_node_cert().ok()??;
            let key = std::fs::read_to_string(self.pki.node_key_path()).ok()?;
            server_config(&cert, ca, &key)
                .map_err(|e| tracing::warn!(error = %e, "cannot build the API's TLS config"))
                .ok()
        })();
        let ca = self.signing_ca();
        self.api_signing = ca.is_some();
        self.io.api.send_replace(ApiMaterial { tls, ca });
    }

    pub(super) fn launch(&self, plan: &Plan, state: ClusterState) -> EtcdLaunch {
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
            tls: TlsFiles {
                cert: self.pki.node_cert_path(),
                key: self.pki.node_key_path(),
                ca: self.pki.ca_cert_path(),
            },
            extra_args: s.etcd.extra_args.clone(),
        }
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// On the seed, installs the operator-supplied CA (pki.ca_cert_file / ca_key_file) into the
/// PKI directory, unless the same CA is already there. A different CA already there is an
/// error: the seed of a running cluster cannot switch CAs.
pub(super) fn import_operator_ca(settings: &Settings, pki: &PkiStore) -> Result<(), NodeError> {
    let (Some(cert_path), Some(key_path)) = (&settings.pki.ca_cert_file, &settings.pki.ca_key_file)
    else {
        return Ok(());
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path).map_err(|e| NodeError::OperatorCa {
            path: path.clone(),
            message: e.to_string(),
        })
    };
    let ca = CertificateAuthority::from_pem(&read(cert_path)?, &read(key_path)?).map_err(|e| {
        NodeError::OperatorCa {
            path: cert_path.clone(),
            message: e.to_string(),
        }
    })?;
    match pki.load_ca()? {
        Some(existing) if existing.hash() == ca.hash() => Ok(()),
        Some(existing) => Err(NodeError::OperatorCa {
            path: cert_path.clone(),
            message: format!(
                "this node already uses CA {}; the configured CA is {}",
                existing.hash(),
                ca.hash()
            ),
        }),
        None => {
            pki.save_ca(&ca)?;
            tracing::info!(ca_hash = %ca.hash(), "installed the operator-supplied CA");
            Ok(())
        }
    }
}
