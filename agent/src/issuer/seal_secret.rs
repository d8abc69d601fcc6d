//! The CA seal secret: 32 random bytes that only the voting members' agents hold, in
//! `pki/ca-seal-secret` (0600), never in etcd. etcd keeps only its fingerprint ([`ID_KEY`]), so
//! every holder can check it has the cluster's. The first issuer creates it; a voter without
//! it asks a holder over the agent API with its node certificate (`api::seal`), and gets it
//! only while etcd lists it as a started voter. Once every voter holds it, the CA in etcd is
//! sealed with a key derived from it instead of the join token ([`super::reseal`]).
//! Snapshot manifests carry a copy sealed with the join token's snapshot key, so a restore
//! onto new hosts (which hold no secret) can still open the CA.

use std::path::Path;

use base64::Engine;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use ring::rand::SecureRandom;

use crate::aead::Aead;
use crate::fsutil::{self, MODE_PRIVATE};
use crate::token::{JoinToken, KeyPurpose};

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

    /// The key the CA in etcd is sealed with (HKDF-SHA256 of the secret).
    pub fn ca_key(&self) -> [u8; 32] {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"quorate ca seal secret v1");
        let prk = salt.extract(&self.0);
        let mut out = [0u8; 32];
        // expand() and fill() only fail when the requested length exceeds 255 * hash length.
        if let Ok(okm) = prk.expand(&[b"quorate ca seal v2"], ring::hkdf::HKDF_SHA256) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    /// The copy for a snapshot's manifest: base64 of the secret sealed with the join token's
    /// snapshot key, its fingerprint as associated data.
    pub fn seal_for_snapshot(&self, token: &JoinToken) -> String {
        let aead = Aead::new(&token.derive(KeyPurpose::SnapshotSeal));
        base64::engine::general_purpose::STANDARD.encode(aead.seal(self.id().as_bytes(), &self.0))
    }

    /// Opens a manifest's copy (see [`Self::seal_for_snapshot`]) of the secret `id`; None with
    /// another token, another id or a damaged copy.
    pub fn open_from_snapshot(token: &JoinToken, id: &str, sealed: &str) -> Option<Self> {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim())
            .ok()?;
        let aead = Aead::new(&token.derive(KeyPurpose::SnapshotSeal));
        let bytes = aead.open(id.as_bytes(), &sealed).ok()?;
        Some(Self(bytes.try_into().ok()?)).filter(|s| s.id() == id)
    }
}

/// The copy of the secret in a snapshot's manifest (see [`SealSecret::seal_for_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedCopy {
    /// The secret's fingerprint.
    pub id: String,
    /// The secret sealed with the join token's snapshot key, base64.
    pub sealed: String,
}

impl SealedCopy {
    /// Opens it with `token`; None with another token or a damaged copy.
    pub fn open(&self, token: &JoinToken) -> Option<SealSecret> {
        SealSecret::open_from_snapshot(token, &self.id, &self.sealed)
    }
}

/// The manifest's copy of the secret this host holds, if any.
pub fn for_manifest(pki_dir: &Path, token: &JoinToken) -> Option<SealedCopy> {
    load(pki_dir).map(|s| SealedCopy {
        id: s.id(),
        sealed: s.seal_for_snapshot(token),
    })
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

/// Why a snapshot must not be taken on a host holding `held`: the cluster has a CA seal secret
/// (fingerprint `cluster`) the host does not hold, so the snapshot's manifest could not carry
/// it and a restore onto new hosts could not open the CA (pure).
pub fn snapshot_refusal(held: Option<&SealSecret>, cluster: Option<&str>) -> Option<String> {
    match (held, cluster) {
        (None, Some(id)) => Some(format!(
            "this member does not hold the CA seal secret {} yet, so the snapshot's manifest \
             could not carry it (a restore onto new hosts needs it): take it on another member, \
             or once `quorate status` here says 'held here'",
            id.chars().take(12).collect::<String>()
        )),
        _ => None,
    }
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
/// holds) and records its fingerprint, first writer wins. Returns the cluster's secret when this
/// host holds it afterwards.
pub async fn ensure_created(
    client: &mut Client,
    pki_dir: &Path,
) -> Result<Option<SealSecret>, String> {
    let held = load(pki_dir);
    let id = cluster_id(client).await.map_err(|e| e.to_string())?;
    match (id, held) {
        (Some(id), held) => Ok(held.filter(|h| h.id() == id)),
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
            Ok(won.then_some(secret))
        }
    }
}

/// After a live restore of a snapshot (of another cluster, or of before the secret changed),
/// `/quorate/seal/id` names a secret no member may hold, while the CA put back (`restored`) is
/// ours. When `stored` (the CA in etcd now) is sealed with the secret this host holds, or with
/// the join token, this host's secret becomes the cluster's again (the keepers fetch it, and the
/// issuer seals the CA with it once every voter holds it). A host that has not fetched the
/// secret yet holds none and changes nothing; a CA sealed with a third secret is left alone.
/// Returns whether it changed the fingerprint.
pub async fn adopt_after_restore(
    client: &mut Client,
    pki_dir: &Path,
    stored: &super::SealedCa,
) -> Result<bool, etcd_client::Error> {
    let Some(held) = load(pki_dir).filter(|h| match &stored.seal_id {
        None => true,
        Some(id) => *id == h.id(),
    }) else {
        return Ok(false);
    };
    let got = client.get(ID_KEY, None).await?;
    let Some(kv) = got.kvs().first() else {
        return Ok(false);
    };
    if kv.value() == held.id().as_bytes() {
        return Ok(false);
    }
    let swap = Txn::new()
        .when([Compare::mod_revision(
            ID_KEY,
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then([TxnOp::put(ID_KEY, held.id(), None)]);
    let done = client.txn(swap).await?.succeeded();
    if done {
        tracing::warn!(
            id = %held.id(),
            snapshot = %kv.value_str().unwrap_or_default(),
            "the restored snapshot named another CA seal secret; the cluster's goes back"
        );
    }
    Ok(done)
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
    fn a_host_without_the_clusters_secret_takes_no_snapshot() {
        let s = SealSecret::generate();
        let why = snapshot_refusal(None, Some(&s.id())).unwrap();
        assert!(
            why.contains(&s.id()[..12]) && why.contains("another member"),
            "{why}"
        );
        assert_eq!(snapshot_refusal(Some(&s), Some(&s.id())), None);
        // A cluster sealed with the join token only: the token opens the CA of the snapshot.
        assert_eq!(snapshot_refusal(None, None), None);
    }

    #[test]
    fn the_snapshot_copy_opens_with_the_token_and_id_only() {
        let token = JoinToken::generate();
        let s = SealSecret::generate();
        let copy = s.seal_for_snapshot(&token);
        assert!(!copy.contains(&s.to_text()));
        assert_eq!(
            SealSecret::open_from_snapshot(&token, &s.id(), &copy),
            Some(s.clone())
        );
        assert_eq!(
            SealSecret::open_from_snapshot(&JoinToken::generate(), &s.id(), &copy),
            None
        );
        let other = SealSecret::generate();
        assert_eq!(
            SealSecret::open_from_snapshot(&token, &other.id(), &copy),
            None
        );
        assert_eq!(SealSecret::open_from_snapshot(&token, &s.id(), "%%"), None);
        // The CA key is the secret's own, and not the secret.
        assert_eq!(s.ca_key(), s.clone().ca_key());
        assert_ne!(s.ca_key(), other.ca_key());
        assert_ne!(s.ca_key(), s.0);
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
