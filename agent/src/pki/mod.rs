//! Certificates for the cluster's mutual TLS: one CA per cluster, one key and leaf certificate
//! per node, and the rustls configurations built from them.
//!
//! The split follows the rule that decisions are pure: [`policy`] decides what a certificate
//! says, [`ca`] signs exactly that (never what a CSR asks for), [`store`] is the only part that
//! touches the disk, and [`tls`] turns the material into rustls configs with the ring provider.

mod ca;
pub mod crl;
mod fingerprint;
mod inspect;
mod key;
mod material;
mod pem;
mod policy;
mod store;
mod tls;

use std::path::PathBuf;

use crate::fsutil::FsError;

pub use ca::CertificateAuthority;
pub use fingerprint::CaHash;
pub use inspect::{inspect, key_matches_cert, verify_issued_by, CertInfo};
pub use key::NodeKey;
pub use material::{NodeTls, TlsMaterial};
pub use policy::{
    cert_spec, is_dns_name, renewal_due, renewal_time, signed_at, CertProfile, CertSpec,
    CLOCK_SKEW_ALLOWANCE,
};
pub use store::PkiStore;
pub use tls::{
    client_config_pinned, client_config_with_ca, client_config_with_identity, peer_node_name,
    provider, server_config,
};

/// Result alias for this module.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// Everything that can go wrong while creating, signing, storing or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<PkiError>,
    },
    #[error("{path} is missing although {other} exists; restore it from a backup or remove both")]
    Incomplete { path: PathBuf, other: PathBuf },
    #[error(
        "cannot decode {what}: {reason}; expected PEM text with a '-----BEGIN {label}-----' block"
    )]
    Pem {
        what: &'static str,
        label: &'static str,
        reason: String,
    },
    #[error("{what} is not a valid X.509 certificate: {reason}")]
    BadCert { what: &'static str, reason: String },
    #[error("{what} is not a usable private key: {reason}; expected an unencrypted PKCS#8 PEM key, '-----BEGIN PRIVATE KEY-----' (convert with `openssl pkcs8 -topk8 -nocrypt`; node keys must be ECDSA P-256)")]
    BadKey { what: &'static str, reason: String },
    #[error("cannot generate a key pair: {0}")]
    KeyGen(String),
    #[error("certificate signing request rejected: {reason}; send a PEM CSR signed by the node's own key, with no extensions other than SAN, key usage, extended key usage and basic constraints")]
    BadCsr { reason: String },
    #[error("cannot issue a certificate for '{name}': {reason}")]
    Issue { name: String, reason: String },
    #[error("certificate '{subject}' is not a CA certificate (it needs basic constraints CA:TRUE and, if key usage is present, keyCertSign); supply the CA's own certificate, not a leaf")]
    NotCa { subject: String },
    #[error("the CA key does not match the public key of CA certificate '{subject}'; check that the certificate and the key files belong together")]
    KeyMismatch { subject: String },
    #[error("invalid CA hash '{input}': {reason}; expected sha256:<64 hex digits>, the digits being what `openssl x509 -pubkey -noout -in ca.pem | openssl pkey -pubin -outform der | sha256sum` prints")]
    BadCaHash { input: String, reason: &'static str },
    #[error("{path} already holds CA {existing}, refusing to replace it with CA {new}; this node belongs to another cluster: remove its pki directory to join a different one")]
    CaMismatch {
        path: PathBuf,
        existing: CaHash,
        new: CaHash,
    },
    #[error("certificate '{subject}' does not verify against the CA: {reason}")]
    NotIssuedBy { subject: String, reason: String },
    #[error("no certificate presented by the server matches the pinned CA {pin} (presented: {presented}); check the CA hash in the join token and that the server sends its CA in its chain")]
    PinMismatch { pin: CaHash, presented: String },
    #[error("cannot build the TLS {what}: {reason}")]
    Tls { what: &'static str, reason: String },
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::net::IpAddr;
    use std::time::{Duration, SystemTime};

    use super::*;

    pub const DAY: Duration = Duration::from_secs(86_400);

    pub fn ca(name: &str) -> CertificateAuthority {
        CertificateAuthority::generate(name, SystemTime::now(), 365 * DAY).unwrap()
    }

    /// Issues a node certificate for `addrs` and returns (cert PEM, key).
    pub fn node_cert(ca: &CertificateAuthority, name: &str, addrs: &[IpAddr]) -> (String, NodeKey) {
        let key = NodeKey::generate().unwrap();
        let profile = CertProfile::Node {
            name: name.into(),
            addrs: addrs.to_vec(),
        };
        let spec = cert_spec(&profile, SystemTime::now(), 30 * DAY);
        let cert = ca.sign_csr(&key.csr_pem(name).unwrap(), &spec).unwrap();
        (cert, key)
    }
}
