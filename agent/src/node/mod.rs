//! The node: the one owner of this node's persistent state ([`NodeState`]: trusted CA, CA key
//! on the seed, plan, node certificate, markers), the pure decisions about it ([`step`],
//! [`membership`], [`leave`], [`policy`], [`describe`]), and the tasks that act on them: the
//! [`Controller`], which carries out the next step and publishes the node's status and gossip
//! metadata, and the [`MaintenanceTask`] of the leader's agent.

mod certs;
pub mod client_token;
mod controller;
pub mod crl;
pub mod describe;
pub mod leave;
pub mod maintenance;
pub mod membership;
pub mod policy;
pub mod roles;
pub mod seal;
pub mod state;
mod status;
pub mod step;
pub mod token;

pub use certs::{cert_state, load_node_cert, NodeCert};
pub use controller::{Controller, ControllerIo};
pub use maintenance::MaintenanceTask;
pub use state::NodeState;
pub use status::{CertSummary, NodeStatus};

use std::path::PathBuf;

/// Errors while carrying out a step (retried) or loading state at start (fatal).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanStoreError),
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiClientError),
    #[error(transparent)]
    Cluster(#[from] crate::etcd::ClusterError),
    #[error("operator-supplied CA {path}: {message}")]
    OperatorCa { path: PathBuf, message: String },
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
    #[error("the agent is shutting down")]
    ShuttingDown,
}

impl NodeError {
    /// An expected, passing refusal: wait and try again without alarm.
    pub fn is_transient(&self) -> bool {
        matches!(self, NodeError::Cluster(e) if e.is_transient())
    }
}
