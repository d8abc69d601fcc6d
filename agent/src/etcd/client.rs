//! Connecting to etcd as this node: mutual TLS with the node certificate (it carries clientAuth)
//! against the cluster CA. Used by the health probe and by membership changes.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::EtcdError;
use crate::pki::PkiStore;

/// PEM material for an etcd client connection.
#[derive(Clone)]
pub struct ClientTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl ClientTls {
    /// The node's own certificate, read fresh from the PKI directory (so a renewed certificate
    /// is used by the next connection).
    pub fn from_store(store: &PkiStore) -> Option<Self> {
        let ca = store.load_ca_cert().ok()??;
        let cert = store.load_node_cert().ok()??;
        let key = std::fs::read_to_string(store.node_key_path()).ok()?;
        Some(Self { ca, cert, key })
    }
}

/// Connects to `endpoints` with per-request `timeout`.
pub async fn connect(
    endpoints: &[String],
    tls: &ClientTls,
    timeout: Duration,
) -> Result<Client, etcd_client::Error> {
    let tls_options = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(&tls.ca))
        .identity(Identity::from_pem(&tls.cert, &tls.key));
    let options = ConnectOptions::new()
        .with_tls(tls_options)
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    Client::connect(endpoints, Some(options)).await
}

/// A client of this node's cluster with its own certificate (`material`): its own member's
/// URL `own_url` alone while that member is a healthy voter, else every member's; None while
/// it has no certificate or no member yet (`health`).
pub async fn member_client(
    material: &crate::pki::TlsMaterial,
    health: &super::EtcdHealth,
    own_url: String,
    timeout: Duration,
) -> Result<Option<Client>, String> {
    let Some(tls) = material.client() else {
        return Ok(None);
    };
    if health.member_id.is_none() {
        return Ok(None);
    }
    // A healthy voter answers everything itself; the balanced client would otherwise send
    // some requests to members that are down, and fail them.
    let endpoints = if health.reachable && health.quorum && !health.is_learner {
        vec![own_url]
    } else {
        health.endpoints(own_url)
    };
    connect(&endpoints, tls, timeout)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Runs `op` on a client of `urls` (connecting included) within `timeout`, its failure
/// classified by [`EtcdError`].
pub async fn with_client<T, F, Fut>(
    urls: &[String],
    tls: &ClientTls,
    timeout: Duration,
    op: F,
) -> Result<T, EtcdError>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    if urls.is_empty() {
        return Err(EtcdError::Client("the member has no client URL".into()));
    }
    let attempt = async {
        let c = connect(urls, tls, timeout).await?;
        op(c).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EtcdError::from(e)),
        Err(_) => Err(EtcdError::Timeout),
    }
}
