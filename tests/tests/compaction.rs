//! Day-2 flags on real etcd: periodic compaction actually compacts, the quota reaches etcd,
//! and etcd's metrics answer plain HTTP without a certificate on each agent's own address.
//! An old configuration that sets the quota through etcd.extra_args keeps starting.

use std::net::SocketAddr;
use std::time::Duration;

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Agent, Cluster};

/// etcd's command line, read from /proc through the pid in the agent's status report.
fn etcd_cmdline(agent: &Agent) -> Vec<String> {
    let pid = agent.status().unwrap().etcd.pid.expect("etcd pid");
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read etcd's cmdline");
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The value of `metric` (without labels) on etcd's plain-HTTP metrics listener.
fn etcd_metric(addr: SocketAddr, metric: &str) -> Result<f64, String> {
    quorate_tests::agent::metric_at(addr, metric)
}

#[test]
fn periodic_compaction_quota_and_plain_http_metrics() {
    let mut c = Cluster::with(3, |_, b| {
        b.compaction_retention(Duration::from_secs(3))
            .quota("64MiB")
    });
    c.start_and_wait();

    // (a) The rendered flags are on each etcd's command line, once.
    for a in &c.agents {
        let args = etcd_cmdline(a);
        for flag in [
            "--auto-compaction-mode=periodic".to_owned(),
            "--auto-compaction-retention=3s".to_owned(),
            "--quota-backend-bytes=67108864".to_owned(),
            format!("--listen-metrics-urls=http://{}:2381", a.addr),
        ] {
            assert_eq!(
                args.iter().filter(|x| **x == flag).count(),
                1,
                "{flag} in {}'s etcd: {args:?}",
                a.name
            );
        }
    }

    // (b) History older than the retention gets compacted away by etcd itself.
    let cert = c.client_cert(0, "compactor");
    let revision = |i: usize| -> u64 {
        let out = c.etcdctl_ok(i, &cert, &["get", "/compaction/key", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["kvs"][0]["mod_revision"].as_u64().expect("mod_revision")
    };
    c.etcdctl_ok(0, &cert, &["put", "/compaction/key", "v0"]);
    let old = revision(0);
    for i in 1..5 {
        c.etcdctl_ok(i % 3, &cert, &["put", "/compaction/key", &format!("v{i}")]);
    }
    assert!(revision(1) > old);
    let old_rev = format!("--rev={old}");
    let refusal = wait_for(
        "etcd to compact the old revision",
        Duration::from_secs(60),
        || {
            let o = c.etcdctl(2, Some(&cert), &["get", "/compaction/key", &old_rev]);
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            if !o.status.success() && stderr.contains("required revision has been compacted") {
                Ok(stderr)
            } else {
                Err(format!(
                    "revision {old} still readable: {}{stderr}",
                    String::from_utf8_lossy(&o.stdout)
                ))
            }
        },
    );
    assert!(refusal.contains("compacted"), "{refusal}");
    let latest = c.etcdctl_ok(1, &cert, &["get", "/compaction/key", "--print-value-only"]);
    assert_eq!(latest.trim(), "v4");

    // (c) etcd's metrics answer plain HTTP, no certificate, with the quota.
    for a in &c.agents {
        let addr = SocketAddr::new(a.addr, 2381);
        let quota = wait_for(&format!("{}'s etcd metrics", a.name), FORM_TIMEOUT, || {
            etcd_metric(addr, "etcd_server_quota_backend_bytes")
        });
        assert_eq!(quota, 67_108_864.0, "{}", a.name);
        let has_leader = etcd_metric(addr, "etcd_server_has_leader").unwrap();
        assert_eq!(has_leader, 1.0, "{}", a.name);
    }
}

/// A configuration from before etcd.quota: the flag in etcd.extra_args is taken over into the
/// setting, with a warning in the agent's log naming the new key, and reaches etcd once.
#[test]
fn quota_in_old_extra_args_is_taken_over_at_start() {
    let mut c = Cluster::with(1, |_, b| {
        b.with(|cfg| cfg.etcd.extra_args = vec!["--quota-backend-bytes=134217728".into()])
    });
    c.start_and_wait();
    let args = etcd_cmdline(&c.agents[0]);
    let quota: Vec<_> = args
        .iter()
        .filter(|a| a.starts_with("--quota-backend-bytes"))
        .collect();
    assert_eq!(quota, ["--quota-backend-bytes=134217728"], "{args:?}");
    let log = c.agents[0].log();
    assert!(
        log.contains("\"--quota-backend-bytes=134217728\" is now the setting etcd.quota")
            && log.contains("etcd.quota = \"128MiB\""),
        "no take-over warning in the log:\n{}",
        c.agents[0].log_tail(40)
    );
    let addr = SocketAddr::new(c.agents[0].addr, 2381);
    let quota = wait_for("etcd metrics", FORM_TIMEOUT, || {
        etcd_metric(addr, "etcd_server_quota_backend_bytes")
    });
    assert_eq!(quota, 134_217_728.0);
}
