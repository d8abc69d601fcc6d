//! `quorate snapshot save [--out FILE]`: asks the local agent, over the control socket (root
//! or the service user only), for a verified snapshot taken now. Without `--out` the agent
//! keeps it in its snapshot directory; with `--out` its bytes stream here and this process
//! writes FILE, so the caller's own permissions apply: a private temporary file next to it,
//! fsync, and the final name only once the agent said the snapshot verified and the bytes
//! match its sha256. An existing FILE is replaced only with `--force`. Its manifest goes beside
//! it under the name `quorate restore` looks for (`backup.db` has `backup.json`), so a restore
//! of FILE checks the same things as a restore from the snapshot directory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ring::digest::{Context as Sha, SHA256};
use tokio::net::UnixStream;

use super::progress::BytesProgress;
use crate::config::Settings;
use crate::fsutil;
use crate::snapshot::save::LOCK_WAIT;
use crate::snapshot::wire::{Decoder, Done, Frame};

/// The longest silence from the agent (it may wait for the job lock first).
const IDLE_TIMEOUT: Duration = Duration::from_secs(LOCK_WAIT.as_secs() + 60);

/// `--out FILE`, being written.
struct OutFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    sha: Sha,
    size: u64,
}

impl OutFile {
    fn create(dest: &Path, force: bool) -> anyhow::Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| anyhow!("--out {} names no file", dest.display()))?
            .to_string_lossy()
            .into_owned();
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or_else(|| Path::new("."));
        if !dir.is_dir() {
            bail!(
                "the directory {} of --out does not exist: create it first or choose another \
                 --out",
                dir.display()
            );
        }
        if dest.exists() && !force {
            bail!(
                "{} exists already: pass --force to replace it, or choose another --out",
                dest.display()
            );
        }
        let (file, tmp) = fsutil::create_temp_next_to(&dir.join(&name), fsutil::MODE_PRIVATE)?;
        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
            sha: Sha::new(&SHA256),
            size: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let Some(file) = self.file.as_mut() else {
            bail!("internal: write after finish");
        };
        file.write_all(bytes).map_err(|e| {
            anyhow!(
                "cannot write {} (temporary file {}): {}",
                self.dest.display(),
                self.tmp.display(),
                fsutil::explain_full(e)
            )
        })?;
        self.sha.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Gives the file its final name, then writes its manifest beside it; returns the
    /// manifest's path (None when FILE's name leaves no room for one: no extension, or `.json`).
    fn finish(mut self, done: &Done, force: bool) -> anyhow::Result<Option<PathBuf>> {
        let sha = hex::encode(self.sha.clone().finish().as_ref());
        if sha != done.manifest.sha256 || self.size != done.manifest.size {
            bail!(
                "the bytes received ({} bytes, sha256 {sha}) are not what the agent sent ({} \
                 bytes, sha256 {}): try again",
                self.size,
                done.manifest.size,
                done.manifest.sha256
            );
        }
        let Some(file) = self.file.take() else {
            bail!("internal: finish twice");
        };
        let persisted = if force {
            fsutil::persist(file, &self.tmp, &self.dest)
        } else {
            fsutil::persist_new(file, &self.tmp, &self.dest)
        };
        persisted.map_err(|e| {
            if e.source.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!(
                    "{} appeared while the snapshot was taken: pass --force to replace it",
                    self.dest.display()
                )
            } else {
                anyhow!("cannot write {}: {}", self.dest.display(), e)
            }
        })?;
        let Some(path) = manifest_path(&self.dest) else {
            return Ok(None);
        };
        fsutil::atomic_write(
            &path,
            done.manifest.to_json().as_bytes(),
            fsutil::MODE_PRIVATE,
        )
        .map_err(|e| {
            anyhow!(
                "{} is saved and verified, but its manifest could not be written: {e}",
                self.dest.display()
            )
        })?;
        Ok(Some(path))
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Where the manifest of `--out FILE` goes: where a restore of FILE looks for it.
fn manifest_path(dest: &Path) -> Option<PathBuf> {
    let name = dest.file_name()?.to_str()?;
    let manifest = crate::snapshot::remote::names::manifest_for(name)?;
    (manifest != name).then(|| dest.with_file_name(manifest))
}

/// `quorate snapshot save [--out FILE] [--force]`.
pub async fn snapshot_save(
    settings: &Settings,
    out: Option<&Path>,
    force: bool,
) -> anyhow::Result<()> {
    let mut out_file = out.map(|p| OutFile::create(p, force)).transpose()?;
    let socket = settings.state_dir.join(crate::control::SOCKET_NAME);
    let stream = UnixStream::connect(&socket).await.map_err(|e| {
        anyhow!(
            "cannot connect to the agent's control socket {}: {e}. Is the agent running \
             (systemctl status quorate), and are you root or the service user?",
            socket.display()
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("control socket")?;
    let driver = tokio::spawn(conn);
    let path = if out.is_some() {
        "/v1/snapshot/save?out=true"
    } else {
        "/v1/snapshot/save"
    };
    let request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .context("the agent did not answer the save request")?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            bail!(
                "the agent answered {status}: {}",
                String::from_utf8_lossy(&text).trim_end()
            );
        }
        let mut progress = BytesProgress::new("snapshot");
        let mut decoder = Decoder::default();
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| anyhow!("the agent sent nothing for {}s", IDLE_TIMEOUT.as_secs()))?;
            let Some(frame) = frame else {
                progress.abandon();
                bail!("the agent's answer ended before the snapshot was done: the agent may have stopped");
            };
            let frame = frame.context("reading the agent's answer")?;
            let Ok(data) = frame.into_data() else { continue };
            decoder.push(&data);
            while let Some(f) = decoder.next_frame()? {
                match f {
                    Frame::Progress { done, total } => {
                        progress.set_total(total);
                        progress.set(done);
                    }
                    Frame::Data(bytes) => {
                        let Some(o) = out_file.as_mut() else {
                            bail!("the agent sent file bytes that were not asked for");
                        };
                        if let Err(e) = o.write(&bytes) {
                            progress.abandon();
                            return Err(e);
                        }
                        progress.add(bytes.len() as u64);
                    }
                    Frame::Failed(message) => {
                        progress.abandon();
                        bail!("the snapshot failed: {message}");
                    }
                    Frame::Done(done) => {
                        let manifest = match out_file.take() {
                            Some(o) => o.finish(&done, force)?,
                            None => None,
                        };
                        progress.finish("verified");
                        return Ok((*done, manifest));
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    let (done, manifest) = result?;
    let m = &done.manifest;
    let place = match (out, &done.file) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(f)) => settings.snapshot.dir.join(f).display().to_string(),
        (None, None) => "(unknown)".into(),
    };
    println!(
        "snapshot saved: {place}\n  revision {}, {} bytes, sha256 {}{}",
        m.revision,
        m.size,
        m.sha256,
        if m.encrypted {
            " (encrypted with snapshot.encryption_key_file)"
        } else {
            ""
        }
    );
    match (out, manifest) {
        (_, Some(path)) => println!("  manifest: {}", path.display()),
        (Some(p), None) => println!(
            "  no manifest written: {} has no extension to replace with .json (name it like \
             backup.db to get one; a restore works without it)",
            p.display()
        ),
        (None, None) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_goes_where_a_restore_looks_for_it() {
        let p = |s: &str| manifest_path(Path::new(s)).map(|p| p.display().to_string());
        assert_eq!(p("/b/backup.db").as_deref(), Some("/b/backup.json"));
        assert_eq!(p("/b/backup.db.age").as_deref(), Some("/b/backup.json"));
        assert_eq!(p("backup.db").as_deref(), Some("backup.json"));
        assert_eq!(p("/b/backup"), None, "no extension");
        assert_eq!(p("/b/backup.json"), None, "the file itself");
    }
}
