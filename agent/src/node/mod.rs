//! The node controller: the one owner of this node's bootstrap state (trusted CA, CA key on
//! the issuer, plan, node certificate, whether etcd should run). A pure function ([`step`])
//! picks the next step from what is on disk and what gossip and etcd report; the driver
//! ([`Controller`]) carries it out and publishes the node's status and gossip metadata.

mod certs;
mod controller;
pub mod membership;
mod status;
pub mod step;

pub use certs::{cert_state, load_node_cert, NodeCert};
pub use controller::{Controller, ControllerIo};
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
    #[error("the agent is shutting down")]
    ShuttingDown,
}

impl NodeError {
    /// An expected, passing refusal: wait and try again without alarm.
    pub fn is_transient(&self) -> bool {
        matches!(self, NodeError::Cluster(e) if e.is_transient())
    }
}
