//! The agent API server: HTTPS on the agent port (TCP), serving certificate signing to agents
//! and operators that prove knowledge of the join token. Every agent with a certificate serves
//! it; only the issuer (the agent holding the CA key) signs. The proof is verified on the raw
//! body before the JSON parser sees a byte; failures are counted and answered with 401.
//! The issuer decides certificate contents from its policy and from gossip, never from the CSR;
//! that decision is [`super::sign::decide`], and this module is its thin HTTP driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, State};
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

use super::proof::PROOF_HEADER;
use super::sign::{decide, issue, Refusal, SignContext};
use super::wire::{ErrorBody, SIGN_PATH};
use crate::gossip::GossipView;
use crate::liveness::Heartbeat;
use crate::metrics::Counters;
use crate::pki::CertificateAuthority;

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
    key: [u8; 32],
    validity: Duration,
    material: watch::Receiver<ApiMaterial>,
    view: watch::Receiver<GossipView>,
    counters: Arc<Counters>,
}

/// The API server task.
pub struct ApiServer {
    pub listener: TcpListener,
    pub material: watch::Receiver<ApiMaterial>,
    pub view: watch::Receiver<GossipView>,
    pub proof_key: [u8; 32],
    pub cert_validity: Duration,
    pub counters: Arc<Counters>,
    pub tracker: TaskTracker,
    pub heartbeat: Heartbeat,
    /// The restore endpoints, when wired (see [`super::restore`]).
    pub restore: Option<super::restore::RestoreRoutes>,
}

impl ApiServer {
    pub async fn run(mut self, cancel: CancellationToken) {
        let shared = Arc::new(Shared {
            key: self.proof_key,
            validity: self.cert_validity,
            material: self.material.clone(),
            view: self.view.clone(),
            counters: self.counters.clone(),
        });
        let router = Router::new()
            .route(SIGN_PATH, post(sign))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(shared);
        let router = match self.restore.take() {
            Some(restore) => router.merge(restore.router()),
            None => router,
        };
        let mut beat = tokio::time::interval(Duration::from_secs(1));
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
                    let acceptor = TlsAcceptor::from(tls);
                    let router = router.clone();
                    let cancel = cancel.clone();
                    self.tracker.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = serve_connection(acceptor, stream, router, peer) => {}
                        }
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
    let service = TowerToHyperService::new(router);
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
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
async fn sign(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    Counters::inc(&s.counters.api_requests);
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let ca = s.material.borrow().ca.clone();
    let decision = {
        let view = s.view.borrow();
        let ctx = SignContext {
            proof_key: &s.key,
            now: SystemTime::now(),
            validity: s.validity,
            holds_ca: ca.is_some(),
            view: &view,
        };
        decide(&ctx, &body, proof)
    };
    let issued = decision.and_then(|grant| {
        let ca = ca.as_deref().ok_or(Refusal::NotIssuer)?;
        issue(ca, &grant).map(|response| (grant, response))
    });
    match issued {
        Ok((grant, response)) => {
            Counters::inc(&s.counters.certificates_issued);
            tracing::info!(name = %grant.name, kind = ?grant.kind, "issued certificate");
            Json(response).into_response()
        }
        Err(refusal) => {
            refusal.count(&s.counters);
            if refusal.is_invalid() {
                tracing::info!(message = %refusal, "refused a signing request");
            }
            reject(&refusal)
        }
    }
}

#[cfg(test)]
mod tests;
