//! Wall-clock time as Unix seconds, the form stored in etcd records and gossip stamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds of `t` (0 before the epoch).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    unix(SystemTime::now())
}
