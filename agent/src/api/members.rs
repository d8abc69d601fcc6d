//! Which etcd members hold which names, looked up for the issuer's decision on a node
//! certificate request ([`super::sign::Members`]): from the member list and a status request
//! to each member, through this agent's own client certificate. Before this agent has seen a
//! cluster there is nothing to hold a name (the seed signs the first certificates before etcd
//! exists); once it has, a list it cannot read means no name can be checked.

use std::sync::Arc;

use tokio::sync::watch;

use super::sign::Members;
use super::wire::CertKind;
use crate::etcd::client::connect;
use crate::etcd::{auth, cluster, EtcdHealth};
use crate::pki::TlsMaterial;

/// Where the lookup reads from.
#[derive(Clone)]
pub enum MemberSource {
    /// The local etcd member's view.
    Etcd {
        health: watch::Receiver<EtcdHealth>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        /// This member's own client URL (asked first).
        own_url: String,
    },
    /// Always these members (tests of the server's TLS and identity path without etcd).
    Fixed(Members),
}

impl MemberSource {
    /// The members as they are now.
    pub async fn members(&self) -> Members {
        let (health, material, own_url) = match self {
            MemberSource::Fixed(m) => return m.clone(),
            MemberSource::Etcd {
                health,
                material,
                own_url,
            } => (health, material, own_url),
        };
        let health = health.borrow().clone();
        if health.cluster_id.is_none() && health.members.is_empty() {
            return Members::NotFormed;
        }
        let Some(tls) = material.borrow().client().cloned() else {
            return Members::Unknown("this agent has no certificate to ask etcd with".into());
        };
        match cluster::members(&health.endpoints(own_url.clone()), &tls).await {
            Ok(list) => Members::Known(list),
            Err(e) => Members::Unknown(e.to_string()),
        }
    }

    /// Makes the certificate's name an etcd user with the role of its kind (see
    /// [`crate::etcd::auth`]), or a client's `role`, before it is handed out; nothing to do
    /// before the cluster exists (the issuer creates the first members' users when it
    /// enables authentication). A client name holds exactly its role afterwards.
    /// A node name whose user holds a client role (a client certificate of that name exists)
    /// is refused: the node's root role would reach that certificate too.
    pub async fn ensure_user(
        &self,
        name: &str,
        kind: CertKind,
        role: Option<&str>,
    ) -> Result<(), UserProblem> {
        let MemberSource::Etcd {
            health,
            material,
            own_url,
        } = self
        else {
            return Ok(());
        };
        let health = health.borrow().clone();
        if health.cluster_id.is_none() && health.members.is_empty() {
            return Ok(());
        }
        let tls = material.borrow().client().cloned().ok_or_else(|| {
            UserProblem::Unavailable("this agent has no certificate to ask etcd with".into())
        })?;
        let role = match kind {
            CertKind::Node => auth::ROOT,
            CertKind::Client => role.unwrap_or(auth::CLIENT_ROLE),
        };
        // The issuer's own member: healthy while it holds the issuer lease (a channel over
        // every member would send some requests to one that is down).
        let work = async {
            let mut client = connect(std::slice::from_ref(own_url), &tls, TIMEOUT).await?;
            auth::ensure_roles(&mut client).await?;
            match kind {
                CertKind::Node => {
                    // One user list for both questions.
                    let exists = auth::user_exists(&mut client, name).await?;
                    if exists {
                        if let Some(other) = auth::client_role_of(&mut client, name).await? {
                            return Ok::<_, etcd_client::Error>(Some(other));
                        }
                    }
                    auth::grant_user(&mut client, name, role, exists).await?;
                }
                CertKind::Client => auth::set_only_role(&mut client, name, role).await?,
            }
            Ok(None)
        };
        match tokio::time::timeout(TIMEOUT * 2, work).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(role))) => Err(UserProblem::ClientName { role }),
            Ok(Err(e)) => Err(UserProblem::Unavailable(format!(
                "cannot make {name} an etcd user: {e}"
            ))),
            Err(_) => Err(UserProblem::Unavailable(format!(
                "cannot make {name} an etcd user: etcd is slow"
            ))),
        }
    }
}

/// Why a certificate's name could not be made its etcd user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserProblem {
    /// etcd could not be asked or refused (retry).
    Unavailable(String),
    /// A node certificate was asked for a name whose user holds this client role.
    ClientName { role: String },
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
