//! The issuer election. Once the cluster is formed, exactly one agent signs certificates: the
//! one holding the etcd key `/quorate/issuer` under a 10 s lease it keeps alive. Voting
//! members whose etcd is healthy campaign; the seed at once and the others after a grace
//! period, so the seed is the issuer while it lives. When the holder dies its lease expires and
//! another member takes over, unsealing the CA from `/quorate/ca` into memory. The agent that
//! holds the CA key on disk (the seed) first makes sure the sealed CA is stored in etcd.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sealed::{SealedCa, UnsealError};
use crate::config::Settings;
use crate::etcd::client::connect;
use crate::etcd::{EtcdError, EtcdHealth};
use crate::liveness::{beating, Heartbeat};
use crate::pki::{CaHash, CertificateAuthority, TlsMaterial};
use crate::restore::SignedPlan;
use crate::token::KeyPurpose;

/// etcd key of the issuer lock.
pub const ISSUER_KEY: &str = "/quorate/issuer";
/// etcd key of the sealed CA.
pub const CA_KEY: &str = "/quorate/ca";
const LEASE_TTL: i64 = 10;
/// Non-seed agents wait this long after their member became healthy before campaigning.
const GRACE: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of one term.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("etcd {op} failed: {error}")]
    Etcd { op: &'static str, error: EtcdError },
    #[error("the issuer lease was lost")]
    LeaseLost,
    #[error("the stored CA vanished")]
    CaVanished,
    #[error("{CA_KEY} is not in etcd yet")]
    CaNotStored,
    #[error(transparent)]
    Unseal(#[from] UnsealError),
    #[error("etcd holds the CA {stored}, but this agent's CA is {ours}: two CAs for one cluster")]
    CaConflict { stored: String, ours: String },
    #[error("no certificate to talk to etcd with")]
    NoCertificate,
    #[error("cannot read the local CA: {0}")]
    Pki(#[from] crate::pki::PkiError),
}

/// Classifies a failed etcd request `op`.
fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> IssuerError {
    move |e| IssuerError::Etcd {
        op,
        error: EtcdError::from(e),
    }
}

/// Whether an agent whose member has been a healthy voter since `healthy_since` campaigns at
/// `now`: the seed at once, the others after [`GRACE`], so the seed is the issuer while it lives.
pub fn may_campaign(seed: bool, healthy_since: Option<Instant>, now: Instant) -> bool {
    match healthy_since {
        None => false,
        Some(since) => seed || now.saturating_duration_since(since) >= GRACE,
    }
}

/// The election task. It publishes the CA while this agent is the issuer.
pub struct IssuerTask {
    settings: Arc<Settings>,
    health: watch::Receiver<EtcdHealth>,
    material: watch::Receiver<Arc<TlsMaterial>>,
    issuer: watch::Sender<Option<Arc<CertificateAuthority>>>,
    heartbeat: Heartbeat,
    /// The newest restore plan: after a restore, the CA it was decided under goes back.
    restore_plan: Option<watch::Receiver<Option<SignedPlan>>>,
}

impl IssuerTask {
    pub fn new(
        settings: Arc<Settings>,
        health: watch::Receiver<EtcdHealth>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        issuer: watch::Sender<Option<Arc<CertificateAuthority>>>,
        heartbeat: Heartbeat,
    ) -> Self {
        Self {
            settings,
            health,
            material,
            issuer,
            heartbeat,
            restore_plan: None,
        }
    }

    /// Follows the newest restore plan (see [`super::restored`]).
    pub fn with_restore_plan(mut self, plan: watch::Receiver<Option<SignedPlan>>) -> Self {
        self.restore_plan = Some(plan);
        self
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut healthy_since: Option<Instant> = None;
        loop {
            self.heartbeat.beat();
            if self.voter_healthy() {
                let now = Instant::now();
                healthy_since.get_or_insert(now);
                if may_campaign(self.settings.seed, healthy_since, now) {
                    if let Err(e) = self.term(&cancel).await {
                        tracing::warn!(error = %e, "issuer election");
                    }
                    self.issuer.send_replace(None);
                }
            } else {
                healthy_since = None;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.health.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        self.issuer.send_replace(None);
    }

    /// The newest restore plan this agent holds.
    fn newest_plan(&self) -> Option<crate::restore::RestorePlan> {
        self.restore_plan
            .as_ref()
            .and_then(|p| p.borrow().as_ref().map(|s| s.plan.clone()))
    }

    fn voter_healthy(&self) -> bool {
        let h = self.health.borrow();
        h.healthy() && !h.is_learner
    }

    /// One attempt: store the CA if we hold it, campaign, and if we win, serve until the lease
    /// is lost, the member becomes unhealthy, or the agent stops.
    async fn term(&mut self, cancel: &CancellationToken) -> Result<(), IssuerError> {
        let material = self.material.borrow().clone();
        let tls = material.client().ok_or(IssuerError::NoCertificate)?;
        let url = self.settings.client_url();
        let mut client = connect(&[url], tls, TIMEOUT)
            .await
            .map_err(etcd("connect"))?;
        let seal_key = self.settings.token.derive(KeyPurpose::CaSeal);
        let disk_ca = material.disk_ca.clone();
        // The clean-up after a restore, on every term for a while after it was decided (the
        // restored cluster comes up within that time; it is idempotent), then never again.
        let plan = self
            .newest_plan()
            .filter(|p| crate::clock::unix_now() < p.decided_at + AFTER_RESTORE.as_secs());
        if plan.is_some() {
            super::restored::put_back(
                &mut client,
                plan.as_ref(),
                material.ca_hash,
                disk_ca.as_deref(),
                &seal_key,
            )
            .await
            .map_err(etcd("put the CA back after a restore"))?;
        }
        if let Some(plan) = &plan {
            super::restored::remove_stale_held(&mut client, plan)
                .await
                .map_err(etcd("remove the snapshot's stale lease-held keys"))?;
            if let Some(stored) = read_ca(&mut client).await? {
                super::seal_secret::adopt_after_restore(
                    &mut client,
                    &self.settings.pki_dir(),
                    &stored,
                )
                .await
                .map_err(etcd("put the CA seal secret's fingerprint back"))?;
            }
        }
        if let Some(ca) = &disk_ca {
            store_ca(&mut client, ca, &seal_key).await?;
        }
        // While an issuer holds the lease there is nothing to campaign for: one read a second,
        // not the CA and a lease.
        let holder = client
            .get(ISSUER_KEY, None)
            .await
            .map_err(etcd("read the issuer key"))?;
        if !holder.kvs().is_empty() {
            return Ok(());
        }
        // Only an agent that can open the CA campaigns: once it is sealed with the CA seal
        // secret, a voter that has not got the secret yet leaves the issuing to one that has.
        let ca = match disk_ca {
            Some(ca) => ca,
            None => {
                let held = super::seal_secret::load(&self.settings.pki_dir());
                let Some(stored) = read_ca(&mut client).await? else {
                    // The seed stores it before it campaigns: nothing to issue with yet.
                    tracing::debug!("not campaigning for issuer: {}", IssuerError::CaNotStored);
                    return Ok(());
                };
                match stored.open(&seal_key, held.as_ref()) {
                    Ok(ca) => Arc::new(ca),
                    Err(UnsealError::SecretNotHeld { id }) => {
                        tracing::debug!(id = %id, "not campaigning for issuer: the CA seal secret is not here yet");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let lease = client
            .lease_grant(LEASE_TTL, None)
            .await
            .map_err(etcd("lease grant"))?
            .id();
        let name = self.settings.name.clone();
        let campaign = Txn::new()
            .when([Compare::create_revision(ISSUER_KEY, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                ISSUER_KEY,
                name.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(ISSUER_KEY, None)]);
        let won = client
            .txn(campaign)
            .await
            .map_err(etcd("campaign"))?
            .succeeded();
        if !won {
            let _ = client.lease_revoke(lease).await;
            return Ok(());
        }
        let ca = match check_trusted(material.ca_hash, ca) {
            Ok(ca) => ca,
            Err(e) => {
                // Let another member take over at once instead of holding the lease idle.
                let _ = client.lease_revoke(lease).await;
                return Err(e);
            }
        };
        tracing::info!(ca_hash = %ca.hash(), "this agent is now the certificate issuer");
        self.issuer.send_replace(Some(ca.clone()));
        let result = self.hold(&mut client, lease, &ca, cancel).await;
        self.issuer.send_replace(None);
        let _ = client.lease_revoke(lease).await;
        tracing::info!("this agent is no longer the certificate issuer");
        result
    }

    async fn hold(
        &mut self,
        client: &mut Client,
        lease: i64,
        ca: &CertificateAuthority,
        cancel: &CancellationToken,
    ) -> Result<(), IssuerError> {
        let (mut keeper, mut responses) = client
            .lease_keep_alive(lease)
            .await
            .map_err(etcd("lease keep-alive"))?;
        let mut tick = tokio::time::interval(Duration::from_secs(LEASE_TTL as u64 / 3));
        // Renewals come every 3.3 s; the heartbeat beats every second in between.
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        let mut last_prune: Option<tokio::time::Instant> = None;
        let mut auth_on = false;
        let mut last_users: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                _ = beat.tick() => self.heartbeat.beat(),
                _ = tick.tick() => {
                    self.heartbeat.beat();
                    if !self.voter_healthy() {
                        return Ok(());
                    }
                    keeper.keep_alive().await.map_err(etcd("lease keep-alive"))?;
                    match tokio::time::timeout(TIMEOUT, responses.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                        _ => return Err(IssuerError::LeaseLost),
                    }
                    // Authentication goes on once every member has started (until then some
                    // member's name is unknown, and it would be locked out).
                    // Afterwards, names recorded since (hosts joining a restored cluster got
                    // their certificates before etcd ran here) become users within USERS_EVERY.
                    if !auth_on || last_users.is_none_or(|at| at.elapsed() >= USERS_EVERY) {
                        last_users = Some(tokio::time::Instant::now());
                        // The CA seal secret exists once an issuer has run (`seal_secret`).
                        // Once every voter holds it, the CA in etcd is sealed with it (`reseal`).
                        let pki_dir = self.settings.pki_dir();
                        let token_key = self.settings.token.derive(KeyPurpose::CaSeal);
                        let seal = tokio::time::timeout(TIMEOUT * 2, async {
                            match super::seal_secret::ensure_created(client, &pki_dir).await? {
                                Some(secret) => super::reseal::reseal(client, &secret, &token_key).await.map(Some),
                                None => Ok(None),
                            }
                        });
                        match beating(&self.heartbeat, cancel, seal).await {
                            None => return Ok(()),
                            Some(Ok(Err(e))) => tracing::warn!(error = %e, "CA seal secret not made or used"),
                            Some(Err(_)) => tracing::warn!("CA seal secret not made or used: etcd is slow"),
                            Some(Ok(Ok(_))) => {}
                        }
                        // Roles first: new users may hold them.
                        let roles = tokio::time::timeout(TIMEOUT * 2, super::roles::reconcile(client));
                        match beating(&self.heartbeat, cancel, roles).await {
                            None => return Ok(()),
                            Some(Ok(Err(e))) => tracing::warn!(error = %e, "etcd roles not updated"),
                            Some(Err(_)) => tracing::warn!("etcd roles not updated: etcd is slow"),
                            Some(Ok(Ok(()))) => {}
                        }
                        let carried = self.newest_plan().map(|p| p.issued).unwrap_or_default();
                        let enable = tokio::time::timeout(TIMEOUT * 4, enable_auth(client, auth_on, &carried));
                        match beating(&self.heartbeat, cancel, enable).await {
                            None => return Ok(()),
                            Some(Ok(Ok(on))) => auth_on = auth_on || on,
                            Some(Ok(Err(e))) => tracing::warn!(error = %e, "etcd authentication not enabled yet"),
                            Some(Err(_)) => tracing::warn!("etcd authentication not enabled yet: etcd is slow"),
                        }
                    }
                    // Revocation requests become a signed CRL within one renewal period.
                    let reconcile =
                        tokio::time::timeout(TIMEOUT, super::crl::reconcile(client, ca));
                    match beating(&self.heartbeat, cancel, reconcile).await {
                        None => return Ok(()),
                        Some(Ok(Err(e))) => tracing::warn!(error = %e, "revocation list not updated"),
                        Some(Err(_)) => tracing::warn!("revocation list not updated: etcd is slow"),
                        Some(Ok(Ok(_))) => {}
                    }
                    // Records of certificates expired for a day go, once an hour.
                    if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                        last_prune = Some(tokio::time::Instant::now());
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or_default();
                        let prune = tokio::time::timeout(TIMEOUT, super::issued::prune(client, now));
                        match beating(&self.heartbeat, cancel, prune).await {
                            None => return Ok(()),
                            Some(Ok(Ok(n))) if n > 0 => tracing::info!(records = n, "forgot expired certificates"),
                            Some(Ok(Err(e))) => tracing::debug!(error = %e, "expired certificate records not pruned"),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

/// Makes every member's name (and every name a node certificate was recorded for: hosts
/// joining now) an etcd user with the root role, every recorded client certificate's name one
/// with the client role, and turns authentication on (see [`crate::etcd::auth`]) once no
/// member is unstarted; whether it is on. Each term does it again: etcd ignores what is there
/// already. Once it is on (`on`), only names that are no user yet are added.
async fn enable_auth(
    client: &mut Client,
    on: bool,
    carried: &[super::issued::Issued],
) -> Result<bool, IssuerError> {
    use crate::api::CertKind;
    let members = client.member_list().await.map_err(etcd("member list"))?;
    let unstarted = members.members().iter().any(|m| m.name().is_empty());
    let mut agents: std::collections::BTreeSet<String> = members
        .members()
        .iter()
        .map(|m| m.name().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let now = crate::clock::unix_now();
    // Revoked certificates make no users (`cert revoke --name` deletes the user).
    let revoked = super::crl::revoked_serials(client)
        .await
        .map_err(etcd("read the revocation requests"))?;
    let mut records = super::issued::list(client)
        .await
        .map_err(etcd("read the issued certificates"))?;
    // After a restore, the records the plan carries and the snapshot lacks go back first.
    let lacking: Vec<_> = super::issued::lacking(carried, &records, now)
        .into_iter()
        .cloned()
        .collect();
    for r in &lacking {
        super::issued::register(client, r)
            .await
            .map_err(etcd("write back an issued-certificate record"))?;
    }
    if !lacking.is_empty() {
        tracing::info!(
            records = lacking.len(),
            "issued-certificate records the restored snapshot lacked are back (their names become etcd users)"
        );
    }
    records.extend(lacking);
    let records: Vec<_> = records
        .into_iter()
        .filter(|r| r.not_after > now && !revoked.contains(&r.serial))
        .collect();
    agents.extend(
        records
            .iter()
            .filter(|r| r.kind == CertKind::Node)
            .map(|r| r.name.clone()),
    );
    let agents: Vec<String> = agents.into_iter().collect();
    let clients = super::issued::client_roles(&records);
    crate::etcd::auth::ensure_users(client, &agents, &clients, on)
        .await
        .map_err(etcd("create the etcd users"))?;
    if on {
        return Ok(true);
    }
    if unstarted {
        return Ok(false);
    }
    client
        .auth_enable()
        .await
        .map_err(etcd("enable authentication"))?;
    tracing::info!(
        agents = agents.len(),
        clients = clients.len(),
        "etcd authentication is on (certificate names are etcd users)"
    );
    Ok(true)
}

/// How often the issuer makes newly recorded names etcd users once authentication is on.
const USERS_EVERY: Duration = Duration::from_secs(10);
/// How long after a restore plan was decided the issuer election cleans up after it.
const AFTER_RESTORE: Duration = Duration::from_secs(6 * 3600);

/// How often the issuer prunes the records of expired certificates.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Stores the sealed CA unless one is there; a different one there is a conflict.
async fn store_ca(
    client: &mut Client,
    ca: &CertificateAuthority,
    key: &[u8; 32],
) -> Result<(), IssuerError> {
    let sealed = SealedCa::seal(ca, key);
    let txn = Txn::new()
        .when([Compare::create_revision(CA_KEY, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(CA_KEY, sealed.to_json(), None)])
        .or_else([TxnOp::get(CA_KEY, None)]);
    let resp = client.txn(txn).await.map_err(etcd("store CA"))?;
    if resp.succeeded() {
        tracing::info!("stored the CA in etcd, sealed with the join token");
        return Ok(());
    }
    let stored = stored_value(&resp.op_responses()).ok_or(IssuerError::CaVanished)?;
    let stored = SealedCa::from_json(&stored)?.hash()?;
    if stored != ca.hash() {
        return Err(IssuerError::CaConflict {
            stored: stored.to_string(),
            ours: ca.hash().to_string(),
        });
    }
    Ok(())
}

/// The CA must be the one this node trusts (its ca.pem), or it must not sign anything.
fn check_trusted(
    trusted: Option<CaHash>,
    ca: Arc<CertificateAuthority>,
) -> Result<Arc<CertificateAuthority>, IssuerError> {
    if let Some(trusted) = trusted {
        if trusted != ca.hash() {
            return Err(IssuerError::CaConflict {
                stored: ca.hash().to_string(),
                ours: trusted.to_string(),
            });
        }
    }
    Ok(ca)
}

/// The sealed CA in etcd, if one is stored.
async fn read_ca(client: &mut Client) -> Result<Option<SealedCa>, IssuerError> {
    let resp = client.get(CA_KEY, None).await.map_err(etcd("read CA"))?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => Ok(Some(SealedCa::from_json(kv.value())?)),
    }
}

fn stored_value(responses: &[TxnOpResponse]) -> Option<Vec<u8>> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_campaigns_at_once_the_others_after_the_grace() {
        let t0 = Instant::now();
        assert!(!may_campaign(true, None, t0), "not a healthy voter: never");
        assert!(!may_campaign(false, None, t0));
        assert!(may_campaign(true, Some(t0), t0));
        assert!(!may_campaign(
            false,
            Some(t0),
            t0 + GRACE - Duration::from_millis(1)
        ));
        assert!(may_campaign(false, Some(t0), t0 + GRACE));
    }
}
