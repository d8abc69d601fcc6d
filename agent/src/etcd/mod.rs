//! etcd: the local member (how its command line is rendered ([`argv`]), how the process is
//! supervised ([`Supervisor`]), how its health is probed ([`Prober`]), what its data dir says
//! ([`data`])) and the running cluster ([`cluster`]: the member list and membership changes).
//! Every etcd failure is classified once, in [`error`]; members are [`Member`]s.

pub mod argv;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod data;
pub mod error;
mod logs;
pub mod member;
pub mod probe;
pub mod restore;
pub mod roles;
mod supervisor;
pub mod version;

pub use argv::{render_args, ClusterState, EtcdLaunch, TlsFiles};
pub use error::{ClusterError, ConnectFailure, EtcdError};
pub use member::{Member, MemberHealth};
pub use probe::{EtcdHealth, Prober};
pub use supervisor::{next_backoff, probe_version, EtcdCommand, ProcessState, Supervisor};
