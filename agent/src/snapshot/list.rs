//! What `quorate snapshot list` shows: the local snapshot directory, each file checked
//! against its manifest (size and sha256), and the store's snapshots when `[snapshot.s3]` is
//! set. Reading the directory is here; rendering is pure and tested on its own.

use std::fmt::Write;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::file::{rfc3339, Manifest, SnapshotName};
use super::remote::names::{self, ObjectKind};
use super::remote::RemoteEntry;
use crate::defrag::human;

/// A local snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalEntry {
    pub file: String,
    /// The slot's time, RFC 3339.
    pub time: String,
    pub cluster_id: String,
    pub revision: i64,
    pub size: u64,
    /// The manifest is there and the file's size and sha256 match it.
    pub verified: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A snapshot in the store, for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteLine {
    pub key: String,
    pub time: String,
    pub cluster_id: String,
    pub revision: i64,
    pub size: u64,
    /// The manifest is there with a sha256.
    pub manifest: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl From<&RemoteEntry> for RemoteLine {
    fn from(e: &RemoteEntry) -> Self {
        let n = &e.snapshot.name;
        Self {
            key: e.snapshot.key.clone(),
            time: slot_time(n),
            cluster_id: format!("{:016x}", n.cluster_id),
            revision: n.revision,
            size: e.snapshot.size,
            manifest: e.manifest_sha256.is_some(),
            sha256: e.manifest_sha256.clone(),
            problem: e.manifest_problem.clone(),
        }
    }
}

fn slot_time(n: &SnapshotName) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(n.time))
}

/// The snapshot files of `dir` (any data suffix), oldest first, each checked against its
/// manifest. A missing directory is an empty list.
pub fn local(dir: &Path) -> std::io::Result<Vec<LocalEntry>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<(SnapshotName, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| match names::classify(&f) {
            Some(ObjectKind::Data { name, .. }) => Some((name, f)),
            _ => None,
        })
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|(name, file)| {
            let path = dir.join(&file);
            let size = std::fs::metadata(&path)
                .map(|m| m.len())
                .unwrap_or_default();
            let problem = check(&path, &file, size).err();
            LocalEntry {
                time: slot_time(&name),
                cluster_id: format!("{:016x}", name.cluster_id),
                revision: name.revision,
                size,
                verified: problem.is_none(),
                problem,
                file,
            }
        })
        .collect())
}

/// Checks a file against its manifest.
fn check(path: &Path, file: &str, size: u64) -> Result<(), String> {
    let manifest_name = names::manifest_for(file).ok_or("no manifest name")?;
    let manifest_path = path.with_file_name(&manifest_name);
    let text = match std::fs::read(&manifest_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no manifest ({manifest_name})"))
        }
        Err(e) => return Err(format!("cannot read {manifest_name}: {e}")),
    };
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{manifest_name} is not a valid manifest: {e}"))?;
    if manifest.size != size {
        return Err(format!(
            "{size} bytes, its manifest says {}: truncated or replaced",
            manifest.size
        ));
    }
    let sha = sha256_file(path).map_err(|e| format!("cannot read it: {e}"))?;
    if sha != manifest.sha256 {
        return Err(format!(
            "sha256 {sha} differs from its manifest's {}: the file is corrupted",
            manifest.sha256
        ));
    }
    Ok(())
}

/// The sha256 of a file, hex, read in pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finish().as_ref()))
}

/// The remote part of the listing: not configured, listed, or why it could not be.
pub enum RemoteListing<'a> {
    Off,
    Listed {
        location: &'a str,
        entries: &'a [RemoteEntry],
    },
    Failed {
        location: &'a str,
        error: String,
    },
}

/// The text of `quorate snapshot list`.
pub fn render(dir: &Path, local: &[LocalEntry], remote: &RemoteListing<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Local snapshots ({}):", dir.display());
    if local.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let _ = writeln!(
            out,
            "  {:<20}  {:>10}  {:>10}  {:<12}  FILE",
            "TIME", "REVISION", "SIZE", "VERIFIED"
        );
        for e in local {
            let _ = writeln!(
                out,
                "  {:<20}  {:>10}  {:>10}  {:<12}  {}",
                e.time,
                e.revision,
                human(e.size),
                if e.verified { "yes" } else { "NOT VERIFIED" },
                e.file
            );
            if let Some(why) = &e.problem {
                let _ = writeln!(out, "      why: {why}");
            }
        }
    }
    match remote {
        RemoteListing::Off => {
            let _ = writeln!(out, "\nRemote snapshots: none configured ([snapshot.s3])");
        }
        RemoteListing::Failed { location, error } => {
            let _ = writeln!(out, "\nRemote snapshots ({location}): cannot list: {error}");
        }
        RemoteListing::Listed { location, entries } => {
            let _ = writeln!(out, "\nRemote snapshots ({location}):");
            if entries.is_empty() {
                let _ = writeln!(out, "  none");
                return out;
            }
            let _ = writeln!(
                out,
                "  {:<20}  {:>10}  {:>10}  {:<12}  KEY",
                "TIME", "REVISION", "SIZE", "MANIFEST"
            );
            for e in entries.iter() {
                let line = RemoteLine::from(e);
                let _ = writeln!(
                    out,
                    "  {:<20}  {:>10}  {:>10}  {:<12}  {}",
                    line.time,
                    line.revision,
                    human(line.size),
                    if line.manifest { "yes" } else { "MISSING" },
                    line.key
                );
                if let Some(why) = &line.problem {
                    let _ = writeln!(out, "      why: {why}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::remote::RemoteSnapshot;

    fn write_snapshot(dir: &Path, time: u64, content: &[u8], manifest_sha: Option<&str>) -> String {
        let name = SnapshotName {
            time,
            cluster_id: 0xab,
            revision: 42,
        };
        let file = name.file_name().unwrap();
        std::fs::write(dir.join(&file), content).unwrap();
        if let Some(sha) = manifest_sha {
            let m = Manifest {
                cluster_id: "00000000000000ab".into(),
                revision: 42,
                etcd_version: "3.4.23".into(),
                ca_hash: "sha256:00".into(),
                node: "n1".into(),
                time: rfc3339(UNIX_EPOCH + Duration::from_secs(time)),
                slot: time,
                size: content.len() as u64,
                sha256: sha.into(),
                encrypted: false,
                plaintext_sha256: None,
                ca_seal_secret: None,
            };
            std::fs::write(dir.join(name.manifest_name().unwrap()), m.to_json()).unwrap();
        }
        file
    }

    #[test]
    fn local_files_are_verified_against_their_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"good snapshot".as_slice();
        write_snapshot(
            dir.path(),
            1_700_000_000,
            good,
            Some(&super::super::file::sha256_hex(good)),
        );
        write_snapshot(dir.path(), 1_700_000_300, b"bad", Some(&"0".repeat(64)));
        write_snapshot(dir.path(), 1_700_000_600, b"lonely", None);
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let list = local(dir.path()).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[0].verified, "{:?}", list[0]);
        assert_eq!(list[0].time, "2023-11-14T22:13:20Z");
        assert!(!list[1].verified);
        assert!(
            list[1].problem.as_deref().unwrap().contains("corrupted"),
            "{:?}",
            list[1]
        );
        assert!(list[2].problem.as_deref().unwrap().contains("no manifest"));
        let text = render(dir.path(), &list, &RemoteListing::Off);
        assert!(text.contains("NOT VERIFIED"), "{text}");
        assert!(text.contains("why: no manifest"), "{text}");
        assert!(text.contains("none configured"), "{text}");
        assert!(local(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn remote_entries_show_whether_their_manifest_is_there() {
        let name = SnapshotName {
            time: 1_700_000_000,
            cluster_id: 0xab,
            revision: 42,
        };
        let entries = vec![RemoteEntry {
            snapshot: RemoteSnapshot {
                key: format!("quorate/{}", name.file_name().unwrap()),
                name,
                size: 2048,
                modified: 1_700_000_005,
                manifest_key: None,
            },
            manifest_sha256: None,
            manifest_problem: Some("no manifest".into()),
        }];
        let text = render(
            Path::new("/d"),
            &[],
            &RemoteListing::Listed {
                location: "s3://b/quorate/",
                entries: &entries,
            },
        );
        assert!(
            text.contains("Remote snapshots (s3://b/quorate/):"),
            "{text}"
        );
        assert!(text.contains("MISSING"), "{text}");
        assert!(text.contains("2.0 KiB"), "{text}");
        let failed = render(
            Path::new("/d"),
            &[],
            &RemoteListing::Failed {
                location: "s3://b/quorate/",
                error: "connection refused".into(),
            },
        );
        assert!(
            failed.contains("cannot list: connection refused"),
            "{failed}"
        );
    }
}
