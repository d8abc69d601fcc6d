//! A host that lost its disk comes back with an empty state directory: its stale member is
//! removed (only because that cannot cost quorum) and it rejoins as a learner, then a voter.
//! The cluster, its ID and its data survive; no second cluster is created. The lost host's
//! old certificate is revoked, its new one is not.

use std::time::Duration;

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{revocation, Cluster};

#[test]
fn wiped_host_rejoins_the_same_cluster() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "replace");
    c.put_keys(&cert, "/replace", 20);
    let before = c.agents[2].status().unwrap();
    let old_serial = revocation::node_serial(&c, 2);
    revocation::wait_recorded(&c, 0, &old_serial);
    let cluster_id = before.etcd.cluster_id.clone();

    // Host 3 loses its disk.
    c.agents[2].kill9();
    std::fs::remove_dir_all(c.agents[2].state_dir()).unwrap();
    // The two others keep serving.
    c.etcdctl_eventually(0, &cert, &["put", "/replace/while-down", "yes"]);
    let log_mark = c.agents[2].log().len();
    c.agents[2].start();
    c.wait_voters(2, 3, FORM_TIMEOUT * 2);
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
    // The lost host's certificate is revoked everywhere; the new one is not.
    revocation::wait_listed(&c, &[0, 1, 2], &old_serial, Duration::from_secs(60));
    let new_serial = revocation::node_serial(&c, 2);
    assert_ne!(new_serial, old_serial);
    revocation::assert_not_listed(&c, &new_serial, "the replacing host");
    c.check_keys(2, &cert, "/replace", 20);
    let v = c.etcdctl_ok(
        2,
        &cert,
        &["get", "/replace/while-down", "--print-value-only"],
    );
    assert_eq!(v.trim(), "yes");
    c.wait_ready(FORM_TIMEOUT);
}

#[test]
fn damaged_data_is_moved_aside_and_the_host_rejoins() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "damage");
    c.put_keys(&cert, "/damage", 50);
    let cluster_id = c.agents[2].status().unwrap().etcd.cluster_id;

    // Host 3's write-ahead log gets corrupted while it is down.
    c.agents[2].stop();
    let wal_dir = c.agents[2].state_dir().join("etcd/member/wal");
    let wal = std::fs::read_dir(&wal_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .expect("a wal file");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
        f.seek(SeekFrom::Start(2000)).unwrap();
        f.write_all(&[0xff; 64]).unwrap();
    }
    let log_mark = c.agents[2].log().len();
    c.agents[2].start();
    c.wait_voters(2, 3, FORM_TIMEOUT * 2);
    let log = c.agents[2].log()[log_mark..].to_owned();
    assert!(log.contains("moved it aside"), "no move in the log");
    // The damaged data is kept, not deleted.
    let kept: Vec<_> = std::fs::read_dir(c.agents[2].state_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("etcd.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].path().join("member/wal").exists());
    assert_eq!(c.agents[2].status().unwrap().etcd.cluster_id, cluster_id);
    c.check_keys(2, &cert, "/damage", 50);
}
