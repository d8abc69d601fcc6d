//! A real Prometheus scrapes a three-node cluster: every agent's /metrics (quorate's counters
//! and gauges, OpenMetrics text) and every etcd's plain-HTTP metrics URL, with the shipped alert
//! rules loaded, and the expected series arrive with sane values.

use std::net::SocketAddr;
use std::time::Duration;

use quorate_tests::prometheus::{alert_rules, Prometheus};
use quorate_tests::{wait_for, Cluster};

/// `query` returns one series per agent (or etcd member): `n` of them.
fn expect_series(p: &Prometheus, query: &str, n: usize) {
    wait_for(query, Duration::from_secs(60), || {
        let result = p.query(query)?;
        if result.len() == n {
            Ok(())
        } else {
            Err(format!("{} series: {result:?}", result.len()))
        }
    });
}

#[test]
fn prometheus_scrapes_agents_and_etcd() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let agents: Vec<SocketAddr> = c.agents.iter().map(|a| a.health_addr()).collect();
    let etcds: Vec<SocketAddr> = c
        .agents
        .iter()
        .map(|a| SocketAddr::new(a.addr, 2381))
        .collect();

    // The agent's own exposition first, as a scraper sees it.
    let (code, body) = quorate_tests::agent::http_get(agents[0], "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("\nquorate_etcd_starts_total "), "{body}");

    let p = Prometheus::start(
        Duration::from_secs(1),
        &[("quorate", agents), ("etcd", etcds)],
        &alert_rules(),
    );
    expect_series(&p, r#"up{job="quorate"} == 1"#, 3);
    expect_series(&p, r#"up{job="etcd"} == 1"#, 3);
    expect_series(
        &p,
        r#"quorate_cert_not_after_seconds{cert="node"} > time()"#,
        3,
    );
    expect_series(
        &p,
        r#"quorate_cert_not_after_seconds{cert="ca"} > time()"#,
        3,
    );
    expect_series(&p, "quorate_etcd_has_quorum == 1", 3);
    expect_series(&p, "sum(quorate_etcd_is_leader) == 1", 1);
    expect_series(&p, r#"quorate_etcd_members{role="voter"} == 3"#, 3);
    expect_series(&p, r#"quorate_etcd_members{role="learner"} == 0"#, 3);
    expect_series(&p, r#"quorate_gossip_members{state="alive"} == 3"#, 3);
    expect_series(&p, "quorate_etcd_db_size_bytes > 0", 3);
    expect_series(
        &p,
        "quorate_etcd_db_size_in_use_bytes <= quorate_etcd_db_size_bytes",
        3,
    );
    expect_series(&p, "quorate_etcd_quota_bytes == 2 * 1024 * 1024 * 1024", 3);
    expect_series(&p, r#"quorate_etcd_alarms_active{alarm="NOSPACE"} == 0"#, 3);
    expect_series(&p, "etcd_server_has_leader == 1", 3);
    // What the quota alert could also use, from etcd itself.
    expect_series(
        &p,
        "etcd_mvcc_db_total_size_in_bytes / etcd_server_quota_backend_bytes < 0.8",
        3,
    );

    // The shipped rules loaded in a real server, and a healthy cluster fires none of them.
    let mut names = p.alert_names().unwrap();
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/prometheus/quorate-alerts.yml"),
    )
    .unwrap();
    let mut shipped: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    shipped.sort();
    assert!(shipped.len() >= 9, "{shipped:?}");
    assert_eq!(
        names, shipped,
        "the server loaded other rules than the shipped ones"
    );
    let firing = p.query(r#"ALERTS{alertstate="firing"}"#).unwrap();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy cluster: {firing:?}"
    );
}
