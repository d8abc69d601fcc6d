//! The policy of `quorate leave`, pure: given whether this host holds a member, what the
//! cluster answered, and whether the operator forced it, what the agent does. Removing this
//! host's member must never cost the cluster its quorum unless the operator says `--force`;
//! a cluster that cannot be reached is left without removing the member only when forced.

use crate::etcd::MemberHealth;
use crate::node::membership::removal_is_safe;

/// What `quorate leave` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveDecision {
    /// This host has left already during this run.
    AlreadyLeft,
    /// Refused, with the message for the operator; nothing is changed.
    Refuse(String),
    /// Remove member `id` through the cluster, then stop etcd and move its data aside.
    /// `warning` is set when the operator forced a removal that costs quorum.
    Remove { id: u64, warning: Option<String> },
    /// Stop etcd and move its data aside without a removal (no member here, or the cluster
    /// does not list this host, or it is unreachable and the operator forced it).
    StopOnly { warning: Option<String> },
}

/// What the cluster said when asked for its members.
pub type Answer<'a> = Result<&'a [MemberHealth], &'a str>;

/// Decides `quorate leave [--force]` for host `me`. `cluster` is `None` when this host holds
/// no member (nothing to ask).
pub fn leave_decision(
    me: &str,
    left: bool,
    force: bool,
    cluster: Option<Answer<'_>>,
) -> LeaveDecision {
    if left {
        return LeaveDecision::AlreadyLeft;
    }
    let members = match cluster {
        None => return LeaveDecision::StopOnly { warning: None },
        Some(Ok(members)) => members,
        Some(Err(e)) if force => {
            return LeaveDecision::StopOnly {
                warning: Some(format!(
                    "cannot reach the cluster ({e}); leaving without removing the member"
                )),
            }
        }
        Some(Err(e)) => {
            return LeaveDecision::Refuse(format!(
                "cannot reach the cluster to remove this member ({e}); use --force to stop etcd \
                 anyway"
            ))
        }
    };
    let Some(mine) = members.iter().find(|m| m.member.name == me) else {
        return LeaveDecision::StopOnly { warning: None };
    };
    let id = mine.member.id;
    match removal_is_safe(members, id) {
        Ok(()) => LeaveDecision::Remove { id, warning: None },
        Err(why) if force => LeaveDecision::Remove {
            id,
            warning: Some(format!("leaving by force although it costs quorum ({why})")),
        },
        Err(why) => LeaveDecision::Refuse(format!(
            "refusing to leave: removing this member would cost the cluster its quorum ({why}); \
             use --force to leave anyway"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, healthy: bool) -> MemberHealth {
        MemberHealth::example(id, name, &format!("10.0.0.{id}"), false, healthy)
    }

    #[test]
    fn leaving_twice_is_a_no_op() {
        assert_eq!(
            leave_decision("a", true, false, None),
            LeaveDecision::AlreadyLeft
        );
    }

    #[test]
    fn without_a_member_etcd_is_just_stopped() {
        assert_eq!(
            leave_decision("a", false, false, None),
            LeaveDecision::StopOnly { warning: None }
        );
        let others = [m(2, "b", true), m(3, "c", true)];
        assert_eq!(
            leave_decision("a", false, false, Some(Ok(&others))),
            LeaveDecision::StopOnly { warning: None },
            "the cluster does not list this host"
        );
    }

    #[test]
    fn a_healthy_cluster_removes_the_member() {
        let all = [m(1, "a", true), m(2, "b", true), m(3, "c", true)];
        assert_eq!(
            leave_decision("a", false, false, Some(Ok(&all))),
            LeaveDecision::Remove {
                id: 1,
                warning: None
            }
        );
    }

    #[test]
    fn costing_quorum_is_refused_unless_forced() {
        // b is down: removing a leaves c alone of {b, c}.
        let members = [m(1, "a", true), m(2, "b", false), m(3, "c", true)];
        match leave_decision("a", false, false, Some(Ok(&members))) {
            LeaveDecision::Refuse(msg) => {
                assert!(msg.contains("would cost the cluster its quorum"), "{msg}");
                assert!(msg.contains("--force"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        match leave_decision("a", false, true, Some(Ok(&members))) {
            LeaveDecision::Remove {
                id: 1,
                warning: Some(w),
            } => assert!(w.contains("by force"), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreachable_cluster_is_refused_unless_forced() {
        match leave_decision("a", false, false, Some(Err("timed out"))) {
            LeaveDecision::Refuse(msg) => {
                assert!(msg.contains("timed out") && msg.contains("--force"))
            }
            other => panic!("{other:?}"),
        }
        match leave_decision("a", false, true, Some(Err("timed out"))) {
            LeaveDecision::StopOnly { warning: Some(w) } => assert!(w.contains("timed out")),
            other => panic!("{other:?}"),
        }
    }
}
