//! The controller's restore driver. `quorate restore` arrives here from the control socket
//! ([`Controller::start_restore`]): check everything, claim the generation in etcd, decide and
//! sign the plan, keep the snapshot where the other members can fetch it, persist the plan and
//! push it. Pushed or fetched plans are verified and persisted by
//! [`Controller::receive_restore_plan`]. The step machine then applies a pending plan
//! (`Step::Restore`, [`Controller::apply_restore`]) or, on a host the plan leaves out, moves
//! the old data aside ([`Controller::leave_for_restore`]) so that it joins as a new member.

use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

use super::actions::unix_now;
use super::Controller;
use crate::api::restore_client::{fetch_plan, fetch_snapshot, push_plan};
use crate::etcd::cluster;
use crate::etcd::restore::RestoreArgs;
use crate::etcd::MemberHealth;
use crate::fsutil;
use crate::gossip::GossipView;
use crate::node::NodeError;
use crate::plan::new_cluster_token;
use crate::restore::binding::signer_serves_peer_url;
use crate::restore::check::restore_members;
use crate::restore::claim::claim;
use crate::restore::inspect::inspect_snapshot;
use crate::restore::local_etcd_version;
use crate::restore::run::restore_data;
use crate::restore::source::Prepared;
use crate::restore::{
    accept_plan, in_progress, sign_plan, RestoreError, RestorePlan, RestoreRecord, SignedPlan,
};
use crate::token::KeyPurpose;

/// (name, applied restore generation) of the live agents.
pub(super) fn generations(view: &GossipView) -> Vec<(String, u64)> {
    view.live_metas()
        .map(|m| (m.name.clone(), m.restore_generation))
        .collect()
}

fn voters(members: &[MemberHealth]) -> Vec<String> {
    members
        .iter()
        .filter(|m| !m.member.is_learner)
        .map(|m| m.member.name.clone())
        .collect()
}

impl Controller {
    fn proof_key(&self) -> [u8; 32] {
        self.settings.token.derive(KeyPurpose::ApiProof)
    }

    fn ca_pem(&self) -> Result<String, NodeError> {
        self.state.ca_cert_pem()?.ok_or_else(|| {
            NodeError::Restore(RestoreError::Refused(
                "this node has no CA certificate".into(),
            ))
        })
    }

    /// The cluster's members as etcd lists them, asking the local member first.
    async fn current_members(&self, view: &GossipView) -> Result<Vec<MemberHealth>, NodeError> {
        let mut endpoints = vec![self.settings.client_url()];
        endpoints.extend(self.cluster_endpoints(view));
        let tls = self.client_tls()?;
        Ok(cluster::members(&endpoints, &tls).await?)
    }

    /// `/quorate/ca` as the local member has it now (what the issuer puts back after the
    /// restore if the snapshot holds another CA).
    async fn sealed_ca(&self) -> Result<Option<String>, NodeError> {
        let tls = self.client_tls()?;
        let mut client = crate::etcd::client::connect(
            &[self.settings.client_url()],
            &tls,
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(|e| RestoreError::Refused(format!("cannot read the sealed CA: {e}")))?;
        let got = client
            .get(crate::issuer::CA_KEY, None)
            .await
            .map_err(|e| RestoreError::Refused(format!("cannot read the sealed CA: {e}")))?;
        Ok(got
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The registry records the plan carries; none (with a warning) when etcd does not answer:
    /// the restore goes on, certificates issued after the snapshot must then be issued again.
    async fn issued_to_carry(&self) -> Vec<crate::issuer::issued::Issued> {
        let read = async {
            let tls = self.client_tls().map_err(|e| e.to_string())?;
            let mut client = crate::etcd::client::connect(
                &[self.settings.client_url()],
                &tls,
                std::time::Duration::from_secs(5),
            )
            .await
            .map_err(|e| e.to_string())?;
            crate::issuer::issued::to_carry(&mut client, unix_now())
                .await
                .map_err(|e| e.to_string())
        };
        match read.await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "the restore plan carries no issued-certificate records: certificates issued after the snapshot must be issued again");
                Vec::new()
            }
        }
    }

    /// `quorate restore SOURCE --yes`.
    pub(super) async fn start_restore(
        &mut self,
        source: &str,
        prepared: &Prepared,
        view: &GossipView,
    ) -> Result<String, NodeError> {
        let s = self.settings.clone();
        let path = prepared.path.clone();
        let version = local_etcd_version(&s.etcd.binary).await?;
        let Some(ca_hash) = self.state.ca_hash() else {
            return Err(RestoreError::Refused("this node trusts no CA yet".into()).into());
        };
        let ca = ca_hash.to_string();
        let (checked, manifest) = (path.clone(), prepared.manifest.clone());
        let snapshot = tokio::task::spawn_blocking(move || {
            inspect_snapshot(&checked, manifest.as_ref(), version, Some(&ca))
        })
        .await
        .map_err(|e| RestoreError::Refused(format!("the snapshot check stopped: {e}")))??;
        let record = self.state.restore().clone();
        let busy = in_progress(&s.name, &record, &generations(view));
        let members = self.current_members(view).await?;
        let mut live: Vec<String> = view.live_metas().map(|m| m.name.clone()).collect();
        live.push(s.name.clone());
        let chosen = restore_members(&s.name, &members, &live, busy.as_ref())?;
        let newest_seen = generations(view).iter().map(|(_, g)| *g).max().unwrap_or(0);
        let generation = record.applied.max(newest_seen) + 1;
        let previous = match &record.signed {
            Some(p) => p.plan.id(),
            None => self
                .state
                .plan()
                .map(|p| p.id().to_string())
                .unwrap_or_default(),
        };
        let plan = RestorePlan {
            generation,
            previous,
            cluster_token: new_cluster_token(),
            members: chosen,
            snapshot: snapshot.clone(),
            ca_hash,
            decided_by: s.name.clone(),
            decided_at: unix_now(),
            sealed_ca: self.sealed_ca().await?,
            issued: self.issued_to_carry().await,
        };
        // Through the local member only (a voter, running): a client balancing over every
        // endpoint may pick a member that is down.
        claim(&[s.client_url()], &self.client_tls()?, generation).await?;
        let (key, cert) = self.state.node_identity()?;
        let signed = sign_plan(plan, &key, &cert)?;
        self.keep_snapshot(&path, &snapshot.sha256).await?;
        self.state.save_restore(RestoreRecord {
            signed: Some(signed.clone()),
            applied: record.applied,
        })?;
        let names: Vec<&str> = signed
            .plan
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        tracing::warn!(
            generation,
            members = %names.join(","),
            revision = snapshot.revision,
            sha256 = %snapshot.sha256,
            "decided a restore plan; every member in it replaces its data with the snapshot"
        );
        self.push_to_members(&signed, view).await;
        Ok(format!(
            "restore generation {generation} started from {} (revision {}): members {}",
            source,
            snapshot.revision,
            names.join(", ")
        ))
    }

    /// Copies the snapshot into the restore directory, where the API serves it by sha256.
    async fn keep_snapshot(&self, path: &Path, sha256: &str) -> Result<(), NodeError> {
        let store = self.state.restore_store();
        fsutil::ensure_dir(store.dir(), fsutil::MODE_DIR)?;
        let dest = store.snapshot_path(sha256);
        if dest.exists() {
            return Ok(());
        }
        let tmp = dest.with_extension("tmp");
        let (from, to) = (path.to_owned(), tmp.clone());
        let copy = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::copy(&from, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
            std::fs::File::open(&to)?.sync_all()
        });
        let io = |message: String| RestoreError::Io {
            path: dest.clone(),
            message,
        };
        copy.await
            .map_err(|e| io(e.to_string()))?
            .map_err(|e| io(e.to_string()))?;
        std::fs::rename(&tmp, &dest).map_err(|e| io(e.to_string()))?;
        Ok(())
    }

    /// Pushes the plan to the other members named in it (a member that misses it learns the
    /// generation from gossip and fetches the plan).
    async fn push_to_members(&self, signed: &SignedPlan, view: &GossipView) {
        let Ok(ca) = self.ca_pem() else { return };
        let key = self.proof_key();
        for m in &signed.plan.members {
            if m.name == self.settings.name {
                continue;
            }
            let Some(meta) = view.live_metas().find(|x| x.name == m.name) else {
                continue;
            };
            match push_plan(meta.api_addr, &ca, &key, signed).await {
                Ok(_) => tracing::info!(member = %m.name, "pushed the restore plan"),
                Err(e) => {
                    tracing::warn!(member = %m.name, error = %e, "cannot push the restore plan")
                }
            }
        }
    }

    /// A plan pushed or fetched from another agent: verify it against this agent's CA and its
    /// own view of the voting members, then persist it.
    pub(super) async fn receive_restore_plan(
        &mut self,
        signed: SignedPlan,
        view: &GossipView,
    ) -> Result<String, NodeError> {
        let record = self.state.restore().clone();
        if record.signed.as_ref() == Some(&signed) {
            return Err(RestoreError::BadPlan {
                generation: signed.plan.generation,
                decided_by: signed.plan.decided_by.clone(),
                reason: "this agent already holds this plan; a plan is applied once".into(),
            }
            .into());
        }
        signed.verify(&self.ca_pem()?, SystemTime::now())?;
        let members = self.current_members(view).await?;
        accept_plan(&signed, record.applied, &voters(&members))?;
        let decider = members
            .iter()
            .find(|m| m.member.name == signed.plan.decided_by)
            .and_then(|m| m.member.peer_urls.first())
            .cloned()
            .unwrap_or_default();
        signer_serves_peer_url(
            &signed.plan.decided_by,
            &decider,
            &self.client_tls()?,
            &signed.cert_pem,
        )
        .await?;
        if let Some(pending) = record.pending() {
            return Err(RestoreError::InProgress {
                generation: pending.plan.generation,
                by: pending.plan.decided_by.clone(),
                at: crate::snapshot::file::rfc3339(
                    SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(pending.plan.decided_at),
                ),
            }
            .into());
        }
        let generation = signed.plan.generation;
        let by = signed.plan.decided_by.clone();
        self.state.save_restore(RestoreRecord {
            signed: Some(signed),
            applied: record.applied,
        })?;
        tracing::warn!(generation, decided_by = %by, "accepted a restore plan");
        Ok(format!("accepted restore generation {generation}"))
    }

    /// `Step::FetchRestorePlan`.
    pub(super) async fn fetch_restore_plan(
        &mut self,
        from: SocketAddr,
        generation: u64,
        view: &GossipView,
    ) -> Result<(), NodeError> {
        let signed = fetch_plan(from, &self.ca_pem()?, &self.proof_key()).await?;
        tracing::info!(%from, generation = signed.plan.generation, "fetched a newer restore plan");
        match self.receive_restore_plan(signed, view).await {
            // The plan itself is refused: do not fetch this generation again in this run.
            Err(NodeError::Restore(e)) => {
                tracing::warn!(%from, generation, "ignoring the restore generation advertised by {from}: {e}");
                self.refused_restore = self.refused_restore.max(generation);
                Err(NodeError::Restore(e))
            }
            other => other.map(|_| ()),
        }
    }

    /// `Step::Restore`: replaces this member's data with the plan's snapshot.
    pub(super) async fn apply_restore(&mut self, view: &GossipView) -> Result<(), NodeError> {
        let s = self.settings.clone();
        let record = self.state.restore().clone();
        let Some(signed) = record.pending().cloned() else {
            return Ok(());
        };
        let plan = &signed.plan;
        let Some(me) = plan.member(&s.name).cloned() else {
            return Ok(());
        };
        tracing::warn!(generation = plan.generation, "restore: stopping etcd");
        self.stop_etcd().await?;
        let aside = self
            .state
            .move_data_aside(&format!("pre-restore-g{}", plan.generation), unix_now())?;
        if let Some(aside) = &aside {
            tracing::warn!(moved_to = %aside.display(), "restore: moved etcd's data aside (not deleted)");
        }
        let file = self.snapshot_for(plan, view).await?;
        let data_dir = s.etcd_data_dir();
        let initial_cluster = plan.initial_cluster();
        let restored = restore_data(
            &s.etcd.binary,
            &s.state_dir,
            &RestoreArgs {
                snapshot: &file,
                name: &s.name,
                peer_url: &me.peer_url,
                initial_cluster: &initial_cluster,
                cluster_token: &plan.cluster_token,
                data_dir: &data_dir,
            },
        )
        .await;
        if let Err(e) = restored {
            // Leave nothing half-restored where etcd would start it.
            let _ = self
                .state
                .move_data_aside(&format!("failed-restore-g{}", plan.generation), unix_now());
            return Err(e.into());
        }
        self.state.save_restore(RestoreRecord {
            signed: Some(signed.clone()),
            applied: plan.generation,
        })?;
        self.forget_cluster();
        tracing::warn!(
            generation = plan.generation,
            "restore: snapshot restored; starting etcd"
        );
        Ok(())
    }

    /// The plan's snapshot on this host: kept here already, or fetched from its decider (or
    /// another member that has it) and checked against the plan.
    async fn snapshot_for(
        &self,
        plan: &RestorePlan,
        view: &GossipView,
    ) -> Result<std::path::PathBuf, NodeError> {
        let store = self.state.restore_store();
        let dest = store.snapshot_path(&plan.snapshot.sha256);
        if dest.exists() {
            return Ok(dest);
        }
        fsutil::ensure_dir(store.dir(), fsutil::MODE_DIR)?;
        let ca = self.ca_pem()?;
        let key = self.proof_key();
        let tmp = dest.with_extension("part");
        let mut sources: Vec<&crate::gossip::NodeMeta> = view
            .live_metas()
            .filter(|m| m.name == plan.decided_by)
            .collect();
        sources.extend(
            view.live_metas()
                .filter(|m| m.name != plan.decided_by && plan.member(&m.name).is_some()),
        );
        let mut last = RestoreError::Refused(format!(
            "no live member holds snapshot {} (its decider {} is not live)",
            plan.snapshot.sha256, plan.decided_by
        ))
        .into();
        for m in sources {
            let meter = self
                .io
                .transfers
                .start(format!("fetching the snapshot from {}", m.name));
            let got = fetch_snapshot(
                m.api_addr,
                &ca,
                &key,
                &plan.snapshot.sha256,
                plan.snapshot.size,
                &tmp,
                &|done, total| meter.set(done, total),
            )
            .await;
            drop(meter);
            match got {
                Ok(()) => {
                    std::fs::rename(&tmp, &dest).map_err(|e| RestoreError::Io {
                        path: dest.clone(),
                        message: e.to_string(),
                    })?;
                    tracing::info!(from = %m.name, "restore: received the snapshot");
                    return Ok(dest);
                }
                Err(e) => {
                    tracing::warn!(from = %m.name, error = %e, "restore: cannot fetch the snapshot");
                    last = e.into();
                }
            }
        }
        Err(last)
    }

    /// `Step::RestoreLeftOut`: the plan does not name this host; its old data must never
    /// start again, so it goes aside and the host joins the restored cluster afresh.
    pub(super) async fn leave_for_restore(&mut self) -> Result<(), NodeError> {
        let record = self.state.restore().clone();
        let Some(signed) = record.pending().cloned() else {
            return Ok(());
        };
        let generation = signed.plan.generation;
        self.stop_etcd().await?;
        let aside = self
            .state
            .move_data_aside(&format!("pre-restore-g{generation}"), unix_now())?;
        self.state.save_restore(RestoreRecord {
            signed: Some(signed),
            applied: generation,
        })?;
        self.forget_cluster();
        tracing::warn!(
            generation,
            moved_to = ?aside,
            "the cluster was restored while this host was away: moved its old data aside (not \
             deleted); joining the restored cluster as a new member"
        );
        Ok(())
    }
}

impl Controller {
    /// `Step::RestoreFromSnapshot`: the seed's data from `restore_from`, and its CA.
    pub(super) async fn restore_from_snapshot(&mut self) -> Result<(), NodeError> {
        let s = self.settings.clone();
        let Some(source) = s.restore_from.clone() else {
            return Ok(());
        };
        let aside = self
            .state
            .move_data_aside("before-restore-from", unix_now())?;
        if let Some(aside) = aside {
            tracing::warn!(moved_to = %aside.display(), "moved existing etcd data aside before restoring restore_from");
        }
        tracing::warn!(snapshot = %source, "forming the cluster from a snapshot (restore_from)");
        let token = new_cluster_token();
        let result = match crate::restore::source::prepare(&source, &s, &self.io.transfers).await {
            Ok(snapshot) => {
                let r = crate::restore::seed::restore_seed(&s, &snapshot, &token).await;
                snapshot.cleanup();
                r
            }
            Err(e) => Err(e),
        };
        let restored = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = self
                    .state
                    .move_data_aside("failed-restore-from", unix_now());
                // Retrying cannot fix a wrong token, key or file: stop until the operator
                // fixes the config and restarts the agent. A store that cannot be reached
                // now may be reachable at the next step.
                if !matches!(e, RestoreError::Fetch { .. }) {
                    self.restore_from_error = Some(e.to_string());
                }
                return Err(e.into());
            }
        };
        let hash = self.state.install_ca(restored.ca)?;
        if restored.new_ca {
            tracing::warn!(ca_hash = %hash, "restored with a NEW CA (restore_new_ca): reissue every client certificate");
        } else {
            tracing::info!(ca_hash = %hash, "recovered the cluster CA from the snapshot");
        }
        self.state.save_restored_token(&token)?;
        Ok(())
    }
}
