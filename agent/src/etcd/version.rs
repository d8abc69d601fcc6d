//! The etcd versions quorate drives, and what differs between them. Pure: `etcd --version`'s
//! answer in, a verdict and per-version facts out.
//!
//! - 3.4 (Debian 12; end of life upstream) and 3.5 (Debian 13) take the `--experimental-*`
//!   flags; 3.6 renames the value flags (dropping the prefix), turns the on/off ones into
//!   `--feature-gates` entries, still accepts the old names with a warning, and removes the v2
//!   and proxy flags; 3.7 removes the old names.
//! - Offline work on a data dir (restoring a snapshot) is `etcdctl snapshot restore` on 3.4 and
//!   `etcdutl snapshot restore` from 3.5 on (3.6 has no `etcdctl snapshot restore`).
//! - A version quorate does not know is refused rather than guessed at: below 3.4, or a minor
//!   above the newest known one. A newer patch of the newest known minor is accepted with a
//!   warning (patches do not change flags).

use std::fmt;

/// `(major, minor, patch)` as `etcd --version` prints it.
pub type Version = (u32, u32, u32);

/// Oldest etcd that quorate drives (learners, the zap logger, the flags it renders).
pub const OLDEST: Version = (3, 4, 0);
/// Newest release quorate was checked against (its flags and behaviour).
pub const NEWEST_KNOWN: Version = (3, 6, 5);
/// From this 3.5 patch on, etcd has the compacted-revision hash check.
const COMPACT_HASH_CHECK_SINCE: Version = (3, 5, 5);

/// A minor release line, which decides the flags quorate renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Line {
    #[default]
    V3_4,
    V3_5,
    V3_6,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Line::V3_4 => "3.4",
            Line::V3_5 => "3.5",
            Line::V3_6 => "3.6",
        })
    }
}

/// What quorate makes of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Supported(Line),
    /// Supported, with a warning for the operator.
    Warn(Line, String),
    /// Not driven; the problem and the fix.
    Refused {
        problem: String,
        fix: String,
    },
}

/// The verdict on etcd `v`.
pub fn classify(v: Version) -> Verdict {
    let text = show(v);
    if v < OLDEST {
        return Verdict::Refused {
            problem: format!("etcd {text} is too old; quorate needs 3.4 or newer"),
            fix: "install etcd 3.4 or newer (3.5 is current on Debian 13) and point \
                  etcd.binary at it"
                .into(),
        };
    }
    let newest = NEWEST_KNOWN;
    if (v.0, v.1) > (newest.0, newest.1) {
        return Verdict::Refused {
            problem: format!(
                "etcd {text} is newer than the newest etcd this quorate knows ({}.{}); its \
                 flags may have changed",
                newest.0, newest.1
            ),
            fix: format!(
                "upgrade quorate to a release that supports etcd {}.{}, or point etcd.binary \
                 at etcd {}.{}",
                v.0, v.1, newest.0, newest.1
            ),
        };
    }
    let line = match v.1 {
        4 => Line::V3_4,
        5 => Line::V3_5,
        _ => Line::V3_6,
    };
    if v > newest {
        return Verdict::Warn(
            line,
            format!(
                "etcd {text} is a newer patch than quorate was checked with ({}); running it \
                 with the {line} flags",
                show(newest)
            ),
        );
    }
    if line == Line::V3_5 && v < (3, 5, 3) {
        return Verdict::Warn(
            line,
            format!(
                "etcd {text} has a data inconsistency bug on crash (fixed in 3.5.3, etcd's \
                 maintainers advise against 3.5.0-3.5.2 in production): upgrade to the newest \
                 3.5 patch"
            ),
        );
    }
    Verdict::Supported(line)
}

/// `3.5.30`.
pub fn show(v: Version) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// The flags that turn on etcd's cheap corruption detection on `v`: the leader compares the
/// hash of every member's compacted revision after each compaction (3.5.5 and later; quorate
/// compacts periodically, so the check runs). 3.4 only has the checks that are costly or slow
/// a whole-cluster restart (the latest-revision hash and the initial check, which waits on
/// peers that wait on it), so nothing is rendered there.
pub fn corruption_check_flags(v: Version) -> Vec<String> {
    match classify_line(v) {
        Line::V3_4 => vec![],
        Line::V3_5 if v < COMPACT_HASH_CHECK_SINCE => vec![],
        Line::V3_5 => vec!["--experimental-compact-hash-check-enabled=true".into()],
        Line::V3_6 => vec!["--feature-gates=CompactHashCheck=true".into()],
    }
}

/// The line of `v` (3.6 for anything newer; [`classify`] refuses those first).
pub fn classify_line(v: Version) -> Line {
    match (v.0, v.1) {
        (3, ..=4) | (..=2, _) => Line::V3_4,
        (3, 5) => Line::V3_5,
        _ => Line::V3_6,
    }
}

/// The tool for offline work on a data dir (`snapshot restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineTool {
    /// `etcdctl` with `ETCDCTL_API=3` (3.4).
    Etcdctl,
    /// `etcdutl` (3.5 and later).
    Etcdutl,
}

impl OfflineTool {
    pub fn for_version(v: Version) -> Self {
        if classify_line(v) == Line::V3_4 {
            OfflineTool::Etcdctl
        } else {
            OfflineTool::Etcdutl
        }
    }

    /// The program's file name (it sits beside the etcd binary in every package).
    pub fn program(self) -> &'static str {
        match self {
            OfflineTool::Etcdctl => "etcdctl",
            OfflineTool::Etcdutl => "etcdutl",
        }
    }
}

/// How etcd 3.6 treats an operator's flag that older versions spell differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagChange {
    /// 3.6 still takes the old name but 3.7 removes it: write the new flag.
    Renamed { new: String },
    /// 3.6 makes it a `--feature-gates` entry.
    FeatureGate { gate: &'static str },
    /// 3.6 no longer has it.
    Removed,
}

/// `--experimental-*` value flags that 3.6 renames by dropping the prefix.
const RENAMED_IN_3_6: &[&str] = &[
    "experimental-corrupt-check-time",
    "experimental-compact-hash-check-time",
    "experimental-compaction-batch-limit",
    "experimental-watch-progress-notify-interval",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-max-learners",
];

/// `--experimental-*` on/off flags that 3.6 turns into feature gates.
const GATES_IN_3_6: &[(&str, &str)] = &[
    ("experimental-initial-corrupt-check", "InitialCorruptCheck"),
    (
        "experimental-compact-hash-check-enabled",
        "CompactHashCheck",
    ),
    ("experimental-enable-lease-checkpoint", "LeaseCheckpoint"),
    (
        "experimental-enable-lease-checkpoint-persist",
        "LeaseCheckpointPersist",
    ),
    (
        "experimental-txn-mode-write-with-shared-buffer",
        "TxnModeWriteWithSharedBuffer",
    ),
    (
        "experimental-stop-grpc-service-on-defrag",
        "StopGRPCServiceOnDefrag",
    ),
];

/// Flags 3.6 removed.
fn removed_in_3_6(flag: &str) -> bool {
    flag == "enable-v2" || flag == "experimental-enable-v2v3" || flag.starts_with("proxy")
}

/// Flags that only exist from 3.6 on (the new spellings).
fn new_in_3_6(flag: &str) -> bool {
    flag == "feature-gates"
        || RENAMED_IN_3_6
            .iter()
            .any(|old| old.strip_prefix("experimental-") == Some(flag))
}

/// What etcd `v` makes of the operator's flag `--flag` (name without dashes and value), when it
/// differs from older versions: `Err` with the problem and the fix when `v` does not take it,
/// `Ok(Some(warning))` when it takes it but the spelling is going away.
pub fn check_operator_flag(v: Version, flag: &str) -> Result<Option<String>, (String, String)> {
    let line = classify_line(v);
    if line < Line::V3_6 {
        if new_in_3_6(flag) {
            let fix = if flag == "feature-gates" {
                "set the matching --experimental-* flag instead".to_owned()
            } else {
                format!("write --experimental-{flag} instead")
            };
            return Err((
                format!(
                    "etcd {} does not know --{flag} (it is etcd 3.6's name)",
                    show(v)
                ),
                fix,
            ));
        }
        return Ok(None);
    }
    match change_in_3_6(flag) {
        None => Ok(None),
        Some(FlagChange::Removed) => Err((
            format!("etcd {} removed --{flag}", show(v)),
            "remove it from etcd.extra_args".into(),
        )),
        Some(FlagChange::Renamed { new }) => Ok(Some(format!(
            "etcd.extra_args: --{flag} is deprecated in etcd 3.6 and removed in 3.7; write \
             --{new} instead"
        ))),
        Some(FlagChange::FeatureGate { gate }) => Ok(Some(format!(
            "etcd.extra_args: --{flag} is deprecated in etcd 3.6 and removed in 3.7; write \
             --feature-gates={gate}=true (or =false) instead"
        ))),
    }
}

/// How 3.6 changed `flag` (name without dashes), if it did.
pub fn change_in_3_6(flag: &str) -> Option<FlagChange> {
    if removed_in_3_6(flag) {
        return Some(FlagChange::Removed);
    }
    if RENAMED_IN_3_6.contains(&flag) {
        let new = flag.strip_prefix("experimental-").unwrap_or(flag);
        return Some(FlagChange::Renamed { new: new.into() });
    }
    GATES_IN_3_6
        .iter()
        .find(|(old, _)| *old == flag)
        .map(|(_, gate)| FlagChange::FeatureGate { gate })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_versions_are_supported_on_their_line() {
        assert_eq!(classify((3, 4, 23)), Verdict::Supported(Line::V3_4));
        assert_eq!(classify((3, 4, 0)), Verdict::Supported(Line::V3_4));
        assert_eq!(classify((3, 5, 16)), Verdict::Supported(Line::V3_5));
        assert_eq!(classify((3, 5, 30)), Verdict::Supported(Line::V3_5));
        assert_eq!(classify((3, 6, 0)), Verdict::Supported(Line::V3_6));
        assert_eq!(classify(NEWEST_KNOWN), Verdict::Supported(Line::V3_6));
    }

    #[test]
    fn too_old_and_unknown_minors_are_refused_with_a_fix() {
        for v in [(3, 3, 25), (2, 3, 8), (3, 7, 0), (4, 0, 0)] {
            match classify(v) {
                Verdict::Refused { problem, fix } => {
                    assert!(problem.contains(&show(v)), "{problem}");
                    assert!(!fix.is_empty());
                }
                other => panic!("{v:?}: {other:?}"),
            }
        }
        let Verdict::Refused { problem, .. } = classify((3, 7, 1)) else {
            panic!()
        };
        assert!(problem.contains("newer than the newest"), "{problem}");
    }

    #[test]
    fn newer_patch_of_the_newest_minor_and_buggy_35_warn() {
        let newer = (NEWEST_KNOWN.0, NEWEST_KNOWN.1, NEWEST_KNOWN.2 + 1);
        match classify(newer) {
            Verdict::Warn(Line::V3_6, w) => assert!(w.contains("newer patch"), "{w}"),
            other => panic!("{other:?}"),
        }
        match classify((3, 5, 2)) {
            Verdict::Warn(Line::V3_5, w) => assert!(w.contains("3.5.3"), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corruption_checks_per_version() {
        assert!(corruption_check_flags((3, 4, 23)).is_empty());
        assert!(corruption_check_flags((3, 5, 4)).is_empty());
        assert_eq!(
            corruption_check_flags((3, 5, 16)),
            ["--experimental-compact-hash-check-enabled=true"]
        );
        assert_eq!(
            corruption_check_flags((3, 6, 5)),
            ["--feature-gates=CompactHashCheck=true"]
        );
    }

    #[test]
    fn offline_tool_per_version() {
        assert_eq!(OfflineTool::for_version((3, 4, 23)), OfflineTool::Etcdctl);
        assert_eq!(OfflineTool::for_version((3, 5, 16)), OfflineTool::Etcdutl);
        assert_eq!(OfflineTool::for_version((3, 6, 0)).program(), "etcdutl");
    }

    #[test]
    fn operator_flags_across_versions() {
        // 3.4/3.5 take the experimental names, not 3.6's.
        assert_eq!(
            check_operator_flag((3, 5, 16), "experimental-corrupt-check-time"),
            Ok(None)
        );
        let (problem, fix) = check_operator_flag((3, 5, 16), "corrupt-check-time").unwrap_err();
        assert!(
            problem.contains("3.5.16") && problem.contains("3.6"),
            "{problem}"
        );
        assert!(fix.contains("--experimental-corrupt-check-time"), "{fix}");
        assert!(check_operator_flag((3, 4, 23), "feature-gates").is_err());
        // 3.6 takes the old names with a warning naming the new one...
        let w = check_operator_flag((3, 6, 0), "experimental-compaction-batch-limit")
            .unwrap()
            .unwrap();
        assert!(w.contains("--compaction-batch-limit"), "{w}");
        let w = check_operator_flag((3, 6, 0), "experimental-initial-corrupt-check")
            .unwrap()
            .unwrap();
        assert!(w.contains("--feature-gates=InitialCorruptCheck"), "{w}");
        // ...its own names silently, and refuses what it removed.
        assert_eq!(
            check_operator_flag((3, 6, 0), "corrupt-check-time"),
            Ok(None)
        );
        assert_eq!(check_operator_flag((3, 6, 0), "snapshot-count"), Ok(None));
        for removed in [
            "enable-v2",
            "experimental-enable-v2v3",
            "proxy-dial-timeout",
        ] {
            let (problem, _) = check_operator_flag((3, 6, 1), removed).unwrap_err();
            assert!(problem.contains("removed"), "{problem}");
        }
        assert_eq!(check_operator_flag((3, 5, 30), "enable-v2"), Ok(None));
    }
}
