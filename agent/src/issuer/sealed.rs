//! The CA as stored in etcd (`/quorate/ca`): the certificate in clear and the private key
//! sealed with a key derived from the join token (label "quorate ca seal"), with the CA's hash
//! as associated data. Whoever reads etcd without the token (any client certificate can) gets
//! nothing usable; whoever has the token can already obtain certificates anyway.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::aead::Aead;
use crate::pki::{CaHash, CertificateAuthority};

/// The stored form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCa {
    pub cert_pem: String,
    /// base64 of `nonce | sealed PKCS#8 PEM | tag`.
    pub sealed_key: String,
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
}

impl SealedCa {
    /// Seals `ca` with `key`.
    pub fn seal(ca: &CertificateAuthority, key: &[u8; 32]) -> Self {
        let aead = Aead::new(key);
        let sealed = aead.seal(ca.hash().as_bytes(), ca.key_pem().as_bytes());
        Self {
            cert_pem: ca.cert_pem().to_owned(),
            sealed_key: base64::engine::general_purpose::STANDARD.encode(sealed),
        }
    }

    /// The CA's hash (from the certificate in clear).
    pub fn hash(&self) -> Result<CaHash, UnsealError> {
        CaHash::of_cert_pem(&self.cert_pem).map_err(|e| UnsealError::Malformed(e.to_string()))
    }

    /// Opens the key with `key` and rebuilds the CA.
    pub fn unseal(&self, key: &[u8; 32]) -> Result<CertificateAuthority, UnsealError> {
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
        let back = SealedCa::from_json(sealed.to_json().as_bytes()).unwrap();
        let opened = back.unseal(&[9; 32]).unwrap();
        assert_eq!(opened.hash(), ca.hash());
        assert_eq!(opened.key_pem(), ca.key_pem());
        assert!(matches!(
            back.unseal(&[8; 32]),
            Err(UnsealError::WrongToken)
        ));
    }

    #[test]
    fn a_key_cannot_be_moved_under_another_certificate() {
        let (a, b) = (ca(), ca());
        let mut swapped = SealedCa::seal(&a, &[9; 32]);
        swapped.cert_pem = b.cert_pem().to_owned();
        assert!(matches!(
            swapped.unseal(&[9; 32]),
            Err(UnsealError::WrongToken)
        ));
        assert!(SealedCa::from_json(b"{").is_err());
    }
}
