//! IPv6 advertise addresses: URLs in brackets, IP SANs, etcd listening and serving over IPv6.
//! Loopback has a single IPv6 address, so this is a one-member cluster on ::1.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use quorate::config::ConfigBuilder;
use quorate::pki::inspect;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::Cluster;

#[test]
fn a_cluster_on_ipv6() {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if std::net::UdpSocket::bind(SocketAddr::new(v6, 0)).is_err() {
        quorate_tests::require_failed(
            "ipv6::a_cluster_on_ipv6",
            "no IPv6 loopback (::1) on this machine",
        );
    }
    let mut c = Cluster::with(1, |_, b: ConfigBuilder| {
        b.seed(true).bootstrap_expect(1).advertise(v6)
    });
    c.agents[0].addr = v6;
    c.start_all();
    c.wait_ready(FORM_TIMEOUT);

    let s = c.agents[0].status().unwrap();
    assert_eq!(s.advertise, "::1");
    let plan = s.plan.expect("plan");
    assert!(
        plan.initial_cluster.contains("=https://[::1]:2380"),
        "{}",
        plan.initial_cluster
    );
    let pem = std::fs::read_to_string(c.agents[0].state_dir().join("pki/node.pem")).unwrap();
    assert!(
        inspect(&pem).unwrap().ips.contains(&v6),
        "no IP SAN for ::1"
    );

    let cert = c.client_cert(0, "v6");
    let list = c.etcdctl_ok(0, &cert, &["member", "list"]);
    assert!(
        list.contains("https://[::1]:2380") && list.contains("https://[::1]:2379"),
        "{list}"
    );
    c.etcdctl_ok(0, &cert, &["put", "/v6", "yes"]);
    let v = c.etcdctl_ok(0, &cert, &["get", "/v6", "--print-value-only"]);
    assert_eq!(v.trim(), "yes");
}
