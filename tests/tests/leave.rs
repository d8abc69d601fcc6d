//! `quorate leave`: a host takes itself out of the cluster, unless that would cost quorum; a
//! later start of its agent joins it again as a new member, with a new certificate (the one it
//! left with is revoked).

use quorate::phase::Phase;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn leave_removes_the_member_refuses_to_break_quorum_and_rejoins_after_a_restart() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    let cert = c.client_cert(0, "leave");
    c.etcdctl_ok(0, &cert, &["put", "/leave/key", "kept"]);
    let old_member = c.agents[2].status().unwrap().etcd.member_id;
    let old_serial = c.agents[2].status().unwrap().certificate.unwrap().serial;

    // n3 leaves a healthy three-member cluster: allowed.
    let o = c.agents[2].cli(&["leave"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("left the cluster"), "{out}");
    assert!(
        out.contains(&format!("its certificate (serial {old_serial}) is revoked")),
        "{out}"
    );
    let s = c.agents[2].status().unwrap();
    assert_eq!(s.phase, Phase::Left);
    assert!(s.etcd.pid.is_none(), "etcd still runs after leave");
    assert!(c.agents[2].ready().is_err());
    let list = c.etcdctl_ok(0, &cert, &["member", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains("n3"), "{list}");
    // The host that left keeps no access: its certificate is in the remaining members' list.
    let ca_pem = std::fs::read_to_string(&cert.ca).unwrap();
    wait_for(
        "the remaining members to list n3's certificate",
        FORM_TIMEOUT,
        || {
            for a in &c.agents[..2] {
                let crl =
                    std::fs::read_to_string(a.state_dir().join("pki/crl.pem")).unwrap_or_default();
                let listed = quorate::pki::crl::crl_serials(&crl, &ca_pem).unwrap_or_default();
                if !listed.contains(&old_serial) {
                    return Err(format!("{} does not list {old_serial}: {listed:?}", a.name));
                }
            }
            Ok(())
        },
    );

    // Its etcd user is gone as well (connections it held open are refused at their next
    // request).
    c.wait_no_etcd_user(0, "n3");
    // n3 recorded its removal before asking for its revocation, and the leader's agent finishes
    // the record although n3 still runs (alive in gossip, as a host that left).
    let prefix = quorate::node::maintenance::removed::REMOVED_PREFIX;
    let removals = || {
        c.etcdctl_ok(
            0,
            &c.agent_cert(0),
            &["get", prefix, "--prefix", "--keys-only"],
        )
        .trim()
        .to_owned()
    };
    wait_for("n3's removal record to be finished", FORM_TIMEOUT, || {
        let leaders_say = c.agents[..2].iter().any(|a| {
            a.log()
                .contains("the removed member's access is gone member=n3")
        });
        match removals() {
            left if !left.is_empty() => Err(left),
            _ if !leaders_say => Err("no agent says it finished n3's removal".into()),
            _ => Ok(()),
        }
    });
    // A host that left is not back: a record of its removal still deletes a user of its name
    // (made again here by hand) while it runs.
    let root = c.agent_cert(0);
    c.etcdctl_ok(0, &root, &["user", "add", "n3", "--no-password"]);
    c.etcdctl_ok(
        0,
        &root,
        &[
            "put",
            &format!("{prefix}n3"),
            r#"{"before":1,"removed_at":1}"#,
        ],
    );
    c.wait_no_etcd_user(0, "n3");
    wait_for(
        "the hand-made record to be finished",
        FORM_TIMEOUT,
        || match removals() {
            left if !left.is_empty() => Err(left),
            _ => Ok(()),
        },
    );

    // With n2 down, n1 leaving would leave n2 alone and unreachable: refused.
    c.agents[1].stop();
    let o = c.agents[0].cli(&["leave"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "n1 left although that costs quorum");
    assert!(err.contains("quorum") && err.contains("--force"), "{err}");
    c.agents[1].start();
    wait_for("n1 and n2 ready", FORM_TIMEOUT, || {
        c.agents[0].ready()?;
        c.agents[1].ready()
    });

    // A restarted n3 joins afresh, as a new member.
    c.agents[2].stop();
    c.agents[2].start();
    c.wait_voters(2, 3, FORM_TIMEOUT * 2);
    let back = c.agents[2].status().unwrap();
    assert_ne!(back.etcd.member_id, old_member);
    assert_ne!(
        back.certificate.unwrap().serial,
        old_serial,
        "the host rejoined with its revoked certificate"
    );
    let v = c.etcdctl_ok(2, &cert, &["get", "/leave/key", "--print-value-only"]);
    assert_eq!(v.trim(), "kept");
    // Its name is an etcd user again, and its own identity works.
    c.etcdctl_ok(2, &c.agent_cert(2), &["get", "/quorate/ca", "--keys-only"]);
}
