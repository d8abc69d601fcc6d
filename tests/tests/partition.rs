//! One host cut off for longer than the election timeout: the other two keep serving; when the
//! network heals, the host rejoins and catches up. Real partitions need network namespaces
//! (root); without them the test fails, naming what is missing.

use quorate::gossip::PeerState;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster, NetnsLab};

#[test]
fn partitioned_host_rejoins_and_catches_up() {
    if !NetnsLab::available() {
        quorate_tests::require_failed(
            "partition::partitioned_host_rejoins_and_catches_up",
            "network namespaces need root and iproute2",
        );
    }
    let lab = NetnsLab::create(3);
    let mut c = Cluster::in_netns(&lab, 3);
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    let cert = c.client_cert(0, "partition");
    c.etcdctl_ok(2, &cert, &["put", "/partition/before", "v"]);
    let cluster_id = c.agents[0].status().unwrap().etcd.cluster_id;

    lab.partition(2);
    // Longer than the election timeout (1 s): until gossip has declared n3 down.
    wait_for("n1 to see n3 down", FORM_TIMEOUT, || {
        let s = c.agents[0].status()?;
        match s.gossip.iter().find(|m| m.name == "n3") {
            Some(m) if m.state == PeerState::Down => Ok(()),
            Some(m) => Err(format!("n3 is {:?}", m.state)),
            None => Ok(()),
        }
    });
    // The majority keeps serving reads and writes (once it has a leader, if n3 was it).
    c.etcdctl_eventually(0, &cert, &["put", "/partition/leader-check", "v"]);
    for i in 0..20 {
        c.etcdctl_ok(
            i % 2,
            &cert,
            &["put", &format!("/partition/during/{i:02}"), "v"],
        );
    }
    c.agents[0].ready().unwrap();
    c.agents[1].ready().unwrap();

    lab.heal(2);
    c.wait_ready(FORM_TIMEOUT);
    // n3 caught up: a serializable read answered from its own copy has everything.
    let local = c.etcdctl_ok(
        2,
        &cert,
        &[
            "get",
            "--consistency=s",
            "--prefix",
            "--keys-only",
            "/partition/during/",
        ],
    );
    assert_eq!(
        local.lines().filter(|l| !l.is_empty()).count(),
        20,
        "{local}"
    );
    let s = c.agents[2].status().unwrap();
    assert_eq!(s.etcd.cluster_id, cluster_id);
    assert_eq!(s.etcd.members.len(), 3);
    drop(c);
    drop(lab);
}
