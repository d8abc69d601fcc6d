//! The foca identity of an agent: its gossip address, its name, and a "bump" that grows with
//! every start. A restarted agent comes back with a higher bump, which wins the address
//! conflict against its previous incarnation, so it rejoins at once instead of waiting for the
//! cluster to forget it; its metadata versions start from it too. The bump is the clock in
//! milliseconds but never less than the last one plus one (kept in `state_dir/incarnation`),
//! so a clock that went backwards cannot make peers prefer the old incarnation.
//! `renew()` bumps it again when the cluster declared us down.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use crate::fsutil;

use serde::{Deserialize, Serialize};

/// A gossip member.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub bump: u64,
}

/// The bump for this start: the clock in milliseconds, but always above the last start's
/// (recorded in `state_dir/incarnation`).
pub fn next_bump(state_dir: &Path) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let path = state_dir.join("incarnation");
    let last = fsutil::read_optional(&path)
        .ok()
        .flatten()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let bump = now.max(last + 1);
    if let Err(e) = fsutil::atomic_write(&path, bump.to_string().as_bytes(), fsutil::MODE_PUBLIC) {
        tracing::warn!(error = %e, "cannot record the gossip incarnation");
    }
    bump
}

impl NodeId {
    /// This agent's identity for this start.
    pub fn new(name: &str, addr: SocketAddr, bump: u64) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            bump,
        }
    }

    /// A placeholder for an agent known only by address (a `join` target). foca accepts an
    /// announce addressed to any identity with the receiver's address.
    pub fn placeholder(addr: SocketAddr) -> Self {
        Self {
            name: String::new(),
            addr,
            bump: 0,
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.bump)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            name: self.name.clone(),
            addr: self.addr,
            bump: self.bump.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn bumps_grow_even_when_the_clock_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let far_future = u64::MAX / 2;
        std::fs::write(dir.path().join("incarnation"), far_future.to_string()).unwrap();
        assert_eq!(next_bump(dir.path()), far_future + 1);
        assert_eq!(next_bump(dir.path()), far_future + 2);
        let fresh = tempfile::tempdir().unwrap();
        let a = next_bump(fresh.path());
        assert!(next_bump(fresh.path()) > a);
    }

    #[test]
    fn renewed_identity_wins() {
        let a = NodeId::new("a", "127.0.0.1:7946".parse().unwrap(), 5);
        let b = a.renew().unwrap();
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        // A placeholder never wins against a real identity.
        assert!(a.win_addr_conflict(&NodeId::placeholder(a.addr)));
    }
}
