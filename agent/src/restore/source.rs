//! Where a restore's snapshot comes from, turned into a local plaintext file in one place.
//! Today that is a local path; `s3://` sources are refused until `[snapshot.s3]` download
//! (and decryption of encrypted snapshots) is wired in here.

use std::path::PathBuf;

use super::RestoreError;

/// The local plaintext snapshot file for `source` (a path on this host).
pub fn local_file(source: &str) -> Result<PathBuf, RestoreError> {
    if source.starts_with("s3://") {
        return Err(RestoreError::NeedsS3 {
            source_url: source.to_owned(),
        });
    }
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
    fn s3_needs_its_configuration() {
        let err = local_file("s3://bucket/key").unwrap_err().to_string();
        assert!(err.contains("s3:// sources need [snapshot.s3]"), "{err}");
    }

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
}
