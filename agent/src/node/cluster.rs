//! Talking to the running cluster (not only the local member) with this node's certificate:
//! the member list with each member's health, and membership changes (add a learner, promote,
//! remove). Endpoints are tried one at a time, in the caller's order (running members first):
//! a channel over several endpoints would send some requests to members that are down.
//! Every call has a deadline; the controller retries failures with backoff.

use std::time::Duration;

use etcd_client::{Client, MemberAddOptions};

use super::membership::MemberView;
use crate::etcd::client::{connect, short_error, ClientTls};

const TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Errors talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no etcd endpoint of the cluster is known yet")]
    NoEndpoints,
    #[error("no certificate to talk to etcd with")]
    NoCertificate,
    #[error("cannot reach the cluster at {endpoints}: {message}")]
    Unreachable { endpoints: String, message: String },
    #[error("etcd refused {op}: {message}")]
    Refused { op: &'static str, message: String },
}

impl ClusterError {
    /// etcd's answer while a learner has not caught up with the leader yet.
    pub fn is_learner_not_ready(&self) -> bool {
        matches!(self, ClusterError::Refused { message, .. } if message.contains("in sync with leader") || message.contains("not ready"))
    }

    /// A refusal that passes by itself: etcd accepts membership changes only once the leader
    /// has been connected to every voter for 5 s, and one learner at a time.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClusterError::Refused { message, .. }
            if message.contains("unhealthy cluster") || message.contains("too many learner"))
            || self.is_learner_not_ready()
    }
}

/// Runs `op` against the first endpoint that answers; returns the last error otherwise.
async fn on_any<T, F, Fut>(
    endpoints: &[String],
    tls: &ClientTls,
    what: &'static str,
    op: F,
) -> Result<T, ClusterError>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    if endpoints.is_empty() {
        return Err(ClusterError::NoEndpoints);
    }
    let mut last = String::new();
    for endpoint in endpoints {
        let attempt = async {
            let c = connect(std::slice::from_ref(endpoint), tls, TIMEOUT).await?;
            op(c).await
        };
        match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => {
                let message = short_error(&e);
                // etcd answered and refused: another endpoint would say the same.
                if !message.starts_with("connection refused") && !message.contains("timed out") {
                    return Err(ClusterError::Refused { op: what, message });
                }
                last = format!("{endpoint}: {message}");
            }
            Err(_) => last = format!("{endpoint}: timed out"),
        }
    }
    Err(ClusterError::Unreachable {
        endpoints: endpoints.join(","),
        message: last,
    })
}

/// The member list, from any of `endpoints`, with each member's health (it answers a status
/// request on one of its client URLs).
pub async fn members(
    endpoints: &[String],
    tls: &ClientTls,
) -> Result<Vec<MemberView>, ClusterError> {
    let list = on_any(endpoints, tls, "member list", |mut c| async move {
        c.member_list().await
    })
    .await?;
    let checks = list.members().iter().map(|m| {
        let urls = m.client_urls().to_vec();
        let tls = tls.clone();
        async move {
            if urls.is_empty() {
                return false;
            }
            let attempt = async {
                let mut c = connect(&urls, &tls, HEALTH_TIMEOUT).await.ok()?;
                c.status().await.ok()
            };
            matches!(
                tokio::time::timeout(HEALTH_TIMEOUT, attempt).await,
                Ok(Some(_))
            )
        }
    });
    let handles: Vec<_> = checks.map(tokio::spawn).collect();
    let mut views = Vec::new();
    for (m, h) in list.members().iter().zip(handles) {
        views.push(MemberView {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            is_learner: m.is_learner(),
            healthy: h.await.unwrap_or(false),
        });
    }
    Ok(views)
}

/// Adds `peer_url` as a learner; returns the new member's ID and the member list after it.
pub async fn add_learner(
    endpoints: &[String],
    tls: &ClientTls,
    peer_url: &str,
) -> Result<(u64, Vec<MemberView>), ClusterError> {
    let resp = on_any(endpoints, tls, "member add", |mut c| async move {
        c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
    })
    .await?;
    let id = resp.member().map(|m| m.id()).unwrap_or_default();
    let members = resp
        .member_list()
        .iter()
        .map(|m| MemberView {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            is_learner: m.is_learner(),
            healthy: false,
        })
        .collect();
    Ok((id, members))
}

/// Promotes learner `id` to a voting member.
pub async fn promote(endpoints: &[String], tls: &ClientTls, id: u64) -> Result<(), ClusterError> {
    on_any(endpoints, tls, "member promote", |mut c| async move {
        c.member_promote(id).await.map(|_| ())
    })
    .await
}

/// Removes member `id`.
pub async fn remove(endpoints: &[String], tls: &ClientTls, id: u64) -> Result<(), ClusterError> {
    on_any(endpoints, tls, "member remove", |mut c| async move {
        c.member_remove(id).await.map(|_| ())
    })
    .await
}
