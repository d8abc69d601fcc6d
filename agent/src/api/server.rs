//! The agent API server: HTTPS on the agent port (TCP), serving certificate signing to agents
//! and operators that prove knowledge of the join token. Every agent with a certificate serves
//! it; only the issuer (the agent holding the CA key) signs. The proof is verified on the raw
//! body before the JSON parser sees a byte; failures are counted and answered with 401.
//! The issuer decides certificate contents from its policy and from gossip, never from the CSR.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
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

use super::proof::{self, PROOF_HEADER};
use super::wire::{CertKind, ErrorBody, SignRequest, SignResponse, SIGN_PATH};
use crate::gossip::GossipView;
use crate::liveness::Heartbeat;
use crate::metrics::Counters;
use crate::pki::{cert_spec, CertProfile, CertificateAuthority};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Requests older (or newer) than this are refused.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
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

fn reject(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

async fn sign(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    Counters::inc(&s.counters.api_requests);
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !proof::verify(&s.key, &body, proof) {
        Counters::inc(&s.counters.api_rejected_unauthenticated);
        return reject(
            StatusCode::UNAUTHORIZED,
            "missing or wrong join-token proof; use the cluster's join token",
        );
    }
    let invalid = |status, message: String| {
        Counters::inc(&s.counters.api_rejected_invalid);
        tracing::info!(%message, "refused a signing request");
        reject(status, message)
    };
    let req: SignRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return invalid(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    let now = SystemTime::now();
    let sent = UNIX_EPOCH + Duration::from_secs(req.sent_at);
    let skew = now
        .duration_since(sent)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > MAX_CLOCK_SKEW {
        return invalid(
            StatusCode::BAD_REQUEST,
            format!(
                "request time is {}s away from this host's clock; synchronise the clocks (NTP)",
                skew.as_secs()
            ),
        );
    }
    let Some(ca) = s.material.borrow().ca.clone() else {
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent does not hold the CA; ask the issuer",
        );
    };
    let profile = match req.kind {
        CertKind::Node => {
            let view = s.view.borrow();
            let Some(meta) = view
                .peer(&req.name)
                .filter(|p| p.is_live())
                .and_then(|p| p.meta.as_ref())
            else {
                return invalid(
                    StatusCode::CONFLICT,
                    format!(
                        "node {} is not known in gossip yet; retry shortly",
                        req.name
                    ),
                );
            };
            CertProfile::Node {
                name: req.name.clone(),
                addrs: vec![meta.gossip_addr.ip()],
            }
        }
        CertKind::Client => {
            if !valid_client_name(&req.name) {
                return invalid(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "client name {:?} must be 1-64 letters, digits, '-', '_', '.' or '@'",
                        req.name
                    ),
                );
            }
            CertProfile::Client {
                name: req.name.clone(),
            }
        }
    };
    let spec = cert_spec(&profile, now, s.validity);
    match ca.sign_csr(&req.csr_pem, &spec) {
        Ok(cert_pem) => {
            Counters::inc(&s.counters.certificates_issued);
            tracing::info!(name = %req.name, kind = ?req.kind, "issued certificate");
            Json(SignResponse {
                cert_pem,
                ca_pem: ca.cert_pem().to_owned(),
            })
            .into_response()
        }
        Err(e) => invalid(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
