//! rustls configurations for the agent's HTTPS endpoints, all on the ring provider (two
//! providers in one binary make rustls' default builder panic). A joining node knows only the
//! CA's hash from its join token, so its client verifies by pin: it finds the pinned CA in the
//! chain the server presents and then runs the normal WebPKI checks against it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct, OtherError,
    RootCertStore, ServerConfig, SignatureScheme, WantsVerifier,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::pem::{cert_ders, private_key_der};
use super::{CaHash, PkiError, Result};

const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The ring crypto provider used for every config.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &'static str) -> impl Fn(rustls::Error) -> PkiError {
    move |e| PkiError::Tls {
        what,
        reason: e.to_string(),
    }
}

/// A server that presents [leaf, CA], so that clients can pin the CA, and that accepts
/// connections with or without a client certificate: a joining agent has none yet and proves
/// the token instead, while an agent renewing its certificate presents the current one, which
/// must then chain to the CA in `ca_pem` (or the handshake fails). The handlers see who
/// presented what ([`peer_node_name`]).
pub fn server_config(cert_pem: &str, ca_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>> {
    let mut chain = cert_ders(cert_pem, "server certificate")?;
    for ca in cert_ders(ca_pem, "CA certificate")? {
        if !chain.contains(&ca) {
            chain.push(ca);
        }
    }
    let key = private_key_der(key_pem, "server key")?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error("server config"))?
        .with_client_cert_verifier(optional_client_verifier(ca_pem)?)
        .with_single_cert(chain, key)
        .map_err(tls_error("server config"))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// A client that trusts whichever presented certificate has the SubjectPublicKeyInfo hash `pin`.
pub fn client_config_pinned(pin: CaHash) -> Result<Arc<ClientConfig>> {
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider(),
    });
    let config = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(with_alpn(config))
}

fn optional_client_verifier(
    ca_pem: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca_pem)?), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls {
            what: "client verifier",
            reason: e.to_string(),
        })
}

/// The node name and serial (hex) of a verified client certificate, when it is a node
/// certificate (server and client auth); None for a client certificate or none at all.
pub fn peer_node_name(presented: Option<&[CertificateDer<'_>]>) -> Option<(String, String)> {
    let leaf = presented?.first()?;
    let info = super::inspect::inspect_der(leaf.as_ref()).ok()?;
    (info.server_auth && info.client_auth && !info.is_ca)
        .then_some((info.common_name, info.serial_hex))
}

/// A client that trusts the CA in `ca_pem` and presents the certificate `cert_pem` with its
/// key (an agent renewing its node certificate proves it holds the current one).
pub fn client_config_with_identity(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>> {
    let chain = cert_ders(cert_pem, "client certificate")?;
    let key = private_key_der(key_pem, "client key")?;
    let config = client_builder()?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error("client config"))?;
    Ok(with_alpn(config))
}

/// A client that trusts the CA in `ca_pem` and presents no certificate.
pub fn client_config_with_ca(ca_pem: &str) -> Result<Arc<ClientConfig>> {
    let config = client_builder()?
        .with_root_certificates(root_store(ca_pem)?)
        .with_no_client_auth();
    Ok(with_alpn(config))
}

fn client_builder() -> Result<ConfigBuilder<ClientConfig, WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error("client config"))
}

fn with_alpn(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Arc::new(config)
}

fn root_store(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for ca in cert_ders(ca_pem, "CA certificate")? {
        roots.add(ca).map_err(tls_error("root store"))?;
    }
    Ok(roots)
}

/// Verifies a server against the presented certificate whose key matches the pin.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: CaHash,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = std::iter::once(end_entity).chain(intermediates);
        let mut seen = Vec::new();
        let mut pinned = None;
        for cert in presented {
            match CaHash::of_cert_der(cert) {
                Ok(hash) if hash == self.pin => {
                    pinned = Some(cert);
                    break;
                }
                Ok(hash) => seen.push(hash.to_string()),
                Err(_) => seen.push("unparsable certificate".into()),
            }
        }
        let Some(pinned) = pinned else {
            let err = PkiError::PinMismatch {
                pin: self.pin,
                presented: seen.join(", "),
            };
            // rustls prints `Other` with {:?}; a string error keeps the message readable.
            let err: Box<dyn std::error::Error + Send + Sync> = err.to_string().into();
            return Err(CertificateError::Other(OtherError(Arc::from(err))).into());
        };
        let mut roots = RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::SystemTime;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::pki::test_support::{self, DAY};
    use crate::pki::{cert_spec, CertProfile, CertificateAuthority, NodeKey};

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Serves one echo connection with `server` and returns what the client read back.
    async fn exchange(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> std::io::Result<Vec<u8>> {
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server);
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.shutdown().await
        });
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(LOOPBACK.into());
        let result = async {
            let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_HTTP1));
            tls.write_all(b"ping").await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok(buf)
        }
        .await;
        if result.is_err() {
            served.abort();
        }
        result
    }

    fn node_server(ca: &CertificateAuthority, addrs: &[IpAddr]) -> Arc<ServerConfig> {
        let (cert, key) = test_support::node_cert(ca, "n1", addrs);
        server_config(&cert, ca.cert_pem(), &key.to_pem()).unwrap()
    }

    #[tokio::test]
    async fn pinned_client_accepts_pinned_ca_only() {
        let ca = test_support::ca("ca");
        let server = node_server(&ca, &[]);
        let echoed = exchange(server.clone(), client_config_pinned(ca.hash()).unwrap()).await;
        assert_eq!(echoed.unwrap(), b"ping");

        let other = test_support::ca("other");
        let err = exchange(server, client_config_pinned(other.hash()).unwrap())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no certificate presented"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn pinned_client_checks_server_address() {
        let ca = test_support::ca("ca");
        let key = NodeKey::generate().unwrap();
        let mut spec = cert_spec(
            &CertProfile::Node {
                name: "n1".into(),
                addrs: vec![],
            },
            SystemTime::now(),
            DAY,
        );
        spec.ips = vec!["192.0.2.7".parse().unwrap()];
        let cert = ca.sign_csr(&key.csr_pem("n1").unwrap(), &spec).unwrap();
        let server = server_config(&cert, ca.cert_pem(), &key.to_pem()).unwrap();
        let err = exchange(server, client_config_pinned(ca.hash()).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("192.0.2.7"), "{err}");
    }

    #[tokio::test]
    async fn ca_clients_connect() {
        let ca = test_support::ca("ca");
        let server = node_server(&ca, &[]);
        let plain = client_config_with_ca(ca.cert_pem()).unwrap();
        assert_eq!(exchange(server, plain).await.unwrap(), b"ping");
        let other = test_support::ca("other");
        let wrong = client_config_with_ca(other.cert_pem()).unwrap();
        assert!(exchange(node_server(&ca, &[]), wrong).await.is_err());
    }

    #[test]
    fn bad_material_is_reported() {
        let ca = test_support::ca("ca");
        let err = server_config(ca.cert_pem(), ca.cert_pem(), "junk").unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Pem {
                    what: "server key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(client_config_with_ca("junk").is_err());
    }
}
