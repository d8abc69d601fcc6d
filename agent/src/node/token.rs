//! The join token follower: the one owner of this member's [`Keyring`]. Every few seconds it
//! reads the rotation records in etcd ([`crate::rotation`], over mTLS with the node
//! certificate, so a member that slept through a rotation still catches up), takes the next
//! step the records allow (accept the new token, use it, drop the old), keeps the ring in the
//! state directory before putting it in force, and records its ring for the other members.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::etcd::client::member_client;
use crate::etcd::EtcdHealth;
use crate::keyring::{self, Keyring};
use crate::liveness::{beating, Heartbeat, Turns};
use crate::pki::TlsMaterial;
use crate::rotation::{self, MemberRing, Progress, Step};

/// How often etcd is read.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

/// The join tokens in force here, for `quorate status` and /status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStatus {
    /// The fingerprint of the token messages are sealed with.
    pub in_force: String,
    /// The fingerprints of the others also accepted (during a rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_accepted: Vec<String>,
    /// The config's token was rotated away: the ring in the state directory is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_outdated: Option<String>,
    /// A rotation under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Progress>,
    /// Why the last look failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TokenStatus {
    /// The status of `ring`, `config` being the config's token's fingerprint.
    pub fn of(ring: &Keyring, config: &str) -> Self {
        let in_force = ring.primary().fingerprint();
        Self {
            also_accepted: ring.others().iter().map(|t| t.fingerprint()).collect(),
            config_outdated: ring
                .accepted()
                .all(|t| t.fingerprint() != config)
                .then(|| config.to_owned()),
            in_force,
            rotation: None,
            error: None,
        }
    }

    /// The "Join token:" lines of `quorate status`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let mut line = format!("{} in force", self.in_force);
        if !self.also_accepted.is_empty() {
            let _ = write!(line, ", {} also accepted", self.also_accepted.join(", "));
        }
        let _ = writeln!(out, "\nJoin token:  {line}");
        if let Some(config) = &self.config_outdated {
            let _ = writeln!(
                out,
                "  the config's token ({config}) was rotated: put the one in force in the \
                 config (`quorate token show`)"
            );
        }
        if let Some(p) = &self.rotation {
            let step = match p.step {
                Step::Install => "members are installing it",
                Step::Use => "members are switching to it",
                Step::Retire => "members are dropping the old token",
            };
            let waiting = if p.waiting.is_empty() {
                String::new()
            } else {
                format!("; waiting for {}", p.waiting.join(", "))
            };
            let _ = writeln!(out, "  rotation to {}: {step}{waiting}", p.to);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  last look failed: {e}");
        }
    }
}

/// The follower.
pub struct TokenFollower {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    /// The ring in force (this task is its only sender).
    pub ring: watch::Sender<Arc<Keyring>>,
    pub published: watch::Sender<TokenStatus>,
    pub heartbeat: Heartbeat,
}

/// What one look found and did.
struct Looked {
    /// The ring to put in force, when it changes.
    next: Option<Keyring>,
    rotation: Option<Progress>,
}

impl TokenFollower {
    pub async fn run(self, cancel: CancellationToken) {
        let config_token = self.settings.config_token.fingerprint();
        let mut status = TokenStatus::of(&self.ring.borrow(), &config_token);
        self.published.send_replace(status.clone());
        let mut turns = Turns::every(EVERY);
        while turns.next(&self.heartbeat, &cancel).await {
            let look = tokio::time::timeout(TIMEOUT * 3, self.look());
            let Some(result) = beating(&self.heartbeat, &cancel, look).await else {
                return;
            };
            let result = result.unwrap_or_else(|_| Err("etcd did not answer in time".into()));
            match result {
                Ok(None) => continue,
                Ok(Some(looked)) => {
                    if let Some(next) = looked.next {
                        self.put_in_force(next);
                    }
                    status = TokenStatus {
                        rotation: looked.rotation,
                        ..TokenStatus::of(&self.ring.borrow(), &config_token)
                    };
                }
                Err(e) => {
                    if status.error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "cannot follow the join token rotation records");
                    }
                    status.error = Some(e);
                }
            }
            self.published.send_if_modified(|s| {
                let changed = *s != status;
                *s = status.clone();
                changed
            });
        }
    }

    fn put_in_force(&self, next: Keyring) {
        let before = self.ring.borrow().clone();
        tracing::info!(
            primary = %next.primary().fingerprint(),
            also_accepted = ?next.others().iter().map(|t| t.fingerprint()).collect::<Vec<_>>(),
            was = ?*before,
            "join tokens in force changed"
        );
        self.ring.send_replace(Arc::new(next));
    }

    /// Reads the records, decides, keeps the next ring in the state directory and records it
    /// in etcd. None while this node has no member or no certificate.
    async fn look(&self) -> Result<Option<Looked>, String> {
        let material = self.material.borrow().clone();
        let health = self.health.borrow().clone();
        let own_url = self.settings.client_url();
        let Some(mut client) = member_client(&material, &health, own_url, TIMEOUT).await? else {
            return Ok(None);
        };
        let records = rotation::read(&mut client).await?;
        let ring = self.ring.borrow().clone();
        let members = health.started_names();
        let me = &self.settings.name;
        let newest = rotation::newest(&ring, &records.chain);
        let (next, progress) = rotation::next_ring(&ring, newest, &members, &records.members, me);
        let changed = next != *ring;
        if changed {
            // Kept before it is used: a restart never goes back a step.
            keyring::save(&self.settings.state_dir, &next).map_err(|e| e.to_string())?;
        }
        let own = MemberRing::of(&next);
        if records.members.get(me) != Some(&own) {
            rotation::record(&mut client, me, &own).await?;
        }
        Ok(Some(Looked {
            next: changed.then_some(next),
            rotation: progress,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::JoinToken;

    #[test]
    fn status_names_the_tokens_the_rotation_and_an_outdated_config() {
        let (old, new) = (JoinToken::generate(), JoinToken::generate());
        let ring = Keyring::new(old.clone(), vec![new.clone()]);
        let mut status = TokenStatus::of(&ring, &old.fingerprint());
        assert_eq!(status.config_outdated, None);
        status.rotation = Some(Progress {
            to: new.fingerprint(),
            step: Step::Install,
            waiting: vec!["n3".into()],
        });
        let mut out = String::new();
        status.render(&mut out);
        assert!(
            out.contains(&format!(
                "Join token:  {} in force, {} also accepted",
                old.fingerprint(),
                new.fingerprint()
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "rotation to {}: members are installing it; waiting for n3",
                new.fingerprint()
            )),
            "{out}"
        );
        let after = TokenStatus::of(&Keyring::single(new.clone()), &old.fingerprint());
        assert_eq!(after.config_outdated, Some(old.fingerprint()));
        let mut out = String::new();
        after.render(&mut out);
        assert!(out.contains("was rotated"), "{out}");
        assert!(!out.contains(new.expose()) && !out.contains(old.expose()));
    }
}
