//! Two seeds are a conflict that stops progress on both, not two clusters.

use quorate::phase::Phase;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn two_seeds_stop_with_a_clear_error() {
    let mut c = Cluster::with(3, |i, b| if i == 1 { b.seed(true).join(vec![]) } else { b });
    // n3 knows both seeds, so all three meet in gossip.
    let seeds = vec![c.subnet.host(1).to_string(), c.subnet.host(2).to_string()];
    let n3 = c.config(2).join(seeds);
    c.agents[2].write_config(&n3);
    c.start_all();
    for i in 0..2 {
        let s = wait_for("a seed to report the conflict", FORM_TIMEOUT, || {
            let s = c.agents[i].status()?;
            if s.phase == Phase::Conflict {
                Ok(s)
            } else {
                Err(s.message)
            }
        });
        assert!(s.message.contains("two seeds"), "{}", s.message);
    }
    for a in &c.agents {
        let s = a.status().unwrap();
        assert!(s.plan.is_none(), "{} holds a plan", a.name);
        assert!(s.etcd.pid.is_none(), "{} started etcd", a.name);
        assert!(!a.state_dir().join("plan.json").exists());
        assert!(
            !a.state_dir().join("pki/ca-key.pem").exists(),
            "{} made a CA",
            a.name
        );
        assert!(a.ready().is_err());
    }
}
