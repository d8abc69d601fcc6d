//! The foca identity of an agent: its gossip address, its name, and a "bump" set from the
//! clock at start. A restarted agent comes back with a higher bump, which wins the address
//! conflict against its previous incarnation, so it rejoins at once instead of waiting for the
//! cluster to forget it. `renew()` bumps it again when the cluster declared us down.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A gossip member.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl NodeId {
    /// A fresh identity whose bump is the current time in milliseconds.
    pub fn new(name: &str, addr: SocketAddr) -> Self {
        let bump = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
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
    fn renewed_identity_wins() {
        let a = NodeId::new("a", "127.0.0.1:7946".parse().unwrap());
        let b = a.renew().unwrap();
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        // A placeholder never wins against a real identity.
        assert!(a.win_addr_conflict(&NodeId::placeholder(a.addr)));
    }
}
