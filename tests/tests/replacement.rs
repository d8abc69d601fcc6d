//! A host that lost its disk comes back with an empty state directory: its stale member is
//! removed (only because that cannot cost quorum) and it rejoins as a learner, then a voter.
//! The cluster, its ID and its data survive; no second cluster is created.

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn wiped_host_rejoins_the_same_cluster() {
    let mut c = Cluster::new(3);
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    let cert = c.client_cert(0, "replace");
    for i in 0..20 {
        c.etcdctl_ok(
            i % 3,
            &cert,
            &["put", &format!("/replace/{i}"), &format!("v{i}")],
        );
    }
    let before = c.agents[2].status().unwrap();
    let cluster_id = before.etcd.cluster_id.clone();

    // Host 3 loses its disk.
    c.agents[2].kill9();
    std::fs::remove_dir_all(c.agents[2].state_dir()).unwrap();
    // The two others keep serving.
    c.etcdctl_ok(0, &cert, &["put", "/replace/while-down", "yes"]);
    let log_mark = c.agents[2].log().len();
    c.agents[2].start();
    wait_for("n3 to rejoin as a voter", FORM_TIMEOUT * 2, || {
        c.agents[2].ready()?;
        let s = c.agents[2].status()?;
        if s.etcd.members.len() == 3 && s.etcd.members.iter().all(|m| !m.is_learner) {
            Ok(())
        } else {
            Err(format!("members {:?}", s.etcd.members))
        }
    });
    let after = c.agents[2].status().unwrap();
    assert_eq!(
        after.etcd.cluster_id, cluster_id,
        "a second cluster was created"
    );
    assert_ne!(
        after.etcd.member_id, before.etcd.member_id,
        "the stale member was reused"
    );
    let log = c.agents[2].log()[log_mark..].to_owned();
    assert!(
        log.contains("removed this host's stale member"),
        "no removal in the log"
    );
    assert!(!log.contains("state=new"), "the wiped host bootstrapped");
    for i in 0..20 {
        let v = c.etcdctl_ok(
            2,
            &cert,
            &["get", &format!("/replace/{i}"), "--print-value-only"],
        );
        assert_eq!(v.trim(), format!("v{i}"));
    }
    let v = c.etcdctl_ok(
        2,
        &cert,
        &["get", "/replace/while-down", "--print-value-only"],
    );
    assert_eq!(v.trim(), "yes");
    c.wait_ready(FORM_TIMEOUT);
}
