//! The CA as stored in etcd (`/quorate/ca`): the certificate in clear and the private key
//! sealed, with the CA's hash as associated data. Two keys seal it:
//! - at first, a key derived from the join token (label "quorate ca seal"): the seed stores it
//!   so before any other member exists;
//! - once every voter holds the CA seal secret ([`super::seal_secret`]), a key derived from
//!   that secret; `seal_id` then names the secret (its fingerprint). The join token alone no
//!   longer opens it: only the voters' agents, which keep the secret on disk and never in
//!   etcd, can ([`super::reseal`] does the switch).
//!
//! Whoever reads etcd without either (any client certificate could, before RBAC) gets nothing.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::seal_secret::SealSecret;
use crate::aead::Aead;
use crate::pki::{CaHash, CertificateAuthority};

/// The stored form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCa {
    pub cert_pem: String,
    /// base64 of `nonce | sealed PKCS#8 PEM | tag`.
    pub sealed_key: String,
    /// The fingerprint of the CA seal secret the key is sealed with; absent: the join token's
    /// key (the form older agents wrote and read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_id: Option<String>,
}

/// Why the stored CA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error("the CA stored in etcd is malformed: {0}")]
    Malformed(String),
    #[error(
        "the CA key stored in etcd does not open with this join token (another cluster's token?)"
    )]
    WrongToken,
    #[error("the CA stored in etcd is not usable: {0}")]
    Invalid(String),
    #[error(
        "the CA stored in etcd is sealed with the CA seal secret {id}, which this host does not \
         hold (pki/ca-seal-secret; voters get it from another member's agent)"
    )]
    SecretNotHeld { id: String },
}

impl SealedCa {
    /// Seals `ca` with the join token's key `key`.
    pub fn seal(ca: &CertificateAuthority, key: &[u8; 32]) -> Self {
        let aead = Aead::new(key);
        let sealed = aead.seal(ca.hash().as_bytes(), ca.key_pem().as_bytes());
        Self {
            cert_pem: ca.cert_pem().to_owned(),
            sealed_key: base64::engine::general_purpose::STANDARD.encode(sealed),
            seal_id: None,
        }
    }

    /// Seals `ca` with a key derived from the CA seal secret.
    pub fn seal_with_secret(ca: &CertificateAuthority, secret: &SealSecret) -> Self {
        Self {
            seal_id: Some(secret.id()),
            ..Self::seal(ca, &secret.ca_key())
        }
    }

    /// Whether it is sealed with the CA seal secret `id`.
    pub fn sealed_with(&self, id: &str) -> bool {
        self.seal_id.as_deref() == Some(id)
    }

    /// Opens the key: with the secret when it is sealed with one (which `secret` must be),
    /// else with the join token's key `token_key`.
    pub fn open(
        &self,
        token_key: &[u8; 32],
        secret: Option<&SealSecret>,
    ) -> Result<CertificateAuthority, UnsealError> {
        match &self.seal_id {
            None => self.unseal(token_key),
            Some(id) => match secret.filter(|s| &s.id() == id) {
                Some(secret) => self.unseal(&secret.ca_key()),
                None => Err(UnsealError::SecretNotHeld { id: id.clone() }),
            },
        }
    }

    /// The CA's hash (from the certificate in clear).
    pub fn hash(&self) -> Result<CaHash, UnsealError> {
        CaHash::of_cert_pem(&self.cert_pem).map_err(|e| UnsealError::Malformed(e.to_string()))
    }

    /// Opens the key with `key` and rebuilds the CA.
    fn unseal(&self, key: &[u8; 32]) -> Result<CertificateAuthority, UnsealError> {
        let hash = self.hash()?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&self.sealed_key)
            .map_err(|e| UnsealError::Malformed(e.to_string()))?;
        let key_pem = Aead::new(key)
            .open(hash.as_bytes(), &sealed)
            .map_err(|_| UnsealError::WrongToken)?;
        let key_pem =
            String::from_utf8(key_pem).map_err(|e| UnsealError::Malformed(e.to_string()))?;
        CertificateAuthority::from_pem(&self.cert_pem, &key_pem)
            .map_err(|e| UnsealError::Invalid(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &[u8]) -> Result<Self, UnsealError> {
        serde_json::from_slice(text).map_err(|e| UnsealError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("t", SystemTime::now(), Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn seals_and_unseals_with_the_token_key_only() {
        let ca = ca();
        let sealed = SealedCa::seal(&ca, &[9; 32]);
        assert!(
            !sealed.to_json().contains("PRIVATE KEY"),
            "the key is in clear"
        );
        assert!(
            !sealed.to_json().contains("seal_id"),
            "the old form changed"
        );
        let back = SealedCa::from_json(sealed.to_json().as_bytes()).unwrap();
        let opened = back.open(&[9; 32], None).unwrap();
        assert_eq!(opened.hash(), ca.hash());
        assert_eq!(opened.key_pem(), ca.key_pem());
        assert!(matches!(
            back.open(&[8; 32], Some(&SealSecret::generate())),
            Err(UnsealError::WrongToken)
        ));
    }

    #[test]
    fn sealed_with_the_secret_only_the_secret_opens_it() {
        let ca = ca();
        let secret = SealSecret::generate();
        let sealed = SealedCa::seal_with_secret(&ca, &secret);
        assert!(sealed.sealed_with(&secret.id()));
        let back = SealedCa::from_json(sealed.to_json().as_bytes()).unwrap();
        assert_eq!(
            back.open(&[9; 32], Some(&secret)).unwrap().key_pem(),
            ca.key_pem()
        );
        // Without the secret, or with another one: named, not a wrong token.
        for held in [None, Some(SealSecret::generate())] {
            match back.open(&[9; 32], held.as_ref()) {
                Err(UnsealError::SecretNotHeld { id }) => assert_eq!(id, secret.id()),
                other => panic!("{:?}", other.map(|c| c.hash())),
            }
        }
        // Stripping the fingerprint does not let the token's key open it.
        let mut stripped = back.clone();
        stripped.seal_id = None;
        for key in [[9; 32], [0; 32]] {
            assert!(matches!(
                stripped.open(&key, Some(&secret)),
                Err(UnsealError::WrongToken)
            ));
        }
    }

    #[test]
    fn a_key_cannot_be_moved_under_another_certificate() {
        let (a, b) = (ca(), ca());
        let mut swapped = SealedCa::seal(&a, &[9; 32]);
        swapped.cert_pem = b.cert_pem().to_owned();
        assert!(matches!(
            swapped.open(&[9; 32], None),
            Err(UnsealError::WrongToken)
        ));
        assert!(SealedCa::from_json(b"{").is_err());
    }
}
