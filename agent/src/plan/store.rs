//! Persistence of the plan: `plan.json` in the state directory, written atomically. Saving is
//! write-once: a different plan is refused, which is the on-disk half of "a plan, once
//! decided, is never replaced".

use std::path::{Path, PathBuf};

use super::{Plan, PlanId};
use crate::fsutil::{self, FsError};

/// Errors of the plan store.
#[derive(Debug, thiserror::Error)]
pub enum PlanStoreError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path} is not a valid plan: {message}. Fix: restore it from a backup, or if this host never ran etcd, remove the file")]
    Corrupt { path: PathBuf, message: String },
    #[error("refusing to replace plan {existing} in {path} with a different plan {new}; a plan is decided once per cluster")]
    Different {
        path: PathBuf,
        existing: PlanId,
        new: PlanId,
    },
}

/// `plan.json` in the state directory.
#[derive(Debug, Clone)]
pub struct PlanStore {
    path: PathBuf,
}

impl PlanStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("plan.json"),
        }
    }

    /// The persisted plan, if any.
    pub fn load(&self) -> Result<Option<Plan>, PlanStoreError> {
        let Some(text) = fsutil::read_optional(&self.path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| PlanStoreError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// Persists `plan` unless a different one is already there.
    pub fn save(&self, plan: &Plan) -> Result<(), PlanStoreError> {
        if let Some(existing) = self.load()? {
            if existing.id() != plan.id() {
                return Err(PlanStoreError::Different {
                    path: self.path.clone(),
                    existing: existing.id(),
                    new: plan.id(),
                });
            }
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(plan).map_err(|e| PlanStoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        fsutil::atomic_write(&self.path, &text, fsutil::MODE_PUBLIC)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::plan;

    #[test]
    fn save_is_write_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let p = plan(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]);
        store.save(&p).unwrap();
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap(), Some(p.clone()));
        let q = plan(&[("a", "10.0.0.1"), ("c", "10.0.0.3")]);
        assert!(matches!(
            store.save(&q),
            Err(PlanStoreError::Different { .. })
        ));
        assert_eq!(store.load().unwrap(), Some(p));
    }

    #[test]
    fn corrupt_file_is_reported_with_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.json"), "{not json").unwrap();
        let err = PlanStore::new(dir.path()).load().unwrap_err().to_string();
        assert!(err.contains("plan.json"), "{err}");
    }
}
