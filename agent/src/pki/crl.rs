//! The certificate revocation list. quorate keeps the revoked serials in etcd
//! (`/quorate/crl`, see `issuer::crl`); the issuer signs them into an X.509 CRL with the cluster
//! CA, and every member writes it to `pki/crl.pem`, which etcd reads at every new TLS
//! connection (`--client-crl-file`, `--peer-crl-file`). Pure: what the CRL says and what a CRL
//! file lists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use serde::{Deserialize, Serialize};

use super::{CertificateAuthority, PkiError, Result};

/// How long a signed CRL says it is good for. etcd does not look at it; other verifiers may,
/// and the issuer signs a new one whenever the list changes and at each term.
pub const CRL_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The serial number, lowercase hex without leading zero bytes (as `CertInfo` shows it).
    pub serial: String,
    /// The name the certificate was for, when known (for people).
    #[serde(default)]
    pub name: String,
    /// When it was revoked, unix seconds.
    pub at: u64,
}

/// Normalises a serial given by a person: hex digits, `:` separators and a `0x` prefix allowed,
/// leading zero bytes dropped. None when it is not hex.
pub fn normalize_serial(raw: &str) -> Option<String> {
    let hex: String = raw
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let bytes = hex::decode(padded).ok()?;
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[first..];
    (!trimmed.is_empty()).then(|| hex::encode(trimmed))
}

impl CertificateAuthority {
    /// Signs a CRL numbered `number` listing `revoked`, valid from `now`.
    pub fn sign_crl(&self, revoked: &[Revoked], number: u64, now: SystemTime) -> Result<String> {
        let bad = |reason: String| PkiError::Issue {
            name: "the revocation list".into(),
            reason,
        };
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let serial = hex::decode(&r.serial)
                    .map_err(|e| bad(format!("serial {:?}: {e}", r.serial)))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: (UNIX_EPOCH + Duration::from_secs(r.at)).into(),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now.into(),
            next_update: (now + CRL_LIFETIME).into(),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(self.issuer())
            .and_then(|crl| crl.pem())
            .map_err(|e| bad(e.to_string()))
    }
}

/// The serials a CRL file lists (lowercase hex), after checking it parses and was signed by
/// the CA `ca_pem`.
pub fn crl_serials(crl_pem: &str, ca_pem: &str) -> Result<Vec<String>> {
    use x509_parser::prelude::FromDer;
    let bad = |reason: String| PkiError::BadCert {
        what: "revocation list",
        reason,
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(crl_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| bad(e.to_string()))?;
    let ca_der = super::pem::first_cert_der(ca_pem, "CA certificate")?;
    let ca = super::pem::parse_x509(&ca_der, "CA certificate")?;
    crl.verify_signature(ca.public_key())
        .map_err(|e| bad(format!("not signed by this CA: {e}")))?;
    Ok(crl
        .iter_revoked_certificates()
        .map(|r| {
            let raw = r.raw_serial();
            let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
            hex::encode(&raw[first..])
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::test_support;

    #[test]
    fn serials_people_type_are_normalised() {
        assert_eq!(normalize_serial("0A:1b:ff").as_deref(), Some("0a1bff"));
        assert_eq!(normalize_serial("0x00ab").as_deref(), Some("ab"));
        assert_eq!(normalize_serial("abc").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial(" 01 ").as_deref(), Some("01"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
        assert_eq!(normalize_serial("00"), None);
    }

    #[test]
    fn a_signed_crl_lists_exactly_the_revoked_serials() {
        let ca = test_support::ca("quorate CA");
        let (cert, _) = test_support::node_cert(&ca, "n2", &[]);
        let serial = crate::pki::inspect(&cert).unwrap().serial_hex;
        let revoked = vec![
            Revoked {
                serial: serial.clone(),
                name: "n2".into(),
                at: 1_800_000_000,
            },
            Revoked {
                serial: "01ff".into(),
                name: String::new(),
                at: 1_800_000_001,
            },
        ];
        let pem = ca.sign_crl(&revoked, 7, SystemTime::now()).unwrap();
        assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
        assert_eq!(
            crl_serials(&pem, ca.cert_pem()).unwrap(),
            [serial, "01ff".into()]
        );
        let empty = ca.sign_crl(&[], 1, SystemTime::now()).unwrap();
        assert!(crl_serials(&empty, ca.cert_pem()).unwrap().is_empty());
        // Another CA's list is refused.
        let other = test_support::ca("another CA");
        assert!(crl_serials(&pem, other.cert_pem()).is_err());
    }
}
