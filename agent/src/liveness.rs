//! Heartbeats of the agent's long-running loops. Each loop beats on every turn (they all have a
//! periodic tick); the systemd watchdog is fed only while every loop has beaten recently, so a
//! stuck loop gets the agent restarted by systemd instead of hiding behind a healthy process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One loop's heartbeat.
#[derive(Clone)]
pub struct Heartbeat {
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    /// Records that the loop is alive now.
    pub fn beat(&self) {
        self.last
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The registry of all heartbeats.
pub struct Liveness {
    origin: Instant,
    loops: Vec<(&'static str, Arc<AtomicU64>)>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            loops: Vec::new(),
        }
    }

    /// Registers a loop; it counts as alive from now on until it stops beating.
    pub fn register(&mut self, name: &'static str) -> Heartbeat {
        let last = Arc::new(AtomicU64::new(self.origin.elapsed().as_millis() as u64));
        self.loops.push((name, last.clone()));
        Heartbeat {
            origin: self.origin,
            last,
        }
    }

    /// Loops that have not beaten within `max_age`.
    pub fn stale(&self, max_age: Duration) -> Vec<&'static str> {
        let now = self.origin.elapsed().as_millis() as u64;
        self.loops
            .iter()
            .filter(|(_, last)| {
                now.saturating_sub(last.load(Ordering::Relaxed)) > max_age.as_millis() as u64
            })
            .map(|(name, _)| *name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_stale() {
        let mut l = Liveness::new();
        let a = l.register("a");
        let _b = l.register("b");
        assert!(l.stale(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        a.beat();
        assert_eq!(l.stale(Duration::from_millis(20)), vec!["b"]);
    }
}
