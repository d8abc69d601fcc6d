//! The restore plan: the one sanctioned successor of the bootstrap plan. It says which members
//! restore which snapshot with which new `--initial-cluster-token`, carries a generation (the
//! bootstrap plan is generation 0) and the id of the plan it follows, and is signed with the
//! deciding member's node key. The signature, not the join token, is the authority: an agent
//! applies a plan only after [`SignedPlan::verify`] (see `verify.rs`).

use serde::{Deserialize, Serialize};

use crate::pki::CaHash;
use crate::plan::PlanMember;

/// The snapshot a restore plan restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// sha256 of the whole file, hex.
    pub sha256: String,
    pub size: u64,
    /// The revision the snapshot was taken at (0 when unknown).
    pub revision: i64,
}

/// What the restoring members do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// previous + 1; the bootstrap plan is generation 0.
    pub generation: u64,
    /// The plan this one follows: the bootstrap plan's id (generation 1) or the previous
    /// restore plan's id, hex.
    pub previous: String,
    /// The new `--initial-cluster-token`.
    pub cluster_token: String,
    /// The members that restore the snapshot (the live voters), sorted by name.
    pub members: Vec<PlanMember>,
    pub snapshot: SnapshotRef,
    pub ca_hash: CaHash,
    pub decided_by: String,
    /// Seconds since the Unix epoch.
    pub decided_at: u64,
    /// `/quorate/ca` as it was when the plan was decided (sealed with the token's key): the
    /// issuer puts it back if the restored snapshot holds another CA (see `issuer::restored`).
    #[serde(default)]
    pub sealed_ca: Option<String>,
    /// The newest unexpired records of issued certificates when the plan was decided
    /// (`issuer::issued::to_carry`): the issuer writes back those the snapshot lacks, so that
    /// certificates issued after the snapshot stay etcd users (`issuer::task`).
    #[serde(default)]
    pub issued: Vec<crate::issuer::issued::Issued>,
}

impl RestorePlan {
    /// `name=peer_url,...` for `--initial-cluster`.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member entry for `name`.
    pub fn member(&self, name: &str) -> Option<&PlanMember> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The plan's id: sha256 of its canonical bytes, first 16 bytes, hex.
    pub fn id(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.canonical());
        hex::encode(&d.as_ref()[..16])
    }

    /// The bytes that are signed (postcard: fields in order, no maps, deterministic).
    pub fn canonical(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }
}

/// A restore plan with its signature and the signer's node certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPlan {
    pub plan: RestorePlan,
    /// ECDSA P-256 SHA-256 (ASN.1 DER) over [`RestorePlan::canonical`], hex.
    pub signature: String,
    /// The signer's node certificate, PEM.
    pub cert_pem: String,
}
