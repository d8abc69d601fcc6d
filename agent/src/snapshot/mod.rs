//! Scheduled snapshots of the keyspace. [`SnapshotTask`] takes them; [`schedule`] reads the
//! `schedule` setting (a 5-field cron expression in UTC, `@every <duration>`, or "" for off)
//! into a [`crate::jobs::Schedule`]; [`file`] names snapshot files, checks etcd's integrity
//! hash, describes a file in its manifest and decides which files retention removes;
//! [`take`] is the verified stream both scheduled and on-demand ([`save`]) snapshots take,
//! [`crypt`] encrypts it at rest when `encryption_key_file` is set.
//!
//! [`upload`] copies each new snapshot to `[snapshot.s3]` through [`remote`], which also lists,
//! prunes and downloads what the store holds.
//!
//! A snapshot is one file per schedule slot for the whole cluster, taken under the
//! `snapshot` job lock (see [`crate::jobs`]), so each file's name carries the cluster, the
//! slot's time and the revision, and a file that fails verification never takes that name.

pub mod crypt;
pub mod file;
pub mod key_check;
pub mod list;
pub mod remote;
pub mod save;
pub mod schedule;
mod status;
pub mod take;
mod task;
pub mod upload;
pub mod wire;

pub use save::OnDemand;
pub use status::{SaveReport, SnapshotStatus};
pub use task::SnapshotTask;
