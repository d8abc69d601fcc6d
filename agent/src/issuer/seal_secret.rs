//! The CA seal secret (least-privilege item 3, first stage): 32 random bytes that only the
//! voting members' agents hold, in `pki/ca-seal-secret` (0600), never in etcd. etcd keeps only
//! its fingerprint ([`ID_KEY`]), so every holder can check it has the cluster's. The first
//! issuer creates it; a voter without it asks a holder over the agent API with its node
//! certificate (`api::seal`), and gets it only while etcd lists it as a started voter. The
//! next stage seals the CA in etcd with a key derived from it instead of the join token.

use std::path::Path;

use base64::Engine;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use ring::rand::SecureRandom;

use crate::fsutil::{self, MODE_PRIVATE};

/// The secret's fingerprint in etcd.
pub const ID_KEY: &str = "/quorate/seal/id";
/// Its file in the PKI directory.
pub const FILE: &str = "ca-seal-secret";

/// The secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealSecret([u8; 32]);

impl std::fmt::Debug for SealSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealSecret({})", self.id())
    }
}

impl SealSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        // The system RNG does not fail on Linux once booted.
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        Self(bytes)
    }

    /// Its fingerprint: the first 16 bytes of its SHA-256, in hex (safe to show and store).
    pub fn id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        hex::encode(&digest.as_ref()[..16])
    }

    /// The text form (base64), for the file and the API.
    pub fn to_text(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parses the text form.
    pub fn from_text(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

/// The secret this host holds, if any (a file that does not parse counts as none).
pub fn load(pki_dir: &Path) -> Option<SealSecret> {
    fsutil::read_optional(&pki_dir.join(FILE))
        .ok()
        .flatten()
        .and_then(|t| SealSecret::from_text(&t))
}

/// Keeps `secret` in the PKI directory (0600 from the first byte).
pub fn save(pki_dir: &Path, secret: &SealSecret) -> Result<(), fsutil::FsError> {
    fsutil::atomic_write(
        &pki_dir.join(FILE),
        secret.to_text().as_bytes(),
        MODE_PRIVATE,
    )
}

/// The cluster's secret's fingerprint, if one was made.
pub async fn cluster_id(client: &mut Client) -> Result<Option<String>, etcd_client::Error> {
    let got = client.get(ID_KEY, None).await?;
    Ok(got
        .kvs()
        .first()
        .and_then(|kv| kv.value_str().ok().map(str::to_owned)))
}

/// The issuer's part: when the cluster has no secret yet, makes one (or takes the one this host
/// holds) and records its fingerprint, first writer wins. Returns whether this host holds the
/// cluster's secret afterwards.
pub async fn ensure_created(client: &mut Client, pki_dir: &Path) -> Result<bool, String> {
    let held = load(pki_dir);
    let id = cluster_id(client).await.map_err(|e| e.to_string())?;
    match (id, held) {
        (Some(id), Some(held)) => Ok(held.id() == id),
        (Some(_), None) => Ok(false),
        (None, held) => {
            let secret = held.unwrap_or_else(SealSecret::generate);
            save(pki_dir, &secret).map_err(|e| e.to_string())?;
            let create = Txn::new()
                .when([Compare::create_revision(ID_KEY, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(ID_KEY, secret.id(), None)]);
            let won = client
                .txn(create)
                .await
                .map_err(|e| e.to_string())?
                .succeeded();
            if won {
                tracing::info!(id = %secret.id(), "made the cluster's CA seal secret");
            }
            Ok(won)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_and_bad_text_is_none() {
        let s = SealSecret::generate();
        assert_eq!(SealSecret::from_text(&s.to_text()), Some(s.clone()));
        assert_eq!(SealSecret::from_text("bm90IDMyIGJ5dGVz"), None);
        assert_eq!(SealSecret::from_text("%%%"), None);
        assert_ne!(SealSecret::generate(), s);
        assert_eq!(s.id().len(), 32);
        assert!(!format!("{s:?}").contains(&s.to_text()));
    }

    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let s = SealSecret::generate();
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()), Some(s));
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
