//! `quorate restore` on the same hosts, with real etcd and real agents: the cluster comes back
//! with exactly the snapshot's keys, a new cluster ID, three healthy voters, the same CA, old
//! client certificates working and new ones issued; a host that was down during the restore
//! moves its old data aside and joins the restored cluster; every bad input is refused with
//! the cluster untouched; three wiped hosts come back from `restore_from`, and a CA that cannot
//! be unsealed stops the seed until `restore_new_ca`. (S3 sources and a foreign CA:
//! restore_sources.rs.)

use quorate::api::restore_client::push_plan;
use quorate::api::{request_certificate, CertKind, CsrRequest, ServerTrust};
use quorate::pki::NodeKey;
use quorate::restore::{sign_plan, RestoreRecord};
use quorate::token::{JoinToken, KeyPurpose};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::restore::{
    assert_untouched, client_cert_eventually, cluster_id, copy_with, keys, save_snapshot, text,
    KEYS,
};
use quorate_tests::{revocation, wait_for, Cluster};

#[test]
fn restore_on_the_same_hosts_and_every_bad_input_refused() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let before = c.client_cert(0, "before");
    let gone = c.client_cert(0, "gone");
    c.put_keys(&before, "/a", KEYS);
    let snapshot = save_snapshot(&c, 0);
    c.put_keys(&before, "/b", KEYS);
    // Revoked after the snapshot: the restore must not bring it back.
    let gone_serial = quorate::pki::inspect(&std::fs::read_to_string(&gone.cert).unwrap())
        .unwrap()
        .serial_hex;
    let o = c.agents[1].cli(&["cert", "revoke", "--serial", &gone_serial]);
    assert!(o.status.success(), "{}", text(&o));
    revocation::wait_listed(&c, &[0, 1, 2], &gone_serial, FORM_TIMEOUT);
    // Issued after the snapshot: the plan carries its record, so it stays an etcd user.
    let issued_after = c.client_cert(0, "issued-after");
    let old_id = cluster_id(&c, 0);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    let file = snapshot.to_str().unwrap();

    // Without --yes: says what would happen, changes nothing.
    let o = c.agents[0].cli(&["restore", file]);
    assert!(
        !o.status.success(),
        "restore without --yes ran: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("--yes") && text(&o).contains("Nothing was changed"),
        "{}",
        text(&o)
    );

    // A truncated file, a flipped byte, a file that is no snapshot: refused, naming the file.
    let dir = c.root.path();
    let bad = [
        copy_with(&snapshot, &dir.join("truncated.db"), |b| {
            b.truncate(b.len() / 2)
        }),
        copy_with(&snapshot, &dir.join("flipped.db"), |b| {
            let i = b.len() / 3;
            b[i] ^= 0x01;
        }),
        copy_with(&snapshot, &dir.join("notes.txt"), |b| {
            *b = b"these are not the keys you are looking for\n".to_vec()
        }),
    ];
    for path in &bad {
        let o = c.agents[1].cli(&["restore", path, "--yes"]);
        let out = text(&o);
        assert!(!o.status.success(), "{path} was restored: {out}");
        assert!(
            out.contains(path.as_str()) && out.contains("not a complete etcd snapshot"),
            "{out}"
        );
    }
    let o = c.agents[1].cli(&["restore", "/nonexistent/backup.db", "--yes"]);
    assert!(
        !o.status.success() && text(&o).contains("/nonexistent/backup.db"),
        "{}",
        text(&o)
    );
    assert_untouched(&c, &before, &old_id, "after the bad inputs");

    // The restore.
    let started = std::time::Instant::now();
    let o = c.agents[0].cli(&["restore", file, "--yes"]);
    let out = text(&o);
    assert!(o.status.success(), "restore failed: {out}\n{}", c.logs(40));
    assert!(
        out.contains("restore generation 1 done: 3 members restored"),
        "{out}"
    );
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT);
    }
    eprintln!("restore of 3 members took {:?}", started.elapsed());
    // The tool of the etcd under test: etcdctl on 3.4, etcdutl from 3.5.
    let version = quorate_tests::etcd_version();
    let tool = if version.starts_with("3.4.") {
        "etcdctl"
    } else {
        "etcdutl"
    };
    for a in &c.agents {
        let used = a
            .log()
            .lines()
            .any(|l| l.contains("restoring the snapshot") && l.contains(&format!("/{tool}")));
        assert!(used, "{}: no restore with {tool} (etcd {version})", a.name);
    }
    let new_id = cluster_id(&c, 0);
    assert_ne!(new_id, old_id, "the restored cluster kept its old ID");
    for i in 0..3 {
        assert_eq!(cluster_id(&c, i), new_id);
        assert_eq!(
            c.agents[i].status().unwrap().ca_hash,
            ca_hash,
            "the CA changed"
        );
        let s = c.agents[i].status().unwrap();
        let r = s.restore.expect("restore progress in /status");
        assert_eq!(r.generation, 1);
        assert!(r.complete(), "{r:?}");
    }
    // The revocation made after the snapshot holds: the members kept their fuller lists and
    // asked for it again, so etcd's list (the snapshot's, without it) gets it back.
    wait_for(
        "the lost revocation back in etcd's list",
        FORM_TIMEOUT,
        || {
            let v = c.etcdctl_ok(
                0,
                &c.agent_cert(0),
                &["get", "/quorate/crl", "--print-value-only"],
            );
            let record: quorate::issuer::crl::CrlRecord =
                serde_json::from_str(v.trim()).map_err(|e| format!("{e}: {v}"))?;
            record
                .revoked
                .iter()
                .any(|r| r.serial == gone_serial)
                .then_some(())
                .ok_or(format!("list {} lacks it", record.number))
        },
    );
    revocation::wait_listed(&c, &[0, 1, 2], &gone_serial, FORM_TIMEOUT);
    for i in 0..3 {
        let o = c.etcdctl(i, Some(&gone), &["get", "/a/0"]);
        assert!(
            !o.status.success(),
            "the revoked certificate works again on {i}"
        );
    }
    assert!(c
        .agents
        .iter()
        .any(|a| a.log().contains("asked for them again")));
    c.etcdctl_eventually(1, &issued_after, &["get", "/a/0"]);
    assert!(c.agents.iter().any(|a| a
        .log()
        .contains("issued-certificate records the restored snapshot lacked")));

    // Exactly the snapshot's keys, through a certificate issued before the restore.
    let a: Vec<String> = (0..KEYS).map(|i| format!("/a/{i}")).collect();
    let mut got = keys(&c, 2, &before, "/a/");
    got.sort();
    assert_eq!(got, a);
    assert!(
        keys(&c, 2, &before, "/b/").is_empty(),
        "keys written after the snapshot survived"
    );
    // From etcdutl 3.5.16 the revision jumps and the old ones read as compacted, so that a
    // watcher resuming from a revision it saw before notices.
    let numbers: Vec<u32> = version
        .split(['.', '-'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    if (numbers[0], numbers[1], numbers[2]) >= quorate::etcd::restore::BUMP_SINCE {
        let out = c.etcdctl_ok(2, &before, &["get", "/a/0", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let revision = v["header"]["revision"].as_i64().unwrap();
        assert!(
            revision > 1_000_000_000,
            "revision {revision} after the restore"
        );
        let o = c.etcdctl(2, Some(&before), &["get", "/a/0", "--rev=2"]);
        assert!(
            !o.status.success() && text(&o).contains("compacted"),
            "an old revision still reads: {}",
            text(&o)
        );
    }
    // The data was moved aside, never deleted.
    for a in &c.agents {
        let aside = std::fs::read_dir(a.state_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("etcd.pre-restore-g1-")
            });
        assert!(aside, "{}: no etcd.pre-restore-g1-* directory", a.name);
    }
    // Every member keeps the snapshot it restored, owner-only (it holds every key).
    for a in &c.agents {
        use std::os::unix::fs::PermissionsExt;
        let dir = a.state_dir().join("restore");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(files.len(), 1, "{}: {files:?}", a.name);
        let mode = files[0].metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: snapshot copy mode {mode:o}", a.name);
    }
    // A new client certificate is issued (the issuer election works again), and writes work.
    let after = client_cert_eventually(&c, 1, "after");
    c.etcdctl_eventually(1, &after, &["put", "/after/key", "written"]);
    let v = c.etcdctl_ok(0, &before, &["get", "/after/key", "--print-value-only"]);
    assert_eq!(v.trim(), "written");

    // The same plan pushed again (as the decider would): refused, nothing happens.
    let record: RestoreRecord = serde_json::from_str(
        &std::fs::read_to_string(c.agents[0].state_dir().join("restore.json")).unwrap(),
    )
    .unwrap();
    let signed = record.signed.expect("the decider's plan");
    let ca_pem = std::fs::read_to_string(c.agents[1].state_dir().join("pki/ca.pem")).unwrap();
    let key = JoinToken::parse(&c.token)
        .unwrap()
        .derive(KeyPurpose::ApiProof);
    let api = c.agents[0]
        .status()
        .unwrap()
        .gossip
        .iter()
        .find(|m| m.name == c.agents[1].name)
        .and_then(|m| m.api_addr)
        .expect("agent 2's API address");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(push_plan(api, &ca_pem, &key, &signed))
        .expect_err("the same plan was accepted twice");
    assert!(err.to_string().contains("applied once"), "{err}");
    // Tampered (generation 2, signature of generation 1): refused on its signature.
    let mut forged = signed.clone();
    forged.plan.generation = 2;
    let err = rt
        .block_on(push_plan(api, &ca_pem, &key, &forged))
        .expect_err("a tampered plan was accepted");
    assert!(err.to_string().contains("signature"), "{err}");
    // A join-token holder gets a node certificate in a voter's name from the issuer and signs
    // a plan with it: refused, its key is not the one that voter serves etcd with.
    // (In the name of a voter other than the issuer: the issuer signs for names it sees in
    // gossip, which does not include itself.)
    let issuer_name = c
        .agents
        .iter()
        .find(|a| a.status().is_ok_and(|s| s.issuer))
        .map(|a| a.name.clone())
        .expect("an issuer");
    let victim = c
        .agents
        .iter()
        .map(|a| a.name.clone())
        .find(|n| *n != issuer_name)
        .unwrap();
    let impostor = NodeKey::generate().unwrap();
    let csr = impostor.csr_pem(&victim).unwrap();
    let issuer = c
        .agents
        .iter()
        .find_map(|a| a.status().ok().and_then(|s| s.issuer_api()))
        .expect("an issuer's API address");
    let issued = rt.block_on(request_certificate(
        issuer,
        &ServerTrust::Ca(ca_pem.clone()),
        signed.plan.ca_hash,
        &key,
        &CsrRequest {
            name: &victim,
            kind: CertKind::Node,
            csr_pem: &csr,
            key_pem: &impostor.to_pem(),
            from: None,
            renewing: None,
            role: None,
        },
        std::time::Duration::from_secs(10),
    ));
    match issued {
        Ok(response) => {
            let mut plan = signed.plan.clone();
            plan.generation = 2;
            plan.decided_by = victim.clone();
            let forged = sign_plan(plan, &impostor.to_pem(), &response.cert_pem).unwrap();
            let err = rt
                .block_on(push_plan(api, &ca_pem, &key, &forged))
                .expect_err("a plan signed by a token holder was accepted");
            assert!(err.to_string().contains("not the one member"), "{err}");
        }
        Err(e) => eprintln!("the issuer refused a node certificate in a voter's name: {e}"),
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    for i in 0..3 {
        assert_eq!(
            cluster_id(&c, i),
            new_id,
            "a refused plan changed the cluster"
        );
    }
    assert_eq!(keys(&c, 1, &before, "/after/").len(), 1);
}

#[test]
fn a_host_down_during_the_restore_joins_the_restored_cluster() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let cert = c.client_cert(0, "down");
    c.put_keys(&cert, "/a", KEYS);
    let snapshot = save_snapshot(&c, 0);
    c.put_keys(&cert, "/b", KEYS);
    let old_id = cluster_id(&c, 0);

    c.agents[2].stop();
    let down = c.agents[2].name.clone();
    wait_for("the stopped agent gone from gossip", FORM_TIMEOUT, || {
        let s = c.agents[0].status()?;
        let live = s
            .gossip
            .iter()
            .any(|m| m.name == down && m.state != quorate::gossip::PeerState::Down);
        if live {
            Err(format!("{down} still live"))
        } else {
            Ok(())
        }
    });
    let o = c.agents[0].cli(&["restore", snapshot.to_str().unwrap(), "--yes"]);
    let out = text(&o);
    assert!(o.status.success(), "restore failed: {out}\n{}", c.logs(40));
    assert!(out.contains("2 members restored"), "{out}");
    c.wait_voters(0, 2, FORM_TIMEOUT);

    // The host that was down comes back: its old data goes aside, it joins as a new member.
    c.agents[2].start();
    c.wait_voters(2, 3, FORM_TIMEOUT * 2);
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let new_id = cluster_id(&c, 2);
    assert_ne!(new_id, old_id);
    assert_eq!(cluster_id(&c, 0), new_id);
    let mut got = keys(&c, 2, &cert, "/a/");
    got.sort();
    assert_eq!(
        got,
        (0..KEYS).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    assert!(keys(&c, 2, &cert, "/b/").is_empty());
    let aside = std::fs::read_dir(c.agents[2].state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("etcd.pre-restore-g1-")
        });
    assert!(aside, "the returning host's old data was not moved aside");
    assert!(
        c.agents[2]
            .log()
            .contains("the cluster was restored while this host was away"),
        "{}",
        c.agents[2].log_tail(40)
    );
}

#[test]
fn three_wiped_hosts_with_restore_from_come_back_renamed_with_the_data_and_the_old_ca() {
    let mut c = Cluster::new(3);
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    // The CA in etcd is sealed with the CA seal secret, which the new hosts will not hold: the
    // snapshot quorate saves carries it in its manifest, sealed with the join token.
    let old_secret = c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT);
    let old = c.client_cert(0, "old");
    c.put_keys(&old, "/a", KEYS);
    let snapshot = c.root.path().join("saved.db");
    let saved = c.agents[0].cli(&["snapshot", "save", "--out", snapshot.to_str().unwrap()]);
    assert!(saved.status.success(), "{}", text(&saved));
    c.put_keys(&old, "/b", KEYS);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    let old_id = cluster_id(&c, 0);

    // Every host loses everything and comes back under a new name (the snapshot's etcd users
    // are the old names); the seed's config names the snapshot.
    c.stop_all();
    for a in &c.agents {
        std::fs::remove_dir_all(a.state_dir()).unwrap();
    }
    for i in 0..3 {
        let snapshot = snapshot.clone();
        let renamed = c.config(i).with(move |cfg| {
            cfg.node_name = Some(format!("restored-{i}"));
            if i == 0 {
                cfg.restore_from = Some(snapshot.display().to_string());
            }
        });
        c.agents[i].write_config(&renamed);
    }
    c.start_all();
    for i in 0..3 {
        c.wait_voters(i, 3, FORM_TIMEOUT * 2);
    }
    assert_ne!(cluster_id(&c, 0), old_id);
    for a in &c.agents {
        assert_eq!(
            a.status().unwrap().ca_hash,
            ca_hash,
            "{}: another CA",
            a.name
        );
    }
    // The old client certificate works and sees exactly the snapshot's keys.
    let mut got = keys(&c, 2, &old, "/a/");
    got.sort();
    assert_eq!(
        got,
        (0..KEYS).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    assert!(keys(&c, 1, &old, "/b/").is_empty());
    let new = client_cert_eventually(&c, 2, "new");
    c.etcdctl_eventually(0, &new, &["put", "/after/restore-from", "ok"]);
    // Nobody held the snapshot's CA seal secret: a new one is made, every voter gets it, and
    // the CA is sealed with it again.
    wait_for(
        "every voter to hold the new CA seal secret",
        FORM_TIMEOUT,
        || {
            let id = c
                .seal_id(0)
                .ok_or_else(|| "no seal secret in etcd".to_owned())?;
            for i in 0..c.agents.len() {
                if c.seal_secret(i).map(|h| h.id()).as_ref() != Some(&id) {
                    return Err(format!("{} does not hold {id}", c.agents[i].name));
                }
            }
            Ok(())
        },
    );
    let new_secret = c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT);
    assert_ne!(
        new_secret, old_secret,
        "the restored cluster kept the old secret"
    );
}

#[test]
fn a_snapshot_whose_ca_cannot_be_unsealed_stops_until_restore_new_ca() {
    let mut c = Cluster::new(1);
    c.start_and_wait();
    let secret = c.wait_ca_sealed_with_secret(0, FORM_TIMEOUT);
    let old = c.client_cert(0, "old");
    c.put_keys(&old, "/a", KEYS);
    // etcdctl's snapshot has no manifest, so no copy of the CA seal secret.
    let snapshot = save_snapshot(&c, 0);
    let ca_hash = c.agents[0].status().unwrap().ca_hash;
    c.stop_all();
    let conflict = |c: &Cluster| {
        wait_for("the seed to refuse the snapshot's CA", FORM_TIMEOUT, || {
            let s = c.agents[0].status()?;
            if s.phase == quorate::phase::Phase::Conflict {
                Ok(s.message)
            } else {
                Err(format!("{}: {}", s.phase, s.message))
            }
        })
    };
    let restore_from =
        |cfg: &mut quorate::config::Config| cfg.restore_from = Some(snapshot.display().to_string());

    // A new host with the cluster's token but not the secret: refused, naming the secret and
    // where to put it.
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    c.agents[0].write_config(&c.config(0).with(restore_from));
    c.agents[0].start();
    let message = conflict(&c);
    assert!(
        message.contains("cannot be unsealed")
            && message.contains(&secret.id())
            && message.contains("pki/ca-seal-secret"),
        "{message}"
    );
    assert!(c.agents[0].ready().is_err());
    // With the secret copied from an old member, it restores under the old CA.
    c.agents[0].stop();
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    let pki = c.agents[0].state_dir().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    quorate::issuer::seal_secret::save(&pki, &secret).unwrap();
    c.agents[0].start();
    c.wait_voters(0, 1, FORM_TIMEOUT);
    assert_eq!(c.agents[0].status().unwrap().ca_hash, ca_hash);
    assert_eq!(keys(&c, 0, &old, "/a/").len(), KEYS);
    c.agents[0].stop();

    // A new host with another token: the CA sealed in the snapshot does not open.
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    let other = JoinToken::generate().expose().to_owned();
    let seed = c.config(0).token(&other).with(restore_from);
    c.agents[0].write_config(&seed);
    c.agents[0].start();
    let message = conflict(&c);
    assert!(
        message.contains("cannot be unsealed") && message.contains("restore_new_ca"),
        "{message}"
    );
    assert!(c.agents[0].ready().is_err());

    // restore_new_ca: the data comes back under a new CA.
    c.agents[0].stop();
    std::fs::remove_dir_all(c.agents[0].state_dir()).unwrap();
    let seed = seed.with(|cfg| cfg.restore_new_ca = true);
    c.agents[0].write_config(&seed);
    c.agents[0].start();
    c.wait_voters(0, 1, FORM_TIMEOUT);
    let s = c.agents[0].status().unwrap();
    assert_ne!(
        s.ca_hash, ca_hash,
        "the old CA came back although it cannot be unsealed"
    );
    let new = client_cert_eventually(&c, 0, "new");
    let mut got = keys(&c, 0, &new, "/a/");
    got.sort();
    assert_eq!(
        got,
        (0..KEYS).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    // An old certificate is of the old CA: refused now.
    assert!(!c.etcdctl(0, Some(&old), &["get", "/a/0"]).status.success());
}
