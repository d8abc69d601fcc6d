//! Counters of what the agent dropped, rejected, issued and restarted: the evidence that bad
//! network input is dropped and counted. Plain atomics, shared by reference; shown in /status
//! and exported in Prometheus text format on /metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        /// Monotonic counters.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $help] pub $name: AtomicU64,)*
        }

        impl Counters {
            /// (name, help, value) of every counter.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    gossip_datagrams_received: "Gossip datagrams received.",
    gossip_dropped_unauthenticated: "Gossip datagrams dropped because they failed authentication.",
    gossip_dropped_malformed: "Authenticated gossip datagrams that foca or quorate could not decode.",
    gossip_datagrams_sent: "Gossip datagrams sent.",
    api_requests: "Agent API requests received.",
    api_rejected_unauthenticated: "Agent API requests rejected for a missing or wrong token proof.",
    api_rejected_invalid: "Authenticated agent API requests rejected as invalid.",
    certificates_issued: "Certificates this agent signed as the issuer.",
    etcd_starts: "Times the etcd child process was started.",
    etcd_unexpected_exits: "Times the etcd child exited without being asked to.",
}

impl Counters {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of all counters.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in self.snapshot() {
            out.push_str(&format!(
                "# HELP quorate_{name}_total {help}\n# TYPE quorate_{name}_total counter\nquorate_{name}_total {value}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_exports() {
        let c = Counters::default();
        Counters::inc(&c.gossip_dropped_unauthenticated);
        Counters::inc(&c.gossip_dropped_unauthenticated);
        let snap = c.snapshot();
        assert!(snap.contains(&(
            "gossip_dropped_unauthenticated",
            "Gossip datagrams dropped because they failed authentication.",
            2
        )));
        assert!(c
            .prometheus()
            .contains("quorate_gossip_dropped_unauthenticated_total 2\n"));
    }
}
