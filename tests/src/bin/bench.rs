//! Benchmark: time from nothing to a healthy 3-member mTLS etcd cluster, two ways, side by side
//! in the same run on the same machine:
//!
//! - manual: the procedure of the guides, with everything prepared in advance (CA and node
//!   certificates already made, static `--initial-cluster` flags): start three etcd processes
//!   and wait until every member answers a status request and a quorum read;
//! - quorate: three agents with empty state directories and one token: gossip, plan, CA, CSRs,
//!   etcd start, until every agent's /readyz says 200 (which needs the same checks).
//!
//! Prints each round, then medians, the difference and the ratio. For quorate it also prints
//! the time until all three etcd processes were started: the agents' own work (gossip, plan,
//! CA, CSRs); what follows is etcd's own first election, which the manual procedure pays too.
//!
//!   cargo run --release -p quorate-tests --bin quorate-bench -- [ROUNDS]
//!
//! TEST_QUORATE_BIN selects the agent binary (default: target/release/quorate if built, else debug).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use quorate::etcd::client::{connect, ClientTls};
use quorate::etcd::{probe, render_args, ClusterState, EtcdLaunch, TlsFiles};
use quorate::pki::{cert_spec, CertProfile, CertificateAuthority, NodeKey};
use quorate_tests::{Cluster, Subnet};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL_TIMEOUT: Duration = Duration::from_millis(300);

/// Awaits all futures concurrently.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.expect("health poll task");
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    if std::env::var_os("TEST_QUORATE_BIN").is_none() {
        let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/quorate");
        if release.exists() {
            std::env::set_var("TEST_QUORATE_BIN", release);
        }
    }
    println!("agent binary: {}", quorate_tests::quorate_bin().display());
    println!(
        "{:>5} {:>10} {:>10} {:>10} {:>7} {:>16}",
        "round", "manual s", "quorate s", "diff s", "ratio", "q: etcd up s"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (mut manual, mut agents, mut etcd_up) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let m = rt.block_on(manual_round());
        let (up, q) = quorate_round();
        println!(
            "{round:>5} {:>10.3} {:>10.3} {:>10.3} {:>7.2} {:>16.3}",
            m.as_secs_f64(),
            q.as_secs_f64(),
            q.as_secs_f64() - m.as_secs_f64(),
            q.as_secs_f64() / m.as_secs_f64(),
            up.as_secs_f64()
        );
        manual.push(m);
        agents.push(q);
        etcd_up.push(up);
    }
    let (m, q, up) = (
        median(&mut manual),
        median(&mut agents),
        median(&mut etcd_up),
    );
    println!(
        "median over {rounds} rounds: manual {:.3} s, quorate {:.3} s, quorate adds {:.3} s \
         (ratio {:.2}); quorate's agents had all etcd processes started after {:.3} s",
        m.as_secs_f64(),
        q.as_secs_f64(),
        q.as_secs_f64() - m.as_secs_f64(),
        q.as_secs_f64() / m.as_secs_f64(),
        up.as_secs_f64()
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Three etcd members with pre-made certificates and static flags.
async fn manual_round() -> Duration {
    let net = Subnet::allocate();
    let dir = tempfile::tempdir().expect("temp dir");
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate("bench CA", now, Duration::from_secs(86400)).unwrap();
    let names = ["m1", "m2", "m3"];
    let initial: Vec<String> = (0..3)
        .map(|i| format!("{}=https://{}:2380", names[i], net.host(i as u8 + 1)))
        .collect();
    let mut launches = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let addr = net.host(i as u8 + 1);
        let node_dir = dir.path().join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let key = NodeKey::generate().unwrap();
        let spec = cert_spec(
            &CertProfile::Node {
                name: name.to_string(),
                addrs: vec![addr],
            },
            now,
            Duration::from_secs(86400),
        );
        let cert = ca.sign_csr(&key.csr_pem(name).unwrap(), &spec).unwrap();
        write(&node_dir.join("node.pem"), &cert);
        write(&node_dir.join("node-key.pem"), &key.to_pem());
        write(&node_dir.join("ca.pem"), ca.cert_pem());
        launches.push(EtcdLaunch {
            name: name.to_string(),
            data_dir: node_dir.join("data"),
            advertise: addr,
            localhost: None,
            client_port: 2379,
            peer_port: 2380,
            initial_cluster: initial.join(","),
            state: ClusterState::New,
            cluster_token: "bench".into(),
            tls: TlsFiles {
                cert: node_dir.join("node.pem"),
                key: node_dir.join("node-key.pem"),
                ca: node_dir.join("ca.pem"),
            },
            extra_args: vec![],
        });
    }
    let tls: Vec<ClientTls> = names
        .iter()
        .map(|n| {
            let d = dir.path().join(n);
            ClientTls {
                ca: std::fs::read_to_string(d.join("ca.pem")).unwrap(),
                cert: std::fs::read_to_string(d.join("node.pem")).unwrap(),
                key: std::fs::read_to_string(d.join("node-key.pem")).unwrap(),
            }
        })
        .collect();

    let start = Instant::now();
    let mut children: Vec<Child> = launches
        .iter()
        .map(|l| {
            Command::new("etcd")
                .args(render_args(l))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd")
        })
        .collect();
    // Each member is polled on its own, with short timeouts, so that the measurement is not
    // quantised by a slow attempt.
    let waits = launches.iter().zip(tls).map(|(l, tls)| {
        let url = l.local_client_url();
        async move {
            loop {
                assert!(
                    start.elapsed() < TIMEOUT,
                    "manual cluster not healthy in {TIMEOUT:?}"
                );
                let attempt = async {
                    let mut c = connect(std::slice::from_ref(&url), &tls, POLL_TIMEOUT)
                        .await
                        .ok()?;
                    Some(probe::probe(&mut c).await.healthy())
                };
                if let Ok(Some(true)) = tokio::time::timeout(POLL_TIMEOUT, attempt).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    futures_join_all(waits).await;
    let elapsed = start.elapsed();
    for c in &mut children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for c in &mut children {
        let _ = c.wait();
    }
    elapsed
}

/// Three agents from empty state: (all etcd processes started, all ready).
fn quorate_round() -> (Duration, Duration) {
    let mut c = Cluster::new(3);
    let start = Instant::now();
    c.start_all();
    let mut ready = [false; 3];
    let mut etcd = [false; 3];
    let mut etcd_up = None;
    while ready.iter().any(|r| !r) {
        assert!(
            start.elapsed() < TIMEOUT,
            "quorate cluster not ready in {TIMEOUT:?}:\n{}",
            c.logs(20)
        );
        for (i, a) in c.agents.iter().enumerate() {
            assert!(!a.exited(), "{} exited:\n{}", a.name, a.log_tail(20));
            ready[i] = ready[i] || a.ready().is_ok();
            etcd[i] = etcd[i] || a.status().is_ok_and(|s| s.etcd.pid.is_some());
        }
        if etcd_up.is_none() && etcd.iter().all(|e| *e) {
            etcd_up = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    c.stop_all();
    (etcd_up.unwrap_or(elapsed), elapsed)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}
