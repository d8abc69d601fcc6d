//! What the agent exports to Prometheus on /metrics: counters of what it dropped, rejected,
//! issued and restarted (the evidence that bad network input is dropped and counted; plain
//! atomics, shared by reference, also shown in /status), and gauges of the state other tasks
//! publish (certificate expiry, etcd membership, leadership, quorum, database size, alarms,
//! gossip membership). The gauges are not kept anywhere: every scrape builds a fresh registry
//! from a [`Scrape`] of the published values and encodes it with `prometheus-client`, so
//! /metrics can never show a value that is not current, and nothing here has to be updated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use crate::defrag::DefragStatus;
use crate::etcd::EtcdHealth;
use crate::gossip::{GossipView, PeerState};
use crate::snapshot::SnapshotStatus;

/// The Content-Type of [`Scrape::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this.
const PREFIX: &str = "quorate";

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
    gossip_dropped_stale: "Authentic gossip datagrams dropped for their age (a replay, or clocks apart) or, once every peer speaks the stamped envelope, for the older format.",
    gossip_datagrams_sent: "Gossip datagrams sent.",
    gossip_client_answers: "Directory answers sent to client-mode agents.",
    api_requests: "Agent API requests received.",
    api_refused_busy: "Agent API connections closed at once because the server was serving its maximum.",
    api_refused_rate: "Agent API connections closed at once because their address opened too many too fast.",
    api_rejected_unauthenticated: "Agent API requests rejected for a missing or wrong token proof.",
    api_rejected_invalid: "Authenticated agent API requests rejected as invalid.",
    api_rejected_identity: "Certificate requests refused for who asks: a name another live member holds, an address that is not the name's, or the client token asking for a node certificate or a reserved name.",
    certificates_issued: "Certificates this agent signed as the issuer.",
    ca_seal_secret_handed: "Times this agent handed the CA seal secret to another voter (a new voter, or one whose copy was lost).",
    etcd_starts: "Times the etcd child process was started.",
    etcd_unexpected_exits: "Times the etcd child exited without being asked to.",
}

impl Counters {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One label, `name="value"`.
type Label = [(&'static str, &'static str); 1];

/// The published state one scrape shows.
pub struct Scrape<'a> {
    pub counters: &'a Counters,
    pub health: &'a EtcdHealth,
    pub view: &'a GossipView,
    /// The node certificate's expiry, once this node has a usable one.
    pub node_not_after: Option<SystemTime>,
    /// The trusted CA's expiry, once this node trusts a CA.
    pub ca_not_after: Option<SystemTime>,
    /// etcd's backend quota (`--quota-backend-bytes`), when quorate sets it.
    pub quota_bytes: Option<u64>,
    /// What the defragmentation task did.
    pub defrag: &'a DefragStatus,
    /// What the snapshot task did.
    pub snapshot: &'a SnapshotStatus,
    /// The revocation list in force here.
    pub crl: Option<&'a crate::node::crl::CrlStatus>,
    /// The members' `[[roles]]`.
    pub roles: Option<&'a crate::node::roles::RolesStatus>,
}

impl Scrape<'_> {
    /// The OpenMetrics text exposition of every counter and gauge.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and the registry has only valid names.
        if let Err(e) = encode(&mut out, &self.registry()) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix(PREFIX);
        for (name, help, value) in self.counters.snapshot() {
            r.register(name, help.trim_end_matches('.'), ConstCounter::new(value));
        }

        let certs = Family::<Label, Gauge>::default();
        for (cert, at) in [("node", self.node_not_after), ("ca", self.ca_not_after)] {
            if let Some(secs) = at.and_then(unix_seconds) {
                certs.get_or_create(&[("cert", cert)]).set(secs);
            }
        }
        r.register_with_unit(
            "cert_not_after",
            "Expiry (notAfter) of the node certificate and of the trusted CA, in unix seconds",
            Unit::Seconds,
            certs,
        );

        let gossip = Family::<Label, Gauge>::default();
        for state in [PeerState::Alive, PeerState::Suspect, PeerState::Down] {
            let peers = self.view.peers.iter().filter(|p| p.state == state).count();
            // This agent is an alive member of its own gossip cluster.
            let me = usize::from(state == PeerState::Alive);
            gossip
                .get_or_create(&[("state", state_label(state))])
                .set(count(peers + me));
        }
        r.register(
            "gossip_members",
            "Gossip members this agent sees (itself included), by SWIM state",
            gossip,
        );

        self.register_etcd(&mut r);
        self.register_defrag(&mut r);
        if let Some(n) = self.crl.filter(|c| c.number.is_some()) {
            r.register(
                "certificates_revoked",
                "Certificates the revocation list in force on this member revokes",
                ConstGauge::new(count(n.revoked)),
            );
        }
        if let Some(roles) = self.roles.filter(|s| s.agreement.is_some()) {
            r.register(
                "roles_conflict",
                "1 while the members' [[roles]] differ (the previous roles stay in force)",
                ConstGauge::new(i64::from(roles.conflict)),
            );
        }
        self.register_snapshot(&mut r);
        r
    }

    fn register_snapshot(&self, r: &mut Registry) {
        let s = self.snapshot;
        r.register(
            "snapshots",
            "Verified snapshots this agent took, scheduled and on demand",
            ConstCounter::new(s.snapshots),
        );
        r.register(
            "snapshot_failures",
            "Snapshots this agent started that failed verification or IO",
            ConstCounter::new(s.failures),
        );
        if let Some(interval) = s.interval_seconds {
            r.register_with_unit(
                "snapshot_interval",
                "The snapshot schedule's period (for cron: the gap between the next two times)",
                Unit::Seconds,
                ConstGauge::new(saturating(interval)),
            );
        }
        if let Some(at) = s.last_success {
            r.register_with_unit(
                "snapshot_last_success_timestamp",
                "When this agent's last verified snapshot finished, in unix seconds",
                Unit::Seconds,
                ConstGauge::new(saturating(at)),
            );
        }
        if let Some(ms) = s.last_duration_ms {
            r.register_with_unit(
                "snapshot_last_duration",
                "How long this agent's last snapshot took",
                Unit::Seconds,
                ConstGauge::new(ms as f64 / 1000.0),
            );
        }
        if let Some(size) = s.last_size {
            r.register_with_unit(
                "snapshot_last_size",
                "The size of this agent's last snapshot file",
                Unit::Bytes,
                ConstGauge::new(saturating(size)),
            );
        }
        if let Some(u) = &s.upload {
            r.register(
                "snapshot_upload_failures",
                "Uploads of snapshots to [snapshot.s3] by this agent that failed",
                ConstCounter::new(u.failures),
            );
            if let Some(at) = u.last_success {
                r.register_with_unit(
                    "snapshot_upload_last_success_timestamp",
                    "When this agent last uploaded a snapshot to [snapshot.s3], in unix seconds",
                    Unit::Seconds,
                    ConstGauge::new(saturating(at)),
                );
            }
        }
    }

    fn register_defrag(&self, r: &mut Registry) {
        let d = self.defrag;
        r.register(
            "defrags",
            "Defragmentations this agent ran (of any member)",
            ConstCounter::new(d.defrags),
        );
        r.register(
            "defrag_failures",
            "Defragmentations this agent ran that failed",
            ConstCounter::new(d.failures),
        );
        if let Some(last) = &d.last {
            r.register_with_unit(
                "defrag_last_timestamp",
                "When the last defragmentation this agent ran started, in unix seconds",
                Unit::Seconds,
                ConstGauge::new(saturating(last.started_at)),
            );
            r.register_with_unit(
                "defrag_last_duration",
                "How long the last defragmentation this agent ran took",
                Unit::Seconds,
                ConstGauge::new(last.duration_ms as f64 / 1000.0),
            );
        }
    }

    fn register_etcd(&self, r: &mut Registry) {
        let h = self.health;
        r.register(
            "etcd_has_quorum",
            "1 when the local etcd member is in a cluster with quorum (a linearizable read \
             succeeded; for a learner: it sees a leader), else 0",
            ConstGauge::new(i64::from(has_quorum(h))),
        );
        r.register(
            "etcd_is_leader",
            "1 when the local etcd member is the raft leader, else 0",
            ConstGauge::new(i64::from(
                h.reachable && h.leader.is_some() && h.leader == h.member_id,
            )),
        );
        if let Some(quota) = self.quota_bytes {
            r.register_with_unit(
                "etcd_quota",
                "etcd's backend quota (--quota-backend-bytes): writes stop with NOSPACE above it",
                Unit::Bytes,
                ConstGauge::new(saturating(quota)),
            );
        }
        // What follows is only known while the member answers: absent otherwise, not zero.
        if !h.reachable {
            return;
        }
        if !h.members.is_empty() {
            let members = Family::<Label, Gauge>::default();
            for (role, learner) in [("voter", false), ("learner", true)] {
                let n = h.members.iter().filter(|m| m.is_learner == learner).count();
                members.get_or_create(&[("role", role)]).set(count(n));
            }
            r.register(
                "etcd_members",
                "Members of the etcd cluster, from the local member's member list, by role",
                members,
            );
        }
        if let Some(size) = h.db_size {
            r.register_with_unit(
                "etcd_db_size",
                "Size of the local etcd member's database file",
                Unit::Bytes,
                ConstGauge::new(saturating(size)),
            );
        }
        if let Some(size) = h.db_size_in_use {
            r.register_with_unit(
                "etcd_db_size_in_use",
                "Part of the local etcd member's database file in use (the rest is free pages \
                 that a defragmentation returns)",
                Unit::Bytes,
                ConstGauge::new(saturating(size)),
            );
        }
        // The alarm list is asked for only once a quorum read worked (it goes through raft).
        if h.quorum {
            let alarms = Family::<Label, Gauge>::default();
            for alarm in ["NOSPACE", "CORRUPT"] {
                let active = h.alarms.iter().any(|a| a == alarm);
                alarms
                    .get_or_create(&[("alarm", alarm)])
                    .set(i64::from(active));
            }
            r.register(
                "etcd_alarms_active",
                "1 while the etcd alarm is active in the cluster (etcd refuses writes), else 0",
                alarms,
            );
        }
    }
}

/// Quorum as the readiness rule sees it; a learner never serves linearizable reads.
fn has_quorum(h: &EtcdHealth) -> bool {
    if h.is_learner {
        h.reachable && h.leader.is_some()
    } else {
        h.healthy()
    }
}

fn state_label(state: PeerState) -> &'static str {
    match state {
        PeerState::Alive => "alive",
        PeerState::Suspect => "suspect",
        PeerState::Down => "down",
    }
}

fn unix_seconds(t: SystemTime) -> Option<i64> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
