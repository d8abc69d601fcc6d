//! Operator-defined etcd roles (`[[roles]]`) with real agents and etcd: a client certificate
//! given a role with `quorate cert client --role` (or by a client agent's `client.role`)
//! reaches its role's prefixes only, read-only when the role says so; two roles do not touch
//! each other's prefixes; a name reissued with another role loses the old one; an unknown
//! role is refused with the list of defined ones. A member restarted with different
//! `[[roles]]` is a conflict every member reports (status, /metrics) and nothing changes in
//! etcd until every member has the new definition; then a role left out is deleted.

use quorate::config::{ClientSection, Mode};
use quorate::etcd::roles::{Access, RoleDef};
use quorate_tests::cluster::{ClientCert, FORM_TIMEOUT};
use quorate_tests::{wait_for, Cluster};

fn role(name: &str, prefix: &str, access: Access) -> RoleDef {
    RoleDef {
        name: name.into(),
        prefixes: vec![prefix.into()],
        access,
        client_agents: false,
    }
}

fn first_roles() -> Vec<RoleDef> {
    vec![
        role("app", "/app/", Access::ReadWrite),
        role("ro", "/app/", Access::Read),
        role("other", "/other/", Access::ReadWrite),
    ]
}

/// `ro` may write now; `other` is gone.
fn second_roles() -> Vec<RoleDef> {
    vec![
        role("app", "/app/", Access::ReadWrite),
        role("ro", "/app/", Access::ReadWrite),
    ]
}

fn allowed(c: &Cluster, cert: &ClientCert, args: &[&str]) -> bool {
    c.etcdctl(0, Some(cert), args).status.success()
}

/// Waits until agent `i` reports `want` in its roles line.
fn wait_roles(c: &Cluster, i: usize, want: &str) {
    wait_for(&format!("n{} roles: {want}", i + 1), FORM_TIMEOUT, || {
        let s = c.agents[i].status()?;
        let text = s
            .roles
            .as_ref()
            .and_then(|r| r.agreement.clone())
            .unwrap_or_default();
        if text.contains(want) {
            Ok(())
        } else {
            Err(text)
        }
    });
}

fn restart_with(c: &mut Cluster, i: usize, roles: Vec<RoleDef>) {
    c.agents[i].stop();
    let config = c.config(i).with(move |cfg| cfg.roles = roles);
    c.agents[i].write_config(&config);
    c.agents[i].start();
}

#[test]
fn roles_reach_their_prefixes_only_and_change_when_every_member_agrees() {
    let mut c = Cluster::with(3, |_, b| b.with(|cfg| cfg.roles = first_roles()));
    c.start_and_wait();
    for i in 0..3 {
        wait_roles(&c, i, "3 in force (app, other, ro)");
    }
    let unknown = c
        .try_client_cert(1, "lost", &["--role", "missing"])
        .expect_err("an unknown role was accepted");
    assert!(
        unknown.contains("role \"missing\" is not one of the members' [[roles]] (app, other, ro)"),
        "{unknown}"
    );
    let writer = c.try_client_cert(1, "writer", &["--role", "app"]).unwrap();
    let reader = c.try_client_cert(2, "reader", &["--role", "ro"]).unwrap();
    let stranger = c
        .try_client_cert(0, "stranger", &["--role", "other"])
        .unwrap();
    let default = c.client_cert(0, "everyone");
    wait_for("etcd authentication on", FORM_TIMEOUT, || {
        if allowed(&c, &default, &["get", "/quorate/ca"]) {
            Err("a client certificate still reads /quorate/".into())
        } else {
            Ok(())
        }
    });

    c.etcdctl_ok(0, &writer, &["put", "/app/a", "1"]);
    c.etcdctl_ok(0, &reader, &["get", "/app/a"]);
    c.etcdctl_ok(0, &stranger, &["put", "/other/x", "1"]);
    for (who, cert, args) in [
        ("writer", &writer, vec!["put", "/b", "1"]),
        ("writer", &writer, vec!["get", "/other/x"]),
        ("writer", &writer, vec!["get", "/quorate/ca"]),
        ("reader", &reader, vec!["put", "/app/b", "1"]),
        ("reader", &reader, vec!["del", "/app/a"]),
        ("stranger", &stranger, vec!["get", "/app/a"]),
        ("stranger", &stranger, vec!["put", "/app/z", "1"]),
        ("stranger", &stranger, vec!["get", "", "--prefix"]),
    ] {
        assert!(!allowed(&c, cert, &args), "{who} could {args:?}");
    }
    // The default role still reaches both applications' keys.
    c.etcdctl_ok(0, &default, &["get", "/other/x"]);

    // A client agent with client.role gets a certificate of that role.
    let dir = c.root.path().join("client-agent-files");
    let members: Vec<String> = (1..=3).map(|i| c.subnet.host(i).to_string()).collect();
    let agent = c.add_agent({
        let dir = dir.clone();
        move |_, b| {
            let (dir, members) = (dir.clone(), members.clone());
            b.seed(false).join(members).with(move |cfg| {
                cfg.mode = Mode::Client;
                cfg.client = Some(ClientSection {
                    name: Some("dashboard".into()),
                    dir: Some(dir),
                    on_change: None,
                    role: Some("ro".into()),
                });
            })
        }
    });
    c.agents[agent].start();
    wait_for("the client agent ready", FORM_TIMEOUT, || {
        c.agents[agent].ready().map(|_| ())
    });
    let dashboard = ClientCert {
        ca: dir.join("ca.pem"),
        cert: dir.join("dashboard.pem"),
        key: dir.join("dashboard-key.pem"),
    };
    c.etcdctl_ok(0, &dashboard, &["get", "/app/a"]);
    assert!(!allowed(&c, &dashboard, &["put", "/app/d", "1"]));
    assert!(!allowed(&c, &dashboard, &["get", "/other/x"]));
    c.agents[agent].stop();

    // Reissued under another role, a name keeps only the new one (its old certificate too).
    c.try_client_cert(1, "reader", &["--role", "other"])
        .unwrap();
    assert!(!allowed(&c, &reader, &["get", "/app/a"]));
    c.etcdctl_ok(0, &reader, &["get", "/other/x"]);

    // One member with other roles: every member reports the conflict, etcd keeps the roles.
    let reader_ro = c
        .try_client_cert(1, "reader-ro", &["--role", "ro"])
        .unwrap();
    restart_with(&mut c, 2, second_roles());
    for i in 0..3 {
        wait_roles(&c, i, "CONFLICT");
    }
    let s = c.agents[0].status().unwrap();
    let text = s.roles.unwrap().agreement.unwrap();
    assert!(text.contains("n3: roles app, ro"), "{text}");
    assert!(text.contains("n1, n2: roles app, other, ro"), "{text}");
    let metrics = c.agents[1].get("/metrics").unwrap().1;
    assert!(
        metrics.contains("quorate_roles_conflict 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("roles"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!allowed(&c, &reader_ro, &["put", "/app/r", "1"]));
    c.etcdctl_ok(0, &stranger, &["get", "/other/x"]);

    // The rest of the members get the new definition: it is applied, `other` is deleted.
    restart_with(&mut c, 0, second_roles());
    restart_with(&mut c, 1, second_roles());
    for i in 0..3 {
        wait_roles(&c, i, "2 in force (app, ro)");
    }
    wait_for("ro may write", FORM_TIMEOUT, || {
        let o = c.etcdctl(0, Some(&reader_ro), &["put", "/app/r", "1"]);
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    });
    wait_for("the role other gone", FORM_TIMEOUT, || {
        if allowed(&c, &stranger, &["get", "/other/x"]) {
            Err("stranger still reads /other/".into())
        } else {
            Ok(())
        }
    });
    let metrics = c.agents[1].get("/metrics").unwrap().1;
    assert!(metrics.contains("quorate_roles_conflict 0"));
    for i in 0..3 {
        wait_for(&format!("n{} ready", i + 1), FORM_TIMEOUT, || {
            c.agents[i].ready().map(|_| ())
        });
    }
}
