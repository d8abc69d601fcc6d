//! Certificates rotate before they expire, and etcd uses the new ones without a restart or an
//! outage: with 30 s lifetimes, a client keeps writing for more than two lifetimes, each write
//! a fresh TLS connection (so each one sees the server's current certificate).

use std::time::{Duration, Instant};

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn certificates_rotate_while_a_client_keeps_writing() {
    let lifetime = Duration::from_secs(30);
    let mut c = Cluster::with(3, |_, b| b.cert_validity(lifetime));
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    let first: Vec<String> = c
        .agents
        .iter()
        .map(|a| a.status().unwrap().certificate.expect("certificate").serial)
        .collect();

    let start = Instant::now();
    let mut cert = c.client_cert(1, "writer0");
    let mut cert_at = Instant::now();
    let mut writes = 0usize;
    while start.elapsed() < lifetime * 5 / 2 {
        // Clients rotate too: a fresh client certificate every 10 s.
        if cert_at.elapsed() > Duration::from_secs(10) {
            cert = c.client_cert(writes % 3, &format!("writer{writes}"));
            cert_at = Instant::now();
        }
        c.etcdctl_ok(
            writes % 3,
            &cert,
            &["put", &format!("/rotation/{writes:05}"), "v"],
        );
        writes += 1;
    }

    for (i, a) in c.agents.iter().enumerate() {
        let s = a.status().unwrap();
        let now = s.certificate.expect("certificate");
        assert_ne!(now.serial, first[i], "{} never renewed", a.name);
        let renewals = a
            .log()
            .lines()
            .filter(|l| {
                l.contains("received this node's certificate")
                    || l.contains("issued this node's certificate")
            })
            .count();
        assert!(
            renewals >= 3,
            "{}: only {renewals} certificates in 75 s",
            a.name
        );
        assert_eq!(s.etcd.restarts, 0, "{}'s etcd restarted", a.name);
        assert_eq!(s.counters["etcd_starts"], 1, "{} restarted etcd", a.name);
    }
    let count = c.etcdctl_ok(
        0,
        &cert,
        &[
            "get",
            "--prefix",
            "--limit=1",
            "--write-out=json",
            "/rotation/",
        ],
    );
    let count: serde_json::Value = serde_json::from_str(&count).unwrap();
    assert_eq!(count["count"].as_u64(), Some(writes as u64), "lost writes");

    // Peer connections made now use the renewed certificates (the first ones expired long ago).
    let pid = c.agents[2].status().unwrap().etcd.pid.expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("n3 to be restarted", FORM_TIMEOUT, || {
        let s = c.agents[2].status()?;
        if s.etcd.restarts == 1 {
            Ok(())
        } else {
            Err(format!("{} restarts", s.etcd.restarts))
        }
    });
    c.wait_ready(FORM_TIMEOUT);
    c.etcdctl_ok(2, &cert, &["put", "/rotation/after-restart", "v"]);
    eprintln!(
        "{writes} writes over {:?} without an error",
        start.elapsed()
    );
}
