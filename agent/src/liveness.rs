//! Heartbeats of the agent's long-running loops. Each loop beats on every turn (they all have a
//! periodic tick); the systemd watchdog is fed only while every loop has beaten recently, so a
//! stuck loop gets the agent restarted by systemd instead of hiding behind a healthy process.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often [`beating`] beats while it waits.
const BEAT_WHILE_WAITING: Duration = Duration::from_secs(1);

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

/// Runs `work` to its end while `heartbeat` keeps beating (so a long wait on etcd never starves
/// the systemd watchdog); `None` when `cancel` fires first, which drops `work` at its current
/// await point. Every long piece of IO in a loop goes through this.
pub async fn beating<F: Future>(
    heartbeat: &Heartbeat,
    cancel: &CancellationToken,
    work: F,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(BEAT_WHILE_WAITING);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            out = &mut work => return Some(out),
            _ = tick.tick() => heartbeat.beat(),
        }
    }
}

/// The turns of a loop that looks at something every `period`: [`Turns::next`] waits for the
/// next one while the heartbeat beats every second, so a watchdog shorter than the period never
/// sees the loop as stuck between turns.
pub struct Turns {
    tick: tokio::time::Interval,
    beat: tokio::time::Interval,
}

impl Turns {
    /// The first turn comes at once.
    pub fn every(period: Duration) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            tick,
            beat: tokio::time::interval(BEAT_WHILE_WAITING),
        }
    }

    /// Waits for the next turn; false when `cancel` fired first.
    pub async fn next(&mut self, heartbeat: &Heartbeat, cancel: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return false,
                _ = self.beat.tick() => heartbeat.beat(),
                _ = self.tick.tick() => {
                    heartbeat.beat();
                    return true;
                }
            }
        }
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

    #[tokio::test]
    async fn beating_feeds_the_heartbeat_while_it_waits_and_stops_on_cancel() {
        let mut l = Liveness::new();
        let hb = l.register("slow");
        let cancel = CancellationToken::new();
        // Without beats the loop would be 3 s stale at the end of the work.
        let stale = beating(&hb, &cancel, async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            l.stale(Duration::from_millis(2500))
        })
        .await;
        assert_eq!(
            stale,
            Some(vec![]),
            "the heartbeat was fed while the work waited"
        );
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        let out = beating(&hb, &cancel, std::future::pending::<()>()).await;
        assert_eq!(out, None, "cancel ends the wait");
    }
}
