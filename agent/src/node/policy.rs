//! Small pure decisions the controller and the maintenance task make on every turn: which CA
//! this agent signs with (there is always exactly one issuer), whether etcd's data counts as
//! damaged, and in which order the cluster's endpoints are tried. No IO, no clock.

use std::sync::Arc;

use crate::etcd::ProcessState;
use crate::gossip::GossipView;
use crate::phase::Phase;
use crate::pki::CertificateAuthority;
use crate::plan::Plan;

/// Consecutive quick etcd failures with a data error before the data counts as damaged.
pub const DAMAGE_AFTER_FAILURES: u32 = 3;

/// The CA this agent signs with, if it is the issuer: the one it holds while it has won the
/// issuer election (`elected`), or, for the agent with the CA key on disk (the seed), as long as
/// no other live agent announces that it holds the election. So there is always an issuer (the
/// seed bootstraps everyone before etcd exists), and in steady state exactly one.
pub fn signing_ca(
    elected: Option<Arc<CertificateAuthority>>,
    disk: Option<Arc<CertificateAuthority>>,
    another_issuer_live: bool,
) -> Option<Arc<CertificateAuthority>> {
    elected.or(if another_issuer_live { None } else { disk })
}

/// etcd's last error when the data looks damaged: etcd is down (only then: a later good run
/// clears the suspicion), it failed to start quickly [`DAMAGE_AFTER_FAILURES`] times in a row,
/// and its last words name a data problem (`looks_damaged`).
pub fn damaged_verdict(
    process: &ProcessState,
    looks_damaged: impl Fn(&str) -> bool,
) -> Option<&str> {
    if process.pid.is_some() || process.quick_failures < DAMAGE_AFTER_FAILURES {
        return None;
    }
    process.last_error.as_deref().filter(|e| looks_damaged(e))
}

/// Client URLs of the other members, in the order to try them: those of running peers first
/// (most likely to answer), then the other live peers, then the plan's members; never this
/// node's own `me`, never twice.
pub fn cluster_endpoints(me: &str, view: &GossipView, plan: Option<&Plan>) -> Vec<String> {
    let mut running: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for m in view.live_metas() {
        if m.phase == Phase::Running {
            running.push(m.client_url.clone());
        } else {
            others.push(m.client_url.clone());
        }
    }
    if let Some(plan) = plan {
        others.extend(plan.members.iter().map(|m| m.client_url.clone()));
    }
    let mut urls = Vec::new();
    for u in running.into_iter().chain(others) {
        if u != me && !urls.contains(&u) {
            urls.push(u);
        }
    }
    urls
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::gossip::testing::{meta, view_of};
    use crate::plan::PlanMember;

    fn ca(name: &str) -> Arc<CertificateAuthority> {
        Arc::new(
            CertificateAuthority::generate(
                name,
                SystemTime::now(),
                std::time::Duration::from_secs(3600),
            )
            .unwrap(),
        )
    }

    #[test]
    fn exactly_one_issuer() {
        let (elected, disk) = (ca("elected"), ca("disk"));
        // Elected: signs with the elected CA whatever else is true.
        let got = signing_ca(Some(elected.clone()), Some(disk.clone()), true).unwrap();
        assert_eq!(got.hash(), elected.hash());
        // The seed signs until another live agent announces the election...
        let got = signing_ca(None, Some(disk.clone()), false).unwrap();
        assert_eq!(got.hash(), disk.hash());
        // ...and stops as soon as one does.
        assert!(signing_ca(None, Some(disk), true).is_none());
        // An agent with neither never signs.
        assert!(signing_ca(None, None, false).is_none());
    }

    fn process(pid: Option<u32>, quick: u32, err: Option<&str>) -> ProcessState {
        ProcessState {
            pid,
            quick_failures: quick,
            last_error: err.map(str::to_owned),
            ..ProcessState::default()
        }
    }

    #[test]
    fn damaged_only_while_down_after_repeated_quick_data_failures() {
        let data = |e: &str| e.contains("wal");
        let bad = Some("wal: crc mismatch");
        assert_eq!(damaged_verdict(&process(None, 3, bad), data), bad);
        assert_eq!(damaged_verdict(&process(None, 5, bad), data), bad);
        assert_eq!(
            damaged_verdict(&process(None, 2, bad), data),
            None,
            "too few failures"
        );
        assert_eq!(
            damaged_verdict(&process(Some(7), 3, bad), data),
            None,
            "etcd runs"
        );
        assert_eq!(
            damaged_verdict(&process(None, 3, Some("address already in use")), data),
            None,
            "not a data error"
        );
        assert_eq!(damaged_verdict(&process(None, 3, None), data), None);
    }

    #[test]
    fn endpoints_running_peers_first_then_others_then_plan_without_self_or_repeats() {
        let mut starting = meta("b", 2);
        starting.phase = Phase::Joining;
        let running = meta("c", 3);
        let view = view_of(vec![starting.clone(), running.clone()]);
        let plan = Plan::new(
            [("a", 1), ("b", 2), ("d", 4)]
                .iter()
                .map(|(n, i)| PlanMember {
                    name: (*n).into(),
                    peer_url: format!("https://127.0.0.{i}:2380"),
                    client_url: format!("https://127.0.0.{i}:2379"),
                })
                .collect(),
            crate::plan::tests::test_hash(1),
            "t".into(),
            "a",
            0,
        );
        let me = "https://127.0.0.1:2379";
        let got = cluster_endpoints(me, &view, Some(&plan));
        assert_eq!(
            got,
            vec![
                running.client_url.clone(),
                starting.client_url.clone(),
                "https://127.0.0.4:2379".to_owned(),
            ]
        );
        assert!(cluster_endpoints(me, &GossipView::default(), None).is_empty());
    }
}
