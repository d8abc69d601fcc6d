//! The local health endpoint (plain HTTP, on 127.0.0.1 by default): /healthz (the agent's loops
//! are alive), /readyz (the local etcd member is healthy in a cluster with quorum; 503 with the
//! reason otherwise), /status (the full report as JSON) and /metrics (Prometheus counters).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::etcd::{EtcdHealth, ProcessState};
use crate::gossip::GossipView;
use crate::liveness::Liveness;
use crate::metrics::Counters;
use crate::node::NodeStatus;
use crate::report::{Identity, StatusReport};

/// A loop that has not beaten for this long makes /healthz fail.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The published state the endpoint reads.
pub struct HealthState {
    pub identity: Identity,
    pub status: watch::Receiver<NodeStatus>,
    pub view: watch::Receiver<GossipView>,
    pub health: watch::Receiver<EtcdHealth>,
    pub process: watch::Receiver<ProcessState>,
    pub counters: Arc<Counters>,
    pub liveness: Arc<Liveness>,
}

impl HealthState {
    /// What the endpoint reports about this node.
    pub fn new(
        settings: &crate::config::Settings,
        status: watch::Receiver<NodeStatus>,
        view: watch::Receiver<GossipView>,
        health: watch::Receiver<EtcdHealth>,
        process: watch::Receiver<ProcessState>,
        counters: Arc<Counters>,
        liveness: Arc<Liveness>,
    ) -> Self {
        Self {
            identity: Identity {
                node: settings.name.clone(),
                advertise: settings.advertise.to_string(),
                seed: settings.seed,
            },
            status,
            view,
            health,
            process,
            counters,
            liveness,
        }
    }

    fn report(&self) -> StatusReport {
        StatusReport::build(
            &self.identity,
            &self.status.borrow(),
            &self.view.borrow(),
            &self.health.borrow(),
            &self.process.borrow(),
            &self.counters,
        )
    }
}

/// Serves the endpoint until `cancel`.
pub async fn serve(listener: TcpListener, state: HealthState, cancel: CancellationToken) {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(state));
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "health endpoint failed");
    }
}

async fn healthz(State(s): State<Arc<HealthState>>) -> Response {
    let stale = s.liveness.stale(STALE_AFTER);
    if stale.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck loops: {}\n", stale.join(", ")),
        )
            .into_response()
    }
}

async fn readyz(State(s): State<Arc<HealthState>>) -> Response {
    let status = s.status.borrow().clone();
    if status.ready {
        (StatusCode::OK, format!("ready: {}\n", status.message)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", status.message),
        )
            .into_response()
    }
}

async fn status(State(s): State<Arc<HealthState>>) -> Json<StatusReport> {
    Json(s.report())
}

async fn metrics(State(s): State<Arc<HealthState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.counters.prometheus(),
    )
        .into_response()
}
