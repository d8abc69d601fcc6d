//! What the controller publishes about this node for /status, `quorate status` and systemd.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::phase::Phase;
use crate::pki::{renewal_time, CaHash, CertInfo};
use crate::plan::Plan;

/// The controller's view of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub phase: Phase,
    /// One human line: "waiting for peers 2/3", "healthy, leader h1", ...
    pub message: String,
    /// The local member is healthy in a cluster with quorum.
    pub ready: bool,
    /// This node holds the CA key and signs certificates.
    pub issuer: bool,
    pub ca_hash: Option<CaHash>,
    pub plan: Option<Plan>,
    pub certificate: Option<CertSummary>,
    /// The last failed action, if the controller is retrying.
    pub last_error: Option<String>,
    /// The newest restore plan and its members' progress.
    #[serde(default)]
    pub restore: Option<crate::restore::RestoreProgress>,
}

impl Default for NodeStatus {
    fn default() -> Self {
        Self {
            phase: Phase::Starting,
            message: "starting".into(),
            ready: false,
            issuer: false,
            ca_hash: None,
            plan: None,
            certificate: None,
            last_error: None,
            restore: None,
        }
    }
}

/// The node certificate's dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSummary {
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// When the agent renews it.
    pub renew_at: String,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl CertSummary {
    pub fn of(info: &CertInfo) -> Self {
        Self {
            serial: info.serial_hex.clone(),
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
            renew_at: rfc3339(renewal_time(info.not_before, info.not_after)),
        }
    }
}
