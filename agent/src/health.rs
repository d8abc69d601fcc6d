//! The local health endpoint (plain HTTP, on 127.0.0.1 by default): /healthz (the agent's loops
//! are alive), /readyz (the local etcd member is healthy in a cluster with quorum; 503 with the
//! reason otherwise, also while an etcd alarm is active), /status (the full report as JSON) and
//! /metrics (counters and gauges in OpenMetrics text, see `metrics`).

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

use crate::defrag::DefragStatus;
use crate::etcd::{EtcdHealth, ProcessState};
use crate::gossip::GossipView;
use crate::liveness::Liveness;
use crate::metrics::{Counters, Scrape, CONTENT_TYPE};
use crate::node::NodeStatus;
use crate::pki::TlsMaterial;
use crate::report::{Identity, StatusReport};
use crate::snapshot::SnapshotStatus;

/// A loop that has not beaten for this long makes /healthz fail.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// The published state the endpoint reads.
pub struct HealthState {
    pub identity: Identity,
    pub status: watch::Receiver<NodeStatus>,
    pub view: watch::Receiver<GossipView>,
    pub health: watch::Receiver<EtcdHealth>,
    pub process: watch::Receiver<ProcessState>,
    /// For the certificate expiry gauges.
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    /// etcd's backend quota, for its gauge.
    pub quota_bytes: Option<u64>,
    /// Defragmentation and space-alarm recovery, for /status and the defrag gauges.
    pub defrag: watch::Receiver<DefragStatus>,
    /// Scheduled snapshots, for /status and the snapshot gauges.
    pub snapshot: watch::Receiver<SnapshotStatus>,
    pub counters: Arc<Counters>,
    pub liveness: Arc<Liveness>,
    /// Rolling etcd restarts and upgrades, for /status (set by the wiring).
    pub rolling: Option<watch::Receiver<crate::rolling::RollingStatus>>,
    /// A restore's snapshot transfer, for /status (set by the wiring).
    pub transfer: Option<watch::Receiver<Option<crate::restore::transfer::Transfer>>>,
    /// The revocation list, for /status and /metrics (set by the wiring).
    pub crl: Option<watch::Receiver<crate::node::crl::CrlStatus>>,
    /// The members' `[[roles]]`, for /status and /metrics (set by the wiring).
    pub roles: Option<watch::Receiver<crate::node::roles::RolesStatus>>,
    /// The CA seal, for /status (set by the wiring).
    pub ca_seal: Option<watch::Receiver<crate::node::seal::SealStatus>>,
    /// The join tokens in force and a rotation, for /status (set by the wiring).
    pub join_token: Option<watch::Receiver<crate::node::token::TokenStatus>>,
    /// The client agents this member answered lately (set by the wiring).
    pub clients: Option<watch::Receiver<Vec<crate::gossip::directory::SeenClient>>>,
}

impl HealthState {
    /// What the endpoint reports about this node.
    #[expect(
        clippy::too_many_arguments,
        reason = "one receiver per published state, named at the one wiring site"
    )]
    pub fn new(
        settings: &crate::config::Settings,
        status: watch::Receiver<NodeStatus>,
        view: watch::Receiver<GossipView>,
        health: watch::Receiver<EtcdHealth>,
        process: watch::Receiver<ProcessState>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        defrag: watch::Receiver<DefragStatus>,
        snapshot: watch::Receiver<SnapshotStatus>,
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
            material,
            quota_bytes: settings.etcd.tuning.quota_backend_bytes,
            defrag,
            snapshot,
            counters,
            liveness,
            rolling: None,
            transfer: None,
            crl: None,
            roles: None,
            ca_seal: None,
            join_token: None,
            clients: None,
        }
    }

    fn report(&self) -> StatusReport {
        let mut report = StatusReport::build(
            &self.identity,
            &self.status.borrow(),
            &self.view.borrow(),
            &self.health.borrow(),
            &self.process.borrow(),
            &self.counters,
        );
        report.maintenance = Some(self.defrag.borrow().clone());
        report.snapshot = Some(self.snapshot.borrow().clone());
        report.etcd_restarts = self.rolling.as_ref().map(|r| r.borrow().clone());
        report.restore_transfer = self.transfer.as_ref().and_then(|t| t.borrow().clone());
        report.revocation = self.crl.as_ref().map(|c| c.borrow().clone());
        report.roles = self.roles.as_ref().map(|r| r.borrow().clone());
        report.ca_seal = self.ca_seal.as_ref().map(|r| r.borrow().clone());
        report.join_token = self.join_token.as_ref().map(|r| r.borrow().clone());
        if let Some(seen) = &self.clients {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            report.clients = crate::gossip::directory::recent(&seen.borrow(), now);
        }
        report
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
    let answer = readiness(&s.status.borrow(), &s.health.borrow());
    match answer {
        Ok(msg) => (StatusCode::OK, format!("ready: {msg}\n")).into_response(),
        Err(msg) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {msg}\n"),
        )
            .into_response(),
    }
}

/// The /readyz answer: the controller's decision, except that an alarm the probe saw since the
/// controller last published (its status follows the health a moment later) already counts.
fn readiness(status: &NodeStatus, health: &EtcdHealth) -> Result<String, String> {
    match (status.ready, health.alarms.is_empty()) {
        (true, true) => Ok(status.message.clone()),
        (true, false) => Err(health.problem().unwrap_or_else(|| status.message.clone())),
        (false, _) => Err(status.message.clone()),
    }
}

async fn status(State(s): State<Arc<HealthState>>) -> Json<StatusReport> {
    Json(s.report())
}

async fn metrics(State(s): State<Arc<HealthState>>) -> Response {
    let material = s.material.borrow().clone();
    let text = Scrape {
        counters: &s.counters,
        health: &s.health.borrow(),
        view: &s.view.borrow(),
        node_not_after: material.node.as_ref().map(|n| n.not_after),
        ca_not_after: material.ca_not_after,
        quota_bytes: s.quota_bytes,
        defrag: &s.defrag.borrow(),
        snapshot: &s.snapshot.borrow(),
        crl: s.crl.as_ref().map(|c| c.borrow().clone()).as_ref(),
        roles: s.roles.as_ref().map(|r| r.borrow().clone()).as_ref(),
    }
    .encode();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> EtcdHealth {
        EtcdHealth {
            reachable: true,
            leader: Some(1),
            quorum: true,
            ..EtcdHealth::default()
        }
    }

    fn status(ready: bool, message: &str) -> NodeStatus {
        NodeStatus {
            ready,
            message: message.into(),
            ..NodeStatus::default()
        }
    }

    #[test]
    fn ready_follows_the_controller() {
        assert_eq!(
            readiness(&status(true, "healthy, leader a"), &healthy()),
            Ok("healthy, leader a".into())
        );
        assert_eq!(
            readiness(&status(false, "waiting for peers 1/3"), &healthy()),
            Err("waiting for peers 1/3".into())
        );
    }

    #[test]
    fn an_active_alarm_is_never_ready() {
        let h = EtcdHealth {
            alarms: vec!["NOSPACE".into()],
            ..healthy()
        };
        let reason = "etcd alarm NOSPACE is active: the database is full; writes are refused";
        // Before the controller noticed, and after.
        assert_eq!(
            readiness(&status(true, "healthy, leader a"), &h),
            Err(reason.into())
        );
        assert_eq!(readiness(&status(false, reason), &h), Err(reason.into()));
    }
}
