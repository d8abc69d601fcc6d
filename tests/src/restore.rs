//! Helpers of the restore tests: saving a snapshot, reading the cluster's ID and keys, and
//! getting a client certificate while the issuer is elected again after a restore.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::cluster::{ClientCert, FORM_TIMEOUT};
use crate::{wait_for, Cluster};

/// Keys written under each prefix.
pub const KEYS: usize = 5;

/// A command's stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Saves a snapshot of the cluster through agent `i`, as the agents' identity (a snapshot
/// needs etcd's root role once authentication is on).
pub fn save_snapshot(c: &Cluster, i: usize) -> PathBuf {
    let file = c.root.path().join("backup.db");
    c.etcdctl_ok(
        i,
        &c.agent_cert(i),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    file
}

/// The cluster ID agent `i` reports.
pub fn cluster_id(c: &Cluster, i: usize) -> String {
    c.agents[i]
        .status()
        .unwrap()
        .etcd
        .cluster_id
        .unwrap_or_default()
}

/// The keys under `prefix` as agent `i` lists them.
pub fn keys(c: &Cluster, i: usize, cert: &ClientCert, prefix: &str) -> Vec<String> {
    c.etcdctl_eventually(i, cert, &["get", prefix, "--prefix", "--keys-only"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A client certificate, retried while the issuer is being elected again after a restore.
pub fn client_cert_eventually(c: &Cluster, via: usize, name: &str) -> ClientCert {
    let out = c.root.path().join(format!("client-{name}"));
    wait_for(&format!("client certificate {name}"), FORM_TIMEOUT, || {
        let o = c.agents[via].cli(&["cert", "client", name, "--out", out.to_str().unwrap()]);
        if o.status.success() {
            Ok(())
        } else {
            Err(text(&o))
        }
    });
    ClientCert {
        ca: out.join("ca.pem"),
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}-key.pem")),
    }
}

/// A copy of `src` at `dest` with `change` applied; returns `dest` as a string.
pub fn copy_with(src: &Path, dest: &Path, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(src).unwrap();
    change(&mut bytes);
    std::fs::write(dest, bytes).unwrap();
    dest.to_str().unwrap().to_owned()
}

/// The cluster as it was: same cluster ID, the keys written after the snapshot still there.
pub fn assert_untouched(c: &Cluster, cert: &ClientCert, id: &str, what: &str) {
    for i in 0..3 {
        assert_eq!(cluster_id(c, i), id, "{what}: cluster ID changed");
    }
    assert_eq!(keys(c, 1, cert, "/b/").len(), KEYS, "{what}: keys B gone");
}
