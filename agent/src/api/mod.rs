//! The agent API: certificate signing over TLS, authenticated by a proof of the join token.
//! See [`server`] for the issuer side, [`sign`] for what it grants or refuses, and [`client`]
//! for the requester side.

pub mod client;
pub mod limit;
pub mod members;
pub mod proof;
pub mod restore;
pub mod restore_client;
pub mod seal;
pub mod server;
pub mod sign;
pub mod wire;

pub use client::{request_certificate, ApiClientError, CsrRequest, ServerTrust};
pub use server::{ApiMaterial, ApiServer};
pub use wire::{CertKind, SignRequest, SignResponse};

impl ApiServer {
    /// The agent API of this node on `listener`: proofs checked with the key derived from the
    /// join token, certificates signed for `pki.node_cert_validity` or `pki.client_cert_validity` while `material` carries a CA.
    pub fn new(
        listener: tokio::net::TcpListener,
        settings: &crate::config::Settings,
        material: tokio::sync::watch::Receiver<ApiMaterial>,
        view: tokio::sync::watch::Receiver<crate::gossip::GossipView>,
        counters: std::sync::Arc<crate::metrics::Counters>,
        tracker: tokio_util::task::TaskTracker,
        heartbeat: crate::liveness::Heartbeat,
    ) -> Self {
        Self {
            listener,
            material,
            view,
            join_keys: settings.token.clone(),
            client_keys: tokio::sync::watch::channel(None).1,
            cert_validity: sign::Lifetimes::from_pki(&settings.pki),
            counters,
            tracker,
            heartbeat,
            restore: None,
            members: None,
            crl_file: Some(crate::pki::PkiStore::new(settings.pki_dir()).crl_path()),
            issued: None,
            roles: settings.roles.iter().map(|r| r.name.clone()).collect(),
            client_agent_roles: settings
                .roles
                .iter()
                .filter(|r| r.client_agents)
                .map(|r| r.name.clone())
                .collect(),
            pki_dir: Some(settings.pki_dir()),
        }
    }

    /// Admits holders of the cluster's client token (for client certificates only), with the
    /// keys the members' follower publishes.
    pub fn with_client_keys(
        mut self,
        keys: tokio::sync::watch::Receiver<Option<crate::client_token::ClientKeys>>,
    ) -> Self {
        self.client_keys = keys;
        self
    }

    /// Records every certificate it signs through `log` (see [`crate::issuer::issued`]).
    pub fn with_issued_log(
        mut self,
        log: tokio::sync::mpsc::Sender<crate::issuer::issued::Issued>,
    ) -> Self {
        self.issued = Some(log);
        self
    }

    /// Checks node certificate requests against etcd's members (see [`members`]); without
    /// it the server treats every name as free (tests of the signing path alone).
    pub fn with_members(mut self, source: members::MemberSource) -> Self {
        self.members = Some(source);
        self
    }
}
