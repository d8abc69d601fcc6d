//! The local etcd member: how its command line is rendered ([`argv`]), how the process is
//! supervised ([`Supervisor`]), how its health is probed ([`Prober`]), and what its data dir
//! says ([`data`]).

pub mod argv;
pub mod client;
pub mod data;
mod logs;
pub mod probe;
mod supervisor;

pub use argv::{render_args, ClusterState, EtcdLaunch, TlsFiles};
pub use probe::{EtcdHealth, EtcdMember, Prober};
pub use supervisor::{next_backoff, EtcdCommand, ProcessState, Supervisor};
