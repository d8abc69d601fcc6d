//! Reading certificates back: what a certificate says (for status output and renewal), whether
//! it really chains to a CA (webpki signature and validity checks, not a name comparison), and
//! whether a key belongs to it.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::KeyPair;
use rustls_pki_types::UnixTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::pem::{first_cert_der, parse_x509, subject_cn, to_system_time};
use super::{PkiError, Result};

/// The fields of a certificate that quorate cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Lowercase hex, without leading zero bytes.
    pub serial_hex: String,
    pub is_ca: bool,
    /// Whether the extended key usage lists serverAuth (false when the extension is absent).
    pub server_auth: bool,
    /// Whether the extended key usage lists clientAuth (false when the extension is absent).
    pub client_auth: bool,
}

/// Describes the first certificate in `cert_pem`.
pub fn inspect(cert_pem: &str) -> Result<CertInfo> {
    let der = first_cert_der(cert_pem, "certificate")?;
    inspect_der(der.as_ref())
}

/// Describes the DER certificate `der`.
pub fn inspect_der(der: &[u8]) -> Result<CertInfo> {
    let cert = parse_x509(der, "certificate")?;
    let bad = |e: x509_parser::error::X509Error| PkiError::BadCert {
        what: "certificate",
        reason: e.to_string(),
    };
    let (mut dns_names, mut ips) = (Vec::new(), Vec::new());
    if let Some(san) = cert.subject_alternative_name().map_err(bad)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    let eku = cert.extended_key_usage().map_err(bad)?;
    let serial = cert.raw_serial();
    let first_nonzero = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    Ok(CertInfo {
        common_name: subject_cn(&cert),
        dns_names,
        ips,
        not_before: to_system_time(cert.validity().not_before),
        not_after: to_system_time(cert.validity().not_after),
        serial_hex: hex::encode(&serial[first_nonzero..]),
        is_ca: cert.is_ca(),
        server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
        client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
    })
}

/// Checks that `cert_pem` was signed by the CA in `ca_pem` and is valid at `now`. Every
/// certificate quorate issues has clientAuth, so that is the usage checked.
pub fn verify_issued_by(cert_pem: &str, ca_pem: &str, now: SystemTime) -> Result<()> {
    let leaf_der = first_cert_der(cert_pem, "certificate")?;
    let ca_der = first_cert_der(ca_pem, "CA certificate")?;
    let subject = subject_cn(&parse_x509(&leaf_der, "certificate")?);
    let fail = |reason: String| PkiError::NotIssuedBy {
        subject: subject.clone(),
        reason,
    };
    let anchor = webpki::anchor_from_trusted_cert(&ca_der).map_err(|e| PkiError::BadCert {
        what: "CA certificate",
        reason: e.to_string(),
    })?;
    let leaf = EndEntityCert::try_from(&leaf_der).map_err(|e| fail(e.to_string()))?;
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| fail("the clock is before 1970".into()))?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::since_unix_epoch(since_epoch),
        KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Whether the private key in `key_pem` belongs to the certificate in `cert_pem`.
pub fn key_matches_cert(key_pem: &str, cert_pem: &str) -> Result<bool> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey {
        what: "private key",
        reason: e.to_string(),
    })?;
    let der = first_cert_der(cert_pem, "certificate")?;
    Ok(public_key_matches(&key, &parse_x509(&der, "certificate")?))
}

pub(crate) fn public_key_matches(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.public_key_raw() == cert.public_key().subject_public_key.data.as_ref()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::test_support::{self, DAY};
    use crate::pki::{cert_spec, CertProfile, NodeKey};

    #[test]
    fn verifies_own_certs_only() {
        let (ca, other) = (test_support::ca("ca"), test_support::ca("other"));
        let (cert, key) = test_support::node_cert(&ca, "n1", &[]);
        let now = SystemTime::now();
        verify_issued_by(&cert, ca.cert_pem(), now).unwrap();
        let err = verify_issued_by(&cert, other.cert_pem(), now).unwrap_err();
        assert!(matches!(err, PkiError::NotIssuedBy { ref subject, .. } if subject == "n1"));
        assert!(key_matches_cert(&key.to_pem(), &cert).unwrap());
        assert!(!key_matches_cert(&ca.key_pem(), &cert).unwrap());
    }

    #[test]
    fn rejects_expired_and_not_yet_valid() {
        let ca = test_support::ca("ca");
        let key = NodeKey::generate().unwrap();
        let issued = SystemTime::now() - 10 * DAY;
        let spec = cert_spec(&CertProfile::Client { name: "old".into() }, issued, DAY);
        let cert = ca.sign_csr(&key.csr_pem("old").unwrap(), &spec).unwrap();
        let err = verify_issued_by(&cert, ca.cert_pem(), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("Expired"), "{err}");
        verify_issued_by(&cert, ca.cert_pem(), issued + Duration::from_secs(60)).unwrap();
        let early = issued - Duration::from_secs(3600);
        assert!(verify_issued_by(&cert, ca.cert_pem(), early).is_err());
    }

    #[test]
    fn rejects_garbage() {
        let ca = test_support::ca("ca");
        assert!(matches!(inspect("junk"), Err(PkiError::Pem { .. })));
        assert!(verify_issued_by("junk", ca.cert_pem(), SystemTime::now()).is_err());
        assert!(key_matches_cert("junk", ca.cert_pem()).is_err());
    }
}
