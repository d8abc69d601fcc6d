//! Revocation with real etcd: a new cluster's members start etcd with the revocation list
//! (`--client-crl-file`, `--peer-crl-file`); `quorate cert revoke --serial S` on any member
//! has the issuer sign S into the list, every member writes it, and every member's etcd
//! refuses new connections with that certificate, while other certificates keep working.

use std::time::Duration;

use quorate::pki::crl::crl_serials;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

/// How long a revocation may take to reach every member (the bound).
const REVOKED_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_revoked_client_certificate_is_refused_by_every_member() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    for a in &c.agents {
        let pid = a.status().unwrap().etcd.pid.expect("etcd pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains("--client-crl-file=") && cmdline.contains("--peer-crl-file="),
            "{}: etcd runs without the revocation list: {cmdline}",
            a.name
        );
    }
    let app = c.client_cert(0, "app");
    let keep = c.client_cert(0, "keep");
    c.etcdctl_ok(0, &app, &["put", "/app/before", "1"]);
    let serial = quorate::pki::inspect(&std::fs::read_to_string(&app.cert).unwrap())
        .unwrap()
        .serial_hex;

    // Bad input: named, nothing revoked.
    let o = c.agents[1].cli(&["cert", "revoke", "--serial", "not-hex"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a certificate serial number"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The serial as openssl prints it (upper case) works too.
    let started = std::time::Instant::now();
    let o = c.agents[1].cli(&["cert", "revoke", "--serial", &serial.to_uppercase()]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ca_pem = std::fs::read_to_string(&keep.ca).unwrap();
    let listed_by = |a: &quorate_tests::Agent| {
        std::fs::read_to_string(a.state_dir().join("pki/crl.pem"))
            .ok()
            .and_then(|crl| crl_serials(&crl, &ca_pem).ok())
            .is_some_and(|listed| listed.contains(&serial))
    };
    wait_for(
        "every member's list to name the serial",
        REVOKED_WITHIN,
        || match c.agents.iter().find(|a| !listed_by(a)) {
            Some(a) => Err(format!("{} does not list it yet", a.name)),
            None => Ok(()),
        },
    );
    // Reported, not asserted: from the command to the last member's etcd having the list.
    eprintln!(
        "revoked serial {serial} listed for every member's etcd {:.1} s after `quorate cert revoke`",
        started.elapsed().as_secs_f64()
    );
    wait_for(
        "every member to refuse the revoked certificate",
        REVOKED_WITHIN,
        || {
            for i in 0..3 {
                let o = c.etcdctl(i, Some(&app), &["get", "/app/before"]);
                if o.status.success() {
                    return Err(format!("{} still serves it", c.agents[i].name));
                }
            }
            Ok(())
        },
    );
    // Every member says so in /status and /metrics.
    wait_for("every member to report the list", REVOKED_WITHIN, || {
        for a in &c.agents {
            let r = a.status()?.revocation.ok_or("no revocation status")?;
            if r.revoked != 1 || r.number.is_none() {
                return Err(format!("{}: {r:?}", a.name));
            }
            let (_, metrics) = a.get("/metrics")?;
            if !metrics
                .lines()
                .any(|l| l == "quorate_certificates_revoked 1")
            {
                return Err(format!("{}: no quorate_certificates_revoked 1", a.name));
            }
        }
        Ok(())
    });
    for (i, a) in c.agents.iter().enumerate() {
        let crl = std::fs::read_to_string(a.state_dir().join("pki/crl.pem")).unwrap();
        let listed = crl_serials(&crl, &ca_pem).unwrap();
        assert_eq!(listed, std::slice::from_ref(&serial), "{}", a.name);
        // Another certificate still works everywhere, and the cluster is whole.
        c.etcdctl_ok(i, &keep, &["put", &format!("/keep/{i}"), "ok"]);
    }
    c.wait_voters(0, 3, FORM_TIMEOUT);

    // By name: both certificates issued to "twice" go, "keep" stays; every member's own
    // certificate is in the registry, so node names are found too.
    let twice_a = c.client_cert(1, "twice");
    let twice_b = {
        let o = c.agents[2].cli(&[
            "cert",
            "client",
            "twice",
            "--out",
            c.root.path().join("twice-b").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        quorate_tests::cluster::ClientCert {
            ca: c.root.path().join("twice-b/ca.pem"),
            cert: c.root.path().join("twice-b/twice.pem"),
            key: c.root.path().join("twice-b/twice-key.pem"),
        }
    };
    let serials: Vec<String> = [&twice_a, &twice_b]
        .iter()
        .map(|t| {
            quorate::pki::inspect(&std::fs::read_to_string(&t.cert).unwrap())
                .unwrap()
                .serial_hex
        })
        .collect();
    // A connection opened before the revocation, kept open across it.
    let rt = quorate_tests::space::runtime();
    let mut open = rt.block_on(async {
        let tls = quorate_tests::space::tls(&twice_a);
        quorate::etcd::client::connect(&[c.client_url(1)], &tls, Duration::from_secs(10))
            .await
            .unwrap()
    });
    rt.block_on(open.get("/keep/0", None))
        .expect("the open connection reads before the revocation");
    let o = wait_for(
        "the certificates of \"twice\" to be recorded",
        FORM_TIMEOUT,
        || {
            let o = c.agents[0].cli(&["cert", "revoke", "--name", "twice"]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            if o.status.success() && serials.iter().all(|s| out.contains(s.as_str())) {
                Ok(out)
            } else {
                Err(format!("{out}{}", String::from_utf8_lossy(&o.stderr)))
            }
        },
    );
    assert!(o.contains("2 certificate(s) of twice revoked"), "{o}");
    // Its user is gone, so the connection opened before is refused at its next request
    // (etcd takes the user from the certificate at every request).
    assert!(o.contains("Its etcd user twice is deleted"), "{o}");
    let err = rt
        .block_on(open.get("/keep/0", None))
        .expect_err("the connection opened before the revocation still reads");
    assert!(
        err.to_string().contains("user name not found")
            || err.to_string().contains("permission denied"),
        "{err}"
    );
    wait_for("every member to refuse both", REVOKED_WITHIN, || {
        for i in 0..3 {
            for t in [&twice_a, &twice_b] {
                if c.etcdctl(i, Some(t), &["get", "/keep/0"]).status.success() {
                    return Err(format!("{} still serves one", c.agents[i].name));
                }
            }
        }
        Ok(())
    });
    c.etcdctl_ok(1, &keep, &["get", "/keep/0"]);
    let o = c.agents[0].cli(&["cert", "revoke", "--name", "nobody"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("no unexpired certificate named"),
        "{stderr}"
    );
    let o = c.agents[0].cli(&["cert", "revoke", "--name", &c.agents[2].name.clone()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 certificate(s) of n3 revoked"),
        "a member's own certificate is recorded: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A removal whose clean-up another agent recorded (one that lost the leadership, crashed or
/// left before finishing) is finished by whichever agent leads: the removed name's etcd user
/// is deleted, deleted again a moment later if it was made anew, and the record goes; a record
/// for a name that is a member keeps its user; a damaged record goes too. Only the agents can
/// write such records.
#[test]
fn a_recorded_removal_is_finished_by_the_leader() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let root = c.agent_cert(0);
    // A removed host's user, as the issuer made it for its node certificate.
    c.etcdctl_ok(0, &root, &["user", "add", "gone", "--no-password"]);
    c.etcdctl_ok(0, &root, &["user", "grant-role", "gone", "root"]);
    assert!(c.etcd_users(0).iter().any(|u| u == "gone"));

    let prefix = quorate::node::maintenance::removed::REMOVED_PREFIX;
    let n2 = c.agents[1].name.clone();
    let app = c.client_cert(0, "app");
    let o = c.etcdctl(0, Some(&app), &["put", &format!("{prefix}{n2}"), "{}"]);
    assert!(
        !o.status.success(),
        "a client certificate wrote a removal record"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let record = |name: &str, value: &str| {
        c.etcdctl_ok(0, &root, &["put", &format!("{prefix}{name}"), value]);
    };
    record(
        "gone",
        &format!("{{\"before\":{now},\"removed_at\":{now}}}"),
    );
    record(&n2, "{\"before\":1,\"removed_at\":1}");
    record("junk", "not json");
    c.wait_no_etcd_user(0, "gone");
    // The issuer may make the user again if it read the revocation requests just before they
    // were stored: the leader deletes it once more before the record goes.
    c.etcdctl_ok(0, &root, &["user", "add", "gone", "--no-password"]);
    wait_for("the records to be finished", FORM_TIMEOUT, || {
        let keys = c.etcdctl_ok(0, &root, &["get", prefix, "--prefix", "--keys-only"]);
        if keys.trim().is_empty() {
            Ok(())
        } else {
            Err(keys)
        }
    });
    // The removed name's user is gone for good; the member's name kept its user and its
    // access, and the cluster is whole.
    let users = c.etcd_users(0);
    assert!(!users.iter().any(|u| u == "gone"), "{users:?}");
    assert!(users.contains(&n2), "{users:?}");
    c.etcdctl_ok(1, &c.agent_cert(1), &["put", "/app/after", "1"]);
    c.wait_voters(0, 3, FORM_TIMEOUT);
}
