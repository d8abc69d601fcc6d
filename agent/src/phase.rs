//! The agent's phase: where it is on the way from an empty host to a healthy member. Gossiped
//! to peers, shown in `quorate status`, /status and systemd's STATUS= line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an agent is on its way to a healthy member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Just started; nothing decided yet.
    Starting,
    /// Waiting for `bootstrap_expect` agents, or for the plan.
    WaitingForPeers,
    /// Getting its certificate signed.
    RequestingCertificate,
    /// Joining a running cluster as a learner.
    Joining,
    /// etcd started, not yet healthy.
    StartingEtcd,
    /// etcd healthy in a cluster with quorum.
    Running,
    /// etcd runs but is unhealthy or the cluster lacks quorum.
    Degraded,
    /// A configuration conflict stops progress (two seeds, two CAs, two plans).
    Conflict,
    /// The host left the cluster (`quorate leave`).
    Left,
    /// Replacing its data with a snapshot under a restore plan (`quorate restore`).
    Restoring,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Starting => "starting",
            Phase::WaitingForPeers => "waiting for peers",
            Phase::RequestingCertificate => "requesting certificate",
            Phase::Joining => "joining",
            Phase::StartingEtcd => "starting etcd",
            Phase::Running => "running",
            Phase::Degraded => "degraded",
            Phase::Conflict => "conflict",
            Phase::Left => "left",
            Phase::Restoring => "restoring",
        })
    }
}
