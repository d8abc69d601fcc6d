//! The health probe: asks the local etcd member, over mutual TLS, for its status (member ID,
//! leader, term), its member list, and does a linearizable read, which succeeds only when the
//! cluster has quorum. Publishes the result for /readyz, /status, systemd and the controller.
//! Probes fast while unhealthy (to notice recovery quickly) and slowly while healthy.

use std::time::Duration;

use etcd_client::Client;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::connect;
use super::error::EtcdError;
use super::member::Member;
use super::supervisor::ProcessState;
use std::sync::Arc;

use crate::liveness::Heartbeat;
use crate::pki::TlsMaterial;

const FAST: Duration = Duration::from_millis(100);
const SLOW: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(2);

/// The local member's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EtcdHealth {
    /// The local member answered a status request.
    pub reachable: bool,
    pub member_id: Option<u64>,
    pub cluster_id: Option<u64>,
    /// The leader's member ID, when there is one.
    pub leader: Option<u64>,
    pub raft_term: u64,
    pub is_learner: bool,
    pub version: Option<String>,
    /// A linearizable read succeeded.
    pub quorum: bool,
    pub members: Vec<Member>,
    pub error: Option<String>,
}

impl EtcdHealth {
    /// Healthy member of a cluster with quorum.
    pub fn healthy(&self) -> bool {
        self.reachable && self.leader.is_some() && self.quorum
    }

    /// The leader's name, from the member list.
    pub fn leader_name(&self) -> Option<&str> {
        let leader = self.leader?;
        self.members
            .iter()
            .find(|m| m.id == leader)
            .map(|m| m.name.as_str())
    }

    /// Why the member is not healthy, for /readyz and STATUS=.
    pub fn problem(&self) -> Option<String> {
        if !self.reachable {
            Some(format!(
                "etcd is not answering: {}",
                self.error.as_deref().unwrap_or("no response yet")
            ))
        } else if self.leader.is_none() {
            Some("etcd has no leader (cluster without quorum?)".into())
        } else if !self.quorum {
            Some(format!(
                "quorum read failed: {}",
                self.error.as_deref().unwrap_or("timeout")
            ))
        } else {
            None
        }
    }
}

/// The probe task.
pub struct Prober {
    /// The node's TLS material: a renewed certificate is used by the next connection.
    material: watch::Receiver<Arc<TlsMaterial>>,
    /// The local client URL, while etcd is supposed to run.
    target: watch::Receiver<Option<String>>,
    /// The child process: a dead or restarted etcd is re-probed at once.
    process: watch::Receiver<ProcessState>,
    health: watch::Sender<EtcdHealth>,
    heartbeat: Heartbeat,
}

impl Prober {
    pub fn new(
        material: watch::Receiver<Arc<TlsMaterial>>,
        target: watch::Receiver<Option<String>>,
        process: watch::Receiver<ProcessState>,
        health: watch::Sender<EtcdHealth>,
        heartbeat: Heartbeat,
    ) -> Self {
        Self {
            material,
            target,
            process,
            health,
            heartbeat,
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut client: Option<(String, Client)> = None;
        loop {
            self.heartbeat.beat();
            let target = self.target.borrow_and_update().clone();
            let process = self.process.borrow_and_update().clone();
            let health = match target {
                None => {
                    client = None;
                    EtcdHealth::default()
                }
                Some(_) if process.pid.is_none() => {
                    client = None;
                    EtcdHealth {
                        error: Some(match &process.last_exit {
                            Some(exit) => format!("etcd is not running (last exit: {exit})"),
                            None => "etcd is not running".to_owned(),
                        }),
                        ..EtcdHealth::default()
                    }
                }
                Some(url) => {
                    if client.as_ref().is_none_or(|(u, _)| *u != url) {
                        client = self.connect(&url).await.map(|c| (url.clone(), c));
                    }
                    match client.as_mut() {
                        Some((_, c)) => probe(c).await,
                        None => EtcdHealth {
                            error: Some("no client certificate yet".into()),
                            ..EtcdHealth::default()
                        },
                    }
                }
            };
            if !health.reachable {
                // Reconnect next time (etcd restarted, or the certificate changed).
                client = None;
            }
            let wait = if health.healthy() { SLOW } else { FAST };
            self.health.send_if_modified(|h| {
                let changed = *h != health;
                *h = health;
                changed
            });
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = self.target.changed() => {}
                _ = self.process.changed() => {}
                // A new certificate or CA: the next probe connects with it.
                _ = self.material.changed() => client = None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn connect(&self, url: &str) -> Option<Client> {
        let tls = self.material.borrow().client().cloned()?;
        match connect(&[url.to_owned()], &tls, TIMEOUT).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(%url, error = %e, "etcd connect failed");
                None
            }
        }
    }
}

/// One health check of the member behind `client` (status, member list, quorum read).
pub async fn probe(client: &mut Client) -> EtcdHealth {
    let mut h = EtcdHealth::default();
    match tokio::time::timeout(TIMEOUT, client.status()).await {
        Ok(Ok(status)) => {
            h.reachable = true;
            h.member_id = status.header().map(|hd| hd.member_id());
            h.cluster_id = status.header().map(|hd| hd.cluster_id());
            h.leader = Some(status.leader()).filter(|l| *l != 0);
            h.raft_term = status.raft_term();
            h.is_learner = status.is_learner();
            h.version = Some(status.version().to_owned());
        }
        Ok(Err(e)) => {
            h.error = Some(EtcdError::from(e).to_string());
            return h;
        }
        Err(_) => {
            h.error = Some("status request timed out".into());
            return h;
        }
    }
    if let Ok(Ok(list)) = tokio::time::timeout(TIMEOUT, client.member_list()).await {
        h.members = list.members().iter().map(Member::from).collect();
    }
    // Learners do not serve linearizable reads; their health is the leader's view.
    if h.is_learner {
        return h;
    }
    match tokio::time::timeout(TIMEOUT, client.get("quorate/health", None)).await {
        Ok(Ok(_)) => h.quorum = true,
        Ok(Err(e)) => h.error = Some(EtcdError::from(e).to_string()),
        Err(_) => h.error = Some("linearizable read timed out (no quorum?)".into()),
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_rules() {
        let mut h = EtcdHealth::default();
        assert!(!h.healthy());
        assert!(h.problem().unwrap().contains("not answering"));
        h.reachable = true;
        assert!(h.problem().unwrap().contains("no leader"));
        h.leader = Some(0xabc);
        assert!(h.problem().unwrap().contains("quorum"));
        h.quorum = true;
        assert!(h.healthy());
        assert!(h.problem().is_none());
        assert_eq!(h.leader_name(), None);
        h.members.push(Member {
            id: 0xabc,
            name: "n1".into(),
            peer_urls: vec![],
            client_urls: vec![],
            is_learner: false,
        });
        assert_eq!(h.leader_name(), Some("n1"));
    }
}
