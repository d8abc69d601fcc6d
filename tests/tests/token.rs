//! The pinned join token: `quorate token show` on a member prints qrt1:sha256:<CA>:<token>; a
//! new host given only that form (no ca_hash) joins and trusts exactly this CA, and a host
//! given the form with another CA's hash never takes a certificate from this cluster.

use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn a_host_with_the_pinned_token_joins_and_a_wrong_pin_gets_nothing() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let o = c.agents[0].cli(&["token", "show"]);
    let pinned = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ca_hash = c.agents[0].status().unwrap().ca_hash.unwrap();
    assert_eq!(pinned, format!("qrt1:{ca_hash}:{}", c.token));

    // A new host with the pinned form only: it joins, and its CA is the pinned one.
    let newcomer = c.add_agent({
        let pinned = pinned.clone();
        move |_, b| b.token(&pinned)
    });
    c.agents[newcomer].start();
    c.wait_voters(newcomer, 4, FORM_TIMEOUT);
    assert_eq!(c.agents[newcomer].status().unwrap().ca_hash, Some(ca_hash));

    // The same token pinned to another CA: gossip admits it (same secret), but it trusts no
    // issuer of this cluster and never holds a certificate.
    let other = format!("qrt1:sha256:{}:{}", "ab".repeat(32), c.token);
    let stranger = c.add_agent(move |_, b| b.token(&other));
    c.agents[stranger].start();
    let message = wait_for("the stranger to see the cluster's CA", FORM_TIMEOUT, || {
        let s = c.agents[stranger].status()?;
        if s.message.contains("sha256:abab") {
            Ok(s.message)
        } else {
            Err(s.message)
        }
    });
    assert!(
        !c.agents[stranger].state_dir().join("pki/node.pem").exists(),
        "{message}"
    );
    assert!(c.agents[stranger]
        .status()
        .unwrap()
        .ca_hash
        .is_none_or(|h| h != ca_hash));
}
