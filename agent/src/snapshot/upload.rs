//! Upload after each snapshot: the agent that took a verified snapshot uploads it and its
//! manifest to `[snapshot.s3]`, then applies remote retention. A store that is down or refuses
//! costs nothing locally (the file stays, local retention goes on): the failure is counted and
//! shown, and once the next slot begins this agent tries again with the newest local snapshot
//! the store does not have. The snapshot task runs this inside its `beating` pattern, after it
//! released the job lock, with [`UPLOAD_TIMEOUT`] on the whole.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::file::SnapshotName;
use super::remote::names::{self, ObjectKind};
use super::remote::{RemoteError, RemoteStore};
use crate::config::S3Settings;

/// The longest one round (list, upload, prune) may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What the uploader publishes (inside the snapshot status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// `s3://bucket/prefix`.
    pub location: String,
    /// Files this agent uploaded.
    pub uploads: u64,
    /// Upload rounds that failed.
    pub failures: u64,
    /// When the last upload succeeded, unix seconds.
    pub last_success: Option<u64>,
    /// The key of the last uploaded snapshot.
    pub last_key: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Whether the last round failed (the next slot tries again).
    pub failing: bool,
}

impl UploadStatus {
    /// Lines of the "Snapshots:" section of `quorate status`.
    pub fn render(&self, out: &mut String) {
        match (&self.last_key, self.last_success) {
            (Some(key), Some(at)) => {
                let _ = writeln!(
                    out,
                    "  upload: {} ({} uploaded), last {key} at {}",
                    self.location,
                    self.uploads,
                    super::file::rfc3339(UNIX_EPOCH + Duration::from_secs(at))
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  upload: {} (none uploaded by this node)",
                    self.location
                );
            }
        }
        if self.failing {
            let _ = writeln!(
                out,
                "  upload failed: {} ({} failure(s); the local snapshot is kept and the next slot tries again)",
                self.last_error.as_deref().unwrap_or("unknown"),
                self.failures
            );
        } else if self.failures > 0 {
            let _ = writeln!(
                out,
                "  upload failures: {} (last: {})",
                self.failures,
                self.last_error.as_deref().unwrap_or("unknown")
            );
        }
    }
}

/// The upload side of the snapshot task.
pub struct Uploader {
    s3: S3Settings,
    dir: PathBuf,
    store: Option<RemoteStore>,
    status: UploadStatus,
    /// After a failure: the slot it happened in (a later slot tries again).
    failed_in_slot: Option<u64>,
}

impl Uploader {
    pub fn new(s3: S3Settings, dir: PathBuf) -> Self {
        let status = UploadStatus {
            location: s3.location(),
            ..UploadStatus::default()
        };
        Self {
            s3,
            dir,
            store: None,
            status,
            failed_in_slot: None,
        }
    }

    pub fn status(&self) -> &UploadStatus {
        &self.status
    }

    /// Whether a failed upload is due for another try in `slot`.
    pub fn retry_due(&self, slot: u64) -> bool {
        self.failed_in_slot.is_some_and(|failed| slot > failed)
    }

    /// Uploads `just_taken` (a file name in the snapshot directory; None on a retry) and the
    /// newest local snapshot the store lacks, then prunes cluster `cluster_id`'s snapshots in
    /// the store.
    pub async fn run(&mut self, just_taken: Option<&str>, slot: u64, cluster_id: u64) {
        let result =
            match tokio::time::timeout(UPLOAD_TIMEOUT, self.round(just_taken, cluster_id)).await {
                Ok(result) => result,
                Err(_) => Err(RemoteError::Timeout {
                    what: format!("the upload to {}", self.status.location),
                    after: UPLOAD_TIMEOUT,
                }),
            };
        match result {
            Ok(n) => {
                self.failed_in_slot = None;
                self.status.failing = false;
                if n > 0 {
                    tracing::info!(files = n, store = %self.status.location, "snapshot uploaded");
                }
            }
            Err(e) => {
                let why = e.describe();
                tracing::warn!(error = %why, store = %self.status.location, "snapshot upload failed; the local snapshot is kept");
                self.failed_in_slot = Some(slot);
                self.status.failures += 1;
                self.status.failing = true;
                self.status.last_error = Some(why);
                // A client that could not be built is built again next time.
                if matches!(
                    e,
                    RemoteError::NoCredentials { .. } | RemoteError::Client { .. }
                ) {
                    self.store = None;
                }
            }
        }
    }

    /// One round; returns how many snapshots it uploaded.
    async fn round(
        &mut self,
        just_taken: Option<&str>,
        cluster_id: u64,
    ) -> Result<u64, RemoteError> {
        if self.store.is_none() {
            self.store = Some(RemoteStore::new(&self.s3)?);
        }
        let Some(store) = self.store.as_ref() else {
            return Ok(0);
        };
        let remote = store.snapshots().await?;
        let local = local_snapshots(&self.dir);
        let mut uploaded = 0;
        for file in names::to_upload(&local, &remote, just_taken) {
            let Some(manifest) = names::manifest_for(&file) else {
                continue;
            };
            let (path, manifest) = (self.dir.join(&file), self.dir.join(manifest));
            if !manifest.exists() {
                tracing::warn!(file = %path.display(), "a snapshot without its manifest is not uploaded");
                continue;
            }
            let key = store.upload(&path, &manifest).await?;
            uploaded += 1;
            self.status.uploads += 1;
            self.status.last_key = Some(key);
            self.status.last_success = Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default(),
            );
        }
        store.prune(cluster_id, self.s3.retain).await?;
        Ok(uploaded)
    }
}

/// The snapshot files (any data suffix) of `dir`, oldest first.
fn local_snapshots(dir: &std::path::Path) -> Vec<(SnapshotName, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(SnapshotName, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| match names::classify(&f) {
            Some(ObjectKind::Data { name, .. }) => Some((name, f)),
            _ => None,
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_upload_is_shown_with_its_reason() {
        let mut s = UploadStatus {
            location: "s3://backups/quorate/".into(),
            uploads: 3,
            failures: 1,
            last_success: Some(1_700_000_000),
            last_key: Some("quorate/quorate-00000000000000ab-20231114T221320Z-r42.db".into()),
            last_error: Some("listing s3://backups/quorate/: connection refused".into()),
            failing: true,
        };
        let mut out = String::new();
        s.render(&mut out);
        assert_eq!(
            out,
            "  upload: s3://backups/quorate/ (3 uploaded), last \
             quorate/quorate-00000000000000ab-20231114T221320Z-r42.db at 2023-11-14T22:13:20Z\n  \
             upload failed: listing s3://backups/quorate/: connection refused (1 failure(s); \
             the local snapshot is kept and the next slot tries again)\n"
        );
        s.failing = false;
        let mut out = String::new();
        s.render(&mut out);
        assert!(out.ends_with(
            "  upload failures: 1 (last: listing s3://backups/quorate/: connection refused)\n"
        ));
    }

    #[test]
    fn a_failure_is_retried_in_a_later_slot_only() {
        let s3 = S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            bucket: "bkt".into(),
            prefix: "quorate/".into(),
            region: "us-east-1".into(),
            path_style: true,
            credentials: None,
            retain: 2,
            allow_http: true,
        };
        let mut u = Uploader::new(s3, PathBuf::from("/nonexistent"));
        assert!(!u.retry_due(10));
        u.failed_in_slot = Some(10);
        assert!(!u.retry_due(10));
        assert!(u.retry_due(13));
    }
}
