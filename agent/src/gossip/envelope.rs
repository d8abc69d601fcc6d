//! The gossip envelope: every datagram is sealed ([`crate::aead`]) under a key derived from
//! the join token. Receivers open it before anything else looks at the bytes, so a packet from
//! someone without the token is dropped (and counted) before it reaches foca's decoder.
//!
//! Layout: `version (1) | nonce (12) | ciphertext | tag (16)`; the version byte is the
//! associated data, so it cannot be changed without failing authentication. Members' gossip
//! is version 3, which adds the sender's clock, `version (1) | sent at, ms (8) | nonce |
//! ciphertext | tag`, both authenticated: a datagram more than [`MAX_AGE`] away from the
//! receiver's clock is dropped, so a recorded datagram cannot be replayed later (say, to bring
//! back a member that left, with its old metadata). Version 1 is the same without the clock,
//! as agents before it sent it (see [`super::compat`]). Client-mode agents' asks and their
//! answers are version 2 ([`super::directory`]). None can pass for another.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::aead::{self, Aead};

const VERSION: u8 = 1;
/// Members' gossip with the sender's clock.
pub const STAMPED_VERSION: u8 = 3;
/// The oldest (or most future) stamped datagram accepted: the clock skew certificates allow.
pub const MAX_AGE: Duration = crate::pki::CLOCK_SKEW_ALLOWANCE;
const STAMP_LEN: usize = 8;

/// Bytes an envelope adds to a payload (the stamp adds [`STAMP_LEN`] more).
pub const OVERHEAD: usize = 1 + STAMP_LEN + aead::OVERHEAD;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("datagram too short to be a quorate envelope")]
    Truncated,
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    #[error("authentication failed (wrong join token or tampered datagram)")]
    Unauthenticated,
    #[error(
        "sent {age_secs} s away from this host's clock (a replay, or clocks apart: synchronise \
         them with NTP)"
    )]
    Stale { age_secs: u64 },
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

    /// Members' gossip, stamped with the sender's clock.
    pub fn stamped(key: &[u8; 32]) -> Self {
        Self::with_version(key, STAMPED_VERSION)
    }

    fn with_version(key: &[u8; 32], version: u8) -> Self {
        Self {
            aead: Aead::new(key),
            version,
        }
    }

    fn header_len(&self) -> usize {
        if self.version == STAMPED_VERSION {
            1 + STAMP_LEN
        } else {
            1
        }
    }

    /// Encrypts and authenticates `payload` (stamped with this host's clock).
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        self.seal_at(payload, now_ms())
    }

    /// [`Self::seal`] with the clock given.
    pub fn seal_at(&self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.push(self.version);
        if self.version == STAMPED_VERSION {
            out.extend_from_slice(&now_ms.to_be_bytes());
        }
        let sealed = self.aead.seal(&out, payload);
        out.extend_from_slice(&sealed);
        out
    }

    /// Authenticates and decrypts a datagram (and checks its stamp against this host's clock).
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open_at(datagram, now_ms())
    }

    /// [`Self::open`] with the clock given.
    pub fn open_at(&self, datagram: &[u8], now_ms: u64) -> Result<Vec<u8>, OpenError> {
        let header = self.header_len();
        match datagram.first() {
            None => return Err(OpenError::Truncated),
            Some(v) if *v != self.version => return Err(OpenError::UnknownVersion(*v)),
            Some(_) => {}
        }
        if datagram.len() < header + aead::OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let payload = self
            .aead
            .open(&datagram[..header], &datagram[header..])
            .map_err(|_| OpenError::Unauthenticated)?;
        if self.version == STAMPED_VERSION {
            let mut stamp = [0u8; STAMP_LEN];
            stamp.copy_from_slice(&datagram[1..header]);
            let age_ms = now_ms.abs_diff(u64::from_be_bytes(stamp));
            if age_ms > MAX_AGE.as_millis() as u64 {
                return Err(OpenError::Stale {
                    age_secs: age_ms / 1000,
                });
            }
        }
        Ok(payload)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = Envelope::new(&[7; 32]);
        let sealed = e.seal(b"hello foca");
        assert_eq!(sealed.len(), 10 + 1 + aead::OVERHEAD);
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
    fn stamped_datagrams_are_fresh_or_dropped() {
        let e = Envelope::stamped(&[7; 32]);
        let t = 1_800_000_000_000u64;
        let sealed = e.seal_at(b"ping", t);
        assert_eq!(sealed.len(), 4 + OVERHEAD);
        assert_eq!(sealed[0], STAMPED_VERSION);
        assert_eq!(e.open_at(&sealed, t).unwrap(), b"ping");
        let max = MAX_AGE.as_millis() as u64;
        assert!(e.open_at(&sealed, t + max).is_ok());
        assert!(
            e.open_at(&sealed, t - max).is_ok(),
            "a sender whose clock is ahead"
        );
        assert_eq!(
            e.open_at(&sealed, t + max + 1000),
            Err(OpenError::Stale { age_secs: 301 })
        );
        assert!(matches!(
            e.open_at(&sealed, t - max - 1000),
            Err(OpenError::Stale { .. })
        ));
        // The stamp is authenticated: moving it forward breaks the datagram.
        let mut moved = sealed.clone();
        moved[8] ^= 0x10;
        assert_eq!(e.open_at(&moved, t), Err(OpenError::Unauthenticated));
        // Stamped and unstamped gossip never pass for each other.
        let legacy = Envelope::new(&[7; 32]);
        assert_eq!(legacy.open(&sealed), Err(OpenError::UnknownVersion(3)));
        assert_eq!(
            e.open_at(&legacy.seal(b"ping"), t),
            Err(OpenError::UnknownVersion(1))
        );
        let mut relabelled = sealed.clone();
        relabelled[0] = 1;
        assert!(legacy.open(&relabelled).is_err());
        let e2 = Envelope::stamped(&[8; 32]);
        assert_eq!(e2.open_at(&sealed, t), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn truncated_and_unknown_version() {
        let e = Envelope::new(&[7; 32]);
        let sealed = e.seal(b"payload");
        assert_eq!(e.open(&sealed[..aead::OVERHEAD]), Err(OpenError::Truncated));
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
                prop_assert_eq!(sealed.len(), payload.len() + 1 + aead::OVERHEAD);
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
