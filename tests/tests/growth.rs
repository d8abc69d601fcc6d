//! A running cluster grows: hosts that arrive after the plan join as learners, one at a time,
//! and end up voting members.

use std::time::Duration;

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn three_grow_to_five_with_concurrent_joins() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "growth");
    c.put_keys(&cert, "/growth", 10);

    // Two more hosts with the same token, started together.
    let d = c.add_agent(|_, b| b);
    let e = c.add_agent(|_, b| b);
    c.agents[d].start();
    c.agents[e].start();
    c.wait_ready(Duration::from_secs(180));

    let list = c.etcdctl_ok(3, &cert, &["member", "list", "-w", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 5, "{list}");
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap_or(""))
        .collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3", "n4", "n5"]);
    for m in members {
        assert_ne!(m["isLearner"].as_bool(), Some(true), "still a learner: {m}");
    }
    for i in [d, e] {
        let s = c.agents[i].status().unwrap();
        assert_eq!(
            s.etcd.cluster_id,
            c.agents[0].status().unwrap().etcd.cluster_id
        );
        assert!(!s.etcd.is_learner);
        c.check_keys(i, &cert, "/growth", 10);
        // The late hosts never bootstrapped: they started etcd once, as existing members.
        let log = c.agents[i].log();
        assert!(
            !log.contains("state=new"),
            "{} bootstrapped",
            c.agents[i].name
        );
    }
    c.etcdctl_ok(4, &cert, &["put", "/growth/after", "five"]);
    let v = c.etcdctl_ok(0, &cert, &["get", "/growth/after", "--print-value-only"]);
    assert_eq!(v.trim(), "five");
    // The hosts that joined as learners get the CA seal secret once they are voters.
    let seed_secret = c.seal_secret(0).expect("the seed holds the CA seal secret");
    wait_for("n4 and n5 to hold the CA seal secret", FORM_TIMEOUT, || {
        for i in [d, e] {
            let held = c.seal_secret(i);
            if held.as_ref() != Some(&seed_secret) {
                return Err(format!("{}: {held:?}", c.agents[i].name));
            }
        }
        Ok(())
    });
}
