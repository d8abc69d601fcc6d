//! The resolved settings the agent runs with: every default filled in, the token read, the
//! addresses checked, the etcd binary found. Also the paths and URLs derived from them, so
//! there is one place that knows where things live.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{LogSection, PkiSection, Ports, DEFAULT_AGENT_PORT};
use crate::etcd::argv::EtcdTuning;
use crate::keyring::TokenKeys;
use crate::pki::CaHash;

/// Resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub advertise: IpAddr,
    pub bind: IpAddr,
    pub seed: bool,
    pub bootstrap_expect: u32,
    pub join: Vec<JoinTarget>,
    /// The join tokens in force: the config's, or the ring kept in the state directory once
    /// rotated ([`Settings::apply_kept_ring`]). Seal and sign with `token.derive`, check with
    /// `token.accepted_keys`.
    pub token: TokenKeys,
    /// The token the config names (for status: whether it was rotated away).
    pub config_token: crate::token::JoinToken,
    pub ca_pin: Option<CaHash>,
    pub state_dir: PathBuf,
    pub remove_dead_after: Option<Duration>,
    pub ports: Ports,
    pub etcd: EtcdSettings,
    pub health_listen: SocketAddr,
    pub pki: PkiSection,
    pub log: LogSection,
    pub maintenance: MaintenanceSettings,
    pub snapshot: SnapshotSettings,
    /// Seed only: the snapshot to form the cluster from (a path or s3://bucket/key).
    pub restore_from: Option<String>,
    /// With `restore_from`: a new CA when the snapshot's cannot be unsealed.
    pub restore_new_ca: bool,
    /// Client mode: what the agent keeps on this consumer host (None: a member).
    pub client: Option<ClientSettings>,
    /// `[[roles]]`, in canonical order (see [`crate::etcd::roles`]).
    pub roles: Vec<crate::etcd::roles::RoleDef>,
}

/// A client-mode agent's resolved `[client]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The certificate's name.
    pub name: String,
    /// Where the files are kept.
    pub dir: PathBuf,
    /// Run with `sh -c` after the files change.
    pub on_change: Option<String>,
    /// The certificate's etcd role (None: the default client role).
    pub role: Option<String>,
}

/// Resolved snapshot settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// None: snapshots are off.
    pub schedule: Option<crate::jobs::Schedule>,
    /// The schedule as written (for status and logs).
    pub schedule_text: String,
    /// Files kept per node (at least 1).
    pub retain: usize,
    /// Where snapshot files are written.
    pub dir: PathBuf,
    /// Where they are uploaded; None: nowhere.
    pub s3: Option<super::S3Settings>,
    /// The age identity snapshots are encrypted to; None: stored plain.
    pub encryption_key_file: Option<PathBuf>,
}

/// Resolved maintenance settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceSettings {
    /// Bytes a fragmented member must give back to be defragmented automatically.
    pub defrag_min_reclaim: u64,
}

/// Resolved etcd settings.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Absolute path of the etcd binary.
    pub binary: PathBuf,
    /// Its version, as `etcd --version` printed it.
    pub version: (u32, u32, u32),
    pub listen_localhost: bool,
    /// The flags after the cluster and TLS ones: compaction, quota, the metrics listener and
    /// what is left of the operator's `etcd.extra_args` once quorate took over the flags it
    /// now owns.
    pub tuning: EtcdTuning,
    pub stop_timeout: Duration,
}

impl EtcdSettings {
    /// What a client-mode agent carries: it never starts etcd.
    pub fn not_run() -> Self {
        Self {
            binary: PathBuf::new(),
            version: (0, 0, 0),
            listen_localhost: false,
            tuning: EtcdTuning::default(),
            stop_timeout: Duration::ZERO,
        }
    }
}

/// `https://` URL for an address and port (IPv6 in brackets).
pub fn https_url(ip: IpAddr, port: u16) -> String {
    format!("https://{}", SocketAddr::new(ip, port))
}

impl Settings {
    /// Puts the join token ring kept in the state directory (a rotated token) in force in place
    /// of the config's token, and says where the ring came from.
    pub fn apply_kept_ring(
        &mut self,
    ) -> Result<crate::keyring::Origin, crate::keyring::KeyringError> {
        let (ring, origin) = crate::keyring::resolve(&self.config_token, &self.state_dir)?;
        self.token = TokenKeys::fixed(ring);
        Ok(origin)
    }

    /// This member's etcd peer URL.
    pub fn peer_url(&self) -> String {
        https_url(self.advertise, self.ports.peer)
    }
    /// This member's advertised etcd client URL.
    pub fn client_url(&self) -> String {
        https_url(self.advertise, self.ports.client)
    }
    /// The loopback address of the advertise address's family.
    pub fn localhost(&self) -> IpAddr {
        match self.advertise {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }
    /// Where gossip binds (UDP).
    pub fn gossip_bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.ports.gossip)
    }
    /// Where gossip is reached by others.
    pub fn gossip_advertise(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.ports.gossip)
    }
    /// Where the agent API binds (TCP, TLS).
    pub fn api_bind(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.ports.api)
    }
    /// Where the agent API is reached by others.
    pub fn api_advertise(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.ports.api)
    }
    /// PKI directory.
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }
    /// etcd data directory.
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.state_dir.join("etcd")
    }
}

/// Another agent to contact: a host name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTarget {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for JoinTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for JoinTarget {
    type Err = String;

    /// Accepts `host`, `host:port`, `1.2.3.4`, `1.2.3.4:port`, `::1`, `[::1]` and `[::1]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty address".into());
        }
        if let Ok(v6) = s.parse::<Ipv6Addr>() {
            return Ok(Self {
                host: v6.to_string(),
                port: DEFAULT_AGENT_PORT,
            });
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Self {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let v6: Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("`{inner}` is not an IPv6 address"))?;
            return Ok(Self {
                host: v6.to_string(),
                port: DEFAULT_AGENT_PORT,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{p}` is not a port number"))?,
            ),
            None => (s, DEFAULT_AGENT_PORT),
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
            });
        if !valid_host {
            return Err(format!("`{host}` is neither an IP address nor a host name"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jt(s: &str) -> Result<(String, u16), String> {
        s.parse::<JoinTarget>().map(|t| (t.host, t.port))
    }

    #[test]
    fn join_target_forms() {
        assert_eq!(jt("10.0.0.1"), Ok(("10.0.0.1".into(), 7946)));
        assert_eq!(jt("10.0.0.1:8000"), Ok(("10.0.0.1".into(), 8000)));
        assert_eq!(jt("::1"), Ok(("::1".into(), 7946)));
        assert_eq!(jt("[::1]"), Ok(("::1".into(), 7946)));
        assert_eq!(jt("[fd00::2]:9000"), Ok(("fd00::2".into(), 9000)));
        assert_eq!(jt("etcd-1.lan"), Ok(("etcd-1.lan".into(), 7946)));
        assert_eq!(jt("etcd-1.lan:1"), Ok(("etcd-1.lan".into(), 1)));
        assert!(jt("").is_err());
        assert!(jt("host:0").is_err());
        assert!(jt("host:http").is_err());
        assert!(jt("bad host").is_err());
        assert!(jt("[nope]").is_err());
    }

    #[test]
    fn join_target_display_round_trips() {
        for s in ["10.0.0.1:7946", "[fd00::2]:9000", "h.lan:1"] {
            assert_eq!(s.parse::<JoinTarget>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            https_url("fd00::1".parse().unwrap(), 2380),
            "https://[fd00::1]:2380"
        );
        assert_eq!(
            https_url("10.1.2.3".parse().unwrap(), 2379),
            "https://10.1.2.3:2379"
        );
    }
}
