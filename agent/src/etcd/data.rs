//! What the etcd data directory says about this host: whether it already holds a member. This
//! is the fact behind "never two clusters": a data dir with a member is always resumed, never
//! bootstrapped again.

use std::path::Path;

/// Whether `data_dir` holds an etcd member (a write-ahead log was created).
pub fn has_member(data_dir: &Path) -> bool {
    let wal = data_dir.join("member").join("wal");
    std::fs::read_dir(&wal)
        .map(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal")))
        })
        .unwrap_or(false)
}

/// Whether etcd's last fatal message says its data is unreadable (rather than, say, a port in
/// use or a full disk, which moving the data aside would not fix and must not be done for).
pub fn looks_damaged(fatal: &str) -> bool {
    let f = fatal.to_lowercase();
    let environmental = [
        "address already in use",
        "permission denied",
        "no space left",
        "read-only file system",
        "too many open files",
        "certificate",
        "tls",
    ];
    if environmental.iter().any(|e| f.contains(e)) {
        return false;
    }
    [
        "wal",
        "crc",
        "snap",
        "proto:",
        "backend",
        "bbolt",
        "database",
        "corrupt",
        "unexpected eof",
        "checksum",
        "failed to recover",
        "raft log",
        "page",
        "unfreed",
    ]
    .iter()
    .any(|d| f.contains(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_told_from_environment_problems() {
        assert!(looks_damaged(
            r#"discovery failed {"error":"proto: integer overflow"}"#
        ));
        assert!(looks_damaged("walpb: crc mismatch"));
        assert!(looks_damaged("failed to recover v3 backend from snapshot"));
        assert!(looks_damaged(
            "panic: freepages: failed to get all reachable pages (page 8: multiple references)"
        ));
        assert!(!looks_damaged(
            r#"discovery failed {"error":"listen tcp 10.0.0.1:2380: bind: address already in use"}"#
        ));
        assert!(!looks_damaged(
            "open /var/lib/quorate/etcd/member/wal: permission denied"
        ));
        assert!(!looks_damaged("write wal: no space left on device"));
        assert!(!looks_damaged(
            "cannot listen: tls: failed to find any PEM data"
        ));
    }

    #[test]
    fn detects_a_member_by_its_wal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_member(dir.path()));
        std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
        assert!(!has_member(dir.path()));
        std::fs::write(
            dir.path()
                .join("member/wal/0000000000000000-0000000000000000.wal"),
            b"x",
        )
        .unwrap();
        assert!(has_member(dir.path()));
        assert!(!has_member(&dir.path().join("missing")));
    }
}
