//! Bytes of a snapshot on the move for a restore: the agent downloading an `s3://` source
//! before it decides the plan, or a member fetching the snapshot from the deciding agent.
//! Both can take minutes for a large keyspace, so the agent publishes how far they are
//! ([`Transfers`], a watch), /status carries it, `quorate restore` draws it as a bar and
//! STATUS= says it.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One transfer under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// What moves, for a person: "downloading s3://b/k", "fetching the snapshot from n1".
    pub what: String,
    pub done: u64,
    /// The size, when known.
    pub total: Option<u64>,
}

impl Transfer {
    /// "downloading s3://b/k: 12.0 MiB of 40.0 MiB".
    pub fn line(&self) -> String {
        let done = crate::defrag::human(self.done);
        match self.total {
            Some(total) => format!("{}: {done} of {}", self.what, crate::defrag::human(total)),
            None => format!("{}: {done}", self.what),
        }
    }
}

/// The publishing side: cheap to clone (the control socket's handler and the controller each
/// hold one; a restore is never two at once).
#[derive(Clone, Debug)]
pub struct Transfers(watch::Sender<Option<Transfer>>);

impl Transfers {
    pub fn new() -> (Self, watch::Receiver<Option<Transfer>>) {
        let (tx, rx) = watch::channel(None);
        (Self(tx), rx)
    }

    /// Starts publishing a transfer of `what`; it ends when the meter is dropped.
    pub fn start(&self, what: impl Into<String>) -> Meter<'_> {
        let what = what.into();
        self.0.send_replace(Some(Transfer {
            what: what.clone(),
            done: 0,
            total: None,
        }));
        Meter { tx: &self.0, what }
    }
}

/// One transfer being published; [`Meter::set`] is what the copying loops call.
pub struct Meter<'a> {
    tx: &'a watch::Sender<Option<Transfer>>,
    what: String,
}

impl Meter<'_> {
    /// `done` bytes of `total` so far.
    pub fn set(&self, done: u64, total: Option<u64>) {
        self.tx.send_replace(Some(Transfer {
            what: self.what.clone(),
            done,
            total,
        }));
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        self.tx.send_replace(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_publishes_until_dropped() {
        let (transfers, rx) = Transfers::new();
        {
            let meter = transfers.start("downloading s3://b/k");
            assert_eq!(rx.borrow().as_ref().unwrap().done, 0);
            meter.set(12 << 20, Some(40 << 20));
            let t = rx.borrow().clone().unwrap();
            assert_eq!(t.line(), "downloading s3://b/k: 12.0 MiB of 40.0 MiB");
            meter.set(3 << 10, None);
            assert_eq!(
                rx.borrow().as_ref().unwrap().line(),
                "downloading s3://b/k: 3.0 KiB"
            );
        }
        assert!(
            rx.borrow().is_none(),
            "a finished transfer is no longer shown"
        );
    }
}
