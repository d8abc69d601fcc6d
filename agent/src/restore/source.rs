//! Where a restore's snapshot comes from, turned into a local plaintext file in one place
//! ([`prepare`]): a path on this host, or `s3://bucket/key` downloaded through `[snapshot.s3]`
//! (streamed, checked against the store's manifest); an encrypted snapshot (an age file,
//! `.db.age`) is then decrypted with `snapshot.encryption_key_file` (streamed, etcd's integrity
//! hash checked on the plaintext). The manifest comes along: the one beside the file, or the
//! store's. Downloads and decrypted copies go to `<state_dir>/restore/incoming` (owner-only:
//! they hold every key) and are removed by [`Prepared::cleanup`].

use std::path::{Path, PathBuf};

use super::inspect::manifest_beside;
use super::RestoreError;
use crate::config::Settings;
use crate::fsutil;
use crate::snapshot::crypt::{decrypt_to, is_encrypted};
use crate::snapshot::file::Manifest;
use crate::snapshot::remote::{fetch_to, S3Source};

/// A snapshot ready to be inspected and restored.
#[derive(Debug)]
pub struct Prepared {
    /// The plaintext snapshot file.
    pub path: PathBuf,
    /// Its manifest, when it has one.
    pub manifest: Option<Manifest>,
    /// Files made by [`prepare`] (a download, a decrypted copy).
    made: Vec<PathBuf>,
}

impl Prepared {
    /// Removes the files [`prepare`] made (never the operator's own file).
    pub fn cleanup(&self) {
        for path in &self.made {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The directory downloads and decrypted copies go to.
pub fn incoming_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("restore").join("incoming")
}

/// Turns `source` (an absolute path or `s3://bucket/key`) into a local plaintext snapshot.
/// A download's progress is published through `transfers`.
pub async fn prepare(
    source: &str,
    s: &Settings,
    transfers: &super::transfer::Transfers,
) -> Result<Prepared, RestoreError> {
    let incoming = incoming_dir(&s.state_dir);
    let mut made = Vec::new();
    let (file, manifest) = if source.starts_with("s3://") {
        let remote: S3Source =
            source
                .parse()
                .map_err(
                    |e: crate::snapshot::remote::S3SourceError| RestoreError::Source {
                        path: source.to_owned(),
                        message: e.to_string(),
                    },
                )?;
        let Some(s3) = &s.snapshot.s3 else {
            return Err(RestoreError::NeedsS3 {
                source_url: source.to_owned(),
            });
        };
        fsutil::ensure_dir(&incoming, fsutil::MODE_DIR).map_err(io_error(&incoming))?;
        let name = remote.key.rsplit('/').next().unwrap_or("snapshot.db");
        let dst = incoming.join(name);
        let _ = std::fs::remove_file(&dst);
        tracing::info!(%source, dst = %dst.display(), "downloading the snapshot to restore");
        let meter = transfers.start(format!("downloading {source}"));
        let manifest = fetch_to(&remote, s3, &dst, &|done, total| meter.set(done, total))
            .await
            .map_err(|e| RestoreError::Fetch {
                source_url: source.to_owned(),
                message: e.to_string(),
            })?;
        made.push(dst.clone());
        (dst, manifest)
    } else {
        let path = local_file(source)?;
        let manifest = manifest_beside(&path)?;
        (path, manifest)
    };
    let prepared = Prepared {
        path: file.clone(),
        manifest,
        made,
    };
    match decrypt_if_needed(&file, &incoming, s.snapshot.encryption_key_file.clone()).await {
        Ok(None) => Ok(prepared),
        Ok(Some(plain)) => {
            let mut prepared = prepared;
            prepared.made.push(plain.clone());
            prepared.path = plain;
            Ok(prepared)
        }
        Err(e) => {
            prepared.cleanup();
            Err(e)
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(fsutil::FsError) -> RestoreError + '_ {
    move |e| RestoreError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The decrypted copy of `file` when it is encrypted (None when it is plain).
async fn decrypt_if_needed(
    file: &Path,
    incoming: &Path,
    key_file: Option<PathBuf>,
) -> Result<Option<PathBuf>, RestoreError> {
    let encrypted = is_encrypted(file).map_err(|e| RestoreError::Source {
        path: file.display().to_string(),
        message: e.to_string(),
    })?;
    if !encrypted {
        return Ok(None);
    }
    fsutil::ensure_dir(incoming, fsutil::MODE_DIR).map_err(io_error(incoming))?;
    let stem = file
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("snapshot");
    let plain = incoming.join(format!("{stem}.plain.db"));
    let _ = std::fs::remove_file(&plain);
    tracing::info!(file = %file.display(), "decrypting the snapshot to restore");
    let (src, dst) = (file.to_owned(), plain.clone());
    tokio::task::spawn_blocking(move || decrypt_to(&src, &dst, key_file.as_deref()))
        .await
        .map_err(|e| RestoreError::Refused(format!("decrypting the snapshot stopped: {e}")))??;
    Ok(Some(plain))
}

/// The snapshot file at `source`, a path on this host.
fn local_file(source: &str) -> Result<PathBuf, RestoreError> {
    let path = PathBuf::from(source);
    let bad = |message: String| RestoreError::Source {
        path: source.to_owned(),
        message,
    };
    if !path.is_absolute() {
        return Err(bad(
            "the path must be absolute (the agent resolves it, not your shell)".into(),
        ));
    }
    let meta = std::fs::metadata(&path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_relative_and_directory_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        let err = local_file(missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.db"), "{err}");
        assert!(local_file("rel.db")
            .unwrap_err()
            .to_string()
            .contains("absolute"));
        let err = local_file(dir.path().to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let file = dir.path().join("s.db");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(local_file(file.to_str().unwrap()).unwrap(), file);
    }

    #[tokio::test]
    async fn plain_files_pass_through_and_encrypted_ones_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = dir.path().join("incoming");
        let plain = dir.path().join("s.db");
        std::fs::write(&plain, b"plain").unwrap();
        assert_eq!(
            decrypt_if_needed(&plain, &incoming, None).await.unwrap(),
            None
        );
        let sealed = dir.path().join("s.db.age");
        std::fs::write(&sealed, b"age-encryption.org/v1\n-> X25519 abc\n").unwrap();
        let err = decrypt_if_needed(&sealed, &incoming, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("encrypted") && err.contains("snapshot.encryption_key_file"),
            "{err}"
        );
        assert!(!incoming.join("s.plain.db").exists());
    }
}
