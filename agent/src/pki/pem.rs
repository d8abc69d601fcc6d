//! PEM and X.509 decoding shared by the other pki files, so that every parse failure is reported
//! the same way: which object was being read and what was wrong with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use super::{PkiError, Result};

/// All CERTIFICATE blocks of `pem`, in order; at least one.
pub(crate) fn cert_ders(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let pem_error = |reason: String| PkiError::Pem {
        what,
        label: "CERTIFICATE",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no certificate found".into()));
    }
    Ok(certs)
}

/// The first CERTIFICATE block of `pem`.
pub(crate) fn first_cert_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>> {
    let mut certs = cert_ders(pem, what)?;
    Ok(certs.swap_remove(0))
}

/// The private key in `pem` (PKCS#8, SEC1 or PKCS#1), for rustls.
pub(crate) fn private_key_der(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what,
        label: "PRIVATE KEY",
        reason: e.to_string(),
    })
}

/// Parses one DER certificate.
pub(crate) fn parse_x509<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::BadCert {
            what,
            reason: e.to_string(),
        })
}

/// The first common name of the subject, or the whole subject when it has none.
pub(crate) fn subject_cn(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .map_or_else(|| cert.subject().to_string(), str::to_owned)
}

pub(crate) fn to_system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}
