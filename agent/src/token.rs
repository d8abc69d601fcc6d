//! The join token: the one shared secret of a quorate cluster. Every other secret that agents
//! share is derived from it with HKDF-SHA256 under a distinct label, so the gossip key, the
//! agent-API proof key and the key that seals the CA in etcd are independent of each other:
//! learning one (say, from a bug in one protocol) does not reveal the others or the token.
//!
//! A token may also be given in its pinned form, `qrt1:<CA hash>:<token>` (what `quorate token
//! show` prints on a member, like k3s' secure tokens): the agent then pins the cluster CA by
//! that hash without `ca_hash` in its config. Keys come from the token part only, so both
//! forms of one token open the same cluster.

use std::fmt;

use base64::Engine;
use ring::hkdf;

/// Prefix of generated tokens; makes them recognisable in configs and secret scanners.
pub const TOKEN_PREFIX: &str = "qrt1_";
/// Prefix of generated client tokens (`quorate token create --client`): they admit
/// client-mode hosts only, and are random, never derived from the join token.
pub const CLIENT_TOKEN_PREFIX: &str = "qrc1_";
/// Shortest token accepted: 32 characters. A generated token has 256 bits of entropy.
pub const MIN_TOKEN_LEN: usize = 32;
/// The least entropy a token is estimated to carry (see [`estimated_bits`]).
pub const MIN_TOKEN_BITS: u32 = 128;
/// Prefix of the pinned form: `qrt1:<CA hash>:<token>`.
pub const PINNED_PREFIX: &str = "qrt1:";

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
    /// Seals the client token stored in etcd (derived from the join token: members read it).
    ClientTokenSeal,
    /// Seals the copy of the CA seal secret in a snapshot's manifest, so that whoever restores
    /// the snapshot with the cluster's token can open the CA in it, and nobody else.
    SnapshotSeal,
    /// Seals the next join token for holders of this one during a rotation
    /// (see [`crate::rotation`]).
    RotationSeal,
    /// Names the token in logs, status and etcd records without revealing it.
    Fingerprint,
}

impl KeyPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::Gossip => b"quorate gossip aead",
            KeyPurpose::ApiProof => b"quorate api proof",
            KeyPurpose::CaSeal => b"quorate ca seal",
            KeyPurpose::ClientTokenSeal => b"quorate client token seal",
            KeyPurpose::SnapshotSeal => b"quorate snapshot seal secret",
            KeyPurpose::RotationSeal => b"quorate token rotation seal",
            KeyPurpose::Fingerprint => b"quorate token fingerprint",
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
    #[error(
        "the join token is too easy to guess (about {bits} bits, at least {MIN_TOKEN_BITS} \
         needed: it repeats characters or uses few kinds of them); generate one with `quorate \
         token generate`"
    )]
    Guessable { bits: u32 },
    #[error(
        "the pinned join token must read qrt1:sha256:<64 hex digits>:<token> (as `quorate token \
         show` prints it): {reason}"
    )]
    BadPinnedForm { reason: String },
}

/// A rough, conservative estimate of the entropy of `secret` in bits: its length times the
/// bits per character of the smallest alphabet its character classes fit in, but no more
/// than its distinct characters allow (a long run of one letter is worth almost nothing).
pub fn estimated_bits(secret: &str) -> u32 {
    let chars: Vec<char> = secret.chars().collect();
    let has = |f: fn(&char) -> bool| chars.iter().any(f);
    let mut alphabet = 0u32;
    if has(char::is_ascii_lowercase) {
        alphabet += 26;
    }
    if has(char::is_ascii_uppercase) {
        alphabet += 26;
    }
    if has(char::is_ascii_digit) {
        alphabet += 10;
    }
    if has(|c| !c.is_ascii_alphanumeric()) {
        alphabet += 32;
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let alphabet = alphabet.min(distinct.len() as u32 * 2).max(1);
    let per_char = (alphabet as f64).log2();
    (chars.len() as f64 * per_char) as u32
}

/// A validated join token. Its `Debug` and `Display` never print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    /// A new random token: the prefix and 32 random bytes, base64url without padding.
    pub fn generate() -> Self {
        Self::generate_with(TOKEN_PREFIX)
    }

    /// A new random client token (see [`CLIENT_TOKEN_PREFIX`]).
    pub fn generate_client() -> Self {
        Self::generate_with(CLIENT_TOKEN_PREFIX)
    }

    fn generate_with(prefix: &str) -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Whether this is a client token (by its prefix; the server decides what it admits).
    pub fn is_client(&self) -> bool {
        self.0.starts_with(CLIENT_TOKEN_PREFIX)
    }

    /// Accepts a token given by the operator. Surrounding whitespace (a trailing newline in a
    /// token file) is ignored.
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        Self::parse_pinned(raw).map(|(token, _)| token)
    }

    /// Accepts either form; the CA hash of the pinned form comes back with it.
    pub fn parse_pinned(raw: &str) -> Result<(Self, Option<crate::pki::CaHash>), TokenError> {
        let raw = raw.trim();
        let Some(rest) = raw.strip_prefix(PINNED_PREFIX) else {
            return Self::parse_plain(raw).map(|t| (t, None));
        };
        let bad = |reason: &str| TokenError::BadPinnedForm {
            reason: reason.to_owned(),
        };
        // "sha256:<hex>:<token>"; the token itself may contain ':'.
        let mut parts = rest.splitn(3, ':');
        let (Some(algo), Some(hex), Some(token)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it has fewer than three parts"));
        };
        let pin: crate::pki::CaHash = format!("{algo}:{hex}")
            .parse()
            .map_err(|e: crate::pki::PkiError| bad(&e.to_string()))?;
        Ok((Self::parse_plain(token)?, Some(pin)))
    }

    fn parse_plain(raw: &str) -> Result<Self, TokenError> {
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
        let secret = [TOKEN_PREFIX, CLIENT_TOKEN_PREFIX]
            .iter()
            .find_map(|p| token.strip_prefix(p))
            .unwrap_or(token);
        let bits = estimated_bits(secret);
        if bits < MIN_TOKEN_BITS {
            return Err(TokenError::Guessable { bits });
        }
        Ok(Self(token.to_owned()))
    }

    /// The pinned form of this token for the CA `ca`.
    pub fn pinned(&self, ca: &crate::pki::CaHash) -> String {
        format!("{PINNED_PREFIX}{ca}:{}", self.0)
    }

    /// The secret itself, for `quorate token generate` and for writing configs in tests.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A public name of this token: 12 hex digits of a key derived for the purpose. It says
    /// which token is in force without revealing anything of it.
    pub fn fingerprint(&self) -> String {
        self.derive(KeyPurpose::Fingerprint)[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
    fn client_tokens_are_random_and_unrelated_to_the_join_token() {
        let join = JoinToken::generate();
        let client = JoinToken::generate_client();
        assert!(client.is_client() && !join.is_client());
        assert_eq!(JoinToken::parse(client.expose()).unwrap(), client);
        assert_ne!(
            client.derive(KeyPurpose::ApiProof),
            join.derive(KeyPurpose::ApiProof)
        );
        assert_ne!(JoinToken::generate_client(), client);
        // The seal key is the join token's: members (who hold it) read the client token.
        assert_ne!(
            join.derive(KeyPurpose::ClientTokenSeal),
            join.derive(KeyPurpose::CaSeal)
        );
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
    fn guessable_tokens_are_refused() {
        for weak in [
            "qrt1_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababababababababab",
            "00000000000000000000000000000000000000000000000",
            "12345678901234567890123456789012",
            "passwordpasswordpasswordpassword",
        ] {
            assert!(
                matches!(JoinToken::parse(weak), Err(TokenError::Guessable { .. })),
                "{weak}: {:?}",
                JoinToken::parse(weak)
            );
        }
        let e = JoinToken::parse("passwordpasswordpasswordpassword").unwrap_err();
        assert!(e.to_string().contains("quorate token generate"), "{e}");
        for _ in 0..200 {
            let t = JoinToken::generate();
            assert!(estimated_bits(&t.expose()[TOKEN_PREFIX.len()..]) >= 200);
        }
        assert!(JoinToken::parse("qrt1_0123456789abcdefghijklmnopqrstuv").is_ok());
    }

    #[test]
    fn the_pinned_form_carries_the_ca_hash_and_the_same_keys() {
        let t = JoinToken::generate();
        let ca: crate::pki::CaHash = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let pinned = t.pinned(&ca);
        assert!(pinned.starts_with("qrt1:sha256:abab"), "{pinned}");
        let (back, pin) = JoinToken::parse_pinned(&format!("{pinned}\n")).unwrap();
        assert_eq!(back, t);
        assert_eq!(pin, Some(ca));
        assert_eq!(
            JoinToken::parse(&pinned)
                .unwrap()
                .derive(KeyPurpose::Gossip),
            t.derive(KeyPurpose::Gossip)
        );
        assert_eq!(JoinToken::parse_pinned(t.expose()).unwrap().1, None);
        for bad in ["qrt1:sha256:abcd:", "qrt1:md5:00:x", "qrt1:onlyone"] {
            assert!(JoinToken::parse_pinned(bad).is_err(), "{bad}");
        }
        let short = JoinToken::parse_pinned(&format!("qrt1:sha256:{}:short", "ab".repeat(32)));
        assert_eq!(short, Err(TokenError::TooShort { len: 5 }));
    }

    #[test]
    fn derived_keys_are_independent_and_stable() {
        let t = JoinToken::parse("qrt1_0123456789abcdefghijklmnopqrstuv").unwrap();
        let g = t.derive(KeyPurpose::Gossip);
        assert_eq!(g, t.derive(KeyPurpose::Gossip));
        assert_ne!(g, t.derive(KeyPurpose::ApiProof));
        assert_ne!(g, t.derive(KeyPurpose::CaSeal));
        let all = [
            KeyPurpose::Gossip,
            KeyPurpose::ApiProof,
            KeyPurpose::CaSeal,
            KeyPurpose::ClientTokenSeal,
            KeyPurpose::SnapshotSeal,
            KeyPurpose::RotationSeal,
            KeyPurpose::Fingerprint,
        ];
        let keys: std::collections::HashSet<[u8; 32]> = all.iter().map(|p| t.derive(*p)).collect();
        assert_eq!(keys.len(), all.len(), "every purpose has its own key");
        assert_eq!(t.fingerprint().len(), 12);
        assert_eq!(t.fingerprint(), t.fingerprint());
        let other = JoinToken::parse("qrt1_0123456789abcdefghijklmnopqrstuw").unwrap();
        assert_ne!(g, other.derive(KeyPurpose::Gossip));
        assert_ne!(t.fingerprint(), other.fingerprint());
        assert_ne!(g, [0u8; 32]);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = JoinToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
