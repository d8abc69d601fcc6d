//! `quorate restore` on the same hosts, with real etcd and real agents: the cluster comes back
//! with exactly the snapshot's keys, a new cluster ID, three healthy voters, the same CA, old
//! client certificates working and new ones issued; a host that was down during the restore
//! moves its old data aside and joins the restored cluster; and every bad input is refused with
//! the cluster untouched.

use std::path::{Path, PathBuf};
use std::process::Output;

use quorate::api::restore_client::push_plan;
use quorate::api::{request_certificate, CertKind, CsrRequest, ServerTrust};
use quorate::pki::NodeKey;
use quorate::restore::{sign_plan, RestoreRecord};
use quorate::token::{JoinToken, KeyPurpose};
use quorate_tests::cluster::{ClientCert, FORM_TIMEOUT};
use quorate_tests::{wait_for, Cluster};

const KEYS: usize = 5;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Saves a snapshot of the cluster through agent `i` with `cert`.
fn save_snapshot(c: &Cluster, i: usize, cert: &ClientCert) -> PathBuf {
    let file = c.root.path().join("backup.db");
    c.etcdctl_ok(i, cert, &["snapshot", "save", file.to_str().unwrap()]);
    file
}

fn cluster_id(c: &Cluster, i: usize) -> String {
    c.agents[i]
        .status()
        .unwrap()
        .etcd
        .cluster_id
        .unwrap_or_default()
}

/// The keys under `prefix` as agent `i` lists them.
fn keys(c: &Cluster, i: usize, cert: &ClientCert, prefix: &str) -> Vec<String> {
    c.etcdctl_eventually(i, cert, &["get", prefix, "--prefix", "--keys-only"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A client certificate, retried while the issuer is being elected again after a restore.
fn client_cert_eventually(c: &Cluster, via: usize, name: &str) -> ClientCert {
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

fn copy_with(src: &Path, dest: &Path, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = std::fs::read(src).unwrap();
    change(&mut bytes);
    std::fs::write(dest, bytes).unwrap();
    dest.to_str().unwrap().to_owned()
}

/// The cluster as it was: same cluster ID, the keys written after the snapshot still there.
fn assert_untouched(c: &Cluster, cert: &ClientCert, id: &str, what: &str) {
    for i in 0..3 {
        assert_eq!(cluster_id(c, i), id, "{what}: cluster ID changed");
    }
    assert_eq!(keys(c, 1, cert, "/b/").len(), KEYS, "{what}: keys B gone");
}

#[test]
fn restore_on_the_same_hosts_and_every_bad_input_refused() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let before = c.client_cert(0, "before");
    c.put_keys(&before, "/a", KEYS);
    let snapshot = save_snapshot(&c, 0, &before);
    c.put_keys(&before, "/b", KEYS);
    let old_id = cluster_id(&c, 0);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    let file = snapshot.to_str().unwrap();

    // Without --yes: says what would happen, changes nothing.
    let o = c.agents[0].cli(&["restore", file]);
    assert!(
        !o.status.success(),
        "restore without --yes ran: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("--yes") && text(&o).contains("Nothing was changed"),
        "{}",
        text(&o)
    );

    // A truncated file, a flipped byte, a file that is no snapshot: refused, naming the file.
    let dir = c.root.path();
    let bad = [
        copy_with(&snapshot, &dir.join("truncated.db"), |b| {
            b.truncate(b.len() / 2)
        }),
        copy_with(&snapshot, &dir.join("flipped.db"), |b| {
            let i = b.len() / 3;
            b[i] ^= 0x01;
        }),
        copy_with(&snapshot, &dir.join("notes.txt"), |b| {
            *b = b"these are not the keys you are looking for\n".to_vec()
        }),
    ];
    for path in &bad {
        let o = c.agents[1].cli(&["restore", path, "--yes"]);
        let out = text(&o);
        assert!(!o.status.success(), "{path} was restored: {out}");
        assert!(
            out.contains(path.as_str()) && out.contains("not a complete etcd snapshot"),
            "{out}"
        );
    }
    let o = c.agents[1].cli(&["restore", "/nonexistent/backup.db", "--yes"]);
    assert!(
        !o.status.success() && text(&o).contains("/nonexistent/backup.db"),
        "{}",
        text(&o)
    );
    assert_untouched(&c, &before, &old_id, "after the bad inputs");

    // The restore.
    let started = std::time::Instant::now();
    let o = c.agents[0].cli(&["restore", file, "--yes"]);
    let out = text(&o);
    assert!(o.status.success(), "restore failed: {out}\n{}", c.logs(40));
    assert!(
        out.contains("restore generation 1 done: 3 members restored"),
        "{out}"
    );
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT);
    }
    eprintln!("restore of 3 members took {:?}", started.elapsed());
    // The tool of the etcd under test: etcdctl on 3.4, etcdutl from 3.5.
    let version = quorate_tests::etcd_version();
    let tool = if version.starts_with("3.4.") {
        "etcdctl"
    } else {
        "etcdutl"
    };
    for a in &c.agents {
        let used = a
            .log()
            .lines()
            .any(|l| l.contains("restoring the snapshot") && l.contains(&format!("/{tool}")));
        assert!(used, "{}: no restore with {tool} (etcd {version})", a.name);
    }
    let new_id = cluster_id(&c, 0);
    assert_ne!(new_id, old_id, "the restored cluster kept its old ID");
    for i in 0..3 {
        assert_eq!(cluster_id(&c, i), new_id);
        assert_eq!(
            c.agents[i].status().unwrap().ca_hash,
            ca_hash,
            "the CA changed"
        );
        let s = c.agents[i].status().unwrap();
        let r = s.restore.expect("restore progress in /status");
        assert_eq!(r.generation, 1);
        assert!(r.complete(), "{r:?}");
    }
    // Exactly the snapshot's keys, through a certificate issued before the restore.
    let a: Vec<String> = (0..KEYS).map(|i| format!("/a/{i}")).collect();
    let mut got = keys(&c, 2, &before, "/a/");
    got.sort();
    assert_eq!(got, a);
    assert!(
        keys(&c, 2, &before, "/b/").is_empty(),
        "keys written after the snapshot survived"
    );
    // From etcdutl 3.5.16 the revision jumps and the old ones read as compacted, so that a
    // watcher resuming from a revision it saw before notices.
    let numbers: Vec<u32> = version
        .split(['.', '-'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    if (numbers[0], numbers[1], numbers[2]) >= quorate::etcd::restore::BUMP_SINCE {
        let out = c.etcdctl_ok(2, &before, &["get", "/a/0", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let revision = v["header"]["revision"].as_i64().unwrap();
        assert!(
            revision > 1_000_000_000,
            "revision {revision} after the restore"
        );
        let o = c.etcdctl(2, Some(&before), &["get", "/a/0", "--rev=2"]);
        assert!(
            !o.status.success() && text(&o).contains("compacted"),
            "an old revision still reads: {}",
            text(&o)
        );
    }
    // The data was moved aside, never deleted.
    for a in &c.agents {
        let aside = std::fs::read_dir(a.state_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("etcd.pre-restore-g1-")
            });
        assert!(aside, "{}: no etcd.pre-restore-g1-* directory", a.name);
    }
    // Every member keeps the snapshot it restored, owner-only (it holds every key).
    for a in &c.agents {
        use std::os::unix::fs::PermissionsExt;
        let dir = a.state_dir().join("restore");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(files.len(), 1, "{}: {files:?}", a.name);
        let mode = files[0].metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: snapshot copy mode {mode:o}", a.name);
    }
    // A new client certificate is issued (the issuer election works again), and writes work.
    let after = client_cert_eventually(&c, 1, "after");
    c.etcdctl_eventually(1, &after, &["put", "/after/key", "written"]);
    let v = c.etcdctl_ok(0, &before, &["get", "/after/key", "--print-value-only"]);
    assert_eq!(v.trim(), "written");

    // The same plan pushed again (as the decider would): refused, nothing happens.
    let record: RestoreRecord = serde_json::from_str(
        &std::fs::read_to_string(c.agents[0].state_dir().join("restore.json")).unwrap(),
    )
    .unwrap();
    let signed = record.signed.expect("the decider's plan");
    let ca_pem = std::fs::read_to_string(c.agents[1].state_dir().join("pki/ca.pem")).unwrap();
    let key = JoinToken::parse(&c.token)
        .unwrap()
        .derive(KeyPurpose::ApiProof);
    let api = c.agents[0]
        .status()
        .unwrap()
        .gossip
        .iter()
        .find(|m| m.name == c.agents[1].name)
        .and_then(|m| m.api_addr)
        .expect("agent 2's API address");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(push_plan(api, &ca_pem, &key, &signed))
        .expect_err("the same plan was accepted twice");
    assert!(err.to_string().contains("applied once"), "{err}");
    // Tampered (generation 2, signature of generation 1): refused on its signature.
    let mut forged = signed.clone();
    forged.plan.generation = 2;
    let err = rt
        .block_on(push_plan(api, &ca_pem, &key, &forged))
        .expect_err("a tampered plan was accepted");
    assert!(err.to_string().contains("signature"), "{err}");
    // A join-token holder gets a node certificate in a voter's name from the issuer and signs
    // a plan with it: refused, its key is not the one that voter serves etcd with.
    // (In the name of a voter other than the issuer: the issuer signs for names it sees in
    // gossip, which does not include itself.)
    let issuer_name = c
        .agents
        .iter()
        .find(|a| a.status().is_ok_and(|s| s.issuer))
        .map(|a| a.name.clone())
        .expect("an issuer");
    let victim = c
        .agents
        .iter()
        .map(|a| a.name.clone())
        .find(|n| *n != issuer_name)
        .unwrap();
    let impostor = NodeKey::generate().unwrap();
    let csr = impostor.csr_pem(&victim).unwrap();
    let issuer = c
        .agents
        .iter()
        .find_map(|a| a.status().ok().and_then(|s| s.issuer_api()))
        .expect("an issuer's API address");
    let issued = rt.block_on(request_certificate(
        issuer,
        &ServerTrust::Ca(ca_pem.clone()),
        signed.plan.ca_hash,
        &key,
        &CsrRequest {
            name: &victim,
            kind: CertKind::Node,
            csr_pem: &csr,
            key_pem: &impostor.to_pem(),
            from: None,
            renewing: None,
        },
        std::time::Duration::from_secs(10),
    ));
    match issued {
        Ok(response) => {
            let mut plan = signed.plan.clone();
            plan.generation = 2;
            plan.decided_by = victim.clone();
            let forged = sign_plan(plan, &impostor.to_pem(), &response.cert_pem).unwrap();
            let err = rt
                .block_on(push_plan(api, &ca_pem, &key, &forged))
                .expect_err("a plan signed by a token holder was accepted");
            assert!(err.to_string().contains("not the one member"), "{err}");
        }
        Err(e) => eprintln!("the issuer refused a node certificate in a voter's name: {e}"),
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    for i in 0..3 {
        assert_eq!(
            cluster_id(&c, i),
            new_id,
            "a refused plan changed the cluster"
        );
    }
    assert_eq!(keys(&c, 1, &before, "/after/").len(), 1);
}

#[test]
fn a_host_down_during_the_restore_joins_the_restored_cluster() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let cert = c.client_cert(0, "down");
    c.put_keys(&cert, "/a", KEYS);
    let snapshot = save_snapshot(&c, 0, &cert);
    c.put_keys(&cert, "/b", KEYS);
    let old_id = cluster_id(&c, 0);

    c.agents[2].stop();
    let down = c.agents[2].name.clone();
    wait_for("the stopped agent gone from gossip", FORM_TIMEOUT, || {
        let s = c.agents[0].status()?;
        let live = s
            .gossip
            .iter()
            .any(|m| m.name == down && m.state != quorate::gossip::PeerState::Down);
        if live {
            Err(format!("{down} still live"))
        } else {
            Ok(())
        }
    });
    let o = c.agents[0].cli(&["restore", snapshot.to_str().unwrap(), "--yes"]);
    let out = text(&o);
    assert!(o.status.success(), "restore failed: {out}\n{}", c.logs(40));
    assert!(out.contains("2 members restored"), "{out}");
    c.wait_voters(0, 2, FORM_TIMEOUT);

    // The host that was down comes back: its old data goes aside, it joins as a new member.
    c.agents[2].start();
    c.wait_voters(2, 3, FORM_TIMEOUT * 2);
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let new_id = cluster_id(&c, 2);
    assert_ne!(new_id, old_id);
    assert_eq!(cluster_id(&c, 0), new_id);
    let mut got = keys(&c, 2, &cert, "/a/");
    got.sort();
    assert_eq!(
        got,
        (0..KEYS).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    assert!(keys(&c, 2, &cert, "/b/").is_empty());
    let aside = std::fs::read_dir(c.agents[2].state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("etcd.pre-restore-g1-")
        });
    assert!(aside, "the returning host's old data was not moved aside");
    assert!(
        c.agents[2]
            .log()
            .contains("the cluster was restored while this host was away"),
        "{}",
        c.agents[2].log_tail(40)
    );
}

#[test]
fn three_wiped_hosts_with_restore_from_come_back_with_the_data_and_the_old_ca() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let old = c.client_cert(0, "old");
    c.put_keys(&old, "/a", KEYS);
    let snapshot = save_snapshot(&c, 0, &old);
    c.put_keys(&old, "/b", KEYS);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    let old_id = cluster_id(&c, 0);

    // Every host loses everything; the seed's config names the snapshot.
    c.stop_all();
    for a in &c.agents {
        std::fs::remove_dir_all(a.state_dir()).unwrap();
    }
    let seed = c
        .config(0)
        .with(|cfg| cfg.restore_from = Some(snapshot.display().to_string()));
    c.agents[0].write_config(&seed);
    c.start_all();
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT * 2);
    }
    assert_ne!(cluster_id(&c, 0), old_id);
    for a in &c.agents {
        assert_eq!(
            a.status().unwrap().ca_hash,
            ca_hash,
            "{}: another CA",
            a.name
        );
    }
    // The old client certificate works and sees exactly the snapshot's keys.
    let mut got = keys(&c, 2, &old, "/a/");
    got.sort();
    assert_eq!(
        got,
        (0..KEYS).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    assert!(keys(&c, 1, &old, "/b/").is_empty());
    let new = client_cert_eventually(&c, 2, "new");
    c.etcdctl_eventually(0, &new, &["put", "/after/restore-from", "ok"]);
}

#[test]
fn a_snapshot_whose_ca_cannot_be_unsealed_stops_until_restore_new_ca() {
    let mut c = Cluster::new(1);
    c.start_and_wait();
    let old = c.client_cert(0, "old");
    c.put_keys(&old, "/a", KEYS);
    let snapshot = save_snapshot(&c, 0, &old);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    c.stop_all();

    // A new host with another token: the CA sealed in the snapshot does not open.
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    let other = JoinToken::generate().expose().to_owned();
    let seed = c
        .config(0)
        .token(&other)
        .with(|cfg| cfg.restore_from = Some(snapshot.display().to_string()));
    c.agents[0].write_config(&seed);
    c.agents[0].start();
    let message = wait_for("the seed to refuse the snapshot's CA", FORM_TIMEOUT, || {
        let s = c.agents[0].status()?;
        if s.phase == quorate::phase::Phase::Conflict {
            Ok(s.message)
        } else {
            Err(format!("{}: {}", s.phase, s.message))
        }
    });
    assert!(
        message.contains("cannot be unsealed") && message.contains("restore_new_ca"),
        "{message}"
    );
    assert!(c.agents[0].ready().is_err());

    // restore_new_ca: the data comes back under a new CA.
    c.agents[0].stop();
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    let seed = seed.with(|cfg| cfg.restore_new_ca = true);
    c.agents[0].write_config(&seed);
    c.agents[0].start();
    c.wait_voters(0, 1, FORM_TIMEOUT);
    let s = c.agents[0].status().unwrap();
    assert_ne!(
        s.ca_hash, ca_hash,
        "the old CA came back although it cannot be unsealed"
    );
    let new = client_cert_eventually(&c, 0, "new");
    let mut got = keys(&c, 0, &new, "/a/");
    got.sort();
    assert_eq!(
        got,
        (0..KEYS).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    // An old certificate is of the old CA: refused now.
    assert!(!c.etcdctl(0, Some(&old), &["get", "/a/0"]).status.success());
}

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
    let plain = save_snapshot(&c, 0, &old);
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

    // Another cluster made with the same token (so its sealed CA opens), saved with plain
    // etcdctl: no manifest tells the restore that its CA is another one.
    let mut other = Cluster::new(1);
    let cfg = other.config(0).token(&c.token);
    other.agents[0].write_config(&cfg);
    other.start_and_wait();
    let theirs = other.client_cert(0, "theirs");
    other.put_keys(&theirs, "/other", KEYS);
    assert_ne!(other.agents[0].status().unwrap().ca_hash, ca_hash);
    let file = other.root.path().join("other.db");
    other.etcdctl_ok(0, &theirs, &["snapshot", "save", file.to_str().unwrap()]);
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
    // The other cluster's data, this cluster's CA: old certificates work, and new ones are
    // issued (the issuer put this cluster's CA back in place of the snapshot's).
    let mut got = keys(&c, 2, &ours, "/other/");
    got.sort();
    assert_eq!(got.len(), KEYS, "{got:?}");
    // /quorate/ca holds this cluster's CA again (not the snapshot's).
    wait_for(
        "this cluster's CA back in /quorate/ca",
        FORM_TIMEOUT,
        || {
            let v = c.etcdctl_eventually(1, &ours, &["get", "/quorate/ca", "--print-value-only"]);
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
}
