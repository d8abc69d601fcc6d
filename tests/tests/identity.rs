//! Node certificates are bound to identity, on a real cluster with real etcd: a join-token
//! holder asking the issuer for a live member's name from that member's own address, or from
//! another address, is refused (403), counted in `api_rejected_identity` and logged with its
//! address; an agent started under a live member's name on another host never gets a
//! certificate, and the real member keeps serving. The paths that must keep working (renewal
//! over mTLS, a wiped host taking its name back) are the rotation and replacement tests.

use std::net::IpAddr;

use quorate::api::CertKind;
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{signing, wait_for, Cluster};

fn counter(c: &Cluster, i: usize, name: &str) -> u64 {
    c.agents[i].status().unwrap().counters[name]
}

/// Asks the issuer for a node certificate named `name`, connecting from `from`, proving the
/// cluster's join token: (HTTP status, message) of the refusal, or None if it was issued.
fn ask(c: &Cluster, name: &str, from: IpAddr) -> Option<(u16, String)> {
    signing::ask(c, &c.token, name, CertKind::Node, from).err()
}

#[test]
fn a_token_holder_gets_no_live_members_name() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let issuer = (0..3)
        .find(|&i| c.agents[i].status().is_ok_and(|s| s.issuer))
        .expect("an issuer");
    let victim = (issuer + 1) % 3;
    let (name, victim_ip) = (c.agents[victim].name.clone(), c.agents[victim].addr);
    let issued_before = counter(&c, issuer, "certificates_issued");

    // From the victim's own address (the token holder shares its host, or spoofs nothing):
    // the name is held by a live member that did not present its certificate.
    let (status, message) = ask(&c, &name, victim_ip).expect("a live member's name was issued");
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("is a live member"), "{message}");
    // From another address: the certificate would carry the victim's address.
    let elsewhere = c.subnet.host(77);
    let (status, message) = ask(&c, &name, elsewhere).expect("issued to another address");
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains(&format!("goes only to {victim_ip}"))
            && message.contains(&format!("came from {elsewhere}")),
        "{message}"
    );
    assert_eq!(counter(&c, issuer, "api_rejected_identity"), 2);
    assert!(
        c.agents[issuer]
            .log()
            .lines()
            .any(|l| l.contains("refused a signing request") && l.contains(&elsewhere.to_string())),
        "the refusal is logged with the peer's address"
    );

    // An agent started under the victim's name on another host: it gossips, asks, and is
    // refused every time; it never holds a certificate, and the victim stays ready.
    let impostor = c.add_agent(|_, b| b);
    let config = c.config(impostor).with({
        let name = name.clone();
        move |cfg| cfg.node_name = Some(name.clone())
    });
    c.agents[impostor].write_config(&config);
    c.agents[impostor].start();
    wait_for(
        "the impostor's requests to be refused",
        FORM_TIMEOUT,
        || {
            let n = counter(&c, issuer, "api_rejected_identity");
            if n >= 3 {
                Ok(())
            } else {
                Err(format!("{n} refused"))
            }
        },
    );
    assert!(
        !c.agents[impostor].state_dir().join("pki/node.pem").exists(),
        "the impostor got a node certificate"
    );
    c.agents[impostor].stop();
    assert_eq!(
        counter(&c, issuer, "certificates_issued"),
        issued_before,
        "a certificate was issued during the attacks"
    );
    wait_for("the victim to stay ready", FORM_TIMEOUT, || {
        c.agents[victim].ready().map(|_| ())
    });
    c.wait_voters(victim, 3, FORM_TIMEOUT);
}

#[test]
fn cert_client_leaves_existing_directories_alone_refuses_reserved_names_and_fails_closed() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::new(3);
    c.start_and_wait();
    // An existing output directory keeps its mode; a symlink planted where the key goes is
    // replaced, and what it pointed to is never written.
    let out = c.root.path().join("shared-out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o711)).unwrap();
    let precious = c.root.path().join("precious");
    std::fs::write(&precious, "keep").unwrap();
    std::os::unix::fs::symlink(&precious, out.join("app-key.pem")).unwrap();
    let o = c.agents[1].cli(&[
        "cert",
        "client",
        "app",
        "--out",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o711, "the existing directory's mode was changed");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    let key = std::fs::symlink_metadata(out.join("app-key.pem")).unwrap();
    assert!(key.file_type().is_file() && key.permissions().mode() & 0o777 == 0o600);
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    // Names etcd would map to an agent's identity are refused with the reason, and nothing
    // is written.
    for (name, why) in [
        ("n3", "an agent of this cluster has that name"),
        ("root", "etcd's root user"),
        ("quorate-admin", "belong to the agents"),
    ] {
        let dir = c.root.path().join(format!("reserved-{name}"));
        let o = c.agents[1].cli(&["cert", "client", name, "--out", dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{name}: {err}");
        assert!(
            !dir.join(format!("{name}.pem")).exists(),
            "{name} was written"
        );
    }

    // Without a CA on disk to check the issuer against, and without ca_hash, the command
    // stops instead of trusting what the local health endpoint reports.
    let blind = c.config(1).state_dir(c.root.path().join("no-state"));
    let config = c.root.path().join("blind.toml");
    std::fs::write(&config, blind.to_toml()).unwrap();
    let o = std::process::Command::new(quorate_tests::quorate_bin())
        .arg("--config")
        .arg(&config)
        .args(["cert", "client", "blind", "--out"])
        .arg(c.root.path().join("blind-out"))
        .env_remove("QUORATE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "issued without a trust anchor");
    assert!(
        stderr.contains("cannot verify the issuer") && stderr.contains("ca_hash"),
        "{stderr}"
    );
    assert!(!c.root.path().join("blind-out/blind.pem").exists());

    // A host named like a client certificate ("app", issued above) gets no node certificate:
    // the node's root role would reach the client's certificates too.
    let host = c.add_agent(|_, b| b);
    let config = c
        .config(host)
        .with(|cfg| cfg.node_name = Some("app".into()));
    c.agents[host].write_config(&config);
    c.agents[host].start();
    wait_for("the host named app to be refused", FORM_TIMEOUT, || {
        let log = c.agents[host].log();
        if log.contains("is a client's etcd user (role quorate-client)") {
            Ok(())
        } else {
            Err(c.agents[host].log_tail(3))
        }
    });
    assert!(!c.agents[host].state_dir().join("pki/node.pem").exists());
    c.agents[host].stop();
}
