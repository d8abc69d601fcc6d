//! The agent API server: HTTPS on the agent port (TCP), serving certificate signing to agents
//! and operators that prove knowledge of the join token. Every agent with a certificate serves
//! it; only the issuer (the agent holding the CA key) signs. The proof is verified on the raw
//! body before the JSON parser sees a byte; failures are counted and answered with 401.
//! The issuer decides certificate contents from its policy and from gossip, never from the CSR;
//! that decision is [`super::sign::decide`], and this module is its thin HTTP driver. TLS
//! accepts a client certificate from the cluster's CA without requiring one: a renewing agent
//! presents its current node certificate, and the handler learns its name and the connection's
//! address ([`Peer`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limit::{Admit, Limiter, MAX_CONNECTIONS};
use super::members::{MemberSource, UserProblem};
use super::proof::PROOF_HEADER;
use super::seal::{may_hold, SealAnswer, SealRefusal, SEAL_PATH};
use super::sign::{
    authenticate, grant, issue, Credential, Lifetimes, Members, Refusal, Requester, SignContext,
};
use super::wire::{ErrorBody, SIGN_PATH};
use crate::client_token::ClientKeys;
use crate::gossip::GossipView;
use crate::keyring::TokenKeys;
use crate::liveness::Heartbeat;
use crate::metrics::Counters;
use crate::pki::{peer_node_name, CertificateAuthority};
use crate::token::KeyPurpose;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the API server needs from the controller; it changes as the node gets its certificate
/// and (on the issuer) the CA.
#[derive(Clone, Default)]
pub struct ApiMaterial {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub ca: Option<Arc<CertificateAuthority>>,
}

/// Shared by request handlers.
struct Shared {
    join_keys: TokenKeys,
    issued: Option<tokio::sync::mpsc::Sender<crate::issuer::issued::Issued>>,
    client_keys: watch::Receiver<Option<ClientKeys>>,
    validity: Lifetimes,
    material: watch::Receiver<ApiMaterial>,
    view: watch::Receiver<GossipView>,
    counters: Arc<Counters>,
    members: Option<MemberSource>,
    crl_file: Option<std::path::PathBuf>,
    roles: Vec<String>,
    client_agent_roles: Vec<String>,
    pki_dir: Option<std::path::PathBuf>,
}

impl Shared {
    /// The proof keys now: every accepted join token's and the client token's.
    fn proof_keys(&self) -> ProofKeys {
        ProofKeys {
            join: self.join_keys.accepted_keys(KeyPurpose::ApiProof),
            client: self.client_keys.borrow().as_ref().map(|k| k.api_proof),
        }
    }

    /// Whether this agent's revocation list (signed by `ca`) lists `serial`.
    fn lists_revoked(&self, ca: &CertificateAuthority, serial: &str) -> bool {
        let Some(crl) = self
            .crl_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
        else {
            return false;
        };
        crate::pki::crl::crl_serials(&crl, ca.cert_pem())
            .is_ok_and(|listed| listed.iter().any(|s| s == serial))
    }

    /// The inputs of the signing decision.
    fn context<'a>(
        &'a self,
        now: SystemTime,
        holds_ca: bool,
        view: &'a GossipView,
        requester: Requester<'a>,
        members: &'a Members,
        keys: &'a ProofKeys,
    ) -> SignContext<'a> {
        SignContext {
            proof_keys: &keys.join,
            client_proof_key: keys.client.as_ref(),
            now,
            validity: self.validity,
            holds_ca,
            view,
            requester,
            members,
            roles: &self.roles,
            client_agent_roles: &self.client_agent_roles,
        }
    }
}

/// The keys a request's proof is checked with.
struct ProofKeys {
    join: Vec<[u8; 32]>,
    client: Option<[u8; 32]>,
}

/// Who is at the other end of a connection, for the handlers.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: IpAddr,
    /// The name and serial of the node certificate it presented (verified in the handshake).
    pub node_cert: Option<(String, String)>,
}

/// The API server task.
pub struct ApiServer {
    pub listener: TcpListener,
    pub material: watch::Receiver<ApiMaterial>,
    pub view: watch::Receiver<GossipView>,
    /// The join tokens in force (proofs are checked with every accepted one).
    pub join_keys: TokenKeys,
    /// The keys of the cluster's client token, as the members' follower reads it.
    pub client_keys: watch::Receiver<Option<ClientKeys>>,
    pub cert_validity: Lifetimes,
    pub counters: Arc<Counters>,
    pub tracker: TaskTracker,
    pub heartbeat: Heartbeat,
    /// The restore endpoints, when wired (see [`super::restore`]).
    pub restore: Option<super::restore::RestoreRoutes>,
    /// Where node certificate requests are checked against etcd's members.
    pub members: Option<MemberSource>,
    /// This agent's revocation list (`pki/crl.pem`), handed to those it signs for.
    pub crl_file: Option<std::path::PathBuf>,
    /// Where every certificate it signs is recorded (see [`crate::issuer::issued`]).
    pub issued: Option<tokio::sync::mpsc::Sender<crate::issuer::issued::Issued>>,
    /// The names of the roles this agent's config defines.
    pub roles: Vec<String>,
    /// Those the client token may ask for (`client_agents = true`).
    pub client_agent_roles: Vec<String>,
    /// This node's PKI directory: the CA seal secret it may hand to voters ([`super::seal`]).
    pub pki_dir: Option<std::path::PathBuf>,
}

impl ApiServer {
    pub async fn run(mut self, cancel: CancellationToken) {
        let shared = Arc::new(Shared {
            join_keys: self.join_keys.clone(),
            issued: self.issued.take(),
            client_keys: self.client_keys.clone(),
            validity: self.cert_validity,
            material: self.material.clone(),
            view: self.view.clone(),
            counters: self.counters.clone(),
            members: self.members.take(),
            crl_file: self.crl_file.clone(),
            roles: self.roles.clone(),
            client_agent_roles: self.client_agent_roles.clone(),
            pki_dir: self.pki_dir.clone(),
        });
        let router = Router::new()
            .route(SIGN_PATH, post(sign))
            .route(SEAL_PATH, post(seal_secret))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(shared);
        let router = match self.restore.take() {
            Some(restore) => router.merge(restore.router()),
            None => router,
        };
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut limiter = Limiter::default();
        loop {
            let tls = self.material.borrow().tls.clone();
            let Some(tls) = tls else {
                // No certificate yet: leave connections in the backlog until there is one.
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = self.material.changed() => continue,
                    _ = beat.tick() => { self.heartbeat.beat(); continue }
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = self.material.changed() => {}
                _ = beat.tick() => self.heartbeat.beat(),
                accepted = self.listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let open = MAX_CONNECTIONS - slots.available_permits();
                    match limiter.admit(peer.ip().to_canonical(), open, std::time::Instant::now()) {
                        Admit::Yes => {}
                        refused => {
                            // Closed before the handshake: no work for a flood.
                            let counter = if refused == Admit::Busy {
                                &self.counters.api_refused_busy
                            } else {
                                &self.counters.api_refused_rate
                            };
                            Counters::inc(counter);
                            tracing::debug!(%peer, ?refused, "agent API connection refused");
                            continue;
                        }
                    }
                    let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                    let acceptor = TlsAcceptor::from(tls);
                    let router = router.clone();
                    let cancel = cancel.clone();
                    self.tracker.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = serve_connection(acceptor, stream, router, peer) => {}
                        }
                        drop(slot);
                    });
                }
            }
        }
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    router: Router,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "agent API TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let who = Peer {
        addr: peer.ip().to_canonical(),
        node_cert: peer_node_name(tls.get_ref().1.peer_certificates()),
    };
    let service = TowerToHyperService::new(router.layer(Extension(who)));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

/// The CA seal secret, to a voter that presents its node certificate (see [`super::seal`]).
async fn seal_secret(State(s): State<Arc<Shared>>, Extension(peer): Extension<Peer>) -> Response {
    Counters::inc(&s.counters.api_requests);
    let refuse = |r: SealRefusal| {
        if r.is_identity() {
            Counters::inc(&s.counters.api_rejected_identity);
            tracing::info!(peer = %peer.addr, message = %r, "refused the CA seal secret");
        }
        (
            r.status(),
            Json(ErrorBody {
                error: r.to_string(),
            }),
        )
            .into_response()
    };
    let Some(dir) = s.pki_dir.as_deref() else {
        return refuse(SealRefusal::NotHeld);
    };
    let Some(secret) = crate::issuer::seal_secret::load(dir) else {
        return refuse(SealRefusal::NotHeld);
    };
    let name = peer
        .node_cert
        .as_ref()
        .filter(|(_, serial)| !revoked_on_disk(dir, serial))
        .map(|(name, _)| name.clone());
    let members = match (&s.members, &name) {
        (Some(source), Some(_)) => source.members().await,
        _ => Members::NotFormed,
    };
    let decision = {
        let view = s.view.borrow();
        may_hold(name.as_deref(), peer.addr, &view, &members)
    };
    match decision {
        Ok(()) => {
            Counters::inc(&s.counters.ca_seal_secret_handed);
            tracing::info!(node = ?name, peer = %peer.addr, "handed the CA seal secret to a voter");
            Json(SealAnswer {
                secret: secret.to_text(),
            })
            .into_response()
        }
        Err(r) => refuse(r),
    }
}

/// Whether this node's revocation list (in `pki_dir`, signed by its CA) lists `serial`.
fn revoked_on_disk(pki_dir: &std::path::Path, serial: &str) -> bool {
    let store = crate::pki::PkiStore::new(pki_dir.to_path_buf());
    let (Ok(Some(crl)), Ok(Some(ca))) = (store.load_crl(), store.load_ca_cert()) else {
        return false;
    };
    crate::pki::crl::crl_serials(&crl, &ca).is_ok_and(|listed| listed.iter().any(|s| s == serial))
}

fn reject(refusal: &Refusal) -> Response {
    (
        refusal.status(),
        Json(ErrorBody {
            error: refusal.to_string(),
        }),
    )
        .into_response()
}

/// The signing handler: gathers the inputs of [`decide`], signs what it grants and counts
/// the outcome.
async fn sign(
    State(s): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Counters::inc(&s.counters.api_requests);
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ca = s.material.borrow().ca.clone();
    let now = SystemTime::now();
    // A revoked certificate proves nothing: its holder is no longer that node.
    let presented = peer.node_cert.as_ref().filter(|(_, serial)| {
        let revoked = ca.as_deref().is_some_and(|ca| s.lists_revoked(ca, serial));
        if revoked {
            tracing::warn!(peer = %peer.addr, serial = %serial, "a revoked node certificate was presented");
        }
        !revoked
    });
    let requester = Requester {
        addr: peer.addr,
        node_cert: presented.map(|(name, _)| name.as_str()),
    };
    let not_looked_up = Members::NotFormed;
    let keys = s.proof_keys();
    let authenticated = {
        let view = s.view.borrow();
        authenticate(
            &s.context(now, ca.is_some(), &view, requester, &not_looked_up, &keys),
            &body,
            proof,
        )
    };
    let decision = match authenticated {
        Err(refusal) => Err(refusal),
        Ok(auth) => {
            // Only an authenticated node request costs etcd requests, and only one that does
            // not renew with the name's own certificate.
            let req = &auth.request;
            let members = match (&s.members, req.kind, auth.credential) {
                (Some(source), super::wire::CertKind::Node, Credential::Join)
                    if requester.node_cert != Some(req.name.as_str()) =>
                {
                    source.members().await
                }
                _ => Members::NotFormed,
            };
            let view = s.view.borrow();
            grant(
                &s.context(now, ca.is_some(), &view, requester, &members, &keys),
                auth,
            )
        }
    };
    // The name becomes an etcd user with its kind's role before the certificate exists.
    let decision = match (decision, &s.members) {
        (Ok(grant), Some(source)) => match source
            .ensure_user(&grant.name, grant.kind, grant.role.as_deref())
            .await
        {
            Ok(()) => Ok(grant),
            Err(UserProblem::Unavailable(why)) => Err(Refusal::NoEtcdUser {
                name: grant.name.clone(),
                why,
            }),
            Err(UserProblem::ClientName { role }) => Err(Refusal::NameIsClient {
                name: grant.name.clone(),
                role,
            }),
        },
        (decision, _) => decision,
    };
    let issued = decision.and_then(|grant| {
        let ca = ca.as_deref().ok_or(Refusal::NotIssuer)?;
        let crl = s
            .crl_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok());
        issue(ca, &grant, crl).map(|response| (grant, response))
    });
    match issued {
        Ok((grant, response)) => {
            Counters::inc(&s.counters.certificates_issued);
            let record = crate::issuer::issued::Issued::of_cert(&response.cert_pem, grant.kind)
                .map(|r| r.with_role(grant.role.clone()));
            if let (Some(log), Some(record)) = (&s.issued, record) {
                if log.try_send(record).is_err() {
                    tracing::warn!(name = %grant.name, "cannot record the issued certificate (too many waiting)");
                }
            }
            tracing::info!(name = %grant.name, kind = ?grant.kind, "issued certificate");
            Json(response).into_response()
        }
        Err(refusal) => {
            refusal.count(&s.counters);
            if refusal.is_invalid() {
                tracing::info!(peer = %peer.addr, message = %refusal, "refused a signing request");
            }
            reject(&refusal)
        }
    }
}

#[cfg(test)]
mod tests;
