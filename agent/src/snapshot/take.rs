//! One verified snapshot, streamed from the local etcd member: the path both the scheduled
//! task and `quorate snapshot save` take. [`stream_verified`] checks etcd's integrity hash of
//! the plaintext as it streams, encrypts it in memory when a key is configured, and hands
//! the bytes to store to a [`Sink`]; [`save_to_dir`] is the sink of the snapshot directory
//! (private temporary file, fsync, final name, manifest). A stream that fails verification
//! never takes a final name.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest::{Context, SHA256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::crypt::{self, CryptError, Encrypting};
use super::file::{self, Manifest, SnapshotName, StreamVerifier};
use crate::config::Settings;
use crate::etcd::client::{connect, ClientTls};
use crate::fsutil;

/// Per-request timeout of the snapshot stream (a large keyspace takes a while).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    #[error("{0}")]
    Fs(#[from] fsutil::FsError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Verify(#[from] file::VerifyError),
    #[error("{0}")]
    Key(#[from] CryptError),
    #[error("the cluster ID or this member is not known yet")]
    NotReady,
    #[error("the snapshot lock was lost while the snapshot was taken")]
    LockLost,
    #[error("encrypting the snapshot: {0}")]
    Encrypt(std::io::Error),
    #[error("{0}")]
    Sink(String),
    #[error("{0}")]
    Io(String),
    /// This member must not take it (see [`crate::issuer::seal_secret::snapshot_refusal`]).
    #[error("{0}")]
    Refused(String),
}

/// Where the bytes to store go, in order.
pub trait Sink {
    /// Takes the next bytes (ciphertext when encrypting).
    fn write(&mut self, bytes: &[u8]) -> impl std::future::Future<Output = Result<(), TakeError>>;
}

/// What a verified stream was.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub revision: i64,
    pub etcd_version: String,
    /// Bytes stored (the ciphertext's length when encrypted).
    pub size: u64,
    /// The sha256 of the bytes stored, hex.
    pub sha256: String,
    /// The sha256 of the snapshot as etcd sent it, hex.
    pub plaintext_sha256: String,
    pub encrypted: bool,
}

/// What the stream reports while it runs: the database size etcd announced (an estimate of
/// the total), then the plaintext bytes done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: Option<u64>,
    pub done: u64,
}

/// The recipient for `settings.snapshot.encryption_key_file`, if set.
pub fn recipient(settings: &Settings) -> Result<Option<age::x25519::Recipient>, CryptError> {
    settings
        .snapshot
        .encryption_key_file
        .as_deref()
        .map(|p| crypt::load_identity(p).map(|i| i.to_public()))
        .transpose()
}

/// Streams a snapshot of the local member into `sink`, verifying etcd's hash; stops with
/// [`TakeError::LockLost`] as soon as `lost()` says so. `progress` follows the bytes done.
pub async fn stream_verified<S: Sink>(
    settings: &Settings,
    tls: &ClientTls,
    recipient: Option<&age::x25519::Recipient>,
    lost: impl Fn() -> bool,
    progress: &watch::Sender<Option<Progress>>,
    sink: &mut S,
) -> Result<Streamed, TakeError> {
    let local = [settings.client_url()];
    let mut client = connect(&local, tls, STREAM_TIMEOUT).await?;
    let status = client.status().await?;
    let revision = status.header().map(|h| h.revision()).unwrap_or_default();
    let etcd_version = status.version().to_owned();
    let total = u64::try_from(status.db_size()).ok();
    let mut encrypting = recipient
        .map(Encrypting::new)
        .transpose()
        .map_err(TakeError::Encrypt)?;
    let mut stored = Context::new(&SHA256);
    let mut size = 0u64;
    let mut verifier = StreamVerifier::default();
    let mut done = 0u64;
    progress.send_replace(Some(Progress { total, done }));
    let mut stream = client.snapshot().await?;
    while let Some(message) = stream.message().await? {
        if lost() {
            return Err(TakeError::LockLost);
        }
        let plain = message.blob();
        verifier.update(plain);
        done += plain.len() as u64;
        let sealed;
        let bytes = match encrypting.as_mut() {
            Some(e) => {
                sealed = e.update(plain).map_err(TakeError::Encrypt)?;
                &sealed[..]
            }
            None => plain,
        };
        if !bytes.is_empty() {
            stored.update(bytes);
            size += bytes.len() as u64;
            sink.write(bytes).await?;
        }
        progress.send_replace(Some(Progress { total, done }));
    }
    let (_, plaintext_sha256) = verifier.finish()?;
    let encrypted = encrypting.is_some();
    if let Some(e) = encrypting {
        let rest = e.finish().map_err(TakeError::Encrypt)?;
        stored.update(&rest);
        size += rest.len() as u64;
        sink.write(&rest).await?;
    }
    Ok(Streamed {
        revision,
        etcd_version,
        size,
        sha256: hex::encode(stored.finish().as_ref()),
        plaintext_sha256,
        encrypted,
    })
}

/// A private temporary file in the snapshot directory.
struct TempFile {
    path: PathBuf,
    file: tokio::fs::File,
}

impl Sink for TempFile {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), TakeError> {
        self.file.write_all(bytes).await.map_err(|e| {
            TakeError::Fs(fsutil::FsError {
                op: "write",
                path: self.path.clone(),
                source: fsutil::explain_full(e),
            })
        })
    }
}

/// A snapshot that took its final name.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The file's name in the snapshot directory.
    pub file_name: String,
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// What the directory's files need besides the stream.
pub struct Naming<'a> {
    pub cluster_id: u64,
    /// The time the name carries (the slot's, or now for an on-demand save), unix seconds.
    pub time: u64,
    pub ca_hash: String,
    pub node: &'a str,
    /// The manifest's copy of the CA seal secret (`seal_secret::for_manifest`).
    pub ca_seal_secret: Option<crate::issuer::seal_secret::SealedCopy>,
}

/// Takes one verified snapshot into the snapshot directory: temporary file, fsync, final name
/// (`.db`, or `.db.age` when encrypted), manifest. On failure nothing but the removed
/// temporary file was touched.
pub async fn save_to_dir(
    settings: &Settings,
    tls: &ClientTls,
    naming: Naming<'_>,
    lost: impl Fn() -> bool,
    progress: &watch::Sender<Option<Progress>>,
) -> Result<Saved, TakeError> {
    let recipient = recipient(settings)?;
    let dir = &settings.snapshot.dir;
    fsutil::ensure_dir(dir, fsutil::MODE_DIR)?;
    let tmp = dir.join(format!(".quorate-snapshot-{}.db.tmp", naming.time));
    let _ = std::fs::remove_file(&tmp);
    let result = async {
        let file = fsutil::create_private_new(&tmp)?;
        let mut sink = TempFile {
            path: tmp.clone(),
            file: tokio::fs::File::from_std(file),
        };
        let streamed =
            stream_verified(settings, tls, recipient.as_ref(), lost, progress, &mut sink).await?;
        sink.file
            .flush()
            .await
            .map_err(|e| TakeError::Io(format!("write {}: {e}", tmp.display())))?;
        let out = sink.file.into_std().await;
        finish_in_dir(dir, &tmp, out, streamed, &naming)
    }
    .await;
    progress.send_replace(None);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn finish_in_dir(
    dir: &Path,
    tmp: &Path,
    out: std::fs::File,
    streamed: Streamed,
    naming: &Naming<'_>,
) -> Result<Saved, TakeError> {
    let name = SnapshotName {
        time: naming.time,
        cluster_id: naming.cluster_id,
        revision: streamed.revision,
    };
    let (Some(db_name), Some(manifest_name)) =
        (name.file_name_for(streamed.encrypted), name.manifest_name())
    else {
        return Err(TakeError::Io(format!(
            "{} is not a representable time",
            naming.time
        )));
    };
    let dest = dir.join(&db_name);
    fsutil::persist(out, tmp, &dest)?;
    let manifest = manifest(&streamed, naming);
    fsutil::atomic_write(
        &dir.join(manifest_name),
        manifest.to_json().as_bytes(),
        fsutil::MODE_PRIVATE,
    )?;
    Ok(Saved {
        file_name: db_name,
        path: dest,
        manifest,
    })
}

/// The manifest of a verified stream.
pub fn manifest(streamed: &Streamed, naming: &Naming<'_>) -> Manifest {
    Manifest {
        cluster_id: format!("{:016x}", naming.cluster_id),
        revision: streamed.revision,
        etcd_version: streamed.etcd_version.clone(),
        ca_hash: naming.ca_hash.clone(),
        node: naming.node.to_owned(),
        time: file::rfc3339(UNIX_EPOCH + Duration::from_secs(naming.time)),
        slot: naming.time,
        size: streamed.size,
        sha256: streamed.sha256.clone(),
        encrypted: streamed.encrypted,
        plaintext_sha256: Some(streamed.plaintext_sha256.clone()),
        ca_seal_secret: naming.ca_seal_secret.clone(),
    }
}

/// Unix seconds of `t`.
/// Refuses a snapshot on a member that lacks the cluster's CA seal secret: its manifest could
/// not carry it.
pub async fn check_seal_copy(
    settings: &Settings,
    endpoints: &[String],
    tls: &ClientTls,
) -> Result<(), TakeError> {
    use crate::issuer::seal_secret;
    let held = seal_secret::load(&settings.pki_dir());
    if held.is_some() {
        return Ok(());
    }
    // Only a host without the secret asks etcd whether the cluster has one.
    let mut client = connect(endpoints, tls, Duration::from_secs(5)).await?;
    let cluster = seal_secret::cluster_id(&mut client).await?;
    match seal_secret::snapshot_refusal(held.as_ref(), cluster.as_deref()) {
        Some(why) => Err(TakeError::Refused(why)),
        None => Ok(()),
    }
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
