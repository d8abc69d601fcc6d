//! The node's own key pair. It is generated on the node and never leaves it: the node sends a
//! CSR to the issuer and gets back a certificate for this key.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::{PkiError, Result};

/// An ECDSA P-256 key pair.
pub struct NodeKey(KeyPair);

impl NodeKey {
    /// Generates a fresh key.
    pub fn generate() -> Result<Self> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map(Self)
            .map_err(|e| PkiError::KeyGen(e.to_string()))
    }

    /// Loads a PKCS#8 PEM key; anything but ECDSA P-256 is rejected.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let bad = |reason: String| PkiError::BadKey {
            what: "node key",
            reason,
        };
        let key = KeyPair::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(bad(format!("it is a {:?} key", key.algorithm())));
        }
        Ok(Self(key))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// A PEM CSR carrying only `common_name`; the CA decides everything else.
    pub fn csr_pem(&self, common_name: &str) -> Result<String> {
        let issue = |e: rcgen::Error| PkiError::Issue {
            name: common_name.to_owned(),
            reason: format!("cannot build the CSR: {e}"),
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .serialize_request(&self.0)
            .and_then(|csr| csr.pem())
            .map_err(issue)
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(ECDSA P-256, secret elided)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let key = NodeKey::generate().unwrap();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(NodeKey::from_pem(&pem).unwrap().to_pem(), pem);
    }

    #[test]
    fn rejects_other_keys() {
        assert!(NodeKey::from_pem("garbage").is_err());
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let err = NodeKey::from_pem(&p384.serialize_pem()).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn csr_carries_common_name() {
        let key = NodeKey::generate().unwrap();
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem("n1").unwrap()).unwrap();
        let cn = csr.params.distinguished_name.get(&DnType::CommonName);
        assert_eq!(cn, Some(&rcgen::DnValue::Utf8String("n1".into())));
        assert!(csr.params.subject_alt_names.is_empty());
    }
}
