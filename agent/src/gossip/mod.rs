//! Gossip: SWIM membership (foca) over UDP, every datagram sealed with a key derived from the
//! join token. Agents disseminate their metadata and the bootstrap plan as custom broadcasts.
//! One task owns foca ([`GossipTask`]); others send it [`GossipCommand`]s and read the
//! [`GossipView`] it publishes.

mod broadcast;
mod compat;
pub mod directory;
mod driver;
mod envelope;
mod identity;
mod join;
mod seals;
#[cfg(test)]
pub(crate) mod testing;
mod timers;
mod view;

pub use broadcast::{Broadcast, NodeMeta};
pub use driver::{ClientDesk, GossipCommand, GossipError, GossipSettings, GossipTask};
pub use envelope::{Envelope, OpenError};
pub use identity::{next_bump, NodeId};
pub use join::{resolve as resolve_join_targets, Joiner};
pub use view::{GossipView, Peer, PeerState};
