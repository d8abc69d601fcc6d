//! Client mode (`mode = "client"`): the agent on a consumer host (Omni, kube-apiserver, an
//! application). It runs no etcd and is never a member. It learns the cluster from the
//! members' directory ([`crate::gossip::directory`]), gets a client certificate from the issuer
//! with the client token (or the join token), renews it at two thirds of its lifetime, and
//! keeps the certificate, key and endpoint files in `client.dir` ([`files`]), running
//! `client.on_change` once per burst of changes ([`hook`]). One task owns all of that
//! ([`keeper::Keeper`]) and publishes a [`ClientStatus`], which the local HTTP endpoint serves
//! ([`serve`]) and systemd hears about (READY=1 once the first certificate is written).

pub mod discover;
pub mod files;
pub mod hook;
pub mod keeper;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::liveness::Liveness;
use crate::pki::CaHash;

/// The certificate a client agent holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCert {
    pub serial: String,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    /// When it will be renewed (two thirds of its lifetime), unix seconds.
    pub renew_at: u64,
}

/// What a client agent publishes: /status, `quorate status`, /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// Always "client": tells `quorate status` which report this is.
    pub mode: String,
    pub node: String,
    /// The certificate's name.
    pub client_name: String,
    pub dir: PathBuf,
    pub ready: bool,
    /// One line: what the agent does or waits for.
    pub message: String,
    pub ca_hash: Option<CaHash>,
    pub certificate: Option<HeldCert>,
    /// The members' client URLs as last written to `endpoints`.
    pub endpoints: Vec<String>,
    /// The member whose directory answer was used last, and when (unix seconds).
    pub answered_by: Option<String>,
    pub directory_at: Option<u64>,
    /// Whether an endpoint answered the last check with this certificate.
    pub endpoint_answers: bool,
    pub renewals: u64,
    pub renewal_failures: u64,
    /// Why the last renewal attempt failed, until one succeeds.
    pub renewal_error: Option<String>,
    pub on_change: hook::HookStatus,
    /// Datagrams and bytes this agent sent and received asking for the directory.
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

impl ClientStatus {
    /// `quorate status` for a client agent.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let secs = |s: u64| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
            .to_string()
        };
        let _ = writeln!(out, "Node:        {} (client mode)", self.node);
        let _ = writeln!(
            out,
            "Status:      {} ({})",
            if self.ready { "ready" } else { "not ready" },
            self.message
        );
        let _ = writeln!(out, "Client name: {}", self.client_name);
        let _ = writeln!(out, "Files:       {}", self.dir.display());
        match &self.ca_hash {
            Some(h) => writeln!(out, "CA:          {h}"),
            None => writeln!(out, "CA:          -"),
        }
        .ok();
        match &self.certificate {
            Some(c) => writeln!(
                out,
                "Certificate: serial {}, valid until {}, renewed at {}",
                c.serial,
                secs(c.not_after),
                secs(c.renew_at)
            ),
            None => writeln!(out, "Certificate: none yet"),
        }
        .ok();
        if let Some(e) = &self.renewal_error {
            let _ = writeln!(out, "             last renewal failed: {e}");
        }
        let _ = writeln!(
            out,
            "Endpoints:   {}{}",
            if self.endpoints.is_empty() {
                "-".to_owned()
            } else {
                self.endpoints.join(",")
            },
            match (&self.answered_by, self.endpoint_answers) {
                (Some(m), true) => format!(" (from {m}; answering)"),
                (Some(m), false) => format!(" (from {m}; none answered the last check)"),
                (None, _) => String::new(),
            }
        );
        let h = &self.on_change;
        match &h.command {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "on_change:   {c:?}: {} run(s), {} failed{}",
                    h.runs,
                    h.failures,
                    h.last_error
                        .as_ref()
                        .map(|e| format!(" (last: {e})"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "on_change:   -");
            }
        }
        let _ = writeln!(
            out,
            "Renewals:    {} ({} failed)",
            self.renewals, self.renewal_failures
        );
        out
    }
}

/// Why a client agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client.dir {dir}: {why}. Fix: create it writable by the agent (root under quorate-client.service), or set client.dir to a directory it may write (and allow it with ReadWritePaths= in a drop-in)")]
    Dir { dir: PathBuf, why: String },
    #[error("{0}")]
    Start(String),
}

/// Runs a client agent until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), ClientError> {
    let client = settings
        .client
        .clone()
        .ok_or_else(|| ClientError::Start("not in client mode".into()))?;
    files::check_dir(&client.dir).map_err(|why| ClientError::Dir {
        dir: client.dir.clone(),
        why,
    })?;
    crate::fsutil::ensure_dir(&settings.state_dir, crate::fsutil::MODE_DIR)
        .map_err(|e| ClientError::Start(e.to_string()))?;
    let settings = Arc::new(settings);
    let mut live = Liveness::new();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (status_tx, status) = watch::channel(ClientStatus::default());
    let keeper =
        keeper::Keeper::start(settings.clone(), client, status_tx, live.register("client"))
            .await
            .map_err(ClientError::Start)?;
    let listener = tokio::net::TcpListener::bind(settings.health_listen)
        .await
        .map_err(|e| {
            ClientError::Start(format!(
                "cannot bind the health endpoint {}: {e}. Fix: free the port or change health.listen",
                settings.health_listen
            ))
        })?;
    let live = Arc::new(live);
    tasks.spawn(keeper.run(cancel.clone()));
    tasks.spawn(serve::serve(
        listener,
        status.clone(),
        live.clone(),
        cancel.clone(),
    ));
    tasks.spawn(serve::notify(status, live, cancel.clone()));
    tasks.close();
    let mut signals =
        crate::agent::Signals::install().map_err(|e| ClientError::Start(e.to_string()))?;
    signals.wait().await;
    tracing::info!("shutting down");
    cancel.cancel();
    tasks.wait().await;
    tracing::info!("stopped");
    Ok(())
}
