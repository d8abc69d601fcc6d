//! Configuration: one serde tree with named defaults ([`Config`]), loaded from the TOML file
//! and then from `QUORATE_*` environment variables ([`load`]), then checked against the host
//! ([`validate`]) into the resolved [`Settings`] the agent runs with. Every problem is reported
//! at start, naming the field and the fix, so a bad config never gets as far as the network.

mod builder;
mod error;
mod host;
mod load;
mod s3;
mod settings;
mod size;
mod validate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use builder::ConfigBuilder;
pub use error::{ConfigError, ConfigErrors};
pub use host::{HostProbe, SystemHost};
pub use load::{load, Loaded, ENV_PREFIX, ENV_VARS};
pub use s3::{S3Credentials, S3Section, S3Settings, Secret, DEFAULT_S3_PREFIX, DEFAULT_S3_REGION};
pub use settings::{
    https_url, ClientSettings, EtcdSettings, JoinTarget, MaintenanceSettings, Settings,
    SnapshotSettings,
};
pub use size::{format_size, parse_size, SizeProblem, SizeText};
pub use validate::{parse_etcd_version, validate, Validated, MIN_ETCD_VERSION};

/// Where `quorate run` looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/quorate/quorate.toml";
/// Default state directory (plan, PKI, etcd data).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/quorate";
/// Default etcd client port.
pub const DEFAULT_CLIENT_PORT: u16 = 2379;
/// Default etcd peer port.
pub const DEFAULT_PEER_PORT: u16 = 2380;
/// Default gossip (UDP) and agent API (TCP) port.
pub const DEFAULT_AGENT_PORT: u16 = 7946;
/// Default health endpoint.
pub const DEFAULT_HEALTH_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7947);
/// Default history etcd keeps before periodic compaction removes it.
pub const DEFAULT_COMPACTION_RETENTION: Duration = Duration::from_secs(60 * 60);
/// Default etcd backend quota (etcd's own default, made explicit).
pub const DEFAULT_QUOTA: &str = "2GiB";
/// Default of `maintenance.defrag_min_reclaim`: a member is defragmented for fragmentation only
/// when at least this much would be given back.
pub const DEFAULT_DEFRAG_MIN_RECLAIM: &str = "100MiB";
/// Default of `snapshot.retain`: a week of the default six-hourly snapshots.
pub const DEFAULT_SNAPSHOT_RETAIN: u32 = 28;
/// Port of etcd's plain-HTTP metrics listener (kubeadm's choice).
pub const DEFAULT_METRICS_PORT: u16 = 2381;
/// Default plain-HTTP metrics listener of etcd: loopback only.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_METRICS_PORT);

/// The configuration file as written by the operator. All fields have defaults except the
/// token; see docs/configuration.md for the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's name (etcd member name, certificate CN). Default: the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The address other hosts reach this one at. Default: detected from the interfaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<IpAddr>,
    /// Where gossip and the agent API listen. Default: the advertise address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_addr: Option<IpAddr>,
    /// Whether this agent is the seed: it creates the CA and decides the bootstrap plan.
    pub seed: bool,
    /// How many agents form the initial cluster.
    pub bootstrap_expect: u32,
    /// Other agents to contact: `host`, `host:port`, `[v6]:port`.
    pub join: Vec<String>,
    /// The join token, inline. Prefer `token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the join token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Pin of the cluster CA, `sha256:<hex>` of its SubjectPublicKeyInfo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_hash: Option<String>,
    /// State directory: plan, PKI, etcd data.
    pub state_dir: PathBuf,
    /// Remove an etcd member whose agent has been dead in gossip this long (off by default).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub remove_dead_after: Option<Duration>,
    pub ports: Ports,
    pub etcd: EtcdSection,
    pub health: HealthSection,
    pub pki: PkiSection,
    pub log: LogSection,
    pub maintenance: MaintenanceSection,
    pub snapshot: SnapshotSection,
    /// Seed only: form the cluster from this snapshot (an absolute path, or s3://bucket/key
    /// through [snapshot.s3]) instead of empty, keeping the CA sealed in it
    /// (docs/operations.md, Restore onto new hosts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// With `restore_from`: create a new CA when the snapshot's cannot be unsealed (every
    /// client certificate must then be reissued).
    pub restore_new_ca: bool,
    /// `member` (runs etcd, the default) or `client` (keeps a consumer host's client
    /// certificate and endpoint list fresh; no etcd, never a member).
    pub mode: Mode,
    /// Client mode only: what to keep and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSection>,
    /// Members: etcd roles that client certificates may be given (`[[roles]]`: name, prefixes,
    /// access). Every member should have the same; see docs/security.md.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<crate::etcd::roles::RoleDef>,
}

/// What an agent is on its host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Member,
    Client,
}

/// `[client]`: a client-mode agent's certificate and files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// The client certificate's name (CN). Default: the node name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The directory to keep ca.pem, NAME.pem, NAME-key.pem, endpoints, endpoints.json and
    /// etcdctl.env in (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A shell command run (`sh -c`) after those files change, once per burst of changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_change: Option<String>,
    /// The etcd role of the certificate (one of the members' `[[roles]]`). Default: read and
    /// write everything outside /quorate/.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: None,
            advertise_addr: None,
            bind_addr: None,
            seed: false,
            bootstrap_expect: 3,
            join: Vec::new(),
            token: None,
            token_file: None,
            ca_hash: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            remove_dead_after: None,
            ports: Ports::default(),
            etcd: EtcdSection::default(),
            health: HealthSection::default(),
            pki: PkiSection::default(),
            log: LogSection::default(),
            maintenance: MaintenanceSection::default(),
            snapshot: SnapshotSection::default(),
            restore_from: None,
            restore_new_ca: false,
            mode: Mode::Member,
            client: None,
            roles: Vec::new(),
        }
    }
}

/// Port numbers; gossip is UDP and the agent API TCP, so they may share a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
    pub gossip: u16,
    pub api: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            client: DEFAULT_CLIENT_PORT,
            peer: DEFAULT_PEER_PORT,
            gossip: DEFAULT_AGENT_PORT,
            api: DEFAULT_AGENT_PORT,
        }
    }
}

/// How the local etcd is run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSection {
    /// The etcd binary: a path, or a name looked up on PATH.
    pub binary: PathBuf,
    /// Also listen for clients on 127.0.0.1 (or ::1 for IPv6 hosts).
    pub listen_localhost: bool,
    /// Extra flags appended to etcd's command line.
    pub extra_args: Vec<String>,
    /// How long etcd gets to stop after SIGTERM before SIGKILL.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// History etcd keeps before periodic compaction removes it. Unset:
    /// [`DEFAULT_COMPACTION_RETENTION`]; `"0"` turns compaction off.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub compaction_retention: Option<Duration>,
    /// etcd's backend quota (`"2GiB"`, `"512MiB"`, bytes). Unset: [`DEFAULT_QUOTA`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<SizeText>,
    /// Where etcd serves `/metrics` over plain HTTP, `host:port`. Unset:
    /// [`DEFAULT_METRICS_LISTEN`]; `""` turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Turn on etcd's corruption detection where it is cheap (the compacted-revision hash
    /// check, etcd 3.5.5 and later).
    pub corruption_check: bool,
}

impl Default for EtcdSection {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("etcd"),
            listen_localhost: true,
            extra_args: Vec::new(),
            stop_timeout: Duration::from_secs(10),
            compaction_retention: None,
            quota: None,
            metrics_listen: None,
            corruption_check: true,
        }
    }
}

/// Day-2 maintenance of the etcd members (defragmentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceSection {
    /// A member whose file is less than half in use is defragmented only when at least this
    /// much would be reclaimed (`"100MiB"`, bytes). Unset: [`DEFAULT_DEFRAG_MIN_RECLAIM`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defrag_min_reclaim: Option<SizeText>,
}

/// Scheduled snapshots of the keyspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSection {
    /// A 5-field cron expression in UTC, `@every <duration>`, or "" for off. Unset:
    /// [`crate::snapshot::schedule::DEFAULT_SCHEDULE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How many snapshot files each node keeps. Unset: [`DEFAULT_SNAPSHOT_RETAIN`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain: Option<u32>,
    /// Where they are written. Unset: `<state_dir>/snapshots`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Off-site copies in an S3-compatible store; unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Section>,
    /// An age X25519 identity file (`age-keygen`): snapshots are then stored encrypted to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_file: Option<PathBuf>,
}

/// The local health endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    pub listen: SocketAddr,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HEALTH_LISTEN,
        }
    }
}

/// Certificate lifetimes and an optional operator-supplied CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiSection {
    /// Lifetime of node certificates (renewed automatically at two thirds of it).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub node_cert_validity: Option<Duration>,
    /// Lifetime of the client certificates `quorate cert client` asks for.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub client_cert_validity: Option<Duration>,
    /// The old single lifetime of node and client certificates: still read (with a warning)
    /// where the two above are not set.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub cert_validity: Option<Duration>,
    /// Lifetime of a CA that quorate creates.
    #[serde(with = "humantime_serde")]
    pub ca_validity: Duration,
    /// An existing CA certificate to use instead of creating one (seed only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<PathBuf>,
    /// The private key of `ca_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key_file: Option<PathBuf>,
}

const DAY: u64 = 24 * 60 * 60;
/// Default lifetime of node certificates: short, since they renew themselves.
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * DAY);
/// Default lifetime of `quorate cert client` certificates.
pub const DEFAULT_CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(365 * DAY);

impl PkiSection {
    /// The lifetime of node certificates: `node_cert_validity`, else the old `cert_validity`,
    /// else [`DEFAULT_NODE_CERT_VALIDITY`].
    pub fn node_validity(&self) -> Duration {
        self.node_cert_validity
            .or(self.cert_validity)
            .unwrap_or(DEFAULT_NODE_CERT_VALIDITY)
    }

    /// The lifetime of client certificates, resolved like [`Self::node_validity`].
    pub fn client_validity(&self) -> Duration {
        self.client_cert_validity
            .or(self.cert_validity)
            .unwrap_or(DEFAULT_CLIENT_CERT_VALIDITY)
    }
}

impl Default for PkiSection {
    fn default() -> Self {
        Self {
            node_cert_validity: None,
            client_cert_validity: None,
            cert_validity: None,
            ca_validity: Duration::from_secs(10 * 365 * DAY),
            ca_cert_file: None,
            ca_key_file: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter: `info`, `debug`, `quorate=debug,etcd=warn`, ...
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
