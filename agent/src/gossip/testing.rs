//! Builders of gossip views for other modules' unit tests.

use super::{GossipView, NodeId, NodeMeta, Peer, PeerState};
use crate::phase::Phase;

/// A running agent's metadata: `name` at 127.0.0.`n`.
pub fn meta(name: &str, n: u8) -> NodeMeta {
    let mut m = NodeMeta::example(name, format!("127.0.0.{n}:7946").parse().unwrap());
    m.peer_url = format!("https://127.0.0.{n}:2380");
    m.client_url = format!("https://127.0.0.{n}:2379");
    m.phase = Phase::Running;
    m
}

/// A live peer with `m` as its metadata.
pub fn peer(m: NodeMeta, state: PeerState) -> Peer {
    Peer {
        id: NodeId {
            name: m.name.clone(),
            addr: m.gossip_addr,
            bump: 1,
        },
        state,
        meta: Some(m),
    }
}

/// A view of live peers.
pub fn view_of(metas: Vec<NodeMeta>) -> GossipView {
    GossipView {
        peers: metas
            .into_iter()
            .map(|m| peer(m, PeerState::Alive))
            .collect(),
        plans: Vec::new(),
    }
}
