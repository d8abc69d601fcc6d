//! A rolling etcd upgrade of a 3-member cluster, 3.4.23 to 3.5.30 (Debian's packages; 3.5.30
//! unpacked by scripts/deps.sh), timed from "the new binary is there" to "every member runs
//! it, healthy":
//! - manual, scripted carefully with the same gates as quorate's: for each member in turn,
//!   wait until every member is healthy, stop it (SIGTERM, as `systemctl stop`), start it on
//!   the new binary, wait until it is healthy again;
//! - quorate: `etcd.binary` is a symlink that is switched to the new binary; the agents notice
//!   it (they look every 5 s) and restart their members one at a time under the member-down
//!   lock, each waiting until its member is healthy and caught up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quorate_tests::{wait_for, Cluster};

use crate::manual::ManualCluster;
use crate::Round;

const NEW: &str = "/var/cache/quorate-test/etcd/3.5.30-2/usr/bin/etcd";
const OLD: &str = "/usr/bin/etcd";
const TIMEOUT: Duration = Duration::from_secs(240);

/// Points `link` at `target` atomically.
fn switch(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

async fn manual() -> Duration {
    let mut m = ManualCluster::prepare(3, 3);
    let start = Instant::now();
    for i in 0..3 {
        m.start_with(i, Path::new(OLD));
    }
    m.wait_healthy(&[0, 1, 2], start).await;
    let start = Instant::now();
    for i in 0..3 {
        m.wait_healthy(&[0, 1, 2], start).await;
        m.stop(i);
        m.start_with(i, Path::new(NEW));
        m.wait_healthy(&[i], start).await;
    }
    m.wait_healthy(&[0, 1, 2], start).await;
    start.elapsed()
}

fn quorate() -> Duration {
    let bin = tempfile::tempdir().expect("temp dir");
    let link: PathBuf = bin.path().join("etcd");
    switch(&link, Path::new(OLD));
    let l = link.clone();
    let mut c = Cluster::with(3, move |_, b| b.etcd_binary(&l));
    c.start_all();
    c.wait_ready(quorate_tests::cluster::FORM_TIMEOUT);
    let start = Instant::now();
    switch(&link, Path::new(NEW));
    wait_for(
        "every member on etcd 3.5.30, every agent ready",
        TIMEOUT,
        || {
            for a in &c.agents {
                a.ready()?;
                let s = a.status()?;
                let running = s.etcd_restarts.and_then(|r| r.running_version);
                if running.as_deref() != Some("3.5.30") {
                    return Err(format!("{}: {running:?}", a.name));
                }
            }
            Ok(())
        },
    );
    let took = start.elapsed();
    c.stop_all();
    took
}

pub async fn round() -> Round {
    assert!(
        Path::new(NEW).is_file(),
        "{NEW} is missing: run scripts/deps.sh's ensure_etcd_versions (bash scripts/test.sh does)"
    );
    let manual = manual().await;
    let quorate = quorate();
    Round {
        manual,
        quorate,
        extra: None,
    }
}
