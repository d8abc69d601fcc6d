//! The bootstrap plan: the one-time decision of which members form the cluster, rendered into
//! etcd's `--initial-cluster` and `--initial-cluster-token`. The seed decides it exactly once
//! ([`decide`]); every agent persists it before starting etcd and never replaces it. A plan is
//! identified by a hash of its content, so two different plans can never be mistaken for one.

mod decide;
mod store;

use std::fmt;

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::pki::CaHash;

pub use decide::{decide_plan, Candidate, PlanDecision};
pub use store::{PlanStore, PlanStoreError};

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlanMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

/// The bootstrap plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// etcd's `--initial-cluster-token`: makes member and cluster IDs unique to this plan.
    pub cluster_token: String,
    /// The initial members, sorted by name.
    pub members: Vec<PlanMember>,
    /// The CA every member trusts; a plan is only adopted by agents that trust the same CA.
    pub ca_hash: CaHash,
    /// The seed that decided it.
    pub decided_by: String,
    /// When, in seconds since the Unix epoch (informational).
    pub decided_at: u64,
}

/// Content hash of a plan (first 16 bytes of SHA-256 over its canonical encoding).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlanId(pub [u8; 16]);

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlanId({self})")
    }
}

impl Plan {
    /// Builds a plan; members are sorted so that the same set always renders the same way.
    pub fn new(
        mut members: Vec<PlanMember>,
        ca_hash: CaHash,
        cluster_token: String,
        decided_by: &str,
        decided_at: u64,
    ) -> Self {
        members.sort();
        Self {
            cluster_token,
            members,
            ca_hash,
            decided_by: decided_by.to_owned(),
            decided_at,
        }
    }

    /// The plan's identity: a hash of everything in it.
    pub fn id(&self) -> PlanId {
        // postcard encoding of a struct is deterministic (fields in order, no maps).
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        let d = digest::digest(&digest::SHA256, &bytes);
        let mut id = [0u8; 16];
        id.copy_from_slice(&d.as_ref()[..16]);
        PlanId(id)
    }

    /// `name=peer_url,...` for `--initial-cluster`.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member entry for `name`, if it is one of the initial members.
    pub fn member(&self, name: &str) -> Option<&PlanMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// A fresh random `--initial-cluster-token`.
pub fn new_cluster_token() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("quorate-{}", hex::encode(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn member(name: &str, ip: &str) -> PlanMember {
        PlanMember {
            name: name.into(),
            peer_url: format!("https://{ip}:2380"),
            client_url: format!("https://{ip}:2379"),
        }
    }

    pub fn test_hash(n: u8) -> CaHash {
        format!("sha256:{}", hex::encode([n; 32])).parse().unwrap()
    }

    pub fn plan(names: &[(&str, &str)]) -> Plan {
        Plan::new(
            names.iter().map(|(n, ip)| member(n, ip)).collect(),
            test_hash(1),
            "quorate-0011223344556677".into(),
            "a",
            1_700_000_000,
        )
    }

    #[test]
    fn initial_cluster_is_sorted_and_golden() {
        let p = plan(&[("c", "10.0.0.3"), ("a", "10.0.0.1"), ("b", "10.0.0.2")]);
        assert_eq!(
            p.initial_cluster(),
            "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380"
        );
    }

    #[test]
    fn ipv6_members_render_bracketed() {
        let p = Plan::new(
            vec![PlanMember {
                name: "a".into(),
                peer_url: crate::config::https_url("fd00::1".parse().unwrap(), 2380),
                client_url: crate::config::https_url("fd00::1".parse().unwrap(), 2379),
            }],
            test_hash(1),
            "t".into(),
            "a",
            0,
        );
        assert_eq!(p.initial_cluster(), "a=https://[fd00::1]:2380");
    }

    #[test]
    fn id_depends_on_every_field_but_not_on_member_order() {
        let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
        let q = plan(&[("b", "10.0.0.2"), ("a", "10.0.0.1")]);
        assert_eq!(p.id(), q.id());
        let mut r = p.clone();
        r.cluster_token.push('x');
        assert_ne!(p.id(), r.id());
        let mut r = p.clone();
        r.ca_hash = test_hash(2);
        assert_ne!(p.id(), r.id());
        let mut r = p.clone();
        r.members[1].peer_url = "https://10.0.0.9:2380".into();
        assert_ne!(p.id(), r.id());
    }

    #[test]
    fn cluster_tokens_are_random() {
        assert_ne!(new_cluster_token(), new_cluster_token());
    }
}
