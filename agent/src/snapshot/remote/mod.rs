//! Off-site copies of snapshots in an S3-compatible store, through the object_store crate.
//! [`RemoteStore`] uploads a snapshot file and its manifest (streamed: multipart beyond one
//! part, never the whole file in memory), lists what the store holds, applies remote retention
//! per cluster, and downloads a snapshot (streamed to a temporary file, checked against its
//! manifest's sha256 when there is one, fsynced and renamed). [`fetch_to`] is what a restore
//! from `s3://bucket/key` calls. The decisions (key names, grouping, retention) are in [`names`].

pub mod names;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

pub use names::{RemoteSnapshot, S3Source, S3SourceError};

use super::file::Manifest;
use crate::config::{S3Credentials, S3Settings};
use crate::fsutil;

/// One request's limit (a part of a multipart upload is one request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of one request, and the time they may take together: a store that is down fails
/// an upload within this, and the next slot tries again.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upload part size: files up to this go in one PUT, larger ones as a multipart upload.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once.
const PART_CONCURRENCY: usize = 2;

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("no credentials for {location}. Fix: set access_key_id_file and secret_access_key_file in [snapshot.s3], or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the agent's environment")]
    NoCredentials { location: String },
    #[error("cannot set up the client for {location}: {source}")]
    Client {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("upload of {key} to {location}: {source}")]
    Upload {
        location: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("listing {location}: {source}")]
    List {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("removing {key} from {location}: {source}")]
    Delete {
        location: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("download of s3://{bucket}/{key}: {source}")]
    Download {
        bucket: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading {path}: {source}")]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    WriteLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Fs(#[from] fsutil::FsError),
    #[error("s3://{bucket}/{key} does not match its manifest ({what}): the object is damaged or not the snapshot its manifest describes. Fix: pick another snapshot (`quorate snapshot list`)")]
    Mismatch {
        bucket: String,
        key: String,
        what: String,
    },
    #[error("{what} did not finish within {}", humantime::format_duration(*.after))]
    Timeout { what: String, after: Duration },
}

impl RemoteError {
    /// The error with its causes ("... error sending request: ... Connection refused"): the
    /// HTTP client's top-level messages alone rarely say why.
    pub fn describe(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let text = e.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = e.source();
        }
        out
    }
}

/// A snapshot in the store, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    pub snapshot: RemoteSnapshot,
    /// The manifest's sha256 when the manifest is there and readable.
    pub manifest_sha256: Option<String>,
    /// Why the manifest is missing or unreadable.
    pub manifest_problem: Option<String>,
}

/// A store, as configured in `[snapshot.s3]`.
pub struct RemoteStore {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    location: String,
}

impl RemoteStore {
    /// A client for `s3` (no request is made yet). Credentials come from the settings, or
    /// else from the `AWS_*` variables.
    pub fn new(s3: &S3Settings) -> Result<Self, RemoteError> {
        use_ring();
        let location = s3.location();
        let credentials = s3
            .credentials
            .clone()
            .or_else(|| S3Credentials::from_env(|v| std::env::var(v).ok()))
            .ok_or_else(|| RemoteError::NoCredentials {
                location: location.clone(),
            })?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&s3.bucket)
            .with_region(&s3.region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key.expose())
            .with_virtual_hosted_style_request(!s3.path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_allow_http(s3.allow_http),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
            });
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token.expose());
        }
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|source| RemoteError::Client {
            location: location.clone(),
            source,
        })?;
        Ok(Self {
            store: Arc::new(store),
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            location,
        })
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The key a local file name gets.
    pub fn key_for(&self, file_name: &str) -> String {
        format!("{}{file_name}", self.prefix)
    }

    /// Uploads a snapshot file, then its manifest (so a manifest in the store always
    /// describes complete data); returns the data object's key.
    pub async fn upload(&self, file: &Path, manifest: &Path) -> Result<String, RemoteError> {
        let key = self.key_for(&file_name(file)?);
        self.put_file(file, &key).await?;
        let manifest_key = self.key_for(&file_name(manifest)?);
        self.put_file(manifest, &manifest_key).await?;
        Ok(key)
    }

    async fn put_file(&self, path: &Path, key: &str) -> Result<(), RemoteError> {
        let mut local =
            tokio::fs::File::open(path)
                .await
                .map_err(|source| RemoteError::ReadLocal {
                    path: path.to_owned(),
                    source,
                })?;
        let store: Arc<dyn ObjectStore> = self.store.clone();
        // At most PART_CONCURRENCY parts in flight: memory stays a few parts, whatever the size.
        let mut writer = BufWriter::with_capacity(store, Key::from(key), PART_SIZE)
            .with_max_concurrency(PART_CONCURRENCY);
        let copied = async {
            tokio::io::copy(&mut local, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(source) = copied {
            // Leaves no half multipart upload behind (best effort: the store may be down).
            let _ = writer.abort().await;
            return Err(RemoteError::Upload {
                location: self.location.clone(),
                key: key.to_owned(),
                source,
            });
        }
        Ok(())
    }

    /// Every snapshot under the prefix (all clusters), oldest first, without reading
    /// manifests.
    pub async fn snapshots(&self) -> Result<Vec<RemoteSnapshot>, RemoteError> {
        let prefix = Key::from(self.prefix.as_str());
        let prefix = (!self.prefix.is_empty()).then_some(&prefix);
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|source| RemoteError::List {
                location: self.location.clone(),
                source,
            })?;
        let listed: Vec<names::Listed> = objects
            .into_iter()
            .map(|o| names::Listed {
                key: o.location.to_string(),
                size: o.size,
                modified: o.last_modified.timestamp(),
            })
            .collect();
        Ok(names::group(&self.prefix, &listed))
    }

    /// Every snapshot under the prefix with what its manifest says, oldest first.
    pub async fn list(&self) -> Result<Vec<RemoteEntry>, RemoteError> {
        let mut out = Vec::new();
        for snapshot in self.snapshots().await? {
            let (manifest_sha256, manifest_problem) = match &snapshot.manifest_key {
                None => (None, Some("no manifest".to_owned())),
                Some(key) => match self.manifest(key).await {
                    Ok(m) if m.sha256.len() == 64 => (Some(m.sha256), None),
                    Ok(_) => (None, Some("the manifest has no sha256".to_owned())),
                    Err(e) => (None, Some(e)),
                },
            };
            out.push(RemoteEntry {
                snapshot,
                manifest_sha256,
                manifest_problem,
            });
        }
        Ok(out)
    }

    async fn manifest(&self, key: &str) -> Result<Manifest, String> {
        let bytes = self
            .store
            .get(&Key::from(key))
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the manifest is not valid: {e}"))
    }

    /// Remote retention: removes the oldest snapshots of `cluster_id` beyond `retain` (never
    /// the newest), each with its manifest; returns the removed data keys.
    pub async fn prune(&self, cluster_id: u64, retain: usize) -> Result<Vec<String>, RemoteError> {
        let all = self.snapshots().await?;
        let mut removed = Vec::new();
        for old in names::to_prune(&all, cluster_id, retain) {
            // The manifest first: a snapshot without one is visibly incomplete.
            for key in old.manifest_key.iter().chain([&old.key]) {
                self.store
                    .delete(&Key::from(key.as_str()))
                    .await
                    .map_err(|source| RemoteError::Delete {
                        location: self.location.clone(),
                        key: key.clone(),
                        source,
                    })?;
            }
            tracing::info!(key = %old.key, "old snapshot removed from the store");
            removed.push(old.key);
        }
        Ok(removed)
    }

    /// Downloads `key` to `dst`: streamed to a temporary file next to it, checked against the
    /// manifest's sha256 and size when the store has a manifest for it, fsynced, renamed.
    /// Returns the size and sha256.
    pub async fn download(&self, key: &str, dst: &Path) -> Result<(u64, String), RemoteError> {
        let (size, sha, _) = self.download_with_manifest(key, dst, &|_, _| {}).await?;
        Ok((size, sha))
    }

    /// [`Self::download`], also returning the store's manifest for `key` when it has one;
    /// `on_bytes(done, total)` follows the bytes as they arrive.
    pub async fn download_with_manifest(
        &self,
        key: &str,
        dst: &Path,
        on_bytes: &OnBytes<'_>,
    ) -> Result<(u64, String, Option<Manifest>), RemoteError> {
        let (dir, file) = match key.rsplit_once('/') {
            Some((dir, file)) => (format!("{dir}/"), file),
            None => (String::new(), key),
        };
        let manifest = match names::manifest_for(file) {
            Some(m) => self.manifest(&format!("{dir}{m}")).await.ok(),
            None => None,
        };
        let tmp = temp_next_to(dst);
        let _ = std::fs::remove_file(&tmp);
        let result = self
            .download_to(key, &tmp, manifest.as_ref(), on_bytes)
            .await;
        match result {
            Ok((file, size, sha)) => {
                fsutil::persist(file, &tmp, dst)?;
                Ok((size, sha, manifest))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    async fn download_to(
        &self,
        key: &str,
        tmp: &Path,
        manifest: Option<&Manifest>,
        on_bytes: &OnBytes<'_>,
    ) -> Result<(std::fs::File, u64, String), RemoteError> {
        let download_error = |source| RemoteError::Download {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source,
        };
        let write_error = |source| RemoteError::WriteLocal {
            path: tmp.to_owned(),
            source,
        };
        let got = self
            .store
            .get(&Key::from(key))
            .await
            .map_err(download_error)?;
        let total = Some(got.meta.size);
        let mut stream = got.into_stream();
        let mut out = tokio::fs::File::from_std(fsutil::create_private_new(tmp)?);
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(download_error)?;
            hash.update(&piece);
            size += piece.len() as u64;
            out.write_all(&piece).await.map_err(write_error)?;
            on_bytes(size, total);
        }
        out.flush().await.map_err(write_error)?;
        let sha = hex::encode(hash.finish().as_ref());
        if let Some(m) = manifest {
            let what = if m.size != size {
                Some(format!("{size} bytes, the manifest says {}", m.size))
            } else if m.sha256 != sha {
                Some(format!("sha256 {sha}, the manifest says {}", m.sha256))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(RemoteError::Mismatch {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    what,
                });
            }
        }
        Ok((out.into_std().await, size, sha))
    }
}

/// Installs ring as the process's default rustls provider, which reqwest's provider-less
/// rustls (object_store's HTTP client) needs before the first client is built; a no-op when
/// one is installed already. quorate's own TLS configs name ring explicitly.
pub fn use_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Downloads the snapshot `source` names to `dst` (what a restore from `s3://bucket/key`
/// calls): the endpoint, region and credentials come from `[snapshot.s3]`, the bucket and
/// key from `source`. Returns the store's manifest of it, when there is one.
pub async fn fetch_to(
    source: &S3Source,
    s3: &S3Settings,
    dst: &Path,
    on_bytes: &OnBytes<'_>,
) -> Result<Option<Manifest>, RemoteError> {
    let settings = S3Settings {
        bucket: source.bucket.clone(),
        ..s3.clone()
    };
    let store = RemoteStore::new(&settings)?;
    let (size, sha, manifest) = store
        .download_with_manifest(&source.key, dst, on_bytes)
        .await?;
    tracing::info!(source = %source, dst = %dst.display(), size, sha256 = %sha, "snapshot downloaded");
    Ok(manifest)
}

/// What a download calls as bytes arrive: (bytes done, the object's size).
pub type OnBytes<'a> = dyn Fn(u64, Option<u64>) + Send + Sync + 'a;

fn file_name(path: &Path) -> Result<String, RemoteError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| RemoteError::ReadLocal {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })
}

fn temp_next_to(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    dst.with_file_name(format!(".{name}.part"))
}
