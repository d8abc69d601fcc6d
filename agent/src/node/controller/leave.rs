//! `quorate leave`: the operator takes this host out of the cluster. The policy
//! ([`leave_decision`]) decides; this driver asks the cluster, removes the member through the
//! other members (waiting out etcd's passing refusals), stops etcd, moves its data aside (never
//! deletes it), and marks the host as left: it stays out until the agent is started again,
//! which then joins it afresh. The loop runs it inside `beating`, so a leave that waits on an
//! unreachable cluster keeps the watchdog fed and ends at once on shutdown.

use std::time::Duration;

use super::Controller;
use crate::control::ControlCommand;
use crate::etcd::client::ClientTls;
use crate::etcd::{cluster, data};
use crate::gossip::GossipView;
use crate::node::leave::{leave_decision, LeaveDecision};

/// How long `leave` waits out etcd's passing refusals (a cluster younger than 5 s, a voter
/// that just came back).
const PATIENCE: Duration = Duration::from_secs(30);

impl Controller {
    pub(super) async fn handle_control(&mut self, command: ControlCommand, view: &GossipView) {
        match command {
            ControlCommand::Leave { force, reply } => {
                let result = self.leave(force, view).await;
                match &result {
                    Ok(message) => tracing::warn!(force, "{message}"),
                    Err(message) => tracing::warn!(force, "leave refused: {message}"),
                }
                let _ = reply.send(result);
            }
            ControlCommand::Restore {
                source,
                snapshot,
                reply,
            } => {
                let result = self.start_restore(&source, &snapshot, view).await;
                snapshot.cleanup();
                if let Err(e) = &result {
                    tracing::warn!(%source, "restore refused: {e}");
                }
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            ControlCommand::ReceiveRestorePlan { signed, reply } => {
                let result = self.receive_restore_plan(*signed, view).await;
                if let Err(e) = &result {
                    tracing::warn!("restore plan refused: {e}");
                }
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
        }
    }

    async fn leave(&mut self, force: bool, view: &GossipView) -> Result<String, String> {
        let s = self.settings.clone();
        let holds_member = self.etcd_desired || data::has_member(&s.etcd_data_dir());
        let mut endpoints = vec![s.client_url()];
        endpoints.extend(self.cluster_endpoints(view));
        let tls = if holds_member && !self.state.left() {
            Some(self.client_tls().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let answer = match &tls {
            Some(tls) => Some(
                cluster::members(&endpoints, tls)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            None => None,
        };
        let mut revoked = None;
        let decision = leave_decision(
            &s.name,
            self.state.left(),
            force,
            answer
                .as_ref()
                .map(|a| a.as_deref().map_err(String::as_str)),
        );
        match decision {
            LeaveDecision::AlreadyLeft => {
                return Ok("this host has already left the cluster".into())
            }
            LeaveDecision::Refuse(message) => return Err(message),
            LeaveDecision::StopOnly { warning } => {
                if let Some(w) = warning {
                    tracing::warn!("{w}");
                }
            }
            LeaveDecision::Remove { id, warning } => {
                if let Some(w) = warning {
                    tracing::warn!("{w}");
                }
                if let Some(tls) = &tls {
                    remove_patiently(&endpoints, tls, id).await?;
                    revoked = self.revoke_own(tls, view).await;
                }
            }
        }
        self.stop_etcd().await.map_err(|e| e.to_string())?;
        let moved = self
            .state
            .move_data_aside("left", super::actions::unix_now())
            .map_err(|e| e.to_string())?
            .map(|aside| format!("; its etcd data was moved to {}", aside.display()))
            .unwrap_or_default();
        self.state.mark_left().map_err(|e| e.to_string())?;
        self.forget_cluster();
        let revoked = match revoked {
            Some(serial) => {
                self.state.retire_node_cert().map_err(|e| e.to_string())?;
                format!("; its certificate (serial {serial}) is revoked")
            }
            None => String::new(),
        };
        Ok(format!(
            "{} left the cluster{moved}{revoked}. Start the agent again to rejoin as a new member",
            s.name
        ))
    }

    /// Asks the remaining members to revoke this host's node certificate and delete its etcd
    /// user (a host that left keeps no access); the serial when the request was stored.
    async fn revoke_own(&self, tls: &ClientTls, view: &GossipView) -> Option<String> {
        let info = self.state.cert()?.info.clone();
        let serial = info.serial_hex.clone();
        let others = self.cluster_endpoints(view);
        let now = super::actions::unix_now();
        // First, while this certificate still opens connections: the record of this removal,
        // for the leader's agent to finish what this host cannot (see
        // `node::maintenance::removed`). It revokes node certificates of the name issued up to
        // the one in use (by the issuer's clock), never one a host coming back under the name
        // is given later.
        let issued = crate::clock::unix(crate::pki::signed_at(info.not_before, info.not_after));
        let removal = crate::node::maintenance::removed::Removal::new(issued + 1, now);
        crate::node::maintenance::removed::record_with_retries(
            &others,
            tls,
            &self.settings.name,
            removal,
        )
        .await;
        // A moment after the removal the others may still be busy with it: a few tries.
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match crate::issuer::crl::request(&others, tls, &serial, now).await {
                Ok(_) => {
                    self.forget_name(&others, tls, &serial, now).await;
                    return Some(serial);
                }
                Err(e) => last = e,
            }
        }
        tracing::warn!(serial = %serial, error = %last, "cannot revoke this host's certificate; revoke it by hand (quorate cert revoke --serial on a member)");
        None
    }

    /// After the revocation of `serial`: the node certificates this name held before it
    /// (renewals) are revoked too, and its etcd user is deleted, so that nothing of the name
    /// stays (the issuer makes users only for members and unrevoked certificates). A host coming
    /// back under the name gets the user again with its new certificate. The leader's agent
    /// finishes what fails here, from the record [`Self::revoke_own`] stored; the certificate
    /// in use is revoked already.
    async fn forget_name(&self, others: &[String], tls: &ClientTls, serial: &str, now: u64) {
        let name = &self.settings.name;
        let older =
            crate::issuer::crl::request_superseded(others, tls, name, Some(serial), now + 1, now)
                .await;
        if let Err(e) = older {
            tracing::info!(error = %e, "this host's earlier certificates are not revoked; run `quorate cert revoke --name {name}` on a member");
        }
        // This member is removed already: a member that still lists it has not applied the
        // removal yet (or has not applied the latest auth change): a few tries.
        let mut outcome = Ok(false);
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            outcome = crate::issuer::crl::delete_user(others, tls, name).await;
            if outcome == Ok(true) {
                return;
            }
        }
        match outcome {
            Err(e) => tracing::info!(error = %e, "this host's etcd user stays for now"),
            _ => tracing::info!("this host's etcd user stays for now: the members still list it"),
        }
    }
}

impl Controller {
    /// After this host removed its own stale member (it lost its data and came back under its
    /// name), revokes the certificates the old incarnation held: every node certificate of
    /// this name but the one in use. A failure is only logged, with the command that does it.
    pub(super) async fn revoke_replaced(&self, endpoints: &[String], tls: &ClientTls) {
        let Some(own) = self.state.cert().map(|c| c.info.serial_hex.clone()) else {
            return;
        };
        let name = &self.settings.name;
        let now = super::actions::unix_now();
        let asked =
            crate::issuer::crl::request_superseded(endpoints, tls, name, Some(&own), now + 1, now)
                .await;
        if let Err(e) = asked {
            tracing::warn!(error = %e, "cannot revoke the replaced member's certificates; run `quorate cert revoke --name {name}` on a member, then restart this agent");
        }
    }
}

/// Removes member `id`, waiting up to [`PATIENCE`] while etcd refuses for a passing reason.
async fn remove_patiently(endpoints: &[String], tls: &ClientTls, id: u64) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match cluster::remove(endpoints, tls, id).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tracing::info!("waiting to remove this member: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(format!("cannot remove this member: {e}")),
        }
    }
}
