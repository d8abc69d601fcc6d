//! `quorate snapshot save` on the agent's side: an on-demand snapshot taken now, through the
//! same verified path as the scheduled ones ([`super::take`]), under the same `snapshot` job
//! lock (so never at the same time as a scheduled one), without recording or consuming a
//! schedule slot. It lands in the snapshot directory (and is then subject to retention), or,
//! for `--out`, its bytes stream to the CLI over the control socket, which writes the file
//! itself. The answer is a body of [`super::wire`] frames.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::status::SaveReport;
use super::take::{self, save_to_dir, stream_verified, Naming, Progress, Sink, TakeError};
use super::wire::{Done, Frame};
use crate::config::Settings;
use crate::etcd::EtcdHealth;
use crate::jobs::{Acquired, Job, JobLock, JobLocks};
use crate::pki::TlsMaterial;

/// How long a save waits for the job lock (a scheduled snapshot or defragmentation may hold
/// it) before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);
const LOCK_RETRY: Duration = Duration::from_secs(1);

/// Where an on-demand snapshot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The agent's snapshot directory.
    Dir,
    /// The client, over the control socket.
    Client,
}

/// Takes on-demand snapshots; cheap to clone (the control socket holds one).
#[derive(Clone)]
pub struct OnDemand {
    settings: Arc<Settings>,
    health: watch::Receiver<EtcdHealth>,
    material: watch::Receiver<Arc<TlsMaterial>>,
    progress: watch::Sender<Option<Progress>>,
    /// To the snapshot task, which counts every save in its status (and uploads it).
    reports: mpsc::Sender<SaveReport>,
    cancel: CancellationToken,
}

impl OnDemand {
    pub fn new(
        settings: Arc<Settings>,
        health: watch::Receiver<EtcdHealth>,
        material: watch::Receiver<Arc<TlsMaterial>>,
        progress: watch::Sender<Option<Progress>>,
        reports: mpsc::Sender<SaveReport>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            settings,
            health,
            material,
            progress,
            reports,
            cancel,
        }
    }

    /// Starts a save; the answer's body is the returned stream of frames.
    pub fn start(&self, target: Target) -> FrameBody {
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let last = tokio::select! {
                biased;
                _ = this.cancel.cancelled() => Frame::Failed("the agent is stopping".into()),
                result = this.run(target, &tx) => match result {
                    Ok(done) => Frame::Done(Box::new(done)),
                    Err(e) => {
                        tracing::warn!(error = %e, "on-demand snapshot failed");
                        Frame::Failed(e.to_string())
                    }
                },
            };
            this.progress.send_replace(None);
            let _ = tx.send(last.encode()).await;
        });
        FrameBody(rx)
    }

    /// Takes a snapshot into the snapshot directory and waits for it (what a rolling minor
    /// upgrade of etcd takes first).
    pub async fn save_to_dir(&self) -> Result<Done, TakeError> {
        let (tx, mut rx) = mpsc::channel(16);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let result = self.run(Target::Dir, &tx).await;
        self.progress.send_replace(None);
        drop(tx);
        let _ = drain.await;
        result
    }

    /// Takes the snapshot and reports how it went to the snapshot task.
    async fn run(&self, target: Target, tx: &mpsc::Sender<Bytes>) -> Result<Done, TakeError> {
        let started = Instant::now();
        let result = self.take(target, tx).await;
        let report = match &result {
            Ok(done) => SaveReport::Taken {
                file: done.file.clone(),
                size: done.manifest.size,
                duration_ms: started.elapsed().as_millis() as u64,
                at: take::unix_secs(SystemTime::now()),
            },
            Err(e) => SaveReport::Failed(format!("on-demand snapshot: {e}")),
        };
        // The task takes reports between its turns; a full queue (saves back to back while
        // it uploads) costs a count, never the save.
        if self.reports.try_send(report).is_err() {
            tracing::warn!("the snapshot task did not take this save's report");
        }
        result
    }

    async fn take(&self, target: Target, tx: &mpsc::Sender<Bytes>) -> Result<Done, TakeError> {
        let Some(tls) = self.material.borrow().client().cloned() else {
            return Err(TakeError::Io(
                "this node has no certificate yet: wait until the agent is ready".into(),
            ));
        };
        let health = self.health.borrow().clone();
        let cluster_id = health.cluster_id.ok_or(TakeError::NotReady)?;
        let endpoints = health.endpoints(self.settings.client_url());
        take::check_seal_copy(&self.settings, &endpoints, &tls).await?;
        let locks = JobLocks::new(&self.settings.name, endpoints, tls.clone());
        let lock = acquire(&locks).await?;
        let naming = Naming {
            cluster_id,
            time: take::unix_secs(SystemTime::now()),
            ca_hash: self
                .material
                .borrow()
                .ca_hash
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_default(),
            node: &self.settings.name,
            ca_seal_secret: crate::issuer::seal_secret::for_manifest(
                &self.settings.pki_dir(),
                &self.settings.token.primary(),
            ),
        };
        tracing::info!(?target, "taking an on-demand snapshot");
        let result = match target {
            Target::Dir => self.to_dir(&tls, naming, &lock, tx).await,
            Target::Client => self.to_client(&tls, naming, &lock, tx).await,
        };
        lock.release().await;
        if let Ok(done) = &result {
            tracing::info!(
                file = done.file.as_deref().unwrap_or("(sent to the client)"),
                size = done.manifest.size,
                revision = done.manifest.revision,
                "on-demand snapshot taken and verified"
            );
        }
        result
    }

    async fn to_dir(
        &self,
        tls: &crate::etcd::client::ClientTls,
        naming: Naming<'_>,
        lock: &JobLock,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Done, TakeError> {
        let mut seen = self.progress.subscribe();
        let save = save_to_dir(
            &self.settings,
            tls,
            naming,
            || lock.is_lost(),
            &self.progress,
        );
        tokio::pin!(save);
        loop {
            tokio::select! {
                saved = &mut save => {
                    let saved = saved?;
                    return Ok(Done { file: Some(saved.file_name), manifest: saved.manifest });
                }
                Ok(()) = seen.changed() => {
                    let p = *seen.borrow_and_update();
                    if let Some(Progress { total, done }) = p {
                        // Progress is advisory: a slow client does not hold the save up.
                        let _ = tx.try_send(Frame::Progress { done, total }.encode());
                    }
                }
            }
        }
    }

    async fn to_client(
        &self,
        tls: &crate::etcd::client::ClientTls,
        naming: Naming<'_>,
        lock: &JobLock,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Done, TakeError> {
        let recipient = take::recipient(&self.settings)?;
        let mut sink = ToClient { tx };
        let streamed = stream_verified(
            &self.settings,
            tls,
            recipient.as_ref(),
            || lock.is_lost(),
            &self.progress,
            &mut sink,
        )
        .await?;
        Ok(Done {
            file: None,
            manifest: take::manifest(&streamed, &naming),
        })
    }
}

/// Waits for the snapshot job lock up to [`LOCK_WAIT`].
async fn acquire(locks: &JobLocks) -> Result<JobLock, TakeError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut logged = false;
    loop {
        let why = match locks.try_acquire(Job::Snapshot).await {
            Ok(Acquired::Held(lock)) => return Ok(lock),
            Ok(Acquired::Busy(holder)) => format!("the snapshot job lock is held by {holder}"),
            Err(e) => format!("cannot take the snapshot job lock: {e}"),
        };
        if !logged {
            logged = true;
            tracing::info!(why = %why, "on-demand snapshot waits for the job lock");
        }
        if Instant::now() >= deadline {
            return Err(TakeError::Io(format!(
                "{why} (waited {}s): try again when it is done",
                LOCK_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
}

/// The bytes to store, as data frames to the client.
struct ToClient<'a> {
    tx: &'a mpsc::Sender<Bytes>,
}

impl Sink for ToClient<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), TakeError> {
        self.tx
            .send(Frame::Data(Bytes::copy_from_slice(bytes)).encode())
            .await
            .map_err(|_| TakeError::Sink("the client went away during the save".into()))
    }
}

/// The answer's body: the frames as they come.
pub struct FrameBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for FrameBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}
