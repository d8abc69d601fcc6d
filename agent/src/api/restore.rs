//! The restore part of the agent API: a member pushes a signed restore plan
//! (`POST /v1/restore/plan`), an agent that was down fetches it (`GET /v1/restore/plan`), and
//! restoring members fetch the snapshot (`GET /v1/restore/snapshot/{sha256}`, streamed). Every
//! request carries the join-token proof (over the body, or over the path for a GET), but the
//! proof only opens the door: a plan is applied on its signature alone, which the controller
//! checks (`restore::SignedPlan::verify`, `restore::accept_plan`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::proof::{self, PROOF_HEADER};
use super::wire::ErrorBody;
use crate::control::ControlCommand;
use crate::restore::{RestoreStore, SignedPlan};

/// Path of the plan endpoint.
pub const PLAN_PATH: &str = "/v1/restore/plan";
/// Prefix of the snapshot endpoint; the sha256 (hex) follows.
pub const SNAPSHOT_PATH: &str = "/v1/restore/snapshot/";
/// Largest plan accepted.
const MAX_PLAN: usize = 64 * 1024;

/// What the restore endpoints need.
#[derive(Clone)]
pub struct RestoreRoutes {
    /// The join tokens in force (proofs are checked with every accepted one).
    pub join_keys: crate::keyring::TokenKeys,
    /// The controller, which verifies and persists pushed plans.
    pub controller: mpsc::Sender<ControlCommand>,
    /// The newest plan this agent holds, published by the controller.
    pub plan: watch::Receiver<Option<SignedPlan>>,
    pub store: RestoreStore,
}

impl RestoreRoutes {
    /// The routes, with their own state.
    pub fn router(self) -> Router {
        Router::new()
            .route(PLAN_PATH, get(get_plan).post(post_plan))
            .route("/v1/restore/snapshot/{sha}", get(get_snapshot))
            .with_state(self)
    }
}

fn refuse(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

fn proven(r: &RestoreRoutes, headers: &HeaderMap, signed_bytes: &[u8]) -> bool {
    let proof = headers
        .get(PROOF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    r.join_keys
        .accepted_keys(crate::token::KeyPurpose::ApiProof)
        .iter()
        .any(|k| proof::verify(k, signed_bytes, proof))
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "the join-token proof is missing or wrong".into(),
    )
}

async fn post_plan(State(r): State<RestoreRoutes>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_PLAN {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "plan too large".into());
    }
    if !proven(&r, &headers, &body) {
        return unauthorized();
    }
    let signed: SignedPlan = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("not a restore plan: {e}")),
    };
    let (reply, answer) = oneshot::channel();
    let command = ControlCommand::ReceiveRestorePlan {
        signed: Box::new(signed),
        reply,
    };
    if r.controller.send(command).await.is_err() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
        );
    }
    match tokio::time::timeout(crate::control::REQUEST_TIMEOUT, answer).await {
        Ok(Ok(Ok(message))) => (StatusCode::OK, message).into_response(),
        Ok(Ok(Err(message))) => refuse(StatusCode::CONFLICT, message),
        _ => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the agent".into(),
        ),
    }
}

async fn get_plan(State(r): State<RestoreRoutes>, headers: HeaderMap) -> Response {
    if !proven(&r, &headers, PLAN_PATH.as_bytes()) {
        return unauthorized();
    }
    let plan = r.plan.borrow().clone();
    match plan {
        Some(p) => Json(p).into_response(),
        None => refuse(
            StatusCode::NOT_FOUND,
            "this agent holds no restore plan".into(),
        ),
    }
}

async fn get_snapshot(
    State(r): State<RestoreRoutes>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("{SNAPSHOT_PATH}{sha}");
    if !proven(&r, &headers, path.as_bytes()) {
        return unauthorized();
    }
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return refuse(StatusCode::BAD_REQUEST, "not a sha256".into());
    }
    let file = match tokio::fs::File::open(r.store.snapshot_path(&sha)).await {
        Ok(f) => f,
        Err(_) => {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("this agent does not hold snapshot {sha}"),
            )
        }
    };
    let stream = tokio_util::io::ReaderStream::new(file);
    Response::new(Body::from_stream(stream))
}
