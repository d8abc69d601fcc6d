//! Taking, holding and releasing a job lock, and the slot record of once-per-slot jobs (see
//! the module docs of [`crate::jobs`] for the protocol, the TTL and the renewal).

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pub use super::endpoints::EndpointErrors;
use super::endpoints::{Endpoints, EtcdRenewer};
use super::keepalive::KeepAlive;
pub use super::keepalive::LockStatus;
use super::{Job, LockHolder, LOCK_TTL};
use crate::etcd::client::ClientTls;

/// Errors of taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// No endpoint answered the grant and the transaction.
    #[error("cannot take the job lock {key}: {errors}")]
    Etcd {
        /// The lock key.
        key: String,
        /// What each endpoint answered.
        errors: EndpointErrors,
    },
}

/// Errors of reading a lock or a slot record.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No endpoint answered.
    #[error("cannot read {key}: {errors}")]
    Etcd {
        /// The key read.
        key: String,
        /// What each endpoint answered.
        errors: EndpointErrors,
    },
    /// The slot record is not one quorate wrote.
    #[error("{key} holds {value:?}, not a slot record: delete the key to start afresh")]
    BadSlot {
        /// The slot key.
        key: String,
        /// Its value, shortened.
        value: String,
    },
}

/// Errors of recording a slot.
#[derive(Debug, thiserror::Error)]
pub enum RecordSlotError {
    /// The lock was lost (or released), so the record would not be protected by it.
    #[error("the job lock {key} was lost: the slot was not recorded")]
    Lost {
        /// The lock key.
        key: String,
    },
    /// The lock key no longer carries this holder's lease.
    #[error(
        "the job lock {key} is no longer held under lease {lease:x}: the slot was not recorded"
    )]
    NotHeld {
        /// The lock key.
        key: String,
        /// This holder's lease.
        lease: i64,
    },
    /// No endpoint answered.
    #[error("cannot record the slot in {key}: {errors}")]
    Etcd {
        /// The slot key.
        key: String,
        /// What each endpoint answered.
        errors: EndpointErrors,
    },
}

/// The value of a slot key.
#[derive(Debug, Serialize, Deserialize)]
struct SlotRecord {
    slot: u64,
    node: String,
    recorded_at: u64,
}

/// The outcome of [`JobLocks::try_acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// This agent holds the lock now.
    Held(JobLock),
    /// Someone holds it (possibly this node, under a lease of an earlier run that has not
    /// expired yet).
    Busy(LockHolder),
}

/// Access to the job locks as one node: its name (written into the locks it takes), the etcd
/// endpoints to try in turn (its own first, then the other members'), and its TLS identity.
#[derive(Clone)]
pub struct JobLocks {
    node: String,
    endpoints: Endpoints,
}

impl JobLocks {
    /// Locks taken as `node`, through `endpoints` (https:// client URLs).
    pub fn new(node: impl Into<String>, endpoints: Vec<String>, tls: ClientTls) -> Self {
        Self {
            node: node.into(),
            endpoints: Endpoints::new(endpoints, tls),
        }
    }

    /// Takes `job`'s lock if nobody holds it: grants a lease of [`LOCK_TTL`], puts the lock key
    /// under it if the key is absent, and starts the keep-alive task. If the key is present,
    /// reports its holder. Must be called within a tokio runtime.
    pub async fn try_acquire(&self, job: Job) -> Result<Acquired, AcquireError> {
        let key = job.lock_key();
        let holder = LockHolder {
            node: self.node.clone(),
            job: Some(job),
            started_at: Some(unix_now()),
        };
        let value = holder.to_value();
        let mut granted_at = Instant::now();
        let attempt = self
            .endpoints
            .first_answer(0, |mut client| {
                let (key, value) = (key.clone(), value.clone());
                granted_at = Instant::now();
                async move {
                    let lease = client
                        .lease_grant(LOCK_TTL.as_secs() as i64, None)
                        .await?
                        .id();
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.as_str(),
                            value,
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else([TxnOp::get(key.as_str(), None)]);
                    match client.txn(txn).await {
                        Ok(r) if r.succeeded() => Ok((lease, None)),
                        Ok(r) => {
                            let _ = client.lease_revoke(lease).await;
                            Ok((lease, Some(current_value(&r.op_responses()))))
                        }
                        Err(e) => {
                            // The put may have happened; the lease expires unrenewed anyway.
                            let _ = client.lease_revoke(lease).await;
                            Err(e)
                        }
                    }
                }
            })
            .await;
        let (via, (lease, busy)) = attempt.map_err(|errors| AcquireError::Etcd {
            key: key.clone(),
            errors,
        })?;
        if let Some(value) = busy {
            let holder = value
                .map(|v| LockHolder::from_value(&v))
                .unwrap_or_else(|| LockHolder {
                    node: "unknown".to_owned(),
                    job: None,
                    started_at: None,
                });
            return Ok(Acquired::Busy(holder));
        }
        tracing::info!(%job, %key, lease, "took the job lock");
        Ok(Acquired::Held(JobLock::start(
            job,
            holder,
            lease,
            granted_at,
            via,
            self.endpoints.clone(),
        )))
    }

    /// Who holds `job`'s lock now, if anyone.
    pub async fn holder(&self, job: Job) -> Result<Option<LockHolder>, ReadError> {
        let key = job.lock_key();
        Ok(self.get(&key).await?.map(|v| LockHolder::from_value(&v)))
    }

    /// The last slot `job` was recorded as done in, if any.
    pub async fn last_slot(&self, job: Job) -> Result<Option<u64>, ReadError> {
        let key = job.slot_key();
        let Some(value) = self.get(&key).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<SlotRecord>(&value) {
            Ok(r) => Ok(Some(r.slot)),
            Err(_) => Err(ReadError::BadSlot {
                key,
                value: String::from_utf8_lossy(&value).chars().take(100).collect(),
            }),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ReadError> {
        self.endpoints
            .first_answer(0, |mut client| {
                let key = key.to_owned();
                async move { client.get(key, None).await }
            })
            .await
            .map(|(_, r)| r.kvs().first().map(|kv| kv.value().to_vec()))
            .map_err(|errors| ReadError::Etcd {
                key: key.to_owned(),
                errors,
            })
    }
}

/// A held job lock. Its keep-alive task renews the lease through the endpoints in turn; when
/// no renewal succeeds in time the lock is lost and [`JobLock::lost`] resolves. Release it with
/// [`JobLock::release`]; dropping it releases it in the background.
#[derive(Debug)]
pub struct JobLock {
    job: Job,
    holder: LockHolder,
    lease: i64,
    endpoints: Endpoints,
    stop: CancellationToken,
    lost: CancellationToken,
    status: watch::Receiver<LockStatus>,
    task: Option<JoinHandle<()>>,
}

impl JobLock {
    fn start(
        job: Job,
        holder: LockHolder,
        lease: i64,
        granted_at: Instant,
        via: usize,
        endpoints: Endpoints,
    ) -> Self {
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let (tx, status) = watch::channel(LockStatus::default());
        let keep_alive = KeepAlive {
            renewer: EtcdRenewer::new(endpoints.clone(), lease, LOCK_TTL, via),
            granted_at,
            ttl: LOCK_TTL,
            stop: stop.clone(),
            lost: lost.clone(),
            status: tx,
        };
        Self {
            job,
            holder,
            lease,
            endpoints,
            stop,
            lost,
            status,
            task: Some(tokio::spawn(keep_alive.run())),
        }
    }

    /// The job the lock was taken for.
    pub fn job(&self) -> Job {
        self.job
    }

    /// The value written into the lock key.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }

    /// The etcd lease the lock key is held under.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// Resolves when the lock is lost; a job selects on it to abort at a safe point.
    pub fn lost(&self) -> WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }

    /// Whether the lock is lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// A token cancelled when the lock is lost, for tasks of the job (cancelling it does not
    /// release the lock).
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.child_token()
    }

    /// The keep-alive task's published status (renewals, the endpoint used, the loss).
    pub fn status(&self) -> watch::Receiver<LockStatus> {
        self.status.clone()
    }

    /// Records that the job did `slot`, in the job's slot key, only if the lock key still
    /// carries this lock's lease (one transaction).
    pub async fn record_slot(&self, slot: u64) -> Result<(), RecordSlotError> {
        let lock_key = self.job.lock_key();
        if self.is_lost() || self.stop.is_cancelled() {
            return Err(RecordSlotError::Lost { key: lock_key });
        }
        let slot_key = self.job.slot_key();
        let record = SlotRecord {
            slot,
            node: self.holder.node.clone(),
            recorded_at: unix_now(),
        };
        // A struct of strings and integers always serializes.
        let value = serde_json::to_string(&record).unwrap_or_default();
        let lease = self.lease;
        let (_, succeeded) = self
            .endpoints
            .first_answer(0, |mut client| {
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(lock_key.as_str(), CompareOp::Greater, 0),
                        Compare::lease(lock_key.as_str(), CompareOp::Equal, lease),
                    ])
                    .and_then([TxnOp::put(slot_key.as_str(), value.as_str(), None)]);
                async move { client.txn(txn).await.map(|r| r.succeeded()) }
            })
            .await
            .map_err(|errors| RecordSlotError::Etcd {
                key: slot_key.clone(),
                errors,
            })?;
        if !succeeded {
            return Err(RecordSlotError::NotHeld {
                key: lock_key,
                lease,
            });
        }
        tracing::info!(job = %self.job, slot, "recorded the job's slot");
        Ok(())
    }

    /// Stops the keep-alive and revokes the lease (best effort; an unrevoked lease expires
    /// after [`LOCK_TTL`]).
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        tracing::info!(job = %self.job, lease = self.lease, "released the job lock");
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // The keep-alive task revokes the lease when it sees this.
        self.stop.cancel();
    }
}

/// The lock key's value from the `or_else` get of a failed "create if absent".
fn current_value(responses: &[TxnOpResponse]) -> Option<Vec<u8>> {
    responses.iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

use crate::clock::unix_now;
