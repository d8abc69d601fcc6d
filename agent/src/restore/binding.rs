//! Binding a restore plan's signer to the member it names. A join-token holder can get a
//! certificate with any live member's name from the issuer, so a valid chain and the right
//! name are not enough: the signer's key must be the key that member serves etcd's peer port
//! with, at the peer URL etcd's own membership lists for it. This check connects there with
//! this node's certificate and compares the public keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::RestoreError;
use crate::etcd::client::ClientTls;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The SubjectPublicKeyInfo (DER) of a certificate.
fn spki(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.public_key().raw.to_vec())
}

/// The host:port of an `https://` peer URL.
fn peer_addr(url: &str) -> Result<SocketAddr, String> {
    url.strip_prefix("https://")
        .unwrap_or(url)
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("peer URL {url}: {e}"))
}

/// Checks that the member serving `peer_url` presents the public key of `signer_pem`.
pub async fn signer_serves_peer_url(
    name: &str,
    peer_url: &str,
    tls: &ClientTls,
    signer_pem: &str,
) -> Result<(), RestoreError> {
    let refuse = |reason: String| {
        RestoreError::Refused(format!(
            "cannot confirm that the plan's signer is member {name}: {reason}"
        ))
    };
    let signer =
        CertificateDer::from_pem_slice(signer_pem.as_bytes()).map_err(|e| refuse(e.to_string()))?;
    let want = spki(&signer).map_err(refuse)?;
    let addr = peer_addr(peer_url).map_err(refuse)?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca.as_bytes()) {
        roots
            .add(ca.map_err(|e| refuse(e.to_string()))?)
            .map_err(|e| refuse(e.to_string()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(tls.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| refuse(e.to_string()))?;
    let key =
        PrivateKeyDer::from_pem_slice(tls.key.as_bytes()).map_err(|e| refuse(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(crate::pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| refuse(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| refuse(e.to_string()))?;
    let handshake = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let presented = session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| "no certificate presented".to_owned())?;
        spki(presented)
    };
    let got = tokio::time::timeout(TIMEOUT, handshake)
        .await
        .map_err(|_| refuse(format!("{peer_url} did not answer")))?
        .map_err(|e| refuse(format!("{peer_url}: {e}")))?;
    if got != want {
        return Err(RestoreError::Refused(format!(
            "the restore plan is signed with a key that is not the one member {name} serves at \
             {peer_url}: it was not decided by that member"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_parse_with_and_without_brackets() {
        assert_eq!(
            peer_addr("https://10.0.0.1:2380").unwrap(),
            "10.0.0.1:2380".parse().unwrap()
        );
        assert_eq!(
            peer_addr("https://[fd00::1]:2380/").unwrap(),
            "[fd00::1]:2380".parse().unwrap()
        );
        assert!(peer_addr("https://host:2380").is_err());
    }
}
