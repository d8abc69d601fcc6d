//! The cluster CA: created on the first node (or supplied by the operator) and used by the
//! issuer to sign node and client certificates. Signing takes only the public key from a CSR
//! and builds everything else from a [`CertSpec`], so the policy, not the requester, decides
//! names, addresses and usages.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};

use super::inspect::public_key_matches;
use super::pem::{first_cert_der, parse_x509, subject_cn};
use super::policy::validity_window;
use super::{CaHash, CertSpec, PkiError, Result};

/// A CA certificate with its signing key.
#[derive(Debug)]
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    hash: CaHash,
}

impl CertificateAuthority {
    /// Creates a self-signed ECDSA P-256 CA that may sign leaf certificates only (path length 0).
    /// Like leaves, it is back-dated by [`super::CLOCK_SKEW_ALLOWANCE`], since some verifiers
    /// (Go's, in etcd) also check the root's validity.
    pub fn generate(common_name: &str, now: SystemTime, validity: Duration) -> Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| PkiError::KeyGen(e.to_string()))?;
        let issue = |e: rcgen::Error| PkiError::Issue {
            name: common_name.to_owned(),
            reason: e.to_string(),
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let (not_before, not_after) = validity_window(now, validity);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert_pem = params.self_signed(&key).map_err(issue)?.pem();
        Self::from_parts(cert_pem, key)
    }

    /// Loads an operator-supplied CA, checking that it is a CA and that the key belongs to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey {
            what: "CA key",
            reason: e.to_string(),
        })?;
        Self::from_parts(cert_pem.to_owned(), key)
    }

    fn from_parts(cert_pem: String, key: KeyPair) -> Result<Self> {
        let der = first_cert_der(&cert_pem, "CA certificate")?;
        let cert = parse_x509(&der, "CA certificate")?;
        let subject = subject_cn(&cert);
        let may_sign = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !cert.is_ca() || !may_sign {
            return Err(PkiError::NotCa { subject });
        }
        if !public_key_matches(&key, &cert) {
            return Err(PkiError::KeyMismatch { subject });
        }
        let hash = CaHash::of_spki_der(cert.public_key().raw);
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| PkiError::BadCert {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        Ok(Self {
            cert_pem,
            issuer,
            hash,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The pin of this CA.
    pub fn hash(&self) -> CaHash {
        self.hash
    }

    /// The signer, for the CRL (see [`super::crl`]).
    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Verifies `csr_pem`'s signature and issues a certificate for its public key with exactly
    /// the content of `spec`. Returns the leaf certificate, PEM.
    pub fn sign_csr(&self, csr_pem: &str, spec: &CertSpec) -> Result<String> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr {
                reason: e.to_string(),
            })?;
        let issue = |reason: String| PkiError::Issue {
            name: spec.common_name.clone(),
            reason,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(&spec.common_name);
        for name in &spec.dns_names {
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|e| issue(format!("DNS name '{name}': {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = spec.not_before.into();
        params.not_after = spec.not_after.into();
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = request
            .signed_by(&self.issuer)
            .map_err(|e| issue(e.to_string()))?;
        Ok(cert.pem())
    }
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// 16 random bytes with the top bit clear (positive) and the next one set (always 16 bytes).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| PkiError::KeyGen("the system random generator failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::pki::test_support::{self, DAY};
    use crate::pki::{cert_spec, inspect, CertProfile, NodeKey, CLOCK_SKEW_ALLOWANCE};

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn generated_ca_round_trips_and_is_a_ca() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate("quorate CA", now, 3650 * DAY).unwrap();
        let info = inspect(ca.cert_pem()).unwrap();
        assert!(info.is_ca);
        assert_eq!(info.common_name, "quorate CA");
        assert_eq!(secs(info.not_before), secs(now - CLOCK_SKEW_ALLOWANCE));
        assert_eq!(secs(info.not_after), secs(now + 3650 * DAY));
        let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.hash(), ca.hash());
    }

    #[test]
    fn operator_ca_with_wrong_key_rejected() {
        let (a, b) = (test_support::ca("a"), test_support::ca("b"));
        let err = CertificateAuthority::from_pem(a.cert_pem(), &b.key_pem()).unwrap_err();
        assert!(
            matches!(err, PkiError::KeyMismatch { ref subject } if subject == "a"),
            "{err}"
        );
        let err = CertificateAuthority::from_pem(a.cert_pem(), "junk").unwrap_err();
        assert!(matches!(err, PkiError::BadKey { .. }), "{err}");
    }

    #[test]
    fn leaf_rejected_as_ca() {
        let ca = test_support::ca("ca");
        let (leaf, key) = test_support::node_cert(&ca, "n1", &[]);
        let err = CertificateAuthority::from_pem(&leaf, &key.to_pem()).unwrap_err();
        assert!(
            matches!(err, PkiError::NotCa { ref subject } if subject == "n1"),
            "{err}"
        );
    }

    #[test]
    fn issues_exactly_the_spec() {
        let ca = test_support::ca("ca");
        let addrs = vec!["10.1.1.1".parse().unwrap()];
        let profile = CertProfile::Node {
            name: "n1".into(),
            addrs,
        };
        let spec = cert_spec(&profile, SystemTime::now(), 7 * DAY);
        let key = NodeKey::generate().unwrap();
        let info = inspect(&ca.sign_csr(&key.csr_pem("n1").unwrap(), &spec).unwrap()).unwrap();
        assert_eq!(info.common_name, "n1");
        assert_eq!(info.dns_names, spec.dns_names);
        assert_eq!(info.ips, spec.ips);
        assert!(info.server_auth && info.client_auth && !info.is_ca);
        assert_eq!(secs(info.not_before), secs(spec.not_before));
        assert_eq!(secs(info.not_after), secs(spec.not_after));
        assert_eq!(info.serial_hex.len(), 32);
    }

    #[test]
    fn client_cert_has_client_auth_only() {
        let ca = test_support::ca("ca");
        let key = NodeKey::generate().unwrap();
        let spec = cert_spec(
            &CertProfile::Client { name: "ops".into() },
            SystemTime::now(),
            DAY,
        );
        let info = inspect(&ca.sign_csr(&key.csr_pem("ops").unwrap(), &spec).unwrap()).unwrap();
        assert!(info.client_auth && !info.server_auth);
        assert!(info.dns_names.is_empty() && info.ips.is_empty());
    }

    #[test]
    fn csr_requests_are_ignored() {
        let ca = test_support::ca("ca");
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["evil.example".to_owned(), "8.8.8.8".to_owned()]).unwrap();
        params.distinguished_name = common_name_dn("n1");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let profile = CertProfile::Client { name: "n1".into() };
        let spec = cert_spec(&profile, SystemTime::now(), DAY);
        let info = inspect(&ca.sign_csr(&csr, &spec).unwrap()).unwrap();
        assert!(info.dns_names.is_empty(), "{:?}", info.dns_names);
        assert!(info.ips.is_empty(), "{:?}", info.ips);
        assert!(!info.is_ca);
    }

    #[test]
    fn tampered_or_malformed_csr_rejected() {
        let ca = test_support::ca("ca");
        let spec = cert_spec(
            &CertProfile::Client { name: "n1".into() },
            SystemTime::now(),
            DAY,
        );
        let csr = NodeKey::generate().unwrap().csr_pem("node-a").unwrap();
        let mut der = rustls_pki_types::pem::PemObject::from_pem_slice(csr.as_bytes())
            .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
            .unwrap();
        let at = der.windows(6).position(|w| w == b"node-a").unwrap();
        der[at + 5] = b'b';
        let tampered = pem_encode("CERTIFICATE REQUEST", &der);
        let err = ca.sign_csr(&tampered, &spec).unwrap_err();
        assert!(matches!(err, PkiError::BadCsr { .. }), "{err}");
        assert!(matches!(
            ca.sign_csr("nope", &spec),
            Err(PkiError::BadCsr { .. })
        ));
    }

    #[test]
    fn serials_differ_for_same_key() {
        let ca = test_support::ca("ca");
        let key = NodeKey::generate().unwrap();
        let csr = key.csr_pem("n1").unwrap();
        let spec = cert_spec(
            &CertProfile::Client { name: "n1".into() },
            SystemTime::now(),
            DAY,
        );
        let a = inspect(&ca.sign_csr(&csr, &spec).unwrap()).unwrap();
        let b = inspect(&ca.sign_csr(&csr, &spec).unwrap()).unwrap();
        assert_ne!(a.serial_hex, b.serial_hex);
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }
}
