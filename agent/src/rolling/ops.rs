//! The etcd calls of rolling restarts: one member's status (its version and raft indexes), and
//! the two keys that carry `quorate etcd restart --rolling` cluster-wide: the request
//! (`/quorate/jobs/etcd-restart/request`, the newest request's id and who asked) and each
//! member's last restart done (`/quorate/jobs/etcd-restart/done/<node>`).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};

use crate::etcd::client::{with_client, ClientTls};
use crate::etcd::version::Version;
use crate::etcd::EtcdError;
use crate::jobs::JOBS_PREFIX;

/// Deadline of one request.
const TIMEOUT: Duration = Duration::from_secs(3);

fn request_key() -> String {
    format!("{JOBS_PREFIX}etcd-restart/request")
}

fn done_prefix() -> String {
    format!("{JOBS_PREFIX}etcd-restart/done/")
}

/// One member's status as a restart sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The etcd version the member runs.
    pub version: Option<Version>,
    pub leader: u64,
    pub raft_index: u64,
    pub applied_index: u64,
}

/// The status of the member at `urls`.
pub async fn member_status(urls: &[String], tls: &ClientTls) -> Result<MemberStatus, EtcdError> {
    let s = with_client(urls, tls, TIMEOUT, |mut c| async move { c.status().await }).await?;
    Ok(MemberStatus {
        member_id: s.header().map(|h| h.member_id()).unwrap_or_default(),
        version: crate::config::parse_etcd_version(&format!("etcd Version: {}", s.version())),
        leader: s.leader(),
        raft_index: s.raft_index(),
        applied_index: s.raft_applied_index(),
    })
}

/// A rolling restart request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unix milliseconds when it was asked for; later requests have larger ids.
    pub id: u64,
    /// The node whose operator asked.
    pub by: String,
}

/// The newest request, if any.
pub async fn read_request(
    endpoints: &[String],
    tls: &ClientTls,
) -> Result<Option<Request>, EtcdError> {
    let key = request_key();
    let resp = with_client(endpoints, tls, TIMEOUT, |mut c| async move {
        c.get(key, None).await
    })
    .await?;
    Ok(resp
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
}

/// Writes a new request.
pub async fn write_request(
    endpoints: &[String],
    tls: &ClientTls,
    request: &Request,
) -> Result<(), EtcdError> {
    let value = serde_json::to_vec(request).unwrap_or_default();
    let key = request_key();
    with_client(endpoints, tls, TIMEOUT, |mut c| async move {
        c.put(key, value, None).await
    })
    .await?;
    Ok(())
}

/// The last request each member did, by node name.
pub async fn read_done(
    endpoints: &[String],
    tls: &ClientTls,
) -> Result<BTreeMap<String, u64>, EtcdError> {
    let prefix = done_prefix();
    let resp = with_client(endpoints, tls, TIMEOUT, |mut c| {
        let prefix = prefix.clone();
        async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
    })
    .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned();
            let id = std::str::from_utf8(kv.value()).ok()?.parse().ok()?;
            Some((name, id))
        })
        .collect())
}

/// Records that `node` did request `id`.
pub async fn write_done(
    endpoints: &[String],
    tls: &ClientTls,
    node: &str,
    id: u64,
) -> Result<(), EtcdError> {
    let key = format!("{}{node}", done_prefix());
    with_client(endpoints, tls, TIMEOUT, |mut c| async move {
        c.put(key, id.to_string(), None).await
    })
    .await?;
    Ok(())
}
