//! Keeps this member's copy of the client token (see [`crate::client_token`]) equal to the one
//! in etcd, and publishes the keys derived from it to those who check client-token holders
//! (the agent API). The copy lives in `state_dir/client-token` (0600): a member that restarts
//! while etcd is down still admits client hosts. A record this member cannot open (another
//! cluster's, tampered with) changes nothing and is reported.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client_token::{self, ClientKeys, STATE_FILE};
use crate::config::Settings;
use crate::etcd::client::member_client;
use crate::etcd::EtcdHealth;
use crate::fsutil;
use crate::liveness::{beating, Heartbeat, Turns};
use crate::pki::TlsMaterial;
use crate::token::JoinToken;

/// How often etcd is read.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

/// The client token this member keeps, if any.
pub fn load(state_dir: &Path) -> Option<JoinToken> {
    let text = fsutil::read_optional(&state_dir.join(STATE_FILE))
        .ok()
        .flatten()?;
    JoinToken::parse(&text).ok()
}

/// The keys of the client token kept in `state_dir`, for the API at start.
pub fn initial_keys(state_dir: &Path) -> Option<ClientKeys> {
    load(state_dir).map(|t| ClientKeys::of(&t))
}

/// The follower.
pub struct ClientTokenSync {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub published: watch::Sender<Option<ClientKeys>>,
    pub heartbeat: Heartbeat,
}

impl ClientTokenSync {
    pub async fn run(self, cancel: CancellationToken) {
        let file = self.settings.state_dir.join(STATE_FILE);
        let mut kept = load(&self.settings.state_dir);
        let mut last_error: Option<String> = None;
        let mut turns = Turns::every(EVERY);
        while turns.next(&self.heartbeat, &cancel).await {
            let look = tokio::time::timeout(TIMEOUT * 2, self.look());
            let Some(result) = beating(&self.heartbeat, &cancel, look).await else {
                return;
            };
            let found = match result {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "cannot read the client token");
                    }
                    last_error = Some(e);
                    continue;
                }
                Err(_) => continue,
            };
            last_error = None;
            let Some(token) = found else { continue };
            if kept.as_ref() == Some(&token) {
                continue;
            }
            if let Err(e) = save(&file, &token) {
                tracing::warn!(error = %e, "cannot keep the client token in the state directory");
            }
            tracing::info!(
                first = kept.is_none(),
                "client token read from etcd: client hosts holding it are admitted"
            );
            self.published.send_replace(Some(ClientKeys::of(&token)));
            kept = Some(token);
        }
    }

    /// Reads the token in etcd, when this node has a member and a certificate.
    async fn look(&self) -> Result<Option<JoinToken>, String> {
        let material = self.material.borrow().clone();
        let health = self.health.borrow().clone();
        let own_url = self.settings.client_url();
        let Some(mut client) = member_client(&material, &health, own_url, TIMEOUT).await? else {
            return Ok(None);
        };
        client_token::read(&mut client, &self.settings.token.ring()).await
    }
}

fn save(file: &Path, token: &JoinToken) -> Result<(), fsutil::FsError> {
    fsutil::atomic_write(file, token.expose().as_bytes(), fsutil::MODE_PRIVATE)
}
