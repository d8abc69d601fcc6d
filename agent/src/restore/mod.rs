//! Restoring the whole cluster from a snapshot on the same hosts (`quorate restore FILE`).
//! The deciding agent checks everything first ([`check`]), decides and signs a
//! [`RestorePlan`] ([`plan`], [`sign`]), persists it ([`store`]) and pushes it to the other
//! members over the agent API; every member in the plan then restores the snapshot through
//! the controller's step machine (`Step::Restore`). A member left out (down during the
//! restore) moves its old data aside and joins the restored cluster as a new member.

pub mod accept;
pub mod binding;
pub mod check;
pub mod claim;
pub mod from_config;
pub mod inspect;
pub mod plan;
pub mod progress;
pub mod run;
pub mod seed;
pub mod sign;
pub mod source;
pub mod store;
pub mod transfer;

use std::path::PathBuf;

pub use accept::accept_plan;
pub use plan::{RestorePlan, SignedPlan, SnapshotRef};
pub use progress::{in_progress, progress, RestoreProgress};
pub use sign::sign_plan;
pub use store::{RestoreRecord, RestoreStore};

/// Why a restore cannot start or a plan is refused. Every refusal leaves everything running
/// and untouched.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{path}: {message}. Fix: give the path of a snapshot file on this host")]
    Source { path: String, message: String },
    #[error("{source_url}: s3:// sources need [snapshot.s3] in the configuration (the endpoint, region and credentials of the store). Fix: add [snapshot.s3] to this host's config and restart the agent, or copy the file to this host and restore it by path")]
    NeedsS3 { source_url: String },
    #[error("{path} is not a complete etcd snapshot: {reason}. Fix: use another snapshot (quorate keeps several in its snapshot directory)")]
    Incomplete { path: PathBuf, reason: String },
    #[error("{path} was taken by etcd {snapshot} but this host runs etcd {local}; a snapshot cannot be restored by an older etcd. Fix: upgrade etcd on every member first")]
    TooNew {
        path: PathBuf,
        snapshot: String,
        local: String,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error(
        "a restore (generation {generation}, started by {by} at {at}) is in progress; wait for it"
    )]
    InProgress {
        generation: u64,
        by: String,
        at: String,
    },
    #[error("restore plan generation {generation} from {decided_by} refused: {reason}")]
    BadPlan {
        generation: u64,
        decided_by: String,
        reason: String,
    },
    #[error("cannot sign the restore plan: {0}")]
    Sign(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("etcd snapshot restore failed: {0}")]
    Command(String),
    #[error("cannot fetch {source_url}: {message}. Fix: check [snapshot.s3] (endpoint, credentials) and that the object exists (quorate snapshot list)")]
    Fetch { source_url: String, message: String },
    #[error(transparent)]
    Crypt(#[from] crate::snapshot::crypt::CryptError),
}

/// The version of the etcd binary as it is now (not as it was when the agent started: a
/// package upgrade or a changed symlink may have replaced it since).
pub async fn local_etcd_version(
    binary: &std::path::Path,
) -> Result<crate::etcd::version::Version, RestoreError> {
    crate::etcd::probe_version(binary)
        .await
        .map_err(RestoreError::Refused)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::tests::{member, test_hash};

    /// A plan of generation `generation` for members a, b and c, decided by a.
    pub fn example_plan(generation: u64) -> RestorePlan {
        RestorePlan {
            generation,
            previous: "00112233445566778899aabbccddeeff".into(),
            cluster_token: "quorate-restore-0011".into(),
            members: vec![
                member("a", "10.0.0.1"),
                member("b", "10.0.0.2"),
                member("c", "10.0.0.3"),
            ],
            snapshot: SnapshotRef {
                sha256: "ab".repeat(32),
                size: 4096,
                revision: 42,
            },
            ca_hash: test_hash(1),
            decided_by: "a".into(),
            decided_at: 1_700_000_000,
            sealed_ca: None,
            issued: Vec::new(),
        }
    }
}
