//! Off-site copies on a real S3-compatible server (moto, on loopback): three agents with
//! `@every 3s` snapshots and `[snapshot.s3]` upload every snapshot with its manifest; the
//! store keeps `retain` of them (seen by object_store directly and by `quorate snapshot
//! list`); a downloaded object passes `etcdctl snapshot status` and equals the local file;
//! with the server down the failure is counted and shown while local snapshots go on; once
//! it is back, the next slot uploads again.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};
use quorate::config::{S3Credentials, S3Section, S3Settings, Secret};
use quorate::snapshot::file::{Manifest, SnapshotName};
use quorate::snapshot::list::sha256_file;
use quorate::snapshot::remote::{fetch_to, use_ring, RemoteStore, S3Source};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use quorate_tests::{wait_for, Cluster};

const TEST: &str = "snapshot_s3";
const BUCKET: &str = "quorate-backups";
const PREFIX: &str = "quorate/";
const RETAIN_LOCAL: u32 = 3;
const RETAIN_REMOTE: usize = 2;
const TIMEOUT: Duration = Duration::from_secs(90);

/// The store as object_store sees it, independently of quorate: every key under the prefix.
fn keys(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>) -> Result<Vec<String>, String> {
    rt.block_on(async {
        let prefix = object_store::path::Path::from(PREFIX);
        let objects: Vec<object_store::ObjectMeta> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect())
    })
}

/// The data objects (`.db`) among `keys`.
fn data_keys(keys: &[String]) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| k.ends_with(".db"))
        .cloned()
        .collect()
}

fn metric(c: &Cluster, i: usize, name: &str) -> Option<f64> {
    let (_, text) = c.agents[i].get("/metrics").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn snapshots_taken(c: &Cluster) -> usize {
    c.agents
        .iter()
        .map(|a| a.log().matches("snapshot taken and verified").count())
        .sum()
}

#[test]
fn snapshots_go_off_site_with_remote_retention_and_survive_an_outage() {
    let mut server = S3Server::start(TEST, BUCKET);
    let creds = tempfile::tempdir().unwrap();
    let (id_file, secret_file) = (creds.path().join("id"), creds.path().join("secret"));
    std::fs::write(&id_file, format!("{ACCESS_KEY_ID}\n")).unwrap();
    std::fs::write(&secret_file, format!("{SECRET_ACCESS_KEY}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let section = S3Section {
        endpoint: Some(server.endpoint()),
        bucket: Some(BUCKET.into()),
        allow_http: Some(true),
        retain: Some(RETAIN_REMOTE as u32),
        access_key_id_file: Some(id_file),
        secret_access_key_file: Some(secret_file),
        ..S3Section::default()
    };
    let mut c = Cluster::with(3, |_, b| {
        let section = section.clone();
        b.with(move |cfg| {
            cfg.snapshot.schedule = Some("@every 3s".into());
            cfg.snapshot.retain = Some(RETAIN_LOCAL);
            cfg.snapshot.s3 = Some(section);
        })
    });
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let cert = c.client_cert(0, "s3");
    c.put_keys(&cert, "/s3", 20);

    let rt = tokio::runtime::Runtime::new().unwrap();
    use_ring();
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(server.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .with_allow_http(true)
            .build()
            .unwrap(),
    );

    // Uploads appear, each with its manifest, and remote retention keeps RETAIN_REMOTE once
    // more than that were uploaded.
    let uploads = |c: &Cluster| -> u64 {
        (0..c.agents.len())
            .filter_map(|i| c.agents[i].status().ok()?.snapshot?.upload)
            .map(|u| u.uploads)
            .sum()
    };
    wait_for("uploads beyond remote retention", TIMEOUT, || {
        let all = keys(&rt, &store)?;
        let data = data_keys(&all);
        let n = uploads(&c);
        let with_manifests = data
            .iter()
            .all(|k| all.contains(&k.replace(".db", ".json")));
        if n as usize > RETAIN_REMOTE + 1 && data.len() == RETAIN_REMOTE && with_manifests {
            Ok(())
        } else {
            Err(format!("{n} uploaded; the store holds {all:?}"))
        }
    });

    // `quorate snapshot list --json` shows the same objects (retried: a slot may land between
    // the two listings), and the local files verified.
    wait_for("snapshot list to agree with the store", TIMEOUT, || {
        let out = c.agents[0].cli(&["snapshot", "list", "--json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let listed: BTreeSet<String> = v["remote"]["snapshots"]
            .as_array()
            .ok_or("no remote snapshots")?
            .iter()
            .filter(|s| s["manifest"] == true)
            .filter_map(|s| s["key"].as_str().map(str::to_owned))
            .collect();
        let local_ok = v["local"]
            .as_array()
            .is_some_and(|l| l.iter().all(|f| f["verified"] == true));
        let store_keys = data_keys(&keys(&rt, &store)?);
        if listed == store_keys && local_ok {
            Ok(())
        } else {
            Err(format!(
                "listed {listed:?}, store {store_keys:?}, local {}",
                v["local"]
            ))
        }
    });
    let text = c.agents[0].cli(&["snapshot", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Remote snapshots (s3://quorate-backups/quorate/):"),
        "{text}"
    );

    eprintln!("quorate snapshot list:\n{text}");
    // The newest object, downloaded through the function a restore uses, is a valid etcd
    // snapshot equal to the local file of the agent that took it and to its manifest.
    let newest = data_keys(&keys(&rt, &store).unwrap())
        .into_iter()
        .max()
        .expect("an object");
    let file_name = newest.strip_prefix(PREFIX).unwrap().to_owned();
    let local = c
        .agents
        .iter()
        .map(|a| a.state_dir().join("snapshots").join(&file_name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file_name} in no agent's snapshot dir"));
    let local_sha = sha256_file(&local).unwrap();
    let settings = S3Settings {
        endpoint: Some(server.endpoint()),
        bucket: "unused-by-fetch".into(),
        prefix: PREFIX.into(),
        region: "us-east-1".into(),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: Secret::new(SECRET_ACCESS_KEY),
            session_token: None,
        }),
        retain: RETAIN_REMOTE,
        allow_http: true,
    };
    let source: S3Source = format!("s3://{BUCKET}/{newest}").parse().unwrap();
    let dl = tempfile::tempdir().unwrap();
    let dst = dl.path().join("restore.db");
    rt.block_on(fetch_to(&source, &settings, &dst, &|_, _| {}))
        .unwrap();
    assert_eq!(sha256_file(&dst).unwrap(), local_sha);
    let manifest: Manifest = rt.block_on(async {
        let key = object_store::path::Path::from(newest.replace(".db", ".json"));
        let bytes = store.get(&key).await.unwrap().bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    });
    assert_eq!(manifest.sha256, local_sha);
    assert_eq!(
        Some(manifest.revision),
        SnapshotName::parse(&file_name).map(|n| n.revision)
    );
    etcdctl_snapshot_status(&dst);
    // A source that names nothing fails, leaving nothing behind.
    let missing: S3Source = format!("s3://{BUCKET}/{PREFIX}nope.db").parse().unwrap();
    let e = rt
        .block_on(fetch_to(
            &missing,
            &settings,
            &dl.path().join("nope.db"),
            &|_, _| {},
        ))
        .unwrap_err();
    assert!(e.to_string().contains("nope.db"), "{e}");
    assert_eq!(std::fs::read_dir(dl.path()).unwrap().count(), 1);

    // The store goes away: failures are counted and shown, local snapshots go on.
    server.stop();
    let taken_before = snapshots_taken(&c);
    let failing = wait_for("an upload failure in metrics and status", TIMEOUT, || {
        for i in 0..c.agents.len() {
            if metric(&c, i, "quorate_snapshot_upload_failures_total").unwrap_or(0.0) >= 1.0 {
                let out = c.agents[i].cli(&["status"]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if text.contains("upload failed:") {
                    eprintln!("quorate status of agent {i} during the outage:\n{text}");
                    return Ok(i);
                }
            }
        }
        Err("no agent reports a failed upload yet".to_owned())
    });
    wait_for("local snapshots during the outage", TIMEOUT, || {
        let n = snapshots_taken(&c) - taken_before;
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} taken since the store went away"))
        }
    });
    let status = c.agents[failing].status().unwrap();
    let upload = status.snapshot.unwrap().upload.unwrap();
    assert!(upload.failing, "{upload:?}");
    assert!(
        upload
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "the error names the store: {upload:?}"
    );
    let out = c.agents[failing].cli(&["snapshot", "list"]);
    assert!(!out.status.success(), "listing a store that is down fails");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Local snapshots") && text.contains("cannot list"),
        "{text}"
    );

    // Back (empty: moto keeps objects in memory): the next slots upload again, and the agent
    // that failed recovers on its own.
    let back_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    server.restart();
    wait_for("uploads after the store is back", TIMEOUT, || {
        let data = data_keys(&keys(&rt, &store)?);
        let recovered = c.agents[failing]
            .status()
            .ok()
            .and_then(|s| s.snapshot?.upload)
            .is_some_and(|u| !u.failing);
        if !data.is_empty() && recovered {
            Ok(())
        } else {
            Err(format!(
                "store holds {data:?}; agent {failing} recovered: {recovered}"
            ))
        }
    });
    // The uploads since the store came back show in the metric of the agent that made them
    // (not necessarily the one that failed: its retry finds nothing left to upload when another
    // member holds the job lock and uploaded a newer snapshot).
    wait_for(
        "an upload since the store came back in metrics",
        TIMEOUT,
        || {
            let last: Vec<Option<f64>> = (0..c.agents.len())
                .map(|i| {
                    metric(
                        &c,
                        i,
                        "quorate_snapshot_upload_last_success_timestamp_seconds",
                    )
                })
                .collect();
            if last.iter().flatten().any(|&t| t >= back_at) {
                Ok(())
            } else {
                Err(format!("last successes {last:?}, store back at {back_at}"))
            }
        },
    );

    // Listing the local files needs no running agent. Any member may have held the job lock,
    // so the listing is asked of one that took snapshots.
    c.stop_all();
    let taker = (0..c.agents.len())
        .max_by_key(|&i| {
            c.agents[i]
                .log()
                .matches("snapshot taken and verified")
                .count()
        })
        .unwrap();
    let out = c.agents[taker].cli(&["snapshot", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let local = v["local"].as_array().unwrap();
    assert!(
        !local.is_empty() && local.len() <= RETAIN_LOCAL as usize,
        "{v}"
    );
    assert!(local.iter().all(|f| f["verified"] == true), "{v}");
    let server_log = server.log();
    assert!(
        server_log.contains("PUT"),
        "the server saw uploads: {server_log}"
    );
}

fn etcdctl_snapshot_status(path: &Path) {
    let out = Command::new(quorate_tests::etcdctl_bin())
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot status {path:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn test_settings(server: &S3Server, retain: usize) -> S3Settings {
    S3Settings {
        endpoint: Some(server.endpoint()),
        bucket: BUCKET.into(),
        prefix: PREFIX.into(),
        region: "us-east-1".into(),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: Secret::new(SECRET_ACCESS_KEY),
            session_token: None,
        }),
        retain,
        allow_http: true,
    }
}

/// Writes a snapshot-named file of `size` pseudo-random bytes and its manifest into `dir`;
/// returns the file's path, its manifest's path and its sha256.
fn fake_snapshot(
    dir: &Path,
    name: &SnapshotName,
    size: usize,
    sha_override: Option<&str>,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    // Written in pieces, so that the test process never holds the file (its peak memory is
    // reported around the upload).
    let path = dir.join(name.file_name().unwrap());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut x: u64 = name.time ^ 0x9e37_79b9_7f4a_7c15;
    let mut written = 0;
    while written < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let n = bytes.len().min(size - written);
        std::io::Write::write_all(&mut out, &bytes[..n]).unwrap();
        written += n;
    }
    std::io::Write::flush(&mut out).unwrap();
    drop(out);
    let sha = sha256_file(&path).unwrap();
    let manifest = Manifest {
        cluster_id: format!("{:016x}", name.cluster_id),
        revision: name.revision,
        etcd_version: "3.4.23".into(),
        ca_hash: "sha256:00".into(),
        node: "n1".into(),
        time: String::new(),
        slot: name.time,
        size: size as u64,
        sha256: sha_override.unwrap_or(&sha).to_owned(),
        encrypted: false,
        plaintext_sha256: None,
        ca_seal_secret: None,
    };
    let manifest_path = dir.join(name.manifest_name().unwrap());
    std::fs::write(&manifest_path, manifest.to_json()).unwrap();
    (path, manifest_path, sha)
}

#[test]
fn large_files_go_up_in_parts_and_come_back_whole_and_retention_is_per_cluster() {
    let server = S3Server::start("snapshot_s3 (store)", BUCKET);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = RemoteStore::new(&test_settings(&server, 2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = |time: u64, cluster_id: u64| SnapshotName {
        time,
        cluster_id,
        revision: 7,
    };

    // 20 MiB: three parts of a multipart upload.
    let peak_before = peak_rss_kib();
    let big = name(1_800_000_000, 0xaa);
    let (path, manifest, sha) = fake_snapshot(dir.path(), &big, 20 << 20, None);
    let started = std::time::Instant::now();
    let key = rt.block_on(store.upload(&path, &manifest)).unwrap();
    eprintln!(
        "20 MiB uploaded in {:?}; peak memory of the test process {} KiB before, {} KiB after",
        started.elapsed(),
        peak_before,
        peak_rss_kib()
    );
    assert_eq!(key, format!("{PREFIX}{}", big.file_name().unwrap()));
    let listed = rt.block_on(store.list()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].snapshot.size, 20 << 20);
    assert_eq!(listed[0].manifest_sha256.as_deref(), Some(sha.as_str()));
    let back = dir.path().join("back.db");
    let (size, got) = rt.block_on(store.download(&key, &back)).unwrap();
    assert_eq!((size, got.as_str()), (20 << 20, sha.as_str()));
    assert_eq!(sha256_file(&back).unwrap(), sha);
    let log = server.log();
    assert!(
        log.contains("?uploads") && log.contains("partNumber=3"),
        "a multipart upload of three parts: {log}"
    );

    // An object that does not match its manifest is refused, and nothing is left behind.
    let bad = name(1_800_000_300, 0xaa);
    let (path, manifest, _) = fake_snapshot(dir.path(), &bad, 1000, Some(&"0".repeat(64)));
    let key = rt.block_on(store.upload(&path, &manifest)).unwrap();
    let dst = dir.path().join("bad-restore.db");
    let e = rt.block_on(store.download(&key, &dst)).unwrap_err();
    assert!(e.to_string().contains("does not match its manifest"), "{e}");
    assert!(!dst.exists());
    assert!(!dir.path().join(".bad-restore.db.part").exists());

    // Retention: cluster 0xaa keeps its 2 newest, cluster 0xbb is left alone.
    let newer = name(1_800_000_600, 0xaa);
    let (path, manifest, _) = fake_snapshot(dir.path(), &newer, 1000, None);
    rt.block_on(store.upload(&path, &manifest)).unwrap();
    let other = name(1_700_000_000, 0xbb);
    let (path, manifest, _) = fake_snapshot(dir.path(), &other, 1000, None);
    rt.block_on(store.upload(&path, &manifest)).unwrap();
    let removed = rt.block_on(store.prune(0xaa, 2)).unwrap();
    assert_eq!(
        removed,
        vec![format!("{PREFIX}{}", big.file_name().unwrap())]
    );
    let left: Vec<SnapshotName> = rt
        .block_on(store.snapshots())
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, vec![other.clone(), bad, newer.clone()]);
    // retain 0 would still keep the newest.
    rt.block_on(store.prune(0xaa, 0)).unwrap();
    let left: Vec<SnapshotName> = rt
        .block_on(store.snapshots())
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, vec![other, newer]);
}

/// This process's peak resident memory (VmHWM), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}
