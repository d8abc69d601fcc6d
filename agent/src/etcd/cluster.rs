//! Talking to the running cluster (not only the local member) with this node's certificate:
//! the member list with each member's health, and membership changes (add a learner, promote,
//! remove). Endpoints are tried one at a time, in the caller's order (running members first):
//! a channel over several endpoints would send some requests to members that are down.
//! Every call has a deadline; the controller retries failures with backoff.

use std::time::Duration;

use etcd_client::{Client, MemberAddOptions};

use super::client::{connect, ClientTls};
use super::error::{ClusterError, EtcdError};
use super::member::{Member, MemberHealth};

const TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

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
    let mut last = None;
    for endpoint in endpoints {
        let attempt = async {
            let c = connect(std::slice::from_ref(endpoint), tls, TIMEOUT).await?;
            op(c).await
        };
        let error = match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => EtcdError::from(e),
            Err(_) => EtcdError::Timeout,
        };
        if !error.is_unreachable() {
            // etcd answered and refused: another endpoint would say the same.
            return Err(ClusterError::Refused {
                op: what,
                endpoint: endpoint.clone(),
                error,
            });
        }
        last = Some((endpoint.clone(), error));
    }
    let (endpoint, error) = last.ok_or(ClusterError::NoEndpoints)?;
    Err(ClusterError::Unreachable {
        op: what,
        endpoints: endpoints.join(","),
        endpoint,
        error,
    })
}

/// The member list, from any of `endpoints`, with each member's health (it answers a status
/// request on one of its client URLs).
pub async fn members(
    endpoints: &[String],
    tls: &ClientTls,
) -> Result<Vec<MemberHealth>, ClusterError> {
    let list = on_any(endpoints, tls, "member list", |mut c| async move {
        c.member_list().await
    })
    .await?;
    let members: Vec<Member> = list.members().iter().map(Member::from).collect();
    let handles: Vec<_> = members
        .iter()
        .map(|m| tokio::spawn(answers(m.client_urls.clone(), tls.clone())))
        .collect();
    let mut checked = Vec::with_capacity(members.len());
    for (member, h) in members.into_iter().zip(handles) {
        checked.push(MemberHealth {
            member,
            healthy: h.await.unwrap_or(false),
        });
    }
    Ok(checked)
}

/// Whether a member answers a status request on one of `urls` within the health timeout.
async fn answers(urls: Vec<String>, tls: ClientTls) -> bool {
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

/// Adds `peer_url` as a learner; returns the new member's ID and the member list after it.
pub async fn add_learner(
    endpoints: &[String],
    tls: &ClientTls,
    peer_url: &str,
) -> Result<(u64, Vec<Member>), ClusterError> {
    let resp = on_any(endpoints, tls, "member add", |mut c| async move {
        c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
    })
    .await?;
    let id = resp.member().map(|m| m.id()).unwrap_or_default();
    let members = resp.member_list().iter().map(Member::from).collect();
    Ok((id, members))
}

/// Promotes learner `id` to a voting member, asking the leader first: with authentication on,
/// a follower forwards the promotion without the caller's identity and it times out (etcd#20757,
/// fixed only for tokens, in 3.6.6 and 3.5.28), so the leader's client URLs come before
/// `endpoints`.
pub async fn promote(endpoints: &[String], tls: &ClientTls, id: u64) -> Result<(), ClusterError> {
    let mut order = leader_urls(endpoints, tls).await.unwrap_or_default();
    for e in endpoints {
        if !order.contains(e) {
            order.push(e.clone());
        }
    }
    on_any(&order, tls, "member promote", |mut c| async move {
        c.member_promote(id).await.map(|_| ())
    })
    .await
}

/// The leader's client URLs, as the first of `endpoints` that answers knows them.
async fn leader_urls(endpoints: &[String], tls: &ClientTls) -> Option<Vec<String>> {
    let (leader, list) = on_any(endpoints, tls, "status", |mut c| async move {
        let leader = c.status().await?.leader();
        Ok((leader, c.member_list().await?))
    })
    .await
    .ok()?;
    list.members()
        .iter()
        .find(|m| m.id() == leader)
        .map(|m| m.client_urls().to_vec())
}

/// Removes member `id`.
pub async fn remove(endpoints: &[String], tls: &ClientTls, id: u64) -> Result<(), ClusterError> {
    on_any(endpoints, tls, "member remove", |mut c| async move {
        c.member_remove(id).await.map(|_| ())
    })
    .await
}
