//! The wiring: `quorate run` in one function. It binds every socket first (so a port conflict
//! fails the start with a clear message), creates the channels, builds each task with its own
//! constructor and spawns it, waits for SIGTERM/SIGINT, then cancels everything and waits for
//! each task's cleanup (etcd stopped, gossip left) within `etcd.stop_timeout` + 5 s.
//!
//! ```text
//!   joiner ──AnnounceTo──▶ gossip ──view──▶ controller ──Run/Stop──▶ supervisor (etcd child)
//!                            ▲   SetMeta/PublishPlan │ │ │               │ process
//!                            └───────────────────────┘ │ └─probe target─▶ prober ──health──▶ *
//!   control socket ──Leave──▶ controller               │
//!   controller (NodeState) ──TLS material──▶ prober, issuer election, maintenance
//!   controller ──ApiMaterial──▶ agent API        issuer election ──CA while elected──▶ controller
//!   controller ──NodeStatus──▶ health endpoint, systemd notifier
//!   maintenance (leader's agent): dead members, leftover learners, through etcd
//!   control socket ──Run──▶ defrag (leader's agent: defrag, NOSPACE) ──DefragStatus──▶ control
//!   snapshot (one agent per slot, under the snapshot job lock) ──SnapshotStatus──▶ health endpoint
//!   snapshot save (control socket) ──SaveReport──▶ snapshot
//!   issuer election: /quorate/revoke/* ──signed CRL──▶ /quorate/crl ──▶ revocation list (crl.pem)
//!   agent API ──members of a name?──▶ etcd (node certificates go to their holder only)
//!   roles: every member's [[roles]] ──/quorate/roles/member/*──▶ issuer applies an agreed one
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::members::MemberSource;
use crate::api::restore::RestoreRoutes;
use crate::api::{ApiMaterial, ApiServer};
use crate::config::Settings;
use crate::control;
use crate::defrag::{DefragStatus, DefragTask};
use crate::etcd::{EtcdHealth, Prober, ProcessState, Supervisor};
use crate::fsutil;
use crate::gossip::{ClientDesk, GossipError, GossipSettings, GossipTask, GossipView, Joiner};
use crate::health::{self, HealthState};
use crate::issuer::IssuerTask;
use crate::liveness::Liveness;
use crate::metrics::Counters;
use crate::node::client_token::ClientTokenSync;
use crate::node::crl::{CrlStatus, CrlSync};
use crate::node::roles::{RolesStatus, RolesSync};
use crate::node::token::{TokenFollower, TokenStatus};
use crate::node::{Controller, ControllerIo, MaintenanceTask, NodeError, NodeStatus};
use crate::notify::Notifier;
use crate::pki::TlsMaterial;
use crate::restore::transfer::Transfers;
use crate::restore::RestoreStore;
use crate::rolling::{RollingStatus, RollingTask};
use crate::snapshot::{OnDemand, SnapshotStatus, SnapshotTask};

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

/// How the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT: the process ends.
    Stopped,
    /// `quorate restart`: the caller re-executes the binary (see [`reexec`]).
    Restart,
}

/// Runs the agent until SIGTERM or SIGINT, or until it is to restart on its new binary.
pub async fn run(mut settings: Settings) -> Result<Exit, AgentError> {
    // The join token follower owns the ring; everyone else reads it through settings.token.
    let (ring_tx, keys) = crate::keyring::TokenKeys::owned((*settings.token.ring()).clone());
    settings.token = keys;
    let settings = Arc::new(settings);
    fsutil::ensure_dir(&settings.state_dir, fsutil::MODE_DIR)?;
    let counters = Arc::new(Counters::default());
    let mut live = Liveness::new();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();

    let (view_tx, view) = watch::channel(GossipView::default());
    let (gossip_tx, gossip_rx) = mpsc::channel(64);
    let (etcd_tx, etcd_rx) = mpsc::channel(8);
    let (health_tx, health) = watch::channel(EtcdHealth::default());
    let (process_tx, process) = watch::channel(ProcessState::default());
    let (target_tx, target) = watch::channel(None);
    let (api_tx, api) = watch::channel(ApiMaterial::default());
    let (status_tx, status) = watch::channel(NodeStatus::default());
    let (control_tx, control_rx) = mpsc::channel(4);
    let (issuer_tx, issuer) = watch::channel(None);
    let (material_tx, material) = watch::channel(Arc::new(TlsMaterial::default()));
    let (defrag_tx, defrag_rx) = mpsc::channel(4);
    let (defrag_status_tx, defrag_status) = watch::channel(DefragStatus::default());
    let (snapshot_status_tx, snapshot_status) = watch::channel(SnapshotStatus::default());
    let (rolling_tx, rolling_rx) = mpsc::channel(4);
    let (reexec_tx, mut reexec_rx) = watch::channel(false);
    let (rolling_status_tx, rolling_status) = watch::channel(RollingStatus::default());
    let (snapshot_progress_tx, snapshot_progress) = watch::channel(None);
    let (save_reports_tx, save_reports) = mpsc::channel(8);
    let (restore_plan_tx, restore_plan) = watch::channel(None);
    let (transfers, transfer) = Transfers::new();
    let (issued_tx, issued_rx) = mpsc::channel(256);
    let (clients_seen_tx, clients_seen) = watch::channel(Vec::new());
    let (client_keys_tx, client_keys) =
        watch::channel(crate::node::client_token::initial_keys(&settings.state_dir));

    let mut signals = Signals::install()?;
    let gossip = GossipTask::bind(
        GossipSettings::for_node(&settings),
        view_tx,
        counters.clone(),
        live.register("gossip"),
    )
    .await?
    .with_client_desk(ClientDesk {
        client_keys: client_keys.clone(),
        health: health.clone(),
        seen: clients_seen_tx,
    });
    let api_listener = bind_tcp(settings.api_bind(), "agent API", "ports.api / bind_addr").await?;
    let health_listener =
        bind_tcp(settings.health_listen, "health endpoint", "health.listen").await?;
    let control_listener =
        control::bind(&settings.state_dir).map_err(|source| AgentError::Control {
            path: settings.state_dir.join(control::SOCKET_NAME),
            source,
        })?;
    let io = ControllerIo {
        view: view.clone(),
        health: health.clone(),
        process: process.clone(),
        gossip: gossip_tx.clone(),
        etcd: etcd_tx.clone(),
        probe_target: target_tx,
        api: api_tx,
        status: status_tx,
        control: control_rx,
        issuer,
        heartbeat: live.register("controller"),
        restore_plan: restore_plan_tx,
        transfers: transfers.clone(),
    };
    let controller = Controller::new(settings.clone(), io, material_tx)?;

    let joiner = Joiner::new(&settings, gossip_tx, view.clone(), live.register("joiner"));
    let supervisor = Supervisor::new(
        &settings,
        counters.clone(),
        process_tx,
        tasks.clone(),
        live.register("etcd supervisor"),
    );
    let prober = Prober::new(
        material.clone(),
        target,
        process.clone(),
        health_tx,
        live.register("etcd probe"),
    );
    let mut api_server = ApiServer::new(
        api_listener,
        &settings,
        api,
        view.clone(),
        counters.clone(),
        tasks.clone(),
        live.register("agent API"),
    )
    .with_members(MemberSource::Etcd {
        health: health.clone(),
        material: material.clone(),
        own_url: settings.client_url(),
    })
    .with_client_keys(client_keys)
    .with_issued_log(issued_tx);
    api_server.restore = Some(RestoreRoutes {
        join_keys: settings.token.clone(),
        controller: control_tx.clone(),
        plan: restore_plan.clone(),
        store: RestoreStore::new(&settings.state_dir),
    });
    let issuer = IssuerTask::new(
        settings.clone(),
        health.clone(),
        material.clone(),
        issuer_tx,
        live.register("issuer election"),
    )
    .with_restore_plan(restore_plan.clone());
    let maintenance = MaintenanceTask::new(
        settings.clone(),
        view.clone(),
        health.clone(),
        material.clone(),
        live.register("maintenance"),
    );
    let defrag = DefragTask::new(
        settings.clone(),
        health.clone(),
        material.clone(),
        defrag_rx,
        defrag_status_tx,
        live.register("defrag"),
    );
    let snapshot = SnapshotTask::new(
        settings.clone(),
        health.clone(),
        material.clone(),
        snapshot_status_tx,
        snapshot_progress_tx.clone(),
        save_reports,
        live.register("snapshot"),
    );
    let (crl_status_tx, crl_status) = watch::channel(CrlStatus::default());
    let crl_sync = CrlSync {
        settings: settings.clone(),
        health: health.clone(),
        material: material.clone(),
        published: crl_status_tx,
        heartbeat: live.register("revocation list"),
        issued: Some(issued_rx),
    };
    let (roles_status_tx, roles_status) = watch::channel(RolesStatus::default());
    let roles_sync = RolesSync {
        settings: settings.clone(),
        health: health.clone(),
        material: material.clone(),
        published: roles_status_tx,
        heartbeat: live.register("roles"),
    };
    let (seal_status_tx, seal_status) = watch::channel(crate::node::seal::SealStatus::default());
    let seal_keeper = crate::node::seal::SealKeeper {
        settings: settings.clone(),
        health: health.clone(),
        material: material.clone(),
        view: view.clone(),
        published: seal_status_tx,
        heartbeat: live.register("CA seal secret"),
    };
    let (token_status_tx, token_status) = watch::channel(TokenStatus::default());
    let token_follower = TokenFollower {
        settings: settings.clone(),
        health: health.clone(),
        material: material.clone(),
        ring: ring_tx,
        published: token_status_tx,
        heartbeat: live.register("join token"),
    };
    let client_token_sync = ClientTokenSync {
        settings: settings.clone(),
        health: health.clone(),
        material: material.clone(),
        published: client_keys_tx,
        heartbeat: live.register("client token"),
    };
    let mut rolling = RollingTask {
        settings: settings.clone(),
        health: health.clone(),
        process: process.clone(),
        material: material.clone(),
        etcd: etcd_tx,
        commands: rolling_rx,
        published: rolling_status_tx,
        heartbeat: live.register("etcd restarts"),
        reexec: reexec_tx,
        agent_restart: false,
        snapshots: None,
    };
    let on_demand = OnDemand::new(
        settings.clone(),
        health.clone(),
        material.clone(),
        snapshot_progress_tx,
        save_reports_tx,
        cancel.clone(),
    );
    if settings.snapshot.schedule.is_some() {
        rolling.snapshots = Some(on_demand.clone());
    }
    let control = control::Routes {
        controller: control_tx,
        defrag: defrag_tx,
        defrag_status: defrag_status.clone(),
        rolling: rolling_tx,
        snapshot: on_demand,
        settings: settings.clone(),
        transfers,
        health: health.clone(),
        material: material.clone(),
    };
    let live = Arc::new(live);
    let mut health_state = HealthState::new(
        &settings,
        status.clone(),
        view,
        health,
        process,
        material,
        defrag_status,
        snapshot_status,
        counters,
        live.clone(),
    );
    health_state.rolling = Some(rolling_status.clone());
    health_state.transfer = Some(transfer.clone());
    health_state.crl = Some(crl_status);
    health_state.roles = Some(roles_status);
    health_state.ca_seal = Some(seal_status);
    health_state.join_token = Some(token_status);
    health_state.clients = Some(clients_seen);
    let notifier = Notifier::new(status, live)
        .with_snapshot_progress(snapshot_progress)
        .with_restart(reexec_rx.clone())
        .with_rolling(rolling_status.clone())
        .with_restore_transfer(transfer);

    tasks.spawn(gossip.run(gossip_rx, cancel.clone()));
    tasks.spawn(joiner.run(cancel.clone()));
    tasks.spawn(supervisor.run(etcd_rx, cancel.clone()));
    tasks.spawn(prober.run(cancel.clone()));
    tasks.spawn(api_server.run(cancel.clone()));
    tasks.spawn(controller.run(cancel.clone()));
    tasks.spawn(issuer.run(cancel.clone()));
    tasks.spawn(maintenance.run(cancel.clone()));
    tasks.spawn(defrag.run(cancel.clone()));
    tasks.spawn(snapshot.run(cancel.clone()));
    tasks.spawn(crl_sync.run(cancel.clone()));
    tasks.spawn(roles_sync.run(cancel.clone()));
    tasks.spawn(seal_keeper.run(cancel.clone()));
    tasks.spawn(client_token_sync.run(cancel.clone()));
    tasks.spawn(token_follower.run(cancel.clone()));
    tasks.spawn(rolling.run(cancel.clone()));
    tasks.spawn(control::serve(control_listener, control, cancel.clone()));
    tasks.spawn(health::serve(health_listener, health_state, cancel.clone()));
    tasks.spawn(notifier.run(cancel.clone()));
    tasks.close();
    tracing::info!(
        node = %settings.name,
        advertise = %settings.advertise,
        seed = settings.seed,
        bootstrap_expect = settings.bootstrap_expect,
        "quorate agent started"
    );

    let exit = tokio::select! {
        _ = signals.wait() => Exit::Stopped,
        _ = reexec_rx.wait_for(|r| *r) => Exit::Restart,
    };
    match exit {
        Exit::Stopped => tracing::info!("shutting down"),
        Exit::Restart => tracing::warn!("stopping to restart on the installed quorate binary"),
    }
    cancel.cancel();
    let deadline = settings.etcd.stop_timeout + Duration::from_secs(5);
    if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
        tracing::warn!(?deadline, "some tasks did not stop in time");
    }
    tracing::info!("stopped");
    Ok(exit)
}

/// Replaces this process with the quorate binary now installed at the path it was started
/// from (a package upgrade replaced the file; `/proc/self/exe` names the old one, "(deleted)"),
/// with the same arguments and environment: the same PID, so systemd keeps supervising it
/// (NotifyAccess=main, the watchdog). Returns only when the exec failed.
pub fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let text = exe.to_string_lossy();
    let path = std::path::PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text));
    std::process::Command::new(&path)
        .args(std::env::args_os().skip(1))
        .exec()
}

/// SIGTERM and SIGINT.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, AgentError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(AgentError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(AgentError::Signals)?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
