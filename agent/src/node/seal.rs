//! Keeps this member's copy of the CA seal secret ([`crate::issuer::seal_secret`]): once its
//! member is a started voter and the cluster has a secret it does not hold, it asks the other
//! members' agents for it (presenting its node certificate, `api::seal`), checks it against
//! the fingerprint in etcd and keeps it in the PKI directory. It never asks before it is a
//! voter: the holders would refuse. Holding it, it records so in etcd
//! (`/quorate/seal/holders/<name>`): the issuer re-seals the CA once every voter has.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
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

/// What this member knows of the CA seal, for `quorate status` and /status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealStatus {
    /// The cluster's CA seal secret's fingerprint (None: none made yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// This host holds it.
    pub held: bool,
    /// The CA in etcd is sealed with it (else with the join token).
    pub ca_sealed: bool,
    /// etcd was read at least once.
    pub looked: bool,
    /// Why the last look failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SealStatus {
    /// The "CA seal:" line of `quorate status`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let short = |id: &str| id.chars().take(12).collect::<String>();
        let line = match (&self.secret, self.ca_sealed) {
            _ if !self.looked => "not read yet".to_owned(),
            (None, _) => "join token (no CA seal secret made yet)".to_owned(),
            (Some(id), true) => format!(
                "CA seal secret {} ({}); the join token alone does not open the CA",
                short(id),
                if self.held {
                    "held here"
                } else {
                    "NOT held here yet"
                }
            ),
            (Some(id), false) => format!(
                "join token, until every voter holds CA seal secret {} ({})",
                short(id),
                if self.held {
                    "held here"
                } else {
                    "not held here yet"
                }
            ),
        };
        let _ = writeln!(out, "\nCA seal:     {line}");
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  last look failed: {e}");
        }
    }
}

/// The keeper.
pub struct SealKeeper {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub view: watch::Receiver<GossipView>,
    pub published: watch::Sender<SealStatus>,
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
                Ok(settled) => {
                    checked = settled.then(tokio::time::Instant::now);
                    last_error = None;
                    self.published.send_if_modified(|s| {
                        let changed = s.error.is_some();
                        s.error = None;
                        changed
                    });
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::info!(error = %e, "CA seal secret not obtained yet");
                    }
                    self.published.send_if_modified(|s| {
                        let changed = s.error.as_ref() != Some(&e);
                        s.error = Some(e.clone());
                        changed
                    });
                    last_error = Some(e);
                    checked = None;
                }
            }
        }
    }

    /// Whether all is settled after the look: this host holds the cluster's secret and the CA
    /// in etcd is sealed with it (then it looks again only after [`WHILE_HELD`]).
    async fn look(&self) -> Result<bool, String> {
        let pki_dir = self.settings.pki_dir();
        let material = self.material.borrow().clone();
        let health = self.health.borrow().clone();
        let own_url = self.settings.client_url();
        let Some(mut client) = member_client(&material, &health, own_url, TIMEOUT).await? else {
            return Ok(false);
        };
        let id = seal_secret::cluster_id(&mut client)
            .await
            .map_err(|e| e.to_string())?;
        let held = id
            .as_ref()
            .is_some_and(|id| seal_secret::load(&pki_dir).is_some_and(|h| &h.id() == id));
        let ca_sealed = match &id {
            None => false,
            Some(id) => client
                .get(crate::issuer::CA_KEY, None)
                .await
                .map_err(|e| e.to_string())?
                .kvs()
                .first()
                .and_then(|kv| crate::issuer::SealedCa::from_json(kv.value()).ok())
                .is_some_and(|ca| ca.sealed_with(id)),
        };
        self.published.send_if_modified(|s| {
            let now = SealStatus {
                secret: id.clone(),
                held,
                ca_sealed,
                looked: true,
                error: s.error.clone(),
            };
            let changed = *s != now;
            *s = now;
            changed
        });
        let Some(id) = id else {
            return Ok(false);
        };
        if held {
            // The issuer seals the CA with it once every voter has recorded it (`reseal`).
            reseal::record_holder(&mut client, &self.settings.name, &id)
                .await
                .map_err(|e| format!("recording that this member holds it: {e}"))?;
            return Ok(ca_sealed);
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
                    self.published.send_modify(|s| s.held = true);
                    reseal::record_holder(&mut client, &self.settings.name, &id)
                        .await
                        .map_err(|e| format!("recording that this member holds it: {e}"))?;
                    return Ok(ca_sealed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &SealStatus) -> String {
        let mut out = String::new();
        s.render(&mut out);
        out
    }

    #[test]
    fn the_status_line_says_what_seals_the_ca_and_whether_it_is_held() {
        let id = "5f0c2a9e8b7d6c5f4e3d2c1b0a998877".to_owned();
        let mut s = SealStatus::default();
        assert!(line(&s).contains("not read yet"));
        s.looked = true;
        assert!(line(&s).contains("join token (no CA seal secret made yet)"));
        s.secret = Some(id.clone());
        assert!(
            line(&s).contains("join token, until every voter holds CA seal secret 5f0c2a9e8b7d (not held here yet)"),
            "{}",
            line(&s)
        );
        s.held = true;
        s.ca_sealed = true;
        assert!(line(&s).contains("CA seal secret 5f0c2a9e8b7d (held here); the join token alone"));
        s.held = false;
        s.error = Some("etcd is slow".into());
        let l = line(&s);
        assert!(
            l.contains("NOT held here yet") && l.contains("last look failed: etcd is slow"),
            "{l}"
        );
    }
}
