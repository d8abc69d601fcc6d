//! The TLS material currently in force on this node, as one immutable value: the trusted CA,
//! the node certificate with its key (as PEM for etcd clients and as a rustls server config for
//! the agent API), its expiry, and the CA key when this host's disk holds it. The owner of the
//! PKI directory (`node::NodeState`) builds a new value after every change and publishes it
//! through a `watch` channel; every other task reads it from there and never reads key files.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::ServerConfig;

use super::{inspect, server_config, CaHash, CertificateAuthority, PkiError, PkiStore};
use crate::etcd::client::ClientTls;

/// The node certificate and key, ready to use.
#[derive(Clone)]
pub struct NodeTls {
    /// PEM material for etcd client connections (the certificate carries clientAuth).
    pub client: ClientTls,
    /// The agent API's server config (the node certificate with its CA in the chain).
    pub server: Arc<ServerConfig>,
    pub not_after: SystemTime,
}

/// Everything TLS that tasks need, published as a whole.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// The CA certificate this node trusts.
    pub ca_pem: Option<String>,
    pub ca_hash: Option<CaHash>,
    /// The CA's expiry, when a CA is trusted.
    pub ca_not_after: Option<SystemTime>,
    /// The node certificate, once it is present and usable.
    pub node: Option<NodeTls>,
    /// The CA key on this host's disk (the seed, or an operator-supplied CA).
    pub disk_ca: Option<Arc<CertificateAuthority>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_hash", &self.ca_hash)
            .field("node", &self.node.as_ref().map(|n| n.not_after))
            .field("disk_ca", &self.disk_ca.is_some())
            .finish()
    }
}

impl TlsMaterial {
    /// Reads the material from the PKI directory. `usable` says whether the node certificate
    /// passed the owner's checks (issued by the trusted CA, valid for this node's address);
    /// an unusable certificate is not offered to other tasks.
    pub fn read(
        store: &PkiStore,
        disk_ca: Option<Arc<CertificateAuthority>>,
        usable: bool,
    ) -> Result<Self, PkiError> {
        let ca_pem = store.load_ca_cert()?;
        let ca_hash = ca_pem.as_deref().map(CaHash::of_cert_pem).transpose()?;
        let ca_not_after = match ca_pem.as_deref() {
            Some(pem) => Some(inspect(pem)?.not_after),
            None => None,
        };
        let node = match (usable, ca_pem.as_deref(), store.load_node_cert()?) {
            (true, Some(ca), Some(cert)) => {
                let key = std::fs::read_to_string(store.node_key_path()).map_err(|source| {
                    crate::fsutil::FsError {
                        op: "read",
                        path: store.node_key_path(),
                        source,
                    }
                })?;
                let not_after = inspect(&cert)?.not_after;
                let server = server_config(&cert, ca, &key)?;
                Some(NodeTls {
                    client: ClientTls {
                        ca: ca.to_owned(),
                        cert,
                        key,
                    },
                    server,
                    not_after,
                })
            }
            _ => None,
        };
        Ok(Self {
            ca_pem,
            ca_hash,
            ca_not_after,
            node,
            disk_ca,
        })
    }

    /// The client material for etcd, once the node has a usable certificate.
    pub fn client(&self) -> Option<&ClientTls> {
        self.node.as_ref().map(|n| &n.client)
    }
}
