//! Keeps this member's `pki/crl.pem` equal to the revocation list in etcd (`/quorate/crl`,
//! signed by the issuer, see `issuer::crl`). etcd reads that file at every new client and peer
//! connection, so a revoked certificate is refused by every member within one look
//! ([`EVERY`]) of the issuer signing the list. The task is the file's only writer after the
//! certificate step wrote the first one; it writes only a list that parses and was signed by
//! the CA this node trusts, never an empty file.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::etcd::client::connect;
use crate::etcd::EtcdHealth;
use crate::issuer::crl::{CrlRecord, CRL_KEY};
use crate::liveness::Heartbeat;
use crate::pki::crl::crl_serials;
use crate::pki::{PkiStore, TlsMaterial};

/// How often the list in etcd is read.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

/// The CRL follower.
pub struct CrlSync {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub heartbeat: Heartbeat,
}

impl CrlSync {
    pub async fn run(self, cancel: CancellationToken) {
        let pki = PkiStore::new(self.settings.pki_dir());
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.heartbeat.beat();
            let look = tokio::time::timeout(TIMEOUT * 2, self.look(&pki));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                result = look => match result {
                    Ok(Err(e)) => tracing::debug!(error = %e, "revocation list not read"),
                    Err(_) => tracing::debug!("revocation list not read: etcd is slow"),
                    Ok(Ok(())) => {}
                },
            }
        }
    }

    /// Reads the list and writes it when it differs from the file.
    async fn look(&self, pki: &PkiStore) -> Result<(), String> {
        let material = self.material.borrow().clone();
        let (Some(tls), Some(ca_pem)) = (material.client(), material.ca_pem.as_deref()) else {
            return Ok(());
        };
        let health = self.health.borrow().clone();
        if health.member_id.is_none() {
            return Ok(());
        }
        let endpoints = health.endpoints(self.settings.client_url());
        let mut client = connect(&endpoints, tls, TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let got = client.get(CRL_KEY, None).await.map_err(|e| e.to_string())?;
        let Some(kv) = got.kvs().first() else {
            return Ok(());
        };
        let record: CrlRecord = serde_json::from_slice(kv.value())
            .map_err(|e| format!("{CRL_KEY} is not a revocation list: {e}"))?;
        if pki.load_crl().ok().flatten().as_deref() == Some(record.pem.as_str()) {
            return Ok(());
        }
        let serials = crl_serials(&record.pem, ca_pem)
            .map_err(|e| format!("{CRL_KEY} holds a list this node does not accept: {e}"))?;
        pki.save_crl(&record.pem).map_err(|e| e.to_string())?;
        tracing::info!(
            number = record.number,
            revoked = serials.len(),
            file = %pki.crl_path().display(),
            "revocation list updated"
        );
        Ok(())
    }
}
