//! The status report: one document, served as JSON on /status and rendered as tables by
//! `quorate status`, so that the HTTP endpoint and the command can never disagree.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::defrag::DefragStatus;
use crate::etcd::{EtcdHealth, Member, ProcessState};
use crate::gossip::{GossipView, PeerState};
use crate::metrics::Counters;
use crate::node::{CertSummary, NodeStatus};
use crate::phase::Phase;
use crate::pki::CaHash;

/// Everything `quorate status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node: String,
    pub agent_version: String,
    pub advertise: String,
    pub seed: bool,
    pub phase: Phase,
    pub message: String,
    pub ready: bool,
    pub issuer: bool,
    pub ca_hash: Option<CaHash>,
    pub plan: Option<PlanReport>,
    pub gossip: Vec<GossipMember>,
    pub etcd: EtcdReport,
    pub certificate: Option<CertSummary>,
    pub last_error: Option<String>,
    pub counters: BTreeMap<String, u64>,
    /// Defragmentation and space alarm, from the defragmentation task (added by `quorate
    /// status` from the control socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<DefragStatus>,
    /// Scheduled snapshots, from the snapshot task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::snapshot::SnapshotStatus>,
    /// Rolling etcd restarts and upgrades, from the rolling-restart task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_restarts: Option<crate::rolling::RollingStatus>,
    /// The newest restore plan and which of its members are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::restore::RestoreProgress>,
    /// A restore's snapshot on the move (download of an `s3://` source, fetch from the
    /// deciding member), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_transfer: Option<crate::restore::transfer::Transfer>,
    /// The revocation list in force here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<crate::node::crl::CrlStatus>,
    /// This member's `[[roles]]` and whether the members agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<crate::node::roles::RolesStatus>,
    /// What seals the CA in etcd, and whether this host holds the CA seal secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_seal: Option<crate::node::seal::SealStatus>,
    /// The join tokens in force here and a rotation under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<crate::node::token::TokenStatus>,
    /// Client-mode agents this member answered in the last five minutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<crate::gossip::directory::SeenClient>,
}

/// The plan, flattened for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    pub id: String,
    pub decided_by: String,
    pub cluster_token: String,
    pub initial_cluster: String,
}

/// One gossip member as this agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMember {
    pub name: String,
    pub gossip_addr: SocketAddr,
    pub state: PeerState,
    pub phase: Option<Phase>,
    pub api_addr: Option<SocketAddr>,
    pub seed: bool,
    pub issuer: bool,
}

/// The local etcd member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdReport {
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub member_id: Option<String>,
    pub cluster_id: Option<String>,
    pub leader: Option<String>,
    pub leader_name: Option<String>,
    pub raft_term: u64,
    pub is_learner: bool,
    pub version: Option<String>,
    pub quorum: bool,
    pub members: Vec<Member>,
    pub error: Option<String>,
    /// Active etcd alarms ("NOSPACE", "CORRUPT"); absent in reports of older agents.
    #[serde(default)]
    pub alarms: Vec<String>,
}

/// The static part of the report.
pub struct Identity {
    pub node: String,
    pub advertise: String,
    pub seed: bool,
}

impl StatusReport {
    /// Assembles the report from the published state of each task.
    pub fn build(
        id: &Identity,
        status: &NodeStatus,
        view: &GossipView,
        health: &EtcdHealth,
        process: &ProcessState,
        counters: &Counters,
    ) -> Self {
        let hex = |v: Option<u64>| v.map(|v| format!("{v:x}"));
        Self {
            node: id.node.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            advertise: id.advertise.clone(),
            seed: id.seed,
            phase: status.phase,
            message: status.message.clone(),
            ready: status.ready,
            issuer: status.issuer,
            ca_hash: status.ca_hash,
            plan: status.plan.as_ref().map(|p| PlanReport {
                id: p.id().to_string(),
                decided_by: p.decided_by.clone(),
                cluster_token: p.cluster_token.clone(),
                initial_cluster: p.initial_cluster(),
            }),
            gossip: view
                .peers
                .iter()
                .map(|p| GossipMember {
                    name: p.id.name.clone(),
                    gossip_addr: p.id.addr,
                    state: p.state,
                    phase: p.meta.as_ref().map(|m| m.phase),
                    api_addr: p.meta.as_ref().map(|m| m.api_addr),
                    seed: p.meta.as_ref().is_some_and(|m| m.seed),
                    issuer: p.meta.as_ref().is_some_and(|m| m.issuer),
                })
                .collect(),
            etcd: EtcdReport {
                pid: process.pid,
                restarts: process.restarts,
                last_exit: process.last_exit.clone(),
                member_id: hex(health.member_id),
                cluster_id: hex(health.cluster_id),
                leader: hex(health.leader),
                leader_name: health.leader_name().map(str::to_owned),
                raft_term: health.raft_term,
                is_learner: health.is_learner,
                version: health.version.clone(),
                quorum: health.quorum,
                members: health.members.clone(),
                error: health.error.clone(),
                alarms: health.alarms.clone(),
            },
            certificate: status.certificate.clone(),
            last_error: status.last_error.clone(),
            counters: counters
                .snapshot()
                .into_iter()
                .map(|(name, _, v)| (name.to_owned(), v))
                .collect(),
            maintenance: None,
            snapshot: None,
            etcd_restarts: None,
            restore: status.restore.clone(),
            restore_transfer: None,
            revocation: None,
            roles: None,
            ca_seal: None,
            join_token: None,
            clients: Vec::new(),
        }
    }

    /// The API address of a live issuer (for `quorate cert client`).
    pub fn issuer_api(&self) -> Option<SocketAddr> {
        self.gossip
            .iter()
            .find(|m| m.issuer && m.state != PeerState::Down)
            .and_then(|m| m.api_addr)
    }

    /// Human-readable tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "Node:        {} ({}){}",
            self.node,
            self.advertise,
            if self.seed { ", seed" } else { "" }
        );
        let _ = writeln!(out, "Phase:       {}", self.phase);
        let _ = writeln!(out, "Status:      {}", self.message);
        let _ = writeln!(
            out,
            "Ready:       {}",
            if self.ready { "yes" } else { "no" }
        );
        let _ = writeln!(
            out,
            "Issuer:      {}",
            if self.issuer {
                "yes (holds the CA key)"
            } else {
                "no"
            }
        );
        let _ = writeln!(
            out,
            "CA hash:     {}",
            self.ca_hash
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into())
        );
        if let Some(p) = &self.plan {
            let _ = writeln!(
                out,
                "Plan:        {} (decided by {}, token {})",
                p.id, p.decided_by, p.cluster_token
            );
            let _ = writeln!(out, "             {}", p.initial_cluster);
        } else {
            let _ = writeln!(out, "Plan:        -");
        }
        if let Some(c) = &self.certificate {
            let _ = writeln!(
                out,
                "Certificate: serial {}, valid {} .. {}, renews at {}",
                c.serial, c.not_before, c.not_after, c.renew_at
            );
        }
        if let Some(e) = &self.last_error {
            let _ = writeln!(out, "Last error:  {e}");
        }
        let _ = writeln!(out, "\nGossip members:");
        let _ = writeln!(
            out,
            "  {:<16} {:<24} {:<8} {:<24} ROLE",
            "NAME", "ADDRESS", "STATE", "PHASE"
        );
        for m in &self.gossip {
            let role = match (m.seed, m.issuer) {
                (_, true) => "issuer",
                (true, false) => "seed",
                _ => "",
            };
            let state = format!("{:?}", m.state).to_lowercase();
            let phase = m.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  {:<16} {:<24} {:<8} {:<24} {role}",
                m.name,
                m.gossip_addr.to_string(),
                state,
                phase
            );
        }
        let e = &self.etcd;
        let _ = writeln!(out, "\netcd:");
        let _ = writeln!(
            out,
            "  pid {}, restarts {}, version {}",
            e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            e.restarts,
            opt(&e.version)
        );
        let _ = writeln!(
            out,
            "  member {}, cluster {}, leader {} ({}), term {}, quorum {}{}",
            opt(&e.member_id),
            opt(&e.cluster_id),
            opt(&e.leader_name),
            opt(&e.leader),
            e.raft_term,
            if e.quorum { "yes" } else { "no" },
            if e.is_learner { ", learner" } else { "" }
        );
        if let Some(err) = &e.error {
            let _ = writeln!(out, "  error: {err}");
        }
        if !e.alarms.is_empty() {
            let _ = writeln!(out, "  alarms: {}", e.alarms.join(", "));
        }
        if !e.members.is_empty() {
            let _ = writeln!(out, "  {:<18} {:<16} {:<8} PEER URLS", "ID", "NAME", "ROLE");
            for m in &e.members {
                let name = if m.name.is_empty() {
                    "(not started)"
                } else {
                    &m.name
                };
                let _ = writeln!(
                    out,
                    "  {:<18x} {:<16} {:<8} {}",
                    m.id,
                    name,
                    if m.is_learner { "learner" } else { "voter" },
                    m.peer_urls.join(",")
                );
            }
        }
        if let Some(m) = &self.maintenance {
            m.render(&mut out);
        }
        if let Some(s) = &self.snapshot {
            s.render(&mut out);
        }
        if let Some(r) = &self.etcd_restarts {
            r.render(&mut out);
        }
        if let Some(r) = &self.restore {
            r.render(&mut out);
        }
        if let Some(t) = &self.restore_transfer {
            let _ = writeln!(out, "  {}", t.line());
        }
        if let Some(r) = &self.revocation {
            r.render(&mut out);
        }
        if let Some(r) = &self.roles {
            r.render(&mut out);
        }
        if let Some(s) = &self.ca_seal {
            s.render(&mut out);
        }
        if let Some(t) = &self.join_token {
            t.render(&mut out);
        }
        if !self.clients.is_empty() {
            let names: Vec<String> = self
                .clients
                .iter()
                .take(10)
                .map(|c| format!("{} ({})", c.name, c.addr.ip()))
                .collect();
            let more = self.clients.len().saturating_sub(names.len());
            let _ = writeln!(
                out,
                "\nClients:     {} asked in the last 5 min: {}{}",
                self.clients.len(),
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(out, "\nCounters:");
        for (k, v) in &self.counters {
            let _ = writeln!(out, "  {k:<32} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests;
