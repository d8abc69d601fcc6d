//! What agents disseminate over gossip besides membership: each agent's metadata
//! ([`NodeMeta`]: name, URLs, role, phase, CA and plan it holds) and the bootstrap plan.
//! The [`Handler`] decides what is new (and so worth passing on) and hands new items to the
//! gossip task through a channel, since foca owns the handler.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::phase::Phase;
use crate::pki::CaHash;
use crate::plan::{Plan, PlanId};

/// An agent's metadata as gossiped. `version` orders updates from the same agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub name: String,
    /// (agent start time in ms, sequence number): later starts and later updates win.
    pub version: (u64, u64),
    pub gossip_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub peer_url: String,
    pub client_url: String,
    pub seed: bool,
    /// Holds the CA key and signs certificates.
    pub issuer: bool,
    pub phase: Phase,
    pub ca_hash: Option<CaHash>,
    pub plan_id: Option<PlanId>,
    /// The local etcd member ID, once known.
    pub member_id: Option<u64>,
    /// This host's etcd member has been healthy in a cluster at least once: the cluster
    /// exists, so no host may bootstrap it again.
    pub formed: bool,
    /// The restore generation this agent has applied (0: only the bootstrap plan). An agent
    /// that sees a newer one fetches the signed plan; the number alone changes nothing.
    pub restore_generation: u64,
}

#[cfg(test)]
impl NodeMeta {
    /// Metadata for tests: a plain waiting agent at `addr`.
    pub(crate) fn example(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            version: (1, 1),
            gossip_addr: addr,
            api_addr: addr,
            peer_url: format!("https://{name}:2380"),
            client_url: format!("https://{name}:2379"),
            seed: false,
            issuer: false,
            phase: Phase::WaitingForPeers,
            ca_hash: None,
            plan_id: None,
            member_id: None,
            formed: false,
            restore_generation: 0,
        }
    }
}

/// One gossiped item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    Meta(NodeMeta),
    Plan(Plan),
}

/// foca's handle on a broadcast, used to replace stale items in its backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastKey {
    Meta { name: String, version: (u64, u64) },
    Plan(PlanId),
}

impl foca::Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                BroadcastKey::Meta { name, version },
                BroadcastKey::Meta {
                    name: other_name,
                    version: other_version,
                },
            ) => name == other_name && version >= other_version,
            (BroadcastKey::Plan(a), BroadcastKey::Plan(b)) => a == b,
            _ => false,
        }
    }
}

/// Errors decoding a broadcast (after authentication; counted as malformed).
#[derive(Debug, thiserror::Error)]
#[error("malformed broadcast: {0}")]
pub struct BroadcastError(String);

/// Encodes a broadcast for foca.
pub fn encode(item: &Broadcast) -> Vec<u8> {
    postcard::to_stdvec(item).unwrap_or_default()
}

/// Decides which broadcasts are new and passes them to the gossip task.
pub struct Handler {
    me: String,
    meta_versions: HashMap<String, (u64, u64)>,
    plans: HashSet<PlanId>,
    inbox: mpsc::Sender<Broadcast>,
}

impl Handler {
    pub fn new(me: &str, inbox: mpsc::Sender<Broadcast>) -> Self {
        Self {
            me: me.to_owned(),
            meta_versions: HashMap::new(),
            plans: HashSet::new(),
            inbox,
        }
    }
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = BroadcastKey;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<Self::Key>, Self::Error> {
        let item: Broadcast =
            postcard::from_bytes(data).map_err(|e| BroadcastError(e.to_string()))?;
        // Our own additions (sender None) are always disseminated.
        let local = sender.is_none();
        let key = match &item {
            Broadcast::Meta(meta) => {
                if !local {
                    if meta.name == self.me {
                        // Our own metadata coming back; nothing to learn.
                        return Ok(None);
                    }
                    let newer = self
                        .meta_versions
                        .get(&meta.name)
                        .is_none_or(|v| meta.version > *v);
                    if !newer {
                        return Ok(None);
                    }
                    self.meta_versions.insert(meta.name.clone(), meta.version);
                }
                BroadcastKey::Meta {
                    name: meta.name.clone(),
                    version: meta.version,
                }
            }
            Broadcast::Plan(plan) => {
                let id = plan.id();
                if !local && !self.plans.insert(id) {
                    return Ok(None);
                }
                BroadcastKey::Plan(id)
            }
        };
        if !local {
            // The receiver lives as long as the gossip task that owns this handler.
            let _ = self.inbox.send(item);
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{BroadcastHandler, Invalidates};

    fn meta(name: &str, version: (u64, u64)) -> NodeMeta {
        NodeMeta {
            version,
            ..NodeMeta::example(name, "127.0.0.1:7946".parse().unwrap())
        }
    }

    fn sender() -> NodeId {
        NodeId::new("x", "127.0.0.9:7946".parse().unwrap(), 1)
    }

    #[test]
    fn only_newer_meta_is_passed_on() {
        let (tx, rx) = mpsc::channel();
        let mut h = Handler::new("me", tx);
        let s = sender();
        let m1 = encode(&Broadcast::Meta(meta("b", (1, 1))));
        let m2 = encode(&Broadcast::Meta(meta("b", (1, 2))));
        assert!(h.receive_item(&m1, Some(&s)).unwrap().is_some());
        assert!(h.receive_item(&m1, Some(&s)).unwrap().is_none());
        assert!(h.receive_item(&m2, Some(&s)).unwrap().is_some());
        assert!(h.receive_item(&m1, Some(&s)).unwrap().is_none());
        assert_eq!(rx.try_iter().count(), 2);
        // Our own meta echoed back is ignored; our own additions are always kept.
        let mine = encode(&Broadcast::Meta(meta("me", (1, 1))));
        assert!(h.receive_item(&mine, Some(&s)).unwrap().is_none());
        assert!(h.receive_item(&mine, None).unwrap().is_some());
        assert_eq!(rx.try_iter().count(), 0);
    }

    #[test]
    fn plans_are_passed_on_once() {
        let (tx, rx) = mpsc::channel();
        let mut h = Handler::new("me", tx);
        let p = encode(&Broadcast::Plan(crate::plan::tests::plan(&[(
            "a", "10.0.0.1",
        )])));
        assert!(h.receive_item(&p, Some(&sender())).unwrap().is_some());
        assert!(h.receive_item(&p, Some(&sender())).unwrap().is_none());
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        let (tx, _rx) = mpsc::channel();
        let mut h = Handler::new("me", tx);
        assert!(h
            .receive_item(&[0xff, 0xff, 0xff], Some(&sender()))
            .is_err());
    }

    #[test]
    fn keys_invalidate_older_versions_of_the_same_item_only() {
        let k = |n: &str, v| BroadcastKey::Meta {
            name: n.into(),
            version: (1, v),
        };
        assert!(k("a", 2).invalidates(&k("a", 1)));
        assert!(!k("a", 1).invalidates(&k("a", 2)));
        assert!(!k("a", 2).invalidates(&k("b", 1)));
        assert!(
            BroadcastKey::Plan(PlanId([1; 16])).invalidates(&BroadcastKey::Plan(PlanId([1; 16])))
        );
        assert!(!BroadcastKey::Plan(PlanId([1; 16])).invalidates(&k("a", 1)));
    }
}
