//! Reading the members' revocation lists (state_dir/pki/crl.pem, checked against the CA).

use std::time::Duration;

use quorate::pki::crl::crl_serials;

use crate::{wait_for, Agent, Cluster};

/// The serial of agent `i`'s node certificate on disk (lowercase hex).
pub fn node_serial(c: &Cluster, i: usize) -> String {
    let pem = std::fs::read_to_string(c.agents[i].state_dir().join("pki/node.pem"))
        .expect("node certificate");
    quorate::pki::inspect(&pem)
        .expect("a certificate")
        .serial_hex
}

/// The serials agent `a`'s revocation list names (empty when it has none or it does not
/// verify against its CA).
pub fn listed(a: &Agent) -> Vec<String> {
    let pki = a.state_dir().join("pki");
    let (Ok(crl), Ok(ca)) = (
        std::fs::read_to_string(pki.join("crl.pem")),
        std::fs::read_to_string(pki.join("ca.pem")),
    ) else {
        return Vec::new();
    };
    crl_serials(&crl, &ca).unwrap_or_default()
}

/// Waits until the list of every agent in `members` names `serial`.
pub fn wait_listed(c: &Cluster, members: &[usize], serial: &str, within: Duration) {
    wait_for(
        &format!("serial {serial} revoked on every member"),
        within,
        || {
            for &i in members {
                if !listed(&c.agents[i]).iter().any(|s| s == serial) {
                    return Err(format!("{} does not list it", c.agents[i].name));
                }
            }
            Ok(())
        },
    );
}

/// Asserts that no agent's list names `serial` (`whose`: whose certificate it is, for the
/// message).
pub fn assert_not_listed(c: &Cluster, serial: &str, whose: &str) {
    for a in &c.agents {
        assert!(
            !listed(a).iter().any(|s| s == serial),
            "{} revoked {whose}'s certificate",
            a.name
        );
    }
}

/// Waits until the registry of issued certificates (`/quorate/issued/`) holds `serial`, read
/// through agent `i` as the agents' identity: what revocation by name and of removed members
/// looks up.
pub fn wait_recorded(c: &Cluster, i: usize, serial: &str) {
    let key = format!("/quorate/issued/{serial}");
    wait_for(&format!("{key} recorded"), Duration::from_secs(60), || {
        let v = c.etcdctl_ok(i, &c.agent_cert(i), &["get", &key, "--print-value-only"]);
        if v.trim().is_empty() {
            Err("not yet".into())
        } else {
            Ok(())
        }
    });
}
