//! Authenticated encryption with a key derived from the join token: ChaCha20-Poly1305 with a
//! random 96-bit nonce, sealed as `nonce | ciphertext | tag`. Used for every gossip datagram
//! and for the CA key stored in etcd; the associated data binds a sealed value to its context
//! (the envelope version, the CA certificate).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes sealing adds to a plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Opening failed: wrong key, wrong associated data, or tampered or truncated input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key, or tampered or truncated data)")]
pub struct Unauthenticated;

/// One key.
pub struct Aead {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Aead {
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is exactly what CHACHA20_POLY1305 takes, so this cannot fail.
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("32-byte key for ChaCha20-Poly1305"));
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts and authenticates `plaintext` together with `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random 96-bit nonces: collisions become likely only after ~2^48 messages per key.
        if self.rng.fill(&mut nonce).is_err() {
            nonce = rand::random();
        }
        let mut body = plaintext.to_vec();
        // seal_in_place_append_tag only fails if the input exceeds ChaCha's 256 GiB limit.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        );
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Authenticates and decrypts what [`Aead::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Unauthenticated> {
        if sealed.len() < OVERHEAD {
            return Err(Unauthenticated);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[..NONCE_LEN]);
        let mut body = sealed[NONCE_LEN..].to_vec();
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| Unauthenticated)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let a = Aead::new(&[3; 32]);
        let sealed = a.seal(b"ctx", b"secret");
        assert_eq!(sealed.len(), 6 + OVERHEAD);
        assert_eq!(a.open(b"ctx", &sealed).unwrap(), b"secret");
        assert_eq!(a.open(b"other", &sealed), Err(Unauthenticated));
        assert_eq!(
            Aead::new(&[4; 32]).open(b"ctx", &sealed),
            Err(Unauthenticated)
        );
        assert_eq!(
            a.open(b"ctx", &sealed[..OVERHEAD - 1]),
            Err(Unauthenticated)
        );
        assert_ne!(a.seal(b"ctx", b"secret"), sealed);
    }
}
