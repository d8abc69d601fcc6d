//! Finding the cluster: while this agent knows no live peer, announce to the configured `join`
//! targets and to the peers remembered from the last run (with backoff); once connected, foca
//! spreads the rest of the membership, and a configured target that is still not a member (it
//! started after our first announce) keeps getting an announce now and then, so that no agent
//! stays on an island. The remembered peers (`peers.json`) let a seed, which usually has no
//! `join` list, find its cluster again after a restart.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{GossipCommand, GossipView};
use crate::config::{JoinTarget, Settings};

/// File in the state directory with the peers last seen alive (a seed with no join list finds
/// the cluster through it after a restart).
pub const PEERS_FILE: &str = "peers.json";
use crate::fsutil;
use crate::liveness::Heartbeat;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// While connected, how often configured targets that are not members get an announce.
const MISSING_EVERY: Duration = Duration::from_secs(2);
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// The join task's inputs.
pub struct Joiner {
    pub targets: Vec<JoinTarget>,
    pub peers_file: PathBuf,
    pub gossip: mpsc::Sender<GossipCommand>,
    pub view: watch::Receiver<GossipView>,
    pub heartbeat: Heartbeat,
}

impl Joiner {
    /// The joiner for this node: its `join` targets, and the peers it remembers in the state
    /// directory (`peers.json`).
    pub fn new(
        settings: &Settings,
        gossip: mpsc::Sender<GossipCommand>,
        view: watch::Receiver<GossipView>,
        heartbeat: Heartbeat,
    ) -> Self {
        Self {
            targets: settings.join.clone(),
            peers_file: settings.state_dir.join(PEERS_FILE),
            gossip,
            view,
            heartbeat,
        }
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut remembered = load_peers(&self.peers_file);
        let mut retry = FIRST_RETRY;
        let mut last_missing_announce = tokio::time::Instant::now();
        loop {
            self.heartbeat.beat();
            let connected = self.view.borrow().live().next().is_some();
            if connected {
                retry = FIRST_RETRY;
                let known: BTreeSet<SocketAddr> =
                    self.view.borrow().peers.iter().map(|p| p.id.addr).collect();
                if known != remembered {
                    save_peers(&self.peers_file, &known);
                    remembered = known.clone();
                }
                if last_missing_announce.elapsed() >= MISSING_EVERY {
                    last_missing_announce = tokio::time::Instant::now();
                    let missing: Vec<SocketAddr> = resolve(&self.targets)
                        .await
                        .into_iter()
                        .filter(|a| !known.contains(a))
                        .collect();
                    if !missing.is_empty() {
                        tracing::debug!(
                            ?missing,
                            "announcing to join targets that are not members"
                        );
                        if self
                            .gossip
                            .send(GossipCommand::AnnounceTo(missing))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            } else {
                let mut addrs = resolve(&self.targets).await;
                addrs.extend(remembered.iter().copied());
                addrs.sort();
                addrs.dedup();
                if !addrs.is_empty() {
                    tracing::debug!(?addrs, "announcing to join targets");
                    if self
                        .gossip
                        .send(GossipCommand::AnnounceTo(addrs))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            let wait = if connected { MISSING_EVERY } else { retry };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                changed = self.view.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {
                    if !connected {
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
            }
        }
    }
}

/// Resolves join targets; names that do not resolve now are skipped (and retried later).
pub async fn resolve(targets: &[JoinTarget]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for t in targets {
        if let Ok(ip) = t.host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, t.port));
            continue;
        }
        match tokio::time::timeout(
            DNS_TIMEOUT,
            tokio::net::lookup_host((t.host.as_str(), t.port)),
        )
        .await
        {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(e)) => tracing::warn!(target = %t, error = %e, "cannot resolve join target"),
            Err(_) => tracing::warn!(target = %t, "resolving join target timed out"),
        }
    }
    out
}

fn load_peers(path: &Path) -> BTreeSet<SocketAddr> {
    match fsutil::read_optional(path) {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable peers file");
            BTreeSet::new()
        }),
        Ok(None) => BTreeSet::new(),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring peers file");
            BTreeSet::new()
        }
    }
}

fn save_peers(path: &Path, peers: &BTreeSet<SocketAddr>) {
    let text = serde_json::to_vec(peers).unwrap_or_default();
    if let Err(e) = fsutil::atomic_write(path, &text, fsutil::MODE_PUBLIC) {
        tracing::warn!(error = %e, "cannot remember peers");
    }
}
