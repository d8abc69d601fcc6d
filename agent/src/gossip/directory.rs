//! The directory: how a client-mode agent learns the cluster without joining its membership.
//! It asks a member on the gossip port with an [`Ask`], sealed in an envelope of version
//! [`CLIENT_VERSION`] under the gossip key of the client token (or of the join token); the
//! member answers with a [`Directory`] (the etcd members' client URLs, the issuer's API
//! address, the CA hash) sealed under the same key, to the asking address only.
//!
//! Clients never take part in SWIM: a client-token holder can neither inject membership
//! updates nor metadata, and cannot slow the members' failure detection. Members answer only
//! fresh asks ([`MAX_ASK_AGE`]), at most one per source address per [`MIN_ASK_INTERVAL`]
//! (a replayed ask cannot turn a member into an amplifier), and only while their etcd is
//! healthy (a member cut off from the quorum may hold a stale member list).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{GossipView, NodeMeta};
use crate::etcd::EtcdHealth;
use crate::pki::CaHash;

/// The envelope version of client asks and answers (members' gossip is version 1).
pub const CLIENT_VERSION: u8 = 2;
/// Asks older or newer than this are dropped.
pub const MAX_ASK_AGE: Duration = Duration::from_secs(60);
/// A source address gets at most one answer this often.
pub const MIN_ASK_INTERVAL: Duration = Duration::from_millis(500);

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    /// Random; the answer carries it back, so an old answer cannot be replayed to the client.
    pub id: u64,
    /// Seconds since the epoch on the client's clock.
    pub sent_at: u64,
    /// The client's name, for the member's log.
    pub name: String,
}

/// One etcd member, as a client needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryMember {
    pub name: String,
    pub client_urls: Vec<String>,
    /// Its agent's gossip address, where the client can ask next time.
    pub gossip_addr: Option<SocketAddr>,
}

/// What a member answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// The ask's id.
    pub id: u64,
    /// The member that answered.
    pub answered_by: String,
    pub ca_hash: Option<CaHash>,
    /// The API address of the live issuer, if one is known.
    pub issuer_api: Option<SocketAddr>,
    /// The etcd voting members, by name.
    pub members: Vec<DirectoryMember>,
}

/// The messages of the client channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    Ask(Ask),
    Answer(Directory),
}

impl ClientMessage {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Whether an ask sent at `sent_at` is recent enough on this host's clock `now` (both in
/// seconds since the epoch).
pub fn fresh(sent_at: u64, now: u64) -> bool {
    sent_at.abs_diff(now) <= MAX_ASK_AGE.as_secs()
}

/// The answer to ask `id`, from what this member knows: None while its etcd is not a healthy
/// member of a cluster with quorum.
pub fn answer(
    id: u64,
    own: Option<&NodeMeta>,
    health: &EtcdHealth,
    view: &GossipView,
) -> Option<Directory> {
    let own = own?;
    if !health.healthy() {
        return None;
    }
    let gossip_of = |name: &str| {
        if name == own.name {
            return Some(own.gossip_addr);
        }
        view.peer(name)
            .and_then(|p| p.meta.as_ref())
            .map(|m| m.gossip_addr)
    };
    let mut members: Vec<DirectoryMember> = health
        .members
        .iter()
        .filter(|m| !m.is_learner && !m.name.is_empty() && !m.client_urls.is_empty())
        .map(|m| DirectoryMember {
            name: m.name.clone(),
            client_urls: m.client_urls.clone(),
            gossip_addr: gossip_of(&m.name),
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let issuer_api = if own.issuer {
        Some(own.api_addr)
    } else {
        view.live()
            .filter_map(|p| p.meta.as_ref())
            .find(|m| m.issuer)
            .map(|m| m.api_addr)
    };
    Some(Directory {
        id,
        answered_by: own.name.clone(),
        ca_hash: own.ca_hash,
        issuer_api,
        members,
    })
}

/// When each source address was last answered; keeps a member from answering one address
/// more often than [`MIN_ASK_INTERVAL`].
#[derive(Debug, Default)]
pub struct AnswerRate {
    last: HashMap<IpAddr, Instant>,
}

/// Addresses remembered at most; older entries are forgotten first when it is reached.
const MAX_REMEMBERED: usize = 4096;

impl AnswerRate {
    /// Whether `addr` may be answered at `now` (and records it when so).
    pub fn admit(&mut self, addr: IpAddr, now: Instant) -> bool {
        if let Some(last) = self.last.get(&addr) {
            if now.saturating_duration_since(*last) < MIN_ASK_INTERVAL {
                return false;
            }
        }
        if self.last.len() >= MAX_REMEMBERED {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < MIN_ASK_INTERVAL);
        }
        if self.last.len() >= MAX_REMEMBERED {
            return false;
        }
        self.last.insert(addr, now);
        true
    }
}

/// A client agent a member answered, for `quorate status` on the member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenClient {
    pub name: String,
    pub addr: SocketAddr,
    /// When it last asked, unix seconds.
    pub last_seen: u64,
}

/// How long a client is remembered after its last ask.
pub const SEEN_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The clients a member answered recently (pure; owned by the gossip task).
#[derive(Debug, Default)]
pub struct ClientsSeen {
    by_name: HashMap<String, SeenClient>,
}

impl ClientsSeen {
    /// `name` at `addr` was answered at `now` (unix seconds); the list as it is now, sorted
    /// by name, without clients silent for longer than [`SEEN_WINDOW`].
    pub fn record(&mut self, name: &str, addr: SocketAddr, now: u64) -> Vec<SeenClient> {
        let window = SEEN_WINDOW.as_secs();
        self.by_name.retain(|_, c| c.last_seen + window >= now);
        if self.by_name.len() < MAX_REMEMBERED || self.by_name.contains_key(name) {
            self.by_name.insert(
                name.to_owned(),
                SeenClient {
                    name: name.to_owned(),
                    addr,
                    last_seen: now,
                },
            );
        }
        let mut list: Vec<SeenClient> = self.by_name.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

/// The clients of `seen` that asked within [`SEEN_WINDOW`] of `now`.
pub fn recent(seen: &[SeenClient], now: u64) -> Vec<SeenClient> {
    seen.iter()
        .filter(|c| c.last_seen + SEEN_WINDOW.as_secs() >= now)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
