//! What the etcd data directory says about this host: whether it already holds a member. This
//! is the fact behind "never two clusters": a data dir with a member is always resumed, never
//! bootstrapped again. Also whether etcd's last fatal message points at damaged data.

use std::path::Path;

/// Whether `data_dir` holds an etcd member: a write-ahead log or a backend database. An error
/// other than "not found" is returned, never read as "no member" (that would lead to treating
/// a good member as lost).
pub fn member_state(data_dir: &Path) -> std::io::Result<bool> {
    let member = data_dir.join("member");
    let has_wal = match std::fs::read_dir(member.join("wal")) {
        Ok(entries) => {
            let mut found = false;
            for entry in entries {
                if entry?.file_name().to_string_lossy().ends_with(".wal") {
                    found = true;
                }
            }
            found
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if has_wal {
        return Ok(true);
    }
    match std::fs::metadata(member.join("snap").join("db")) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`member_state`], with an unreadable directory counted as holding a member (the safe side).
pub fn has_member(data_dir: &Path) -> bool {
    member_state(data_dir).unwrap_or(true)
}

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
    fn detects_a_member_by_its_wal_or_database() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_member(dir.path()));
        std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
        assert!(!has_member(dir.path()));
        let wal = dir
            .path()
            .join("member/wal/0000000000000000-0000000000000000.wal");
        std::fs::write(&wal, b"x").unwrap();
        assert!(has_member(dir.path()));
        assert!(!has_member(&dir.path().join("missing")));
        // A backend database alone also means a member.
        let db_only = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(db_only.path().join("member/snap")).unwrap();
        std::fs::write(db_only.path().join("member/snap/db"), b"x").unwrap();
        assert!(member_state(db_only.path()).unwrap());
        // A path that is not a directory is an error, not "no member".
        assert!(member_state(&wal).is_err());
        assert!(has_member(&wal));
    }
}
