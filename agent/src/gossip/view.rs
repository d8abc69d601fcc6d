//! The membership view other tasks read: every gossip member with its SWIM state and its
//! latest metadata, plus the plans heard of. Built by a pure function from foca's member list,
//! and published through a watch channel only when it changes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{NodeId, NodeMeta};
use crate::plan::Plan;

/// SWIM state of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    Alive,
    Suspect,
    Down,
}

impl From<foca::State> for PeerState {
    fn from(s: foca::State) -> Self {
        match s {
            foca::State::Alive => PeerState::Alive,
            foca::State::Suspect => PeerState::Suspect,
            foca::State::Down => PeerState::Down,
        }
    }
}

/// Another agent as this one sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub id: NodeId,
    pub state: PeerState,
    /// Its metadata, once received.
    pub meta: Option<NodeMeta>,
}

impl Peer {
    /// Alive or suspected (SWIM treats a suspect as alive until confirmed down).
    pub fn is_live(&self) -> bool {
        self.state != PeerState::Down
    }
}

/// What gossip knows, excluding this agent itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GossipView {
    /// Peers sorted by name.
    pub peers: Vec<Peer>,
    /// Distinct plans received, oldest first.
    pub plans: Vec<Plan>,
}

impl GossipView {
    /// Live peers.
    pub fn live(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.is_live())
    }

    /// Metadata of live peers that sent it.
    pub fn live_metas(&self) -> impl Iterator<Item = &NodeMeta> {
        self.live().filter_map(|p| p.meta.as_ref())
    }

    /// A peer by name (the live one if there are several).
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers
            .iter()
            .filter(|p| p.id.name == name)
            .max_by_key(|p| p.is_live())
    }
}

/// Builds the view from foca's members and the metadata received.
pub fn build_view<'a>(
    members: impl Iterator<Item = (&'a NodeId, foca::State)>,
    metas: &HashMap<String, NodeMeta>,
    plans: &[Plan],
) -> GossipView {
    let mut peers: Vec<Peer> = members
        .map(|(id, state)| Peer {
            id: id.clone(),
            state: state.into(),
            meta: metas
                .get(&id.name)
                .filter(|m| m.gossip_addr == id.addr)
                .cloned(),
        })
        .collect();
    peers.sort_by(|a, b| a.id.name.cmp(&b.id.name).then(a.id.addr.cmp(&b.id.addr)));
    GossipView {
        peers,
        plans: plans.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, port: u16) -> NodeId {
        NodeId {
            name: name.into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            bump: 1,
        }
    }

    fn meta(name: &str, port: u16) -> NodeMeta {
        NodeMeta::example(name, format!("127.0.0.1:{port}").parse().unwrap())
    }

    #[test]
    fn joins_members_with_their_metadata() {
        let b = id("b", 2);
        let a = id("a", 1);
        let c = id("c", 3);
        let mut metas = HashMap::new();
        metas.insert("a".to_string(), meta("a", 1));
        // Metadata from another address under the same name is not attached.
        metas.insert("c".to_string(), meta("c", 9));
        let v = build_view(
            [
                (&b, foca::State::Suspect),
                (&a, foca::State::Alive),
                (&c, foca::State::Down),
            ]
            .into_iter(),
            &metas,
            &[],
        );
        let names: Vec<_> = v.peers.iter().map(|p| p.id.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(v.live().count(), 2);
        assert_eq!(v.live_metas().count(), 1);
        assert!(v.peer("c").unwrap().meta.is_none());
        assert_eq!(v.peer("b").unwrap().state, PeerState::Suspect);
    }
}
