//! Reading a (plaintext) snapshot file before a restore: it must be complete (etcd's trailing
//! sha256 matches, see `snapshot::file::StreamVerifier`), and when it has a manifest (beside
//! it, or the store's), of the bytes the manifest records, taken by an etcd that is not newer
//! than the local one, of a cluster with this cluster's CA (a snapshot of another cluster would
//! bring a CA the agents cannot use). Yields what the plan records about it.

use std::io::Read;
use std::path::Path;

use super::check::version_ok;
use super::plan::SnapshotRef;
use super::RestoreError;
use crate::snapshot::file::{Manifest, SnapshotName, StreamVerifier};

/// Verifies the snapshot at `path` for a restore by etcd `local` in the cluster of CA `ca`
/// (`None`: any CA, for a restore onto new hosts).
pub fn inspect_snapshot(
    path: &Path,
    manifest: Option<&Manifest>,
    local: (u32, u32, u32),
    ca: Option<&str>,
) -> Result<SnapshotRef, RestoreError> {
    let io = |e: std::io::Error| RestoreError::Source {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut verifier = StreamVerifier::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]);
    }
    let (size, sha256) = verifier.finish().map_err(|e| RestoreError::Incomplete {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut revision = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(SnapshotName::parse)
        .map(|n| n.revision)
        .unwrap_or(0);
    if let Some(manifest) = manifest {
        // An encrypted snapshot's manifest records the plaintext's hash apart.
        let expected = manifest
            .plaintext_sha256
            .as_deref()
            .unwrap_or(&manifest.sha256);
        if expected != sha256 {
            return Err(RestoreError::Incomplete {
                path: path.to_owned(),
                reason: format!("its manifest records sha256 {expected} but the file has {sha256}"),
            });
        }
        version_ok(path, &manifest.etcd_version, local)?;
        if let Some(ca) = ca.filter(|ca| !manifest.ca_hash.is_empty() && manifest.ca_hash != *ca) {
            return Err(RestoreError::Refused(format!(
                "{} is a snapshot of a cluster with CA {}, but this cluster's CA is {ca}; \
                 restoring it here would bring back a CA these agents do not trust. Restore \
                 it onto new hosts instead (docs/operations.md, Restore)",
                path.display(),
                manifest.ca_hash
            )));
        }
        revision = manifest.revision;
    }
    Ok(SnapshotRef {
        sha256,
        size,
        revision,
    })
}

/// The manifest beside the snapshot file `path` (`x.db` and `x.db.age` have `x.json`), if
/// there is one.
pub fn manifest_beside(path: &Path) -> Result<Option<Manifest>, RestoreError> {
    let Some(name) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(crate::snapshot::remote::names::manifest_for)
    else {
        return Ok(None);
    };
    let manifest = path.with_file_name(name);
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RestoreError::Source {
                path: manifest.display().to_string(),
                message: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| RestoreError::Incomplete {
            path: manifest,
            reason: format!("its manifest is not readable: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::digest::{digest, SHA256};

    const CA: &str = "sha256:0101";

    /// A file with etcd's trailer: content then sha256(content).
    fn snapshot_bytes() -> Vec<u8> {
        let mut v = b"pretend bbolt content".repeat(100);
        let h = digest(&SHA256, &v);
        v.extend_from_slice(h.as_ref());
        v
    }

    #[test]
    fn complete_truncated_and_flipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("s.db");
        std::fs::write(&good, snapshot_bytes()).unwrap();
        let r = inspect_snapshot(&good, None, (3, 4, 23), Some(CA)).unwrap();
        assert_eq!(r.size, snapshot_bytes().len() as u64);
        let mut bytes = snapshot_bytes();
        bytes.truncate(bytes.len() - 10);
        let cut = dir.path().join("cut.db");
        std::fs::write(&cut, &bytes).unwrap();
        let err = inspect_snapshot(&cut, None, (3, 4, 23), Some(CA))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cut.db") && err.contains("not a complete etcd snapshot"),
            "{err}"
        );
        let mut bytes = snapshot_bytes();
        bytes[5] ^= 1;
        let flipped = dir.path().join("flip.db");
        std::fs::write(&flipped, &bytes).unwrap();
        assert!(inspect_snapshot(&flipped, None, (3, 4, 23), Some(CA)).is_err());
    }

    #[test]
    fn a_manifest_from_a_newer_etcd_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let bytes = snapshot_bytes();
        std::fs::write(&path, &bytes).unwrap();
        let manifest = Manifest {
            cluster_id: "1".into(),
            revision: 7,
            etcd_version: "3.5.16".into(),
            ca_hash: CA.into(),
            node: "a".into(),
            time: String::new(),
            slot: 0,
            size: bytes.len() as u64,
            sha256: crate::snapshot::file::sha256_hex(&bytes),
            encrypted: false,
            plaintext_sha256: None,
            ca_seal_secret: None,
        };
        std::fs::write(dir.path().join("s.json"), manifest.to_json()).unwrap();
        let read = manifest_beside(&path).unwrap();
        assert_eq!(read.as_ref().map(|m| m.revision), Some(7));
        let manifest = read.as_ref();
        let err = inspect_snapshot(&path, manifest, (3, 4, 23), Some(CA))
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcd 3.5.16"), "{err}");
        assert_eq!(
            inspect_snapshot(&path, manifest, (3, 5, 16), Some(CA))
                .unwrap()
                .revision,
            7
        );
        let err = inspect_snapshot(&path, manifest, (3, 5, 16), Some("sha256:0202"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CA sha256:0101") && err.contains("new hosts"),
            "{err}"
        );
    }
}
