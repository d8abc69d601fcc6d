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

/// What an on-demand save (`quorate snapshot save`, the snapshot before a rolling upgrade)
/// tells the snapshot task, which owns [`SnapshotStatus`]: such a snapshot is verified like a
/// scheduled one and counts the same in status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveReport {
    Taken {
        /// The file in the snapshot directory; None when it streamed to the client (`--out`).
        file: Option<String>,
        size: u64,
        duration_ms: u64,
        /// When it finished, unix seconds.
        at: u64,
    },
    Failed(String),
}

impl SnapshotStatus {
    /// Counts an on-demand save.
    pub fn record(&mut self, report: &SaveReport) {
        match report {
            SaveReport::Taken {
                file,
                size,
                duration_ms,
                at,
            } => {
                self.snapshots += 1;
                self.last_success = Some(*at);
                self.last_file = Some(
                    file.clone()
                        .unwrap_or_else(|| "(on demand, written by the client)".into()),
                );
                self.last_size = Some(*size);
                self.last_duration_ms = Some(*duration_ms);
            }
            SaveReport::Failed(why) => {
                self.failures += 1;
                self.last_error = Some(why.clone());
            }
        }
    }

    /// The "Snapshots:" section of `quorate status`.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "\nSnapshots:");
        if self.schedule.is_empty() {
            let _ = writeln!(out, "  off (snapshot.schedule = \"\")");
            if self.snapshots == 0 && self.failures == 0 {
                return;
            }
        } else {
            let _ = writeln!(out, "  schedule: {}", self.schedule);
        }
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

    #[test]
    fn on_demand_saves_count_like_scheduled_ones() {
        let mut s = SnapshotStatus {
            snapshots: 2,
            failures: 1,
            ..SnapshotStatus::default()
        };
        s.record(&SaveReport::Taken {
            file: Some("a.db".into()),
            size: 10,
            duration_ms: 1500,
            at: 1_700_000_000,
        });
        assert_eq!(s.snapshots, 3);
        assert_eq!(s.last_success, Some(1_700_000_000));
        assert_eq!(s.last_file.as_deref(), Some("a.db"));
        assert_eq!((s.last_size, s.last_duration_ms), (Some(10), Some(1500)));
        s.record(&SaveReport::Taken {
            file: None,
            size: 11,
            duration_ms: 1,
            at: 1_700_000_100,
        });
        assert_eq!(s.snapshots, 4);
        assert_eq!(
            s.last_file.as_deref(),
            Some("(on demand, written by the client)")
        );
        s.record(&SaveReport::Failed("the lock is held".into()));
        assert_eq!(s.failures, 2);
        assert_eq!(
            s.last_success,
            Some(1_700_000_100),
            "a failure keeps the last success"
        );
        assert_eq!(s.last_error.as_deref(), Some("the lock is held"));
        // With the schedule off, the section still shows what was saved on demand.
        let mut out = String::new();
        s.render(&mut out);
        assert!(
            out.starts_with("\nSnapshots:\n  off (snapshot.schedule = \"\")\n  last: (on demand"),
            "{out}"
        );
        assert!(
            out.contains("failures: 2 (last: the lock is held)"),
            "{out}"
        );
    }
}
