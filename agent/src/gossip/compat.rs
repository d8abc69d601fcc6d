//! Which envelope to speak with whom while agents of two releases share a cluster (a rolling
//! `quorate restart` onto a new package). Agents before the stamped envelope send and accept
//! only version 1; this one sends version 3 ([`super::envelope`], with the sender's clock) to
//! every peer except those it has heard speak version 1, and accepts both until every live
//! peer has spoken version 3. From then on it is strict for the rest of its run: version 1 is
//! dropped (and counted), so no recorded datagram can be replayed at it. A fresh cluster of
//! this release is strict within seconds of forming.

use std::collections::HashSet;
use std::net::SocketAddr;

/// What this agent knows of its peers' envelopes (pure).
#[derive(Debug, Default)]
pub struct Compat {
    stamped: HashSet<SocketAddr>,
    legacy: HashSet<SocketAddr>,
    strict: bool,
}

impl Compat {
    /// A datagram from `from` opened; `stamped` says in which format.
    pub fn heard(&mut self, from: SocketAddr, stamped: bool) {
        if stamped {
            self.legacy.remove(&from);
            self.stamped.insert(from);
        } else {
            self.stamped.remove(&from);
            self.legacy.insert(from);
        }
    }

    /// Whether to send `dst` the stamped envelope.
    pub fn send_stamped(&self, dst: SocketAddr) -> bool {
        self.strict || !self.legacy.contains(&dst)
    }

    /// Whether version 1 datagrams are still accepted.
    pub fn accepts_legacy(&self) -> bool {
        !self.strict
    }

    #[cfg(test)]
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// Re-decides with the live peers' gossip addresses; true when it just became strict.
    pub fn update(&mut self, live: impl IntoIterator<Item = SocketAddr>) -> bool {
        if self.strict {
            return false;
        }
        let mut any = false;
        for addr in live {
            any = true;
            if !self.stamped.contains(&addr) {
                return false;
            }
        }
        self.strict = any;
        if any {
            // Nothing to remember any more: everyone gets the stamped envelope.
            self.stamped.clear();
            self.legacy.clear();
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 7946))
    }

    #[test]
    fn old_peers_get_the_old_envelope_until_everyone_speaks_the_new_one() {
        let mut c = Compat::default();
        // Unknown peers get the new envelope (a new cluster never speaks the old one).
        assert!(c.send_stamped(a(1)) && c.accepts_legacy());
        assert!(!c.update([]), "alone: nobody to judge by");
        c.heard(a(1), true);
        c.heard(a(2), false);
        assert!(c.send_stamped(a(1)));
        assert!(!c.send_stamped(a(2)), "an old agent gets the old envelope");
        assert!(!c.update([a(1), a(2)]));
        assert!(c.accepts_legacy());
        // a(2) restarts on the new release.
        c.heard(a(2), true);
        assert!(c.send_stamped(a(2)));
        assert!(!c.update([a(1), a(2), a(3)]), "a(3) has not spoken yet");
        c.heard(a(3), true);
        assert!(c.update([a(1), a(2), a(3)]));
        assert!(c.is_strict() && !c.accepts_legacy());
        // Strict for good: an old datagram from anyone changes nothing.
        c.heard(a(2), false);
        assert!(c.send_stamped(a(2)) && !c.accepts_legacy());
        assert!(!c.update([a(9)]));
    }
}
