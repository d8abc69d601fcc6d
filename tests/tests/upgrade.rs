//! Rolling etcd upgrades and restarts with real etcd: the binary behind `etcd.binary` (a
//! symlink) is switched under running agents, which restart their members one at a time on the
//! new version while a writer runs; versions quorate must not move to are refused with nothing
//! restarted; `quorate etcd restart --rolling` restarts every member in turn.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorate_tests::agent::http_get;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::notify::NotifySocket;
use quorate_tests::{require_failed, wait_for, Cluster, Writer};

/// Debian unstable's etcd 3.5.30, unpacked by scripts/deps.sh (ensure_etcd_versions).
const ETCD_3_5_30: &str = "/var/cache/quorate-test/etcd/3.5.30-2/usr/bin/etcd";
/// Debian 13's etcd 3.5.16.
const ETCD_3_5_16: &str = "/var/cache/quorate-test/etcd/3.5.16-4/usr/bin/etcd";
const ETCD_3_4: &str = "/usr/bin/etcd";

fn require(test: &str, binary: &str) {
    if !Path::new(binary).is_file() {
        require_failed(
            test,
            &format!("{binary} is missing (scripts/deps.sh's ensure_etcd_versions unpacks it)"),
        );
    }
}

/// Points the symlink `link` at `target` atomically (as a package upgrade replaces a file).
fn switch(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

/// A stand-in binary that only answers `--version` (no etcd 3.6 or 3.7 can be had here).
fn stub(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("etcd-stub-{version}"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho 'etcd Version: {version}'\necho 'Git SHA: stub'\n"),
    )
    .expect("write stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A cluster of three whose `etcd.binary` is the symlink `<root>/bin/etcd` -> `initial`.
fn cluster_on(initial: &str) -> (Cluster, PathBuf) {
    let bin = tempfile::Builder::new()
        .prefix("quorate-etcd-bin-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let link = bin.join("etcd");
    switch(&link, Path::new(initial));
    let l = link.clone();
    let mut c = Cluster::with(3, move |_, b| b.etcd_binary(&l));
    c.start_and_wait();
    (c, link)
}

/// The version each member reports (etcdctl endpoint status, as the agents' identity: Status
/// needs the root role from etcd 3.5.28 on with authentication).
fn member_versions(c: &Cluster) -> Vec<String> {
    (0..c.agents.len())
        .map(|i| {
            let o = c.etcdctl(
                i,
                Some(&c.agent_cert(i)),
                &["endpoint", "status", "-w", "json"],
            );
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split("\"version\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("unreachable")
                .to_owned()
        })
        .collect()
}

/// etcd's cluster version (the `etcd_cluster_version` series at 1 on the metrics listener;
/// the one of the previous version stays, at 0).
fn cluster_version(metrics: SocketAddr) -> Result<String, String> {
    let (_, body) = http_get(metrics, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with("etcd_cluster_version{") && l.ends_with(" 1"))
        .and_then(|l| l.split("cluster_version=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| "no etcd_cluster_version".to_owned())
}

/// Samples /readyz of every agent every 100 ms; records the fewest ready at any sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    fewest: Arc<Mutex<(usize, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(addrs: Vec<SocketAddr>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let fewest = Arc::new(Mutex::new((addrs.len(), 0)));
        let (s, f) = (stop.clone(), fewest.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let ready = addrs
                    .iter()
                    .filter(|a| matches!(http_get(**a, "/readyz"), Ok((200, _))))
                    .count();
                let mut f = f.lock().expect("sampler");
                f.0 = f.0.min(ready);
                f.1 += 1;
                drop(f);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            fewest,
            thread: Some(thread),
        }
    }

    /// (fewest ready members at any sample, samples taken).
    fn stop(mut self) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.fewest.lock().expect("sampler")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn switching_the_binary_rolls_the_cluster_to_the_new_version() {
    let test = "switching_the_binary_rolls_the_cluster_to_the_new_version";
    require(test, ETCD_3_5_30);
    let (c, link) = cluster_on(ETCD_3_4);
    let cert = c.client_cert(0, "upgrade-writer");
    assert_eq!(member_versions(&c), ["3.4.23"; 3]);
    let endpoints = (0..3).map(|i| c.client_url(i)).collect();
    let writer = Writer::start(endpoints, &cert, "/upgrade/k", Duration::from_millis(50));
    let sampler = Sampler::start(c.agents.iter().map(|a| a.health_addr()).collect());
    wait_for("the writer to get going", Duration::from_secs(20), || {
        (writer.acked() >= 10)
            .then_some(())
            .ok_or_else(|| format!("{} acknowledged", writer.acked()))
    });

    switch(&link, Path::new(ETCD_3_5_30));
    wait_for(
        "every member to run etcd 3.5.30",
        Duration::from_secs(240),
        || {
            let v = member_versions(&c);
            (v == ["3.5.30"; 3]).then_some(()).ok_or(format!("{v:?}"))
        },
    );
    let metrics = SocketAddr::new(c.agents[0].addr, 2381);
    wait_for("the cluster version 3.5", Duration::from_secs(60), || {
        let v = cluster_version(metrics)?;
        (v == "3.5").then_some(()).ok_or(v)
    });
    wait_for("every agent ready again", Duration::from_secs(60), || {
        c.agents.iter().try_for_each(|a| a.ready().map(drop))
    });
    let (fewest, samples) = sampler.stop();
    let (acked, failed) = writer.stop();
    assert!(samples > 50, "only {samples} health samples");
    assert!(
        fewest >= 2,
        "at some sample only {fewest} of 3 members were ready (one at a time must keep 2)"
    );
    // Every acknowledged key is there.
    c.assert_none_lost(&cert, "/upgrade/", &acked);
    eprintln!(
        "upgrade: {} keys acknowledged, {failed} puts failed during the rolling upgrade, \
         fewest ready members {fewest} over {samples} samples",
        acked.len()
    );
    // One snapshot, by the first member to move, before the minor upgrade.
    let took: Vec<&quorate_tests::Agent> = c
        .agents
        .iter()
        .filter(|a| a.log().contains("snapshot before the minor upgrade taken"))
        .collect();
    assert_eq!(
        took.len(),
        1,
        "snapshots before the minor upgrade: {}",
        took.len()
    );
    let files = std::fs::read_dir(took[0].state_dir().join("snapshots"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".db"))
                .count()
        })
        .unwrap_or(0);
    assert!(files >= 1, "{}: no snapshot file", took[0].name);
    // Each agent says what it did.
    for a in &c.agents {
        let status = a.status().expect("status");
        let r = status.etcd_restarts.expect("etcd_restarts in /status");
        assert_eq!(r.running_version.as_deref(), Some("3.5.30"), "{r:?}");
        assert_eq!(r.restarts, 1, "{}: {r:?}", a.name);
    }
}

/// The pid of every agent's etcd, as its /status says.
fn etcd_pids(c: &Cluster) -> Vec<Option<u32>> {
    c.agents
        .iter()
        .map(|a| a.status().ok().and_then(|s| s.etcd.pid))
        .collect()
}

#[test]
fn versions_quorate_must_not_move_to_are_refused_and_nothing_restarts() {
    let test = "versions_quorate_must_not_move_to_are_refused_and_nothing_restarts";
    require(test, ETCD_3_5_16);
    let (c, link) = cluster_on(ETCD_3_5_16);
    let before = etcd_pids(&c);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let stubs = c.root.path().to_path_buf();
    for (target, wanted) in [
        (PathBuf::from(ETCD_3_4), "older than the running 3.5.16"),
        (stub(&stubs, "3.6.0"), "etcd#19557"),
        (stub(&stubs, "3.7.0"), "one minor version at a time"),
    ] {
        switch(&link, &target);
        for a in &c.agents {
            wait_for(
                &format!("{} to refuse {}", a.name, target.display()),
                Duration::from_secs(30),
                || {
                    let s = a.status()?;
                    let r = s.etcd_restarts.ok_or("no etcd_restarts")?;
                    match &r.refusal {
                        Some(why) if why.contains(wanted) => Ok(()),
                        _ => Err(format!("{r:?}")),
                    }
                },
            );
        }
        assert_eq!(
            etcd_pids(&c),
            before,
            "a member was restarted after {target:?}"
        );
    }
    // Back to the running binary: nothing to do, and the refusal is gone.
    switch(&link, Path::new(ETCD_3_5_16));
    wait_for("the refusal to clear", Duration::from_secs(30), || {
        c.agents.iter().try_for_each(|a| {
            let r = a.status()?.etcd_restarts.ok_or("no etcd_restarts")?;
            r.refusal.is_none().then_some(()).ok_or(format!("{r:?}"))
        })
    });
    assert_eq!(etcd_pids(&c), before);
}

#[test]
fn rolling_restart_on_demand_restarts_every_member_in_turn() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "restart-writer");
    let before = etcd_pids(&c);
    let endpoints = (0..3).map(|i| c.client_url(i)).collect();
    let writer = Writer::start(endpoints, &cert, "/restart/k", Duration::from_millis(50));
    let sampler = Sampler::start(c.agents.iter().map(|a| a.health_addr()).collect());
    // Refused without --rolling, and nothing happens.
    let o = c.agents[1].cli(&["etcd", "restart"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--rolling"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = c.agents[1].cli(&["etcd", "restart", "--rolling"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "quorate etcd restart --rolling failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("(3/3 members done)") && out.contains("done: every member"),
        "{out}"
    );
    wait_for("every agent ready", FORM_TIMEOUT, || {
        c.agents.iter().try_for_each(|a| a.ready().map(drop))
    });
    let (fewest, samples) = sampler.stop();
    let (acked, _) = writer.stop();
    assert!(
        fewest >= 2,
        "only {fewest} of 3 ready at some sample ({samples} samples)"
    );
    let after = etcd_pids(&c);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a.is_some() && a != b,
            "member {i} was not restarted: {b:?} -> {a:?}"
        );
    }
    let keys = c.etcdctl_ok(0, &cert, &["get", "/restart/", "--prefix", "--keys-only"]);
    for k in &acked {
        assert!(keys.lines().any(|l| l == k), "acknowledged key {k} lost");
    }
}

/// Where `/proc/PID/exe` points (ends in " (deleted)" once the file was replaced).
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn a_new_quorate_binary_on_every_host_at_once_restarts_them_one_at_a_time() {
    // The agents run a copy of the binary that the test then replaces, as a package upgrade
    // does (a new file renamed over the old one).
    let bin = tempfile::Builder::new()
        .prefix("quorate-agent-bin-")
        .tempdir()
        .expect("temp dir");
    let installed = bin.path().join("quorate");
    let original = quorate_tests::quorate_bin();
    std::fs::copy(&original, &installed).expect("copy the agent binary");
    std::env::set_var("TEST_QUORATE_BIN", &installed);
    let mut c = Cluster::new(3);
    let sockets: Vec<NotifySocket> = c
        .agents
        .iter()
        .map(|a| NotifySocket::bind(bin.path(), &a.name))
        .collect();
    for (a, s) in c.agents.iter_mut().zip(&sockets) {
        a.env = vec![s.env()];
    }
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let cert = c.client_cert(0, "agent-upgrade");
    let agent_pids: Vec<u32> = c.agents.iter().map(|a| a.pid().expect("pid")).collect();
    let before = etcd_pids(&c);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let endpoints = (0..3).map(|i| c.client_url(i)).collect();
    let writer = Writer::start(
        endpoints,
        &cert,
        "/agent-upgrade/k",
        Duration::from_millis(50),
    );
    let sampler = Sampler::start(c.agents.iter().map(|a| a.health_addr()).collect());
    wait_for("the writer to get going", Duration::from_secs(20), || {
        (writer.acked() >= 10)
            .then_some(())
            .ok_or_else(|| format!("{} acknowledged", writer.acked()))
    });

    // The new package's binary lands, and every host's postinst asks at the same moment.
    let staged = bin.path().join("quorate.new");
    std::fs::copy(&original, &staged).expect("stage the new binary");
    std::fs::rename(&staged, &installed).expect("replace the binary");
    for pid in &agent_pids {
        assert!(exe_of(*pid).ends_with("(deleted)"), "{}", exe_of(*pid));
    }
    let answers: Vec<std::process::Output> = std::thread::scope(|s| {
        let asks: Vec<_> = c
            .agents
            .iter()
            .map(|a| s.spawn(move || a.cli(&["restart"])))
            .collect();
        asks.into_iter().map(|h| h.join().expect("cli")).collect()
    });
    for (a, o) in c.agents.iter().zip(&answers) {
        assert!(
            o.status.success(),
            "{}: quorate restart: {}{}",
            a.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // Each agent re-executes the new file in place (same PID), one host at a time.
    wait_for(
        "every agent on the new binary, with a new etcd",
        Duration::from_secs(180),
        || {
            let now = etcd_pids(&c);
            for (i, pid) in agent_pids.iter().enumerate() {
                let exe = exe_of(*pid);
                if exe.is_empty() || exe.ends_with("(deleted)") {
                    return Err(format!("{}: {exe:?}", c.agents[i].name));
                }
                if now[i].is_none() || now[i] == before[i] {
                    return Err(format!("{}: etcd {:?}", c.agents[i].name, now[i]));
                }
            }
            c.agents.iter().try_for_each(|a| a.ready().map(drop))
        },
    );
    let (fewest, samples) = sampler.stop();
    let (acked, failed) = writer.stop();
    for (a, pid) in c.agents.iter().zip(&agent_pids) {
        assert_eq!(
            a.pid(),
            Some(*pid),
            "{}: the agent was not restarted in place",
            a.name
        );
        assert!(
            a.log()
                .contains("stopping to restart on the installed quorate binary"),
            "{}",
            a.log_tail(30)
        );
    }
    assert!(samples > 50, "only {samples} health samples");
    assert!(
        fewest >= 2,
        "at some sample only {fewest} of 3 agents were ready (one at a time must keep 2)"
    );
    // What systemd heard: never STOPPING=1 (the same process goes on), the restart said in
    // STATUS=, and READY=1 again from the new binary.
    for (a, s) in c.agents.iter().zip(&sockets) {
        let lines = s.lines();
        assert!(
            !lines.iter().any(|l| l == "STOPPING=1"),
            "{}: {lines:?}",
            a.name
        );
        let said = lines
            .iter()
            .position(|l| l == "STATUS=restarting on the installed quorate binary");
        let said = said.unwrap_or_else(|| panic!("{}: no restart STATUS=: {lines:?}", a.name));
        assert!(
            lines[said..].iter().any(|l| l == "READY=1"),
            "{}: no READY=1 after the restart: {lines:?}",
            a.name
        );
    }
    c.assert_none_lost(&cert, "/agent-upgrade/", &acked);
    eprintln!(
        "agent upgrade on 3 hosts at once: {} keys acknowledged, {failed} puts failed, fewest \
         ready agents {fewest} over {samples} samples",
        acked.len()
    );
}
