//! The gossip envelopes of every join token the agent accepts (see [`crate::keyring`]):
//! datagrams are sealed with the primary token's and opened with any accepted token's, so
//! members keep hearing each other while a token rotation moves them one step at a time.

use super::envelope::{Envelope, OpenError};
use crate::keyring::Keyring;
use crate::token::KeyPurpose;

/// One token's envelopes.
struct Set {
    /// Version 1, for agents of the release before the stamp (see [`super::compat`]).
    legacy: Envelope,
    stamped: Envelope,
    /// The client channel under the join token's key (a client given the join token).
    client: Envelope,
}

/// The envelopes of a ring, the primary's first.
pub(super) struct Seals {
    sets: Vec<Set>,
}

impl Seals {
    pub(super) fn new(ring: &Keyring) -> Self {
        let sets = ring
            .keys(KeyPurpose::Gossip)
            .iter()
            .map(|key| Set {
                legacy: Envelope::new(key),
                stamped: Envelope::stamped(key),
                client: Envelope::client(key),
            })
            .collect();
        Self { sets }
    }

    fn primary(&self) -> &Set {
        // A ring always has a primary.
        &self.sets[0]
    }

    /// Seals `payload` with the primary token, stamped or in the legacy format.
    pub(super) fn seal(&self, stamped: bool, payload: &[u8]) -> Vec<u8> {
        let set = self.primary();
        if stamped {
            set.stamped.seal(payload)
        } else {
            set.legacy.seal(payload)
        }
    }

    /// Opens `datagram` with the first accepted token it opens with. When none does, the most
    /// telling error: stale (it did authenticate) before anything else.
    pub(super) fn open(&self, stamped: bool, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut worst = None;
        for set in &self.sets {
            let envelope = if stamped { &set.stamped } else { &set.legacy };
            match envelope.open(datagram) {
                Ok(payload) => return Ok(payload),
                Err(e @ OpenError::Stale { .. }) => return Err(e),
                Err(e) => {
                    worst.get_or_insert(e);
                }
            }
        }
        Err(worst.unwrap_or(OpenError::Unauthenticated))
    }

    /// The client-channel envelopes of every accepted token.
    pub(super) fn clients(&self) -> impl Iterator<Item = &Envelope> {
        self.sets.iter().map(|s| &s.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::JoinToken;

    #[test]
    fn sealed_with_the_primary_opened_with_any_accepted_token() {
        let (old, new) = (JoinToken::generate(), JoinToken::generate());
        let both = Seals::new(&Keyring::new(old.clone(), vec![new.clone()]));
        let only_new = Seals::new(&Keyring::single(new.clone()));
        let only_old = Seals::new(&Keyring::single(old.clone()));
        for stamped in [true, false] {
            let from_new = only_new.seal(stamped, b"hello");
            assert_eq!(both.open(stamped, &from_new).unwrap(), b"hello");
            let from_both = both.seal(stamped, b"hi");
            assert_eq!(only_old.open(stamped, &from_both).unwrap(), b"hi");
            assert_eq!(
                only_new.open(stamped, &from_both),
                Err(OpenError::Unauthenticated),
                "sealed with the primary (old) only"
            );
        }
        let stranger = Seals::new(&Keyring::single(JoinToken::generate()));
        assert!(both.open(true, &stranger.seal(true, b"x")).is_err());
        let client = only_new.clients().next().unwrap().seal(b"ask");
        assert!(both.clients().any(|e| e.open(&client).is_ok()));
        assert!(only_old.clients().all(|e| e.open(&client).is_err()));
    }
}
