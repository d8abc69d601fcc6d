//! The wiring: `quorate run` in one function. It binds every socket first (so a port conflict
//! fails the start with a clear message), creates the channels, spawns the named loops, waits
//! for SIGTERM/SIGINT, then cancels everything and waits for each loop's cleanup (etcd stopped,
//! gossip left) within a deadline.
//!
//! ```text
//!   joiner ──AnnounceTo──▶ gossip ──view──▶ controller ──Run/Stop──▶ supervisor (etcd child)
//!                            ▲  SetMeta/PublishPlan │        ▲ health        │
//!                            └──────────────────────┘        └──── prober ◀──┘ probe target
//!   controller ──ApiMaterial──▶ api server      controller ──NodeStatus──▶ notifier, health
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiMaterial, ApiServer};
use crate::config::Settings;
use crate::control;
use crate::etcd::{EtcdHealth, Prober, ProcessState, Supervisor};
use crate::fsutil;
use crate::gossip::{
    next_bump, GossipError, GossipSettings, GossipTask, GossipView, Joiner, NodeId,
};
use crate::health::{self, HealthState};
use crate::issuer::IssuerTask;
use crate::liveness::Liveness;
use crate::metrics::Counters;
use crate::node::{Controller, ControllerIo, NodeError, NodeStatus};
use crate::notify::Notifier;
use crate::pki::PkiStore;
use crate::report::Identity;
use crate::token::KeyPurpose;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
    #[error(transparent)]
    Gossip(#[from] GossipError),
    #[error(
        "cannot listen on {addr} for the {what}: {source}. Fix: free the port or change {field}"
    )]
    Bind {
        what: &'static str,
        field: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load this node's state: {0}")]
    State(#[from] NodeError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot create the control socket {path}: {source}")]
    Control {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

async fn bind_tcp(
    addr: SocketAddr,
    what: &'static str,
    field: &'static str,
) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind {
            what,
            field,
            addr,
            source,
        })
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), AgentError> {
    let settings = Arc::new(settings);
    fsutil::ensure_dir(&settings.state_dir, fsutil::MODE_DIR)?;
    let counters = Arc::new(Counters::default());
    let mut liveness = Liveness::new();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let (view_tx, view_rx) = watch::channel(GossipView::default());
    let (gossip_tx, gossip_rx) = mpsc::channel(64);
    let (etcd_tx, etcd_rx) = mpsc::channel(8);
    let (health_tx, health_rx) = watch::channel(EtcdHealth::default());
    let (process_tx, process_rx) = watch::channel(ProcessState::default());
    let (target_tx, target_rx) = watch::channel(None);
    let (api_tx, api_rx) = watch::channel(ApiMaterial::default());
    let (status_tx, status_rx) = watch::channel(NodeStatus::default());
    let (control_tx, control_rx) = mpsc::channel(4);
    let (issuer_tx, issuer_rx) = watch::channel(None);

    let mut signals = Signals::install()?;
    let gossip = GossipTask::bind(
        GossipSettings {
            identity: NodeId::new(
                &settings.name,
                settings.gossip_advertise(),
                next_bump(&settings.state_dir),
            ),
            bind: settings.gossip_bind(),
            key: settings.token.derive(KeyPurpose::Gossip),
            cluster_size: settings.bootstrap_expect,
        },
        view_tx,
        counters.clone(),
        liveness.register("gossip"),
    )
    .await?;
    let api_listener = bind_tcp(settings.api_bind(), "agent API", "ports.api / bind_addr").await?;
    let health_listener =
        bind_tcp(settings.health_listen, "health endpoint", "health.listen").await?;
    let control_listener =
        control::bind(&settings.state_dir).map_err(|source| AgentError::Control {
            path: settings.state_dir.join(control::SOCKET_NAME),
            source,
        })?;
    let controller = Controller::load(
        settings.clone(),
        ControllerIo {
            view: view_rx.clone(),
            health: health_rx.clone(),
            process: process_rx.clone(),
            gossip: gossip_tx.clone(),
            etcd: etcd_tx,
            probe_target: target_tx,
            api: api_tx,
            status: status_tx,
            control: control_rx,
            issuer: issuer_rx,
            heartbeat: liveness.register("controller"),
        },
    )?;

    tracker.spawn(gossip.run(gossip_rx, cancel.clone()));
    tracker.spawn(
        Joiner {
            targets: settings.join.clone(),
            peers_file: settings.state_dir.join("peers.json"),
            gossip: gossip_tx,
            view: view_rx.clone(),
            heartbeat: liveness.register("joiner"),
        }
        .run(cancel.clone()),
    );
    tracker.spawn(
        Supervisor {
            binary: settings.etcd.binary.clone(),
            stop_timeout: settings.etcd.stop_timeout,
            node: settings.name.clone(),
            counters: counters.clone(),
            heartbeat: liveness.register("etcd supervisor"),
            state: process_tx,
            tracker: tracker.clone(),
        }
        .run(etcd_rx, cancel.clone()),
    );
    tracker.spawn(
        Prober {
            store: PkiStore::new(settings.pki_dir()),
            target: target_rx,
            process: process_rx.clone(),
            health: health_tx,
            heartbeat: liveness.register("etcd probe"),
        }
        .run(cancel.clone()),
    );
    tracker.spawn(
        ApiServer {
            listener: api_listener,
            material: api_rx,
            view: view_rx.clone(),
            proof_key: settings.token.derive(KeyPurpose::ApiProof),
            cert_validity: settings.pki.cert_validity,
            counters: counters.clone(),
            tracker: tracker.clone(),
            heartbeat: liveness.register("agent API"),
        }
        .run(cancel.clone()),
    );
    tracker.spawn(controller.run(cancel.clone()));
    tracker.spawn(
        IssuerTask {
            settings: settings.clone(),
            health: health_rx.clone(),
            issuer: issuer_tx,
            heartbeat: liveness.register("issuer election"),
        }
        .run(cancel.clone()),
    );
    tracker.spawn(control::serve(control_listener, control_tx, cancel.clone()));
    let liveness = Arc::new(liveness);
    tracker.spawn(health::serve(
        health_listener,
        HealthState {
            identity: Identity {
                node: settings.name.clone(),
                advertise: settings.advertise.to_string(),
                seed: settings.seed,
            },
            status: status_rx.clone(),
            view: view_rx,
            health: health_rx,
            process: process_rx,
            counters,
            liveness: liveness.clone(),
        },
        cancel.clone(),
    ));
    tracker.spawn(
        Notifier {
            status: status_rx,
            liveness,
        }
        .run(cancel.clone()),
    );
    tracker.close();
    tracing::info!(
        node = %settings.name,
        advertise = %settings.advertise,
        seed = settings.seed,
        bootstrap_expect = settings.bootstrap_expect,
        "quorate agent started"
    );

    signals.wait().await;
    tracing::info!("shutting down");
    cancel.cancel();
    let deadline = settings.etcd.stop_timeout + Duration::from_secs(5);
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(?deadline, "some tasks did not stop in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, AgentError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(AgentError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(AgentError::Signals)?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
