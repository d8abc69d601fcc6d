//! The keep-alive task of a held job lock: it owns the lease's renewal, publishes a
//! [`LockStatus`], and tells the holder when the lock is lost. The loop is generic over how a
//! renewal is done ([`Renew`]) so that its timing is tested with a paused clock and no etcd.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{LOSS_MARGIN, RENEW_EVERY, RETRY_EVERY};

/// The outcome of one renewal round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Renewal {
    /// etcd renewed the lease for `ttl`, through endpoint `via`.
    Renewed { ttl: Duration, via: String },
    /// etcd says the lease no longer exists.
    Expired,
    /// No endpoint answered.
    Failed(String),
}

/// How a lease is renewed and revoked.
pub(super) trait Renew: Send {
    /// One round: tries the endpoints until one answers.
    fn renew(&mut self) -> impl Future<Output = Renewal> + Send;
    /// Revokes the lease, best effort.
    fn revoke(&mut self) -> impl Future<Output = ()> + Send;
}

/// What the keep-alive task publishes about a held lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockStatus {
    /// Successful renewals so far (the grant not counted).
    pub renewals: u64,
    /// The endpoint of the last successful renewal.
    pub renewed_via: Option<String>,
    /// The error of the last failed renewal round, cleared by a success.
    pub last_error: Option<String>,
    /// Why the lock was lost, once it is.
    pub lost: Option<String>,
}

/// The keep-alive loop of one lease.
pub(super) struct KeepAlive<R> {
    pub renewer: R,
    /// When the grant was sent: the lease cannot expire before this plus `ttl`.
    pub granted_at: Instant,
    pub ttl: Duration,
    /// Cancelled by the holder to release.
    pub stop: CancellationToken,
    /// Cancelled by this task when the lock is lost.
    pub lost: CancellationToken,
    pub status: watch::Sender<LockStatus>,
}

enum End {
    Stopped,
    Lost(String),
    Expired,
}

impl<R: Renew> KeepAlive<R> {
    /// Renews every [`RENEW_EVERY`] (retrying every [`RETRY_EVERY`]) until stopped or lost;
    /// revokes the lease at the end unless etcd said it is gone.
    pub(super) async fn run(mut self) {
        let mut deadline = self.granted_at + self.ttl.saturating_sub(LOSS_MARGIN);
        let mut next = self.granted_at + RENEW_EVERY;
        let end = loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break End::Stopped,
                _ = sleep_until(deadline) => break self.unrenewed(),
                _ = sleep_until(next) => {}
            }
            let sent = Instant::now();
            let renewal = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break End::Stopped,
                _ = sleep_until(deadline) => break self.unrenewed(),
                r = self.renewer.renew() => r,
            };
            match renewal {
                Renewal::Renewed { ttl, via } => {
                    deadline = sent + ttl.saturating_sub(LOSS_MARGIN);
                    next = sent + RENEW_EVERY;
                    self.status.send_modify(|s| {
                        s.renewals += 1;
                        s.renewed_via = Some(via);
                        s.last_error = None;
                    });
                }
                Renewal::Expired => break End::Expired,
                Renewal::Failed(e) => {
                    tracing::warn!(error = %e, "job lock renewal failed; retrying");
                    next = Instant::now() + RETRY_EVERY;
                    self.status.send_modify(|s| s.last_error = Some(e));
                }
            }
        };
        match end {
            End::Stopped => self.renewer.revoke().await,
            End::Lost(reason) => {
                self.lose(reason);
                // Best effort: if etcd can be reached after all, free the lock at once.
                self.renewer.revoke().await;
            }
            End::Expired => self.lose("etcd says the lease expired".to_owned()),
        }
    }

    fn unrenewed(&self) -> End {
        let last = self.status.borrow().last_error.clone();
        End::Lost(format!(
            "no renewal succeeded before the lease could expire ({})",
            last.as_deref().unwrap_or("renewal did not finish")
        ))
    }

    fn lose(&self, reason: String) {
        tracing::warn!(%reason, "job lock lost");
        self.status.send_modify(|s| s.lost = Some(reason));
        self.lost.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::jobs::LOCK_TTL;

    /// A scripted renewer: `script(n)` gives the delay and outcome of the n-th renewal.
    struct Fake<S> {
        script: S,
        calls: Arc<Mutex<Vec<Instant>>>,
        revoked: Arc<Mutex<bool>>,
    }

    impl<S: FnMut(usize) -> (Duration, Renewal) + Send> Renew for Fake<S> {
        async fn renew(&mut self) -> Renewal {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Instant::now());
                calls.len() - 1
            };
            let (delay, outcome) = (self.script)(n);
            tokio::time::sleep(delay).await;
            outcome
        }

        async fn revoke(&mut self) {
            *self.revoked.lock().unwrap() = true;
        }
    }

    struct Run {
        stop: CancellationToken,
        lost: CancellationToken,
        status: watch::Receiver<LockStatus>,
        calls: Arc<Mutex<Vec<Instant>>>,
        revoked: Arc<Mutex<bool>>,
        task: tokio::task::JoinHandle<()>,
        start: Instant,
    }

    fn start(script: impl FnMut(usize) -> (Duration, Renewal) + Send + 'static) -> Run {
        let (tx, status) = watch::channel(LockStatus::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let revoked = Arc::new(Mutex::new(false));
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let start = Instant::now();
        let ka = KeepAlive {
            renewer: Fake {
                script,
                calls: calls.clone(),
                revoked: revoked.clone(),
            },
            granted_at: start,
            ttl: LOCK_TTL,
            stop: stop.clone(),
            lost: lost.clone(),
            status: tx,
        };
        Run {
            stop,
            lost,
            status,
            calls,
            revoked,
            task: tokio::spawn(ka.run()),
            start,
        }
    }

    fn ok() -> (Duration, Renewal) {
        (
            Duration::ZERO,
            Renewal::Renewed {
                ttl: LOCK_TTL,
                via: "e1".into(),
            },
        )
    }

    fn fail() -> (Duration, Renewal) {
        (Duration::ZERO, Renewal::Failed("down".into()))
    }

    fn offsets(run: &Run) -> Vec<Duration> {
        run.calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - run.start)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_third_of_the_ttl_and_holds_while_renewals_succeed() {
        let run = start(|_| ok());
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(!run.lost.is_cancelled());
        let expected: Vec<Duration> = (1..=12).map(|k| RENEW_EVERY * k).collect();
        assert_eq!(offsets(&run), expected);
        let s = run.status.borrow().clone();
        assert_eq!(s.renewals, 12);
        assert_eq!(s.renewed_via.as_deref(), Some("e1"));
        run.stop.cancel();
        run.task.await.unwrap();
        assert!(*run.revoked.lock().unwrap(), "release revokes");
        assert!(!run.lost.is_cancelled(), "a release is not a loss");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_are_retried_and_the_lock_is_lost_before_the_lease_can_expire() {
        let run = start(|_| fail());
        run.lost.cancelled().await;
        let lost_after = Instant::now() - run.start;
        assert_eq!(lost_after, LOCK_TTL - LOSS_MARGIN);
        // First at TTL/3, then every RETRY_EVERY until the loss.
        let calls = offsets(&run);
        assert_eq!(calls.first(), Some(&RENEW_EVERY));
        for pair in calls.windows(2) {
            assert_eq!(pair[1] - pair[0], RETRY_EVERY);
        }
        assert!(calls.iter().all(|c| *c < lost_after));
        let s = run.status.borrow().clone();
        assert!(s.lost.as_deref().unwrap().contains("down"), "{s:?}");
        run.task.await.unwrap();
        assert!(
            *run.revoked.lock().unwrap(),
            "a lost lease is still revoked, best effort"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_renewal_does_not_delay_the_loss() {
        let run = start(|_| (Duration::from_secs(3600), Renewal::Failed("hung".into())));
        run.lost.cancelled().await;
        assert_eq!(Instant::now() - run.start, LOCK_TTL - LOSS_MARGIN);
        assert_eq!(offsets(&run), vec![RENEW_EVERY]);
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_failures_extends_the_deadline_from_its_send_time() {
        // Renewals 0..=5 fail (at 5 s .. 10 s), the 6th succeeds at 11 s after a 1 s delay,
        // then everything fails: the lease counts from 11 s, so the loss is at 11 + 13 s.
        let run = start(|n| match n {
            6 => (
                Duration::from_secs(1),
                Renewal::Renewed {
                    ttl: LOCK_TTL,
                    via: "e2".into(),
                },
            ),
            _ => fail(),
        });
        run.lost.cancelled().await;
        let calls = offsets(&run);
        assert_eq!(calls[6], Duration::from_secs(11));
        assert_eq!(calls[7], Duration::from_secs(16));
        assert_eq!(
            Instant::now() - run.start,
            Duration::from_secs(11) + LOCK_TTL - LOSS_MARGIN
        );
        assert_eq!(run.status.borrow().renewals, 1);
        assert_eq!(run.status.borrow().renewed_via.as_deref(), Some("e2"));
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_ttl_from_etcd_shortens_the_deadline() {
        let run = start(|n| match n {
            0 => (
                Duration::ZERO,
                Renewal::Renewed {
                    ttl: Duration::from_secs(6),
                    via: "e1".into(),
                },
            ),
            _ => fail(),
        });
        run.lost.cancelled().await;
        assert_eq!(
            Instant::now() - run.start,
            RENEW_EVERY + Duration::from_secs(6) - LOSS_MARGIN
        );
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_is_lost_at_once_and_not_revoked() {
        let run = start(|_| (Duration::ZERO, Renewal::Expired));
        run.lost.cancelled().await;
        assert_eq!(Instant::now() - run.start, RENEW_EVERY);
        run.task.await.unwrap();
        assert!(!*run.revoked.lock().unwrap());
        assert!(run
            .status
            .borrow()
            .lost
            .as_deref()
            .unwrap()
            .contains("expired"));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_during_a_renewal_releases_without_a_loss() {
        let run = start(|_| (Duration::from_secs(3600), Renewal::Failed("hung".into())));
        tokio::time::sleep(RENEW_EVERY + Duration::from_secs(1)).await;
        run.stop.cancel();
        run.task.await.unwrap();
        assert!(*run.revoked.lock().unwrap());
        assert!(!run.lost.is_cancelled());
        assert_eq!(run.status.borrow().lost, None);
    }
}
