//! Helpers for the defragmentation and space-alarm tests: an etcd client with a harness client
//! certificate, a writer that records what etcd acknowledged, and the defragmentation
//! intervals the agents logged (to check that two never overlap).

use std::time::Duration;

use quorate::etcd::client::{connect, ClientTls};
use quorate::etcd::EtcdError;

use crate::cluster::ClientCert;
use crate::Cluster;

/// A tokio runtime for the test's own etcd calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The PEM material of a client certificate.
pub fn tls(cert: &ClientCert) -> ClientTls {
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read client PEM");
    ClientTls {
        ca: read(&cert.ca),
        cert: read(&cert.cert),
        key: read(&cert.key),
    }
}

/// Every member's client URL.
pub fn endpoints(c: &Cluster) -> Vec<String> {
    (0..c.agents.len()).map(|i| c.client_url(i)).collect()
}

/// The outcome of one put.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Acked,
    NoSpace,
    Failed(String),
}

/// Puts `key` = `value` through `endpoints`.
pub async fn put(endpoints: &[String], tls: &ClientTls, key: &str, value: Vec<u8>) -> Put {
    let attempt = async {
        let mut c = connect(endpoints, tls, Duration::from_secs(5)).await?;
        c.put(key, value, None).await
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(_)) => Put::Acked,
        Ok(Err(e)) => match EtcdError::classify(&e) {
            EtcdError::NoSpace => Put::NoSpace,
            other => Put::Failed(other.to_string()),
        },
        Err(_) => Put::Failed("timed out".into()),
    }
}

/// The value of `key`, read through `endpoints`.
pub async fn get(endpoints: &[String], tls: &ClientTls, key: &str) -> Option<Vec<u8>> {
    let mut c = connect(endpoints, tls, Duration::from_secs(5)).await.ok()?;
    let r = c.get(key, None).await.ok()?;
    r.kvs().first().map(|kv| kv.value().to_vec())
}

/// A value of `len` bytes that starts with `seq` (so a read tells which write it was).
pub fn value(seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{seq:020}:").into_bytes();
    v.resize(len, b'x' + (seq % 3) as u8);
    v
}

/// The sequence number a [`value`] starts with.
pub fn seq_of(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v.get(..20)?).ok()?.parse().ok()
}

/// Whether the cluster has a NOSPACE alarm, per `etcdctl alarm list` through agent `i`.
pub fn alarm_list(c: &Cluster, i: usize, cert: &ClientCert) -> String {
    c.etcdctl_ok(i, cert, &["alarm", "list"])
}

/// One defragmentation as an agent logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub agent: String,
    pub member: String,
    pub trigger: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    Some(rest.split_whitespace().next()?.trim_matches('"'))
}

/// The finished defragmentations in every agent's log: each "started" line paired with the
/// next "finished" line of the same agent (one task per agent does them one after the other).
pub fn intervals(c: &Cluster) -> Vec<Interval> {
    let mut all = Vec::new();
    for a in &c.agents {
        let mut open: Option<(String, String, u64)> = None;
        for line in a.log().lines() {
            if line.contains("defragmentation started") {
                let member = field(line, "member").unwrap_or_default().to_owned();
                let trigger = field(line, "trigger").unwrap_or_default().to_owned();
                let start = field(line, "started_ms")
                    .and_then(|v| v.parse().ok())
                    .expect("started_ms in a start line");
                assert!(
                    open.is_none(),
                    "{}: two starts without an end: {line}",
                    a.name
                );
                open = Some((member, trigger, start));
            } else if line.contains("defragmentation finished") {
                let end = field(line, "ended_ms")
                    .and_then(|v| v.parse().ok())
                    .expect("ended_ms in an end line");
                let (member, trigger, start_ms) = open
                    .take()
                    .unwrap_or_else(|| panic!("{}: an end without a start: {line}", a.name));
                all.push(Interval {
                    agent: a.name.clone(),
                    member,
                    trigger,
                    start_ms,
                    end_ms: end,
                });
            }
        }
        // A start without its end yet is one in progress: not counted until it ends.
    }
    all.sort_by_key(|i| i.start_ms);
    all
}

/// Panics if two logged defragmentations overlap in time, anywhere in the cluster.
pub fn assert_no_overlap(intervals: &[Interval]) {
    for pair in intervals.windows(2) {
        assert!(
            pair[1].start_ms >= pair[0].end_ms,
            "two defragmentations overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}
