//! The agent API client: asks an issuer to sign a CSR. The issuer's TLS certificate is checked
//! against the cluster CA, pinned by hash (from `ca_hash` or from authenticated gossip) before
//! this node has the CA certificate, and by the CA certificate itself afterwards. The answer is
//! verified again before anything is saved: right CA, valid signature, our own public key.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::proof::{self, PROOF_HEADER};
use super::wire::{CertKind, ErrorBody, SignRequest, SignResponse, SIGN_PATH};
use crate::pki::{
    client_config_pinned, client_config_with_ca, client_config_with_identity, key_matches_cert,
    verify_issued_by, CaHash,
};

const MAX_RESPONSE: usize = 1024 * 1024;

/// How the issuer's TLS certificate is verified.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Any chain containing the CA with this SPKI hash.
    Pinned(CaHash),
    /// This CA certificate (PEM).
    Ca(String),
}

/// Why a signing request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("cannot connect to the agent API at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "TLS with the agent API at {addr} failed: {source} (is it really this cluster's issuer?)"
    )]
    Tls {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent API at {addr}: {message}")]
    Http { addr: SocketAddr, message: String },
    #[error("agent API at {addr} refused the request ({status}): {message}")]
    Refused {
        addr: SocketAddr,
        status: u16,
        message: String,
    },
    #[error("agent API at {addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("the signed certificate from {addr} is not acceptable: {message}")]
    Verify { addr: SocketAddr, message: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

impl ApiClientError {
    /// A refusal that retrying cannot fix (wrong token, invalid request).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ApiClientError::Refused { status, .. } if *status == 400 || *status == 401)
    }
}

/// A CSR ready to send.
pub struct CsrRequest<'a> {
    pub name: &'a str,
    pub kind: CertKind,
    pub csr_pem: &'a str,
    /// The private key the CSR was made with, to check the answer.
    pub key_pem: &'a str,
    /// The local address to connect from: a node certificate goes only to a request from the
    /// address it will carry, so an agent connects from its advertised address.
    pub from: Option<IpAddr>,
    /// The current certificate and its key, presented in the TLS handshake to renew a node
    /// certificate whose name a live member (this one) holds. Only with [`ServerTrust::Ca`].
    pub renewing: Option<(&'a str, &'a str)>,
    /// Client certificates: the etcd role asked for (None: the default client role).
    pub role: Option<&'a str>,
}

/// Sends a CSR to the issuer at `addr` and verifies the answer against `expected_ca`.
pub async fn request_certificate(
    addr: SocketAddr,
    trust: &ServerTrust,
    expected_ca: CaHash,
    proof_key: &[u8; 32],
    csr: &CsrRequest<'_>,
    timeout: Duration,
) -> Result<SignResponse, ApiClientError> {
    let request = SignRequest {
        name: csr.name.to_owned(),
        kind: csr.kind,
        csr_pem: csr.csr_pem.to_owned(),
        sent_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
        role: csr.role.map(str::to_owned),
    };
    let body = serde_json::to_vec(&request).map_err(|e| ApiClientError::Http {
        addr,
        message: e.to_string(),
    })?;
    let response = tokio::time::timeout(timeout, post(addr, trust, proof_key, csr, body))
        .await
        .map_err(|_| ApiClientError::Timeout { addr, timeout })??;
    verify_response(addr, &response, expected_ca, csr.key_pem)?;
    Ok(response)
}

/// Checks that `response` holds a certificate for our key, signed by the expected CA.
fn verify_response(
    addr: SocketAddr,
    response: &SignResponse,
    expected_ca: CaHash,
    key_pem: &str,
) -> Result<(), ApiClientError> {
    let verify = |message: String| ApiClientError::Verify { addr, message };
    let ca_hash = CaHash::of_cert_pem(&response.ca_pem).map_err(|e| verify(e.to_string()))?;
    if ca_hash != expected_ca {
        return Err(verify(format!(
            "signed by CA {ca_hash}, expected {expected_ca}"
        )));
    }
    verify_issued_by(&response.cert_pem, &response.ca_pem, SystemTime::now())
        .map_err(|e| verify(e.to_string()))?;
    match key_matches_cert(key_pem, &response.cert_pem) {
        Ok(true) => Ok(()),
        Ok(false) => Err(verify("the certificate is for another key".into())),
        Err(e) => Err(verify(e.to_string())),
    }
}

/// Connects to `addr` from `from` when that address is this host's; otherwise from whatever
/// address the system picks (the issuer then names both in its refusal).
pub(crate) async fn connect_from(
    addr: SocketAddr,
    from: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    if let Some(ip) = from.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if socket.bind(SocketAddr::new(ip, 0)).is_ok() {
            return socket.connect(addr).await;
        }
    }
    TcpStream::connect(addr).await
}

async fn post(
    addr: SocketAddr,
    trust: &ServerTrust,
    proof_key: &[u8; 32],
    csr: &CsrRequest<'_>,
    body: Vec<u8>,
) -> Result<SignResponse, ApiClientError> {
    let config = match (trust, csr.renewing) {
        (ServerTrust::Pinned(pin), _) => client_config_pinned(*pin),
        (ServerTrust::Ca(pem), Some((cert, key))) => client_config_with_identity(pem, cert, key),
        (ServerTrust::Ca(pem), None) => client_config_with_ca(pem),
    }
    .map_err(|e| ApiClientError::Config(e.to_string()))?;
    let tcp = connect_from(addr, csr.from)
        .await
        .map_err(|source| ApiClientError::Connect { addr, source })?;
    let tls = TlsConnector::from(Arc::clone(&config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|source| ApiClientError::Tls { addr, source })?;
    let http = |message: String| ApiClientError::Http { addr, message };
    let proof = proof::sign(proof_key, &body);
    let request = hyper::Request::post(SIGN_PATH)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(PROOF_HEADER, proof)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| http(e.to_string()))?;
    let (status, bytes) = crate::http1::request(tls, request, MAX_RESPONSE)
        .await
        .map_err(http)?;
    let status = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(ApiClientError::Refused {
            addr,
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| http(format!("malformed answer: {e}")))
}
