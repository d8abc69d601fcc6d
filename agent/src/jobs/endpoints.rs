//! Talking to etcd through whichever member answers. A job may be taking this member's own
//! etcd down, so every request of the job lock goes to the endpoints in turn, each with
//! [`REQUEST_TIMEOUT`], until one answers.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};

use super::keepalive::{Renew, Renewal};
use super::REQUEST_TIMEOUT;
use crate::etcd::client::{connect, ClientTls};
use crate::etcd::EtcdError;

/// What each endpoint answered when none of them did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointErrors(pub Vec<(String, String)>);

impl fmt::Display for EndpointErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no etcd endpoints given");
        }
        let parts: Vec<String> = self.0.iter().map(|(u, e)| format!("{u}: {e}")).collect();
        f.write_str(&parts.join("; "))
    }
}

/// The endpoints of a lock and the TLS identity to use with them.
#[derive(Clone)]
pub(super) struct Endpoints {
    urls: Vec<String>,
    tls: ClientTls,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("urls", &self.urls)
            .finish()
    }
}

impl Endpoints {
    pub(super) fn new(urls: Vec<String>, tls: ClientTls) -> Self {
        Self { urls, tls }
    }

    /// Runs `op` on a client of each endpoint in turn, starting with endpoint `start`, until
    /// one succeeds; returns its index and answer.
    pub(super) async fn first_answer<T, F, Fut>(
        &self,
        start: usize,
        mut op: F,
    ) -> Result<(usize, T), EndpointErrors>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut errors = EndpointErrors::default();
        let n = self.urls.len();
        for k in 0..n {
            let i = (start + k) % n;
            let url = &self.urls[i];
            let attempt = async {
                let client = connect(std::slice::from_ref(url), &self.tls, REQUEST_TIMEOUT).await?;
                op(client).await
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
                Ok(Ok(v)) => return Ok((i, v)),
                Ok(Err(e)) => errors
                    .0
                    .push((url.clone(), EtcdError::classify(&e).to_string())),
                Err(_) => errors.0.push((url.clone(), "request timed out".to_owned())),
            }
        }
        Err(errors)
    }

    async fn connect(&self, i: usize) -> Result<Client, etcd_client::Error> {
        connect(
            std::slice::from_ref(&self.urls[i]),
            &self.tls,
            REQUEST_TIMEOUT,
        )
        .await
    }
}

/// Whether etcd said the lease does not exist (expired or revoked); the keep-alive opening
/// reports a zero TTL as this error.
fn lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(EtcdError::classify(e), EtcdError::LeaseNotFound)
}

/// A keep-alive stream to one endpoint, with the client that carries it.
struct Stream {
    _client: Client,
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

/// Renews one lease through the endpoints: it keeps a keep-alive stream to the endpoint that
/// last answered and moves on to the next endpoint when that one fails.
pub(super) struct EtcdRenewer {
    endpoints: Endpoints,
    lease: i64,
    ttl: Duration,
    current: usize,
    stream: Option<Stream>,
}

impl EtcdRenewer {
    /// `first` is the endpoint the lease was granted through.
    pub(super) fn new(endpoints: Endpoints, lease: i64, ttl: Duration, first: usize) -> Self {
        Self {
            endpoints,
            lease,
            ttl,
            current: first,
            stream: None,
        }
    }

    /// One renewal through the current endpoint: Some(ttl) if renewed, None if the lease is
    /// gone.
    async fn renew_here(&mut self) -> Result<Option<Duration>, String> {
        if let Some(s) = &mut self.stream {
            s.keeper
                .keep_alive()
                .await
                .map_err(|e| EtcdError::classify(&e).to_string())?;
            return match s
                .responses
                .message()
                .await
                .map_err(|e| EtcdError::classify(&e).to_string())?
            {
                Some(r) if r.ttl() > 0 => Ok(Some(Duration::from_secs(r.ttl() as u64))),
                Some(_) => Ok(None),
                None => Err("the keep-alive stream closed".to_owned()),
            };
        }
        let mut client = self
            .endpoints
            .connect(self.current)
            .await
            .map_err(|e| EtcdError::classify(&e).to_string())?;
        // Opening the stream renews once (and fails with "lease not found" for a TTL of 0).
        match client.lease_keep_alive(self.lease).await {
            Ok((keeper, responses)) => {
                self.stream = Some(Stream {
                    _client: client,
                    keeper,
                    responses,
                });
                Ok(Some(self.ttl))
            }
            Err(e) if lease_not_found(&e) => Ok(None),
            Err(e) => Err(EtcdError::classify(&e).to_string()),
        }
    }
}

impl Renew for EtcdRenewer {
    async fn renew(&mut self) -> Renewal {
        let n = self.endpoints.urls.len();
        let mut errors = EndpointErrors::default();
        for _ in 0..n {
            let url = self.endpoints.urls[self.current].clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, self.renew_here()).await {
                Ok(Ok(Some(ttl))) => return Renewal::Renewed { ttl, via: url },
                Ok(Ok(None)) => return Renewal::Expired,
                Ok(Err(e)) => errors.0.push((url, e)),
                Err(_) => errors.0.push((url, "request timed out".to_owned())),
            }
            self.stream = None;
            self.current = (self.current + 1) % n;
        }
        Renewal::Failed(errors.to_string())
    }

    async fn revoke(&mut self) {
        self.stream = None;
        let lease = self.lease;
        let revoked = self
            .endpoints
            .first_answer(self.current, |mut c| async move {
                match c.lease_revoke(lease).await {
                    Err(e) if !lease_not_found(&e) => Err(e),
                    _ => Ok(()),
                }
            })
            .await;
        if let Err(e) = revoked {
            tracing::debug!(lease, error = %e, "could not revoke the job lock lease; it expires by itself");
        }
    }
}
