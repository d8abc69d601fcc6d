//! Scheduled snapshots of the keyspace. [`SnapshotTask`] takes them; [`schedule`] reads the
//! `schedule` setting (a 5-field cron expression in UTC, `@every <duration>`, or "" for off)
//! into a [`crate::jobs::Schedule`]; [`file`] names snapshot files, checks etcd's integrity
//! hash, describes a file in its manifest and decides which files retention removes.
//!
//! [`upload`] copies each new snapshot to `[snapshot.s3]` through [`remote`], which also lists,
//! prunes and downloads what the store holds.
//!
//! A snapshot is one file per schedule slot for the whole cluster, taken under the
//! `snapshot` job lock (see [`crate::jobs`]), so each file's name carries the cluster, the
//! slot's time and the revision, and a file that fails verification never takes that name.

pub mod file;
pub mod list;
pub mod remote;
pub mod schedule;
mod status;
mod task;
pub mod upload;

pub use status::SnapshotStatus;
pub use task::SnapshotTask;
