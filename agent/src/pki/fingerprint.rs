//! The CA pin: SHA-256 over the CA certificate's SubjectPublicKeyInfo, written `sha256:<hex>`.
//! It is kubeadm's discovery hash format, so operators can compute it with openssl, and it pins
//! the key rather than the certificate, so re-issuing the CA with the same key keeps the pin.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::pem::{first_cert_der, parse_x509};
use super::{PkiError, Result};

const PREFIX: &str = "sha256:";

/// SHA-256 of a CA certificate's SubjectPublicKeyInfo DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaHash([u8; 32]);

impl CaHash {
    /// Hash of the first certificate in `pem`.
    pub fn of_cert_pem(pem: &str) -> Result<Self> {
        Self::of_cert_der(&first_cert_der(pem, "CA certificate")?)
    }

    /// Hash of a DER certificate.
    pub fn of_cert_der(der: &[u8]) -> Result<Self> {
        let cert = parse_x509(der, "CA certificate")?;
        Ok(Self::of_spki_der(cert.public_key().raw))
    }

    /// Hash of a DER SubjectPublicKeyInfo.
    pub fn of_spki_der(spki: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaHash({self})")
    }
}

impl FromStr for CaHash {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| PkiError::BadCaHash {
            input: s.to_owned(),
            reason,
        };
        let hex_part = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with 'sha256:'"))?;
        if hex_part.len() != 64 {
            return Err(bad("the digest must be exactly 64 hex digits"));
        }
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex_part, &mut bytes)
            .map_err(|_| bad("the digest contains characters that are not hex digits"))?;
        Ok(Self(bytes))
    }
}

impl Serialize for CaHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CaHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::pki::test_support;

    #[test]
    fn matches_openssl_pipeline() {
        let ca = test_support::ca("pin-test");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg("openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | sha256sum")
            .arg("sh")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let hex_digest = stdout.split_whitespace().next().unwrap();
        assert_eq!(ca.hash().to_string(), format!("sha256:{hex_digest}"));
        assert_eq!(CaHash::of_cert_pem(ca.cert_pem()).unwrap(), ca.hash());
    }

    #[test]
    fn parses_and_displays() {
        let upper = format!("sha256:{}", "AB".repeat(32));
        let hash: CaHash = upper.parse().unwrap();
        assert_eq!(hash.to_string(), format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(hash.to_string().parse::<CaHash>().unwrap(), hash);
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"sha256:{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<CaHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<CaHash>("\"sha256:00\"").is_err());
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "ab".repeat(32),                         // no prefix
            format!("sha1:{}", "ab".repeat(32)),     // wrong algorithm
            format!("sha256:{}", "ab".repeat(31)),   // too short
            format!("sha256:{}", "ab".repeat(33)),   // too long
            format!("sha256:{}zz", "ab".repeat(31)), // not hex
            format!(" sha256:{}", "ab".repeat(32)),  // stray space
        ];
        for case in cases {
            let err = case.parse::<CaHash>().unwrap_err();
            assert!(matches!(err, PkiError::BadCaHash { .. }), "{case}: {err}");
            assert!(err.to_string().contains("sha256:<64 hex digits>"));
        }
    }

    #[test]
    fn rejects_garbage_certificate() {
        assert!(CaHash::of_cert_pem("not a pem").is_err());
        assert!(CaHash::of_cert_der(b"\x30\x03\x02\x01\x00").is_err());
    }
}
