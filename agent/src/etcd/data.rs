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

/// Whether `data_dir` has anything in it at all (a member, or the debris of a failed start).
pub fn is_empty(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_a_member_by_its_wal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_member(dir.path()));
        assert!(is_empty(dir.path()));
        std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
        assert!(!has_member(dir.path()));
        assert!(!is_empty(dir.path()));
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
