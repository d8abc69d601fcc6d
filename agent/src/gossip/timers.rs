//! foca's timers, delivered in order from one place. Spawning a sleep per timer reorders them
//! under load, which breaks foca's probe cycle (foca issue 26); a min-heap polled by the
//! gossip task's own loop cannot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokio::time::Instant;

use super::NodeId;

/// A min-heap of (deadline, sequence, timer); the sequence keeps equal deadlines in FIFO order.
#[derive(Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u64, foca::Timer<NodeId>)>>,
    seq: u64,
}

impl TimerQueue {
    pub fn push(&mut self, at: Instant, timer: foca::Timer<NodeId>) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, timer)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest timer that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<foca::Timer<NodeId>> {
        if self.next_deadline()? <= now {
            self.heap.pop().map(|Reverse((_, _, t))| t)
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let mut q = TimerQueue::default();
        let t0 = Instant::now();
        let id = NodeId::placeholder("127.0.0.1:1".parse().unwrap());
        q.push(
            t0 + Duration::from_millis(20),
            foca::Timer::RemoveDown(id.clone()),
        );
        q.push(
            t0 + Duration::from_millis(10),
            foca::Timer::PeriodicGossip(1),
        );
        q.push(
            t0 + Duration::from_millis(10),
            foca::Timer::PeriodicGossip(2),
        );
        assert!(q.pop_due(t0).is_none());
        let now = t0 + Duration::from_millis(15);
        assert!(matches!(
            q.pop_due(now),
            Some(foca::Timer::PeriodicGossip(1))
        ));
        assert!(matches!(
            q.pop_due(now),
            Some(foca::Timer::PeriodicGossip(2))
        ));
        assert!(q.pop_due(now).is_none());
        assert_eq!(q.len(), 1);
        assert!(matches!(
            q.pop_due(t0 + Duration::from_millis(20)),
            Some(foca::Timer::RemoveDown(_))
        ));
        assert!(q.is_empty());
    }
}
