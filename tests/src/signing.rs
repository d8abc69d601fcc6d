//! Asking the issuer's API for a certificate directly, as an attacker or a client host would:
//! with any token, any name and kind, from any local address.

use std::net::IpAddr;
use std::time::Duration;

use quorate::api::{request_certificate, ApiClientError, CertKind, CsrRequest, ServerTrust};
use quorate::pki::{CaHash, NodeKey};
use quorate::token::{JoinToken, KeyPurpose};

use crate::cluster::{ClientCert, Cluster};

/// A certificate the issuer signed, and its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl Issued {
    /// Writes ca.pem, NAME.pem and NAME-key.pem under `dir` for etcdctl.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> ClientCert {
        std::fs::create_dir_all(dir).unwrap();
        let cert = ClientCert {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&cert.ca, &self.ca_pem).unwrap();
        std::fs::write(&cert.cert, &self.cert_pem).unwrap();
        std::fs::write(&cert.key, &self.key_pem).unwrap();
        cert
    }
}

/// Asks the cluster's issuer for a `kind` certificate named `name`, proving `token` (either
/// form), connecting from `from`: the certificate, or the refusal's (HTTP status, message).
/// Callers that retry must stay under the API's per-address rate (5 a second).
pub fn ask(
    c: &Cluster,
    token: &str,
    name: &str,
    kind: CertKind,
    from: IpAddr,
) -> Result<Issued, (u16, String)> {
    ask_with_role(c, token, name, kind, from, None)
}

/// [`ask`], for a certificate of etcd role `role`.
pub fn ask_with_role(
    c: &Cluster,
    token: &str,
    name: &str,
    kind: CertKind,
    from: IpAddr,
    role: Option<&str>,
) -> Result<Issued, (u16, String)> {
    let ca_pem = std::fs::read_to_string(c.agents[0].state_dir().join("pki/ca.pem")).unwrap();
    let issuer = c
        .agents
        .iter()
        .find_map(|a| a.status().ok().and_then(|s| s.issuer_api()))
        .expect("an issuer's API address");
    let key = JoinToken::parse(token)
        .unwrap()
        .derive(KeyPurpose::ApiProof);
    let requester = NodeKey::generate().unwrap();
    let key_pem = requester.to_pem();
    let csr = requester.csr_pem(name).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(request_certificate(
        issuer,
        &ServerTrust::Ca(ca_pem.clone()),
        CaHash::of_cert_pem(&ca_pem).unwrap(),
        &key,
        &CsrRequest {
            name,
            kind,
            csr_pem: &csr,
            key_pem: &key_pem,
            from: Some(from),
            renewing: None,
            role,
        },
        Duration::from_secs(10),
    ));
    match result {
        Ok(signed) => Ok(Issued {
            cert_pem: signed.cert_pem,
            key_pem,
            ca_pem: signed.ca_pem,
        }),
        Err(ApiClientError::Refused {
            status, message, ..
        }) => Err((status, message)),
        // Transport failures (the API's per-address rate limit closes connections before
        // TLS) come back as status 0.
        Err(e) => Err((0, e.to_string())),
    }
}
