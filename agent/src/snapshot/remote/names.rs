//! The pure side of the store: `s3://bucket/key` sources, object keys of snapshot files and
//! their manifests, grouping a listing into snapshots, and which ones remote retention removes.
//!
//! Keys are `<prefix><file name>`, the same names as in the local snapshot directory. A
//! snapshot's data object may end in `.db` or any later suffix (an encrypted `.db.age`): the
//! part before the first '.' names the snapshot, and `<that>.json` is its manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::snapshot::file::{SnapshotName, DB_EXT, MANIFEST_EXT};

/// A snapshot in a store, named by `s3://bucket/key` (what `restore` and `restore_from` take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Source {
    pub bucket: String,
    pub key: String,
}

/// Why a source is not `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_text:?} is not an S3 source: {problem}. Fix: write it as s3://BUCKET/KEY, e.g. s3://etcd-backups/quorate/quorate-<cluster>-<time>-r<revision>.db (`quorate snapshot list` shows the keys)")]
pub struct S3SourceError {
    pub source_text: String,
    pub problem: &'static str,
}

impl FromStr for S3Source {
    type Err = S3SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem| S3SourceError {
            source_text: s.to_owned(),
            problem,
        };
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| fail("it does not start with s3://"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| fail("it names a bucket but no key"))?;
        if bucket.is_empty() {
            return Err(fail("the bucket is empty"));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(fail("the key is empty or names a folder, not an object"));
        }
        if key.contains("//") || key.split('/').any(|p| p == "." || p == "..") {
            return Err(fail("the key has an empty, '.' or '..' part"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for S3Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// What an object's file name (the key's last part) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectKind {
    /// A snapshot's data; the suffix after the stem (".db", ".db.age").
    Data { name: SnapshotName, suffix: String },
    /// A snapshot's manifest.
    Manifest { name: SnapshotName },
}

/// Reads an object's file name; None for anything that is not quorate's.
pub fn classify(file_name: &str) -> Option<ObjectKind> {
    let dot = file_name.find('.')?;
    let (stem, suffix) = file_name.split_at(dot);
    let name = SnapshotName::parse(&format!("{stem}{DB_EXT}"))?;
    if suffix == MANIFEST_EXT {
        Some(ObjectKind::Manifest { name })
    } else if suffix.len() > 1 && !suffix.ends_with(".tmp") && !suffix.ends_with(".part") {
        Some(ObjectKind::Data {
            name,
            suffix: suffix.to_owned(),
        })
    } else {
        None
    }
}

/// The manifest's file name for a snapshot file name (`x.db`, `x.db.age` -> `x.json`).
pub fn manifest_for(file_name: &str) -> Option<String> {
    let stem = file_name.split('.').next().filter(|s| !s.is_empty())?;
    (stem.len() < file_name.len()).then(|| format!("{stem}{MANIFEST_EXT}"))
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The full key.
    pub key: String,
    pub size: u64,
    /// Last modified, unix seconds.
    pub modified: i64,
}

/// A snapshot in the store: its data object and whether its manifest is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSnapshot {
    pub name: SnapshotName,
    /// The data object's key.
    pub key: String,
    pub size: u64,
    /// Uploaded at, unix seconds.
    pub modified: i64,
    /// The manifest's key, when it is there.
    pub manifest_key: Option<String>,
}

/// Groups a listing of `prefix` into snapshots, oldest first (objects outside the prefix's
/// own level and other files are ignored; a manifest without its data is no snapshot).
pub fn group(prefix: &str, listed: &[Listed]) -> Vec<RemoteSnapshot> {
    let mut manifests = BTreeMap::new();
    let mut data = Vec::new();
    for object in listed {
        let Some(file) = object.key.strip_prefix(prefix) else {
            continue;
        };
        if file.contains('/') {
            continue;
        }
        match classify(file) {
            Some(ObjectKind::Manifest { name }) => {
                manifests.insert(name, object.key.clone());
            }
            Some(ObjectKind::Data { name, .. }) => data.push((name, object)),
            None => {}
        }
    }
    let mut out: Vec<RemoteSnapshot> = data
        .into_iter()
        .map(|(name, object)| RemoteSnapshot {
            manifest_key: manifests.get(&name).cloned(),
            name,
            key: object.key.clone(),
            size: object.size,
            modified: object.modified,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.key.cmp(&b.key)));
    out
}

/// Which snapshots of cluster `cluster_id` remote retention removes: the oldest beyond
/// `retain`; never the newest, never another cluster's.
pub fn to_prune(
    snapshots: &[RemoteSnapshot],
    cluster_id: u64,
    retain: usize,
) -> Vec<RemoteSnapshot> {
    let mut ours: Vec<&RemoteSnapshot> = snapshots
        .iter()
        .filter(|s| s.name.cluster_id == cluster_id)
        .collect();
    ours.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.key.cmp(&b.key)));
    let drop = ours.len().saturating_sub(retain.max(1));
    ours.into_iter().take(drop).cloned().collect()
}

/// Which local snapshot files to upload after taking `just_taken`: it, and the newest other
/// local file not in the store when that is newer than the store's newest of the cluster (a
/// slot whose upload failed). Oldest first.
pub fn to_upload(
    local: &[(SnapshotName, String)],
    remote: &[RemoteSnapshot],
    just_taken: Option<&str>,
) -> Vec<String> {
    let uploaded = |n: &SnapshotName| remote.iter().any(|r| &r.name == n);
    let mut out = Vec::new();
    let taken = just_taken.and_then(|t| local.iter().find(|(_, f)| f == t));
    let cluster = taken.map(|(n, _)| n.cluster_id);
    let newest_remote = remote
        .iter()
        .filter(|r| cluster.is_none_or(|c| r.name.cluster_id == c))
        .map(|r| &r.name)
        .max();
    let missed = local
        .iter()
        .filter(|(n, f)| Some(f.as_str()) != just_taken && !uploaded(n))
        .filter(|(n, _)| cluster.is_none_or(|c| n.cluster_id == c))
        .filter(|(n, _)| newest_remote.is_none_or(|r| n > r))
        .max();
    if let Some((_, f)) = missed {
        out.push(f.clone());
    }
    if let Some((n, f)) = taken {
        if !uploaded(n) {
            out.push(f.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(time: u64, cluster_id: u64) -> SnapshotName {
        SnapshotName {
            time,
            cluster_id,
            revision: time as i64 / 10,
        }
    }

    fn file(n: &SnapshotName) -> String {
        n.file_name().unwrap()
    }

    fn remote(n: &SnapshotName) -> RemoteSnapshot {
        RemoteSnapshot {
            name: n.clone(),
            key: format!("quorate/{}", file(n)),
            size: 10,
            modified: n.time as i64,
            manifest_key: Some(format!("quorate/{}", n.manifest_name().unwrap())),
        }
    }

    #[test]
    fn s3_sources_parse_and_print() {
        let s: S3Source = "s3://etcd-backups/quorate/x.db".parse().unwrap();
        assert_eq!(s.bucket, "etcd-backups");
        assert_eq!(s.key, "quorate/x.db");
        assert_eq!(s.to_string(), "s3://etcd-backups/quorate/x.db");
        let s: S3Source = "s3://b12/x.db".parse().unwrap();
        assert_eq!((s.bucket.as_str(), s.key.as_str()), ("b12", "x.db"));
        for (bad, why) in [
            ("/tmp/x.db", "does not start with s3://"),
            ("S3://b/x", "does not start with s3://"),
            ("s3://bucket", "no key"),
            ("s3:///x.db", "bucket is empty"),
            ("s3://bucket/", "key is empty"),
            ("s3://bucket/folder/", "names a folder"),
            ("s3://bucket/a//b.db", "empty, '.' or '..'"),
            ("s3://bucket/../b.db", "empty, '.' or '..'"),
        ] {
            let e = bad.parse::<S3Source>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains("s3://BUCKET/KEY"), "{e}");
        }
    }

    #[test]
    fn objects_are_data_or_manifests_whatever_the_data_suffix() {
        let n = name(1_700_000_000, 0xab);
        let db = file(&n);
        let stem = db.strip_suffix(".db").unwrap();
        assert_eq!(
            classify(&db),
            Some(ObjectKind::Data {
                name: n.clone(),
                suffix: ".db".into()
            })
        );
        assert_eq!(
            classify(&format!("{stem}.db.age")),
            Some(ObjectKind::Data {
                name: n.clone(),
                suffix: ".db.age".into()
            })
        );
        assert_eq!(
            classify(&format!("{stem}.json")),
            Some(ObjectKind::Manifest { name: n.clone() })
        );
        for other in [
            format!("{stem}.db.tmp"),
            format!("{stem}.db.part"),
            stem.to_owned(),
            format!("{stem}."),
            "notes.txt".into(),
            "quorate-zz-20231114T221320Z-r1.db".into(),
        ] {
            assert_eq!(classify(&other), None, "{other}");
        }
        assert_eq!(manifest_for(&db), Some(format!("{stem}.json")));
        assert_eq!(
            manifest_for(&format!("{stem}.db.age")),
            Some(format!("{stem}.json"))
        );
        assert_eq!(manifest_for(stem), None);
    }

    #[test]
    fn a_listing_groups_data_with_its_manifest() {
        let (a, b) = (name(1_700_000_000, 1), name(1_700_000_300, 1));
        let listed = vec![
            Listed {
                key: format!("quorate/{}", file(&b)),
                size: 7,
                modified: 5,
            },
            Listed {
                key: format!("quorate/{}", a.manifest_name().unwrap()),
                size: 1,
                modified: 4,
            },
            Listed {
                key: format!("quorate/{}", file(&a)),
                size: 9,
                modified: 3,
            },
            // Not at the prefix's own level, not quorate's, a manifest alone.
            Listed {
                key: format!("quorate/old/{}", file(&a)),
                size: 9,
                modified: 3,
            },
            Listed {
                key: "quorate/README".into(),
                size: 9,
                modified: 3,
            },
            Listed {
                key: format!("quorate/{}", name(1, 1).manifest_name().unwrap()),
                size: 1,
                modified: 1,
            },
        ];
        let g = group("quorate/", &listed);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].name.clone(), g[0].size), (a.clone(), 9));
        assert_eq!(
            g[0].manifest_key.as_deref(),
            Some(format!("quorate/{}", a.manifest_name().unwrap()).as_str())
        );
        assert_eq!((g[1].name.clone(), g[1].manifest_key.clone()), (b, None));
        // An empty prefix lists the bucket's top level.
        let top = group(
            "",
            &[Listed {
                key: file(&a),
                size: 1,
                modified: 1,
            }],
        );
        assert_eq!(top.len(), 1);
    }

    #[test]
    fn remote_retention_drops_the_oldest_of_this_cluster_and_never_the_newest() {
        let ours: Vec<RemoteSnapshot> = (0..5).map(|i| remote(&name(1000 + i * 300, 7))).collect();
        let theirs = remote(&name(100, 8));
        let mut all = ours.clone();
        all.insert(2, theirs.clone());
        let pruned = to_prune(&all, 7, 2);
        assert_eq!(pruned, ours[..3].to_vec());
        assert!(!pruned.contains(&theirs));
        assert_eq!(to_prune(&all, 7, 5), vec![]);
        assert_eq!(to_prune(&all, 7, 9), vec![]);
        // retain 0 still keeps the newest.
        assert_eq!(to_prune(&all, 7, 0), ours[..4].to_vec());
        assert_eq!(to_prune(&all, 8, 1), vec![]);
        assert_eq!(to_prune(&[], 7, 1), vec![]);
    }

    #[test]
    fn after_a_failed_upload_the_newest_missed_file_goes_too() {
        let n: Vec<SnapshotName> = (0..4).map(|i| name(1000 + i * 300, 7)).collect();
        let local: Vec<(SnapshotName, String)> = n.iter().map(|x| (x.clone(), file(x))).collect();
        let taken = file(&n[3]);
        // All earlier ones uploaded: only the new one.
        let remote_all: Vec<RemoteSnapshot> = n[..3].iter().map(remote).collect();
        assert_eq!(
            to_upload(&local, &remote_all, Some(&taken)),
            vec![taken.clone()]
        );
        // n[1] and n[2] were missed: the newest missed one (n[2]) goes first, then the new one.
        let remote_some = vec![remote(&n[0])];
        assert_eq!(
            to_upload(&local, &remote_some, Some(&taken)),
            vec![file(&n[2]), taken.clone()]
        );
        // A missed file older than the store's newest is not worth it.
        let remote_newer = vec![remote(&n[2])];
        assert_eq!(
            to_upload(&local, &remote_newer, Some(&taken)),
            vec![taken.clone()]
        );
        // A retry without a new snapshot: the newest not uploaded.
        assert_eq!(to_upload(&local, &remote_some, None), vec![file(&n[3])]);
        // Already there: nothing.
        let remote_every: Vec<RemoteSnapshot> = n.iter().map(remote).collect();
        assert!(to_upload(&local, &remote_every, Some(&taken)).is_empty());
        assert!(to_upload(&local, &remote_every, None).is_empty());
    }
}
