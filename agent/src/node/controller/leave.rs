//! `quorate leave`: the operator takes this host out of the cluster. The member is removed
//! through the other members (refused when that would break quorum, unless forced), etcd is
//! stopped, its data is moved aside (never deleted), and the host is marked as left: it stays
//! out until the agent is started again, which then joins it afresh.

use std::time::{Duration, Instant};

use super::{Controller, LEFT_MARKER};
use crate::control::ControlCommand;
use crate::etcd::client::ClientTls;
use crate::etcd::{cluster, data};
use crate::fsutil;
use crate::gossip::GossipView;
use crate::node::membership::removal_is_safe;

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
        }
    }

    async fn leave(&mut self, force: bool, view: &GossipView) -> Result<String, String> {
        if self.left {
            return Ok("this host has already left the cluster".into());
        }
        let s = self.settings.clone();
        let data_dir = s.etcd_data_dir();
        if self.etcd_desired || data::has_member(&data_dir) {
            // Our own member answers too (it knows the members and who is healthy).
            let mut endpoints = vec![s.client_url()];
            endpoints.extend(self.cluster_endpoints(view));
            let tls = self.client_tls().map_err(|e| e.to_string())?;
            match cluster::members(&endpoints, &tls).await {
                Ok(members) => {
                    if let Some(me) = members.iter().find(|m| m.member.name == s.name) {
                        if let Err(why) = removal_is_safe(&members, me.member.id) {
                            if !force {
                                return Err(format!(
                                    "refusing to leave: removing this member would cost the \
                                     cluster its quorum ({why}); use --force to leave anyway"
                                ));
                            }
                            tracing::warn!(%why, "leaving by force although it costs quorum");
                        }
                        remove_patiently(&endpoints, &tls, me.member.id).await?;
                    }
                }
                Err(e) if force => {
                    tracing::warn!(error = %e, "cannot reach the cluster; leaving without removing the member")
                }
                Err(e) => {
                    return Err(format!(
                        "cannot reach the cluster to remove this member ({e}); use --force to \
                         stop etcd anyway"
                    ))
                }
            }
        }
        self.stop_etcd().await.map_err(|e| e.to_string())?;
        let mut moved = String::new();
        if data_dir.exists() {
            let aside = s
                .state_dir
                .join(format!("etcd.left-{}", super::actions::unix_now()));
            std::fs::rename(&data_dir, &aside)
                .map_err(|e| format!("cannot move {} aside: {e}", data_dir.display()))?;
            moved = format!("; its etcd data was moved to {}", aside.display());
        }
        fsutil::atomic_write(&s.state_dir.join(LEFT_MARKER), b"", fsutil::MODE_PUBLIC)
            .map_err(|e| e.to_string())?;
        self.left = true;
        self.forget_cluster();
        Ok(format!(
            "{} left the cluster{moved}. Start the agent again to rejoin as a new member",
            s.name
        ))
    }
}

/// How long `leave` waits out etcd's passing refusals (a cluster younger than 5 s).
const PATIENCE: Duration = Duration::from_secs(30);

async fn remove_patiently(endpoints: &[String], tls: &ClientTls, id: u64) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match cluster::remove(endpoints, tls, id).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tracing::info!("waiting to remove this member: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(format!("cannot remove this member: {e}")),
        }
    }
}
