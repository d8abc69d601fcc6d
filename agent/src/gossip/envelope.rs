//! The gossip envelope: every datagram is sealed ([`crate::aead`]) under a key derived from
//! the join token. Receivers open it before anything else looks at the bytes, so a packet from
//! someone without the token is dropped (and counted) before it reaches foca's decoder.
//!
//! Layout: `version (1) | nonce (12) | ciphertext | tag (16)`; the version byte is the
//! associated data, so it cannot be changed without failing authentication. Members' gossip
//! is version 1; client-mode agents' asks and their answers are version 2
//! ([`super::directory`]), so neither can pass for the other.

use crate::aead::{self, Aead};

const VERSION: u8 = 1;

/// Bytes an envelope adds to a payload.
pub const OVERHEAD: usize = 1 + aead::OVERHEAD;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("datagram too short to be a quorate envelope")]
    Truncated,
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("authentication failed (wrong join token or tampered datagram)")]
    Unauthenticated,
}

/// Seals and opens datagrams of one version with one key.
pub struct Envelope {
    aead: Aead,
    version: u8,
}

impl Envelope {
    /// Members' gossip.
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_version(key, VERSION)
    }

    /// The client channel ([`super::directory`]).
    pub fn client(key: &[u8; 32]) -> Self {
        Self::with_version(key, super::directory::CLIENT_VERSION)
    }

    fn with_version(key: &[u8; 32], version: u8) -> Self {
        Self {
            aead: Aead::new(key),
            version,
        }
    }

    /// Encrypts and authenticates `payload`.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.push(self.version);
        out.extend_from_slice(&self.aead.seal(&[self.version], payload));
        out
    }

    /// Authenticates and decrypts a datagram.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        if datagram.len() < OVERHEAD {
            return Err(OpenError::Truncated);
        }
        if datagram[0] != self.version {
            return Err(OpenError::UnknownVersion(datagram[0]));
        }
        self.aead
            .open(&[self.version], &datagram[1..])
            .map_err(|_| OpenError::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = Envelope::new(&[7; 32]);
        let sealed = e.seal(b"hello foca");
        assert_eq!(sealed.len(), 10 + OVERHEAD);
        assert_eq!(e.open(&sealed).unwrap(), b"hello foca");
        // Two seals of the same payload differ (fresh nonce).
        assert_ne!(e.seal(b"x"), e.seal(b"x"));
        assert_eq!(e.open(&e.seal(b"")).unwrap(), b"");
    }

    #[test]
    fn wrong_key_is_rejected() {
        let sealed = Envelope::new(&[7; 32]).seal(b"payload");
        assert_eq!(
            Envelope::new(&[8; 32]).open(&sealed),
            Err(OpenError::Unauthenticated)
        );
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let e = Envelope::new(&[7; 32]);
        let sealed = e.seal(b"payload");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(e.open(&t).is_err(), "flip at byte {i} was accepted");
        }
    }

    #[test]
    fn client_envelopes_and_member_envelopes_never_pass_for_each_other() {
        let member = Envelope::new(&[7; 32]);
        let client = Envelope::client(&[7; 32]);
        let sealed = client.seal(b"ask");
        assert_eq!(sealed[0], 2);
        assert_eq!(client.open(&sealed).unwrap(), b"ask");
        assert_eq!(member.open(&sealed), Err(OpenError::UnknownVersion(2)));
        assert_eq!(
            client.open(&member.seal(b"ping")),
            Err(OpenError::UnknownVersion(1))
        );
        // Relabelling the version byte fails authentication.
        let mut relabelled = sealed.clone();
        relabelled[0] = 1;
        assert_eq!(member.open(&relabelled), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn truncated_and_unknown_version() {
        let e = Envelope::new(&[7; 32]);
        let sealed = e.seal(b"payload");
        assert_eq!(e.open(&sealed[..OVERHEAD - 1]), Err(OpenError::Truncated));
        assert_eq!(
            e.open(&sealed[..sealed.len() - 1]),
            Err(OpenError::Unauthenticated)
        );
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert_eq!(e.open(&v2), Err(OpenError::UnknownVersion(2)));
        assert_eq!(e.open(&[]), Err(OpenError::Truncated));
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn every_sealed_payload_opens_with_its_key_only(
                payload in vec(any::<u8>(), 0..1400),
                key in any::<[u8; 32]>(),
                other in any::<[u8; 32]>(),
            ) {
                let e = Envelope::new(&key);
                let sealed = e.seal(&payload);
                prop_assert_eq!(sealed.len(), payload.len() + OVERHEAD);
                prop_assert_eq!(e.open(&sealed).unwrap(), payload);
                if other != key {
                    prop_assert_eq!(
                        Envelope::new(&other).open(&sealed),
                        Err(OpenError::Unauthenticated)
                    );
                }
            }

            #[test]
            fn any_changed_byte_is_refused(
                payload in vec(any::<u8>(), 0..600),
                at in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let e = Envelope::new(&[9; 32]);
                let mut sealed = e.seal(&payload);
                let i = at.index(sealed.len());
                sealed[i] ^= flip;
                prop_assert!(e.open(&sealed).is_err());
            }

            #[test]
            fn arbitrary_datagrams_are_dropped_without_panic(data in vec(any::<u8>(), 0..2000)) {
                prop_assert!(Envelope::new(&[9; 32]).open(&data).is_err());
            }
        }
    }
}
