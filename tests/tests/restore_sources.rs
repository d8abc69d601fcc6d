//! `quorate restore` from other sources, with real etcd and real agents: encrypted snapshots
//! uploaded to a real S3-compatible server (moto on loopback), restored on the same hosts and
//! onto wiped ones, with a missing object and a snapshot encrypted to another key refused and
//! the cluster untouched; and a snapshot of another cluster made with the same token, whose CA
//! is put back to this cluster's after the restore.

use std::path::PathBuf;

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::restore::{
    assert_untouched, client_cert_eventually, cluster_id, keys, save_snapshot, text, KEYS,
};
use quorate_tests::{wait_for, Cluster};

/// `plain` encrypted to `recipient` (an age file).
fn age_encrypt(plain: &[u8], recipient: &age::x25519::Recipient) -> Vec<u8> {
    use std::io::Write;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let mut w = encryptor.wrap_output(&mut out).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap();
    out
}

/// The keys of the store's snapshots, as `quorate snapshot list --json` on agent `i` shows.
fn remote_keys(c: &Cluster, i: usize) -> Result<Vec<String>, String> {
    let o = c.agents[i].cli(&["snapshot", "list", "--json"]);
    if !o.status.success() {
        return Err(text(&o));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    Ok(v["remote"]["snapshots"]
        .as_array()
        .ok_or_else(|| format!("no remote listing: {v}"))?
        .iter()
        .filter_map(|s| s["key"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn encrypted_snapshots_restore_from_s3_on_the_same_hosts_and_onto_new_ones() {
    use quorate::config::S3Section;
    use quorate_tests::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
    const BUCKET: &str = "restore-backups";
    let server = S3Server::start("restore (s3)", BUCKET);
    let secrets = tempfile::tempdir().unwrap();
    let (id_file, secret_file) = (secrets.path().join("id"), secrets.path().join("secret"));
    std::fs::write(&id_file, format!("{ACCESS_KEY_ID}\n")).unwrap();
    std::fs::write(&secret_file, format!("{SECRET_ACCESS_KEY}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key_file = secrets.path().join("snapshot-key.txt");
    quorate_tests::keys::write_age_key(&key_file);
    let section = S3Section {
        endpoint: Some(server.endpoint()),
        bucket: Some(BUCKET.into()),
        allow_http: Some(true),
        retain: Some(100),
        access_key_id_file: Some(id_file),
        secret_access_key_file: Some(secret_file),
        ..S3Section::default()
    };
    let customize = |section: S3Section, key_file: PathBuf| {
        move |cfg: &mut quorate::config::Config| {
            cfg.snapshot.schedule = Some("@every 3s".into());
            cfg.snapshot.s3 = Some(section.clone());
            cfg.snapshot.encryption_key_file = Some(key_file.clone());
        }
    };
    let with = customize(section.clone(), key_file.clone());
    let mut c = Cluster::with(3, |_, b| b.with(with.clone()));
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let old = c.client_cert(0, "old");
    c.put_keys(&old, "/a", KEYS);
    let after_a = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A snapshot of a slot that began after the /a writes, listed before the /b writes.
    let key = wait_for(
        "an uploaded snapshot taken after the writes",
        FORM_TIMEOUT,
        || {
            remote_keys(&c, 1)?
                .into_iter()
                .find(|k| {
                    let file = k.rsplit('/').next().unwrap_or_default();
                    file.ends_with(".db.age")
                        && quorate::snapshot::file::SnapshotName::parse_file(file)
                            .is_some_and(|(n, _)| n.time > after_a)
                })
                .ok_or_else(|| "none yet".to_owned())
        },
    );
    let source = format!("s3://{BUCKET}/{key}");
    c.put_keys(&old, "/b", KEYS);
    let old_id = cluster_id(&c, 0);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;

    // Refused, the cluster untouched: an object that is not there, and a snapshot encrypted
    // to another key.
    let missing = format!("s3://{BUCKET}/quorate/quorate-0000000000000001-20260101T000000Z-r1.db");
    let o = c.agents[1].cli(&["restore", &missing, "--yes"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("cannot fetch") && text(&o).contains(&missing),
        "{}",
        text(&o)
    );
    let plain = save_snapshot(&c, 0);
    let other = age::x25519::Identity::generate();
    let foreign = c.root.path().join("foreign.db.age");
    std::fs::write(
        &foreign,
        age_encrypt(&std::fs::read(&plain).unwrap(), &other.to_public()),
    )
    .unwrap();
    let o = c.agents[1].cli(&["restore", foreign.to_str().unwrap(), "--yes"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("does not open"), "{}", text(&o));
    assert_untouched(&c, &old, &old_id, "after the refused sources");

    // The restore from the store, on the same hosts.
    let o = c.agents[1].cli(&["restore", &source, "--yes"]);
    let out = text(&o);
    assert!(o.status.success(), "restore failed: {out}\n{}", c.logs(40));
    assert!(out.contains("3 members restored"), "{out}");
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT);
    }
    let new_id = cluster_id(&c, 0);
    assert_ne!(new_id, old_id);
    assert_eq!(c.agents[2].status().unwrap().ca_hash, ca_hash);
    let mut got = keys(&c, 2, &old, "/a/");
    got.sort();
    let a: Vec<String> = (0..KEYS).map(|i| format!("/a/{i}")).collect();
    assert_eq!(got, a);
    assert!(keys(&c, 0, &old, "/b/").is_empty());
    // The snapshot was taken under the snapshot job lock, so it brought that lock back, held
    // by a lease of the old cluster: an agent removes it instead of waiting for the lease.
    wait_for(
        "the snapshot's stale job lock removed",
        FORM_TIMEOUT,
        || {
            c.agents
                .iter()
                .any(|a| {
                    a.log().lines().any(|l| {
                        l.contains("removed a key the restored snapshot brought back")
                            && l.contains("/quorate/jobs/snapshot")
                    })
                })
                .then_some(())
                .ok_or_else(|| "not removed yet".to_owned())
        },
    );
    // Nothing decrypted or downloaded is left behind.
    let incoming = c.agents[1].state_dir().join("restore/incoming");
    let left: Vec<_> = std::fs::read_dir(&incoming)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", incoming.display());

    // Every host lost: new hosts, the seed restores from the store with the same key.
    c.stop_all();
    for a in &c.agents {
        std::fs::remove_dir_all(a.state_dir()).unwrap();
    }
    let seed = c.config(0).with(with.clone()).with({
        let source = source.clone();
        move |cfg| cfg.restore_from = Some(source.clone())
    });
    c.agents[0].write_config(&seed);
    c.start_all();
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT * 2);
    }
    assert_eq!(c.agents[0].status().unwrap().ca_hash, ca_hash);
    let mut got = keys(&c, 1, &old, "/a/");
    got.sort();
    assert_eq!(got, a);
    assert!(keys(&c, 1, &old, "/b/").is_empty());
    drop(server);
}

#[test]
fn a_snapshot_holding_another_ca_gets_this_clusters_ca_put_back() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let ours = c.client_cert(0, "ours");
    c.put_keys(&ours, "/a", KEYS);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    let secret = c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT);

    // Another cluster made with the same token (so its sealed CA opens), saved with plain
    // etcdctl: no manifest tells the restore that its CA is another one.
    let mut other = Cluster::new(1);
    let cfg = other.config(0).token(&c.token);
    other.agents[0].write_config(&cfg);
    other.start_and_wait();
    let theirs = other.client_cert(0, "theirs");
    other.put_keys(&theirs, "/other", KEYS);
    assert_ne!(other.agents[0].status().unwrap().ca_hash, ca_hash);
    // Its CA is sealed with its own CA seal secret, which none of our hosts holds.
    assert_ne!(other.wait_ca_sealed_with_secret(0, FORM_TIMEOUT), secret);
    let file = other.root.path().join("other.db");
    other.etcdctl_ok(
        0,
        &other.agent_cert(0),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    other.stop_all();

    let o = c.agents[1].cli(&["restore", file.to_str().unwrap(), "--yes"]);
    assert!(
        o.status.success(),
        "restore failed: {}\n{}",
        text(&o),
        c.logs(40)
    );
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT);
    }
    // The other cluster's data, this cluster's CA: new certificates are issued (the issuer put
    // this cluster's CA back in place of the snapshot's) and read it. (The etcd users are the
    // snapshot's: "ours", recorded only in this cluster's registry, is no user there.)
    let reader = client_cert_eventually(&c, 0, "reader");
    let mut got = keys(&c, 2, &reader, "/other/");
    got.sort();
    assert_eq!(got.len(), KEYS, "{got:?}");
    // /quorate/ca holds this cluster's CA again (not the snapshot's).
    wait_for(
        "this cluster's CA back in /quorate/ca",
        FORM_TIMEOUT,
        || {
            let v = c.etcdctl_eventually(
                1,
                &c.agent_cert(1),
                &["get", "/quorate/ca", "--print-value-only"],
            );
            let hash = quorate::issuer::SealedCa::from_json(v.trim().as_bytes())
                .and_then(|s| s.hash())
                .map_err(|e| e.to_string())?;
            (Some(hash) == ca_hash)
                .then_some(())
                .ok_or_else(|| format!("/quorate/ca holds {hash}"))
        },
    );
    let new = client_cert_eventually(&c, 0, "after-other");
    c.etcdctl_eventually(2, &new, &["put", "/after/other", "ok"]);
    for a in &c.agents {
        assert_eq!(a.status().unwrap().ca_hash, ca_hash, "{}", a.name);
    }
    assert!(
        c.agents.iter().any(|a| a
            .log()
            .contains("put the cluster's CA back into etcd after the restore")),
        "{}",
        c.logs(40)
    );
    // The snapshot named the other cluster's seal secret: ours is the cluster's again, and the
    // CA in etcd is sealed with it (the join token alone does not open it).
    assert_eq!(c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT), secret);
}
