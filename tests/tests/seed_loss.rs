//! Losing the seed host does not lose the ability to issue certificates: the CA, sealed in
//! etcd, is taken over by another member, a new host still gets a certificate and joins (once
//! the dead member is removed: etcd accepts no new member while a voter is down, and the
//! cluster runs with remove_dead_after), and a seed host rebuilt with an empty disk joins the
//! existing cluster instead of making a new CA or plan. The CA is sealed with the CA seal
//! secret by then, so the member taking over opens it with its copy of the secret. The removed seed's certificate is
//! revoked; the rebuilt seed's new one is not.

use std::time::Duration;

use quorate::pki::CaHash;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{revocation, wait_for, Cluster};

fn ca_hash_on_disk(c: &Cluster, i: usize) -> CaHash {
    let pem = std::fs::read_to_string(c.agents[i].state_dir().join("pki/ca.pem")).unwrap();
    CaHash::of_cert_pem(&pem).unwrap()
}

#[test]
fn seed_loss_then_new_host_then_rebuilt_seed() {
    let mut c = Cluster::with(3, |_, b| b.remove_dead_after(Duration::from_secs(60)));
    c.start_and_wait();
    let cert = c.client_cert(1, "seedloss");
    let ca = ca_hash_on_disk(&c, 0);
    c.etcdctl_ok(0, &cert, &["put", "/seedloss/key", "kept"]);
    wait_for(
        "the sealed CA and the issuer lease in etcd",
        FORM_TIMEOUT,
        || {
            let issuer = c.etcdctl_ok(
                1,
                &c.agent_cert(1),
                &["get", "/quorate/issuer", "--print-value-only"],
            );
            let stored = c.etcdctl_ok(
                1,
                &c.agent_cert(1),
                &["get", "/quorate/ca", "--print-value-only"],
            );
            if issuer.trim() == "n1" && stored.contains("sealed_key") {
                assert!(
                    !stored.contains("PRIVATE KEY"),
                    "the CA key is stored in clear"
                );
                Ok(())
            } else {
                Err(format!("issuer {issuer:?}"))
            }
        },
    );
    // Before the seed goes, the CA in etcd is sealed with the CA seal secret: the member that
    // takes over must open it with its own copy, not with the join token.
    c.wait_ca_sealed_with_secret(1, FORM_TIMEOUT);
    let plan = c.agents[0].status().unwrap().plan.unwrap().id;
    let seed_serial = revocation::node_serial(&c, 0);
    revocation::wait_recorded(&c, 1, &seed_serial);

    // The seed host is destroyed.
    c.agents[0].kill9();
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    let new_issuer = wait_for("another agent to take over issuing", FORM_TIMEOUT, || {
        for i in 1..3 {
            if c.agents[i].status()?.issuer {
                return Ok(i);
            }
        }
        Err("no issuer yet".into())
    });
    let holder = c.etcdctl_ok(
        1,
        &c.agent_cert(1),
        &["get", "/quorate/issuer", "--print-value-only"],
    );
    assert_eq!(holder.trim(), c.agents[new_issuer].name);
    assert!(
        !c.agents[new_issuer]
            .state_dir()
            .join("pki/ca-key.pem")
            .exists(),
        "the CA key was written to the new issuer's disk"
    );

    // A new host joins through a surviving member and gets its certificate from the new issuer.
    let n2 = c.subnet.host(2).to_string();
    let d = c.add_agent(|_, b| b.join(vec![n2.clone()]));
    c.agents[d].start();
    wait_for("n4's certificate from the new issuer", FORM_TIMEOUT, || {
        let s = c.agents[d].status()?;
        if s.certificate.is_some() {
            Ok(())
        } else {
            Err(s.message)
        }
    });
    assert_eq!(ca_hash_on_disk(&c, d), ca);
    // While n1's member is down, etcd refuses new members; n4 says why.
    let waiting = wait_for("n4 to explain its wait", FORM_TIMEOUT, || {
        let s = c.agents[d].status()?;
        if s.message.contains("remove_dead_after") || s.ready {
            Ok(s.message)
        } else {
            Err(s.message)
        }
    });
    assert!(waiting.contains("n1"), "{waiting}");
    wait_for("n4 ready as a voter", FORM_TIMEOUT * 3, || {
        c.agents[d].ready()?;
        let s = c.agents[d].status()?;
        if s.etcd.is_learner {
            Err("learner".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(ca_hash_on_disk(&c, d), ca);
    // The removed seed's certificate is revoked by the leader's agent that removed it.
    revocation::wait_listed(&c, &[1, 2, d], &seed_serial, Duration::from_secs(60));
    // And its etcd user is deleted (the rebuilt seed becomes the user again below).
    c.wait_no_etcd_user(1, "n1");

    // The seed host is rebuilt with an empty disk and its original (seed) configuration.
    let log_mark = c.agents[0].log().len();
    c.agents[0].start();
    c.wait_voters(0, 4, FORM_TIMEOUT * 3);
    let s = c.agents[0].status().unwrap();
    assert_eq!(s.plan.unwrap().id, plan, "the rebuilt seed made a new plan");
    assert_eq!(ca_hash_on_disk(&c, 0), ca, "the rebuilt seed made a new CA");
    assert!(!c.agents[0].state_dir().join("pki/ca-key.pem").exists());
    let log = c.agents[0].log()[log_mark..].to_owned();
    assert!(
        !log.contains("created the cluster CA"),
        "the rebuilt seed created a CA"
    );
    assert!(!log.contains("decided the bootstrap plan"));
    let v = c.etcdctl_ok(0, &cert, &["get", "/seedloss/key", "--print-value-only"]);
    assert_eq!(v.trim(), "kept");
    // Its new certificate, signed after it was last seen, is not revoked.
    let new_serial = revocation::node_serial(&c, 0);
    assert_ne!(new_serial, seed_serial);
    revocation::assert_not_listed(&c, &new_serial, "the rebuilt seed");
    let users = c.etcd_users(1);
    assert!(users.iter().any(|u| u == "n1"), "{users:?}");
}
