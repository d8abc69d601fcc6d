//! The client agent's one loop: every second it decides what is due (pure, [`due`]) and does
//! it, each piece of IO inside [`beating`]: ask a member for the directory (every
//! [`ASK_EVERY`], sooner after a failure), get a certificate when there is none, it is due for
//! renewal (two thirds of its lifetime) or the cluster's CA changed, write the files that
//! changed, run `on_change` once the burst is over, and check that an endpoint answers with the
//! certificate. The key is made once (`state_dir/client-key.pem`, 0600) and kept: renewals sign
//! the same key, so the key file never changes under a consumer.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::discover::Discovery;
use super::files::{self, Contents};
use super::hook::{self, Debounce};
use super::serve::unix;
use super::{ClientStatus, HeldCert};
use crate::api::{request_certificate, CertKind, CsrRequest, ServerTrust};
use crate::config::{ClientSettings, Settings};
use crate::etcd::client::{connect, ClientTls};
use crate::fsutil;
use crate::gossip::directory::Directory;
use crate::liveness::{beating, Heartbeat, Turns};
use crate::pki::{
    inspect, key_matches_cert, renewal_time, verify_issued_by, CaHash, CertInfo, NodeKey,
};
use crate::token::KeyPurpose;

/// How often the directory is asked for while all is well.
pub const ASK_EVERY: Duration = Duration::from_secs(10);
/// How soon after a failed ask, renewal or check the next try comes.
pub const RETRY: Duration = Duration::from_secs(3);
/// How often an endpoint is checked with the certificate.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one etcd endpoint has to answer the check.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate the agent holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub cert_pem: String,
    pub ca_pem: String,
    pub ca_hash: CaHash,
    pub info: CertInfo,
}

/// Why a certificate is wanted now, if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// None held (or the one on disk is unusable).
    First,
    /// Two thirds of its lifetime have passed.
    Renewal,
    /// The cluster's CA is another than the one that signed it.
    NewCa,
}

/// Whether a certificate is wanted at `now` (pure).
pub fn want(held: Option<&Held>, cluster_ca: Option<CaHash>, now: SystemTime) -> Option<Want> {
    let Some(h) = held else {
        return Some(Want::First);
    };
    if cluster_ca.is_some_and(|ca| ca != h.ca_hash) {
        return Some(Want::NewCa);
    }
    (now >= renewal_time(h.info.not_before, h.info.not_after)).then_some(Want::Renewal)
}

/// The CA the issuer must prove: the config's pin, else the one the members report (the
/// directory is authenticated with the token). A pin the members contradict is an error.
pub fn expected_ca(pin: Option<CaHash>, directory: &Directory) -> Result<CaHash, String> {
    match (pin, directory.ca_hash) {
        (Some(pin), Some(reported)) if pin != reported => Err(format!(
            "the members report CA {reported}, but this host pins {pin} (ca_hash or the pinned \
             token): refusing it. Fix: use this cluster's pinned client token"
        )),
        (Some(pin), _) => Ok(pin),
        (None, Some(reported)) => Ok(reported),
        (None, None) => Err(format!(
            "{} does not know the cluster CA yet",
            directory.answered_by
        )),
    }
}

/// The client loop.
pub struct Keeper {
    settings: Arc<Settings>,
    client: ClientSettings,
    discovery: Discovery,
    key_pem: String,
    held: Option<Held>,
    directory: Option<Directory>,
    join: Vec<SocketAddr>,
    next_ask: Instant,
    next_request: Instant,
    next_check: Instant,
    debounce: Debounce,
    /// The `on_change` run under way: it runs beside the loop, which keeps renewing.
    hook_run: Option<tokio::task::JoinHandle<Result<(), String>>>,
    status: ClientStatus,
    published: watch::Sender<ClientStatus>,
    heartbeat: Heartbeat,
}

impl Keeper {
    /// Loads (or makes) the key, and the certificate a previous run left in `client.dir`.
    pub async fn start(
        settings: Arc<Settings>,
        client: ClientSettings,
        published: watch::Sender<ClientStatus>,
        heartbeat: Heartbeat,
    ) -> Result<Self, String> {
        let key_pem = load_or_make_key(&settings.state_dir.join("client-key.pem"))?;
        let held = load_held(&client, &key_pem);
        if let Some(h) = &held {
            tracing::info!(serial = %h.info.serial_hex, "using the client certificate in {}", client.dir.display());
        }
        let gossip_key = settings.token.derive(KeyPurpose::Gossip);
        let discovery = Discovery::bind(settings.bind, &gossip_key, &client.name)
            .await
            .map_err(|e| format!("cannot open a UDP socket to ask the members: {e}"))?;
        let join = crate::gossip::resolve_join_targets(&settings.join).await;
        let now = Instant::now();
        let status = ClientStatus {
            mode: "client".into(),
            node: settings.name.clone(),
            client_name: client.name.clone(),
            dir: client.dir.clone(),
            message: "asking the members for the cluster's directory".into(),
            on_change: hook::HookStatus {
                command: client.on_change.clone(),
                ..Default::default()
            },
            ..ClientStatus::default()
        };
        Ok(Self {
            settings,
            client,
            discovery,
            key_pem,
            held,
            directory: None,
            join,
            next_ask: now,
            next_request: now,
            next_check: now,
            debounce: Debounce::default(),
            hook_run: None,
            status,
            published,
            heartbeat,
        })
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut turns = Turns::every(Duration::from_secs(1));
        self.publish();
        while turns.next(&self.heartbeat, &cancel).await {
            let heartbeat = self.heartbeat.clone();
            if beating(&heartbeat, &cancel, self.turn()).await.is_none() {
                return;
            }
            self.publish();
        }
    }

    async fn turn(&mut self) {
        let now = Instant::now();
        if now >= self.next_ask {
            self.ask().await;
        }
        if let Some(directory) = self.directory.clone() {
            if Instant::now() >= self.next_request {
                self.maybe_request(&directory).await;
            }
            self.write_files(&directory);
        }
        self.hook();
        if Instant::now() >= self.next_check {
            self.check_endpoint().await;
        }
        self.update_readiness();
    }

    /// Asks the members known from the last answer first, then the join targets.
    async fn ask(&mut self) {
        let mut targets: Vec<SocketAddr> = self
            .directory
            .iter()
            .flat_map(|d| d.members.iter().filter_map(|m| m.gossip_addr))
            .collect();
        if targets.is_empty() {
            targets = crate::gossip::resolve_join_targets(&self.settings.join).await;
            if !targets.is_empty() {
                self.join = targets.clone();
            }
        }
        for t in &self.join {
            if !targets.contains(t) {
                targets.push(*t);
            }
        }
        match self.discovery.ask_any(&targets, ASK_TIMEOUT).await {
            Ok(d) => {
                if self.directory.as_ref().map(|o| &o.members) != Some(&d.members) {
                    tracing::info!(
                        from = %d.answered_by,
                        members = ?d.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                        "directory"
                    );
                }
                self.status.answered_by = Some(d.answered_by.clone());
                self.status.directory_at = Some(unix(SystemTime::now()));
                self.status.ca_hash = d.ca_hash;
                self.directory = Some(d);
                self.next_ask = Instant::now() + ASK_EVERY;
            }
            Err(e) => {
                self.status.message = format!("cannot get the cluster's directory: {e}");
                tracing::warn!(error = %e, "no member answered");
                self.next_ask = Instant::now() + RETRY;
            }
        }
    }

    async fn maybe_request(&mut self, directory: &Directory) {
        let now = SystemTime::now();
        let Some(why) = want(self.held.as_ref(), directory.ca_hash, now) else {
            return;
        };
        match self.request(directory).await {
            Ok(held) => {
                tracing::info!(
                    reason = ?why,
                    serial = %held.info.serial_hex,
                    not_after = %humantime::format_rfc3339_seconds(held.info.not_after),
                    "client certificate obtained"
                );
                self.status.renewals += 1;
                self.status.renewal_error = None;
                self.held = Some(held);
            }
            Err(e) => {
                tracing::warn!(reason = ?why, error = %e, "cannot get a client certificate");
                self.status.renewal_failures += 1;
                self.status.renewal_error = Some(e);
                self.next_request = Instant::now() + RETRY;
            }
        }
    }

    async fn request(&self, directory: &Directory) -> Result<Held, String> {
        let expected = expected_ca(self.settings.ca_pin, directory)?;
        let issuer = directory
            .issuer_api
            .ok_or_else(|| format!("{} knows no live issuer", directory.answered_by))?;
        let key = NodeKey::from_pem(&self.key_pem).map_err(|e| e.to_string())?;
        let csr = key.csr_pem(&self.client.name).map_err(|e| e.to_string())?;
        let signed = request_certificate(
            issuer,
            &ServerTrust::Pinned(expected),
            expected,
            &self.settings.token.derive(KeyPurpose::ApiProof),
            &CsrRequest {
                name: &self.client.name,
                kind: CertKind::Client,
                csr_pem: &csr,
                key_pem: &self.key_pem,
                from: None,
                renewing: None,
                role: self.client.role.as_deref(),
            },
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        let info = inspect(&signed.cert_pem).map_err(|e| e.to_string())?;
        Ok(Held {
            cert_pem: signed.cert_pem,
            ca_pem: signed.ca_pem,
            ca_hash: expected,
            info,
        })
    }

    fn write_files(&mut self, directory: &Directory) {
        let Some(held) = &self.held else { return };
        let contents = Contents {
            name: &self.client.name,
            ca_pem: &held.ca_pem,
            cert_pem: &held.cert_pem,
            key_pem: &self.key_pem,
            members: &directory.members,
        };
        let rendered = files::render(&self.client.dir, &contents);
        match files::write_changed(&rendered) {
            Ok(written) if written.is_empty() => {}
            Ok(written) => {
                let names: Vec<String> = written
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                tracing::info!(dir = %self.client.dir.display(), files = ?names, "files updated");
                if self.status.endpoints.is_empty() {
                    // The first time the files are complete: check an endpoint at once.
                    self.next_check = Instant::now();
                }
                self.debounce.changed(Instant::now());
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the client files");
                self.status.message = format!("cannot write the files: {e}");
                return;
            }
        }
        self.status.endpoints = files::endpoints(&directory.members)
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.status.certificate = Some(HeldCert {
            serial: held.info.serial_hex.clone(),
            not_before: unix(held.info.not_before),
            not_after: unix(held.info.not_after),
            renew_at: unix(renewal_time(held.info.not_before, held.info.not_after)),
        });
    }

    /// Collects a finished `on_change` run, and starts one when a burst of changes is over
    /// (a burst during a run gets its own run afterwards).
    fn hook(&mut self) {
        let Some(command) = self.client.on_change.clone() else {
            return;
        };
        if let Some(run) = self.hook_run.take_if(|r| r.is_finished()) {
            let result = match run.now_or_never() {
                Some(Ok(result)) => result,
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the run was lost".into()),
            };
            let h = &mut self.status.on_change;
            h.runs += 1;
            match result {
                Ok(()) => h.last_error = None,
                Err(e) => {
                    tracing::error!(command = %command, error = %e, "on_change failed");
                    h.failures += 1;
                    h.last_error = Some(e);
                }
            }
        }
        if self.hook_run.is_none() && self.debounce.due(Instant::now()) {
            tracing::info!(command = %command, "running on_change");
            self.hook_run = Some(tokio::spawn(async move { hook::run(&command).await }));
        }
    }

    /// Checks that an endpoint answers with the certificate: a member list, which etcd serves
    /// to any authenticated user on every version (Status needs the root role from 3.5.28 on
    /// when authentication is enabled).
    async fn check_endpoint(&mut self) {
        self.next_check = Instant::now() + CHECK_EVERY;
        let Some(held) = &self.held else { return };
        if self.status.endpoints.is_empty() {
            return;
        }
        let tls = ClientTls {
            ca: held.ca_pem.clone(),
            cert: held.cert_pem.clone(),
            key: self.key_pem.clone(),
        };
        // One endpoint at a time: a channel over all of them sends some requests to a member
        // that is down, and one member down must not make the consumer's files look useless.
        let mut answered = Err("no endpoint".to_owned());
        for endpoint in &self.status.endpoints {
            let attempt = async {
                let mut c = connect(std::slice::from_ref(endpoint), &tls, ENDPOINT_TIMEOUT).await?;
                c.member_list().await.map(|_| ())
            };
            answered = match tokio::time::timeout(ENDPOINT_TIMEOUT, attempt).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{endpoint}: {e}")),
                Err(_) => Err(format!("{endpoint}: no answer in {ENDPOINT_TIMEOUT:?}")),
            };
            if answered.is_ok() {
                break;
            }
        }
        if let Err(e) = &answered {
            tracing::warn!(error = %e, "no endpoint answered with the client certificate");
            self.next_check = Instant::now() + RETRY;
        }
        self.status.endpoint_answers = answered.is_ok();
    }

    fn update_readiness(&mut self) {
        let now = SystemTime::now();
        let valid = self
            .held
            .as_ref()
            .is_some_and(|h| now >= h.info.not_before && now < h.info.not_after);
        self.status.ready =
            valid && self.status.endpoint_answers && self.status.certificate.is_some();
        let message = if self.status.ready {
            format!(
                "certificate {} valid, {} endpoint(s)",
                self.status
                    .certificate
                    .as_ref()
                    .map(|c| c.serial.as_str())
                    .unwrap_or("-"),
                self.status.endpoints.len()
            )
        } else if let Some(e) = &self.status.renewal_error {
            format!("cannot get a certificate: {e}")
        } else if self.directory.is_none() {
            return;
        } else if !valid {
            "getting a client certificate".to_owned()
        } else {
            "no endpoint answers with the certificate".to_owned()
        };
        self.status.message = message;
    }

    fn publish(&mut self) {
        let (ds, bs, dr, br) = self.discovery.traffic.totals();
        self.status.datagrams_sent = ds;
        self.status.bytes_sent = bs;
        self.status.datagrams_received = dr;
        self.status.bytes_received = br;
        let status = self.status.clone();
        self.published.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

/// The client key: made once, 0600, kept across renewals.
fn load_or_make_key(path: &Path) -> Result<String, String> {
    if let Some(pem) = fsutil::read_optional(path).map_err(|e| e.to_string())? {
        NodeKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(pem);
    }
    let pem = NodeKey::generate().map_err(|e| e.to_string())?.to_pem();
    fsutil::atomic_write(path, pem.as_bytes(), fsutil::MODE_PRIVATE).map_err(|e| e.to_string())?;
    Ok(pem)
}

/// The certificate a previous run wrote, if it still goes with the key, chains to the CA
/// beside it and has not expired.
fn load_held(client: &ClientSettings, key_pem: &str) -> Option<Held> {
    let (ca, cert, _) = files::cert_paths(&client.dir, &client.name);
    let ca_pem = std::fs::read_to_string(ca).ok()?;
    let cert_pem = std::fs::read_to_string(cert).ok()?;
    if !key_matches_cert(key_pem, &cert_pem).unwrap_or(false) {
        return None;
    }
    verify_issued_by(&cert_pem, &ca_pem, SystemTime::now()).ok()?;
    Some(Held {
        ca_hash: CaHash::of_cert_pem(&ca_pem).ok()?,
        info: inspect(&cert_pem).ok()?,
        cert_pem,
        ca_pem,
    })
}

#[cfg(test)]
mod tests;
