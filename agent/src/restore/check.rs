//! The checks before a restore touches anything, as pure functions: the snapshot's etcd
//! version against the local one, and who restores (this agent must be a voter, and a
//! majority of the voters' agents must be live so that the members left out can never form
//! the old cluster again), with no other restore in progress.

use std::path::Path;

use super::RestoreError;
use crate::etcd::MemberHealth;
use crate::plan::PlanMember;

/// A restore in progress: generation, who started it, when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgress {
    pub generation: u64,
    pub by: String,
    pub at: u64,
}

/// Refuses a snapshot taken by a newer etcd minor version than `local`.
pub fn version_ok(path: &Path, snapshot: &str, local: (u32, u32, u32)) -> Result<(), RestoreError> {
    let mut parts = snapshot.trim_start_matches('v').split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    let (Some(major), Some(minor)) = (major, minor) else {
        return Err(RestoreError::Incomplete {
            path: path.to_owned(),
            reason: format!("its manifest names etcd version {snapshot:?}, which is not a version"),
        });
    };
    if (major, minor) > (local.0, local.1) {
        return Err(RestoreError::TooNew {
            path: path.to_owned(),
            snapshot: snapshot.to_owned(),
            local: format!("{}.{}.{}", local.0, local.1, local.2),
        });
    }
    Ok(())
}

/// The members that restore: the voters whose agents are live (`live` holds the names of the
/// live agents, this one included).
pub fn restore_members(
    me: &str,
    members: &[MemberHealth],
    live: &[String],
    in_progress: Option<&InProgress>,
) -> Result<Vec<PlanMember>, RestoreError> {
    if let Some(p) = in_progress {
        return Err(RestoreError::InProgress {
            generation: p.generation,
            by: p.by.clone(),
            at: crate::snapshot::file::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(p.at),
            ),
        });
    }
    let voters: Vec<&MemberHealth> = members.iter().filter(|m| !m.member.is_learner).collect();
    if !voters.iter().any(|m| m.member.name == me) {
        return Err(RestoreError::Refused(format!(
            "{me} is not a voting member of the cluster; start the restore on a voting member's \
             host"
        )));
    }
    let mut chosen = Vec::new();
    for v in &voters {
        let m = &v.member;
        if !live.contains(&m.name) {
            continue;
        }
        let (Some(peer), Some(client)) = (m.peer_urls.first(), m.client_urls.first()) else {
            continue;
        };
        chosen.push(PlanMember {
            name: m.name.clone(),
            peer_url: peer.clone(),
            client_url: client.clone(),
        });
    }
    if chosen.len() * 2 <= voters.len() {
        let names: Vec<&str> = voters.iter().map(|v| v.member.name.as_str()).collect();
        return Err(RestoreError::Refused(format!(
            "only {} of the {} voters ({}) have a live agent; a restore needs a majority, so \
             that the members left out can never form the old cluster again. Fix: start the \
             agents of the down members first",
            chosen.len(),
            voters.len(),
            names.join(", ")
        )));
    }
    chosen.sort();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<MemberHealth> {
        vec![
            MemberHealth::example(1, "a", "10.0.0.1", false, true),
            MemberHealth::example(2, "b", "10.0.0.2", false, true),
            MemberHealth::example(3, "c", "10.0.0.3", false, false),
            MemberHealth::example(4, "d", "10.0.0.4", true, true),
        ]
    }

    fn live(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn live_voters_restore_and_learners_do_not() {
        let chosen = restore_members("a", &members(), &live(&["a", "b", "d"]), None).unwrap();
        let names: Vec<&str> = chosen.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(chosen[1].peer_url, "https://10.0.0.2:2380");
    }

    #[test]
    fn without_a_live_majority_of_voters_it_is_refused() {
        let err = restore_members("a", &members(), &live(&["a", "d"]), None).unwrap_err();
        assert!(err.to_string().contains("only 1 of the 3 voters"), "{err}");
    }

    #[test]
    fn a_learner_or_stranger_cannot_start_it() {
        for me in ["d", "x"] {
            let err =
                restore_members(me, &members(), &live(&["a", "b", "d", "x"]), None).unwrap_err();
            assert!(err.to_string().contains("not a voting member"), "{err}");
        }
    }

    #[test]
    fn a_restore_in_progress_is_named() {
        let p = InProgress {
            generation: 2,
            by: "b".into(),
            at: 0,
        };
        let err = restore_members("a", &members(), &live(&["a", "b"]), Some(&p)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a restore (generation 2, started by b at 1970-01-01T00:00:00Z) is in progress; wait for it"
        );
    }

    #[test]
    fn a_newer_minor_version_is_refused() {
        let p = Path::new("/s.db");
        version_ok(p, "3.4.23", (3, 4, 23)).unwrap();
        version_ok(p, "3.4.30", (3, 4, 23)).unwrap();
        version_ok(p, "3.3.0", (3, 4, 23)).unwrap();
        let err = version_ok(p, "3.5.16", (3, 4, 23)).unwrap_err().to_string();
        assert!(
            err.contains("etcd 3.5.16") && err.contains("3.4.23"),
            "{err}"
        );
        assert!(version_ok(p, "x", (3, 4, 23)).is_err());
    }
}
