//! Membership decisions for a host that has a plan and a certificate but no etcd data, and the
//! quorum rule for removing a member. Pure: the member list and each member's health come in
//! as arguments (the driver asked the running cluster for them).
//!
//! How a host without data gets a member:
//! - it is an initial member that never started (etcd lists its peer URL without a name):
//!   bootstrap with `--initial-cluster-state new`, as the plan says;
//! - etcd already lists a learner for it that was never started (the agent died between
//!   `member add` and starting etcd): start that learner;
//! - etcd lists a started member under its name: that member's data is gone (a wiped or
//!   rebuilt host). Remove the stale member, but only if that cannot cost quorum, then join;
//! - etcd does not list it: add it as a learner and start it (`existing`); it is promoted to a
//!   voter once it has caught up.

use std::collections::BTreeSet;

use crate::etcd::{Member, MemberHealth};

/// What a host without data does, given the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAction {
    /// Bootstrap as an initial member of the plan.
    StartNew,
    /// Start the learner that etcd already lists for us, with this `--initial-cluster`.
    StartLearner { initial_cluster: String },
    /// Ask etcd to add us as a learner.
    AddLearner,
    /// Remove our own stale member (its data is gone) before joining again.
    RemoveStale { id: u64 },
    /// Nothing can be done yet; the reason.
    Wait(String),
}

/// Decides how this host (name `me`, peer URL `peer_url`) gets a member.
pub fn join_action(
    me: &str,
    peer_url: &str,
    in_plan: bool,
    members: &[MemberHealth],
) -> JoinAction {
    // This host's member is the one at its peer URL. A member with this host's name elsewhere
    // is another host with the same name (or this host's address changed): never touch it.
    if let Some(other) = members
        .iter()
        .find(|m| m.member.name == me && !m.member.peer_urls.iter().any(|u| u == peer_url))
    {
        return JoinAction::Wait(format!(
            "etcd has a member named {me} at {} but this host's peer URL is {peer_url}: two \
             hosts share the name {me} (set node_name), or this host's address changed (remove \
             the old member with etcdctl member remove {:x})",
            other.member.peer_urls.join(","),
            other.member.id
        ));
    }
    let mine = members
        .iter()
        .find(|m| m.member.peer_urls.iter().any(|u| u == peer_url));
    match mine {
        Some(m) if m.member.name.is_empty() && !m.member.is_learner => {
            if in_plan {
                JoinAction::StartNew
            } else {
                JoinAction::Wait(format!(
                    "etcd lists an unstarted voting member with this host's peer URL {peer_url} \
                     that is not in the plan; remove it with etcdctl member remove {:x}",
                    m.member.id
                ))
            }
        }
        Some(m) if m.member.name.is_empty() => JoinAction::StartLearner {
            initial_cluster: initial_cluster_with(
                me,
                m.member.id,
                members.iter().map(|m| &m.member),
            ),
        },
        Some(m) if m.healthy => JoinAction::Wait(format!(
            "member {:x} at this host's peer URL {} answers although this host runs no etcd: \
             another etcd uses this address (stop it)",
            m.member.id,
            m.member.peer_urls.join(",")
        )),
        Some(m) => match removal_is_safe(members, m.member.id) {
            Ok(()) => JoinAction::RemoveStale { id: m.member.id },
            Err(why) => JoinAction::Wait(format!(
                "this host's old member {} ({:x}) must be removed before it can rejoin, but {why}",
                m.member.name, m.member.id
            )),
        },
        None => {
            let dead: Vec<&MemberHealth> = members
                .iter()
                .filter(|m| !m.member.is_learner && !m.healthy)
                .collect();
            if !dead.is_empty() && has_quorum(members) {
                let names: Vec<String> = dead
                    .iter()
                    .map(|m| {
                        format!(
                            "{} ({:x})",
                            if m.member.name.is_empty() {
                                "unstarted"
                            } else {
                                &m.member.name
                            },
                            m.member.id
                        )
                    })
                    .collect();
                return JoinAction::Wait(format!(
                    "etcd accepts a new member only while every voting member is reachable, and \
                     {} {} not: remove it with `etcdctl member remove <id>`, or set \
                     remove_dead_after to let quorate do it",
                    names.join(", "),
                    if dead.len() == 1 { "is" } else { "are" }
                ));
            }
            if members.iter().any(|m| m.member.is_learner) {
                JoinAction::Wait(
                    "another host is joining as a learner; etcd allows one at a time".into(),
                )
            } else if !has_quorum(members) {
                JoinAction::Wait("the cluster has no quorum; cannot add a member".into())
            } else {
                JoinAction::AddLearner
            }
        }
    }
}

/// `--initial-cluster` for a joining member: every member's name and peer URLs, with our
/// own (still unnamed) entry named `me`. Other unstarted members get a placeholder name;
/// etcd matches existing members by peer URL.
pub fn initial_cluster_with<'a>(
    me: &str,
    my_id: u64,
    members: impl IntoIterator<Item = &'a Member>,
) -> String {
    let mut parts = Vec::new();
    for m in members {
        let name = if m.id == my_id {
            me.to_owned()
        } else if m.name.is_empty() {
            format!("unstarted-{:x}", m.id)
        } else {
            m.name.clone()
        };
        for url in &m.peer_urls {
            parts.push(format!("{name}={url}"));
        }
    }
    parts.join(",")
}

/// Whether the voting members that answered form a quorum.
pub fn has_quorum(members: &[MemberHealth]) -> bool {
    let voters: Vec<&MemberHealth> = members.iter().filter(|m| !m.member.is_learner).collect();
    let healthy = voters.iter().filter(|m| m.healthy).count();
    !voters.is_empty() && healthy > voters.len() / 2
}

/// Whether removing member `id` leaves a cluster whose healthy voters still form a quorum.
/// Removing a learner never affects quorum.
pub fn removal_is_safe(members: &[MemberHealth], id: u64) -> Result<(), String> {
    let Some(target) = members.iter().find(|m| m.member.id == id) else {
        return Err(format!("member {id:x} is not in the cluster"));
    };
    if !has_quorum(members) {
        return Err("the cluster has no quorum now".into());
    }
    if target.member.is_learner {
        return Ok(());
    }
    let remaining: Vec<&MemberHealth> = members
        .iter()
        .filter(|m| !m.member.is_learner && m.member.id != id)
        .collect();
    if remaining.is_empty() {
        return Err("it is the last voting member".into());
    }
    let healthy = remaining.iter().filter(|m| m.healthy).count();
    let quorum = remaining.len() / 2 + 1;
    if healthy >= quorum {
        Ok(())
    } else {
        Err(format!(
            "only {healthy} of the remaining {} voting members are healthy, fewer than the {quorum} needed for quorum",
            remaining.len()
        ))
    }
}

/// Members whose agents have been dead longer than allowed, that one agent may remove now:
/// at most one per call, never `me`, and only when removal is safe.
pub fn dead_member_to_remove(
    me: &str,
    members: &[MemberHealth],
    dead_too_long: &BTreeSet<String>,
) -> Option<u64> {
    members
        .iter()
        .filter(|m| m.member.name != me && !m.member.name.is_empty() && !m.healthy)
        .filter(|m| dead_too_long.contains(&m.member.name))
        .find(|m| removal_is_safe(members, m.member.id).is_ok())
        .map(|m| m.member.id)
}

/// Learners that were added but never started (no name yet) and whose peer URL no live agent
/// claims: left behind by a host that died between `member add` and starting etcd. etcd allows
/// one learner at a time, so such a leftover would block every later join.
pub fn unclaimed_learners(members: &[Member], claimed_peer_urls: &BTreeSet<String>) -> Vec<u64> {
    members
        .iter()
        .filter(|m| m.is_learner && m.name.is_empty())
        .filter(|m| !m.peer_urls.iter().any(|u| claimed_peer_urls.contains(u)))
        .map(|m| m.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, learner: bool, healthy: bool) -> MemberHealth {
        MemberHealth::example(id, name, &format!("10.0.0.{id}"), learner, healthy)
    }

    fn plain(members: &[MemberHealth]) -> Vec<Member> {
        members.iter().map(|m| m.member.clone()).collect()
    }

    fn url(id: u64) -> String {
        format!("https://10.0.0.{id}:2380")
    }

    #[test]
    fn late_initial_member_bootstraps() {
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "", false, false),
        ];
        assert_eq!(
            join_action("c", &url(3), true, &members),
            JoinAction::StartNew
        );
        // Not in the plan: never bootstrap.
        assert!(matches!(
            join_action("c", &url(3), false, &members),
            JoinAction::Wait(_)
        ));
    }

    #[test]
    fn new_host_is_added_as_learner() {
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, true),
        ];
        assert_eq!(
            join_action("d", &url(4), false, &members),
            JoinAction::AddLearner
        );
    }

    #[test]
    fn joins_are_serialized_behind_a_learner() {
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, true),
            m(4, "d", true, true),
        ];
        assert!(matches!(
            join_action("e", &url(5), false, &members),
            JoinAction::Wait(w) if w.contains("one at a time")
        ));
    }

    #[test]
    fn added_but_unstarted_learner_is_started() {
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(4, "", true, false),
        ];
        assert_eq!(
            join_action("d", &url(4), false, &members),
            JoinAction::StartLearner {
                initial_cluster:
                    "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,d=https://10.0.0.4:2380".into()
            }
        );
    }

    #[test]
    fn wiped_host_removes_its_stale_member_only_when_safe() {
        // c's data is gone: its member is listed as started but does not answer.
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, false),
        ];
        assert_eq!(
            join_action("c", &url(3), true, &members),
            JoinAction::RemoveStale { id: 3 }
        );
        // With b down too, removing c would leave a alone of a and b: not safe.
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, false),
            m(3, "c", false, false),
        ];
        assert!(matches!(
            join_action("c", &url(3), true, &members),
            JoinAction::Wait(w) if w.contains("quorum")
        ));
    }

    #[test]
    fn a_member_with_our_name_elsewhere_is_never_removed() {
        // Healthy or not: another host has this name (or our address changed).
        for healthy in [true, false] {
            let mut other = m(7, "c", false, healthy);
            other.member.peer_urls = vec![url(7)];
            let members = [m(1, "a", false, true), m(2, "b", false, true), other];
            assert!(matches!(
                join_action("c", &url(3), false, &members),
                JoinAction::Wait(w) if w.contains("share the name")
            ));
        }
    }

    #[test]
    fn a_dead_voter_blocks_joins_with_a_clear_message() {
        let members = [
            m(1, "a", false, false),
            m(2, "b", false, true),
            m(3, "c", false, true),
        ];
        assert!(matches!(
            join_action("d", &url(4), false, &members),
            JoinAction::Wait(w) if w.contains("a (1)") && w.contains("remove_dead_after")
        ));
    }

    #[test]
    fn no_quorum_no_add() {
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, false),
            m(3, "c", false, false),
        ];
        assert!(matches!(
            join_action("d", &url(4), false, &members),
            JoinAction::Wait(_)
        ));
    }

    #[test]
    fn removal_rules() {
        let three = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, true),
        ];
        // Any one of three healthy members can go: two remain, both healthy.
        assert!(removal_is_safe(&three, 3).is_ok());
        // Of 3 with one down, removing a healthy one leaves 1 healthy of 2: refused.
        let degraded = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, false),
        ];
        assert!(removal_is_safe(&degraded, 1).is_err());
        // ... removing the dead one is fine.
        assert!(removal_is_safe(&degraded, 3).is_ok());
        // A learner can always go (while there is quorum).
        let with_learner = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(4, "d", true, false),
        ];
        assert!(removal_is_safe(&with_learner, 4).is_ok());
        // The last voter cannot.
        assert!(removal_is_safe(&[m(1, "a", false, true)], 1).is_err());
        assert!(removal_is_safe(&three, 9).is_err());
        // Five members, two down: removing a third (healthy) one is refused, a dead one is fine.
        let five = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, true),
            m(4, "d", false, false),
            m(5, "e", false, false),
        ];
        assert!(removal_is_safe(&five, 1).is_err());
        assert!(removal_is_safe(&five, 4).is_ok());
    }

    #[test]
    fn dead_members_are_removed_one_at_a_time_and_never_self() {
        let members = [
            m(1, "a", false, true),
            m(2, "b", false, true),
            m(3, "c", false, true),
            m(4, "d", false, false),
            m(5, "e", false, false),
        ];
        let dead: BTreeSet<String> = ["d".to_string(), "e".to_string(), "a".to_string()].into();
        assert_eq!(dead_member_to_remove("a", &members, &dead), Some(4));
        assert_eq!(dead_member_to_remove("a", &members, &BTreeSet::new()), None);
        // A healthy member is never "dead", whatever gossip says.
        let only_a: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(dead_member_to_remove("a", &members, &only_a), None);
    }

    #[test]
    fn only_unstarted_unclaimed_learners_are_leftovers() {
        let members = [
            m(1, "a", false, true),
            m(4, "", true, false),
            m(5, "", true, false),
            m(6, "f", true, true),
        ];
        let claimed: BTreeSet<String> = [url(5)].into();
        assert_eq!(unclaimed_learners(&plain(&members), &claimed), vec![4]);
        assert!(unclaimed_learners(&plain(&members[..1]), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn initial_cluster_names_placeholders() {
        let members = [
            m(1, "a", false, true),
            m(2, "", false, false),
            m(4, "", true, false),
        ];
        assert_eq!(
            initial_cluster_with("d", 4, &plain(&members)),
            "a=https://10.0.0.1:2380,unstarted-2=https://10.0.0.2:2380,d=https://10.0.0.4:2380"
        );
    }
}
