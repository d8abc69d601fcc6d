//! The join token: the one shared secret of a quorate cluster. Every other secret that agents
//! share is derived from it with HKDF-SHA256 under a distinct label, so the gossip key, the
//! agent-API proof key and the key that seals the CA in etcd are independent of each other:
//! learning one (say, from a bug in one protocol) does not reveal the others or the token.

use std::fmt;

use base64::Engine;
use ring::hkdf;

/// Prefix of generated tokens; makes them recognisable in configs and secret scanners.
pub const TOKEN_PREFIX: &str = "qrt1_";
/// Shortest token accepted: 32 characters. A generated token has 256 bits of entropy.
pub const MIN_TOKEN_LEN: usize = 32;

const HKDF_SALT: &[u8] = b"quorate join token v1";

/// What a derived key is used for. Each purpose yields an independent 256-bit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// Encrypts and authenticates every gossip datagram.
    Gossip,
    /// Proves knowledge of the token in agent-API requests (HMAC).
    ApiProof,
    /// Seals the CA private key stored in etcd.
    CaSeal,
}

impl KeyPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::Gossip => b"quorate gossip aead",
            KeyPurpose::ApiProof => b"quorate api proof",
            KeyPurpose::CaSeal => b"quorate ca seal",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the join token is empty; generate one with `quorate token generate`")]
    Empty,
    #[error(
        "the join token is {len} characters long, fewer than {MIN_TOKEN_LEN}; \
         generate one with `quorate token generate`"
    )]
    TooShort { len: usize },
    #[error("the join token contains whitespace or control characters; copy it again exactly as `quorate token generate` printed it")]
    BadCharacters,
}

/// A validated join token. Its `Debug` and `Display` never print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    /// A new random token: the prefix and 32 random bytes, base64url without padding.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Accepts a token given by the operator. Surrounding whitespace (a trailing newline in a
    /// token file) is ignored.
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::BadCharacters);
        }
        let len = token.chars().count();
        if len < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len });
        }
        Ok(Self(token.to_owned()))
    }

    /// The secret itself, for `quorate token generate` and for writing configs in tests.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Derives the 256-bit key for `purpose`.
    pub fn derive(&self, purpose: KeyPurpose) -> [u8; 32] {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
        let prk = salt.extract(self.0.as_bytes());
        let info = [purpose.label()];
        let mut out = [0u8; 32];
        // expand() and fill() only fail when the requested length exceeds 255 * hash length.
        if let Ok(okm) = prk.expand(&info, hkdf::HKDF_SHA256) {
            let _ = okm.fill(&mut out);
        }
        out
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_valid_and_distinct() {
        let a = JoinToken::generate();
        let b = JoinToken::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(JoinToken::parse(a.expose()).unwrap(), a);
    }

    #[test]
    fn parse_rejects_bad_tokens() {
        assert_eq!(JoinToken::parse("  \n"), Err(TokenError::Empty));
        assert_eq!(
            JoinToken::parse("short"),
            Err(TokenError::TooShort { len: 5 })
        );
        assert_eq!(
            JoinToken::parse("aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbb"),
            Err(TokenError::BadCharacters)
        );
        // A trailing newline from a token file is fine.
        let t = JoinToken::generate();
        assert_eq!(JoinToken::parse(&format!("{}\n", t.expose())).unwrap(), t);
    }

    #[test]
    fn derived_keys_are_independent_and_stable() {
        let t = JoinToken::parse("qrt1_0123456789abcdefghijklmnopqrstuv").unwrap();
        let g = t.derive(KeyPurpose::Gossip);
        assert_eq!(g, t.derive(KeyPurpose::Gossip));
        assert_ne!(g, t.derive(KeyPurpose::ApiProof));
        assert_ne!(g, t.derive(KeyPurpose::CaSeal));
        let other = JoinToken::parse("qrt1_0123456789abcdefghijklmnopqrstuw").unwrap();
        assert_ne!(g, other.derive(KeyPurpose::Gossip));
        assert_ne!(g, [0u8; 32]);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = JoinToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
