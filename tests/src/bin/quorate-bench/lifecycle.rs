//! Growth and replacement, timed from the event to the end state, on clusters older than 6 s
//! (etcd refuses membership changes while its leader has been connected to the others for less
//! than 5 s, which would only measure the cluster's youth):
//! - growth: a 4th host from "started" to "healthy voting member";
//! - replacement: a host that lost its disk, from "started again" to "three healthy voters".
//!   Manual: `member remove` of the dead member, `member add --learner`, start, promote.

use std::time::{Duration, Instant};

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

use crate::manual::ManualCluster;
use crate::Round;

/// Lets a freshly formed cluster get older than etcd's 5 s health interval.
fn mature(formed: Instant) {
    let age = Duration::from_secs(6);
    if let Some(left) = age.checked_sub(formed.elapsed()) {
        std::thread::sleep(left);
    }
}

async fn manual_formed(n: usize) -> (ManualCluster, Instant) {
    let mut m = ManualCluster::prepare(n, 3);
    let start = Instant::now();
    for i in 0..3 {
        m.start(i);
    }
    m.wait_healthy(&[0, 1, 2], start).await;
    (m, Instant::now())
}

fn quorate_formed() -> (Cluster, Instant) {
    let mut c = Cluster::new(3);
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    (c, Instant::now())
}

pub async fn growth() -> Round {
    let (mut m, formed) = manual_formed(4).await;
    mature(formed);
    let start = Instant::now();
    m.add_learner_and_promote(3, start).await;
    m.wait_healthy(&[3], start).await;
    let manual = start.elapsed();
    drop(m);

    let (mut c, formed) = quorate_formed();
    mature(formed);
    let d = c.add_agent(|_, b| b);
    let start = Instant::now();
    c.agents[d].start();
    // Ready means healthy with a quorum read, which a learner cannot do: a voter.
    wait_for("the 4th host to be a healthy voter", FORM_TIMEOUT, || {
        c.agents[d].ready()
    });
    let quorate = start.elapsed();
    c.stop_all();
    Round {
        manual,
        quorate,
        extra: None,
    }
}

pub async fn replace() -> Round {
    let (mut m, formed) = manual_formed(3).await;
    mature(formed);
    m.kill(2, true);
    let start = Instant::now();
    m.remove(2, start).await;
    m.add_learner_and_promote(2, start).await;
    m.wait_healthy(&[0, 1, 2], start).await;
    let manual = start.elapsed();
    drop(m);

    let (mut c, formed) = quorate_formed();
    mature(formed);
    c.agents[2].kill9();
    std::fs::remove_dir_all(c.agents[2].state_dir()).expect("wipe");
    let start = Instant::now();
    c.agents[2].start();
    wait_for("three healthy voters", FORM_TIMEOUT, || {
        c.agents[2].ready()?;
        let s = c.agents[2].status()?;
        let voters = s.etcd.members.iter().filter(|m| !m.is_learner).count();
        if voters == 3 && s.etcd.members.len() == 3 {
            Ok(())
        } else {
            Err(format!("{:?}", s.etcd.members))
        }
    });
    let quorate = start.elapsed();
    c.stop_all();
    Round {
        manual,
        quorate,
        extra: None,
    }
}
