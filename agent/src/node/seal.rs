//! Keeps this member's copy of the CA seal secret ([`crate::issuer::seal_secret`]): once its
//! member is a started voter and the cluster has a secret it does not hold, it asks the other
//! members' agents for it (presenting its node certificate, `api::seal`), checks it against
//! the fingerprint in etcd and keeps it in the PKI directory. It never asks before it is a
//! voter: the holders would refuse. Holding it, it records so in etcd
//! (`/quorate/seal/holders/<name>`): the issuer re-seals the CA once every voter has.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::etcd::client::member_client;
use crate::etcd::EtcdHealth;
use crate::gossip::GossipView;
use crate::issuer::reseal;
use crate::issuer::seal_secret::{self, SealSecret};
use crate::liveness::{beating, Heartbeat, Turns};
use crate::pki::TlsMaterial;

/// How often it looks while it does not hold the secret.
pub const EVERY: Duration = Duration::from_secs(5);
/// How often it checks the fingerprint once it holds it.
const WHILE_HELD: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(3);

/// The keeper.
pub struct SealKeeper {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub view: watch::Receiver<GossipView>,
    pub heartbeat: Heartbeat,
}

impl SealKeeper {
    pub async fn run(self, cancel: CancellationToken) {
        let mut turns = Turns::every(EVERY);
        let mut checked: Option<tokio::time::Instant> = None;
        let mut last_error: Option<String> = None;
        while turns.next(&self.heartbeat, &cancel).await {
            if checked.is_some_and(|at| at.elapsed() < WHILE_HELD) {
                continue;
            }
            let look = tokio::time::timeout(TIMEOUT * 4, self.look());
            let Some(result) = beating(&self.heartbeat, &cancel, look).await else {
                return;
            };
            match result.unwrap_or_else(|_| Err("etcd is slow".to_owned())) {
                Ok(true) => {
                    checked = Some(tokio::time::Instant::now());
                    last_error = None;
                }
                Ok(false) => checked = None,
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::info!(error = %e, "CA seal secret not obtained yet");
                    }
                    last_error = Some(e);
                    checked = None;
                }
            }
        }
    }

    /// Whether this host holds the cluster's secret after the look.
    async fn look(&self) -> Result<bool, String> {
        let pki_dir = self.settings.pki_dir();
        let material = self.material.borrow().clone();
        let health = self.health.borrow().clone();
        let own_url = self.settings.client_url();
        let Some(mut client) = member_client(&material, &health, own_url, TIMEOUT).await? else {
            return Ok(false);
        };
        let Some(id) = seal_secret::cluster_id(&mut client)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if seal_secret::load(&pki_dir).is_some_and(|held| held.id() == id) {
            // The issuer seals the CA with it once every voter has recorded it (`reseal`).
            reseal::record_holder(&mut client, &self.settings.name, &id)
                .await
                .map_err(|e| format!("recording that this member holds it: {e}"))?;
            return Ok(true);
        }
        let voter = health
            .members
            .iter()
            .any(|m| Some(m.id) == health.member_id && !m.is_learner && !m.name.is_empty());
        if !voter {
            return Ok(false);
        }
        let Some(tls) = material.client() else {
            return Ok(false);
        };
        let holders: Vec<_> = {
            let view = self.view.borrow();
            view.live()
                .filter_map(|p| p.meta.as_ref())
                .filter(|m| m.name != self.settings.name)
                .map(|m| m.api_addr)
                .collect()
        };
        let mut failures = Vec::new();
        for addr in holders {
            let got = crate::api::seal::fetch(
                addr,
                self.settings.advertise,
                &tls.ca,
                &tls.cert,
                &tls.key,
                TIMEOUT,
            )
            .await;
            match got {
                Ok(secret) if secret.id() == id => {
                    self.keep(&pki_dir, &secret)?;
                    reseal::record_holder(&mut client, &self.settings.name, &id)
                        .await
                        .map_err(|e| format!("recording that this member holds it: {e}"))?;
                    return Ok(true);
                }
                Ok(secret) => failures.push(format!(
                    "{addr} handed a secret with fingerprint {}, and etcd records {id}",
                    secret.id()
                )),
                Err(e) => failures.push(e),
            }
        }
        if failures.is_empty() {
            Err("no other live member to ask".into())
        } else {
            Err(failures.join("; "))
        }
    }

    fn keep(&self, pki_dir: &std::path::Path, secret: &SealSecret) -> Result<(), String> {
        seal_secret::save(pki_dir, secret).map_err(|e| e.to_string())?;
        tracing::info!(id = %secret.id(), "obtained the CA seal secret (this member is a voter)");
        Ok(())
    }
}
