//! `quorate snapshot save --out` next to `etcdctl snapshot save` on the same ~200 MB keyspace
//! of one three-member cluster, alternating which goes first, round after round, each run
//! under `/usr/bin/time -f "%e %M"` (wall seconds, peak RSS in KiB). quorate's side is the
//! CLI process (which writes the file) plus what the agent adds: its peak RSS (VmHWM) is
//! read before and after all rounds. A third column is the same save through agent 2, which
//! has `snapshot.encryption_key_file` set (age encryption while streaming).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use quorate::etcd::client::connect;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{etcdctl_bin, quorate_bin, space, Cluster};

/// Bytes per value (etcd's request limit is 1.5 MiB).
const VALUE: usize = 100 * 1024;
/// Puts in flight at once while loading.
const PARALLEL: usize = 8;
/// The agent with encryption at rest.
const ENCRYPTED: usize = 2;

/// One run: wall seconds and peak RSS in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub wall: f64,
    pub rss_kib: u64,
    pub bytes: u64,
}

/// One round: quorate's run, etcdctl's, and which went first.
pub struct SaveRound {
    pub quorate: Run,
    pub etcdctl: Run,
    pub encrypted: Run,
    pub quorate_first: bool,
}

/// What the agent's peak RSS was before and after the rounds, KiB.
pub struct AgentRss {
    pub before: u64,
    pub after: u64,
}

fn timed(cmd: Command, out: &Path) -> Run {
    let mut time = Command::new("/usr/bin/time");
    time.args(["-f", "%e %M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => time.env(k, v),
            None => time.env_remove(k),
        };
    }
    let output = time.output().expect("run /usr/bin/time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let mut parts = last.split_whitespace();
    let wall: f64 = parts.next().and_then(|s| s.parse().ok()).expect("time %e");
    let rss_kib: u64 = parts.next().and_then(|s| s.parse().ok()).expect("time %M");
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or_default();
    let _ = std::fs::remove_file(out);
    Run {
        wall,
        rss_kib,
        bytes,
    }
}

fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

/// Loads `mb` MB into a fresh cluster, then runs `rounds` alternating rounds.
pub async fn run(mb: usize, rounds: usize) -> (Vec<SaveRound>, AgentRss, u64) {
    let keys_dir = tempfile::tempdir().expect("temp dir");
    let key = keys_dir.path().join("snapshot-key.txt");
    {
        use age::secrecy::ExposeSecret;
        let identity = age::x25519::Identity::generate();
        std::fs::write(&key, identity.to_string().expose_secret()).expect("write key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key");
    }
    let mut c = Cluster::with(3, |i, b| {
        let key = key.clone();
        b.with(move |cfg| {
            cfg.snapshot.schedule = Some(String::new());
            if i == ENCRYPTED {
                cfg.snapshot.encryption_key_file = Some(key);
            }
        })
    });
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);
    let cert = c.client_cert(0, "save-bench");
    let tls = space::tls(&cert);
    let client = connect(&space::endpoints(&c), &tls, Duration::from_secs(30))
        .await
        .expect("connect");
    let keys = mb * 1_000_000 / VALUE;
    let loading = Instant::now();
    for batch in (0..keys).collect::<Vec<_>>().chunks(PARALLEL) {
        let puts: Vec<_> = batch
            .iter()
            .map(|&k| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    client
                        .put(
                            format!("/bench/{k:06}"),
                            space::value(k as u64, VALUE),
                            None,
                        )
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        for put in puts {
            put.await.expect("put task").expect("put");
        }
    }
    let db_size = client
        .clone()
        .status()
        .await
        .map(|s| s.db_size() as u64)
        .unwrap_or_default();
    println!(
        "loaded {keys} keys of {VALUE} bytes in {:.1} s; member 1's database: {:.1} MiB",
        loading.elapsed().as_secs_f64(),
        db_size as f64 / 1048576.0
    );
    let work = tempfile::tempdir().expect("temp dir");
    let pid = c.agents[0].pid().expect("agent 0 runs");
    let before = vm_hwm(pid);
    let mut results = Vec::new();
    for round in 0..rounds {
        let q_out = work.path().join(format!("quorate-{round}.db"));
        let s_out = work.path().join(format!("quorate-{round}.db.age"));
        let e_out = work.path().join(format!("etcdctl-{round}.db"));
        let save = |agent: usize, out: &Path| {
            let mut cmd = Command::new(quorate_bin());
            cmd.arg("--config")
                .arg(c.agents[agent].config_path())
                .args(["snapshot", "save", "--out"])
                .arg(out)
                .env_remove("QUORATE_CONFIG");
            timed(cmd, out)
        };
        let quorate = || save(0, &q_out);
        let encrypted = || save(ENCRYPTED, &s_out);
        // A snapshot needs etcd's root role: the agent's identity, as `quorate env` gives it.
        let root = c.agent_cert(0);
        let etcdctl = || {
            let mut cmd = Command::new(etcdctl_bin());
            cmd.arg("--endpoints")
                .arg(c.client_url(0))
                .arg("--cacert")
                .arg(&root.ca)
                .arg("--cert")
                .arg(&root.cert)
                .arg("--key")
                .arg(&root.key)
                .args(["snapshot", "save"])
                .arg(&e_out)
                .env("ETCDCTL_API", "3");
            timed(cmd, &e_out)
        };
        let quorate_first = round % 2 == 0;
        let (q, e, s) = if quorate_first {
            let q = quorate();
            let e = etcdctl();
            (q, e, encrypted())
        } else {
            let s = encrypted();
            let e = etcdctl();
            (quorate(), e, s)
        };
        results.push(SaveRound {
            quorate: q,
            etcdctl: e,
            encrypted: s,
            quorate_first,
        });
    }
    let after = vm_hwm(pid);
    drop(c);
    (results, AgentRss { before, after }, db_size)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn report(rounds: &[SaveRound], agent: &AgentRss, db_size: u64) {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "\n== save: `quorate snapshot save --out` vs `etcdctl snapshot save`, {:.1} MiB database",
        mib(db_size)
    );
    println!(
        "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>10}",
        "round",
        "order",
        "quorate s",
        "q RSS MiB",
        "etcdctl s",
        "e RSS MiB",
        "ratio",
        "q+age s",
        "a RSS MiB",
        "file MiB"
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "{:>5} {:>6} {:>10.2} {:>10.1} {:>10.2} {:>10.1} {:>7.2} {:>10.2} {:>10.1} {:>10.1}",
            i + 1,
            if r.quorate_first { "q,e,a" } else { "a,e,q" },
            r.quorate.wall,
            r.quorate.rss_kib as f64 / 1024.0,
            r.etcdctl.wall,
            r.etcdctl.rss_kib as f64 / 1024.0,
            r.quorate.wall / r.etcdctl.wall.max(0.001),
            r.encrypted.wall,
            r.encrypted.rss_kib as f64 / 1024.0,
            mib(r.quorate.bytes)
        );
    }
    let q = median(rounds.iter().map(|r| r.quorate.wall).collect());
    let e = median(rounds.iter().map(|r| r.etcdctl.wall).collect());
    let a = median(rounds.iter().map(|r| r.encrypted.wall).collect());
    let qr = median(rounds.iter().map(|r| r.quorate.rss_kib as f64).collect());
    let er = median(rounds.iter().map(|r| r.etcdctl.rss_kib as f64).collect());
    println!(
        "median of {}: quorate {q:.2} s, etcdctl {e:.2} s (ratio {:.2}); peak RSS quorate CLI \
         {:.1} MiB, etcdctl {:.1} MiB (ratio {:.2}); the agent's peak RSS {:.1} MiB before the \
         rounds, {:.1} MiB after; encrypted save {a:.2} s (ratio to etcdctl {:.2})",
        rounds.len(),
        q / e.max(0.001),
        qr / 1024.0,
        er / 1024.0,
        qr / er.max(1.0),
        agent.before as f64 / 1024.0,
        agent.after as f64 / 1024.0,
        a / e.max(0.001)
    );
}
