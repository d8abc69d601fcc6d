//! A client agent's local endpoint (`health.listen`): /healthz (its loop is alive), /readyz
//! (its certificate is valid and an endpoint answered with it), /status (the
//! [`ClientStatus`] as JSON) and /metrics; and its systemd notifications, through the member's
//! [`Notifier`] fed with the client's status line and READY=1 once the first certificate is
//! written.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ClientStatus;
use crate::health::STALE_AFTER;
use crate::liveness::Liveness;
use crate::node::NodeStatus;
use crate::notify::Notifier;

struct Shared {
    status: watch::Receiver<ClientStatus>,
    liveness: Arc<Liveness>,
}

/// Serves the endpoint until `cancel`.
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<ClientStatus>,
    liveness: Arc<Liveness>,
    cancel: CancellationToken,
) {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Shared { status, liveness }));
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "health endpoint failed");
    }
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let stale = s.liveness.stale(STALE_AFTER);
    if stale.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let body = format!("stuck loops: {}\n", stale.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let status = s.status.borrow().clone();
    if status.ready {
        (StatusCode::OK, format!("ready: {}\n", status.message)).into_response()
    } else {
        let body = format!("not ready: {}\n", status.message);
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn status_json(State(s): State<Arc<Shared>>) -> Response {
    Json(s.status.borrow().clone()).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let body = encode_metrics(&s.status.borrow());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The OpenMetrics text of a client agent. The certificate's expiry uses the members' metric
/// (`quorate_cert_not_after_seconds{cert="client"}`), so the same expiry alert covers it.
pub fn encode_metrics(s: &ClientStatus) -> String {
    let mut r = Registry::with_prefix("quorate");
    let certs = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    if let Some(c) = &s.certificate {
        certs
            .get_or_create(&[("cert", "client")])
            .set(c.not_after.min(i64::MAX as u64) as i64);
    }
    r.register_with_unit(
        "cert_not_after",
        "Expiry (notAfter) of the client certificate this agent keeps, in unix seconds",
        Unit::Seconds,
        certs,
    );
    r.register(
        "client_ready",
        "1 while the client certificate is valid and an endpoint answered with it",
        ConstGauge::new(i64::from(s.ready)),
    );
    r.register(
        "client_endpoints",
        "etcd client URLs in the endpoints file",
        ConstGauge::new(s.endpoints.len() as i64),
    );
    r.register(
        "client_renewals",
        "Client certificates obtained",
        ConstCounter::new(s.renewals),
    );
    r.register(
        "client_renewal_failures",
        "Attempts to obtain a client certificate that failed",
        ConstCounter::new(s.renewal_failures),
    );
    r.register(
        "client_on_change_runs",
        "Runs of client.on_change",
        ConstCounter::new(s.on_change.runs),
    );
    r.register(
        "client_on_change_failures",
        "Runs of client.on_change that failed",
        ConstCounter::new(s.on_change.failures),
    );
    r.register(
        "client_directory_datagrams_sent",
        "Datagrams this agent sent asking members for the directory",
        ConstCounter::new(s.datagrams_sent),
    );
    r.register(
        "client_directory_bytes_sent",
        "Bytes of those datagrams",
        ConstCounter::new(s.bytes_sent),
    );
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &r) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// Feeds systemd through the member's [`Notifier`]: STATUS= is the client's line, READY=1
/// comes once the first certificate is written, WATCHDOG=1 while the loop is alive.
pub async fn notify(
    mut status: watch::Receiver<ClientStatus>,
    liveness: Arc<Liveness>,
    cancel: CancellationToken,
) {
    let as_node = |s: &ClientStatus| NodeStatus {
        message: s.message.clone(),
        ready: s.certificate.is_some(),
        ca_hash: s.ca_hash,
        ..NodeStatus::default()
    };
    let (tx, rx) = watch::channel(as_node(&status.borrow()));
    let notifier = tokio::spawn(Notifier::new(rx, liveness).run(cancel.clone()));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let node = as_node(&status.borrow_and_update());
                tx.send_if_modified(|current| {
                    let changed = current.message != node.message || current.ready != node.ready;
                    *current = node;
                    changed
                });
            }
        }
    }
    let _ = notifier.await;
}

pub use crate::clock::unix;
