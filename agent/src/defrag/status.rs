//! What the defragmentation task publishes: this member's space, the alarm, what the task does
//! or why it waits, and its last defragmentation, for `quorate status`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// A size for people: `32.1 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    match UNITS.iter().find(|(factor, _)| bytes >= *factor) {
        Some((factor, unit)) => format!("{:.1} {unit}", bytes as f64 / *factor as f64),
        None => format!("{bytes} B"),
    }
}

/// Why a defragmentation ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The member was fragmented or near the quota.
    Automatic,
    /// `quorate defrag`.
    OnDemand,
    /// NOSPACE recovery.
    Nospace,
}

impl Trigger {
    /// One word, for log fields.
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Automatic => "automatic",
            Trigger::OnDemand => "on-demand",
            Trigger::Nospace => "nospace",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Automatic => "automatic",
            Trigger::OnDemand => "on demand",
            Trigger::Nospace => "NOSPACE recovery",
        })
    }
}

/// One defragmentation of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragRun {
    /// The member's name.
    pub member: String,
    pub trigger: Trigger,
    /// When it started, unix seconds.
    pub started_at: u64,
    pub duration_ms: u64,
    /// The file's size before and after, when the member answered.
    pub before: Option<u64>,
    pub after: Option<u64>,
    /// Why it failed (None: it succeeded).
    pub error: Option<String>,
}

impl DefragRun {
    /// One line: `etcd-1: 32.0 MiB -> 1.2 MiB in 0.3 s`.
    pub fn line(&self) -> String {
        let size = |v: Option<u64>| v.map(human).unwrap_or_else(|| "?".into());
        match &self.error {
            None => format!(
                "{}: {} -> {} in {:.1} s",
                self.member,
                size(self.before),
                size(self.after),
                self.duration_ms as f64 / 1000.0
            ),
            Some(e) => format!("{}: not defragmented: {e}", self.member),
        }
    }
}

/// The defragmentation task's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragStatus {
    /// What the task does, or why it waits.
    pub message: String,
    /// This member's file and the part in use.
    pub db_size: Option<u64>,
    pub db_in_use: Option<u64>,
    /// The backend quota.
    pub quota: u64,
    /// etcd's NOSPACE alarm is raised.
    pub nospace: bool,
    /// The last recovery found the quota filled by live data (the alarm stays).
    pub live_data_full: bool,
    /// Defragmentations this agent did, and how many of them failed.
    pub defrags: u64,
    pub failures: u64,
    /// The last one.
    pub last: Option<DefragRun>,
}

impl DefragStatus {
    /// The `Maintenance:` section of `quorate status`.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "\nMaintenance:");
        let _ = writeln!(out, "  {}", self.message);
        let size = |v: Option<u64>| v.map(human).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  database {}, in use {}, quota {}{}",
            size(self.db_size),
            size(self.db_in_use),
            human(self.quota),
            if self.nospace {
                ", NOSPACE alarm raised"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  defragmentations {}, failed {}",
            self.defrags, self.failures
        );
        if let Some(last) = &self.last {
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(last.started_at),
            );
            let _ = writeln!(out, "  last: {when} ({}) {}", last.trigger, last.line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(32 << 20), "32.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_run_is_one_line_with_the_member_and_its_sizes() {
        let mut run = DefragRun {
            member: "n2".into(),
            trigger: Trigger::OnDemand,
            started_at: 0,
            duration_ms: 1250,
            before: Some(212 << 20),
            after: Some(31 << 20),
            error: None,
        };
        assert_eq!(run.line(), "n2: 212.0 MiB -> 31.0 MiB in 1.2 s");
        run.after = None;
        assert_eq!(run.line(), "n2: 212.0 MiB -> ? in 1.2 s");
        run.error = Some("unreachable (connection refused), skipped".into());
        assert_eq!(
            run.line(),
            "n2: not defragmented: unreachable (connection refused), skipped"
        );
        for t in [Trigger::Automatic, Trigger::OnDemand, Trigger::Nospace] {
            assert!(!t.name().contains(' '), "log field values are one word");
        }
    }
}
