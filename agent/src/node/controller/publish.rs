//! What the controller tells the rest of the agent after each turn: the node's status (for
//! /status, /readyz, `quorate status` and systemd), its gossip metadata, and the agent API's
//! material (its TLS config, and the CA while this agent is the issuer).

use std::sync::Arc;

use super::Controller;
use crate::api::ApiMaterial;
use crate::etcd::EtcdHealth;
use crate::gossip::{GossipCommand, GossipView, NodeMeta};
use crate::node::describe::{describe, Situation};
use crate::node::status::{CertSummary, NodeStatus};
use crate::node::step::Step;
use crate::pki::CertificateAuthority;
use crate::plan::Plan;

impl Controller {
    /// Publishes the node's status and, when it changed, its gossip metadata.
    pub(super) async fn publish(&mut self, step: &Step, view: &GossipView, health: &EtcdHealth) {
        let healthy = self.etcd_desired && health.healthy();
        // Ready also needs no active alarm: under NOSPACE etcd answers reads but refuses writes.
        let ready = healthy && health.ready();
        self.ever_healthy |= healthy;
        if healthy {
            self.state.mark_formed();
        }
        let (phase, message) = describe(&Situation {
            step,
            view,
            health,
            plan: self.state.plan(),
            ever_healthy: self.ever_healthy,
            ready,
        });
        let issuer = self.published.api.is_some_and(|(signing, _)| signing);
        let status = NodeStatus {
            phase,
            message,
            ready,
            issuer,
            ca_hash: self.state.ca_hash(),
            plan: self.state.plan().cloned(),
            certificate: self.state.cert().map(|c| CertSummary::of(&c.info)),
            last_error: self.retry.last_error.clone(),
            restore: crate::restore::progress(
                &self.settings.name,
                self.state.restore(),
                &super::restore::generations(view),
            ),
        };
        let signed = self.state.restore().signed.clone();
        self.io.restore_plan.send_if_modified(|current| {
            let changed = *current != signed;
            *current = signed;
            changed
        });
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
            issuer,
            phase,
            ca_hash: self.state.ca_hash(),
            plan_id: self.state.plan().map(Plan::id),
            member_id: health.member_id,
            formed: self.state.formed(),
            restore_generation: self.state.restore().applied,
        };
        if self.published.meta.as_ref() != Some(&meta) {
            self.published.meta = Some(meta.clone());
            let _ = self.io.gossip.send(GossipCommand::SetMeta(meta)).await;
        }
    }

    /// Gives the API server the node's TLS config and, while this agent is the issuer, the CA;
    /// only when either changed.
    pub(super) fn publish_api(&mut self, signing: Option<Arc<CertificateAuthority>>) {
        let key = (signing.is_some(), self.state.material_generation());
        if self.published.api == Some(key) {
            return;
        }
        self.published.api = Some(key);
        let tls = self
            .state
            .material()
            .node
            .as_ref()
            .map(|n| n.server.clone());
        self.io.api.send_replace(ApiMaterial { tls, ca: signing });
    }
}
