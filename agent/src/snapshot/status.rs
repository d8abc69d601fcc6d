//! What the snapshot task publishes, for /status, `quorate status` and /metrics.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::defrag::human;

/// The snapshot task's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    /// The schedule as configured ("" when off).
    pub schedule: String,
    /// The schedule's period in seconds (for cron: the gap between the next two times).
    pub interval_seconds: Option<u64>,
    /// The start of the next slot, unix seconds.
    pub next_slot: Option<u64>,
    /// When this agent's last snapshot succeeded, unix seconds.
    pub last_success: Option<u64>,
    /// Its file.
    pub last_file: Option<String>,
    /// Its size in bytes.
    pub last_size: Option<u64>,
    /// How long it took, milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Snapshots this agent took.
    pub snapshots: u64,
    /// Snapshots this agent started that failed (never given a final name).
    pub failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// What the task does or why it waits.
    pub message: String,
    /// Uploads to `[snapshot.s3]`, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<super::upload::UploadStatus>,
}

impl SnapshotStatus {
    /// The "Snapshots:" section of `quorate status`.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "\nSnapshots:");
        if self.schedule.is_empty() {
            let _ = writeln!(out, "  off (snapshot.schedule = \"\")");
            return;
        }
        let _ = writeln!(out, "  schedule: {}", self.schedule);
        match (&self.last_file, self.last_success) {
            (Some(file), Some(at)) => {
                let _ = writeln!(
                    out,
                    "  last: {file} ({}, {:.1} s) at {}",
                    human(self.last_size.unwrap_or_default()),
                    self.last_duration_ms.unwrap_or_default() as f64 / 1000.0,
                    crate::snapshot::file::rfc3339(
                        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at)
                    )
                );
            }
            _ => {
                let _ = writeln!(out, "  last: none taken by this node");
            }
        }
        if self.failures > 0 {
            let _ = writeln!(
                out,
                "  failures: {} (last: {})",
                self.failures,
                self.last_error.as_deref().unwrap_or("unknown")
            );
        }
        if let Some(upload) = &self.upload {
            upload.render(out);
        }
        if !self.message.is_empty() {
            let _ = writeln!(out, "  {}", self.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_shows_the_last_snapshot_and_failures() {
        let s = SnapshotStatus {
            schedule: "0 */6 * * *".into(),
            interval_seconds: Some(21_600),
            next_slot: Some(1_700_006_400),
            last_success: Some(1_700_000_000),
            last_file: Some("quorate-00000000000000ab-20231114T221320Z-r42.db".into()),
            last_size: Some(20_512),
            last_duration_ms: Some(250),
            snapshots: 3,
            failures: 1,
            last_error: Some("the stream was cut".into()),
            message: "slot 1699984800 is done already".into(),
            upload: None,
        };
        let mut out = String::new();
        s.render(&mut out);
        assert_eq!(
            out,
            "\nSnapshots:\n  schedule: 0 */6 * * *\n  last: \
             quorate-00000000000000ab-20231114T221320Z-r42.db (20.0 KiB, 0.2 s) at \
             2023-11-14T22:13:20Z\n  failures: 1 (last: the stream was cut)\n  \
             slot 1699984800 is done already\n"
        );
        let mut off = String::new();
        SnapshotStatus::default().render(&mut off);
        assert_eq!(off, "\nSnapshots:\n  off (snapshot.schedule = \"\")\n");
    }
}
