//! Restoring a 3-member cluster from a snapshot, timed from "restore" to "three healthy
//! members with the snapshot's data", with `KEYS` keys of 1 KiB:
//! - manual, at its fastest (the etcd disaster-recovery procedure, scripted, all hosts at
//!   once): stop the three members, move their data aside, `etcdctl snapshot restore` on each
//!   with its name, peer URL, the initial cluster and a new token, start them;
//! - quorate: `quorate restore FILE --yes` on one host (it returns when every member restored
//!   and its own is ready), then every agent ready.

use std::process::Command;
use std::time::Instant;

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{etcdctl_bin, wait_for, Cluster};

use crate::manual::ManualCluster;
use crate::Round;

const KEYS: usize = 200;

fn value() -> String {
    "x".repeat(1024)
}

async fn manual() -> std::time::Duration {
    let mut m = ManualCluster::prepare(3, 3);
    let start = Instant::now();
    for i in 0..3 {
        m.start(i);
    }
    m.wait_healthy(&[0, 1, 2], start).await;
    let mut c = m.client(0).await;
    for i in 0..KEYS {
        c.put(format!("/bench/{i}"), value(), None)
            .await
            .expect("put");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("snapshot.db");
    let tls = &m.members[0].launch.tls;
    let saved = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", m.url(0)))
        .arg(format!("--cacert={}", tls.ca.display()))
        .arg(format!("--cert={}", tls.cert.display()))
        .arg(format!("--key={}", tls.key.display()))
        .args(["snapshot", "save"])
        .arg(&file)
        .output()
        .expect("etcdctl snapshot save");
    assert!(saved.status.success(), "{saved:?}");

    let start = Instant::now();
    for i in 0..3 {
        m.kill(i, false);
    }
    let restores: Vec<_> = (0..3)
        .map(|i| {
            let l = &m.members[i].launch;
            let aside = l.data_dir.with_extension("old");
            std::fs::rename(&l.data_dir, &aside).expect("move the data aside");
            Command::new(etcdctl_bin())
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore"])
                .arg(&file)
                .arg(format!("--name={}", l.name))
                .arg(format!("--initial-cluster={}", l.initial_cluster))
                .arg("--initial-cluster-token=bench-restored")
                .arg(format!(
                    "--initial-advertise-peer-urls=https://{}",
                    std::net::SocketAddr::new(l.advertise, l.peer_port)
                ))
                .arg(format!("--data-dir={}", l.data_dir.display()))
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("etcdctl snapshot restore")
        })
        .collect();
    for mut r in restores {
        assert!(
            r.wait().expect("restore").success(),
            "snapshot restore failed"
        );
    }
    for i in 0..3 {
        m.start(i);
    }
    m.wait_healthy(&[0, 1, 2], start).await;
    let took = start.elapsed();
    let got = m
        .client(1)
        .await
        .get(
            "/bench/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count");
    assert_eq!(got.count() as usize, KEYS, "manual restore lost keys");
    took
}

fn quorate() -> std::time::Duration {
    let mut c = Cluster::new(3);
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    let cert = c.client_cert(0, "bench");
    let v = value();
    for i in 0..KEYS {
        c.etcdctl_ok(i % 3, &cert, &["put", &format!("/bench/{i}"), &v]);
    }
    let file = c.root.path().join("snapshot.db");
    c.etcdctl_ok(
        0,
        &c.agent_cert(0),
        &["snapshot", "save", file.to_str().unwrap()],
    );

    let start = Instant::now();
    let o = c.agents[0].cli(&["restore", file.to_str().unwrap(), "--yes"]);
    assert!(
        o.status.success(),
        "quorate restore: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for a in &c.agents {
        wait_for("every agent ready after the restore", FORM_TIMEOUT, || {
            a.ready()
        });
    }
    let took = start.elapsed();
    let keys = c.etcdctl_ok(1, &cert, &["get", "/bench/", "--prefix", "--keys-only"]);
    let count = keys.lines().filter(|l| !l.is_empty()).count();
    assert_eq!(count, KEYS, "quorate restore lost keys");
    c.stop_all();
    took
}

pub async fn round() -> Round {
    let manual = manual().await;
    let quorate = quorate();
    Round {
        manual,
        quorate,
        extra: None,
    }
}
