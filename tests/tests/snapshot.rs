//! Scheduled snapshots on a real three-member cluster: with `@every 3s` and `retain = 2`,
//! exactly one agent takes each slot cluster-wide, each directory keeps at most two files,
//! every kept file passes `etcdctl snapshot status` and matches its manifest's sha256, and
//! `/status` and `quorate status` show the last snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use quorate::snapshot::file::{sha256_hex, Manifest, SnapshotName};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

const RETAIN: usize = 2;
const SLOTS_TIMEOUT: Duration = Duration::from_secs(90);

/// Every snapshot file in agent `i`'s snapshot directory, by name.
fn snapshots(c: &Cluster, i: usize) -> Vec<(SnapshotName, PathBuf)> {
    let dir = c.agents[i].state_dir().join("snapshots");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(SnapshotName, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((SnapshotName::parse(&name)?, e.path()))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn one_verified_snapshot_per_slot_cluster_wide_and_retention_per_node() {
    let mut c = Cluster::with(3, |_, b| {
        b.with(|cfg| {
            cfg.snapshot.schedule = Some("@every 3s".into());
            cfg.snapshot.retain = Some(RETAIN as u32);
        })
    });
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let cert = c.client_cert(0, "snap");
    c.put_keys(&cert, "/snap", 20);

    // Slots seen cluster-wide (from the logs of every agent: files are pruned, logs are not).
    let slots_taken = |c: &Cluster| -> Vec<(u64, usize)> {
        let mut taken = Vec::new();
        for (i, a) in c.agents.iter().enumerate() {
            for line in a.log().lines() {
                if line.contains("snapshot taken and verified") {
                    if let Some(slot) = line
                        .split("slot=")
                        .nth(1)
                        .and_then(|s| s.split(|ch: char| !ch.is_ascii_digit()).next())
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        taken.push((slot, i));
                    }
                }
            }
        }
        taken
    };
    wait_for("five snapshot slots", SLOTS_TIMEOUT, || {
        let n = slots_taken(&c).len();
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} slot(s) taken"))
        }
    });

    // No slot taken twice, anywhere.
    let taken = slots_taken(&c);
    let mut by_slot: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (slot, i) in &taken {
        by_slot.entry(*slot).or_default().push(*i);
    }
    for (slot, agents) in &by_slot {
        assert_eq!(agents.len(), 1, "slot {slot} taken by agents {agents:?}");
        assert_eq!(slot % 3, 0, "slots are aligned on the period");
    }

    eprintln!("slots (agent indexes): {by_slot:?}");

    // The files on disk: distinct slots across directories, at most RETAIN per directory,
    // each verified by etcdctl and matching its manifest.
    let mut file_slots = BTreeMap::new();
    for i in 0..c.agents.len() {
        let files = snapshots(&c, i);
        assert!(files.len() <= RETAIN, "agent {i} keeps {files:?}");
        for (name, path) in files {
            assert!(
                file_slots.insert(name.time, i).is_none(),
                "slot {} in two directories",
                name.time
            );
            assert!(
                by_slot.contains_key(&name.time),
                "{path:?} is not a logged slot"
            );
            let out = Command::new("etcdctl")
                .args(["snapshot", "status", "-w", "json"])
                .arg(&path)
                .env("ETCDCTL_API", "3")
                .output()
                .expect("run etcdctl");
            assert!(
                out.status.success(),
                "etcdctl snapshot status {path:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let manifest_path = path.with_extension("json");
            let manifest: Manifest =
                serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
            let content = std::fs::read(&path).unwrap();
            assert_eq!(manifest.sha256, sha256_hex(&content), "{manifest_path:?}");
            assert_eq!(manifest.size, content.len() as u64);
            assert_eq!(manifest.slot, name.time);
            assert_eq!(manifest.revision, name.revision);
            assert_eq!(manifest.node, c.agents[i].name);
            assert!(!manifest.ca_hash.is_empty());
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).unwrap().permissions(),
            ) & 0o777;
            assert_eq!(mode, 0o600, "{path:?}");
        }
    }
    assert!(!file_slots.is_empty());

    // The status of an agent that took one shows its last file.
    let (_, taker) = taken[taken.len() - 1];
    wait_for("the last snapshot in /status", FORM_TIMEOUT, || {
        let report = c.agents[taker].status()?;
        let s = report.snapshot.ok_or("no snapshot section")?;
        match (s.last_file, s.snapshots) {
            (Some(file), n) if n > 0 && file.starts_with("quorate-") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let out = c.agents[taker].cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Snapshots:") && text.contains("last: quorate-"),
        "{text}"
    );
    let (_, metrics) = c.agents[taker].get("/metrics").unwrap();
    assert!(metrics.contains("quorate_snapshot_last_success_timestamp_seconds "));
    assert!(metrics.contains("quorate_snapshot_interval_seconds 3"));
}
