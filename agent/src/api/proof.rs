//! Proof of the join token in agent-API requests: an HMAC-SHA256 over the exact request body
//! with a key derived from the token. It is checked on the raw bytes before anything parses
//! them, reveals nothing about the token to the server or an observer, and binds the proof to
//! this CSR (a captured proof cannot be reused for another request body).

use ring::hmac;

/// HTTP header carrying the proof, hex-encoded.
pub const PROOF_HEADER: &str = "x-quorate-proof";

/// Computes the proof for `body`.
pub fn sign(key: &[u8; 32], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hex::encode(hmac::sign(&key, body).as_ref())
}

/// Checks a proof in constant time.
pub fn verify(key: &[u8; 32], body: &[u8], proof_hex: &str) -> bool {
    let Ok(tag) = hex::decode(proof_hex.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, body, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_key_and_body() {
        let p = sign(&[1; 32], b"body");
        assert!(verify(&[1; 32], b"body", &p));
        assert!(!verify(&[2; 32], b"body", &p));
        assert!(!verify(&[1; 32], b"body2", &p));
        assert!(!verify(&[1; 32], b"body", "zz"));
        assert!(!verify(&[1; 32], b"body", ""));
        assert!(!verify(&[1; 32], b"body", &p[..10]));
    }
}
