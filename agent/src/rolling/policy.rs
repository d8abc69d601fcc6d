//! The rolling restart's decisions, pure: whether the binary behind `etcd.binary` may replace
//! the running etcd (an upgrade), whether this member owes the cluster a restart, and how far
//! the cluster is. The "one member at a time, only while every voter is healthy" part is the
//! job lock and [`crate::jobs::may_run`], shared with defragmentation.

use crate::etcd::version::{show, Version};

/// etcd 3.5 patches before this one lose learner promotions on the way to 3.6 (etcd#19557).
pub const MIN_35_BEFORE_36: Version = (3, 5, 26);

/// What to make of the binary at `etcd.binary` reporting `binary` while etcd `running` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryChange {
    /// The same version: nothing to do.
    Same,
    /// Restart this member on the new binary (in turn).
    Upgrade { from: Version, to: Version },
    /// Not done; why and what to do instead. Nothing is restarted.
    Refused(String),
}

/// Decides about a changed binary. `members` are the versions the cluster's members run now
/// (this one included), as their status reports them.
pub fn binary_change(running: Version, binary: Version, members: &[Version]) -> BinaryChange {
    if running == binary {
        return BinaryChange::Same;
    }
    let (from, to) = (show(running), show(binary));
    let minor = |v: Version| (v.0, v.1);
    if minor(binary) < minor(running) {
        return BinaryChange::Refused(format!(
            "etcd.binary is now etcd {to}, older than the running {from}: etcd does not \
             support going back a minor version by swapping binaries. Fix: put etcd {}.{} back \
             at etcd.binary (to go back, restore a snapshot taken before the upgrade)",
            running.0, running.1
        ));
    }
    if binary.0 != running.0 || binary.1 > running.1 + 1 {
        return BinaryChange::Refused(format!(
            "etcd.binary is now etcd {to} but {from} runs: etcd upgrades one minor version at a \
             time. Fix: upgrade to the newest {}.{} patch first, then to {}.{}",
            running.0,
            running.1 + 1,
            binary.0,
            binary.1
        ));
    }
    if minor(binary) == (3, 6) {
        if let Some(old) = members
            .iter()
            .find(|v| minor(**v) == (3, 5) && **v < MIN_35_BEFORE_36)
        {
            return BinaryChange::Refused(format!(
                "etcd.binary is now etcd {to}, but a member runs etcd {}: members promoted from \
                 learners on 3.5.1-3.5.19 come back as learners on 3.6 (etcd#19557). Fix: \
                 upgrade every member to {} or later first",
                show(*old),
                show(MIN_35_BEFORE_36)
            ));
        }
    }
    BinaryChange::Upgrade {
        from: running,
        to: binary,
    }
}

/// Why this member restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartReason {
    /// `etcd.binary` changed version.
    Upgrade { from: Version, to: Version },
    /// `quorate etcd restart --rolling` (request id).
    Requested { id: u64 },
    /// `quorate restart` (the package's postinst after an upgrade): this agent restarts on
    /// the quorate binary now installed, which takes its etcd down too.
    AgentRestart,
}

impl std::fmt::Display for RestartReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartReason::Upgrade { from, to } => {
                write!(f, "upgrading etcd {} -> {}", show(*from), show(*to))
            }
            RestartReason::Requested { id } => write!(f, "rolling restart {id}"),
            RestartReason::AgentRestart => write!(f, "restarting quorate on its new binary"),
        }
    }
}

/// Whether this member owes a restart: the agent was asked to restart on its new binary, the
/// etcd binary changed (and may be used), or a rolling restart was requested after the last
/// one this member did. Never while the etcd binary is refused: a restart would start it.
pub fn restart_due(
    change: &BinaryChange,
    requested: Option<u64>,
    done: Option<u64>,
    agent_restart: bool,
) -> Option<RestartReason> {
    match change {
        BinaryChange::Refused(_) => return None,
        _ if agent_restart => return Some(RestartReason::AgentRestart),
        BinaryChange::Upgrade { from, to } => {
            return Some(RestartReason::Upgrade {
                from: *from,
                to: *to,
            })
        }
        BinaryChange::Same => {}
    }
    match (requested, done) {
        (Some(id), Some(d)) if d >= id => None,
        (Some(id), _) => Some(RestartReason::Requested { id }),
        (None, _) => None,
    }
}

/// A restarted member has caught up when its applied index is within this many entries of the
/// leader's.
pub const CAUGHT_UP_WITHIN: u64 = 100;

/// Whether a member applied up to `applied` has caught up with the leader's `leader_index`.
pub fn caught_up(applied: u64, leader_index: u64) -> bool {
    applied + CAUGHT_UP_WITHIN >= leader_index
}

/// "upgrading etcd 3.4.23 -> 3.5.30: 2/3 members done", from the versions the members run.
pub fn upgrade_progress(from: Version, to: Version, members: &[Version]) -> String {
    let done = members.iter().filter(|v| **v == to).count();
    format!(
        "upgrading etcd {} -> {}: {done}/{} members done",
        show(from),
        show(to),
        members.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_is_nothing() {
        assert_eq!(
            binary_change((3, 4, 23), (3, 4, 23), &[(3, 4, 23)]),
            BinaryChange::Same
        );
    }

    #[test]
    fn one_minor_up_and_patches_are_upgrades() {
        let three = [(3, 4, 23); 3];
        assert_eq!(
            binary_change((3, 4, 23), (3, 5, 30), &three),
            BinaryChange::Upgrade {
                from: (3, 4, 23),
                to: (3, 5, 30)
            }
        );
        // A patch either way within the minor is a restart on the new binary.
        assert!(matches!(
            binary_change((3, 5, 30), (3, 5, 16), &[(3, 5, 30)]),
            BinaryChange::Upgrade { .. }
        ));
        assert!(matches!(
            binary_change((3, 5, 26), (3, 6, 0), &[(3, 5, 26), (3, 5, 30), (3, 6, 0)]),
            BinaryChange::Upgrade { .. }
        ));
    }

    #[test]
    fn downgrades_skips_and_early_36_are_refused_with_a_fix() {
        let refused = |c: BinaryChange| match c {
            BinaryChange::Refused(why) => why,
            other => panic!("{other:?}"),
        };
        let why = refused(binary_change((3, 5, 30), (3, 4, 23), &[(3, 5, 30)]));
        assert!(
            why.contains("older") && why.contains("Fix: put etcd 3.5 back"),
            "{why}"
        );
        let why = refused(binary_change((3, 4, 23), (3, 6, 0), &[(3, 4, 23)]));
        assert!(
            why.contains("one minor version at a time") && why.contains("3.5"),
            "{why}"
        );
        let why = refused(binary_change((3, 4, 23), (4, 0, 0), &[(3, 4, 23)]));
        assert!(why.contains("one minor version"), "{why}");
        let why = refused(binary_change(
            (3, 5, 30),
            (3, 6, 0),
            &[(3, 5, 30), (3, 5, 16), (3, 5, 30)],
        ));
        assert!(why.contains("3.5.16") && why.contains("3.5.26"), "{why}");
        assert!(why.contains("etcd#19557"), "{why}");
        // This member's own old version counts too.
        assert!(matches!(
            binary_change((3, 5, 25), (3, 6, 1), &[(3, 5, 25)]),
            BinaryChange::Refused(_)
        ));
    }

    #[test]
    fn restart_due_for_an_upgrade_or_a_newer_request() {
        let up = BinaryChange::Upgrade {
            from: (3, 4, 23),
            to: (3, 5, 30),
        };
        assert!(matches!(
            restart_due(&up, None, None, false),
            Some(RestartReason::Upgrade { .. })
        ));
        let same = BinaryChange::Same;
        assert_eq!(restart_due(&same, None, None, false), None);
        assert_eq!(
            restart_due(&same, Some(7), None, false),
            Some(RestartReason::Requested { id: 7 })
        );
        assert_eq!(
            restart_due(&same, Some(7), Some(6), false),
            Some(RestartReason::Requested { id: 7 })
        );
        assert_eq!(restart_due(&same, Some(7), Some(7), false), None);
        // A refused binary restarts nothing, not even on request (it would start it).
        let refused = BinaryChange::Refused("no".into());
        assert_eq!(restart_due(&refused, None, None, false), None);
        assert_eq!(restart_due(&refused, Some(3), None, false), None);
        // The agent's own restart comes first (it restarts etcd on the new binary too), but
        // never onto a refused etcd binary.
        assert_eq!(
            restart_due(&up, Some(7), None, true),
            Some(RestartReason::AgentRestart)
        );
        assert_eq!(
            restart_due(&same, None, None, true),
            Some(RestartReason::AgentRestart)
        );
        assert_eq!(restart_due(&refused, None, None, true), None);
    }

    #[test]
    fn caught_up_and_progress() {
        assert!(caught_up(1000, 1000));
        assert!(caught_up(900, 1000));
        assert!(!caught_up(899, 1000));
        assert_eq!(
            upgrade_progress(
                (3, 4, 23),
                (3, 5, 30),
                &[(3, 5, 30), (3, 5, 30), (3, 4, 23)]
            ),
            "upgrading etcd 3.4.23 -> 3.5.30: 2/3 members done"
        );
    }
}
