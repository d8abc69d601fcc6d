//! Keeps this member's `pki/crl.pem` equal to the revocation list in etcd (`/quorate/crl`,
//! signed by the issuer, see `issuer::crl`). etcd reads that file at every new client and peer
//! connection, so a revoked certificate is refused by every member within one look
//! ([`EVERY`]) of the issuer signing the list. The task is the file's only writer after the
//! certificate step wrote the first one; it writes only a list that parses and was signed by
//! the CA this node trusts, never an empty file.
//!
//! It also keeps the registry of issued certificates ([`crate::issuer::issued`]) that
//! `quorate cert revoke --name` reads: it writes the records of the certificates this agent's
//! API signed (handed over by the API server; kept until etcd takes them) and of this node's
//! own certificate.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::CertKind;
use crate::config::Settings;
use crate::etcd::client::{connect, member_client};
use crate::etcd::EtcdHealth;
use crate::issuer::crl::{CrlRecord, CRL_KEY};
use crate::issuer::issued::{self, Issued};
use crate::liveness::{beating, Heartbeat, Turns};
use crate::pki::crl::crl_serials;
use crate::pki::{PkiStore, TlsMaterial};

/// How often the list in etcd is read.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

/// What the follower knows of the list, for /status, `quorate status` and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlStatus {
    /// The number of the list in force here (None before the first one was read from etcd).
    pub number: Option<u64>,
    /// Certificates it revokes.
    pub revoked: usize,
    /// Why the last look failed, if it did.
    pub error: Option<String>,
}

impl CrlStatus {
    /// The "Revocation list:" line of `quorate status`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match (self.number, &self.error) {
            (Some(n), None) => writeln!(
                out,
                "\nRevocation list: list {n}, {} certificate(s) revoked",
                self.revoked
            ),
            (Some(n), Some(e)) => writeln!(
                out,
                "\nRevocation list: list {n}, {} certificate(s) revoked (last look failed: {e})",
                self.revoked
            ),
            (None, _) => writeln!(out, "\nRevocation list: none read from etcd yet"),
        };
    }
}

/// The CRL follower.
pub struct CrlSync {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub published: watch::Sender<CrlStatus>,
    pub heartbeat: Heartbeat,
    /// Certificates this agent's API signed, to record.
    pub issued: Option<mpsc::Receiver<Issued>>,
}

/// Records waiting for etcd at most (beyond, the oldest are dropped with a warning).
const MAX_PENDING: usize = 1024;

impl CrlSync {
    pub async fn run(mut self, cancel: CancellationToken) {
        let pki = PkiStore::new(self.settings.pki_dir());
        let mut turns = Turns::every(EVERY);
        let mut registry = Registry::default();
        while turns.next(&self.heartbeat, &cancel).await {
            if let Some(rx) = self.issued.as_mut() {
                while let Ok(record) = rx.try_recv() {
                    registry.pending.push(record);
                }
                if registry.pending.len() > MAX_PENDING {
                    let dropped = registry.pending.len() - MAX_PENDING;
                    registry.pending.drain(..dropped);
                    tracing::warn!(
                        dropped,
                        "issued-certificate records dropped: etcd has been unreachable too long"
                    );
                }
            }
            let heartbeat = self.heartbeat.clone();
            let record = tokio::time::timeout(TIMEOUT * 2, registry.write(&self));
            if beating(&heartbeat, &cancel, record).await.is_none() {
                return;
            }
            let look = tokio::time::timeout(TIMEOUT * 2, self.look(&pki));
            let Some(result) = beating(&self.heartbeat, &cancel, look).await else {
                return;
            };
            let error = match result {
                Ok(Err(e)) => Some(e),
                Err(_) => Some("etcd is slow".to_owned()),
                Ok(Ok(())) => None,
            };
            if let Some(e) = &error {
                tracing::debug!(error = %e, "revocation list not read");
            }
            self.published.send_if_modified(|s| {
                let changed = s.error != error;
                s.error = error;
                changed
            });
        }
    }

    fn publish(&self, record: &CrlRecord) {
        self.published.send_if_modified(|s| {
            let changed = s.number != Some(record.number) || s.revoked != record.revoked.len();
            s.number = Some(record.number);
            s.revoked = record.revoked.len();
            changed
        });
    }

    /// Reads the list and writes it when it differs from the file.
    async fn look(&self, pki: &PkiStore) -> Result<(), String> {
        let material = self.material.borrow().clone();
        let Some(ca_pem) = material.ca_pem.as_deref() else {
            return Ok(());
        };
        let health = self.health.borrow().clone();
        let own_url = self.settings.client_url();
        let Some(mut client) = member_client(&material, &health, own_url, TIMEOUT).await? else {
            return Ok(());
        };
        let got = client.get(CRL_KEY, None).await.map_err(|e| e.to_string())?;
        let Some(kv) = got.kvs().first() else {
            return Ok(());
        };
        let record: CrlRecord = serde_json::from_slice(kv.value())
            .map_err(|e| format!("{CRL_KEY} is not a revocation list: {e}"))?;
        if pki.load_crl().ok().flatten().as_deref() == Some(record.pem.as_str()) {
            self.publish(&record);
            return Ok(());
        }
        let serials = crl_serials(&record.pem, ca_pem)
            .map_err(|e| format!("{CRL_KEY} holds a list this node does not accept: {e}"))?;
        // Revocation only ever grows: a list in etcd that lacks serials this member's list
        // (signed by the same CA) has, comes from a restore to an older snapshot. Ask for them
        // again, and keep the fuller list until etcd's covers it.
        let known = pki
            .load_crl()
            .ok()
            .flatten()
            .and_then(|pem| crl_serials(&pem, ca_pem).ok())
            .unwrap_or_default();
        let lost = missing(&known, &serials);
        if !lost.is_empty() {
            let now = crate::clock::unix_now();
            for serial in &lost {
                let request = crate::pki::crl::Revoked {
                    serial: serial.clone(),
                    name: String::new(),
                    at: now,
                };
                crate::issuer::crl::put_request(&mut client, &request)
                    .await
                    .map_err(|e| format!("cannot ask again for a lost revocation: {e}"))?;
            }
            tracing::warn!(
                number = record.number,
                lost = ?lost,
                "the revocation list in etcd lacks revocations this member's list has (etcd \
                 restored from an older snapshot?): asked for them again"
            );
            return Ok(());
        }
        pki.save_crl(&record.pem).map_err(|e| e.to_string())?;
        self.publish(&record);
        tracing::info!(
            number = record.number,
            revoked = serials.len(),
            file = %pki.crl_path().display(),
            "revocation list updated"
        );
        Ok(())
    }
}

/// The serials of `known` (this member's list) that `listed` (etcd's) lacks.
fn missing(known: &[String], listed: &[String]) -> Vec<String> {
    known
        .iter()
        .filter(|s| !listed.contains(s))
        .cloned()
        .collect()
}

/// The records of issued certificates this member still has to write.
#[derive(Default)]
struct Registry {
    pending: Vec<Issued>,
    /// This node's own certificate, once recorded.
    own: Option<String>,
}

impl Registry {
    /// Writes what is pending and this node's own certificate; keeps what failed.
    async fn write(&mut self, sync: &CrlSync) {
        let material = sync.material.borrow().clone();
        let Some(tls) = material.client() else {
            return;
        };
        let own = material
            .node
            .as_ref()
            .and_then(|n| Issued::of_cert(&n.client.cert, CertKind::Node))
            .filter(|r| self.own.as_ref() != Some(&r.serial));
        if self.pending.is_empty() && own.is_none() {
            return;
        }
        let health = sync.health.borrow().clone();
        if health.member_id.is_none() {
            return;
        }
        let endpoints = health.endpoints(sync.settings.client_url());
        let Ok(mut client) = connect(&endpoints, tls, TIMEOUT).await else {
            return;
        };
        if let Some(own) = own {
            if issued::register(&mut client, &own).await.is_ok() {
                self.own = Some(own.serial);
            }
        }
        while let Some(record) = self.pending.first() {
            if issued::register(&mut client, record).await.is_err() {
                return;
            }
            self.pending.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_etcd_lost_are_the_ones_this_member_knows_and_etcd_lacks() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            missing(&s(&["a1", "b2", "c3"]), &s(&["a1"])),
            s(&["b2", "c3"])
        );
        assert!(missing(&s(&["a1"]), &s(&["a1", "d4"])).is_empty());
        assert!(missing(&[], &s(&["a1"])).is_empty());
    }

    #[test]
    fn the_status_line_says_the_list_and_a_failed_look() {
        let mut out = String::new();
        CrlStatus::default().render(&mut out);
        assert_eq!(out, "\nRevocation list: none read from etcd yet\n");
        let mut s = CrlStatus {
            number: Some(4),
            revoked: 2,
            error: None,
        };
        let mut out = String::new();
        s.render(&mut out);
        assert_eq!(out, "\nRevocation list: list 4, 2 certificate(s) revoked\n");
        s.error = Some("etcd is slow".into());
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.ends_with("(last look failed: etcd is slow)\n"), "{out}");
    }
}
