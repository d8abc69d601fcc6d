//! Golden tests of the `quorate status` text: whole renderings of representative reports,
//! kept in `golden/*.txt` so that a change of layout shows up as a readable diff.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::etcd::Member;
use crate::pki::CertInfo;

/// 2027-01-15T08:00:00Z, when every certificate below was issued.
const ISSUED: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn ca_hash() -> CaHash {
    "sha256:5f1c0e4b9a3d2c7e8f60a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6e7"
        .parse()
        .unwrap()
}

/// A certificate summary as the controller makes it, for a 90-day certificate.
fn certificate() -> CertSummary {
    CertSummary::of(&CertInfo {
        common_name: "etcd-1".into(),
        dns_names: Vec::new(),
        ips: Vec::new(),
        not_before: at(ISSUED - 300),
        not_after: at(ISSUED + 90 * DAY),
        serial_hex: "4c1d8e0f2a3b4c5d6e7f8091a2b3c4d5".into(),
        is_ca: false,
        server_auth: true,
        client_auth: true,
    })
}

fn plan() -> PlanReport {
    PlanReport {
        id: "9f2c41d07ab35e6810c4d2e9f7a6b513".into(),
        decided_by: "etcd-1".into(),
        cluster_token: "quorate-9f2c41d07ab35e68".into(),
        initial_cluster:
            "etcd-1=https://10.0.0.1:2380,etcd-2=https://10.0.0.2:2380,etcd-3=https://10.0.0.3:2380"
                .into(),
    }
}

fn peer(name: &str, addr: &str, state: PeerState, phase: Option<Phase>) -> GossipMember {
    GossipMember {
        name: name.into(),
        gossip_addr: addr.parse().unwrap(),
        state,
        phase,
        api_addr: phase.map(|_| addr.parse().unwrap()),
        seed: false,
        issuer: false,
    }
}

fn member(id: &str, name: &str, ip: &str, is_learner: bool) -> Member {
    Member {
        id: u64::from_str_radix(id, 16).unwrap(),
        name: name.into(),
        peer_urls: vec![format!("https://{ip}:2380")],
        client_urls: vec![format!("https://{ip}:2379")],
        is_learner,
    }
}

/// Every counter at zero except `set`, as [`StatusReport::build`] lists them.
fn counters(set: &[(&str, u64)]) -> BTreeMap<String, u64> {
    let mut all: BTreeMap<String, u64> = Counters::default()
        .snapshot()
        .into_iter()
        .map(|(name, _, v)| (name.to_owned(), v))
        .collect();
    for (name, v) in set {
        *all.get_mut(*name).unwrap() = *v;
    }
    all
}

fn three_members() -> Vec<Member> {
    vec![
        member("3b5d2f8a1c9e7d40", "etcd-1", "10.0.0.1", false),
        member("8e9e05c52164694d", "etcd-2", "10.0.0.2", false),
        member("c4a1f0e3b2d59786", "etcd-3", "10.0.0.3", false),
    ]
}

/// etcd-1: the seed and issuer of a healthy three-node cluster.
fn healthy_issuer() -> StatusReport {
    StatusReport {
        node: "etcd-1".into(),
        agent_version: "0.1.0".into(),
        advertise: "10.0.0.1".into(),
        seed: true,
        phase: Phase::Running,
        message: "healthy, leader etcd-2".into(),
        ready: true,
        issuer: true,
        ca_hash: Some(ca_hash()),
        plan: Some(plan()),
        gossip: vec![
            peer(
                "etcd-2",
                "10.0.0.2:7946",
                PeerState::Alive,
                Some(Phase::Running),
            ),
            peer(
                "etcd-3",
                "10.0.0.3:7946",
                PeerState::Alive,
                Some(Phase::Running),
            ),
        ],
        etcd: EtcdReport {
            pid: Some(4242),
            restarts: 0,
            last_exit: None,
            member_id: Some("3b5d2f8a1c9e7d40".into()),
            cluster_id: Some("a1b2c3d4e5f60718".into()),
            leader: Some("8e9e05c52164694d".into()),
            leader_name: Some("etcd-2".into()),
            raft_term: 7,
            is_learner: false,
            version: Some("3.5.16".into()),
            quorum: true,
            members: three_members(),
            error: None,
            alarms: vec![],
        },
        certificate: Some(certificate()),
        last_error: None,
        counters: counters(&[
            ("gossip_datagrams_received", 18_304),
            ("gossip_datagrams_sent", 18_291),
            ("api_requests", 4),
            ("certificates_issued", 4),
            ("etcd_starts", 1),
        ]),
        maintenance: None,
        snapshot: None,
        etcd_restarts: None,
        restore: None,
        restore_transfer: None,
        revocation: None,
        roles: None,
        ca_seal: Some(crate::node::seal::SealStatus {
            secret: Some("5f0c2a9e8b7d6c5f4e3d2c1b0a998877".into()),
            held: true,
            ca_sealed: true,
            looked: true,
            error: None,
        }),
        join_token: Some(crate::node::token::TokenStatus {
            in_force: "9d41c07be2a1".into(),
            also_accepted: vec!["4e6f0a2c1b3d".into()],
            config_outdated: None,
            rotation: Some(crate::rotation::Progress {
                to: "4e6f0a2c1b3d".into(),
                step: crate::rotation::Step::Install,
                waiting: vec!["etcd-3".into()],
            }),
            error: None,
        }),
        clients: Vec::new(),
    }
}

/// etcd-4 joining the running cluster: added as a learner, etcd not started under its name.
fn learner_joining() -> StatusReport {
    let mut gossip = healthy_issuer().gossip;
    let mut issuer = peer(
        "etcd-1",
        "10.0.0.1:7946",
        PeerState::Alive,
        Some(Phase::Running),
    );
    (issuer.seed, issuer.issuer) = (true, true);
    gossip.insert(0, issuer);
    let mut members = three_members();
    members.push(member("f00dfeed12345678", "", "10.0.0.4", true));
    StatusReport {
        node: "etcd-4".into(),
        advertise: "10.0.0.4".into(),
        seed: false,
        phase: Phase::Joining,
        message: "learner: catching up, to be promoted to a voting member".into(),
        ready: false,
        issuer: false,
        gossip,
        etcd: EtcdReport {
            pid: Some(5150),
            member_id: Some("f00dfeed12345678".into()),
            raft_term: 7,
            is_learner: true,
            quorum: true,
            members,
            ..healthy_issuer().etcd
        },
        counters: counters(&[
            ("gossip_datagrams_received", 212),
            ("gossip_datagrams_sent", 209),
            ("etcd_starts", 1),
        ]),
        ..healthy_issuer()
    }
}

/// A fresh agent that has heard of one peer, whose metadata has not arrived yet.
fn waiting_for_peers() -> StatusReport {
    StatusReport {
        node: "etcd-2".into(),
        agent_version: "0.1.0".into(),
        advertise: "10.0.0.2".into(),
        seed: false,
        phase: Phase::WaitingForPeers,
        message: "waiting for peers 2/3 (bootstrap_expect = 3)".into(),
        ready: false,
        issuer: false,
        ca_hash: None,
        plan: None,
        gossip: vec![peer("etcd-1", "10.0.0.1:7946", PeerState::Alive, None)],
        etcd: EtcdReport {
            pid: None,
            restarts: 0,
            last_exit: None,
            member_id: None,
            cluster_id: None,
            leader: None,
            leader_name: None,
            raft_term: 0,
            is_learner: false,
            version: None,
            quorum: false,
            members: Vec::new(),
            error: None,
            alarms: vec![],
        },
        certificate: None,
        last_error: None,
        counters: counters(&[
            ("gossip_datagrams_received", 9),
            ("gossip_datagrams_sent", 11),
        ]),
        maintenance: None,
        snapshot: None,
        etcd_restarts: None,
        restore: None,
        restore_transfer: None,
        revocation: None,
        roles: None,
        ca_seal: None,
        join_token: None,
        clients: Vec::new(),
    }
}

/// Two seeds configured: nobody may decide the plan.
fn conflict() -> StatusReport {
    let mut other = peer(
        "etcd-3",
        "[fd00::3]:7946",
        PeerState::Alive,
        Some(Phase::Conflict),
    );
    other.seed = true;
    StatusReport {
        node: "etcd-1".into(),
        advertise: "fd00::1".into(),
        seed: true,
        phase: Phase::Conflict,
        message: "conflict: etcd-1 and etcd-3 are both seeds; configure exactly one".into(),
        gossip: vec![other],
        last_error: Some("etcd-3 at [fd00::3]:7946 also claims to be the seed".into()),
        counters: counters(&[
            ("gossip_datagrams_received", 40),
            ("gossip_dropped_unauthenticated", 2),
            ("gossip_datagrams_sent", 38),
        ]),
        ..waiting_for_peers()
    }
}

/// etcd-3 lost both peers: its etcd runs without quorum and its probe fails.
fn degraded() -> StatusReport {
    let healthy = healthy_issuer();
    StatusReport {
        node: "etcd-3".into(),
        advertise: "10.0.0.3".into(),
        seed: false,
        phase: Phase::Degraded,
        message: "etcd has no quorum: 1/3 members reachable".into(),
        ready: false,
        issuer: false,
        gossip: vec![
            peer(
                "etcd-1",
                "10.0.0.1:7946",
                PeerState::Down,
                Some(Phase::Running),
            ),
            peer(
                "etcd-2",
                "10.0.0.2:7946",
                PeerState::Suspect,
                Some(Phase::Running),
            ),
        ],
        etcd: EtcdReport {
            pid: Some(6001),
            restarts: 3,
            last_exit: Some("exit status: 1".into()),
            member_id: Some("c4a1f0e3b2d59786".into()),
            leader: None,
            leader_name: None,
            raft_term: 9,
            quorum: false,
            error: Some("etcdserver: request timed out".into()),
            ..healthy.etcd
        },
        last_error: Some(
            "cannot reach the cluster at https://10.0.0.1:2379: connection refused".into(),
        ),
        counters: counters(&[
            ("gossip_datagrams_received", 30_112),
            ("gossip_datagrams_sent", 30_790),
            ("etcd_starts", 4),
            ("etcd_unexpected_exits", 3),
        ]),
        ..healthy
    }
}

/// etcd-1 under a NOSPACE alarm: healthy with quorum, yet not ready, with the alarm as reason.
fn nospace() -> StatusReport {
    let healthy = healthy_issuer();
    StatusReport {
        phase: Phase::Degraded,
        message: "etcd alarm NOSPACE is active: the database is full; writes are refused".into(),
        ready: false,
        etcd: EtcdReport {
            alarms: vec!["NOSPACE".into()],
            ..healthy.etcd
        },
        ..healthy
    }
}

#[track_caller]
fn assert_golden(report: &StatusReport, golden: &str) {
    let rendered = report.render();
    assert!(
        rendered == golden,
        "rendering differs from the golden text\n--- rendered ---\n{rendered}--- golden ---\n{golden}"
    );
}

#[test]
fn healthy_issuer_of_three() {
    assert_golden(&healthy_issuer(), include_str!("golden/healthy_issuer.txt"));
}

#[test]
fn learner_joining_a_running_cluster() {
    assert_golden(
        &learner_joining(),
        include_str!("golden/learner_joining.txt"),
    );
}

#[test]
fn waiting_for_peers_without_plan_or_certificate() {
    assert_golden(
        &waiting_for_peers(),
        include_str!("golden/waiting_for_peers.txt"),
    );
}

#[test]
fn conflicting_seeds() {
    assert_golden(&conflict(), include_str!("golden/conflict.txt"));
}

#[test]
fn not_ready_under_a_nospace_alarm() {
    assert_golden(&nospace(), include_str!("golden/nospace.txt"));
}

#[test]
fn degraded_with_an_etcd_problem() {
    assert_golden(&degraded(), include_str!("golden/degraded.txt"));
}

/// The leader's agent after a NOSPACE recovery that found the quota filled by live data.
fn live_data_full() -> StatusReport {
    let mut r = healthy_issuer();
    r.message = "healthy, leader etcd-1".into();
    r.etcd.leader = r.etcd.member_id.clone();
    r.etcd.leader_name = Some("etcd-1".into());
    r.maintenance = Some(crate::defrag::DefragStatus {
        message: "NOSPACE alarm stays: the live data fills the quota (31.9 MiB of 32.0 MiB after \
                  compaction and defragmentation, nothing left to reclaim). Fix: raise \
                  etcd.quota (then restart the agents one at a time), or delete data (etcd \
                  accepts deletes under the alarm); quorate disarms by itself once there is room"
            .into(),
        db_size: Some(33_452_032),
        db_in_use: Some(33_431_552),
        quota: 32 << 20,
        nospace: true,
        live_data_full: true,
        defrags: 3,
        failures: 0,
        last: Some(crate::defrag::DefragRun {
            member: "etcd-1".into(),
            trigger: crate::defrag::Trigger::Nospace,
            started_at: ISSUED + DAY,
            duration_ms: 412,
            before: Some(33_554_432),
            after: Some(33_452_032),
            error: None,
        }),
    });
    r
}

#[test]
fn nospace_alarm_kept_because_live_data_fills_the_quota() {
    assert_golden(&live_data_full(), include_str!("golden/live_data_full.txt"));
}

#[test]
fn the_maintenance_section_round_trips_and_is_optional() {
    let r = live_data_full();
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), r);
    let plain = serde_json::to_string(&healthy_issuer()).unwrap();
    assert!(!plain.contains("maintenance"), "{plain}");
    assert_eq!(
        serde_json::from_str::<StatusReport>(&plain).unwrap(),
        healthy_issuer()
    );
}

#[test]
fn certificate_dates_are_rfc3339_and_renewal_at_two_thirds() {
    let c = certificate();
    assert_eq!(c.not_before, "2027-01-15T07:55:00Z");
    assert_eq!(c.not_after, "2027-04-15T08:00:00Z");
    assert_eq!(c.renew_at, "2027-03-16T07:58:20Z");
}

#[test]
fn issuer_api_is_a_live_issuers_address() {
    assert_eq!(
        learner_joining().issuer_api(),
        Some("10.0.0.1:7946".parse().unwrap())
    );
    let mut down = learner_joining();
    down.gossip[0].state = PeerState::Down;
    assert_eq!(down.issuer_api(), None);
    assert_eq!(healthy_issuer().issuer_api(), None);
}

/// A node that took the cluster's last snapshot, after one failure.
fn with_snapshots() -> StatusReport {
    let mut r = healthy_issuer();
    r.snapshot = Some(crate::snapshot::SnapshotStatus {
        schedule: "0 */6 * * *".into(),
        interval_seconds: Some(21_600),
        next_slot: Some(ISSUED + DAY + 21_600),
        last_success: Some(1_700_000_000),
        last_file: Some("quorate-00000000000000ab-20231114T180000Z-r42.db".into()),
        last_size: Some(2_125_856),
        last_duration_ms: Some(1_250),
        snapshots: 4,
        failures: 1,
        last_error: Some("etcd: the stream was cut".into()),
        message: "slot 1699984800 done".into(),
        upload: None,
    });
    r
}

#[test]
fn the_last_snapshot_and_its_failures_are_shown() {
    assert_golden(&with_snapshots(), include_str!("golden/snapshots.txt"));
}

#[test]
fn the_clients_a_member_answered_are_listed() {
    let mut r = healthy_issuer();
    assert!(!r.render().contains("Clients:"), "none: no line");
    r.clients = (0..12)
        .map(|i| crate::gossip::directory::SeenClient {
            name: format!("app{i:02}"),
            addr: format!("10.0.1.{i}:40000").parse().unwrap(),
            last_seen: 1,
        })
        .collect();
    let text = r.render();
    assert!(
        text.contains(
            "\nClients:     12 asked in the last 5 min: app00 (10.0.1.0), app01 (10.0.1.1),"
        ),
        "{text}"
    );
    assert!(text.contains("app09 (10.0.1.9) and 2 more\n"), "{text}");
}
