//! etcd authentication with real etcd: once the cluster has formed, every certificate's name
//! is an etcd user. A client certificate reads and writes everything outside `/quorate/` and
//! nothing inside it (the sealed CA, the issuer lock, the revocation list), and cannot take a
//! snapshot; the agents' own identity can. A host that joins afterwards becomes a voter (its
//! promotion goes to the leader: etcd#20757).

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

fn denied(o: &std::process::Output) -> bool {
    let err = String::from_utf8_lossy(&o.stderr);
    !o.status.success() && err.contains("permission denied")
}

#[test]
fn client_certificates_stay_outside_quorates_keys() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let app = c.client_cert(1, "app");
    wait_for("etcd authentication on", FORM_TIMEOUT, || {
        let o = c.etcdctl(0, Some(&app), &["get", "/quorate/ca"]);
        if denied(&o) {
            Ok(())
        } else {
            Err(format!("read: {}", String::from_utf8_lossy(&o.stdout)))
        }
    });
    // Everything outside /quorate/ (below and above it, and /quorate without the slash).
    for key in ["/app/k", "a", "zzz", "/quorate", "/quorate0"] {
        c.etcdctl_ok(0, &app, &["put", key, "v"]);
        let v = c.etcdctl_ok(2, &app, &["get", key, "--print-value-only"]);
        assert_eq!(v.trim(), "v", "{key}");
    }
    c.etcdctl_ok(1, &app, &["del", "zzz"]);
    // Nothing inside it, and no snapshot.
    let snapshot = c.root.path().join("app-snapshot.db");
    for args in [
        vec!["put", "/quorate/x", "v"],
        vec!["del", "/quorate/ca"],
        vec!["del", "/quorate/", "--prefix"],
        vec!["get", "/quorate/issuer"],
        vec!["get", "", "--prefix"],
        vec!["snapshot", "save", snapshot.to_str().unwrap()],
    ] {
        for i in 0..3 {
            let o = c.etcdctl(i, Some(&app), &args);
            assert!(
                !o.status.success(),
                "{args:?} via {} succeeded: {}",
                c.agents[i].name,
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
    // The agents' identity can; the sealed CA is still there.
    let ca = c.etcdctl_ok(
        0,
        &c.agent_cert(0),
        &["get", "/quorate/ca", "--print-value-only"],
    );
    assert!(ca.contains("sealed_key"), "{ca}");
    c.etcdctl_ok(
        0,
        &c.agent_cert(0),
        &["snapshot", "save", snapshot.to_str().unwrap()],
    );

    // A host that joins now gets its etcd user with its certificate and becomes a voter.
    let d = c.add_agent(|_, b| b);
    c.agents[d].start();
    c.wait_voters(d, 4, FORM_TIMEOUT * 2);
    let v = c.etcdctl_ok(d, &app, &["get", "/app/k", "--print-value-only"]);
    assert_eq!(v.trim(), "v");
    c.etcdctl_ok(d, &c.agent_cert(d), &["get", "/quorate/ca"]);
    c.wait_ready(FORM_TIMEOUT);
}
