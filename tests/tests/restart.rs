//! A stopped cluster comes back as the same cluster: same cluster and member IDs, data intact,
//! no second bootstrap. While quorum is lost, the remaining agent is not ready and says why.

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn full_restart_resumes_the_same_cluster() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "restart");
    c.put_keys(&cert, "/restart", 20);
    let before: Vec<_> = c.agents.iter().map(|a| a.status().unwrap()).collect();
    let plans_before: Vec<String> = c
        .agents
        .iter()
        .map(|a| std::fs::read_to_string(a.state_dir().join("plan.json")).unwrap())
        .collect();

    // Two of three stop: the last one loses quorum and says so.
    c.agents[1].stop();
    c.agents[2].stop();
    let reason = wait_for("n1 to report lost quorum", FORM_TIMEOUT, || {
        match c.agents[0].ready() {
            Ok(body) => Err(format!("still ready: {body}")),
            Err(reason) if reason.contains("503") => Ok(reason),
            Err(e) => Err(e),
        }
    });
    assert!(reason.contains("waiting for peers 1/3"), "{reason}");

    // Full stop, then start in reverse order, one at a time: the first one back waits and says
    // so on /readyz and in `quorate status`.
    c.agents[0].stop();
    c.agents[2].start();
    let waiting = wait_for("n3 to say it waits", FORM_TIMEOUT, || {
        match c.agents[2].get("/readyz") {
            Ok((503, body)) if body.contains("waiting for peers 1/3") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(waiting.contains("quorum"), "{waiting}");
    let o = c.agents[2].cli(&["status"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("waiting for peers 1/3"), "{table}");
    assert!(table.contains("Ready:       no"), "{table}");
    c.agents[1].start();
    wait_for("n2 and n3 to form a quorum", FORM_TIMEOUT, || {
        c.agents[1].ready()?;
        c.agents[2].ready()
    });
    c.agents[0].start();
    c.wait_ready(FORM_TIMEOUT);

    for (i, a) in c.agents.iter().enumerate() {
        let s = a.status().unwrap();
        assert_eq!(s.etcd.cluster_id, before[i].etcd.cluster_id, "{}", a.name);
        assert_eq!(s.etcd.member_id, before[i].etcd.member_id, "{}", a.name);
        let plan = std::fs::read_to_string(a.state_dir().join("plan.json")).unwrap();
        assert_eq!(plan, plans_before[i], "{}'s plan changed", a.name);
        // The second start resumed the member; it never bootstrapped again.
        let log = a.log();
        let starts: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("starting etcd") && l.contains("state="))
            .map(|l| {
                if l.contains("state=new") {
                    "new"
                } else {
                    "existing"
                }
            })
            .collect();
        assert_eq!(starts, ["new", "existing"], "{}: {starts:?}", a.name);
    }
    for via in 0..3 {
        c.check_keys(via, &cert, "/restart", 20);
    }
    let list = c.etcdctl_ok(0, &cert, &["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");

    // After every agent restarted, the plan still reaches a host that lost its disk: agents
    // that only loaded it from disk disseminate it too.
    c.agents[2].kill9();
    std::fs::remove_dir_all(c.agents[2].state_dir()).unwrap();
    c.agents[2].start();
    c.wait_voters(2, 3, FORM_TIMEOUT * 2);
    c.check_keys(2, &cert, "/restart", 20);
}
