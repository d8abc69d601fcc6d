//! Every member's half of `[[roles]]` (see [`crate::etcd::roles`]): publishes this member's
//! definition (again whenever it was not written, e.g. after a restore) and compares it with
//! the other members', for /status, `quorate status`, /metrics and the log. The issuer
//! applies an agreed definition (`issuer::roles`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::etcd::client::member_client;
use crate::etcd::roles::{self, Agreement};
use crate::etcd::EtcdHealth;
use crate::liveness::{beating, Heartbeat, Turns};
use crate::pki::TlsMaterial;

/// How often the definitions are compared.
pub const EVERY: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

/// What this member sees of the members' roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesStatus {
    /// This member's definition: role names and fingerprint.
    pub defined: Vec<String>,
    pub fingerprint: String,
    /// The members' agreement, in words (None before the first look).
    pub agreement: Option<String>,
    /// The members publish different definitions.
    pub conflict: bool,
    /// Why the last look failed, if it did.
    pub error: Option<String>,
}

impl RolesStatus {
    /// The "Roles:" line of `quorate status`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let mine = if self.defined.is_empty() {
            "none defined here".to_owned()
        } else {
            format!("{} ({})", self.defined.join(", "), self.fingerprint)
        };
        let members = self.agreement.as_deref().unwrap_or("not compared yet");
        let _ = writeln!(out, "\nRoles:       {mine}; members: {members}");
        if let Some(e) = &self.error {
            let _ = writeln!(out, "  last look failed: {e}");
        }
    }
}

/// The follower.
pub struct RolesSync {
    pub settings: Arc<Settings>,
    pub health: watch::Receiver<EtcdHealth>,
    pub material: watch::Receiver<Arc<TlsMaterial>>,
    pub published: watch::Sender<RolesStatus>,
    pub heartbeat: Heartbeat,
}

impl RolesSync {
    pub async fn run(self, cancel: CancellationToken) {
        let own = &self.settings.roles;
        self.published.send_modify(|s| {
            s.defined = own.iter().map(|r| r.name.clone()).collect();
            s.fingerprint = roles::fingerprint(own);
        });
        let mut turns = Turns::every(EVERY);
        let mut last: Option<Agreement> = None;
        while turns.next(&self.heartbeat, &cancel).await {
            let look = tokio::time::timeout(TIMEOUT * 2, self.look());
            let Some(result) = beating(&self.heartbeat, &cancel, look).await else {
                return;
            };
            let result = match result {
                Ok(r) => r,
                Err(_) => Err("etcd is slow".to_owned()),
            };
            match result {
                Ok(None) => {}
                Ok(Some(agreement)) => {
                    if last.as_ref() != Some(&agreement) {
                        match &agreement {
                            Agreement::Conflict(_) => {
                                tracing::warn!(roles = %agreement.describe(), "etcd roles")
                            }
                            _ => tracing::info!(roles = %agreement.describe(), "etcd roles"),
                        }
                    }
                    self.published.send_if_modified(|s| {
                        let text = Some(agreement.describe());
                        let conflict = matches!(agreement, Agreement::Conflict(_));
                        let changed =
                            s.agreement != text || s.conflict != conflict || s.error.is_some();
                        s.agreement = text;
                        s.conflict = conflict;
                        s.error = None;
                        changed
                    });
                    last = Some(agreement);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "members' roles not compared");
                    self.published.send_if_modified(|s| {
                        let changed = s.error.as_ref() != Some(&e);
                        s.error = Some(e);
                        changed
                    });
                }
            }
        }
    }

    /// Publishes this member's definition where it differs and compares the members'; None
    /// while this node has no member or certificate.
    async fn look(&self) -> Result<Option<Agreement>, String> {
        let material = self.material.borrow().clone();
        let health = self.health.borrow().clone();
        let own_url = self.settings.client_url();
        let Some(mut client) = member_client(&material, &health, own_url, TIMEOUT).await? else {
            return Ok(None);
        };
        let mut published = roles::published(&mut client)
            .await
            .map_err(|e| e.to_string())?;
        let own = &self.settings.roles;
        if published.get(&self.settings.name) != Some(own) {
            roles::publish(&mut client, &self.settings.name, own)
                .await
                .map_err(|e| e.to_string())?;
            published.insert(self.settings.name.clone(), own.clone());
        }
        let members: Vec<String> = health
            .members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        let applied = roles::applied(&mut client)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(roles::agree_applied(
            &members,
            &published,
            applied.as_deref(),
        )))
    }
}
