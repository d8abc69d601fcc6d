//! `quorate snapshot save` on a real three-member cluster (scheduled snapshots off): into the
//! snapshot directory and with `--out`, both files pass `etcdctl snapshot status`; `--out`
//! never replaces a file without `--force`, and refuses a missing directory. The third agent has
//! `snapshot.encryption_key_file`: its snapshots are age files that etcdctl refuses,
//! `decrypt_to` with the key gives a snapshot that etcdctl restores and a throwaway etcd
//! serves with every key, and the wrong key is named as such. A save into a full 1 MiB tmpfs
//! says the disk is full, names the file, and leaves nothing behind and nothing replaced. An
//! exposed key and a stopped agent are clear errors. A save waits while another process holds
//! the snapshot job lock, and records no schedule slot.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use quorate::jobs::Job;
use quorate::snapshot::crypt::{decrypt_to, is_encrypted, CryptError};
use quorate::snapshot::file::{sha256_hex, Manifest, SnapshotName};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{etcdctl_bin, space, wait_for, Cluster};

const PLAIN: usize = 0;
/// A killed holder's lease (15 s) must expire before the save gets the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
const SEALED: usize = 2;

fn write_key(path: &Path) {
    quorate_tests::keys::write_age_key(path);
}

fn etcdctl_status(path: &Path) -> Output {
    Command::new(etcdctl_bin())
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("run etcdctl")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The snapshot files (with their manifests) in agent `i`'s snapshot directory.
fn stored(c: &Cluster, i: usize) -> Vec<(SnapshotName, bool, PathBuf)> {
    let dir = c.agents[i].state_dir().join("snapshots");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (n, enc) = SnapshotName::parse_file(&name)?;
            Some((n, enc, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn manifest_of(path: &Path) -> Manifest {
    let name = path.file_name().unwrap().to_str().unwrap();
    let (n, _) = SnapshotName::parse_file(name).unwrap();
    let m = path.with_file_name(n.manifest_name().unwrap());
    serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap()
}

/// A tmpfs mounted for the test, unmounted when dropped (also on failure).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            quorate_tests::require_failed(
                "snapshot_save",
                &format!(
                    "mounting a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A throwaway single-member etcd on a loopback address, killed when dropped.
struct Throwaway(Child);

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Restores `db` with etcdctl into `dir` and serves it on `ip`; returns the etcd and its URL.
/// Serves the restored `db` on agent 0's address (port 23790) with its certificate, so that it
/// can be read as agent 0: the snapshot holds the cluster's etcd users, and authentication is
/// on in it.
fn serve_restored(db: &Path, dir: &Path, c: &Cluster) -> (Throwaway, String) {
    let ip = c.agents[0].addr;
    let data = dir.join("restored.etcd");
    let peer = format!("http://{ip}:23800");
    let client = format!("https://{ip}:23790");
    let tls = c.agent_cert(0);
    ok(
        &Command::new(etcdctl_bin())
            .args(["snapshot", "restore"])
            .arg(db)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", "throwaway", "--initial-cluster"])
            .arg(format!("throwaway={peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap(),
        "etcdctl snapshot restore",
    );
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "throwaway", "--data-dir"])
        .arg(&data)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .arg("--initial-cluster")
        .arg(format!("throwaway={peer}"))
        .arg(format!("--trusted-ca-file={}", tls.ca.display()))
        .arg(format!("--cert-file={}", tls.cert.display()))
        .arg(format!("--key-file={}", tls.key.display()))
        .arg("--client-cert-auth=true")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("throwaway.log")).unwrap())
        .spawn()
        .expect("start etcd");
    (Throwaway(child), client)
}

/// A `quorate-job-holder` process, killed when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Holds the snapshot job lock from another process, as agent `i`'s node.
fn hold_snapshot_lock(c: &Cluster, i: usize) -> Holder {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorate-job-holder"))
        .arg(c.agents[i].state_dir().join("pki"))
        .arg(&c.agents[i].name)
        .arg(Job::Snapshot.name())
        .arg(c.client_url(i))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start quorate-job-holder");
    let stdout = child.stdout.take().expect("piped stdout");
    let holder = Holder(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.starts_with("acquired "), "holder: {line:?}");
    holder
}

#[test]
fn save_out_encryption_and_bad_input() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("snapshot-key.txt");
    let wrong = keys.path().join("wrong-key.txt");
    write_key(&key);
    write_key(&wrong);
    let key_for_config = key.clone();
    let mut c = Cluster::with(3, move |i, b| {
        let key = key_for_config.clone();
        b.with(move |cfg| {
            cfg.snapshot.schedule = Some(String::new());
            if i == SEALED {
                cfg.snapshot.encryption_key_file = Some(key);
            }
        })
    });
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    // Every voter holds the CA seal secret (the manifests carry it).
    c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT);
    let cert = c.client_cert(0, "save");
    c.put_keys(&cert, "/save", 30);
    // About 2 MiB of values, so the snapshot cannot fit a 1 MiB tmpfs.
    let rt = space::runtime();
    let tls = space::tls(&cert);
    let endpoints = space::endpoints(&c);
    for seq in 0..20u64 {
        let put = rt.block_on(space::put(
            &endpoints,
            &tls,
            &format!("/big/{seq}"),
            space::value(seq, 100 * 1024),
        ));
        assert_eq!(put, space::Put::Acked);
    }
    let work = tempfile::tempdir().unwrap();

    // Into the snapshot directory: a verified plain file with its manifest.
    let out = c.agents[PLAIN].cli(&["snapshot", "save"]);
    let text = ok(&out, "snapshot save");
    assert!(text.contains("snapshot saved: "), "{text}");
    let files = stored(&c, PLAIN);
    assert_eq!(files.len(), 1, "{files:?}");
    let (name, encrypted, path) = &files[0];
    assert!(!encrypted);
    ok(&etcdctl_status(path), "etcdctl snapshot status");
    let m = manifest_of(path);
    assert!(!m.encrypted);
    assert_eq!(m.sha256, sha256_hex(&std::fs::read(path).unwrap()));
    assert_eq!(m.plaintext_sha256.as_deref(), Some(m.sha256.as_str()));
    assert_eq!(m.revision, name.revision);
    assert!(text.contains(&path.display().to_string()), "{text}");

    // --out: written by the CLI, verified; never replaced without --force.
    let out_file = work.path().join("out.db");
    let arg = out_file.to_str().unwrap();
    ok(
        &c.agents[PLAIN].cli(&["snapshot", "save", "--out", arg]),
        "save --out",
    );
    ok(
        &etcdctl_status(&out_file),
        "etcdctl snapshot status of --out",
    );
    assert_eq!(
        stored(&c, PLAIN).len(),
        1,
        "--out adds nothing to the directory"
    );
    let before = std::fs::read(&out_file).unwrap();
    let err = failed(
        &c.agents[PLAIN].cli(&["snapshot", "save", "--out", arg]),
        "save over an existing file",
    );
    assert!(
        err.contains("exists already") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), before);
    ok(
        &c.agents[PLAIN].cli(&["snapshot", "save", "--out", arg, "--force"]),
        "save --force",
    );
    ok(
        &etcdctl_status(&out_file),
        "etcdctl snapshot status after --force",
    );
    // Its manifest, where a restore of out.db looks for it, describes the file written.
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(work.path().join("out.json")).unwrap()).unwrap();
    assert_eq!(m.sha256, sha256_hex(&std::fs::read(&out_file).unwrap()));
    assert_eq!(m.size, std::fs::metadata(&out_file).unwrap().len());
    assert!(!m.encrypted);
    // It carries the member's CA seal secret, which only the cluster's join token opens.
    let copy = m
        .ca_seal_secret
        .as_ref()
        .expect("the manifest carries no CA seal secret");
    let token = quorate::token::JoinToken::parse(&c.token).unwrap();
    assert_eq!(copy.open(&token), c.seal_secret(PLAIN));
    assert!(copy.open(&quorate::token::JoinToken::generate()).is_none());
    assert!(!std::fs::read_to_string(work.path().join("out.json"))
        .unwrap()
        .contains(&c.seal_secret(PLAIN).unwrap().to_text()));
    // Three saves so far (the directory, --out, --out --force; the refused one never reached
    // the agent): counted like scheduled snapshots although the schedule is off.
    wait_for("the saves in /status", FORM_TIMEOUT, || {
        let s = c.agents[PLAIN]
            .status()?
            .snapshot
            .ok_or("no snapshot status")?;
        match (s.snapshots, s.last_success, s.last_size) {
            (3, Some(_), Some(size)) if size == m.size => Ok(()),
            _ => Err(format!("{s:?}")),
        }
    });
    let (_, metrics) = c.agents[PLAIN].get("/metrics").unwrap();
    assert!(
        metrics.lines().any(|l| l == "quorate_snapshots_total 3")
            && metrics
                .lines()
                .any(|l| l.starts_with("quorate_snapshot_last_success_timestamp_seconds ")),
        "{metrics}"
    );
    let missing = work.path().join("no-such-dir").join("x.db");
    let err = failed(
        &c.agents[PLAIN].cli(&["snapshot", "save", "--out", missing.to_str().unwrap()]),
        "save into a missing directory",
    );
    assert!(
        err.contains("no-such-dir") && err.contains("does not exist"),
        "{err}"
    );

    // Encrypted at rest: an age file etcdctl refuses; the key opens it, the wrong one does not.
    let text = ok(
        &c.agents[SEALED].cli(&["snapshot", "save"]),
        "encrypted save",
    );
    assert!(text.contains("encrypted"), "{text}");
    let files = stored(&c, SEALED);
    assert_eq!(files.len(), 1, "{files:?}");
    let (name, encrypted, sealed) = &files[0];
    assert!(*encrypted && sealed.to_str().unwrap().ends_with(".db.age"));
    assert!(is_encrypted(sealed).unwrap());
    assert!(
        !etcdctl_status(sealed).status.success(),
        "etcdctl read an encrypted file"
    );
    let m = manifest_of(sealed);
    assert!(m.encrypted);
    assert_eq!(m.sha256, sha256_hex(&std::fs::read(sealed).unwrap()));
    assert_ne!(m.plaintext_sha256.as_deref(), Some(m.sha256.as_str()));
    let err = decrypt_to(sealed, &work.path().join("wrong.db"), Some(&wrong)).unwrap_err();
    assert!(matches!(err, CryptError::WrongKey { .. }), "{err}");
    assert!(!work.path().join("wrong.db").exists());
    let err = decrypt_to(sealed, &work.path().join("nokey.db"), None).unwrap_err();
    assert!(
        err.to_string().contains("snapshot.encryption_key_file"),
        "{err}"
    );
    let plain = work.path().join("decrypted.db");
    decrypt_to(sealed, &plain, Some(&key)).unwrap();
    let status = ok(
        &etcdctl_status(&plain),
        "etcdctl status of the decrypted file",
    );
    assert_eq!(
        m.plaintext_sha256.as_deref(),
        Some(sha256_hex(&std::fs::read(&plain).unwrap()).as_str())
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["revision"].as_i64(), Some(name.revision), "{status}");
    // Served by a throwaway etcd, it holds every key.
    let (_etcd, url) = serve_restored(&plain, work.path(), &c);
    let tls = c.agent_cert(0);
    let count = wait_for("the restored etcd serves the keys", FORM_TIMEOUT, || {
        let out = Command::new(etcdctl_bin())
            .arg(format!("--cacert={}", tls.ca.display()))
            .arg(format!("--cert={}", tls.cert.display()))
            .arg(format!("--key={}", tls.key.display()))
            .args([
                "--endpoints",
                &url,
                "get",
                "/save/",
                "--prefix",
                "--keys-only",
                "-w",
                "json",
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        v["count"].as_i64().ok_or_else(|| format!("{v}"))
    });
    assert_eq!(count, 30);

    // --out of an encrypted agent is the encrypted file too.
    let sealed_out = work.path().join("sealed-out.db.age");
    ok(
        &c.agents[SEALED].cli(&["snapshot", "save", "--out", sealed_out.to_str().unwrap()]),
        "encrypted save --out",
    );
    assert!(is_encrypted(&sealed_out).unwrap());
    decrypt_to(&sealed_out, &work.path().join("sealed-out.db"), Some(&key)).unwrap();

    // A key file others can read: refused, nothing written.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = failed(
        &c.agents[SEALED].cli(&["snapshot", "save"]),
        "save, exposed key",
    );
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(stored(&c, SEALED).len(), 1);

    // A full disk: the error names the file and says the disk is full; no temporary file, no
    // final file, and an existing file is not replaced even with --force.
    let small = Tmpfs::mount(&work.path().join("small"), "1m");
    let full = small.0.join("full.db");
    let err = failed(
        &c.agents[PLAIN].cli(&["snapshot", "save", "--out", full.to_str().unwrap()]),
        "save onto a full disk",
    );
    assert!(
        err.contains("full.db") && err.contains("disk is full"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&small.0).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let keep = small.0.join("keep.db");
    std::fs::write(&keep, b"keep me").unwrap();
    let err = failed(
        &c.agents[PLAIN].cli(&[
            "snapshot",
            "save",
            "--out",
            keep.to_str().unwrap(),
            "--force",
        ]),
        "save --force onto a full disk",
    );
    assert!(err.contains("disk is full"), "{err}");
    assert_eq!(std::fs::read(&keep).unwrap(), b"keep me");
    assert_eq!(std::fs::read_dir(&small.0).unwrap().count(), 1);
    drop(small);

    // The agent still saves after all that (its lock was released each time).
    ok(
        &c.agents[PLAIN].cli(&[
            "snapshot",
            "save",
            "--out",
            work.path().join("after.db").to_str().unwrap(),
        ]),
        "save after the failures",
    );

    // Saves neither record nor use up a schedule slot.
    let slot_key = Job::Snapshot.slot_key();
    let slot = c.etcdctl_ok(PLAIN, &c.agent_cert(PLAIN), &["get", &slot_key]);
    assert!(slot.trim().is_empty(), "{slot_key} = {slot}");

    // The job lock: while another process holds it, a save waits and writes nothing; once
    // the holder is gone (killed: its lease expires) the save completes.
    let holder = hold_snapshot_lock(&c, 1);
    let waiting = work.path().join("waiting.db");
    let mut save = c.agents[PLAIN]
        .command()
        .arg("--config")
        .arg(c.agents[PLAIN].config_path())
        .args(["snapshot", "save", "--out"])
        .arg(&waiting)
        .env_remove("QUORATE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quorate snapshot save");
    wait_for("the save to wait for the job lock", FORM_TIMEOUT, || {
        let waits = c.agents[PLAIN]
            .log()
            .matches("on-demand snapshot waits for the job lock")
            .count();
        if waits > 0 {
            Ok(())
        } else {
            Err("no wait logged".into())
        }
    });
    assert!(save.try_wait().unwrap().is_none(), "the save did not wait");
    assert!(!waiting.exists());
    drop(holder);
    let status = wait_for("the save to finish after the holder", LOCK_TIMEOUT, || {
        save.try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    });
    let out = save.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(
        &etcdctl_status(&waiting),
        "etcdctl status of the save that waited",
    );

    // No agent running: a clear error.
    c.agents[1].stop();
    let err = failed(
        &c.agents[1].cli(&["snapshot", "save"]),
        "save without an agent",
    );
    assert!(err.contains("Is the agent running"), "{err}");
}
