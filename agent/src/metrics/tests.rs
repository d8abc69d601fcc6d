use std::time::Duration;

use super::*;
use crate::etcd::Member;
use crate::gossip::testing::{meta, peer};

fn member(id: u64, is_learner: bool) -> Member {
    Member {
        id,
        name: format!("n{id}"),
        peer_urls: vec![],
        client_urls: vec![],
        is_learner,
    }
}

fn healthy_leader() -> EtcdHealth {
    EtcdHealth {
        reachable: true,
        member_id: Some(1),
        leader: Some(1),
        quorum: true,
        members: vec![member(1, false), member(2, false), member(3, true)],
        db_size: Some(25 << 20),
        db_size_in_use: Some(10 << 20),
        ..EtcdHealth::default()
    }
}

fn encode_with(health: &EtcdHealth, view: &GossipView, counters: &Counters) -> String {
    Scrape {
        counters,
        health,
        view,
        node_not_after: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
        ca_not_after: Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
        quota_bytes: Some(2 << 30),
        defrag: &DefragStatus::default(),
        snapshot: &SnapshotStatus::default(),
        crl: None,
        roles: None,
    }
    .encode()
}

#[test]
fn the_last_defragmentation_is_exported() {
    let defrag = DefragStatus {
        defrags: 3,
        failures: 1,
        last: Some(crate::defrag::DefragRun {
            member: "n1".into(),
            trigger: crate::defrag::Trigger::Automatic,
            started_at: 1_800_000_000,
            duration_ms: 1_500,
            before: Some(10 << 20),
            after: Some(1 << 20),
            error: None,
        }),
        ..DefragStatus::default()
    };
    let text = Scrape {
        counters: &Counters::default(),
        health: &EtcdHealth::default(),
        view: &GossipView::default(),
        node_not_after: None,
        ca_not_after: None,
        quota_bytes: None,
        defrag: &defrag,
        snapshot: &SnapshotStatus::default(),
        crl: None,
        roles: None,
    }
    .encode();
    let l = lines(&text);
    for want in [
        "quorate_defrags_total 3",
        "quorate_defrag_failures_total 1",
        "quorate_defrag_last_timestamp_seconds 1800000000",
        "quorate_defrag_last_duration_seconds 1.5",
    ] {
        assert!(l.contains(&want), "{want} missing in:\n{text}");
    }
}

#[test]
fn the_last_snapshot_is_exported_under_the_alerts_names() {
    let snapshot = SnapshotStatus {
        interval_seconds: Some(21_600),
        last_success: Some(1_800_000_000),
        last_duration_ms: Some(250),
        last_size: Some(20_512),
        snapshots: 7,
        failures: 2,
        upload: Some(crate::snapshot::upload::UploadStatus {
            failures: 3,
            last_success: Some(1_800_000_100),
            ..Default::default()
        }),
        ..SnapshotStatus::default()
    };
    let text = Scrape {
        counters: &Counters::default(),
        health: &EtcdHealth::default(),
        view: &GossipView::default(),
        node_not_after: None,
        ca_not_after: None,
        quota_bytes: None,
        defrag: &DefragStatus::default(),
        snapshot: &snapshot,
        crl: None,
        roles: None,
    }
    .encode();
    let l = lines(&text);
    // The first two are the names QuorateSnapshotMissing uses.
    for want in [
        "quorate_snapshot_last_success_timestamp_seconds 1800000000",
        "quorate_snapshot_interval_seconds 21600",
        "quorate_snapshot_last_duration_seconds 0.25",
        "quorate_snapshot_last_size_bytes 20512",
        "quorate_snapshot_upload_failures_total 3",
        "quorate_snapshot_upload_last_success_timestamp_seconds 1800000100",
        "quorate_snapshot_failures_total 2",
        "quorate_snapshots_total 7",
    ] {
        assert!(l.contains(&want), "{want} missing in:\n{text}");
    }
    let alerts = include_str!("../../../packaging/prometheus/quorate-alerts.yml");
    assert!(alerts.contains("quorate_snapshot_last_success_timestamp_seconds"));
    assert!(alerts.contains("quorate_snapshot_interval_seconds"));
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn counters_keep_their_names() {
    let c = Counters::default();
    Counters::inc(&c.gossip_dropped_unauthenticated);
    Counters::inc(&c.gossip_dropped_unauthenticated);
    let snap = c.snapshot();
    assert!(snap.contains(&(
        "gossip_dropped_unauthenticated",
        "Gossip datagrams dropped because they failed authentication.",
        2
    )));
    let text = encode_with(&EtcdHealth::default(), &GossipView::default(), &c);
    assert!(text.contains("\nquorate_gossip_dropped_unauthenticated_total 2\n"));
    assert!(text.contains(
        "# HELP quorate_gossip_dropped_unauthenticated Gossip datagrams dropped because they \
         failed authentication.\n# TYPE quorate_gossip_dropped_unauthenticated counter\n"
    ));
    for (name, _, _) in snap {
        assert!(text.contains(&format!("\nquorate_{name}_total ")), "{name}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn gauges_of_a_healthy_leader() {
    let view = GossipView {
        peers: vec![
            peer(meta("b", 2), PeerState::Alive),
            peer(meta("c", 3), PeerState::Down),
        ],
        plans: vec![],
    };
    let text = encode_with(&healthy_leader(), &view, &Counters::default());
    let l = lines(&text);
    for want in [
        r#"quorate_cert_not_after_seconds{cert="node"} 1900000000"#,
        r#"quorate_cert_not_after_seconds{cert="ca"} 2000000000"#,
        r#"quorate_gossip_members{state="alive"} 2"#,
        r#"quorate_gossip_members{state="suspect"} 0"#,
        r#"quorate_gossip_members{state="down"} 1"#,
        "quorate_etcd_has_quorum 1",
        "quorate_etcd_is_leader 1",
        "quorate_etcd_quota_bytes 2147483648",
        r#"quorate_etcd_members{role="voter"} 2"#,
        r#"quorate_etcd_members{role="learner"} 1"#,
        "quorate_etcd_db_size_bytes 26214400",
        "quorate_etcd_db_size_in_use_bytes 10485760",
        r#"quorate_etcd_alarms_active{alarm="NOSPACE"} 0"#,
        r#"quorate_etcd_alarms_active{alarm="CORRUPT"} 0"#,
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{text}");
    }
    for family in [
        "quorate_cert_not_after_seconds",
        "quorate_gossip_members",
        "quorate_etcd_has_quorum",
        "quorate_etcd_is_leader",
        "quorate_etcd_quota_bytes",
        "quorate_etcd_members",
        "quorate_etcd_db_size_bytes",
        "quorate_etcd_db_size_in_use_bytes",
        "quorate_etcd_alarms_active",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }
}

#[test]
fn an_active_alarm_and_a_follower() {
    let h = EtcdHealth {
        leader: Some(2),
        alarms: vec!["NOSPACE".into()],
        ..healthy_leader()
    };
    let text = encode_with(&h, &GossipView::default(), &Counters::default());
    let l = lines(&text);
    assert!(l.contains(&r#"quorate_etcd_alarms_active{alarm="NOSPACE"} 1"#));
    assert!(l.contains(&r#"quorate_etcd_alarms_active{alarm="CORRUPT"} 0"#));
    assert!(l.contains(&"quorate_etcd_is_leader 0"));
    assert!(l.contains(&"quorate_etcd_has_quorum 1"));
}

#[test]
fn unknown_values_are_absent_not_zero() {
    let h = EtcdHealth {
        error: Some("etcd is not running".into()),
        ..EtcdHealth::default()
    };
    let text = Scrape {
        counters: &Counters::default(),
        health: &h,
        view: &GossipView::default(),
        node_not_after: None,
        ca_not_after: None,
        quota_bytes: None,
        defrag: &DefragStatus::default(),
        snapshot: &SnapshotStatus::default(),
        crl: None,
        roles: None,
    }
    .encode();
    let l = lines(&text);
    assert!(
        !text.contains("defrag_last"),
        "no defragmentation yet, no last-defrag gauges"
    );
    assert!(l.contains(&"quorate_etcd_has_quorum 0"));
    assert!(l.contains(&"quorate_etcd_is_leader 0"));
    assert!(l.contains(&r#"quorate_gossip_members{state="alive"} 1"#));
    for absent in [
        "quorate_cert_not_after_seconds{",
        "quorate_etcd_quota_bytes",
        "quorate_etcd_members{",
        "quorate_etcd_db_size",
        "quorate_etcd_alarms_active{",
    ] {
        assert!(
            !l.iter().any(|x| x.starts_with(absent)),
            "{absent} in\n{text}"
        );
    }
}

#[test]
fn a_learner_with_a_leader_has_quorum() {
    let h = EtcdHealth {
        is_learner: true,
        quorum: false,
        member_id: Some(3),
        ..healthy_leader()
    };
    let text = encode_with(&h, &GossipView::default(), &Counters::default());
    assert!(lines(&text).contains(&"quorate_etcd_has_quorum 1"));
    // Its alarm list is unknown (learners are not asked).
    assert!(!text.contains("quorate_etcd_alarms_active{"));
}
