//! Three empty agents form one mutual-TLS etcd cluster by themselves.

use std::os::unix::fs::PermissionsExt;

use quorate::phase::Phase;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{wait_for, Cluster};

#[test]
fn three_empty_agents_form_one_mtls_cluster() {
    let mut c = Cluster::new(3);

    // Only the seed runs: not ready, and it says why.
    c.agents[0].start();
    let reason = wait_for("the seed to report waiting", FORM_TIMEOUT, || {
        match c.agents[0].get("/readyz") {
            Ok((503, body)) if body.contains("waiting for peers 1/3") => Ok(body),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(reason.starts_with("not ready"), "{reason}");

    c.agents[1].start();
    c.agents[2].start();
    c.wait_ready(FORM_TIMEOUT);

    // One cluster: every agent sees the same cluster ID, three voting members.
    let statuses: Vec<_> = c.agents.iter().map(|a| a.status().unwrap()).collect();
    let cluster_id = statuses[0].etcd.cluster_id.clone().expect("cluster id");
    for s in &statuses {
        assert_eq!(s.etcd.cluster_id.as_ref(), Some(&cluster_id), "{}", s.node);
        assert_eq!(s.phase, Phase::Running);
        assert!(s.message.starts_with("healthy, leader "), "{}", s.message);
        assert_eq!(
            s.plan.as_ref().map(|p| &p.id),
            statuses[0].plan.as_ref().map(|p| &p.id)
        );
    }
    assert!(statuses[0].issuer, "the seed holds the CA");
    assert!(!statuses[1].issuer && !statuses[2].issuer);

    // A client certificate from a non-seed member works for etcdctl on every member.
    let cert = c.client_cert(1, "tester");
    let list = c.etcdctl_ok(2, &cert, &["member", "list", "-w", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let members = list["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{list}");
    for m in members {
        assert!(
            !m["name"].as_str().unwrap_or("").is_empty(),
            "unstarted member: {m}"
        );
        assert!(m["isLearner"].as_bool() != Some(true), "learner: {m}");
        for url in m["peerURLs"].as_array().unwrap() {
            assert!(url.as_str().unwrap().starts_with("https://"), "{m}");
        }
    }
    // Every member runs the etcd under test (TEST_ETCD_BINARY when set).
    let want = quorate_tests::etcd_version();
    for i in 0..3 {
        // Status needs the root role from etcd 3.5.28 on with authentication: the agents'.
        let status = c.etcdctl_ok(i, &c.agent_cert(i), &["endpoint", "status", "-w", "json"]);
        assert!(
            status.contains(&format!("\"version\":\"{want}\"")),
            "member {i} does not run etcd {want}: {status}"
        );
    }
    c.etcdctl_ok(0, &cert, &["put", "/formation/key", "written-through-n1"]);
    for i in 1..3 {
        let got = c.etcdctl_ok(i, &cert, &["get", "/formation/key", "--print-value-only"]);
        assert_eq!(
            got.trim(),
            "written-through-n1",
            "read through {}",
            c.agents[i].name
        );
    }

    // etcd refuses a client without a certificate.
    let o = c.etcdctl(0, None, &["get", "/formation/key"]);
    assert!(
        !o.status.success(),
        "a client without a certificate was served"
    );

    // Keys stay on their host: each node key is 0600 and exists only in its own directory;
    // the CA key only on the seed.
    let keys: Vec<String> = c
        .agents
        .iter()
        .map(|a| {
            let path = a.state_dir().join("pki/node-key.pem");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
            std::fs::read_to_string(&path).unwrap()
        })
        .collect();
    for (i, a) in c.agents.iter().enumerate() {
        for (j, key) in keys.iter().enumerate() {
            if i != j {
                assert!(
                    !dir_contains(&a.dir, key),
                    "{}'s key found in {}'s directory",
                    c.agents[j].name,
                    a.name
                );
            }
        }
        let ca_key = a.state_dir().join("pki/ca-key.pem");
        assert_eq!(ca_key.exists(), i == 0, "{}", ca_key.display());
    }
    let ca_key = c.agents[0].state_dir().join("pki/ca-key.pem");
    assert_eq!(
        std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The CA seal secret: every voter comes to hold the one whose fingerprint etcd records
    // (0600, handed over the agent API to voters only); etcd never holds the secret itself.
    let admin = c.agent_cert(0);
    let id = wait_for(
        "the seal secret's fingerprint in etcd",
        FORM_TIMEOUT,
        || c.seal_id(0).ok_or_else(|| "none yet".to_owned()),
    );
    let secret = wait_for("every voter to hold the seal secret", FORM_TIMEOUT, || {
        let held: Vec<_> = (0..c.agents.len()).map(|i| c.seal_secret(i)).collect();
        match held.first() {
            Some(Some(s)) if s.id() == id && held.iter().all(|h| h.as_ref() == Some(s)) => {
                Ok(s.clone())
            }
            _ => Err(format!("{held:?}")),
        }
    });
    for a in &c.agents {
        let path = a.state_dir().join("pki/ca-seal-secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let everything = c.etcdctl_ok(0, &admin, &["get", "", "--prefix"]);
    assert!(
        !everything.contains(&secret.to_text()),
        "the seal secret is in etcd"
    );
    // Nobody else gets it: a client certificate is no node's, and a node's certificate
    // counts only from that node's address.
    let rt = quorate_tests::space::runtime();
    let api = std::net::SocketAddr::new(c.agents[0].addr, 7946);
    let ask = |cert: &quorate_tests::cluster::ClientCert, from: std::net::IpAddr| {
        let tls = quorate_tests::space::tls(cert);
        rt.block_on(quorate::api::seal::fetch(
            api,
            from,
            &tls.ca,
            &tls.cert,
            &tls.key,
            std::time::Duration::from_secs(10),
        ))
    };
    let client = c.client_cert(1, "probe");
    let err = ask(&client, c.agents[1].addr).expect_err("a client certificate got the secret");
    assert!(err.contains("answered 401"), "{err}");
    let err = ask(&c.agent_cert(1), c.agents[2].addr).expect_err("n2's certificate from n3");
    assert!(
        err.contains("answered 403") && err.contains("goes only to"),
        "{err}"
    );
    let got = ask(&c.agent_cert(1), c.agents[1].addr).expect("n2 from its own address");
    assert_eq!(got, secret);

    // Every voter holds it, so the issuer seals the CA in etcd with it: the join token alone
    // opens it no longer.
    let sealed_with = c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT);
    assert_eq!(sealed_with, secret);
    let handed: u64 = (0..c.agents.len())
        .map(|i| {
            c.agents[i]
                .metric("quorate_ca_seal_secret_handed_total")
                .unwrap() as u64
        })
        .sum();
    assert!(
        handed >= 2,
        "the two other voters were handed it: counted {handed}"
    );
}

/// Whether any file under `dir` contains `needle`.
fn dir_contains(dir: &std::path::Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            dir_contains(&p, needle)
        } else {
            std::fs::read(&p)
                .map(|b| String::from_utf8_lossy(&b).contains(needle))
                .unwrap_or(false)
        }
    })
}
