//! The client side of the directory (see [`crate::gossip::directory`]): one UDP socket on an
//! ephemeral port, an [`Ask`] sealed under the token's gossip key to one member at a time, the
//! first authentic answer carrying the ask's id wins (from whichever address: a member bound to
//! 0.0.0.0 may answer from another of its addresses). Datagrams that do not open, or that
//! answer another ask, are dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::gossip::directory::{Ask, ClientMessage, Directory};
use crate::gossip::Envelope;

/// Traffic this client sent and received on the client channel.
#[derive(Debug, Default)]
pub struct Traffic {
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub bytes_received: AtomicU64,
}

impl Traffic {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// (datagrams sent, bytes sent, datagrams received, bytes received).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.datagrams_sent.load(Ordering::Relaxed),
            self.bytes_sent.load(Ordering::Relaxed),
            self.datagrams_received.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
        )
    }
}

/// Asks members for the directory.
pub struct Discovery {
    socket: UdpSocket,
    envelope: Envelope,
    name: String,
    pub traffic: Traffic,
}

impl Discovery {
    /// A socket on an ephemeral port of `bind` (or of any address of its family).
    pub async fn bind(bind: IpAddr, key: &[u8; 32], name: &str) -> std::io::Result<Self> {
        let socket = match UdpSocket::bind(SocketAddr::new(bind, 0)).await {
            Ok(s) => s,
            Err(_) => {
                let any = match bind {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                UdpSocket::bind(SocketAddr::new(any, 0)).await?
            }
        };
        Ok(Self {
            socket,
            envelope: Envelope::client(key),
            name: name.to_owned(),
            traffic: Traffic::default(),
        })
    }

    /// Asks `targets` in order until one answers within `timeout`.
    pub async fn ask_any(
        &self,
        targets: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Directory, String> {
        let mut why = Vec::new();
        for target in targets {
            match self.ask(*target, timeout).await {
                Ok(d) => return Ok(d),
                Err(e) => why.push(format!("{target}: {e}")),
            }
        }
        if why.is_empty() {
            return Err("no member to ask (join is empty)".into());
        }
        Err(why.join("; "))
    }

    /// Asks `target` once.
    pub async fn ask(&self, target: SocketAddr, timeout: Duration) -> Result<Directory, String> {
        let id: u64 = rand::random();
        let sent_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let ask = ClientMessage::Ask(Ask {
            id,
            sent_at,
            name: self.name.clone(),
        });
        let sealed = self.envelope.seal(&ask.encode());
        self.socket
            .send_to(&sealed, target)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        Traffic::add(&self.traffic.datagrams_sent, 1);
        Traffic::add(&self.traffic.bytes_sent, sealed.len());
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await;
            let (len, _from) = match received {
                Err(_) => {
                    return Err(
                        "no answer (is it a member whose etcd is healthy, and is this the \
                         cluster's token?)"
                            .into(),
                    )
                }
                Ok(Err(e)) => return Err(format!("cannot receive: {e}")),
                Ok(Ok(r)) => r,
            };
            Traffic::add(&self.traffic.datagrams_received, 1);
            Traffic::add(&self.traffic.bytes_received, len);
            let Ok(payload) = self.envelope.open(&buf[..len]) else {
                continue;
            };
            match ClientMessage::decode(&payload) {
                Some(ClientMessage::Answer(d)) if d.id == id => return Ok(d),
                _ => continue,
            }
        }
    }
}
