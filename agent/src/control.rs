//! The local control socket: `<state_dir>/control.sock`, mode 0600, so only root and the
//! service user can reach it. It carries the operator's requests that change the cluster
//! (`quorate leave` for the controller, `quorate defrag` for the defragmentation task), which
//! must not be open to every local user as the health port is, `quorate snapshot save`
//! (whose answer streams, see [`crate::snapshot::wire`]), and the defragmentation
//! status that `quorate status` adds to the health endpoint's report.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::defrag::{DefragCommand, DefragStatus};
use crate::rolling::RollingCommand;
use crate::token::JoinToken;

/// File name of the socket in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// How long a request may take (leaving waits for etcd to stop).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `quorate defrag` may take: every member in turn, each up to the deadline of one
/// defragmentation.
pub const DEFRAG_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long `quorate restore` waits for its answer: an s3:// source is downloaded and an
/// encrypted one decrypted before the agent answers.
pub const RESTORE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Requests for the controller.
#[derive(Debug)]
pub enum ControlCommand {
    /// Remove this host's member from the cluster and stop etcd.
    Leave {
        force: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// `quorate restore SOURCE --yes`: check, decide, sign and spread a restore plan.
    Restore {
        source: String,
        /// The snapshot, made local and plaintext by the control handler.
        snapshot: Box<crate::restore::source::Prepared>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A restore plan pushed by another member over the agent API.
    ReceiveRestorePlan {
        signed: Box<crate::restore::SignedPlan>,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = state_dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[derive(Deserialize)]
struct LeaveParams {
    #[serde(default)]
    force: bool,
}

/// Where the socket's requests go.
#[derive(Clone)]
pub struct Routes {
    /// `quorate leave`.
    pub controller: mpsc::Sender<ControlCommand>,
    /// `quorate defrag`.
    pub defrag: mpsc::Sender<DefragCommand>,
    /// The defragmentation task's status.
    pub defrag_status: watch::Receiver<DefragStatus>,
    /// `quorate etcd restart --rolling`.
    pub rolling: mpsc::Sender<RollingCommand>,
    /// `quorate snapshot save`.
    pub snapshot: crate::snapshot::OnDemand,
    /// Where a restore's source is fetched from and decrypted with.
    pub settings: Arc<Settings>,
    /// How far the download of a restore's `s3://` source is.
    pub transfers: crate::restore::transfer::Transfers,
    /// Where `quorate cert revoke` writes its request, and with what certificate.
    pub health: watch::Receiver<crate::etcd::EtcdHealth>,
    pub material: watch::Receiver<Arc<crate::pki::TlsMaterial>>,
}

/// Serves the socket until `cancel`.
pub async fn serve(listener: UnixListener, routes: Routes, cancel: CancellationToken) {
    let router = Router::new()
        .route("/v1/leave", post(leave))
        .route("/v1/defrag", post(defrag))
        .route("/v1/maintenance", get(maintenance))
        .route(
            "/v1/etcd/restart",
            post(rolling_request).get(rolling_progress),
        )
        .route("/v1/snapshot/save", post(snapshot_save))
        .route("/v1/restore", post(restore))
        .route("/v1/agent/restart", post(agent_restart))
        .route("/v1/cert/revoke", post(revoke))
        .route("/v1/token/client", post(create_client_token))
        .route("/v1/token/rotate", post(rotate_token))
        .with_state(routes);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "control socket failed");
    }
}

async fn leave(
    State(routes): State<Routes>,
    Query(params): Query<LeaveParams>,
) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    let command = ControlCommand::Leave {
        force: params.force,
        reply,
    };
    if routes.controller.send(command).await.is_err() {
        return stopping();
    }
    wait_answer(answer, REQUEST_TIMEOUT).await
}

async fn defrag(
    State(routes): State<Routes>,
    Query(params): Query<LeaveParams>,
) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    let command = DefragCommand::Run {
        force: params.force,
        reply,
    };
    if routes.defrag.send(command).await.is_err() {
        return stopping();
    }
    wait_answer(answer, DEFRAG_REQUEST_TIMEOUT).await
}

#[derive(Deserialize)]
struct SaveParams {
    /// Stream the file to the client instead of saving it in the snapshot directory.
    #[serde(default)]
    out: bool,
}

async fn snapshot_save(
    State(routes): State<Routes>,
    Query(params): Query<SaveParams>,
) -> axum::response::Response {
    use crate::snapshot::save::Target;
    let target = if params.out {
        Target::Client
    } else {
        Target::Dir
    };
    axum::response::Response::new(axum::body::Body::new(routes.snapshot.start(target)))
}

#[derive(Deserialize)]
struct RestoreParams {
    source: String,
}

async fn restore(
    State(routes): State<Routes>,
    Query(params): Query<RestoreParams>,
) -> (StatusCode, String) {
    // Downloading and decrypting happen here, not in the controller's loop.
    let prepared =
        match crate::restore::source::prepare(&params.source, &routes.settings, &routes.transfers)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(source = %params.source, "restore refused: {e}");
                return (StatusCode::CONFLICT, format!("{e}\n"));
            }
        };
    let (reply, answer) = oneshot::channel();
    let command = ControlCommand::Restore {
        source: params.source,
        snapshot: Box::new(prepared),
        reply,
    };
    if routes.controller.send(command).await.is_err() {
        return stopping();
    }
    wait_answer(answer, REQUEST_TIMEOUT).await
}

async fn maintenance(State(routes): State<Routes>) -> (StatusCode, String) {
    let status = routes.defrag_status.borrow().clone();
    match serde_json::to_string(&status) {
        Ok(json) => (StatusCode::OK, json),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn rolling_request(State(routes): State<Routes>) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    if routes
        .rolling
        .send(RollingCommand::Request { reply })
        .await
        .is_err()
    {
        return stopping();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(Ok(Ok(id))) => (StatusCode::OK, format!("{id}\n")),
        Ok(Ok(Err(message))) => (StatusCode::CONFLICT, format!("{message}\n")),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the agent\n".into(),
        ),
    }
}

#[derive(Deserialize)]
struct RevokeParams {
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// What a command that writes to etcd needs: this node's client TLS, the endpoints, the time.
struct EtcdAccess {
    tls: crate::etcd::client::ClientTls,
    endpoints: Vec<String>,
    now: u64,
}

impl Routes {
    /// The hash of the CA this node trusts, once it trusts one.
    fn ca_hash(&self) -> Option<crate::pki::CaHash> {
        self.material
            .borrow()
            .ca_pem
            .as_deref()
            .and_then(|pem| crate::pki::CaHash::of_cert_pem(pem).ok())
    }

    /// [`EtcdAccess`], or the answer to give when this node has no certificate yet (`what`
    /// names the command).
    fn etcd_access(&self, what: &str) -> Result<EtcdAccess, (StatusCode, String)> {
        let Some(tls) = self.material.borrow().client().cloned() else {
            return Err((
                StatusCode::CONFLICT,
                format!("this node has no certificate yet: {what} on a member that is ready\n"),
            ));
        };
        let endpoints = self.health.borrow().endpoints(self.settings.client_url());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Ok(EtcdAccess {
            tls,
            endpoints,
            now,
        })
    }
}

fn answer(done: Result<String, String>) -> (StatusCode, String) {
    match done {
        Ok(message) => (StatusCode::OK, format!("{message}\n")),
        Err(message) => (StatusCode::CONFLICT, format!("{message}\n")),
    }
}

async fn revoke(
    State(routes): State<Routes>,
    Query(params): Query<RevokeParams>,
) -> (StatusCode, String) {
    let a = match routes.etcd_access("revoke") {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    answer(match (params.serial, params.name) {
        (Some(serial), None) => {
            crate::issuer::crl::request(&a.endpoints, &a.tls, &serial, a.now).await
        }
        (None, Some(name)) => {
            crate::issuer::crl::request_name(&a.endpoints, &a.tls, &name, a.now).await
        }
        _ => Err("give either a serial or a name".to_owned()),
    })
}

#[derive(Deserialize)]
struct ClientTokenParams {
    #[serde(default)]
    replace: bool,
}

/// `quorate token create --client`: answers the new token in its pinned form.
async fn create_client_token(
    State(routes): State<Routes>,
    Query(params): Query<ClientTokenParams>,
) -> (StatusCode, String) {
    let ca = routes.ca_hash();
    let (a, Some(ca)) = (
        match routes.etcd_access("create the client token") {
            Ok(a) => a,
            Err(refusal) => return refusal,
        },
        ca,
    ) else {
        return (StatusCode::CONFLICT, "this node trusts no CA yet\n".into());
    };
    let token = &routes.settings.token;
    let created = crate::client_token::create(
        &a.endpoints,
        &a.tls,
        &token.primary(),
        params.replace,
        a.now,
    )
    .await;
    answer(created.map(|t| t.pinned(&ca)))
}

/// Largest `token rotate` body (a token).
const MAX_TOKEN_BODY: usize = 1024;

/// `quorate token rotate`: begins a rotation to the token in the body (one is made when the
/// body is empty) and answers it in its pinned form with what to do next. The token travels in
/// the body, never in the path.
async fn rotate_token(State(routes): State<Routes>, body: Bytes) -> (StatusCode, String) {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_TOKEN_BODY)])
        .trim()
        .to_owned();
    let next = if text.is_empty() {
        JoinToken::generate()
    } else {
        match JoinToken::parse(&text) {
            Ok(t) => t,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{e}
"
                    ),
                )
            }
        }
    };
    let ca = routes.ca_hash();
    let a = match routes.etcd_access("rotate the join token") {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    let Some(ca) = ca else {
        return (
            StatusCode::CONFLICT,
            "this node trusts no CA yet
"
            .into(),
        );
    };
    let members = routes.health.borrow().started_names();
    let ring = routes.settings.token.ring();
    let started = async {
        // This member alone: a request the client balanced to a member that is down would
        // fail the command.
        let own = [routes.settings.client_url()];
        let mut client = crate::etcd::client::connect(&own, &a.tls, Duration::from_secs(5))
            .await
            .map_err(|e| format!("cannot reach etcd: {e}"))?;
        crate::rotation::start(&mut client, &ring, &next, &members, a.now)
            .await
            .map_err(|e| e.to_string())
    };
    answer(started.await.map(|()| {
        format!(
            "{}

The rotation has begun: every member accepts the new token, then uses it, then              drops {} (`quorate status`, line 'Join token'); a member that is down holds it at              its step until it is back. New hosts need the new token: update cloud-init              user-data and each member's token or token_file (until then each member warns that              its config's token was rotated).",
            next.pinned(&ca),
            ring.primary().fingerprint()
        )
    }))
}

async fn agent_restart(State(routes): State<Routes>) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    if routes
        .rolling
        .send(RollingCommand::AgentRestart { reply })
        .await
        .is_err()
    {
        return stopping();
    }
    wait_answer(answer, REQUEST_TIMEOUT).await
}

#[derive(Deserialize)]
struct ProgressParams {
    id: u64,
}

async fn rolling_progress(
    State(routes): State<Routes>,
    Query(params): Query<ProgressParams>,
) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    let command = RollingCommand::Progress {
        id: params.id,
        reply,
    };
    if routes.rolling.send(command).await.is_err() {
        return stopping();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(Ok(Ok(progress))) => match serde_json::to_string(&progress) {
            Ok(json) => (StatusCode::OK, json),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(Ok(Err(message))) => (StatusCode::CONFLICT, format!("{message}\n")),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the agent\n".into(),
        ),
    }
}

fn stopping() -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is stopping\n".into(),
    )
}

async fn wait_answer(
    answer: oneshot::Receiver<Result<String, String>>,
    timeout: Duration,
) -> (StatusCode, String) {
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(Ok(message))) => (StatusCode::OK, format!("{message}\n")),
        Ok(Ok(Err(message))) => (StatusCode::CONFLICT, format!("{message}\n")),
        _ => (
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the agent\n".into(),
        ),
    }
}

/// Client side: POSTs `path` on the socket in `state_dir`, waiting for the agent's answer up
/// to `timeout` (the server side's timeout of that request); returns (status, body).
pub async fn post_request(
    state_dir: &Path,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    request(state_dir, hyper::Method::POST, path, Bytes::new(), timeout).await
}

/// Client side: like [`post_request`], with `body`.
pub async fn post_body(
    state_dir: &Path,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    request(
        state_dir,
        hyper::Method::POST,
        path,
        Bytes::from(body),
        timeout,
    )
    .await
}

/// Client side: GETs `path` on the socket in `state_dir`; returns (status, body).
pub async fn get_request(state_dir: &Path, path: &str) -> Result<(u16, String), String> {
    request(
        state_dir,
        hyper::Method::GET,
        path,
        Bytes::new(),
        REQUEST_TIMEOUT,
    )
    .await
}

async fn request(
    state_dir: &Path,
    method: hyper::Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let socket: PathBuf = state_dir.join(SOCKET_NAME);
    let request = async {
        let stream = UnixStream::connect(&socket).await.map_err(|e| {
            format!(
                "cannot connect to {}: {e}. Is the agent running, and are you root or the \
                 service user?",
                socket.display()
            )
        })?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let (status, body) = crate::http1::request(stream, req, 64 * 1024).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout + Duration::from_secs(5), request)
        .await
        .map_err(|_| "the agent did not answer in time".to_owned())?
}
