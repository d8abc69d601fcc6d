//! The join tokens an agent accepts and the one it uses (Consul's keyring idea): normally one,
//! two while a rotation runs (see [`crate::rotation`]). Messages are sealed and proofs signed
//! with the primary token; anything sealed or proven with any accepted token is admitted.
//!
//! One owner, the member's token follower (`node::token`), changes the ring; everyone else
//! reads it through a [`TokenKeys`] handle (in `Settings::token`). The ring is kept in
//! `state_dir/join-token.json` (0600): a rotated token outlives restarts although the config
//! (read-only to the service) still names the old one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::fsutil;
use crate::token::{JoinToken, KeyPurpose};

/// The file in the state directory that keeps the ring.
pub const STATE_FILE: &str = "join-token.json";

/// The tokens in force.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    primary: JoinToken,
    /// Also accepted (at most the other side of one rotation).
    others: Vec<JoinToken>,
}

impl Keyring {
    /// One token, nothing else.
    pub fn single(token: JoinToken) -> Self {
        Self {
            primary: token,
            others: Vec::new(),
        }
    }

    /// `primary`, also accepting `others` (duplicates of the primary are dropped).
    pub fn new(primary: JoinToken, others: Vec<JoinToken>) -> Self {
        let mut kept: Vec<JoinToken> = Vec::new();
        for t in others {
            if t != primary && !kept.contains(&t) {
                kept.push(t);
            }
        }
        Self {
            primary,
            others: kept,
        }
    }

    /// The token messages are sealed and proofs signed with.
    pub fn primary(&self) -> &JoinToken {
        &self.primary
    }

    /// The other accepted tokens.
    pub fn others(&self) -> &[JoinToken] {
        &self.others
    }

    /// Every accepted token, the primary first.
    pub fn accepted(&self) -> impl Iterator<Item = &JoinToken> {
        std::iter::once(&self.primary).chain(self.others.iter())
    }

    /// Whether `token` is accepted.
    pub fn accepts(&self, token: &JoinToken) -> bool {
        self.accepted().any(|t| t == token)
    }

    /// The key for `purpose` of every accepted token, the primary's first.
    pub fn keys(&self, purpose: KeyPurpose) -> Vec<[u8; 32]> {
        self.accepted().map(|t| t.derive(purpose)).collect()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others: Vec<String> = self.others.iter().map(|t| t.fingerprint()).collect();
        write!(f, "Keyring({} + {:?})", self.primary.fingerprint(), others)
    }
}

/// A read handle on the ring in force. Cheap to clone; reads never block.
#[derive(Clone)]
pub struct TokenKeys(watch::Receiver<Arc<Keyring>>);

impl TokenKeys {
    /// A ring nobody changes (CLI commands, tests, client-mode agents).
    pub fn fixed(ring: Keyring) -> Self {
        Self(watch::channel(Arc::new(ring)).1)
    }

    /// A ring and the sender of its owner.
    pub fn owned(ring: Keyring) -> (watch::Sender<Arc<Keyring>>, Self) {
        let (tx, rx) = watch::channel(Arc::new(ring));
        (tx, Self(rx))
    }

    /// The ring now.
    pub fn ring(&self) -> Arc<Keyring> {
        self.0.borrow().clone()
    }

    /// A receiver that wakes when the ring changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Keyring>> {
        self.0.clone()
    }

    /// The primary token now.
    pub fn primary(&self) -> JoinToken {
        self.0.borrow().primary.clone()
    }

    /// The primary token's key for `purpose` (to seal or sign with).
    pub fn derive(&self, purpose: KeyPurpose) -> [u8; 32] {
        self.0.borrow().primary.derive(purpose)
    }

    /// Every accepted token's key for `purpose` (to open or check with).
    pub fn accepted_keys(&self, purpose: KeyPurpose) -> Vec<[u8; 32]> {
        self.0.borrow().keys(purpose)
    }

    /// The primary token's pinned form for the CA `ca`.
    pub fn pinned(&self, ca: &crate::pki::CaHash) -> String {
        self.0.borrow().primary.pinned(ca)
    }
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKeys({:?})", self.0.borrow())
    }
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    primary: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    others: Vec<String>,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: fsutil::FsError,
    },
    #[error(
        "{path} is not a join token ring ({reason}): remove it to use the config's token (a \
         rotated token must then be put in the config)"
    )]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot keep the join token ring in {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: fsutil::FsError,
    },
}

/// The path of the state file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// The ring kept in `state_dir`, if there is one.
pub fn load(state_dir: &Path) -> Result<Option<Keyring>, KeyringError> {
    let path = path(state_dir);
    let Some(text) = fsutil::read_optional(&path).map_err(|source| KeyringError::Read {
        path: path.clone(),
        source,
    })?
    else {
        return Ok(None);
    };
    let malformed = |reason: String| KeyringError::Malformed {
        path: path.clone(),
        reason,
    };
    let stored: Stored = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    let parse = |t: &str| JoinToken::parse(t).map_err(|e| malformed(e.to_string()));
    let primary = parse(&stored.primary)?;
    let others = stored
        .others
        .iter()
        .map(|t| parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Keyring::new(primary, others)))
}

/// Keeps `ring` in `state_dir` (0600).
pub fn save(state_dir: &Path, ring: &Keyring) -> Result<(), KeyringError> {
    let stored = Stored {
        primary: ring.primary.expose().to_owned(),
        others: ring.others.iter().map(|t| t.expose().to_owned()).collect(),
    };
    let path = path(state_dir);
    let text = serde_json::to_vec_pretty(&stored).unwrap_or_default();
    fsutil::atomic_write(&path, &text, fsutil::MODE_PRIVATE)
        .map_err(|source| KeyringError::Write { path, source })
}

/// Where the ring in force came from, for logs, `config check` and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The config's token; no ring is kept.
    Config,
    /// The kept ring, which accepts the config's token.
    State,
    /// The kept ring, which no longer accepts the config's token (rotated since): the config
    /// should be updated.
    StateNotConfig { config: String },
}

impl Origin {
    /// A note for the operator, when there is something to do.
    pub fn note(&self, state_dir: &Path, ring: &Keyring) -> Option<String> {
        match self {
            Origin::StateNotConfig { config } => Some(format!(
                "the config's join token ({config}) was rotated: token {} from {} is in force. \
                 Put it in the config (`quorate token show` prints it) so that a host rebuilt \
                 from the config can join",
                ring.primary.fingerprint(),
                path(state_dir).display()
            )),
            _ => None,
        }
    }
}

/// The ring to start with: the kept one (when `state_dir` holds one), else the config's
/// token alone.
pub fn resolve(
    config_token: &JoinToken,
    state_dir: &Path,
) -> Result<(Keyring, Origin), KeyringError> {
    Ok(match load(state_dir)? {
        None => (Keyring::single(config_token.clone()), Origin::Config),
        Some(ring) if ring.accepts(config_token) => (ring, Origin::State),
        Some(ring) => (
            ring,
            Origin::StateNotConfig {
                config: config_token.fingerprint(),
            },
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_accepts_its_tokens_and_signs_with_the_primary() {
        let (a, b) = (JoinToken::generate(), JoinToken::generate());
        let ring = Keyring::new(a.clone(), vec![b.clone(), a.clone(), b.clone()]);
        assert_eq!(
            ring.others(),
            std::slice::from_ref(&b),
            "duplicates dropped"
        );
        assert!(ring.accepts(&a) && ring.accepts(&b));
        assert!(!ring.accepts(&JoinToken::generate()));
        let keys = TokenKeys::fixed(ring);
        assert_eq!(
            keys.derive(KeyPurpose::Gossip),
            a.derive(KeyPurpose::Gossip)
        );
        assert_eq!(
            keys.accepted_keys(KeyPurpose::ApiProof),
            vec![
                a.derive(KeyPurpose::ApiProof),
                b.derive(KeyPurpose::ApiProof)
            ]
        );
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains(a.expose()) && shown.contains(&a.fingerprint()),
            "{shown}"
        );
    }

    #[test]
    fn the_kept_ring_wins_over_the_config_and_says_when_the_config_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (JoinToken::generate(), JoinToken::generate());
        let (ring, origin) = resolve(&old, dir.path()).unwrap();
        assert_eq!((ring.primary(), origin), (&old, Origin::Config));

        save(dir.path(), &Keyring::new(old.clone(), vec![new.clone()])).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path(dir.path())).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let (ring, origin) = resolve(&old, dir.path()).unwrap();
        assert_eq!(
            (ring.others(), &origin),
            (std::slice::from_ref(&new), &Origin::State)
        );
        assert_eq!(origin.note(dir.path(), &ring), None);

        save(dir.path(), &Keyring::single(new.clone())).unwrap();
        let (ring, origin) = resolve(&old, dir.path()).unwrap();
        assert_eq!(ring.primary(), &new);
        let note = origin.note(dir.path(), &ring).unwrap();
        assert!(
            note.contains(&old.fingerprint()) && note.contains(&new.fingerprint()),
            "{note}"
        );
        assert!(!note.contains(new.expose()), "{note}");
    }

    #[test]
    fn a_damaged_ring_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), r#"{"primary":"short"}"#).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(STATE_FILE) && e.contains("remove it"), "{e}");
        std::fs::write(path(dir.path()), "not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(KeyringError::Malformed { .. })
        ));
    }
}
