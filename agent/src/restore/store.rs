//! Persistence of the restore plan: `restore.json` in the state directory (written atomically,
//! through `NodeState`, the one owner of persistent state). It holds the newest accepted signed
//! plan and the generation this host has applied; a plan is pending while its generation is
//! newer than the applied one. Saving refuses a generation that is not newer than the applied
//! one, so no plan is ever applied twice.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::SignedPlan;
use super::RestoreError;
use crate::fsutil;

/// What `restore.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// The newest accepted plan.
    pub signed: Option<SignedPlan>,
    /// The generation this host has applied (0: only the bootstrap plan).
    pub applied: u64,
}

impl RestoreRecord {
    /// The plan waiting to be applied on this host, if any.
    pub fn pending(&self) -> Option<&SignedPlan> {
        self.signed
            .as_ref()
            .filter(|s| s.plan.generation > self.applied)
    }
}

/// `restore.json` and the directory of restore snapshots.
#[derive(Debug, Clone)]
pub struct RestoreStore {
    path: PathBuf,
    dir: PathBuf,
}

impl RestoreStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("restore.json"),
            dir: state_dir.join("restore"),
        }
    }

    /// Where the snapshot with this sha256 is kept on this host (served to the other members).
    pub fn snapshot_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.db"))
    }

    /// The directory of restore snapshots (created on demand).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn load(&self) -> Result<RestoreRecord, RestoreError> {
        let io = |message: String| RestoreError::Io {
            path: self.path.clone(),
            message,
        };
        match fsutil::read_optional(&self.path).map_err(|e| io(e.to_string()))? {
            None => Ok(RestoreRecord::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                io(format!(
                    "not a valid restore record: {e}. Fix: restore it from a backup or remove it \
                     on a host that never restored"
                ))
            }),
        }
    }

    /// Persists `record`, refusing a plan whose generation is not newer than the applied one
    /// on disk (unless it is that same plan, now marked applied).
    pub fn save(&self, record: &RestoreRecord) -> Result<(), RestoreError> {
        let current = self.load()?;
        if let Some(s) = &record.signed {
            let same = current.signed.as_ref() == Some(s);
            if !same && s.plan.generation <= current.applied {
                return Err(RestoreError::BadPlan {
                    generation: s.plan.generation,
                    decided_by: s.plan.decided_by.clone(),
                    reason: format!("generation {} is already applied here", current.applied),
                });
            }
        }
        let text = serde_json::to_vec_pretty(record).map_err(|e| RestoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        fsutil::atomic_write(&self.path, &text, fsutil::MODE_PUBLIC).map_err(|e| RestoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::tests::example_plan;

    fn signed(generation: u64) -> SignedPlan {
        SignedPlan {
            plan: example_plan(generation),
            signature: "00".into(),
            cert_pem: String::new(),
        }
    }

    #[test]
    fn pending_until_applied_and_never_an_older_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = RestoreStore::new(dir.path());
        assert_eq!(store.load().unwrap(), RestoreRecord::default());
        let mut record = RestoreRecord {
            signed: Some(signed(1)),
            applied: 0,
        };
        store.save(&record).unwrap();
        assert!(store.load().unwrap().pending().is_some());
        record.applied = 1;
        store.save(&record).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.pending().is_none());
        // The same generation again (another plan) is refused.
        let mut other = signed(1);
        other.plan.cluster_token.push('x');
        let again = RestoreRecord {
            signed: Some(other),
            applied: 1,
        };
        assert!(store.save(&again).is_err());
        assert_eq!(store.load().unwrap(), loaded);
    }
}
