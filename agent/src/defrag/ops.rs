//! The etcd calls of defragmentation and space-alarm recovery, each against one member's
//! client URLs (status and defragment act on the member they reach, so they never go through a
//! balancer over several members), every one with a deadline and its failure classified by
//! [`EtcdError`].

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, CompactionOptions};

use super::policy::DbSize;
use crate::etcd::client::{with_client, ClientTls};
use crate::etcd::EtcdError;

/// Deadline of a status or alarm request.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one member's defragmentation (etcd rewrites the whole file).
pub const DEFRAG_TIMEOUT: Duration = Duration::from_secs(300);

/// One member's status, as far as the space goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceStatus {
    /// The member that answered.
    pub member_id: u64,
    /// Its file.
    pub size: DbSize,
    /// The store's current revision.
    pub revision: i64,
}

/// The status of the member at `urls`.
pub async fn status(urls: &[String], tls: &ClientTls) -> Result<SpaceStatus, EtcdError> {
    let s = with_client(urls, tls, TIMEOUT, |mut c| async move { c.status().await }).await?;
    Ok(SpaceStatus {
        member_id: s.header().map(|h| h.member_id()).unwrap_or_default(),
        size: DbSize {
            total: s.db_size().max(0) as u64,
            in_use: s.raft_used_db_size().max(0) as u64,
        },
        revision: s.header().map(|h| h.revision()).unwrap_or_default(),
    })
}

/// Defragments the member at `urls` (it blocks that member until done).
pub async fn defragment(urls: &[String], tls: &ClientTls) -> Result<(), EtcdError> {
    with_client(urls, tls, DEFRAG_TIMEOUT, |mut c| async move {
        c.defragment().await.map(|_| ())
    })
    .await
}

/// Whether a NOSPACE alarm is raised, asked of the member at `urls` (alarms are cluster-wide).
pub async fn nospace(urls: &[String], tls: &ClientTls) -> Result<bool, EtcdError> {
    let alarms = with_client(urls, tls, TIMEOUT, |mut c| async move {
        c.alarm(AlarmAction::Get, AlarmType::None, None).await
    })
    .await?;
    Ok(alarms
        .alarms()
        .iter()
        .any(|a| a.alarm() == AlarmType::Nospace))
}

/// Compacts the history up to `revision` (physically, so the space is free for a defrag).
pub async fn compact(urls: &[String], tls: &ClientTls, revision: i64) -> Result<(), EtcdError> {
    with_client(urls, tls, DEFRAG_TIMEOUT, |mut c| async move {
        c.compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map(|_| ())
    })
    .await
}

/// Disarms every NOSPACE alarm (what `etcdctl alarm disarm` does); returns how many.
pub async fn disarm(urls: &[String], tls: &ClientTls) -> Result<usize, EtcdError> {
    with_client(urls, tls, TIMEOUT, |mut c| async move {
        let alarms = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
        let mut n = 0;
        for a in alarms.alarms() {
            if a.alarm() != AlarmType::Nospace {
                continue;
            }
            let mut options = AlarmOptions::new();
            options.with_member(a.member_id());
            c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
                .await?;
            n += 1;
        }
        Ok(n)
    })
    .await
}
