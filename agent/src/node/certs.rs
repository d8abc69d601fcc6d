//! Getting this node's certificate: signed locally when this node holds the CA, otherwise by
//! the issuer over the agent API. The key is made here and never leaves the host; only the CSR
//! travels. Also the evaluation of the certificate on disk (valid, due for renewal, unusable).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use super::step::CertState;
use super::NodeError;
use crate::api::{request_certificate, CertKind, CsrRequest, ServerTrust};
use crate::config::Settings;
use crate::pki::{
    cert_spec, inspect, renewal_due, verify_issued_by, CaHash, CertInfo, CertProfile,
    CertificateAuthority, PkiStore,
};
use crate::token::KeyPurpose;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The node certificate on disk and what is wrong with it, if anything.
#[derive(Debug, Clone)]
pub struct NodeCert {
    pub info: CertInfo,
    /// Set when the certificate cannot be used whatever the time.
    pub problem: Option<String>,
}

/// Reads and checks the node certificate against the trusted CA and this node's address.
pub fn load_node_cert(
    pki: &PkiStore,
    ca_pem: Option<&str>,
    advertise: IpAddr,
) -> Result<Option<NodeCert>, NodeError> {
    let Some(pem) = pki.load_node_cert()? else {
        return Ok(None);
    };
    let info = inspect(&pem)?;
    let problem = match ca_pem {
        None => Some("no CA certificate to verify it against".to_owned()),
        Some(ca) => match verify_issued_by(&pem, ca, SystemTime::now()) {
            Err(e) => Some(e.to_string()),
            Ok(()) if !info.ips.contains(&advertise) => Some(format!(
                "it is not valid for this node's address {advertise}"
            )),
            Ok(()) => None,
        },
    };
    Ok(Some(NodeCert { info, problem }))
}

/// The certificate's condition at `now`.
pub fn cert_state(cert: Option<&NodeCert>, now: SystemTime) -> CertState {
    match cert {
        None => CertState::Missing,
        Some(NodeCert {
            problem: Some(p), ..
        }) => CertState::Invalid(p.clone()),
        Some(NodeCert { info, .. }) if now >= info.not_after => {
            CertState::Invalid("expired".to_owned())
        }
        Some(NodeCert { info, .. }) if renewal_due(info.not_before, info.not_after, now) => {
            CertState::RenewalDue
        }
        Some(_) => CertState::Valid,
    }
}

/// Signs this node's certificate with the local CA.
pub fn issue_own(
    settings: &Settings,
    pki: &PkiStore,
    ca: &CertificateAuthority,
) -> Result<(), NodeError> {
    let key = pki.load_or_create_node_key()?;
    let csr = key.csr_pem(&settings.name)?;
    let spec = cert_spec(
        &CertProfile::Node {
            name: settings.name.clone(),
            addrs: vec![settings.advertise],
        },
        SystemTime::now(),
        settings.pki.node_validity(),
    );
    let cert = ca.sign_csr(&csr, &spec)?;
    pki.save_ca_cert(ca.cert_pem())?;
    pki.save_node_cert(&cert)?;
    // etcd starts with a revocation list from the first start on (an empty one until the
    // issuer signs the cluster's).
    if pki.load_crl()?.is_none() {
        pki.save_crl(&ca.sign_crl(&[], 0, SystemTime::now())?)?;
    }
    Ok(())
}

/// Asks the issuer at `issuer` to sign this node's CSR, and saves the result.
pub async fn request_own(
    settings: &Settings,
    pki: &PkiStore,
    issuer: SocketAddr,
    ca: CaHash,
) -> Result<(), NodeError> {
    let key = pki.load_or_create_node_key()?;
    let csr = key.csr_pem(&settings.name)?;
    let key_pem = key.to_pem();
    let ca_pem = pki.load_ca_cert()?;
    // Renewal: the current certificate, while the CA still vouches for it, proves this host
    // holds the name (a live member's name goes to nobody else).
    let current = match (&ca_pem, pki.load_node_cert()?) {
        (Some(ca), Some(cert)) if verify_issued_by(&cert, ca, SystemTime::now()).is_ok() => {
            Some(cert)
        }
        _ => None,
    };
    let trust = match ca_pem {
        Some(pem) => ServerTrust::Ca(pem),
        None => ServerTrust::Pinned(ca),
    };
    let response = request_certificate(
        issuer,
        &trust,
        ca,
        &settings.token.derive(KeyPurpose::ApiProof),
        &CsrRequest {
            name: &settings.name,
            kind: CertKind::Node,
            csr_pem: &csr,
            key_pem: &key_pem,
            from: Some(settings.advertise),
            role: None,
            renewing: current.as_deref().map(|cert| (cert, key_pem.as_str())),
        },
        REQUEST_TIMEOUT,
    )
    .await?;
    pki.save_ca_cert(&response.ca_pem)?;
    pki.save_node_cert(&response.cert_pem)?;
    // The issuer's list, so that etcd starts with one; a newer one comes from etcd later.
    if let (Some(crl), None) = (&response.crl_pem, pki.load_crl()?) {
        if crate::pki::crl::crl_serials(crl, &response.ca_pem).is_ok() {
            pki.save_crl(crl)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: SystemTime, not_after: SystemTime) -> CertInfo {
        CertInfo {
            common_name: "a".into(),
            dns_names: vec![],
            ips: vec![],
            not_before,
            not_after,
            serial_hex: "01".into(),
            is_ca: false,
            server_auth: true,
            client_auth: true,
        }
    }

    #[test]
    fn states_over_a_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = NodeCert {
            info: info(t0, t0 + Duration::from_secs(300)),
            problem: None,
        };
        assert_eq!(cert_state(None, t0), CertState::Missing);
        assert_eq!(
            cert_state(Some(&c), t0 + Duration::from_secs(10)),
            CertState::Valid
        );
        assert_eq!(
            cert_state(Some(&c), t0 + Duration::from_secs(250)),
            CertState::RenewalDue
        );
        assert!(matches!(
            cert_state(Some(&c), t0 + Duration::from_secs(300)),
            CertState::Invalid(_)
        ));
        let bad = NodeCert {
            problem: Some("other CA".into()),
            ..c
        };
        assert_eq!(
            cert_state(Some(&bad), t0),
            CertState::Invalid("other CA".into())
        );
    }
}
