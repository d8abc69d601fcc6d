//! Database size over time under a writer that overwrites the same 1,000 keys: quorate (etcd
//! compacted periodically, `etcd.compaction_retention`) next to the same three-member cluster
//! with etcd's defaults (`compaction_retention = "0"`: nothing is ever compacted), both running
//! at once on this machine with the same write rate, sampled every interval. Without
//! compaction every overwrite keeps its old revision and the file only grows; with it, bbolt
//! reuses the freed pages and the file levels off.

use std::time::{Duration, Instant};

use etcd_client::{Client, StatusResponse};
use quorate::etcd::client::{connect, ClientTls};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::Cluster;

/// Keys overwritten round-robin.
const KEYS: usize = 1_000;
/// Bytes per value.
const VALUE: usize = 1_024;
/// Puts per second on each cluster.
const RATE: u64 = 200;

/// One sample: seconds since the start, then (total, in use) bytes for quorate and defaults.
pub struct Sample {
    pub at: Duration,
    pub quorate: (i64, i64),
    pub defaults: (i64, i64),
}

fn formed(retention: Duration) -> Cluster {
    let mut c = Cluster::with(3, |_, b| b.compaction_retention(retention));
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    c
}

async fn client(c: &Cluster) -> Client {
    // Status needs etcd's root role from 3.5.28 on: the agent's identity.
    let cert = c.agent_cert(0);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("client certificate");
    let tls = ClientTls {
        ca: read(&cert.ca),
        cert: read(&cert.cert),
        key: read(&cert.key),
    };
    connect(&[c.client_url(0)], &tls, Duration::from_secs(5))
        .await
        .expect("connect")
}

fn sizes(s: &StatusResponse) -> (i64, i64) {
    (s.db_size(), s.raft_used_db_size())
}

/// Both databases' sizes now, when both members answer.
async fn sample(q: &mut Client, d: &mut Client, start: Instant) -> Option<Sample> {
    let (qs, ds) = (q.status().await.ok()?, d.status().await.ok()?);
    Some(Sample {
        at: start.elapsed(),
        quorate: sizes(&qs),
        defaults: sizes(&ds),
    })
}

/// Writes for `duration`, sampling every `every`; `retention` is quorate's compaction window.
pub async fn run(duration: Duration, every: Duration, retention: Duration) -> Vec<Sample> {
    let q = formed(retention);
    let d = formed(Duration::ZERO);
    let (mut qc, mut dc) = (client(&q).await, client(&d).await);
    let value = vec![b'x'; VALUE];
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next_sample = start;
    let mut put = 0u64;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    while start.elapsed() < duration {
        if Instant::now() >= next_sample {
            samples.extend(sample(&mut qc, &mut dc, start).await);
            next_sample += every;
        }
        tick.tick().await;
        let key = format!("/space/{:04}", put % KEYS as u64);
        let (a, b) = tokio::join!(
            qc.put(key.as_str(), value.clone(), None),
            dc.put(key.as_str(), value.clone(), None)
        );
        a.expect("put on quorate's cluster");
        b.expect("put on the defaults cluster");
        put += 1;
    }
    samples.extend(sample(&mut qc, &mut dc, start).await);
    drop((q, d));
    samples
}

pub fn report(samples: &[Sample], retention: Duration) {
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    println!(
        "\n== space: {KEYS} keys overwritten at {RATE} puts/s with {VALUE}-byte values; quorate \
         compacts with a {} s retention (etcd.compaction_retention), the other cluster runs \
         etcd's defaults",
        retention.as_secs()
    );
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>12} {:>7}",
        "t s", "quorate MiB", "in use MiB", "default MiB", "in use MiB", "ratio"
    );
    for s in samples {
        println!(
            "{:>7.0} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>7.2}",
            s.at.as_secs_f64(),
            mib(s.quorate.0),
            mib(s.quorate.1),
            mib(s.defaults.0),
            mib(s.defaults.1),
            s.defaults.0 as f64 / s.quorate.0.max(1) as f64
        );
    }
    if let Some(last) = samples.last() {
        println!(
            "after {:.0} s: quorate {:.1} MiB, etcd's defaults {:.1} MiB: the defaults' database is {:.2}x quorate's",
            last.at.as_secs_f64(),
            mib(last.quorate.0),
            mib(last.defaults.0),
            last.defaults.0 as f64 / last.quorate.0.max(1) as f64
        );
    }
}
