//! The pinned join token: `quorate token show` on a member prints qrt1:sha256:<CA>:<token>; a
//! new host given only that form (no ca_hash) joins and trusts exactly this CA, and a host
//! given the form with another CA's hash never takes a certificate from this cluster.
//!
//! The client token (`quorate token create --client`): every member learns it, its holder gets
//! client certificates that etcd accepts, but never a node certificate nor an agent's or
//! root's name, and only the roles marked `client_agents = true`; `--replace` retires the old
//! one. One cluster for both, to keep the suite short.

use quorate::api::CertKind;
use quorate::etcd::roles::{Access, RoleDef};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::signing::{self, Issued};
use quorate_tests::{wait_for, Cluster};

#[test]
fn pinned_join_token_and_client_token() {
    let mut c = Cluster::with(3, |_, b| b.with(|cfg| cfg.roles = roles()));
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
        move |_, b| b.token(&pinned).with(|cfg| cfg.roles = roles())
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
    c.agents[stranger].stop();

    client_token(&c, &ca_hash.to_string());
}

/// Every member's `[[roles]]`: role ro is open to client agents, app is not.
fn roles() -> Vec<RoleDef> {
    vec![
        RoleDef {
            name: "app".into(),
            prefixes: vec!["/app/".into()],
            access: Access::ReadWrite,
            client_agents: false,
        },
        RoleDef {
            name: "ro".into(),
            prefixes: vec!["/app/".into()],
            access: Access::Read,
            client_agents: true,
        },
    ]
}

/// The client token's half of the test, on the same cluster.
fn client_token(c: &Cluster, ca_hash: &str) {
    let o = c.agents[0].cli(&["token", "create", "--client"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(
        first.starts_with(&format!("qrt1:{ca_hash}:qrc1_")),
        "not a pinned client token: {first}"
    );
    assert!(!first.contains(&c.token));
    // A second create does not silently replace it.
    let o = c.agents[1].cli(&["token", "create", "--client"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("--replace"),
        "{stderr}"
    );
    // Every member keeps it, and shows the same one.
    wait_for(
        "every member to read the client token",
        FORM_TIMEOUT,
        || {
            for i in 0..3 {
                let o = c.agents[i].cli(&["token", "show", "--client"]);
                let shown = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                if shown != first {
                    return Err(format!(
                        "{}: {shown}{}",
                        c.agents[i].name,
                        String::from_utf8_lossy(&o.stderr)
                    ));
                }
            }
            Ok(())
        },
    );

    // The holder (from an address no agent uses) gets a client certificate etcd accepts.
    let host = c.subnet.host(88);
    let issued: Issued = wait_for(
        "a client certificate for the client token",
        FORM_TIMEOUT,
        || {
            signing::ask(c, &first, "omni", CertKind::Client, host)
                .map_err(|(s, m)| format!("{s} {m}"))
        },
    );
    let cert = issued.write(&c.root.path().join("client-token-omni"), "omni");
    c.etcdctl_ok(0, &cert, &["put", "/omni/k", "v"]);
    assert!(c.etcdctl_ok(1, &cert, &["get", "/omni/k"]).contains('v'));
    let rejected_before = c
        .agents
        .iter()
        .map(|a| counter(a, "api_rejected_identity"))
        .sum::<u64>();

    // Never a node certificate: not for a new name from its own address, not for a member's.
    for name in ["client-host", c.agents[1].name.as_str()] {
        let (status, message) = signing::ask(c, &first, name, CertKind::Node, host)
            .err()
            .unwrap_or_else(|| panic!("the client token got a node certificate for {name}"));
        assert_eq!(status, 403, "{message}");
        assert!(message.contains("client certificates only"), "{message}");
    }
    // Nor root's or an agent's name as a client.
    for name in ["root", "quorate-agent", c.agents[2].name.as_str()] {
        let (status, message) = signing::ask(c, &first, name, CertKind::Client, host)
            .err()
            .unwrap_or_else(|| panic!("the client token got a certificate named {name}"));
        assert_eq!(status, 403, "{message}");
        assert!(message.contains("is reserved"), "{message}");
    }
    // Roles: only those open to client agents (client_agents = true).
    let (status, message) =
        signing::ask_with_role(c, &first, "dash", CertKind::Client, host, Some("app"))
            .err()
            .expect("the client token got role app, which is not open to client agents");
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("client_agents = true") && message.contains("open: ro"),
        "{message}"
    );
    let rejected = c
        .agents
        .iter()
        .map(|a| counter(a, "api_rejected_identity"))
        .sum::<u64>();
    assert_eq!(
        rejected - rejected_before,
        6,
        "refusals counted as identity refusals"
    );
    let reader: Issued = wait_for("a certificate of role ro", FORM_TIMEOUT, || {
        signing::ask_with_role(c, &first, "dash", CertKind::Client, host, Some("ro"))
            .map_err(|(s, m)| format!("{s} {m}"))
    });
    let reader = reader.write(&c.root.path().join("client-token-dash"), "dash");
    c.etcdctl_ok(0, &cert, &["put", "/app/k", "v"]);
    assert!(c.etcdctl_ok(1, &reader, &["get", "/app/k"]).contains('v'));
    assert!(!c
        .etcdctl(1, Some(&reader), &["put", "/app/k", "w"])
        .status
        .success());

    // Replacing it: the old one stops working, the new one works.
    let o = c.agents[2].cli(&["token", "create", "--client", "--replace"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert_ne!(second, first);
    wait_for(
        "the old client token to be refused",
        FORM_TIMEOUT,
        || match signing::ask(c, &first, "omni", CertKind::Client, host) {
            Err((401, _)) => Ok(()),
            Err((s, m)) => Err(format!("{s} {m}")),
            Ok(_) => Err("still accepted".into()),
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    if let Err((status, message)) = signing::ask(c, &second, "omni", CertKind::Client, host) {
        panic!("the new client token was refused: {status} {message}");
    }
}

fn counter(a: &quorate_tests::Agent, name: &str) -> u64 {
    a.status().map_or(0, |s| s.counters[name])
}
