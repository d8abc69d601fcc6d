//! Formation: from nothing to a healthy 3-member mTLS cluster. Manual: three etcd processes
//! with pre-made certificates and static flags. quorate: three agents with empty state and one
//! token (gossip, plan, CA, CSRs, etcd). Also reports when quorate's agents had all three etcd
//! processes started: the agents' own work; the rest is etcd's first election, which both pay.

use std::time::{Duration, Instant};

use quorate_tests::Cluster;

use crate::manual::{ManualCluster, TIMEOUT};
use crate::Round;

pub async fn manual() -> Duration {
    let mut m = ManualCluster::prepare(3, 3);
    let start = Instant::now();
    for i in 0..3 {
        m.start(i);
    }
    m.wait_healthy(&[0, 1, 2], start).await;
    start.elapsed()
}

pub fn quorate() -> (Duration, Duration) {
    let mut c = Cluster::new(3);
    let start = Instant::now();
    c.start_all();
    let mut ready = [false; 3];
    let mut etcd = [false; 3];
    let mut etcd_up = None;
    while ready.iter().any(|r| !r) {
        assert!(
            start.elapsed() < TIMEOUT,
            "not ready in {TIMEOUT:?}:\n{}",
            c.logs(20)
        );
        for (i, a) in c.agents.iter().enumerate() {
            assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(20));
            ready[i] = ready[i] || a.ready().is_ok();
            etcd[i] = etcd[i] || a.status().is_ok_and(|s| s.etcd.pid.is_some());
        }
        if etcd_up.is_none() && etcd.iter().all(|e| *e) {
            etcd_up = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    c.stop_all();
    (etcd_up.unwrap_or(elapsed), elapsed)
}

pub async fn round() -> Round {
    let manual = manual().await;
    let (etcd_up, quorate) = quorate();
    Round {
        manual,
        quorate,
        extra: Some(etcd_up),
    }
}
