//! Snapshot files: their names, etcd's integrity hash, their manifests, and retention.
//!
//! etcd 3.4 streams a snapshot as the backend file followed by the sha256 of that content
//! (the last 32 bytes), so a snapshot is verified here, without etcdctl, by hashing all but
//! its last 32 bytes as it streams in ([`StreamVerifier`]) and comparing. A name carries the cluster ID (hex), the slot's UTC time and
//! the revision, `quorate-<cluster id>-<YYYYmmddTHHMMSSZ>-r<revision>.db`, so files of one
//! directory sort by time and files of different clusters never mix; the manifest next to
//! it (`<same stem>.json`) says what it is without opening it. An encrypted snapshot is named
//! `<same stem>.db.age` (see [`super::crypt`]); retention treats both forms alike.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

/// Length of etcd's integrity hash at the end of a snapshot file.
pub const HASH_LEN: usize = 32;

/// Prefix of every snapshot file name.
pub const PREFIX: &str = "quorate-";
/// Extension of a snapshot file.
pub const DB_EXT: &str = ".db";
/// Extension of an encrypted snapshot file (an age file of the `.db`).
pub const DB_AGE_EXT: &str = ".db.age";
/// Extension of its manifest.
pub const MANIFEST_EXT: &str = ".json";

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// What a snapshot file's name says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotName {
    /// The slot's time, unix seconds.
    pub time: u64,
    /// The cluster ID.
    pub cluster_id: u64,
    /// The revision the snapshot was taken at.
    pub revision: i64,
}

impl SnapshotName {
    /// The file name, `quorate-<cluster id hex>-<YYYYmmddTHHMMSSZ>-r<revision>.db`; None for a
    /// time chrono cannot represent.
    pub fn file_name(&self) -> Option<String> {
        let time = chrono::DateTime::from_timestamp(i64::try_from(self.time).ok()?, 0)?;
        Some(format!(
            "{PREFIX}{:016x}-{}-r{}{DB_EXT}",
            self.cluster_id,
            time.format(TIME_FORMAT),
            self.revision
        ))
    }

    /// The file name of the encrypted form, `<same stem>.db.age`.
    pub fn encrypted_file_name(&self) -> Option<String> {
        Some(format!("{}{}", self.file_name()?, super::crypt::AGE_EXT))
    }

    /// The file name, encrypted or not.
    pub fn file_name_for(&self, encrypted: bool) -> Option<String> {
        if encrypted {
            self.encrypted_file_name()
        } else {
            self.file_name()
        }
    }

    /// The manifest's file name next to it.
    pub fn manifest_name(&self) -> Option<String> {
        let db = self.file_name()?;
        Some(format!("{}{MANIFEST_EXT}", db.strip_suffix(DB_EXT)?))
    }

    /// Reads a snapshot file name, plain (`.db`) or encrypted (`.db.age`); None for any other
    /// file (temporary files included).
    pub fn parse(file_name: &str) -> Option<Self> {
        Self::parse_file(file_name).map(|(name, _)| name)
    }

    /// Like [`Self::parse`], and says whether the name is the encrypted form.
    pub fn parse_file(file_name: &str) -> Option<(Self, bool)> {
        let (stem, encrypted) = match file_name.strip_suffix(DB_AGE_EXT) {
            Some(stem) => (stem, true),
            None => (file_name.strip_suffix(DB_EXT)?, false),
        };
        Self::parse_stem(stem.strip_prefix(PREFIX)?).map(|n| (n, encrypted))
    }

    fn parse_stem(stem: &str) -> Option<Self> {
        let mut parts = stem.splitn(3, '-');
        let cluster = parts.next()?;
        let time = parts.next()?;
        let revision = parts.next()?.strip_prefix('r')?;
        if cluster.len() != 16 {
            return None;
        }
        let cluster_id = u64::from_str_radix(cluster, 16).ok()?;
        let time = chrono::NaiveDateTime::parse_from_str(time, TIME_FORMAT).ok()?;
        let time = u64::try_from(time.and_utc().timestamp()).ok()?;
        let revision = revision.parse().ok().filter(|r: &i64| *r >= 0)?;
        Some(Self {
            time,
            cluster_id,
            revision,
        })
    }
}

/// Why a snapshot's content is not what etcd sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Shorter than its hash.
    #[error("the snapshot is {len} bytes, too short to carry etcd's {HASH_LEN}-byte sha256")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The hash does not match.
    #[error("the snapshot's content does not match etcd's sha256 at its end (expected {expected}, computed {computed}): the stream was cut or corrupted")]
    Mismatch {
        /// The hash at its end, hex.
        expected: String,
        /// The hash of its content, hex.
        computed: String,
    },
}

/// Checks etcd's integrity hash: the last [`HASH_LEN`] bytes are the sha256 of the rest.
pub fn verify_integrity(content: &[u8]) -> Result<(), VerifyError> {
    let split = content
        .len()
        .checked_sub(HASH_LEN)
        .ok_or(VerifyError::TooShort { len: content.len() })?;
    let (data, expected) = content.split_at(split);
    let computed = digest(&SHA256, data);
    if computed.as_ref() == expected {
        Ok(())
    } else {
        Err(VerifyError::Mismatch {
            expected: hex::encode(expected),
            computed: hex::encode(computed.as_ref()),
        })
    }
}

/// Checks etcd's integrity hash while the snapshot streams in, without holding it in memory:
/// the content hash runs [`HASH_LEN`] bytes behind, so at the end the held-back bytes are
/// etcd's hash. It also hashes the whole stream, for the manifest.
pub struct StreamVerifier {
    content: ring::digest::Context,
    whole: ring::digest::Context,
    tail: Vec<u8>,
    len: u64,
}

impl Default for StreamVerifier {
    fn default() -> Self {
        Self {
            content: ring::digest::Context::new(&SHA256),
            whole: ring::digest::Context::new(&SHA256),
            tail: Vec::with_capacity(2 * HASH_LEN),
            len: 0,
        }
    }
}

impl StreamVerifier {
    /// Feeds the next piece of the stream.
    pub fn update(&mut self, piece: &[u8]) {
        self.whole.update(piece);
        self.len += piece.len() as u64;
        if piece.len() >= HASH_LEN {
            self.content.update(&self.tail);
            let (body, tail) = piece.split_at(piece.len() - HASH_LEN);
            self.content.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(piece);
            let spill = self.tail.len().saturating_sub(HASH_LEN);
            self.content.update(&self.tail[..spill]);
            self.tail.drain(..spill);
        }
    }

    /// The stream's length and whole-stream sha256 (hex), if etcd's hash matched.
    pub fn finish(self) -> Result<(u64, String), VerifyError> {
        if self.tail.len() < HASH_LEN {
            return Err(VerifyError::TooShort {
                len: self.len as usize,
            });
        }
        let computed = self.content.finish();
        if computed.as_ref() != self.tail.as_slice() {
            return Err(VerifyError::Mismatch {
                expected: hex::encode(&self.tail),
                computed: hex::encode(computed.as_ref()),
            });
        }
        Ok((self.len, hex::encode(self.whole.finish().as_ref())))
    }
}

/// The sha256 of a whole file's content, hex (the manifest's `sha256`).
pub fn sha256_hex(content: &[u8]) -> String {
    hex::encode(digest(&SHA256, content).as_ref())
}

/// The manifest written next to a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cluster ID, hex.
    pub cluster_id: String,
    /// The revision the snapshot was taken at.
    pub revision: i64,
    /// The version of the etcd that took it.
    pub etcd_version: String,
    /// The hash of the cluster's CA certificate.
    pub ca_hash: String,
    /// The node whose member it was taken from.
    pub node: String,
    /// The slot's time, RFC 3339 UTC.
    pub time: String,
    /// The slot's time, unix seconds.
    pub slot: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// The sha256 of the whole file, hex.
    pub sha256: String,
    /// Whether the file is encrypted (an age file; see [`super::crypt`]).
    #[serde(default)]
    pub encrypted: bool,
    /// The sha256 of the snapshot as etcd sent it (hex); the same as `sha256` when not
    /// encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_sha256: Option<String>,
    /// The CA seal secret of the member that took it, sealed with the join token's snapshot
    /// key: a restore onto new hosts opens the CA in the snapshot with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_seal_secret: Option<crate::issuer::seal_secret::SealedCopy>,
}

impl Manifest {
    /// The manifest's JSON, pretty-printed.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// An RFC 3339 UTC time for a manifest; "" for a time chrono cannot represent.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The snapshot files of a directory listing (other files ignored), oldest first.
pub fn snapshots_in<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(SnapshotName, String)> {
    let mut found: Vec<(SnapshotName, String)> = names
        .into_iter()
        .filter_map(|n| SnapshotName::parse(n).map(|s| (s, n.to_owned())))
        .collect();
    found.sort();
    found
}

/// Which of `files` (every file here is verified: only those take a final name) retention
/// removes: the oldest beyond `retain`. The newest is never removed, even with `retain` 0.
pub fn to_prune(files: &[SnapshotName], retain: usize) -> Vec<SnapshotName> {
    let mut sorted = files.to_vec();
    sorted.sort();
    sorted.dedup();
    let keep = retain.max(1);
    let drop = sorted.len().saturating_sub(keep);
    sorted.truncate(drop);
    sorted
}

/// Whether `path` names a snapshot file.
pub fn is_snapshot(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| SnapshotName::parse(n).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(time: u64, revision: i64) -> SnapshotName {
        SnapshotName {
            time,
            cluster_id: 0xdead_beef_0012_3456,
            revision,
        }
    }

    #[test]
    fn names_round_trip_and_carry_cluster_time_and_revision() {
        let n = name(1_700_000_000, 42);
        let file = n.file_name().unwrap();
        assert_eq!(file, "quorate-deadbeef00123456-20231114T221320Z-r42.db");
        assert_eq!(
            n.manifest_name().unwrap(),
            "quorate-deadbeef00123456-20231114T221320Z-r42.json"
        );
        assert_eq!(SnapshotName::parse(&file), Some(n.clone()));
        assert_eq!(SnapshotName::parse_file(&file), Some((n.clone(), false)));
        let sealed = n.encrypted_file_name().unwrap();
        assert_eq!(
            sealed,
            "quorate-deadbeef00123456-20231114T221320Z-r42.db.age"
        );
        assert_eq!(n.file_name_for(true).as_ref(), Some(&sealed));
        assert_eq!(SnapshotName::parse_file(&sealed), Some((n.clone(), true)));
        let small = SnapshotName {
            cluster_id: 1,
            ..name(0, 0)
        };
        assert_eq!(
            SnapshotName::parse(&small.file_name().unwrap()),
            Some(small)
        );
    }

    #[test]
    fn other_files_are_not_snapshots() {
        for other in [
            "quorate-deadbeef00123456-20231114T221320Z-r42.json",
            ".quorate-deadbeef00123456-20231114T221320Z-r42.db.tmp",
            "quorate-deadbeef00123456-20231114T221320Z-r42.db.tmp",
            "quorate-dead-20231114T221320Z-r42.db",
            "quorate-deadbeef00123456-2023-11-14-r42.db",
            "quorate-deadbeef00123456-20231114T221320Z-42.db",
            "quorate-deadbeef00123456-20231114T221320Z-r-1.db",
            "member.db",
        ] {
            assert_eq!(SnapshotName::parse(other), None, "{other}");
            assert!(!is_snapshot(Path::new(other)), "{other}");
        }
        assert!(is_snapshot(Path::new(
            "/x/quorate-deadbeef00123456-20231114T221320Z-r42.db"
        )));
        assert!(is_snapshot(Path::new(
            "/x/quorate-deadbeef00123456-20231114T221320Z-r42.db.age"
        )));
        for other in [
            "quorate-deadbeef00123456-20231114T221320Z-r42.age",
            "quorate-deadbeef00123456-20231114T221320Z-r42.db.age.tmp",
            ".quorate-snapshot-1.db.age.tmp",
        ] {
            assert_eq!(SnapshotName::parse(other), None, "{other}");
        }
    }

    fn with_hash(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.extend_from_slice(digest(&SHA256, data).as_ref());
        v
    }

    #[test]
    fn integrity_is_the_sha256_of_all_but_the_last_32_bytes() {
        let good = with_hash(b"bolt pages");
        assert_eq!(verify_integrity(&good), Ok(()));
        assert_eq!(verify_integrity(&with_hash(b"")), Ok(()));
        let mut cut = good.clone();
        cut.pop();
        assert!(matches!(
            verify_integrity(&cut),
            Err(VerifyError::Mismatch { .. })
        ));
        let mut flipped = good;
        flipped[0] ^= 1;
        assert!(matches!(
            verify_integrity(&flipped),
            Err(VerifyError::Mismatch { .. })
        ));
        assert_eq!(
            verify_integrity(&[0; 31]),
            Err(VerifyError::TooShort { len: 31 })
        );
    }

    #[test]
    fn the_stream_verifier_agrees_with_the_whole_file_check_for_any_chunking() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let good = with_hash(&data);
        let mut bad = good.clone();
        bad[100] ^= 0x40;
        for chunk in [1, 5, 31, 32, 33, 64, 1000, 10_000] {
            let mut v = StreamVerifier::default();
            for piece in good.chunks(chunk) {
                v.update(piece);
            }
            assert_eq!(
                v.finish(),
                Ok((good.len() as u64, sha256_hex(&good))),
                "chunk {chunk}"
            );
            let mut v = StreamVerifier::default();
            for piece in bad.chunks(chunk) {
                v.update(piece);
            }
            assert!(
                matches!(v.finish(), Err(VerifyError::Mismatch { .. })),
                "chunk {chunk}"
            );
        }
        let mut short = StreamVerifier::default();
        short.update(&[0; 20]);
        assert_eq!(short.finish(), Err(VerifyError::TooShort { len: 20 }));
        let mut empty = StreamVerifier::default();
        empty.update(&with_hash(b""));
        assert!(empty.finish().is_ok());
    }

    #[test]
    fn retention_drops_the_oldest_beyond_retain_and_never_the_newest() {
        let files = vec![name(300, 3), name(100, 1), name(200, 2), name(400, 4)];
        assert_eq!(to_prune(&files, 2), vec![name(100, 1), name(200, 2)]);
        assert_eq!(to_prune(&files, 4), vec![]);
        assert_eq!(to_prune(&files, 28), vec![]);
        // retain 0 is refused by the config; even so the newest stays.
        assert_eq!(
            to_prune(&files, 0),
            vec![name(100, 1), name(200, 2), name(300, 3)]
        );
        assert_eq!(to_prune(&files, 1).len(), 3);
        assert!(!to_prune(&files, 1).contains(&name(400, 4)));
        assert_eq!(to_prune(&[], 1), vec![]);
    }

    #[test]
    fn a_listing_yields_snapshots_oldest_first() {
        let a = name(200, 2).file_name().unwrap();
        let b = name(100, 1).file_name().unwrap();
        let c = name(300, 3).encrypted_file_name().unwrap();
        let listed = snapshots_in([c.as_str(), a.as_str(), "notes.txt", b.as_str()]);
        assert_eq!(
            listed,
            vec![
                (name(100, 1), b.clone()),
                (name(200, 2), a.clone()),
                (name(300, 3), c.clone())
            ]
        );
        let all: Vec<SnapshotName> = listed.into_iter().map(|(n, _)| n).collect();
        assert_eq!(to_prune(&all, 1), vec![name(100, 1), name(200, 2)]);
    }

    #[test]
    fn manifests_are_json_with_every_field() {
        let m = Manifest {
            cluster_id: "deadbeef00123456".into(),
            revision: 42,
            etcd_version: "3.4.30".into(),
            ca_hash: "ab12".into(),
            node: "n1".into(),
            time: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            slot: 1_700_000_000,
            size: 20_512,
            sha256: sha256_hex(b""),
            encrypted: false,
            plaintext_sha256: None,
            ca_seal_secret: None,
        };
        assert_eq!(m.time, "2023-11-14T22:13:20Z");
        assert_eq!(
            m.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let back: Manifest = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(back, m);
    }
}
