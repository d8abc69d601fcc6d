//! Durable file writes. Every file quorate writes (plan, certificates, keys, markers) goes
//! through [`atomic_write`], so a crash or power loss leaves either the old content or the new
//! one, never a torn file, and private keys are never readable by others, not even briefly.
//! Temporary files get random names and are opened with `O_EXCL | O_NOFOLLOW`, so a file or
//! symlink planted in a shared directory (`quorate cert client --out /tmp/x`) is never written
//! through.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for private keys and secrets.
pub const MODE_PRIVATE: u32 = 0o600;
/// Mode for public material (certificates, the plan).
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode for the state directory and its subdirectories.
pub const MODE_DIR: u32 = 0o700;

/// A filesystem operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `data` to `path` through a temporary file in the same directory, fsyncs it, renames
/// it over `path` and fsyncs the directory. The temporary file is created with `mode`, so the
/// content is never visible with wider permissions.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let (mut file, tmp) = create_temp_next_to(path, mode)?;
    let result = (|| {
        // The mode given to open() is filtered by the umask; set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("chmod", &tmp, e))?;
        file.write_all(data)
            .map_err(|e| FsError::new("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| FsError::new("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| FsError::new("rename", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A new temporary file beside `path` with a random name, created with `O_EXCL | O_NOFOLLOW`
/// and `mode`; retried under another name if one exists already.
pub fn create_temp_next_to(path: &Path, mode: u32) -> Result<(File, PathBuf), FsError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..8 {
        let tmp = dir.join(format!(".{file_name}.tmp.{}", random_suffix()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(FsError::new("create", &tmp, e)),
        }
    }
    Err(FsError::new(
        "create a temporary file beside",
        path,
        last.unwrap_or_else(|| io::Error::other("no free temporary name")),
    ))
}

/// 16 random hex digits.
fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Never seen; the name is then only unpredictable by the clock, and O_EXCL still holds.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        bytes = (nanos ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

/// Creates `dir` with `mode` when it does not exist; an existing directory is used as it is
/// (its mode and owner are the operator's: `--out /root` must not chmod /root).
pub fn create_dir_if_missing(dir: &Path, mode: u32) -> Result<(), FsError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| FsError::new("create directory", dir, e))
}

/// Rewords "no space left on device" so that what the user reads says the disk is full
/// (the path is added by the caller's [`FsError`]); other errors pass unchanged.
pub fn explain_full(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::StorageFull {
        io::Error::new(
            io::ErrorKind::StorageFull,
            "the disk is full (no space left on device): free space there or choose another place",
        )
    } else {
        e
    }
}

/// Creates a new, empty private file (mode [`MODE_PRIVATE`]) for content streamed in pieces
/// (a snapshot): it fails if `path` exists, so two writers never share a temporary file. Write
/// to it, then [`persist`] it under its final name.
pub fn create_private_new(path: &Path) -> Result<File, FsError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE_PRIVATE)
        .open(path)
        .map_err(|e| FsError::new("create", path, e))?;
    // The mode given to open() is filtered by the umask; set it explicitly.
    file.set_permissions(fs::Permissions::from_mode(MODE_PRIVATE))
        .map_err(|e| FsError::new("chmod", path, e))?;
    Ok(file)
}

/// Fsyncs `file` (written at `tmp`), renames it to `dest` and fsyncs `dest`'s directory, so
/// that `dest` appears only complete and survives a crash. On failure `tmp` is removed.
pub fn persist(file: File, tmp: &Path, dest: &Path) -> Result<(), FsError> {
    let result = (|| {
        file.sync_all()
            .map_err(|e| FsError::new("fsync", tmp, explain_full(e)))?;
        drop(file);
        fs::rename(tmp, dest).map_err(|e| FsError::new("rename", dest, e))?;
        sync_dir(dest.parent().unwrap_or_else(|| Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Like [`persist`], but never replaces an existing `dest` (fails with `AlreadyExists`): the
/// file takes its name through a hard link, which the kernel refuses atomically.
pub fn persist_new(file: File, tmp: &Path, dest: &Path) -> Result<(), FsError> {
    let result = (|| {
        file.sync_all()
            .map_err(|e| FsError::new("fsync", tmp, explain_full(e)))?;
        drop(file);
        fs::hard_link(tmp, dest).map_err(|e| FsError::new("create", dest, e))?;
        fs::remove_file(tmp).map_err(|e| FsError::new("remove", tmp, e))?;
        sync_dir(dest.parent().unwrap_or_else(|| Path::new(".")))
    })();
    let _ = fs::remove_file(tmp);
    result
}

/// Fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("fsync", dir, e))
}

/// Creates `dir` (and its parents) if missing and makes sure it has `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| FsError::new("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("chmod", dir, e))
}

/// Reads a file to a string; `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, FsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("read", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        atomic_write(&path, b"one", MODE_PRIVATE).unwrap();
        atomic_write(&path, b"two", MODE_PRIVATE).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn read_optional_distinguishes_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_optional(&dir.path().join("nope")).unwrap().is_none());
    }

    #[test]
    fn ensure_dir_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        ensure_dir(&sub, MODE_DIR).unwrap();
        let mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_streamed_file_is_private_exclusive_and_appears_complete() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".snap.db.tmp");
        let dest = dir.path().join("snap.db");
        let mut file = create_private_new(&tmp).unwrap();
        let mode = fs::metadata(&tmp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second writer cannot take the same temporary file.
        assert!(create_private_new(&tmp).is_err());
        file.write_all(b"part one, ").unwrap();
        file.write_all(b"part two").unwrap();
        assert!(!dest.exists());
        persist(file, &tmp, &dest).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "part one, part two");
        assert!(!tmp.exists());
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_failed_persist_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".snap.db.tmp");
        let file = create_private_new(&tmp).unwrap();
        let dest = dir.path().join("missing/snap.db");
        assert!(persist(file, &tmp, &dest).is_err());
        assert!(!tmp.exists());
    }

    #[test]
    fn planted_links_and_existing_directories_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // An existing directory keeps its mode (no chmod of --out /root).
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o711)).unwrap();
        create_dir_if_missing(&out, 0o755).unwrap();
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o711
        );
        let fresh = dir.path().join("a/b");
        create_dir_if_missing(&fresh, 0o700).unwrap();
        assert!(fresh.is_dir());
        // A symlink planted where the key goes is replaced, its target never written.
        let target = dir.path().join("precious");
        fs::write(&target, "keep").unwrap();
        let key = out.join("client-key.pem");
        std::os::unix::fs::symlink(&target, &key).unwrap();
        atomic_write(&key, b"KEY", MODE_PRIVATE).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&key).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&key).unwrap(), "KEY");
        // Temporary names are random and exclusive; nothing is left behind.
        let (_, a) = create_temp_next_to(&key, MODE_PRIVATE).unwrap();
        let (_, b) = create_temp_next_to(&key, MODE_PRIVATE).unwrap();
        assert_ne!(a, b);
        fs::remove_file(a).unwrap();
        fs::remove_file(b).unwrap();
        let left: Vec<_> = fs::read_dir(&out).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
