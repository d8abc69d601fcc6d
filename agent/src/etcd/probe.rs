//! The health probe: asks the local etcd member, over mutual TLS, for its status (member ID,
//! leader, term, database size), its member list, does a linearizable read, which succeeds only
//! when the cluster has quorum, and lists the cluster's active alarms (NOSPACE, CORRUPT: etcd
//! refuses writes while one is raised, although it still answers reads). Publishes the result for
//! /readyz, /status, /metrics, systemd and the controller. Probes fast while unhealthy (to notice
//! recovery quickly) and slowly while healthy.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmType, Client};
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
    /// The backend database file's size, in bytes (status `dbSize`).
    pub db_size: Option<u64>,
    /// The part of the database file in use, in bytes (status `dbSizeInUse`, etcd 3.4+); the rest
    /// is free pages that only a defragmentation returns.
    pub db_size_in_use: Option<u64>,
    /// Active alarms anywhere in the cluster, by name ("NOSPACE", "CORRUPT"), sorted, each once.
    pub alarms: Vec<String>,
    pub error: Option<String>,
}

impl EtcdHealth {
    /// The names of the members that have started (a member added but not started has none).
    pub fn started_names(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !m.name.is_empty())
            .map(|m| m.name.clone())
            .collect()
    }

    /// `own` (the local member's client URL) first, then every member's, each once: where
    /// the day-2 tasks talk to the cluster.
    pub fn endpoints(&self, own: String) -> Vec<String> {
        let mut endpoints = vec![own];
        for m in &self.members {
            for url in &m.client_urls {
                if !endpoints.contains(url) {
                    endpoints.push(url.clone());
                }
            }
        }
        endpoints
    }

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

    /// Healthy and no alarm active: the member serves reads and writes (the readiness rule).
    pub fn ready(&self) -> bool {
        self.healthy() && self.alarms.is_empty()
    }

    /// Why the member is not ready, for /readyz and STATUS=.
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
            self.alarms.first().map(|alarm| alarm_problem(alarm))
        }
    }
}

/// What an active alarm means for clients, named for /readyz.
fn alarm_problem(alarm: &str) -> String {
    let meaning = match alarm {
        "NOSPACE" => "the database is full; writes are refused",
        "CORRUPT" => "a member's data differs from the others'; writes are refused",
        _ => "writes are refused",
    };
    format!("etcd alarm {alarm} is active: {meaning}")
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
            h.db_size = u64::try_from(status.db_size()).ok();
            h.db_size_in_use = u64::try_from(status.raft_used_db_size())
                .ok()
                .filter(|n| *n > 0);
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
    // The alarm list goes through raft: only worth asking once a quorum read worked.
    if h.quorum {
        let get = client.alarm(AlarmAction::Get, AlarmType::None, None);
        if let Ok(Ok(resp)) = tokio::time::timeout(TIMEOUT, get).await {
            h.alarms = alarm_names(resp.alarms().iter().map(|a| a.alarm()));
        }
    }
    h
}

/// The distinct alarm names, sorted (etcd lists one entry per member and alarm).
fn alarm_names(alarms: impl Iterator<Item = AlarmType>) -> Vec<String> {
    let mut names: Vec<String> = alarms
        .filter(|a| *a != AlarmType::None)
        .map(|a| a.as_str_name().to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
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

    #[test]
    fn an_active_alarm_makes_a_healthy_member_not_ready() {
        let mut h = EtcdHealth {
            reachable: true,
            leader: Some(1),
            quorum: true,
            ..EtcdHealth::default()
        };
        assert!(h.ready());
        h.alarms = vec!["NOSPACE".into()];
        assert!(h.healthy(), "etcd still answers reads");
        assert!(!h.ready());
        assert_eq!(
            h.problem().as_deref(),
            Some("etcd alarm NOSPACE is active: the database is full; writes are refused")
        );
        h.alarms = vec!["CORRUPT".into()];
        assert!(h
            .problem()
            .unwrap()
            .starts_with("etcd alarm CORRUPT is active"));
        // A member without quorum reports that first.
        h.quorum = false;
        assert!(h.problem().unwrap().contains("quorum"));
    }

    #[test]
    fn alarm_names_are_distinct_and_sorted() {
        let names = alarm_names(
            [
                AlarmType::Nospace,
                AlarmType::Corrupt,
                AlarmType::Nospace,
                AlarmType::None,
            ]
            .into_iter(),
        );
        assert_eq!(names, ["CORRUPT", "NOSPACE"]);
    }
}
