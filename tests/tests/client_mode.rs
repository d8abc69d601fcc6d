//! Client mode on a real cluster: a client agent holding only the client token keeps a
//! consumer's certificate, key and endpoint files fresh. A consumer that reads the files and
//! opens a fresh TLS connection for every request keeps succeeding through at least five
//! certificate rotations (15 s client lifetimes), a growth from 3 to 5 members and a wiped
//! member's replacement; every key it was told was written is read back afterwards. The
//! endpoints file follows the growth, and `on_change` runs once per burst of changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorate::client::ClientStatus;
use quorate::config::{ClientSection, Mode};
use quorate_tests::cluster::FORM_TIMEOUT;
use quorate_tests::{etcdctl_bin, wait_for, Cluster};

const LIFETIME: Duration = Duration::from_secs(15);
const NAME: &str = "consumer";

fn client_status(c: &Cluster, i: usize) -> Result<ClientStatus, String> {
    let (code, body) = c.agents[i].get("/status")?;
    if code != 200 {
        return Err(format!("/status answered {code}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not a client's status: {e}: {body}"))
}

fn endpoints(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("endpoints"))
        .unwrap_or_default()
        .trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One request as a consumer makes it: the files read now, a new process and TLS connection.
fn consumer_put(dir: &Path, key: &str) -> Result<(), String> {
    let o = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints(dir).join(",")))
        .arg(format!("--cacert={}", dir.join("ca.pem").display()))
        .arg(format!(
            "--cert={}",
            dir.join(format!("{NAME}.pem")).display()
        ))
        .arg(format!(
            "--key={}",
            dir.join(format!("{NAME}-key.pem")).display()
        ))
        .args(["--command-timeout=5s", "--dial-timeout=3s", "put", key, "v"])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
fn a_client_agent_keeps_a_consumer_going_through_rotations_growth_and_replacement() {
    let mut c = Cluster::with(3, |_, b| {
        b.with(|cfg| cfg.pki.client_cert_validity = Some(LIFETIME))
    });
    c.start_and_wait();
    c.wait_voters(0, 3, FORM_TIMEOUT);
    let o = c.agents[0].cli(&["token", "create", "--client"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let client_token = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    wait_for(
        "every member to hold the client token",
        FORM_TIMEOUT,
        || {
            for a in &c.agents {
                let o = a.cli(&["token", "show", "--client"]);
                if String::from_utf8_lossy(&o.stdout).trim() != client_token {
                    return Err(format!("{} has not read it yet", a.name));
                }
            }
            Ok(())
        },
    );

    let dir: PathBuf = c.root.path().join("consumer-files");
    let hook_log = c.root.path().join("on-change.log");
    // Each run records the certificate and the endpoints it saw: two identical lines in a
    // row would be a run without a change before it.
    let on_change = format!(
        "echo \"$(sha256sum {cert} | cut -c1-16) $(cat {eps})\" >> {log}",
        cert = dir.join(format!("{NAME}.pem")).display(),
        eps = dir.join("endpoints").display(),
        log = hook_log.display()
    );
    let members: Vec<String> = (1..=3).map(|i| c.subnet.host(i).to_string()).collect();
    let client = c.add_agent({
        let (dir, token) = (dir.clone(), client_token.clone());
        move |_, b| {
            let (dir, on_change, members) = (dir.clone(), on_change.clone(), members.clone());
            b.token(&token).seed(false).join(members).with(move |cfg| {
                cfg.mode = Mode::Client;
                cfg.client = Some(ClientSection {
                    name: Some(NAME.into()),
                    dir: Some(dir),
                    on_change: Some(on_change),
                    role: None,
                });
            })
        }
    });
    c.agents[client].start();
    wait_for("the client agent to be ready", FORM_TIMEOUT, || {
        c.agents[client].ready().map(|_| ())
    });
    let first = client_status(&c, client).unwrap();
    // The member that answered lists the client in its status.
    let answered_by = first.answered_by.clone().expect("a member answered");
    let member = c.agents.iter().position(|a| a.name == answered_by).unwrap();
    wait_for("the member to list the client", FORM_TIMEOUT, || {
        let s = c.agents[member].status()?;
        if s.clients.iter().any(|seen| seen.name == NAME) {
            Ok(())
        } else {
            Err(format!("{:?}", s.clients))
        }
    });
    assert_eq!(first.endpoints.len(), 3, "{first:?}");
    use std::os::unix::fs::PermissionsExt;
    let key_path = dir.join(format!("{NAME}-key.pem"));
    let key_mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    let key_before = std::fs::read(&key_path).unwrap();
    let env = std::fs::read_to_string(dir.join("etcdctl.env")).unwrap();
    assert!(env.contains(&format!(
        "ETCDCTL_CERT={}",
        dir.join(format!("{NAME}.pem")).display()
    )));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(json["endpoints"].as_array().unwrap().len(), 3);

    // The join token works for a client agent too (a host trusted that far anyway).
    let join_dir = c.root.path().join("join-token-files");
    let with_join_token = c.add_agent({
        let (join_dir, token) = (join_dir.clone(), c.token.clone());
        let members: Vec<String> = (1..=3).map(|i| c.subnet.host(i).to_string()).collect();
        move |_, b| {
            let (join_dir, members) = (join_dir.clone(), members.clone());
            b.token(&token).seed(false).join(members).with(move |cfg| {
                cfg.mode = Mode::Client;
                cfg.client = Some(ClientSection {
                    name: Some("joiner".into()),
                    dir: Some(join_dir),
                    on_change: None,
                    role: None,
                });
            })
        }
    });
    c.agents[with_join_token].start();
    wait_for("the join-token client to be ready", FORM_TIMEOUT, || {
        c.agents[with_join_token].ready().map(|_| ())
    });
    assert!(join_dir.join("joiner.pem").exists());
    c.agents[with_join_token].stop();

    // The consumer: a tight loop of fresh connections from the files, recording every
    // acknowledged key. A request is retried (up to 3 times, as any client would) but never
    // dropped: a key that could not be written at all is a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let consumer = {
        let (stop, acked, failed, dir) = (stop.clone(), acked.clone(), failed.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/consumer/{n:06}");
                let mut errors = Vec::new();
                for _ in 0..3 {
                    match consumer_put(&dir, &key) {
                        Ok(()) => break,
                        Err(e) => errors.push(e),
                    }
                }
                if errors.len() == 3 {
                    failed.lock().unwrap().push(format!("{key}: {errors:?}"));
                } else {
                    acked.lock().unwrap().push(key);
                }
                n += 1;
            }
        })
    };

    // Growth from 3 to 5 members: the endpoints file follows.
    let grown: Vec<usize> = (0..2).map(|_| c.add_agent(|_, b| b)).collect();
    for &i in &grown {
        c.agents[i].start();
    }
    for &i in &grown {
        c.wait_voters(i, 5, FORM_TIMEOUT * 2);
    }
    wait_for("the endpoints file to list 5 members", FORM_TIMEOUT, || {
        let e = endpoints(&dir);
        if e.len() == 5 {
            Ok(())
        } else {
            Err(format!("{e:?}"))
        }
    });
    for i in [0, 1, 2].into_iter().chain(grown.iter().copied()) {
        let url = c.client_url(i);
        assert!(endpoints(&dir).contains(&url), "{url} missing");
    }

    // A member loses its disk and comes back under its name.
    // While it is down, the client agent stays ready: its endpoint check (every 10 s) finds
    // a member that answers.
    c.agents[2].kill9();
    std::fs::remove_dir_all(c.agents[2].state_dir()).unwrap();
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(12) {
        let s = client_status(&c, client).unwrap();
        assert!(s.ready, "not ready while one member is down: {}", s.message);
        std::thread::sleep(Duration::from_millis(250));
    }
    c.agents[2].start();
    c.wait_voters(2, 5, FORM_TIMEOUT * 2);

    // At least five rotations after the first certificate.
    let done = wait_for("five certificate rotations", LIFETIME * 8, || {
        let s = client_status(&c, client)?;
        if s.renewals >= 6 {
            Ok(s)
        } else {
            Err(format!("{} certificates so far", s.renewals))
        }
    });
    // Let the last burst's on_change run.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    consumer.join().unwrap();

    let failed = failed.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "the consumer failed {} request(s): {failed:?}",
        failed.len()
    );
    assert!(
        acked.len() > 50,
        "only {} requests in the whole run",
        acked.len()
    );
    assert_eq!(done.renewal_failures, 0, "{done:?}");
    assert_eq!(
        std::fs::read(&key_path).unwrap(),
        key_before,
        "the key changed under the consumer"
    );

    // Every acknowledged key is there.
    let checker = c.client_cert(0, "checker");
    let listed = c.etcdctl_ok(
        0,
        &checker,
        &["get", "--prefix", "/consumer/", "--keys-only"],
    );
    let stored: BTreeSet<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| !stored.contains(k.as_str()))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");

    // on_change: once per burst (never twice for the same files), and after every rotation.
    // (The agent collects a finished run on its next turn.)
    let (status, runs) = wait_for("on_change's runs to be counted", FORM_TIMEOUT, || {
        let status = client_status(&c, client)?;
        let runs: Vec<String> = std::fs::read_to_string(&hook_log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        if runs.len() as u64 == status.on_change.runs {
            Ok((status, runs))
        } else {
            Err(format!(
                "{} lines, {} runs counted",
                runs.len(),
                status.on_change.runs
            ))
        }
    });
    assert_eq!(status.on_change.failures, 0);
    for pair in runs.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "on_change ran twice for one state: {runs:#?}"
        );
    }
    let certs: BTreeSet<&str> = runs.iter().filter_map(|l| l.split(' ').next()).collect();
    assert!(
        certs.len() as u64 >= status.renewals - 1,
        "{} certificates but on_change saw {}: {runs:#?}",
        status.renewals,
        certs.len()
    );
    assert!(
        runs.last().is_some_and(|l| l
            .split(' ')
            .nth(1)
            .is_some_and(|e| e.split(',').count() == 5)),
        "the last run did not see 5 endpoints: {runs:#?}"
    );
    let metrics = c.agents[client].get("/metrics").unwrap().1;
    assert!(
        metrics.contains("quorate_cert_not_after_seconds{cert=\"client\"}"),
        "{metrics}"
    );
    let o = c.agents[client].cli(&["status"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("(client mode)"),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "client mode: {} requests, {} certificates, {} on_change runs, directory traffic {} datagrams / {} bytes sent, {} / {} received",
        acked.len(),
        status.renewals,
        runs.len(),
        status.datagrams_sent,
        status.bytes_sent,
        status.datagrams_received,
        status.bytes_received
    );
}
